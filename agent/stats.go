package agent

import (
	"slices"
	"sync/atomic"
	"time"
)

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
	// Stages are the latency histograms of the produce path, one per Stage.
	Stages [numStages]Histogram
}

// Stage is one step of the produce path whose latency the agent records.
type Stage int

const (
	// StageProduce: a produce request, from its decoding to its answer being ready
	// (acks=0 and requests refused at once are not counted).
	StageProduce Stage = iota
	// StageLinger: a segment open to appends, from its first batch to its seal.
	StageLinger
	// StageUpload: a sealed segment's build and PUT (with its retries, and any wait
	// for an upload slot or its upload intent).
	StageUpload
	// StageCommitQueue: a stored segment waiting for the segments sealed before it
	// to commit (commits go in seal order).
	StageCommitQueue
	// StageCommit: a segment's CommitSegment to the metastore, with its retries.
	StageCommit
	numStages
)

var stageNames = [numStages]string{"produce", "linger", "upload", "commit_queue", "commit"}

func (s Stage) String() string { return stageNames[s] }

// StageBuckets are the histograms' upper bounds; a last bucket holds the rest.
var StageBuckets = [...]time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond,
	200 * time.Millisecond, 250 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond,
	500 * time.Millisecond, 750 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second,
	10 * time.Second,
}

// Histogram is a latency distribution: Counts[i] observations were at most
// StageBuckets[i] and above the bound before it; the last count is the rest.
type Histogram struct {
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

// histogram is the live form of a Histogram: atomic adds only.
type histogram struct {
	counts [len(StageBuckets) + 1]atomic.Uint64
	sum    atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	i, _ := slices.BinarySearch(StageBuckets[:], d)
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Counts: make([]uint64, len(h.counts)), Sum: time.Duration(h.sum.Load())}
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
		out.Count += out.Counts[i]
	}
	return out
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
	storedReads       atomic.Int64 // chunks served from segments still committing (tests)
	stages            [numStages]histogram
}

// since records the time from start to now in a stage.
func (st *stats) since(stage Stage, start time.Time) { st.stages[stage].observe(time.Since(start)) }

// Stats returns the counters so far. Safe to call at any time, from any goroutine.
func (s *Server) Stats() Stats {
	out := Stats{
		SegmentsCommitted: s.stats.segmentsCommitted.Load(),
		SegmentsFailed:    s.stats.segmentsFailed.Load(),
		ProducedBatches:   s.stats.producedBatches.Load(),
		ProducedRecords:   s.stats.producedRecords.Load(),
		ProducedBytes:     s.stats.producedBytes.Load(),
		FetchedBytes:      s.stats.fetchedBytes.Load(),
	}
	for i := range out.Stages {
		out.Stages[i] = s.stats.stages[i].snapshot()
	}
	return out
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
