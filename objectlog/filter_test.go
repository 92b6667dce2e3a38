package objectlog

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestFilterBatch(t *testing.T) {
	recs := testRecords(20, 40)
	// A batch of a producer, with fields a rebuild must keep.
	h := BatchHeader{
		BaseOffset:           1000,
		PartitionLeaderEpoch: 7,
		Attributes:           AttrTransactional,
		LastOffsetDelta:      25, // wider than the records: an earlier compaction removed some
		BaseTimestamp:        1_700_000_000_000,
		MaxTimestamp:         1_700_000_000_019,
		ProducerID:           42,
		ProducerEpoch:        3,
		BaseSequence:         100,
		RecordCount:          int32(len(recs)),
	}
	for _, codec := range allCodecs {
		raw, err := AppendBatch(nil, h, codec, encodeRecords(recs))
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseBatch(raw)
		if err != nil {
			t.Fatal(err)
		}
		all, err := b.Records(nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			keep func(i int) bool
		}{
			{"all", func(int) bool { return true }},
			{"even", func(i int) bool { return i%2 == 0 }},
			{"first", func(i int) bool { return i == 0 }},
			{"last", func(i int) bool { return i == len(all)-1 }},
			{"middle", func(i int) bool { return i > 5 && i < 9 }},
		} {
			t.Run(fmt.Sprintf("%v/%s", codec, tc.name), func(t *testing.T) {
				var kept []Record
				for i, r := range all {
					if tc.keep(i) {
						kept = append(kept, r)
					}
				}
				prefix := []byte("prefix")
				out, err := FilterBatch(bytes.Clone(prefix), &b, kept)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(out, prefix) {
					t.Fatal("dst prefix lost")
				}
				out = out[len(prefix):]
				if len(kept) == len(all) && !bytes.Equal(out, raw) {
					t.Fatal("keeping every record changed the batch")
				}
				nb, err := ParseBatch(out)
				if err != nil {
					t.Fatalf("rebuilt batch invalid: %v", err)
				}
				if len(nb.Raw) != len(out) {
					t.Fatalf("rebuilt batch is %d bytes, buffer %d", len(nb.Raw), len(out))
				}
				want := h
				want.RecordCount = int32(len(kept))
				want.MaxTimestamp = h.BaseTimestamp + kept[len(kept)-1].TimestampDelta
				got := nb.BatchHeader
				got.BatchLength, got.CRC, got.Magic = 0, 0, 0
				want.Attributes = h.Attributes | Attributes(codec)
				if got != want {
					t.Fatalf("header\n got %+v\nwant %+v", got, want)
				}
				back, err := nb.Records(nil, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(normalize(back), normalize(kept)) {
					t.Fatal("records differ after the rebuild")
				}
			})
		}
	}
}

// normalize makes records comparable with DeepEqual (empty and nil header lists).
func normalize(rs []Record) []Record {
	out := make([]Record, len(rs))
	for i, r := range rs {
		if len(r.Headers) == 0 {
			r.Headers = nil
		}
		out[i] = r
	}
	return out
}

func TestFilterBatchLogAppendTime(t *testing.T) {
	recs := testRecords(4, 10)
	raw := testBatch(t, CodecNone, recs)
	if err := SetLogAppendTime(raw, 1_800_000_000_000); err != nil {
		t.Fatal(err)
	}
	b, err := ParseBatch(raw)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := b.Records(nil, 1<<20)
	out, err := FilterBatch(nil, &b, all[:1])
	if err != nil {
		t.Fatal(err)
	}
	nb, err := ParseBatch(out)
	if err != nil {
		t.Fatal(err)
	}
	if nb.MaxTimestamp != 1_800_000_000_000 || !nb.Attributes.LogAppendTime() {
		t.Fatalf("append time lost: max %d attrs %#x", nb.MaxTimestamp, nb.Attributes)
	}
}

func TestFilterBatchRefuses(t *testing.T) {
	recs := testRecords(4, 10)
	raw := testBatch(t, CodecNone, recs)
	b, err := ParseBatch(raw)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := b.Records(nil, 1<<20)
	for name, kept := range map[string][]Record{
		"none":      nil,
		"too many":  append(append([]Record{}, all...), all[0]),
		"reordered": {all[2], all[1]},
		"repeated":  {all[1], all[1]},
		"past last": {{OffsetDelta: 9}},
	} {
		if _, err := FilterBatch(nil, &b, kept); !errors.Is(err, ErrFilter) {
			t.Errorf("%s: got %v, want ErrFilter", name, err)
		}
	}
}
