package objectlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// testRecords builds n records whose values are valueSize bytes of JSON-ish text.
func testRecords(n, valueSize int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		v := bytes.Repeat([]byte(fmt.Sprintf(`{"id":%d,"name":"user-%d","ok":true}`, i, i)), valueSize/30+1)[:valueSize]
		recs[i] = Record{
			TimestampDelta: int64(i),
			OffsetDelta:    int32(i),
			Key:            []byte(fmt.Sprintf("key-%d", i%17)),
			Value:          v,
		}
		if i%3 == 0 {
			recs[i].Headers = []Header{{Key: []byte("trace"), Value: []byte("abc")}, {Key: []byte("null"), Value: nil}}
		}
		if i%5 == 0 {
			recs[i].Key = nil
		}
	}
	return recs
}

func encodeRecords(recs []Record) []byte {
	var b []byte
	for i := range recs {
		b = AppendRecord(b, &recs[i])
	}
	return b
}

// testBatch builds a valid batch of recs compressed with codec.
func testBatch(t testing.TB, codec Codec, recs []Record) []byte {
	t.Helper()
	h := BatchHeader{
		BaseOffset:           0,
		PartitionLeaderEpoch: -1,
		LastOffsetDelta:      int32(len(recs) - 1),
		BaseTimestamp:        1_700_000_000_000,
		MaxTimestamp:         1_700_000_000_000 + int64(len(recs)) - 1,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		BaseSequence:         -1,
		RecordCount:          int32(len(recs)),
	}
	b, err := AppendBatch(nil, h, codec, encodeRecords(recs))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var allCodecs = []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLZ4, CodecZstd}

func TestBatchRoundTrip(t *testing.T) {
	recs := testRecords(50, 200)
	for _, codec := range allCodecs {
		t.Run(codec.String(), func(t *testing.T) {
			raw := testBatch(t, codec, recs)
			b, err := ParseBatch(raw)
			if err != nil {
				t.Fatal(err)
			}
			if b.Attributes.Codec() != codec || b.RecordCount != 50 || len(b.Raw) != len(raw) || b.Size() != len(raw) {
				t.Fatalf("header %+v", b.BatchHeader)
			}
			got, err := b.Records(nil, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(recs) {
				t.Fatalf("%d records, want %d", len(got), len(recs))
			}
			for i := range recs {
				w, g := recs[i], got[i]
				if g.OffsetDelta != w.OffsetDelta || g.TimestampDelta != w.TimestampDelta ||
					!bytes.Equal(g.Key, w.Key) || (g.Key == nil) != (w.Key == nil) ||
					!bytes.Equal(g.Value, w.Value) || len(g.Headers) != len(w.Headers) {
					t.Fatalf("record %d differs: %+v", i, g)
				}
				for j := range w.Headers {
					if !bytes.Equal(g.Headers[j].Key, w.Headers[j].Key) || (g.Headers[j].Value == nil) != (w.Headers[j].Value == nil) {
						t.Fatalf("record %d header %d differs", i, j)
					}
				}
			}
		})
	}
}

// kmsg (franz-go) is an independent implementation of the same layout: a batch it
// encodes must parse here byte for byte, and ours must decode there.
func TestBatchMatchesKmsg(t *testing.T) {
	recs := testRecords(7, 40)
	body := encodeRecords(recs)
	kb := kmsg.RecordBatch{
		FirstOffset:          42,
		PartitionLeaderEpoch: 3,
		Magic:                2,
		Attributes:           int16(AttrTransactional),
		LastOffsetDelta:      6,
		FirstTimestamp:       1000,
		MaxTimestamp:         1006,
		ProducerID:           77,
		ProducerEpoch:        2,
		FirstSequence:        10,
		NumRecords:           7,
		Records:              body,
	}
	kb.Length = int32(BatchHeaderSize - 12 + len(body))
	enc := kb.AppendTo(nil)
	binary.BigEndian.PutUint32(enc[offCRC:], crc32.Checksum(enc[offAttributes:], crc32.MakeTable(crc32.Castagnoli)))

	b, err := ParseBatch(enc)
	if err != nil {
		t.Fatalf("kmsg-encoded batch rejected: %v", err)
	}
	want := BatchHeader{
		BaseOffset: 42, BatchLength: kb.Length, PartitionLeaderEpoch: 3, Magic: 2,
		CRC: binary.BigEndian.Uint32(enc[offCRC:]), Attributes: AttrTransactional, LastOffsetDelta: 6,
		BaseTimestamp: 1000, MaxTimestamp: 1006, ProducerID: 77, ProducerEpoch: 2, BaseSequence: 10, RecordCount: 7,
	}
	if b.BatchHeader != want {
		t.Fatalf("header\n got %+v\nwant %+v", b.BatchHeader, want)
	}
	ours, err := AppendBatch(nil, want, CodecNone, body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, enc) {
		t.Fatal("AppendBatch differs from kmsg's encoding of the same batch")
	}
	// And kmsg reads our records.
	rest := body
	for i := range recs {
		var kr kmsg.Record
		length, n := binary.Varint(rest)
		if err := kr.ReadFrom(rest[:n+int(length)]); err != nil {
			t.Fatalf("kmsg rejects record %d: %v", i, err)
		}
		if !bytes.Equal(kr.Value, recs[i].Value) || kr.OffsetDelta != recs[i].OffsetDelta || len(kr.Headers) != len(recs[i].Headers) {
			t.Fatalf("kmsg reads record %d as %+v", i, kr)
		}
		rest = rest[n+int(length):]
	}
}

func TestBatchPatchKeepsCRC(t *testing.T) {
	raw := testBatch(t, CodecZstd, testRecords(3, 10))
	if err := SetBaseOffset(raw, 1<<40); err != nil {
		t.Fatal(err)
	}
	if err := SetPartitionLeaderEpoch(raw, 9); err != nil {
		t.Fatal(err)
	}
	b, err := ParseBatch(raw)
	if err != nil {
		t.Fatalf("patched batch invalid: %v", err)
	}
	if b.BaseOffset != 1<<40 || b.PartitionLeaderEpoch != 9 {
		t.Fatalf("patch not applied: %+v", b.BatchHeader)
	}
	if err := SetBaseOffset(raw[:10], 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("patching a truncated batch: %v", err)
	}
}

func TestBatchRecompress(t *testing.T) {
	recs := testRecords(20, 100)
	src := testBatch(t, CodecGzip, recs)
	b, _ := ParseBatch(src)
	for _, codec := range allCodecs {
		out, err := b.Recompress(nil, codec, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		nb, err := ParseBatch(out)
		if err != nil {
			t.Fatalf("%s: %v", codec, err)
		}
		got, err := nb.Records(nil, 1<<20)
		if err != nil || len(got) != 20 || !bytes.Equal(got[19].Value, recs[19].Value) {
			t.Fatalf("%s: records after recompression: %d, %v", codec, len(got), err)
		}
		if nb.Attributes.Codec() != codec || nb.ProducerID != b.ProducerID || nb.MaxTimestamp != b.MaxTimestamp {
			t.Fatalf("%s: header not kept: %+v", codec, nb.BatchHeader)
		}
	}
}

// mutate returns a copy of b with f applied and, if fixCRC, the CRC recomputed so the
// damage reaches the checks behind it.
func mutate(b []byte, fixCRC bool, f func([]byte)) []byte {
	c := bytes.Clone(b)
	f(c)
	if fixCRC && len(c) >= BatchHeaderSize {
		binary.BigEndian.PutUint32(c[offCRC:], CRC32C(c[offAttributes:]))
	}
	return c
}

func TestBatchBadInput(t *testing.T) {
	good := testBatch(t, CodecNone, testRecords(4, 20))
	goodZstd := testBatch(t, CodecZstd, testRecords(4, 20))
	put32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.BigEndian.PutUint32(b[off:], v) }
	}
	cases := []struct {
		name    string
		b       []byte
		records bool // the damage shows only when records are decoded
	}{
		{"empty", nil, false},
		{"truncated header", good[:60], false},
		{"truncated body", good[:len(good)-1], false},
		{"length below header", mutate(good, false, put32(offBatchLength, 48)), false},
		{"length near 2^31", mutate(good, false, put32(offBatchLength, math.MaxInt32)), false},
		{"negative length", mutate(good, false, put32(offBatchLength, 0x80000000)), false},
		{"magic 1", mutate(good, false, func(b []byte) { b[offMagic] = 1 }), false},
		{"bad CRC", mutate(good, false, func(b []byte) { b[len(b)-1] ^= 1 }), false},
		{"codec 7", mutate(good, true, func(b []byte) { b[offAttributes+1] |= 7 }), false},
		{"negative record count", mutate(good, true, put32(57, 0xffffffff)), false},
		{"count beyond bytes", mutate(good, true, put32(57, 1<<30)), false},
		{"count above offsets", mutate(good, true, put32(57, 5)), false},
		{"count below records", mutate(good, true, put32(57, 3)), true},
		{"compressed count above records", mutate(goodZstd, true, func(b []byte) { put32(57, 4_000_000)(b); put32(23, 3_999_999)(b) }), true},
		{"last delta below records", mutate(good, true, put32(23, 2)), false},
		{"garbage compressed body", mutate(goodZstd, true, func(b []byte) { b[BatchHeaderSize+5] ^= 0xff }), true},
		{"record length lies", mutate(good, true, func(b []byte) { b[BatchHeaderSize] = 0x7e }), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := ParseBatch(c.b)
			if !c.records {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ParseBatch: %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBatch: %v", err)
			}
			if _, err := b.Records(nil, 1<<20); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Records: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestRecordsBomb(t *testing.T) {
	// 4 MiB of zeros as one record's value compresses to almost nothing.
	recs := []Record{{Value: make([]byte, 4<<20)}}
	for _, codec := range allCodecs[1:] {
		b, err := ParseBatch(testBatch(t, codec, recs))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Records(nil, 1<<20); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s: decompressing past the limit: %v, want ErrTooLarge", codec, err)
		}
	}
}

func TestRecordDecodeEdges(t *testing.T) {
	dup := testRecords(2, 5)
	dup[1].OffsetDelta = 0 // not increasing
	nullHeaderKey := []Record{{Headers: []Header{{Key: nil, Value: []byte("v")}}}}
	for name, recs := range map[string][]Record{"duplicate offset delta": dup, "null header key": nullHeaderKey} {
		b, err := ParseBatch(testBatch(t, CodecNone, recs))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Records(nil, 1<<20); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	// An empty batch (possible after compaction) is valid.
	h := BatchHeader{LastOffsetDelta: 3, RecordCount: 0}
	raw, _ := AppendBatch(nil, h, CodecNone, nil)
	b, err := ParseBatch(raw)
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := b.Records(nil, 1<<20); err != nil || len(recs) != 0 {
		t.Fatalf("empty batch: %d records, %v", len(recs), err)
	}
}

func TestBatchesIterates(t *testing.T) {
	a := testBatch(t, CodecNone, testRecords(2, 5))
	b := testBatch(t, CodecLZ4, testRecords(3, 5))
	cat := append(append([]byte{}, a...), b...)
	var counts []int32
	for batch, err := range Batches(cat) {
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, batch.RecordCount)
	}
	if fmt.Sprint(counts) != "[2 3]" {
		t.Fatalf("counts %v", counts)
	}
	var last error
	for _, err := range Batches(append(cat, 1, 2, 3)) {
		last = err
	}
	if !errors.Is(last, ErrCorrupt) {
		t.Fatalf("trailing bytes: %v, want ErrCorrupt", last)
	}
}

func TestSetLogAppendTime(t *testing.T) {
	rec := AppendRecord(nil, &Record{TimestampDelta: 3, Value: []byte("v")})
	b, err := AppendBatch(nil, BatchHeader{BaseTimestamp: 100, MaxTimestamp: 103, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, RecordCount: 1}, CodecNone, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetLogAppendTime(b, 5000); err != nil {
		t.Fatal(err)
	}
	got, err := ParseBatch(b) // checks the recomputed CRC
	if err != nil {
		t.Fatalf("stamped batch: %v", err)
	}
	if !got.Attributes.LogAppendTime() || got.MaxTimestamp != 5000 || got.BaseTimestamp != 100 {
		t.Fatalf("stamped batch: log append time %v, max %d, base %d; want true, 5000, 100",
			got.Attributes.LogAppendTime(), got.MaxTimestamp, got.BaseTimestamp)
	}
	if err := SetLogAppendTime(b[:len(b)-1], 1); err == nil {
		t.Fatal("a truncated batch was stamped")
	}
	if err := SetLogAppendTime(append(b, 0), 1); err == nil {
		t.Fatal("a batch with trailing bytes was stamped")
	}
}
