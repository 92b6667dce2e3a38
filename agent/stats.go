package agent

import "sync/atomic"

// Stats are an agent's counters since New: monotonic, for an operator's metrics
// endpoint and for benchmarks. Reading them never blocks the agent.
type Stats struct {
	// SegmentsCommitted counts segments stored and committed to the metastore:
	// one CommitSegment each, whatever its retries.
	SegmentsCommitted int64
	// SegmentsFailed counts segments given up on: their upload or their commit
	// failed or timed out, and their producers got an error.
	SegmentsFailed int64
	// ProducedBatches, ProducedRecords and ProducedBytes count the record batches
	// accepted into segments, their records, and their bytes as stored (after any
	// recompression).
	ProducedBatches int64
	ProducedRecords int64
	ProducedBytes   int64
	// FetchedBytes counts the record batch bytes sent in fetch responses.
	FetchedBytes int64
}

// stats are the live counters behind Stats. Only atomic adds touch them on the
// produce and fetch paths: no lock, no allocation.
type stats struct {
	segmentsCommitted atomic.Int64
	segmentsFailed    atomic.Int64
	producedBatches   atomic.Int64
	producedRecords   atomic.Int64
	producedBytes     atomic.Int64
	fetchedBytes      atomic.Int64
}

// Stats returns the counters so far. Safe to call at any time, from any goroutine.
func (s *Server) Stats() Stats {
	return Stats{
		SegmentsCommitted: s.stats.segmentsCommitted.Load(),
		SegmentsFailed:    s.stats.segmentsFailed.Load(),
		ProducedBatches:   s.stats.producedBatches.Load(),
		ProducedRecords:   s.stats.producedRecords.Load(),
		ProducedBytes:     s.stats.producedBytes.Load(),
		FetchedBytes:      s.stats.fetchedBytes.Load(),
	}
}

// fetched counts the record bytes of a fetch's answer.
func (st *stats) fetched(results []partResult) {
	n := 0
	for _, pr := range results {
		n += len(pr.records)
	}
	if n > 0 {
		st.fetchedBytes.Add(int64(n))
	}
}
