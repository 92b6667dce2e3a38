package metastorepb

// Marker values of IndexEntry.marker: a transaction's control record.
const (
	MarkerAbort  int32 = 1
	MarkerCommit int32 = 2
)

// StableOffset is the partition's last stable offset: every offset below it
// belongs to no open transaction. Without open transactions it is the high
// watermark (next_offset).
// It is never below the log start: DeleteRecords may move the log start past an
// open transaction's first offset.
func (h *PartitionHead) StableOffset() int64 {
	if h.GetOpenTxns() > 0 {
		return max(h.GetFirstUnstable(), h.GetLogStartOffset())
	}
	return h.GetNextOffset()
}
