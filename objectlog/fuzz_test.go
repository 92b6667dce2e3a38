package objectlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratalog/strata/objectlog/objstore"
)

// Fuzz targets for every decoder in this package. Their seed corpora are checked in
// under testdata/fuzz and replay on every `go test`; `make fuzz` runs them for real.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz seed files from the seeds built in code")

func batchSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{nil, make([]byte, BatchHeaderSize)}
	for _, codec := range allCodecs {
		seeds = append(seeds, testBatch(t, codec, testRecords(3, 16)))
	}
	seeds = append(seeds, mutate(seeds[2], true, func(b []byte) { b[BatchHeaderSize] = 0x7e }))
	return seeds
}

func segmentSeeds(t testing.TB) [][]byte {
	empty, _ := writeSegment(t, nil)
	three, _ := writeSegment(t, threeChunks(t))
	a := testBatch(t, CodecNone, testRecords(2, 4))
	SetBaseOffset(a, 77)
	abs, _ := writeSegment(t, []testChunk{{topic(5), 0, FlagAbsoluteOffsets, [][]byte{a}}})
	return [][]byte{empty, three, abs, three[:len(three)-1], refooter(bytes.Clone(three))}
}

func FuzzParseBatch(f *testing.F) {
	for _, s := range batchSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBatch(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ParseBatch error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if len(b.Raw) > len(data) || b.Size() != len(b.Raw) {
			t.Fatalf("batch of %d bytes from %d", len(b.Raw), len(data))
		}
		const limit = 1 << 20
		recs, err := b.Records(nil, limit)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Records error wraps neither ErrCorrupt nor ErrTooLarge: %v", err)
			}
			return
		}
		if len(recs) != int(b.RecordCount) {
			t.Fatalf("%d records, header says %d", len(recs), b.RecordCount)
		}
		// What decodes re-encodes to a batch that decodes to the same records.
		var body []byte
		for i := range recs {
			body = AppendRecord(body, &recs[i])
		}
		re, err := AppendBatch(nil, b.BatchHeader, CodecNone, body)
		if err != nil {
			t.Fatal(err)
		}
		nb, err := ParseBatch(re)
		if err != nil {
			t.Fatalf("re-encoded batch rejected: %v", err)
		}
		again, err := nb.Records(nil, limit)
		if err != nil || len(again) != len(recs) {
			t.Fatalf("re-encoded batch: %d records, %v", len(again), err)
		}
		for i := range recs {
			if !bytes.Equal(again[i].Key, recs[i].Key) || !bytes.Equal(again[i].Value, recs[i].Value) || again[i].OffsetDelta != recs[i].OffsetDelta {
				t.Fatalf("record %d changed in re-encoding", i)
			}
		}
	})
}

func FuzzDecodeSegment(f *testing.F) {
	for _, s := range segmentSeeds(f) {
		f.Add(s)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := DecodeSegment(data)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("DecodeSegment error does not wrap ErrCorrupt: %v", err)
		}
		// The ranged-read path must agree: a segment DecodeSegment accepts reads back
		// chunk by chunk; one it rejects fails in ReadIndex or some ReadChunk.
		s := objstore.NewMemory()
		if _, perr := s.Put(ctx, "s", bytes.NewReader(data), int64(len(data)), objstore.PutOptions{}); perr != nil {
			t.Fatal(perr)
		}
		rix, rerr := ReadIndex(ctx, s, "s", int64(len(data)))
		if rerr == nil {
			for i := range rix.Chunks {
				c := &rix.Chunks[i]
				var chunk []byte
				if chunk, rerr = ReadChunk(ctx, s, "s", c); rerr != nil {
					break
				}
				if err := ResolveOffsets(c, chunk, 1<<40); err != nil {
					t.Fatalf("ResolveOffsets on a checked chunk: %v", err)
				}
			}
		}
		if rerr != nil && !errors.Is(rerr, ErrCorrupt) {
			t.Fatalf("store read error does not wrap ErrCorrupt: %v", rerr)
		}
		if (err == nil) != (rerr == nil) {
			t.Fatalf("DecodeSegment says %v, ranged reads say %v", err, rerr)
		}
		if ix != nil && len(ix.Chunks) != len(rix.Chunks) {
			t.Fatalf("%d chunks vs %d", len(ix.Chunks), len(rix.Chunks))
		}
	})
}

// FuzzRecords reaches the record decoder and decompressors behind the batch CRC: the
// harness builds a batch around the fuzzed body with a correct CRC, so mutations are
// spent on what follows it rather than on guessing checksums.
func FuzzRecords(f *testing.F) {
	for _, seed := range batchSeeds(f)[2:] {
		b, err := ParseBatch(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(b.Attributes.Codec()), b.RecordCount, b.LastOffsetDelta, b.Body())
	}
	f.Fuzz(func(t *testing.T, codec byte, count, lastDelta int32, body []byte) {
		h := BatchHeader{RecordCount: count, LastOffsetDelta: lastDelta, Attributes: Attributes(codec & 7)}
		raw, err := AppendBatch(nil, h, CodecNone, body)
		if err != nil {
			t.Skip()
		}
		// Claim the codec without compressing: the body is fed to its decoder as is.
		binary.BigEndian.PutUint16(raw[offAttributes:], uint16(codec&7))
		binary.BigEndian.PutUint32(raw[offCRC:], CRC32C(raw[offAttributes:]))
		b, err := ParseBatch(raw)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ParseBatch: %v", err)
			}
			return
		}
		const limit = 1 << 20
		recs, err := b.Records(nil, limit)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Records: %v", err)
			}
			return
		}
		if len(recs) != int(count) {
			t.Fatalf("%d records, header says %d", len(recs), count)
		}
	})
}

// FuzzSegmentIndex reaches index validation and chunk checks behind the segment's
// checksums: the harness appends the fuzzed index to the fuzzed data, fixes each
// entry's chunk CRC where the entry points inside the data, and writes a correct
// footer.
func FuzzSegmentIndex(f *testing.F) {
	for _, seed := range segmentSeeds(f)[:3] {
		ix, err := DecodeSegment(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(seed[:ix.Footer.IndexOffset], seed[ix.Footer.IndexOffset:ix.Footer.IndexOffset+ix.Footer.IndexLength])
	}
	f.Fuzz(func(t *testing.T, data, index []byte) {
		index = index[:len(index)/IndexEntrySize*IndexEntrySize]
		index = bytes.Clone(index)
		for e := 0; e < len(index); e += IndexEntrySize {
			pos := binary.BigEndian.Uint64(index[e+24:])
			n := uint64(binary.BigEndian.Uint32(index[e+32:]))
			if pos <= uint64(len(data)) && n <= uint64(len(data))-pos {
				binary.BigEndian.PutUint32(index[e+72:], CRC32C(data[pos:pos+n]))
			}
		}
		seg := append(bytes.Clone(data), index...)
		foot := Footer{
			IndexOffset: int64(len(data)),
			IndexLength: int64(len(index)),
			IndexCRC:    CRC32C(index),
			ChunkCount:  int32(len(index) / IndexEntrySize),
			Version:     FormatVersion,
		}
		seg = append(seg, make([]byte, FooterSize)...)
		foot.put(seg[len(seg)-FooterSize:])
		ix, err := DecodeSegment(seg)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeSegment: %v", err)
			}
			return
		}
		for i := range ix.Chunks {
			c := &ix.Chunks[i]
			chunk := bytes.Clone(seg[c.Position : c.Position+c.Length])
			if err := ResolveOffsets(c, chunk, 1<<50); err != nil {
				t.Fatalf("ResolveOffsets on a checked chunk: %v", err)
			}
		}
	})
}

// TestFuzzCorpus checks that the corpus under testdata/fuzz holds every seed built in
// code, so that `go test -fuzz` starts from them even without the code seeds, and
// rewrites it with -update-corpus.
func TestFuzzCorpus(t *testing.T) {
	sets := map[string][][]byte{
		"FuzzParseBatch":    batchSeeds(t),
		"FuzzDecodeSegment": segmentSeeds(t),
	}
	for target, seeds := range sets {
		dir := filepath.Join("testdata", "fuzz", target)
		for i, s := range seeds {
			name := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			syncCorpusFile(t, name, fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s))
		}
	}
}

// syncCorpusFile checks that the seed file name holds want (the `go test fuzz v1`
// encoding of a seed), or with -update-corpus writes it.
func syncCorpusFile(t *testing.T, name, want string) {
	t.Helper()
	if *updateCorpus {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(name)
	if err != nil || string(got) != want {
		t.Errorf("%s is missing or stale (%v): run go test ./objectlog -run Corpus -update-corpus", name, err)
	}
}
