package objectlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

var codecList = []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLZ4, CodecZstd}

// compressingCodecs are the codecs whose input can be malformed.
var compressingCodecs = codecList[1:]

// jsonRecords returns about size bytes of 1 KiB JSON documents shaped like typical
// event payloads: repeated keys, a few enumerations, ids and some random text, so
// that every codec sees a realistic mix of matches and literals.
func jsonRecords(size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	events := []string{"page_view", "add_to_cart", "checkout", "search", "login", "logout"}
	countries := []string{"DE", "FR", "US", "BR", "JP", "IN", "NG", "GB"}
	words := strings.Fields(`the a order shipped delayed customer payment refund card accepted
		declined warehouse berlin paris tokyo lagos sao paulo mumbai retry timeout ok error
		item sku price total discount coupon free shipping express standard returned
		gift wrap note address street city zip phone email verified pending cancelled`)
	var b bytes.Buffer
	for i := 0; b.Len() < size; i++ {
		start := b.Len()
		fmt.Fprintf(&b, `{"id":%d,"ts":"2026-03-%02dT%02d:%02d:%02d.%03dZ","user":"user-%06d",`,
			1_000_000+i, 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1000), rng.IntN(200_000))
		fmt.Fprintf(&b, `"event":%q,"country":%q,"session":"%016x","path":"/products/%d/reviews?page=%d",`,
			events[rng.IntN(len(events))], countries[rng.IntN(len(countries))], rng.Uint64(), rng.IntN(50_000), rng.IntN(20))
		b.WriteString(`"ua":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",`)
		fmt.Fprintf(&b, `"amount":%d.%02d,"items":[%d,%d,%d],"note":"`, rng.IntN(500), rng.IntN(100), rng.IntN(9999), rng.IntN(9999), rng.IntN(9999))
		for b.Len()-start < 1024-3 {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(' ')
		}
		b.Truncate(start + 1024 - 3)
		b.WriteString("\"}\n")
	}
	return b.Bytes()[:size]
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestCompressRoundTrip(t *testing.T) {
	inputs := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"one byte", []byte{'x'}},
		{"small", []byte(`{"hello":"world"}`)},
		{"json 1 MiB", jsonRecords(1<<20, 1)},
		{"random 1 MiB", randomBytes(1<<20, 2)},
		{"zeros 200 KiB", make([]byte, 200<<10)},
		// Straddles xerial's 32 KiB blocks and LZ4's 64 KiB blocks.
		{"json 100001 bytes", jsonRecords(100_001, 3)},
	}
	prefix := []byte("prefix")
	for _, c := range codecList {
		for _, in := range inputs {
			t.Run(c.String()+"/"+in.name, func(t *testing.T) {
				compressed, err := Compress(bytes.Clone(prefix), c, in.data)
				if err != nil {
					t.Fatalf("Compress: %v", err)
				}
				if !bytes.HasPrefix(compressed, prefix) {
					t.Fatalf("Compress did not append to dst")
				}
				compressed = compressed[len(prefix):]

				out, err := Decompress(bytes.Clone(prefix), c, compressed, len(in.data))
				if err != nil {
					t.Fatalf("Decompress with limit = output size: %v", err)
				}
				if !bytes.HasPrefix(out, prefix) || !bytes.Equal(out[len(prefix):], in.data) {
					t.Fatalf("round trip mismatch: got %d bytes, want %d", len(out)-len(prefix), len(in.data))
				}
				if len(in.data) == 0 {
					return
				}
				dst := bytes.Clone(prefix)
				out, err = Decompress(dst, c, compressed, len(in.data)-1)
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("Decompress with limit = output size - 1: got %v, want ErrTooLarge", err)
				}
				if !bytes.Equal(out, prefix) {
					t.Fatalf("failed Decompress returned %q, want dst unchanged", out)
				}
			})
		}
	}
}

// TestCompressFormat checks that Compress writes what Kafka clients expect, by reading
// it with the libraries' own readers rather than with Decompress.
func TestCompressFormat(t *testing.T) {
	in := jsonRecords(100_000, 4)
	read := map[Codec]func([]byte) ([]byte, error){
		CodecGzip: func(b []byte) ([]byte, error) {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			return io.ReadAll(zr)
		},
		CodecLZ4: func(b []byte) ([]byte, error) {
			return io.ReadAll(lz4.NewReader(bytes.NewReader(b)))
		},
		CodecZstd: func(b []byte) ([]byte, error) {
			zr, err := zstd.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			defer zr.Close()
			return io.ReadAll(zr)
		},
		CodecSnappy: func(b []byte) ([]byte, error) {
			// The xerial framing, read by hand: header, then length-prefixed blocks
			// of at most 32 KiB of input each.
			if !bytes.HasPrefix(b, []byte("\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01")) {
				return nil, fmt.Errorf("no xerial header: % x", b[:min(len(b), 16)])
			}
			var out []byte
			for b = b[16:]; len(b) > 0; {
				n := binary.BigEndian.Uint32(b)
				block, err := snappy.DecodeStrict(nil, b[4:4+n])
				if err != nil {
					return nil, err
				}
				if len(block) > 32<<10 {
					return nil, fmt.Errorf("block of %d bytes, want at most 32 KiB", len(block))
				}
				out = append(out, block...)
				b = b[4+n:]
			}
			return out, nil
		},
	}
	for _, c := range compressingCodecs {
		t.Run(c.String(), func(t *testing.T) {
			compressed, err := Compress(nil, c, in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := read[c](compressed)
			if err != nil {
				t.Fatalf("library reader: %v", err)
			}
			if !bytes.Equal(out, in) {
				t.Fatalf("library reader got %d bytes, want %d", len(out), len(in))
			}
			if len(compressed) >= len(in)/2 {
				t.Errorf("compressed %d bytes of JSON to %d: codec not applied?", len(in), len(compressed))
			}
		})
	}
	t.Run("lz4 frame", func(t *testing.T) {
		compressed, _ := Compress(nil, CodecLZ4, in)
		// FLG: version 01, block independence; BD: 64 KiB blocks (Java's choice).
		if flg, bd := compressed[4], compressed[5]; flg&0xe0 != 0x60 || bd != 0x40 {
			t.Fatalf("FLG %08b BD %08b: want version 1, independent blocks, 64 KiB", flg, bd)
		}
	})
}

// Hand-built snappy blocks, from the format description: a varint of the decoded
// length, then elements. A literal's tag is (len-1)<<2; a 1-byte-offset copy's tag is
// offset>>8<<5 | (len-4)<<2 | 1, followed by the offset's low byte.
var (
	snappyHello = []byte{0x05, 0x10, 'h', 'e', 'l', 'l', 'o'}
	snappyABC   = []byte{0x09, 0x08, 'a', 'b', 'c', 0x09, 0x03} // "abc" then copy 6 from 3 back
)

func xerialFrame(blocks ...[]byte) []byte {
	b := []byte("\x82SNAPPY\x00")
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, 1)
	for _, block := range blocks {
		b = binary.BigEndian.AppendUint32(b, uint32(len(block)))
		b = append(b, block...)
	}
	return b
}

func TestDecompressSnappy(t *testing.T) {
	big := jsonRecords(200_000, 5)
	var bigBlocks [][]byte
	for rest := big; len(rest) > 0; rest = rest[min(len(rest), 32<<10):] {
		bigBlocks = append(bigBlocks, snappy.Encode(nil, rest[:min(len(rest), 32<<10)]))
	}
	tests := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"raw hand-built literal", snappyHello, []byte("hello")},
		{"raw hand-built copy", snappyABC, []byte("abcabcabc")},
		{"raw empty block", []byte{0x00}, []byte{}},
		{"raw library block", snappy.Encode(nil, big), big},
		{"xerial hand-built", xerialFrame(snappyHello, snappyABC), []byte("helloabcabcabc")},
		{"xerial header only", xerialFrame(), []byte{}},
		{"xerial library blocks", xerialFrame(bigBlocks...), big},
		{"xerial concatenated", append(xerialFrame(snappyHello), xerialFrame(snappyABC)...), []byte("helloabcabcabc")},
		{"xerial unknown versions", func() []byte {
			b := xerialFrame(snappyHello)
			binary.BigEndian.PutUint32(b[8:], 7)
			binary.BigEndian.PutUint32(b[12:], 0)
			return b
		}(), []byte("hello")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Decompress([]byte("pre"), CodecSnappy, tt.in, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if string(out[:3]) != "pre" || !bytes.Equal(out[3:], tt.want) {
				t.Fatalf("got %q, want %q", out[3:min(len(out), 40)], tt.want[:min(len(tt.want), 37)])
			}
		})
	}
}

func TestDecompressSnappyCorrupt(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		// The s2 "repeat offset" extension (a copy with offset 0) is not snappy.
		{"raw s2 repeat", []byte{0x07, 0x08, 'a', 'b', 'c', 0x01, 0x00}},
		{"raw copy before start", []byte{0x04, 0x01, 0x01}},
		{"raw short output", []byte{0x06, 0x10, 'h', 'e', 'l', 'l', 'o'}},
		{"raw long output", []byte{0x04, 0x10, 'h', 'e', 'l', 'l', 'o'}},
		{"raw bad varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"xerial magic only", []byte("\x82SNAPPY\x00")},
		{"xerial header truncated", xerialFrame()[:12]},
		{"xerial block length truncated", xerialFrame(snappyHello)[:18]},
		{"xerial block overruns input", xerialFrame(snappyHello)[:22]},
		{"xerial zero-length block", xerialFrame([]byte{})},
		{"xerial bad block", xerialFrame(snappyHello, []byte{0x04, 0x01, 0x01})},
		{"xerial huge block length", append(xerialFrame(), 0x7f, 0xff, 0xff, 0xff, 0x00)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decompress(nil, CodecSnappy, tt.in, 1<<20)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
		})
	}
	t.Run("xerial announced total over limit", func(t *testing.T) {
		// The second block would pass the limit: nothing is decoded.
		in := xerialFrame(snappyHello, snappyHello)
		if _, err := Decompress(nil, CodecSnappy, in, 9); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v, want ErrTooLarge", err)
		}
	})
}

// TestDecompressCorrupt feeds every codec garbage, every truncation of a valid
// input, and a valid input with trailing bytes.
func TestDecompressCorrupt(t *testing.T) {
	in := jsonRecords(3000, 6)
	for _, c := range compressingCodecs {
		t.Run(c.String(), func(t *testing.T) {
			valid, err := Compress(nil, c, in)
			if err != nil {
				t.Fatal(err)
			}
			check := func(name string, data []byte) {
				t.Helper()
				out, err := Decompress(nil, c, data, 1<<20)
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("%s: got %d bytes, err %v; want ErrCorrupt", name, len(out), err)
				}
			}
			check("empty", nil)
			check("garbage", randomBytes(500, 7))
			check("text", []byte("this is not compressed at all, not even a little"))
			for n := 1; n < len(valid); n++ {
				if c == CodecSnappy && n == xerialHeaderSize {
					// A xerial header alone is a valid empty stream, and xerial
					// has no end marker: a cut at a block boundary is undetectable
					// here (the batch CRC and record count catch it).
					continue
				}
				check(fmt.Sprintf("truncated to %d of %d", n, len(valid)), valid[:n])
			}
			check("trailing garbage", append(bytes.Clone(valid), "junk"...))
		})
	}
}

func TestDecompressConcatenated(t *testing.T) {
	a, b := jsonRecords(5000, 8), jsonRecords(7000, 9)
	for _, c := range []Codec{CodecGzip, CodecLZ4, CodecZstd} {
		t.Run(c.String(), func(t *testing.T) {
			ca, _ := Compress(nil, c, a)
			cab, _ := Compress(ca, c, b)
			out, err := Decompress(nil, c, cab, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, append(bytes.Clone(a), b...)) {
				t.Fatalf("got %d bytes, want %d", len(out), len(a)+len(b))
			}
			if _, err := Decompress(nil, c, cab, len(a)+len(b)-1); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("limit across members: got %v, want ErrTooLarge", err)
			}
		})
	}
}

func TestDecompressUnknownCodec(t *testing.T) {
	for _, c := range []Codec{5, 6, 7, -1} {
		t.Run(c.String(), func(t *testing.T) {
			if _, err := Decompress(nil, c, []byte("data"), 1<<20); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Decompress: got %v, want ErrCorrupt", err)
			}
			if _, err := Compress(nil, c, []byte("data")); err == nil {
				t.Fatal("Compress: got no error")
			}
		})
	}
}

func TestParseCodec(t *testing.T) {
	tests := []struct {
		name    string
		want    Codec
		wantErr bool
	}{
		{"none", CodecNone, false},
		{"uncompressed", CodecNone, false},
		{"gzip", CodecGzip, false},
		{"snappy", CodecSnappy, false},
		{"lz4", CodecLZ4, false},
		{"zstd", CodecZstd, false},
		{"", 0, true},
		{"GZIP", 0, true},
		{" gzip", 0, true},
		{"producer", 0, true},
		{"lz4hc", 0, true},
		{"Codec(5)", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseCodec(tt.name)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseCodec(%q) = %v, %v; want %v, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
	for _, c := range codecList {
		if got, err := ParseCodec(c.String()); err != nil || got != c {
			t.Errorf("ParseCodec(%v.String()) = %v, %v", c, got, err)
		}
	}
	if got := Codec(6).String(); got != "Codec(6)" {
		t.Errorf("Codec(6).String() = %q", got)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// zeroBomb compresses size zero bytes with c the way a hostile or merely careless
// producer could: the libraries' streaming writers with their defaults (4 MiB LZ4
// blocks, no content size), and for snappy the same block repeated.
func zeroBomb(t testing.TB, c Codec, size int64) []byte {
	var buf bytes.Buffer
	var w io.WriteCloser
	switch c {
	case CodecGzip:
		w, _ = gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	case CodecLZ4:
		w = lz4.NewWriter(&buf)
	case CodecZstd:
		zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	case CodecSnappy:
		block := snappy.Encode(nil, make([]byte, 32<<10))
		out := xerialFrame()
		for range size / (32 << 10) {
			out = binary.BigEndian.AppendUint32(out, uint32(len(block)))
			out = append(out, block...)
		}
		return out
	case CodecNone:
		// Uncompressed data is as large as it is: no need for the whole size.
		return make([]byte, min(size, 8<<20))
	}
	if _, err := io.CopyN(w, zeros{}, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// allocated reports the bytes allocated while f runs. Tests using it must not run
// in parallel with others.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecompressBomb proves the output bound: 1 GiB of zeros fails with ErrTooLarge
// having allocated a small multiple of the limit, not the gigabyte.
func TestDecompressBomb(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 128 << 20
	}
	const limit = 4 << 20
	for _, c := range codecList {
		t.Run(c.String(), func(t *testing.T) {
			bomb := zeroBomb(t, c, size)
			runtime.GC()
			var err error
			alloc := allocated(func() { _, err = Decompress(nil, c, bomb, limit) })
			t.Logf("%d bytes in; allocated %d KiB to reject them", len(bomb), alloc>>10)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("got %v, want ErrTooLarge", err)
			}
			bound := uint64(4 * limit)
			if c == CodecLZ4 {
				// pierrec/lz4 decodes through block buffers of the frame's declared
				// block size (up to 4 MiB, two of them) from its own sync.Pool. The GC
				// above empties that pool (and -race drops pooled items at random), so
				// the buffers may be allocated afresh here: a constant, not a function
				// of the input.
				bound += 2 * 4 << 20
			}
			if alloc > bound {
				t.Fatalf("allocated %d bytes with a limit of %d (bound %d)", alloc, limit, bound)
			}
		})
	}
	t.Run("snappy raw block claiming 1 GiB", func(t *testing.T) {
		in := binary.AppendUvarint(nil, 1<<30)
		in = append(in, 0x10, 'h', 'e', 'l', 'l', 'o')
		var err error
		alloc := allocated(func() { _, err = Decompress(nil, CodecSnappy, in, limit) })
		if !errors.Is(err, ErrTooLarge) || alloc > 1<<10 {
			t.Fatalf("got %v after allocating %d bytes, want ErrTooLarge and nothing allocated", err, alloc)
		}
	})
}

// zstdFrame hand-builds a single-segment zstd frame with a 4-byte content size that
// may lie, holding one raw block.
func zstdFrame(contentSize uint32, raw []byte) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xa0} // magic; FHD: 4-byte FCS, single segment
	b = binary.LittleEndian.AppendUint32(b, contentSize)
	bh := uint32(1 | len(raw)<<3) // last block, raw, size
	b = append(b, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(b, raw...)
}

// TestDecompressZstdHeaders checks that zstd's frame header fields, which announce
// sizes, never drive allocation past what the data proves.
func TestDecompressZstdHeaders(t *testing.T) {
	const limit = 4 << 20
	t.Run("honest hand-built frame", func(t *testing.T) {
		out, err := Decompress(nil, CodecZstd, zstdFrame(5, []byte("hello")), limit)
		if err != nil || string(out) != "hello" {
			t.Fatalf("got %q, %v", out, err)
		}
	})
	t.Run("content size over limit", func(t *testing.T) {
		in, _ := Compress(nil, CodecZstd, make([]byte, limit+1))
		var err error
		alloc := allocated(func() { _, err = Decompress(nil, CodecZstd, in, limit) })
		if !errors.Is(err, ErrTooLarge) || alloc > 64<<10 {
			t.Fatalf("got %v after allocating %d bytes, want ErrTooLarge at once", err, alloc)
		}
	})
	t.Run("content size its blocks cannot hold", func(t *testing.T) {
		// 3 MiB announced, one 5-byte raw block present.
		var err error
		alloc := allocated(func() { _, err = Decompress(nil, CodecZstd, zstdFrame(3<<20, []byte("hello")), limit) })
		if !errors.Is(err, ErrCorrupt) || alloc > 64<<10 {
			t.Fatalf("got %v after allocating %d bytes, want ErrCorrupt at once", err, alloc)
		}
	})
	t.Run("content size its blocks could hold", func(t *testing.T) {
		// 300 KiB announced and three compressed blocks of one (bad) byte each,
		// which could hold 384 KiB: the lie costs what honest RLE blocks of
		// the same length could, and is then found.
		in := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xa0}
		in = binary.LittleEndian.AppendUint32(in, 300<<10)
		for i := range 3 {
			bh := uint32(2<<1 | 1<<3) // compressed, 1 byte
			if i == 2 {
				bh |= 1 // last
			}
			in = append(in, byte(bh), byte(bh>>8), byte(bh>>16), 0xff)
		}
		var err error
		alloc := allocated(func() { _, err = Decompress(nil, CodecZstd, in, limit) })
		t.Logf("allocated %d KiB", alloc>>10)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
		if alloc > 2*(384<<10+128<<10) {
			t.Fatalf("allocated %d bytes for a %d-byte frame", alloc, len(in))
		}
	})
	t.Run("large window small content", func(t *testing.T) {
		// A streaming encoder announces its whole window (here 64 MiB) and no
		// content size; decoding must not allocate the window.
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf, zstd.WithWindowSize(64<<20), zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		in := jsonRecords(10_000, 10)
		// Flushing before the end commits the header before the size is known.
		zw.Write(in[:5000])
		zw.Flush()
		zw.Write(in[5000:])
		zw.Close()
		var h zstd.Header
		if err := h.Decode(buf.Bytes()); err != nil || h.WindowSize != 64<<20 || h.HasFCS {
			t.Fatalf("test frame: window %d, has content size %v, %v", h.WindowSize, h.HasFCS, err)
		}
		Decompress(nil, CodecZstd, buf.Bytes(), limit) // warm the pool
		var out []byte
		alloc := allocated(func() { out, err = Decompress(nil, CodecZstd, buf.Bytes(), limit) })
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("got %d bytes, %v", len(out), err)
		}
		if alloc > 1<<20 {
			t.Fatalf("allocated %d bytes for %d of output", alloc, len(in))
		}
	})
	t.Run("window over libzstd's limit", func(t *testing.T) {
		// FHD: windowed; window descriptor exponent 18 → 256 MiB.
		in := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 18 << 3, 0x01, 0x00, 0x00}
		if _, err := Decompress(nil, CodecZstd, in, limit); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
	})
	t.Run("skippable frame", func(t *testing.T) {
		in := append([]byte{0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'x', 'y', 'z'}, zstdFrame(5, []byte("hello"))...)
		out, err := Decompress(nil, CodecZstd, in, limit)
		if err != nil || string(out) != "hello" {
			t.Fatalf("got %q, %v", out, err)
		}
	})
}

// TestDecompressAllocs checks that decoding reuses pooled state: what a warm
// Decompress allocates is about its output.
func TestDecompressAllocs(t *testing.T) {
	in := jsonRecords(256<<10, 11)
	for _, c := range compressingCodecs {
		t.Run(c.String(), func(t *testing.T) {
			compressed, _ := Compress(nil, c, in)
			dst := make([]byte, 0, len(in))
			// sync.Pool drops entries at GC, and a quarter of Puts under -race:
			// the fewest allocations over several runs is the steady state.
			fewest := math.Inf(1)
			for range 20 {
				fewest = min(fewest, testing.AllocsPerRun(1, func() {
					if _, err := Decompress(dst, c, compressed, len(in)); err != nil {
						t.Fatal(err)
					}
				}))
			}
			if fewest > 0 {
				t.Errorf("%.0f allocations per Decompress into a buffer of the right size, want 0", fewest)
			}
		})
	}
}

// TestCodecsConcurrent shares the pools between goroutines; run it with -race.
func TestCodecsConcurrent(t *testing.T) {
	inputs := [][]byte{jsonRecords(70_000, 12), jsonRecords(500, 13), nil}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 30 {
				c := codecList[(g+i)%len(codecList)]
				in := inputs[i%len(inputs)]
				compressed, err := Compress(nil, c, in)
				if err != nil {
					t.Error(err)
					return
				}
				out, err := Decompress(nil, c, compressed, len(in))
				if err != nil || !bytes.Equal(out, in) {
					t.Errorf("%v: got %d bytes, %v; want %d", c, len(out), err, len(in))
					return
				}
			}
		})
	}
	wg.Wait()
}

func benchCodecs(b *testing.B, f func(b *testing.B, c Codec, raw, compressed []byte)) {
	raw := jsonRecords(1<<20, 42)
	for _, c := range compressingCodecs {
		compressed, err := Compress(nil, c, raw)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.String(), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			f(b, c, raw, compressed)
			b.ReportMetric(float64(len(raw))/float64(len(compressed)), "ratio")
		})
	}
}

// BenchmarkCompress compresses 1 MiB of 1 KiB JSON records into a reused buffer;
// MB/s is of input.
func BenchmarkCompress(b *testing.B) {
	benchCodecs(b, func(b *testing.B, c Codec, raw, _ []byte) {
		var dst []byte
		for b.Loop() {
			var err error
			if dst, err = Compress(dst[:0], c, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecompress decompresses the same records into a reused buffer, as the
// agent does with pooled buffers; MB/s is of output.
func BenchmarkDecompress(b *testing.B) {
	benchCodecs(b, func(b *testing.B, c Codec, raw, compressed []byte) {
		var dst []byte
		for b.Loop() {
			var err error
			if dst, err = Decompress(dst[:0], c, compressed, len(raw)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecompressNew decompresses into a fresh buffer each time, as a caller
// without a buffer to reuse does.
func BenchmarkDecompressNew(b *testing.B) {
	benchCodecs(b, func(b *testing.B, c Codec, raw, compressed []byte) {
		for b.Loop() {
			if _, err := Decompress(nil, c, compressed, len(raw)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
