package objectlog

import (
	"errors"
	"fmt"
)

// ErrFilter reports a FilterBatch call whose kept records cannot come from the batch
// (a caller's bug, never bad input bytes).
var ErrFilter = errors.New("objectlog: kept records are not a subsequence of the batch")

// FilterBatch appends to dst the batch b rebuilt to hold only kept, a non-empty
// subsequence of its records as Records decoded them. This is how key compaction
// removes records without moving any other: the base offset, base timestamp, last
// offset delta, partition leader epoch, producer id, epoch and base sequence and the
// attributes (codec included) stay as they were, and every kept record keeps its
// offset and timestamp deltas, so it keeps its offset and timestamp. RecordCount
// becomes len(kept) and, for a CreateTime batch, MaxTimestamp the largest kept
// timestamp (a LogAppendTime batch keeps its append time). The records are compressed
// again with the batch's codec and the CRC is recomputed.
//
// Keeping every record appends b.Raw unchanged. Keeping none is an error: a batch
// left empty is dropped by the caller, not written.
func FilterBatch(dst []byte, b *Batch, kept []Record) ([]byte, error) {
	if len(kept) == 0 || len(kept) > int(b.RecordCount) {
		return dst, fmt.Errorf("%w: %d of %d records kept", ErrFilter, len(kept), b.RecordCount)
	}
	prev := int64(-1)
	maxTs := b.BaseTimestamp
	size := 0
	for i := range kept {
		r := &kept[i]
		if int64(r.OffsetDelta) <= prev || r.OffsetDelta > b.LastOffsetDelta {
			return dst, fmt.Errorf("%w: offset delta %d after %d (last %d)", ErrFilter, r.OffsetDelta, prev, b.LastOffsetDelta)
		}
		prev = int64(r.OffsetDelta)
		if i == 0 || b.BaseTimestamp+r.TimestampDelta > maxTs {
			maxTs = b.BaseTimestamp + r.TimestampDelta
		}
		size += len(r.Key) + len(r.Value) + 16
	}
	if len(kept) == int(b.RecordCount) {
		return append(dst, b.Raw...), nil
	}
	body := make([]byte, 0, size)
	for i := range kept {
		body = AppendRecord(body, &kept[i])
	}
	h := b.BatchHeader
	h.RecordCount = int32(len(kept))
	if !h.Attributes.LogAppendTime() {
		h.MaxTimestamp = maxTs
	}
	return AppendBatch(dst, h, h.Attributes.Codec(), body)
}
