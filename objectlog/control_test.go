package objectlog

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestControlBatch(t *testing.T) {
	for _, commit := range []bool{false, true} {
		raw := ControlBatch(1234, 77, 3, commit, 1_700_000_000_000)
		h, err := ParseBatchHeader(raw)
		if err != nil {
			t.Fatal(err)
		}
		if h.Size() != len(raw) || h.BaseOffset != 1234 || h.RecordCount != 1 || h.LastOffsetDelta != 0 {
			t.Fatalf("header %+v for %d bytes", h, len(raw))
		}
		if !h.Attributes.Control() || !h.Attributes.Transactional() || h.ProducerID != 77 || h.ProducerEpoch != 3 {
			t.Fatalf("attributes %v producer %d/%d", h.Attributes, h.ProducerID, h.ProducerEpoch)
		}
		// The CRC and record layout as a client reads them.
		n := 0
		for b, err := range Batches(raw) {
			if err != nil {
				t.Fatal(err)
			}
			n++
			_ = b
		}
		var rb kmsg.RecordBatch
		if err := rb.ReadFrom(raw); err != nil {
			t.Fatal(err)
		}
		var rec kmsg.Record
		if err := rec.ReadFrom(rb.Records); err != nil {
			t.Fatal(err)
		}
		var key kmsg.ControlRecordKey
		if err := key.ReadFrom(rec.Key); err != nil {
			t.Fatal(err)
		}
		want := kmsg.ControlRecordKeyTypeAbort
		if commit {
			want = kmsg.ControlRecordKeyTypeCommit
		}
		if n != 1 || key.Type != want || rb.FirstTimestamp != 1_700_000_000_000 {
			t.Fatalf("batches %d key %+v ts %d", n, key, rb.FirstTimestamp)
		}
	}
}
