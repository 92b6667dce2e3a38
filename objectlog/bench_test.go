package objectlog

import (
	"bytes"
	"context"
	"testing"

	"github.com/stratalog/strata/objectlog/objstore"
)

// The workload of the foundation target: 1 MiB of 1 KiB records, as produced batches of
// 16 records (16 KiB) spread over 8 partitions of 2 topics.
const (
	benchRecordSize = 1 << 10
	benchTotal      = 1 << 20
	benchPerBatch   = 16
	benchParts      = 8
)

type benchBatch struct {
	topic     TopicID
	partition int32
	raw       []byte
}

func benchBatches(b *testing.B, codec Codec) ([]benchBatch, int) {
	b.Helper()
	var out []benchBatch
	total := 0
	for i := 0; total < benchTotal; i++ {
		raw := testBatch(b, codec, testRecords(benchPerBatch, benchRecordSize-40))
		p := int32(i % benchParts)
		out = append(out, benchBatch{topic(byte(1 + p%2)), p, raw})
		total += len(raw)
	}
	return out, total
}

// byPartition groups batches per chunk, as the agent's open segment does.
func byPartition(bs []benchBatch) [][]benchBatch {
	groups := make([][]benchBatch, benchParts)
	for _, bb := range bs {
		groups[bb.partition] = append(groups[bb.partition], bb)
	}
	return groups
}

func BenchmarkParseBatch(b *testing.B) {
	raw := testBatch(b, CodecNone, testRecords(benchTotal/benchRecordSize, benchRecordSize-40))
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseBatch(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecords(b *testing.B) {
	raw := testBatch(b, CodecNone, testRecords(benchTotal/benchRecordSize, benchRecordSize-40))
	batch, _ := ParseBatch(raw)
	recs := make([]Record, 0, batch.RecordCount)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if recs, err = batch.Records(recs[:0], 1<<21); err != nil {
			b.Fatal(err)
		}
	}
}

func writeBench(b *testing.B, groups [][]benchBatch, buf *bytes.Buffer, validate bool) {
	buf.Reset()
	w := NewSegmentWriter(buf)
	for _, g := range groups {
		if err := w.StartChunk(g[0].topic, g[0].partition, 0); err != nil {
			b.Fatal(err)
		}
		for _, bb := range g {
			if validate {
				if _, err := ParseBatch(bb.raw); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.WriteBatch(bb.raw); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkValidateAndWriteSegment is the produce path's CPU work per segment: validate
// every batch (CRC-32C) and stream it into a segment.
func BenchmarkValidateAndWriteSegment(b *testing.B) {
	bs, total := benchBatches(b, CodecNone)
	groups := byPartition(bs)
	var buf bytes.Buffer
	buf.Grow(total + 4096)
	b.SetBytes(int64(total))
	b.ReportAllocs()
	for b.Loop() {
		writeBench(b, groups, &buf, true)
	}
}

func BenchmarkWriteSegment(b *testing.B) {
	bs, total := benchBatches(b, CodecNone)
	groups := byPartition(bs)
	var buf bytes.Buffer
	buf.Grow(total + 4096)
	b.SetBytes(int64(total))
	b.ReportAllocs()
	for b.Loop() {
		writeBench(b, groups, &buf, false)
	}
}

// BenchmarkDecodeSegment checks a whole segment: footer, index, chunk CRCs, batch CRCs.
func BenchmarkDecodeSegment(b *testing.B) {
	bs, _ := benchBatches(b, CodecNone)
	var buf bytes.Buffer
	writeBench(b, byPartition(bs), &buf, false)
	seg := buf.Bytes()
	b.SetBytes(int64(len(seg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeSegment(seg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadSegment reads a segment the way a fetch does, from a store: index with
// one ranged read, then every chunk, checked and with offsets resolved.
func BenchmarkReadSegment(b *testing.B) {
	bs, _ := benchBatches(b, CodecNone)
	var buf bytes.Buffer
	writeBench(b, byPartition(bs), &buf, false)
	seg := buf.Bytes()
	ctx := context.Background()
	s := objstore.NewMemory()
	if _, err := s.Put(ctx, "s", bytes.NewReader(seg), int64(len(seg)), objstore.PutOptions{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(seg)))
	b.ReportAllocs()
	for b.Loop() {
		ix, err := ReadIndex(ctx, s, "s", int64(len(seg)))
		if err != nil {
			b.Fatal(err)
		}
		for i := range ix.Chunks {
			data, err := ReadChunk(ctx, s, "s", &ix.Chunks[i])
			if err != nil {
				b.Fatal(err)
			}
			if err := ResolveOffsets(&ix.Chunks[i], data, 1000); err != nil {
				b.Fatal(err)
			}
		}
	}
}
