package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// header encodes a request header: key, version, correlation id, client id, and the
// flexible header's empty tag section.
func requestHeader(key, version int16, corr int32, clientID string, flexible bool) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, uint16(len(clientID)))
	b = append(b, clientID...)
	if flexible {
		b = append(b, 0)
	}
	return b
}

// requestFrame is the frame (without its size prefix) of req at version v.
func requestFrame(req kmsg.Request, v int16, corr int32) []byte {
	req.SetVersion(v)
	return req.AppendTo(requestHeader(req.Key(), v, corr, "strata-test", req.IsFlexible()))
}

// sized prefixes a frame with its size.
func sizePrefixed(frame []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...)
}

// servedVersions calls f for every served key at every served version.
func servedVersions(f func(key, v int16)) {
	for _, k := range apiKeys() {
		for v := apis[k].min; v <= apis[k].max; v++ {
			f(k, v)
		}
	}
}

// allocated is the bytes f allocates. TotalAlloc counts every allocation, freed or
// not; a stray goroutine of an earlier test may add to it, so callers retry before
// they complain (see allocatedAtMost).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// allocatedAtMost reports whether f allocates at most limit bytes in one of three
// runs, and the least it allocated.
func allocatedAtMost(f func(), limit uint64) (uint64, bool) {
	least := uint64(math.MaxUint64)
	for range 3 {
		least = min(least, allocated(f))
		if least <= limit {
			return least, true
		}
		runtime.GC()
	}
	return least, false
}

// A craft is a hostile frame and what it is.
type craft struct {
	name  string
	frame []byte
}

// fieldPath is a chain of slice fields from a request down to an inner slice: each
// step is a struct field index whose type is a slice.
type fieldPath []int

// slicePaths lists every slice reachable in struct type t through slices of structs.
func slicePaths(t reflect.Type, prefix fieldPath, out *[]fieldPath) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Type.Kind() != reflect.Slice || f.Type.Elem().Kind() == reflect.Uint8 {
			continue
		}
		p := append(append(fieldPath(nil), prefix...), i)
		*out = append(*out, p)
		if f.Type.Elem().Kind() == reflect.Struct {
			slicePaths(f.Type.Elem(), p, out)
		}
	}
}

// tagKey is a tag no kmsg struct knows, so that it decodes into UnknownTags.
const tagKey = 77

// buildAlong makes a request of key at version v whose slices along path hold one
// element each but the last, which holds n; with tags, every struct on the way
// carries one unknown tagged field (three bytes on the wire in flexible versions).
func buildAlong(key, v int16, path fieldPath, n int, tags bool) kmsg.Request {
	req := kmsg.RequestForKey(key)
	req.SetVersion(v)
	s := reflect.ValueOf(req).Elem()
	tag := func(s reflect.Value) {
		if f := s.FieldByName("UnknownTags"); tags && f.IsValid() {
			f.Addr().Interface().(*kmsg.Tags).Set(tagKey, nil)
		}
	}
	tag(s)
	for i, fi := range path {
		f := s.Field(fi)
		cnt := 1
		if i == len(path)-1 {
			cnt = n
		}
		f.Set(reflect.MakeSlice(f.Type(), cnt, cnt))
		if f.Type().Elem().Kind() != reflect.Struct {
			break
		}
		for j := range cnt {
			tag(f.Index(j))
		}
		s = f.Index(0)
	}
	return req
}

// countAt finds where the element count of the last slice on path sits in the body
// of req: the first byte that differs between the encodings with one and two
// elements. It returns the count's offset and encoded width, or ok false when the
// slice is not in this version.
func countAt(key, v int16, path fieldPath) (off, width int, ok bool) {
	one := buildAlong(key, v, path, 1, false).AppendTo(nil)
	two := buildAlong(key, v, path, 2, false).AppendTo(nil)
	for i := range min(len(one), len(two)) {
		if one[i] != two[i] {
			if buildAlong(key, v, nil, 0, false).IsFlexible() {
				return i, 1, true // compact count 2 or 3: one byte
			}
			return i - 3, 4, true
		}
	}
	return 0, 0, false
}

// withCount replaces the count at body[off:off+width] by n, in the encoding of the
// version (int32, or compact uvarint n+1).
func replaceCount(body []byte, off, width int, n int64, flexible bool) []byte {
	var c []byte
	if flexible {
		c = binary.AppendUvarint(nil, uint64(n+1))
	} else {
		c = binary.BigEndian.AppendUint32(nil, uint32(n))
	}
	out := append([]byte(nil), body[:off]...)
	out = append(out, c...)
	return append(out, body[off+width:]...)
}

// hostileFrames builds, for every served key and version, frames of about size bytes
// meant to make kmsg allocate the most per byte:
//   - lie: every count along a path of nested slices claims as many elements as the
//     minimum-size check lets through (count = remaining/m, the best m), the rest of
//     the frame zeros;
//   - tags: the innermost slice of a path holds as many minimal elements as fit, each
//     with an unknown tagged field (a map per element in kmsg);
//   - plain: the same without tags.
func hostileFrames(t testing.TB, size int) []craft {
	t.Helper()
	var out []craft
	servedVersions(func(key, v int16) {
		req := kmsg.RequestForKey(key)
		req.SetVersion(v)
		flexible := req.IsFlexible()
		hdr := requestHeader(key, v, 1, "", flexible)
		var paths []fieldPath
		slicePaths(reflect.TypeOf(req).Elem(), nil, &paths)
		name := fmt.Sprintf("%s v%d", kmsg.NameForKey(key), v)
		for _, p := range paths {
			offs, widths := []int{}, []int{}
			for i := range p {
				off, w, ok := countAt(key, v, p[:i+1])
				if !ok {
					break
				}
				offs, widths = append(offs, off), append(widths, w)
			}
			if len(offs) < len(p) {
				continue // not in this version
			}
			// Element stuffing: n minimal elements, with and without tags.
			for _, tags := range []bool{false, true} {
				if tags && !flexible {
					continue
				}
				one := len(buildAlong(key, v, p, 1, tags).AppendTo(nil))
				two := len(buildAlong(key, v, p, 2, tags).AppendTo(nil))
				per := max(two-one, 1)
				n := max((size-len(hdr)-one)/per, 1)
				kind := "plain"
				if tags {
					kind = "tags"
				}
				body := buildAlong(key, v, p, n, tags).AppendTo(nil)
				out = append(out, craft{fmt.Sprintf("%s %s %v x%d", name, kind, p, n), append(bytes.Clone(hdr), body...)})
			}
			if len(p) == 1 && flexible {
				// Many distinct unknown tags on the request itself: one growing map.
				r := kmsg.RequestForKey(key)
				r.SetVersion(v)
				tg := reflect.ValueOf(r).Elem().FieldByName("UnknownTags").Addr().Interface().(*kmsg.Tags)
				base := len(r.AppendTo(nil))
				for k, n := uint32(1000), base; n < size-len(hdr)-8; k++ {
					tg.Set(k, nil)
					n += len(binary.AppendUvarint(nil, uint64(k))) + 1
				}
				out = append(out, craft{fmt.Sprintf("%s top-level tags x%d", name, tg.Len()), append(bytes.Clone(hdr), r.AppendTo(nil)...)})
			}
			// Lies along the path, innermost first so earlier offsets hold.
			base := buildAlong(key, v, p, 1, false).AppendTo(nil)
			base = append(base, make([]byte, size-len(hdr)-len(base))...)
			for _, m := range []int64{1, 2, 3, 4, 6, 8, 12, 16, 24} {
				body := base
				for i := len(offs) - 1; i >= 0; i-- {
					rem := int64(len(body) - offs[i] - widths[i])
					body = replaceCount(body, offs[i], widths[i], rem/m, flexible)
				}
				out = append(out, craft{fmt.Sprintf("%s lie/%d %v", name, m, p), append(bytes.Clone(hdr), body...)})
			}
		}
	})
	return out
}

// kmsgAmplification bounds the bytes kmsg v1.15.1 allocates decoding a request, per
// frame byte. Measured worst: 96x (Metadata v9, every topic carrying one unknown
// tagged field: a map of ~340 bytes for 3 bytes on the wire); lying array counts reach
// 32x at most, since kmsg checks each count against a minimum element size. A kmsg
// upgrade that makes this worse fails TestFrameAllocBound (the bounds leave room for
// the race detector, which allocates more). Such requests are capped at
// MaxNonProduceFrame, so the absolute cost stays bounded.
const kmsgAmplification = 160

// produceAmplification bounds Produce, the one request that may be large: its shape is
// checked before decoding (checkProduceShape), which leaves the per-element structs.
const produceAmplification = 64

func TestFrameAllocBound(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the allocations of thousands of frames")
	}
	const size = 64 << 10
	worst, worstName := 0.0, ""
	for _, c := range hostileFrames(t, size) {
		factor := kmsgAmplification
		if strings.HasPrefix(c.name, "Produce ") {
			factor = produceAmplification
		}
		limit := uint64(factor*len(c.frame) + 64<<10)
		n, ok := allocatedAtMost(func() { _, _ = parseRequest(c.frame) }, limit)
		if !ok {
			t.Errorf("%s: %d-byte frame allocated %d bytes, over %d", c.name, len(c.frame), n, limit)
		}
		if f := float64(n) / float64(len(c.frame)); f > worst {
			worst, worstName = f, c.name
		}
	}
	t.Logf("worst: %.1fx (%s)", worst, worstName)
}

// populated is a request of key at version v whose every slice, at every depth,
// holds one element, and whose strings say "x".
func populated(key, v int16) kmsg.Request {
	req := kmsg.RequestForKey(key)
	req.SetVersion(v)
	var fill func(s reflect.Value, depth int)
	fill = func(s reflect.Value, depth int) {
		for i := range s.NumField() {
			f := s.Field(i)
			if !s.Type().Field(i).IsExported() || s.Type().Field(i).Name == "Version" {
				continue
			}
			switch f.Kind() {
			case reflect.String:
				f.SetString("x")
			case reflect.Pointer:
				if f.Type().Elem().Kind() == reflect.String {
					x := "x"
					f.Set(reflect.ValueOf(&x))
				}
			case reflect.Slice:
				if f.Type().Elem().Kind() == reflect.Uint8 {
					f.SetBytes([]byte{1, 2, 3})
					continue
				}
				f.Set(reflect.MakeSlice(f.Type(), 1, 1))
				switch e := f.Index(0); e.Kind() {
				case reflect.Struct:
					if depth < 8 {
						fill(e, depth+1)
					}
				case reflect.String:
					e.SetString("x")
				}
			case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				f.SetInt(1)
			}
		}
	}
	fill(reflect.ValueOf(req).Elem(), 0)
	return req
}

// fuzzSeeds are real requests of every served key at its lowest and highest version
// (empty and populated), some truncated, some with absurd lengths, and a few frames
// that are not requests at all.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for _, k := range apiKeys() {
		for _, v := range []int16{apis[k].min, apis[k].max} {
			empty := requestFrame(kmsg.RequestForKey(k), v, 1)
			full := requestFrame(populated(k, v), v, 2)
			seeds = append(seeds, empty, full, full[:len(full)/2])
			// An absurd count or length right after the header.
			h := len(requestHeader(k, v, 2, "strata-test", populated(k, v).IsFlexible()))
			if len(full) >= h+4 {
				absurd := bytes.Clone(full)
				binary.BigEndian.PutUint32(absurd[h:], 0x7fffffff)
				seeds = append(seeds, absurd)
			}
		}
	}
	seeds = append(seeds,
		requestHeader(9999, 0, 3, "", false),             // unknown key
		requestHeader(18, 99, 4, "x", true),              // ApiVersions from the future
		requestHeader(3, 12, 5, "", false)[:9],           // no client id
		append(requestHeader(3, 12, 6, "", false), 0x80), // bad header tag varint
		[]byte("GET / HTTP/1.1\r\nHost: strata\r\n\r\n"), // not Kafka
	)
	return seeds
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		r, err := parseRequest(frame)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) && !errors.Is(err, ErrUnknownAPI) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		a, ok := apis[r.key]
		if !ok {
			t.Fatalf("key %d is not served but decoded", r.key)
		}
		if r.msg == nil {
			if r.version >= a.min && r.version <= a.max {
				t.Fatalf("%s v%d is served but has no body", kmsg.NameForKey(r.key), r.version)
			}
			return
		}
		if r.msg.Key() != r.key || r.msg.GetVersion() != r.version || r.size != len(frame) {
			t.Fatalf("decoded key %d v%d size %d from a frame of key %d v%d and %d bytes",
				r.msg.Key(), r.msg.GetVersion(), r.size, r.key, r.version, len(frame))
		}
		// Round trip: what decoded re-encodes into a frame that decodes the same.
		again := r.msg.AppendTo(requestHeader(r.key, r.version, r.correlationID, r.clientID, r.msg.IsFlexible()))
		r2, err := parseRequest(again)
		if err != nil {
			t.Fatalf("re-encoded %s v%d does not decode: %v", kmsg.NameForKey(r.key), r.version, err)
		}
		if r2.correlationID != r.correlationID || r2.clientID != r.clientID || !reflect.DeepEqual(r2.msg, r.msg) {
			t.Fatalf("%s v%d round trip:\n got %+v\nwant %+v", kmsg.NameForKey(r.key), r.version, r2.msg, r.msg)
		}
	})
}

// trickle is a reader that returns at most n bytes per Read.
type trickle struct {
	r io.Reader
	n int
}

func (p *trickle) Read(b []byte) (int, error) { return p.r.Read(b[:min(len(b), p.n)]) }

func TestFrameRead(t *testing.T) {
	const limit = 4 << 20
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i>>8)
		}
		return b
	}
	prefix := func(size uint32) []byte { return binary.BigEndian.AppendUint32(nil, size) }
	tests := []struct {
		name    string
		in      []byte
		want    []byte // the frame, when no error
		wantErr error
	}{
		{"nothing", nil, nil, io.EOF},
		{"half a size", []byte{0, 0}, nil, io.ErrUnexpectedEOF},
		{"negative size", prefix(0xffffffff), nil, ErrBadFrame},
		{"size 2 GiB", prefix(1 << 31), nil, ErrBadFrame},
		{"size over limit", prefix(limit + 1), nil, ErrFrameTooLarge},
		{"size 0", prefix(0), nil, ErrBadFrame},
		{"size 7", append(prefix(7), body(7)...), nil, ErrBadFrame},
		{"size 8", append(prefix(8), body(8)...), body(8), nil},
		{"size at limit", append(prefix(limit), body(limit)...), body(limit), nil},
		{"next frame left alone", append(append(prefix(9), body(9)...), prefix(8)...), body(9), nil},
		{"truncated small", append(prefix(20), body(10)...), nil, io.ErrUnexpectedEOF},
		{"truncated large", append(prefix(3<<20), body(1<<20)...), nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{1 << 30, 7} {
				got, err := readFrame(&trickle{bytes.NewReader(tt.in), step}, limit)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("%d bytes per read: err %v, want %v", step, err, tt.wantErr)
				}
				if !bytes.Equal(got, tt.want) {
					t.Fatalf("%d bytes per read: got %d bytes, want %d", step, len(got), len(tt.want))
				}
			}
		})
	}
}

// TestFrameReadAllocation: a size prefix is a promise, not a reason to allocate.
func TestFrameReadAllocation(t *testing.T) {
	const promised = 100 << 20
	in := append(binary.BigEndian.AppendUint32(nil, promised), make([]byte, 10)...)
	var err error
	n, ok := allocatedAtMost(func() {
		_, err = readFrame(bytes.NewReader(in), promised)
	}, 2<<20)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err %v, want %v", err, io.ErrUnexpectedEOF)
	}
	if !ok {
		t.Fatalf("a 100 MiB promise with 10 bytes allocated %d bytes", n)
	}

	// A large frame that does arrive, 7 bytes at a time, costs at most twice its size.
	size := 3<<20 + 5
	frame := make([]byte, size)
	for i := range frame {
		frame[i] = byte(i % 251)
	}
	in = append(binary.BigEndian.AppendUint32(nil, uint32(size)), frame...)
	var got []byte
	n, ok = allocatedAtMost(func() {
		got, err = readFrame(&trickle{bytes.NewReader(in), 7}, promised)
	}, uint64(2*size+64<<10))
	if err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("got %d bytes, err %v; want the %d-byte frame", len(got), err, size)
	}
	if !ok {
		t.Fatalf("a %d-byte frame allocated %d bytes", size, n)
	}
}

func TestFrameSkipTags(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		rest []byte // nil: ErrBadFrame
	}{
		{"no tags", []byte{0, 9}, []byte{9}},
		{"one empty tag", []byte{1, 5, 0, 9}, []byte{9}},
		{"two tags", []byte{2, 5, 2, 'a', 'b', 0x80, 0x01, 1, 'c', 9, 8}, []byte{9, 8}},
		{"nothing left after", []byte{1, 5, 1, 'a'}, []byte{}},
		{"empty", []byte{}, nil},
		{"truncated count", []byte{0x80}, nil},
		{"more tags than bytes", []byte{3, 5, 0, 6, 0}, nil},
		{"truncated tag", []byte{1, 0x80}, nil},
		{"no size", []byte{1, 5}, nil},
		{"size past end", []byte{1, 5, 3, 'a', 'b'}, nil},
		{"size over 2 GiB", []byte{1, 5, 0x81, 0x80, 0x80, 0x80, 0x08}, nil},
		{"count overflows uint64", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, nil},
		{"count of 2^31+1", []byte{0x81, 0x80, 0x80, 0x80, 0x08}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, err := skipTags(tt.in)
			if tt.rest == nil {
				if !errors.Is(err, ErrBadFrame) {
					t.Fatalf("got rest %v, err %v; want %v", rest, err, ErrBadFrame)
				}
				return
			}
			if err != nil || !bytes.Equal(rest, tt.rest) {
				t.Fatalf("got rest %v, err %v; want %v", rest, err, tt.rest)
			}
		})
	}
}

func TestFrameUvarint(t *testing.T) {
	tests := []struct {
		in   []byte
		v    uint64
		rest int
		ok   bool
	}{
		{[]byte{0}, 0, 0, true},
		{[]byte{0x7f, 1}, 127, 1, true},
		{[]byte{0x80, 0x01}, 128, 0, true},
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x08}, 1 << 31, 0, true},
		{[]byte{0x81, 0x80, 0x80, 0x80, 0x08}, 0, 0, false}, // 2^31 + 1
		{[]byte{0x80}, 0, 0, false},
		{nil, 0, 0, false},
	}
	for _, tt := range tests {
		v, rest, err := uvarint(tt.in)
		if tt.ok != (err == nil) || v != tt.v || len(rest) != tt.rest {
			t.Errorf("uvarint(%x) = %d, %d left, %v; want %d, %d left, ok %v", tt.in, v, len(rest), err, tt.v, tt.rest, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadFrame) {
			t.Errorf("uvarint(%x): %v is not %v", tt.in, err, ErrBadFrame)
		}
	}
}

func TestFrameAppendResponse(t *testing.T) {
	meta := func(v int16) kmsg.Response {
		r := kmsg.NewPtrMetadataResponse()
		r.SetVersion(v)
		r.ClusterID = kmsg.StringPtr("strata")
		return r
	}
	versions := func(v int16) kmsg.Response {
		r := apiVersionsResponse()
		r.SetVersion(v)
		return r
	}
	tests := []struct {
		name string
		key  int16
		resp kmsg.Response
		tag  bool // the header carries an empty tag section
	}{
		{"ApiVersions v0", 18, versions(0), false},
		{"ApiVersions v3 (flexible, header v0)", 18, versions(3), false},
		{"ApiVersions v4", 18, versions(4), false},
		{"Metadata v8", 3, meta(8), false},
		{"Metadata v9", 3, meta(9), true},
		{"Metadata v13", 3, meta(13), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prior := []byte("earlier frames")
			out := appendResponse(bytes.Clone(prior), tt.key, 0x01020304, tt.resp)
			if !bytes.Equal(out[:len(prior)], prior) {
				t.Fatalf("overwrote what was in dst")
			}
			frame := out[len(prior):]
			if size := binary.BigEndian.Uint32(frame); int(size) != len(frame)-4 {
				t.Fatalf("size prefix %d, frame of %d bytes", size, len(frame)-4)
			}
			if corr := binary.BigEndian.Uint32(frame[4:]); corr != 0x01020304 {
				t.Fatalf("correlation id %#x", corr)
			}
			body := frame[8:]
			if tt.tag {
				if body[0] != 0 {
					t.Fatalf("header tag section %#x, want 0", body[0])
				}
				body = body[1:]
			}
			got := kmsg.ResponseForKey(tt.key)
			got.SetVersion(tt.resp.GetVersion())
			if err := got.ReadFrom(body); err != nil {
				t.Fatalf("decode body: %v", err)
			}
			if want := tt.resp.AppendTo(nil); !bytes.Equal(got.AppendTo(nil), want) {
				t.Fatalf("body decodes to %+v, want %+v", got, tt.resp)
			}
			if len(body) != len(tt.resp.AppendTo(nil)) {
				t.Fatalf("body of %d bytes, want %d", len(body), len(tt.resp.AppendTo(nil)))
			}
		})
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz seed files from the seeds built in code")

// TestFrameFuzzCorpus writes the seeds built in code to testdata/fuzz/FuzzParseRequest
// with -update-corpus, so that `go test -fuzz` starts from them. It checks nothing
// otherwise: the seeds follow the apis table, which grows. Files the fuzzer found
// (found-*) are kept as they are.
func TestFrameFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite the seed files")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParseRequest")
	old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
	for _, name := range old {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		name := filepath.Join(dir, fmt.Sprintf("seed-%03d", i))
		if err := os.WriteFile(name, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Only Produce may be larger than MaxNonProduceFrame, and a flexible Produce with
// tagged fields inside its topics or partitions is refused before decoding.
func TestFrameNonProduceCapAndProduceShape(t *testing.T) {
	header := func(key, version int16) []byte {
		return []byte{byte(key >> 8), byte(key), byte(version >> 8), byte(version), 0, 0, 0, 7, 0xff, 0xff}
	}
	big := append(header(3, 4), make([]byte, MaxNonProduceFrame)...)
	if _, err := parseRequest(big); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Metadata of %d bytes: %v, want ErrFrameTooLarge", len(big), err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(9)
	req.Acks = -1
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "t"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = make([]byte, MaxNonProduceFrame) // large Produce: allowed
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	frame := req.AppendTo(append(header(0, 9), 0))
	if r, err := parseRequest(frame); err != nil || r.msg == nil {
		t.Fatalf("Produce v9 of %d bytes: %v, want decoded", len(frame), err)
	}
	req.Topics[0].Partitions[0].UnknownTags.Set(5, []byte{1})
	frame = req.AppendTo(append(header(0, 9), 0))
	if _, err := parseRequest(frame); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("Produce v9 with a partition tag: %v, want ErrBadFrame", err)
	}
}
