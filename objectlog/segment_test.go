package objectlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog/objstore"
)

func topic(b byte) TopicID {
	var t TopicID
	for i := range t {
		t[i] = b
	}
	return t
}

type testChunk struct {
	topic     TopicID
	partition int32
	flags     ChunkFlags
	batches   [][]byte
}

func writeSegment(t testing.TB, chunks []testChunk) ([]byte, *Index) {
	t.Helper()
	var buf bytes.Buffer
	w := NewSegmentWriter(&buf)
	for _, c := range chunks {
		if err := w.StartChunk(c.topic, c.partition, c.flags); err != nil {
			t.Fatal(err)
		}
		for _, b := range c.batches {
			if err := w.WriteBatch(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	ix, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ix.Size != int64(buf.Len()) {
		t.Fatalf("index says %d bytes, wrote %d", ix.Size, buf.Len())
	}
	return buf.Bytes(), ix
}

// threeChunks is a segment written in non-sorted order with mixed codecs.
func threeChunks(t testing.TB) []testChunk {
	return []testChunk{
		{topic(2), 0, 0, [][]byte{testBatch(t, CodecNone, testRecords(3, 10)), testBatch(t, CodecZstd, testRecords(5, 10))}},
		{topic(1), 7, 0, [][]byte{testBatch(t, CodecLZ4, testRecords(1, 10))}},
		{topic(1), 2, 0, [][]byte{testBatch(t, CodecSnappy, testRecords(2, 10)), testBatch(t, CodecGzip, testRecords(2, 10)), testBatch(t, CodecNone, testRecords(4, 10))}},
	}
}

func TestSegmentRoundTrip(t *testing.T) {
	seg, written := writeSegment(t, threeChunks(t))
	ix, err := DecodeSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Chunks) != 3 {
		t.Fatalf("%d chunks", len(ix.Chunks))
	}
	for i := range ix.Chunks {
		if ix.Chunks[i] != written.Chunks[i] {
			t.Fatalf("chunk %d: decoded %+v, written %+v", i, ix.Chunks[i], written.Chunks[i])
		}
	}
	// Sorted by (topic, partition) whatever the write order.
	if ix.Chunks[0].TopicID != topic(1) || ix.Chunks[0].Partition != 2 || ix.Chunks[1].Partition != 7 || ix.Chunks[2].TopicID != topic(2) {
		t.Fatalf("index order: %+v", ix.Chunks)
	}
	c, ok := ix.Find(topic(1), 2)
	if !ok || c.BatchCount != 3 || c.RecordCount != 8 || c.LastOffsetDelta != 7 || c.AbsoluteOffsets() {
		t.Fatalf("find topic1/2: %+v %v", c, ok)
	}
	if _, ok := ix.Find(topic(1), 3); ok {
		t.Fatal("found a chunk that is not there")
	}

	// Relative offsets: batches are numbered from the chunk start; resolving adds the
	// base the metastore assigned.
	data := bytes.Clone(seg[c.Position : c.Position+c.Length])
	if err := ResolveOffsets(&c, data, 1000); err != nil {
		t.Fatal(err)
	}
	var bases []int64
	for b, err := range Batches(data) {
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, b.BaseOffset)
	}
	if len(bases) != 3 || bases[0] != 1000 || bases[1] != 1002 || bases[2] != 1004 {
		t.Fatalf("resolved base offsets %v, want [1000 1002 1004]", bases)
	}

	// A run starting at the second batch (an index entry that leaves the first
	// out) resolves from its own base.
	data = bytes.Clone(seg[c.Position : c.Position+c.Length])
	firstSize := 0
	for b, err := range Batches(data) {
		if err != nil {
			t.Fatal(err)
		}
		firstSize = len(b.Raw)
		break
	}
	run := data[firstSize:]
	if err := ResolveOffsets(&c, run, 500); err != nil {
		t.Fatal(err)
	}
	bases = bases[:0]
	for b, err := range Batches(run) {
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, b.BaseOffset)
	}
	if len(bases) != 2 || bases[0] != 500 || bases[1] != 502 {
		t.Fatalf("run resolved to %v, want [500 502]", bases)
	}
}

func TestSegmentAbsoluteChunks(t *testing.T) {
	a := testBatch(t, CodecNone, testRecords(3, 10))
	b := testBatch(t, CodecNone, testRecords(2, 10))
	SetBaseOffset(a, 500)
	SetBaseOffset(b, 510) // a gap, as compaction leaves
	seg, _ := writeSegment(t, []testChunk{{topic(9), 1, FlagAbsoluteOffsets, [][]byte{a, b}}})
	ix, err := DecodeSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	c := ix.Chunks[0]
	if c.BaseOffset != 500 || c.OffsetCount() != 12 || c.RecordCount != 5 {
		t.Fatalf("absolute chunk %+v", c)
	}
	data := bytes.Clone(seg[c.Position : c.Position+c.Length])
	if err := ResolveOffsets(&c, data, 99999); err != nil || !bytes.Equal(data, seg[c.Position:c.Position+c.Length]) {
		t.Fatalf("ResolveOffsets changed an absolute chunk (%v)", err)
	}
	// Absolute offsets must not go backwards.
	var buf bytes.Buffer
	w := NewSegmentWriter(&buf)
	w.StartChunk(topic(9), 1, FlagAbsoluteOffsets)
	w.WriteBatch(b)
	if err := w.WriteBatch(a); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("decreasing absolute offsets: %v", err)
	}
}

func TestSegmentWriterMisuse(t *testing.T) {
	b := testBatch(t, CodecNone, testRecords(1, 1))
	check := func(name string, f func(w *SegmentWriter) error) {
		t.Helper()
		w := NewSegmentWriter(&bytes.Buffer{})
		if err := f(w); !errors.Is(err, ErrWriterState) {
			t.Errorf("%s: %v, want ErrWriterState", name, err)
		}
	}
	check("batch before chunk", func(w *SegmentWriter) error { return w.WriteBatch(b) })
	check("duplicate partition", func(w *SegmentWriter) error {
		w.StartChunk(topic(1), 0, 0)
		w.WriteBatch(b)
		return w.StartChunk(topic(1), 0, 0)
	})
	check("empty chunk", func(w *SegmentWriter) error {
		w.StartChunk(topic(1), 0, 0)
		_, err := w.Close()
		return err
	})
	check("negative partition", func(w *SegmentWriter) error { return w.StartChunk(topic(1), -1, 0) })
	check("unknown flag", func(w *SegmentWriter) error { return w.StartChunk(topic(1), 0, 0x8) })
	check("write after close", func(w *SegmentWriter) error {
		w.StartChunk(topic(1), 0, 0)
		w.WriteBatch(b)
		w.Close()
		return w.WriteBatch(b)
	})
	w := NewSegmentWriter(&bytes.Buffer{})
	w.StartChunk(topic(1), 0, 0)
	if err := w.WriteBatch(append(bytes.Clone(b), 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("batch with trailing byte: %v", err)
	}
}

// An empty segment (no chunks) is valid: footer only.
func TestSegmentEmpty(t *testing.T) {
	seg, _ := writeSegment(t, nil)
	if len(seg) != FooterSize {
		t.Fatalf("empty segment is %d bytes", len(seg))
	}
	ix, err := DecodeSegment(seg)
	if err != nil || len(ix.Chunks) != 0 {
		t.Fatalf("empty segment: %v", err)
	}
}

func storeWith(t *testing.T, key string, data []byte) *objstore.Counting {
	t.Helper()
	s := objstore.NewCounting(objstore.NewMemory())
	if _, err := s.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestReadIndexAndChunk(t *testing.T) {
	ctx := context.Background()
	seg, written := writeSegment(t, threeChunks(t))
	key := SegmentKey(NewSegmentID(time.Now(), [8]byte{1}))
	s := storeWith(t, key, seg)

	ix, err := ReadIndex(ctx, s, key, int64(len(seg)))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Counts().Requests[objstore.OpGetRange]; got != 1 {
		t.Fatalf("ReadIndex made %d ranged reads, want 1", got)
	}
	for i := range written.Chunks {
		c := &ix.Chunks[i]
		data, err := ReadChunk(ctx, s, key, c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, seg[c.Position:c.Position+c.Length]) {
			t.Fatalf("chunk %d bytes differ", i)
		}
	}
	if got := s.Counts().Requests[objstore.OpGetRange]; got != 4 {
		t.Fatalf("%d ranged reads for index and 3 chunks, want 4", got)
	}

	// A wrong size is caught, not trusted.
	if _, err := ReadIndex(ctx, s, key, int64(len(seg))+10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("size too large: %v", err)
	}
	if _, err := ReadIndex(ctx, s, key, int64(len(seg))-1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("size too small: %v", err)
	}
	if _, err := ReadIndex(ctx, s, "segments/00/missing.seg", 100); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("missing object: %v", err)
	}
}

// An index larger than TailRead costs exactly one more read, of the missing part.
func TestReadIndexLarge(t *testing.T) {
	ctx := context.Background()
	b := testBatch(t, CodecNone, testRecords(1, 1))
	var chunks []testChunk
	for p := range int32(TailRead/IndexEntrySize + 50) {
		chunks = append(chunks, testChunk{topic(3), p, 0, [][]byte{b}})
	}
	seg, written := writeSegment(t, chunks)
	s := storeWith(t, "big.seg", seg)
	ix, err := ReadIndex(ctx, s, "big.seg", int64(len(seg)))
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Chunks) != len(written.Chunks) || ix.Chunks[len(ix.Chunks)-1] != written.Chunks[len(written.Chunks)-1] {
		t.Fatal("large index differs")
	}
	if c := s.Counts(); c.Requests[objstore.OpGetRange] != 2 || c.BytesOut != ix.Footer.IndexLength+FooterSize {
		t.Fatalf("large index: %d reads of %d bytes, want 2 reads of %d", c.Requests[objstore.OpGetRange], c.BytesOut, ix.Footer.IndexLength+FooterSize)
	}
}

// refooter rewrites the index CRC and footer CRC after an index was damaged on purpose,
// so the damage reaches the structural checks behind the checksums.
func refooter(seg []byte) []byte {
	size := len(seg)
	f := seg[size-FooterSize:]
	idxOff := int(binary.BigEndian.Uint64(f[0:]))
	idxLen := int(binary.BigEndian.Uint32(f[8:]))
	if idxOff >= 0 && idxOff+idxLen <= size-FooterSize {
		binary.BigEndian.PutUint32(f[12:], CRC32C(seg[idxOff:idxOff+idxLen]))
	}
	binary.BigEndian.PutUint32(f[28:], CRC32C(f[0:28]))
	return seg
}

func TestSegmentCorruption(t *testing.T) {
	seg, ix := writeSegment(t, threeChunks(t))
	size := len(seg)
	foot := size - FooterSize
	idx := int(ix.Footer.IndexOffset)
	entry := func(i, field int) int { return idx + i*IndexEntrySize + field }
	edit := func(fix bool, f func(b []byte)) []byte {
		b := bytes.Clone(seg)
		f(b)
		if fix {
			refooter(b)
		}
		return b
	}
	put32 := func(b []byte, off int, v uint32) { binary.BigEndian.PutUint32(b[off:], v) }
	put64 := func(b []byte, off int, v uint64) { binary.BigEndian.PutUint64(b[off:], v) }

	cases := map[string][]byte{
		"empty":                 nil,
		"one byte":              {0},
		"footer only garbage":   bytes.Repeat([]byte{0xAB}, FooterSize),
		"truncated tail":        seg[:size-1],
		"truncated head":        seg[1:],
		"wrong magic":           edit(false, func(b []byte) { b[size-1] = 'X' }),
		"footer CRC":            edit(false, func(b []byte) { b[foot+16] ^= 1 }),
		"version 2":             edit(true, func(b []byte) { b[foot+20] = 2 }),
		"footer reserved":       edit(true, func(b []byte) { b[foot+22] = 1 }),
		"index CRC":             edit(false, func(b []byte) { b[idx] ^= 1 }),
		"index outside object":  edit(true, func(b []byte) { put64(b, foot, uint64(size)) }),
		"index offset 2^63":     edit(true, func(b []byte) { put64(b, foot, 1<<63) }),
		"chunk count 2^31-1":    edit(true, func(b []byte) { put32(b, foot+16, math.MaxInt32) }),
		"index length mismatch": edit(true, func(b []byte) { put32(b, foot+8, uint32(ix.Footer.IndexLength-1)) }),
		"zero-length chunk":     edit(true, func(b []byte) { put32(b, entry(0, 32), 0) }),
		"chunk length 2^31":     edit(true, func(b []byte) { put32(b, entry(0, 32), 1<<31) }),
		"chunk length 2^31-1":   edit(true, func(b []byte) { put32(b, entry(0, 32), math.MaxInt32) }),
		"chunk past index":      edit(true, func(b []byte) { put64(b, entry(2, 24), uint64(idx)) }),
		"chunk position 2^63":   edit(true, func(b []byte) { put64(b, entry(1, 24), 1<<63) }),
		"overlapping chunks":    edit(true, func(b []byte) { put64(b, entry(1, 24), binary.BigEndian.Uint64(b[entry(0, 24):])) }),
		"unsorted index":        edit(true, func(b []byte) { b[entry(2, 0)] = 0 }),
		"negative partition":    edit(true, func(b []byte) { put32(b, entry(0, 16), 0xffffffff) }),
		"unknown chunk flag":    edit(true, func(b []byte) { b[entry(0, 21)] = 0x80 }),
		"zero batches":          edit(true, func(b []byte) { put32(b, entry(0, 36), 0) }),
		"batch count too high":  edit(true, func(b []byte) { put32(b, entry(0, 36), 2) }),
		"record count mismatch": edit(true, func(b []byte) { put32(b, entry(0, 40), 7) }),
		"wrong max timestamp":   edit(true, func(b []byte) { put64(b, entry(0, 64), 1) }),
		"chunk CRC":             edit(false, func(b []byte) { b[ix.Chunks[1].Position+30] ^= 1 }),
		"batch corrupt, chunk CRC fixed": edit(true, func(b []byte) {
			c := ix.Chunks[0]
			b[c.Position+c.Length-1] ^= 1
			put32(b, entry(0, 72), CRC32C(b[c.Position:c.Position+c.Length]))
		}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeSegment(b); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeSegment: %v, want ErrCorrupt", err)
			}
			// The store path (index, then each chunk) fails the same way.
			if len(b) == 0 {
				return
			}
			s := storeWith(t, "s", b)
			ctx := context.Background()
			rix, err := ReadIndex(ctx, s, "s", int64(len(b)))
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadIndex: %v, want ErrCorrupt", err)
				}
				return
			}
			for i := range rix.Chunks {
				if _, err = ReadChunk(ctx, s, "s", &rix.Chunks[i]); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadIndex+ReadChunk: %v, want ErrCorrupt", err)
			}
		})
	}
}

// A footer claiming a huge index in a tiny object must not allocate for the claim.
func TestSegmentClaimsDoNotAllocate(t *testing.T) {
	seg := make([]byte, FooterSize)
	f := Footer{IndexOffset: 0, IndexLength: math.MaxInt32 / IndexEntrySize * IndexEntrySize, ChunkCount: math.MaxInt32 / IndexEntrySize, Version: FormatVersion}
	f.put(seg)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := DecodeSegment(seg); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if perCall := (after.TotalAlloc - before.TotalAlloc) / 100; perCall > 4096 {
		t.Fatalf("DecodeSegment of a %d-byte lie allocated %d bytes per call", len(seg), perCall)
	}
}

func TestSegmentKeys(t *testing.T) {
	at := time.UnixMilli(1_764_000_000_123)
	id := NewSegmentID(at, [8]byte{1, 2, 3, 4, 5, 6, 7, 0xab})
	key := SegmentKey(id)
	if key != "segments/ab/0000019ab697e87b01020304050607ab.seg" {
		t.Fatalf("key %q", key)
	}
	got, err := ParseSegmentKey(key)
	if err != nil || got != id || !got.Time().Equal(at) {
		t.Fatalf("parse %q: %v %v", key, got, err)
	}
	if err := objstore.ValidateKey(key); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"", "segments/", "segments/ab/0000019ab8a0b47b01020304050607ab", "segments/cd/0000019ab8a0b47b01020304050607ab.seg",
		"segments/AB/0000019AB8A0B47B01020304050607AB.seg", "other/ab/0000019ab8a0b47b01020304050607ab.seg",
		"segments/ab/0000019ab8a0b47b01020304050607zz.seg",
	} {
		if _, err := ParseSegmentKey(bad); err == nil {
			t.Errorf("ParseSegmentKey(%q) accepted", bad)
		}
	}
	// Later ids sort later.
	id2 := NewSegmentID(at.Add(time.Millisecond), [8]byte{})
	if id2.String() <= id.String() {
		t.Fatal("ids do not sort by time")
	}
}
