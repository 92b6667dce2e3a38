package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/stratalog/strata/objectlog/objstore"
)

// NewRegistry returns a fresh registry (never Prometheus's global one) holding the Go
// runtime and process collectors: go_*, process_cpu_seconds_total,
// process_resident_memory_bytes, ...
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

var (
	storeRequests = prometheus.NewDesc("strata_objstore_requests_total",
		"Object-store requests by Store method, whatever their outcome; a List counts one per 1000 keys.",
		[]string{"op"}, nil)
	storeErrors = prometheus.NewDesc("strata_objstore_request_errors_total",
		"Object-store requests that returned an error, by Store method.",
		[]string{"op"}, nil)
	storeBytes = prometheus.NewDesc("strata_objstore_bytes_total",
		"Object bytes written by Put and read by Get and GetRange.",
		[]string{"direction"}, nil)
)

// storeCollector reads a Counting store at scrape time.
type storeCollector struct{ c *objstore.Counting }

// NewStoreCollector exposes c's counters: strata_objstore_requests_total{op},
// strata_objstore_request_errors_total{op} and strata_objstore_bytes_total{direction}
// (written, read). Every op is reported, zero or not, so rates start at the first
// scrape.
func NewStoreCollector(c *objstore.Counting) prometheus.Collector { return storeCollector{c} }

func (storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeRequests
	ch <- storeErrors
	ch <- storeBytes
}

func (s storeCollector) Collect(ch chan<- prometheus.Metric) {
	n := s.c.Counts()
	for i := range n.Requests {
		op := objstore.Op(i).String()
		ch <- prometheus.MustNewConstMetric(storeRequests, prometheus.CounterValue, float64(n.Requests[i]), op)
		ch <- prometheus.MustNewConstMetric(storeErrors, prometheus.CounterValue, float64(n.Errors[i]), op)
	}
	ch <- prometheus.MustNewConstMetric(storeBytes, prometheus.CounterValue, float64(n.BytesIn), "written")
	ch <- prometheus.MustNewConstMetric(storeBytes, prometheus.CounterValue, float64(n.BytesOut), "read")
}

// AgentCounts are an agent's counters (agent.Stats, copied by the caller: this
// package may not import agent). All are monotonic.
type AgentCounts struct {
	SegmentsCommitted int64
	SegmentsFailed    int64
	ProducedBatches   int64
	ProducedRecords   int64
	ProducedBytes     int64
	FetchedBytes      int64
	// Stages are latency histograms of the produce path (agent.Stats.Stages).
	Stages []StageHistogram
}

// StageHistogram is one stage's latency distribution: Counts[i] observations at
// most Bounds[i] (and above the bound before it); one more count holds the rest.
type StageHistogram struct {
	Stage  string
	Bounds []time.Duration
	Counts []uint64
	Sum    time.Duration
}

const stageHelp = "Latency of the produce path's stages: produce (a request, decoded to answered), linger (a segment open), upload (build and PUT), commit_queue (a stored segment waiting for earlier ones), commit (CommitSegment)."

var stageSeconds = prometheus.NewDesc("strata_agent_stage_seconds", stageHelp, []string{"stage"}, nil)

// agentMetrics maps each exposed counter to its field.
var agentMetrics = []struct {
	desc  *prometheus.Desc
	value func(AgentCounts) int64
}{
	{counterDesc("strata_agent_segments_committed_total", "Segments stored and committed to the metastore."),
		func(c AgentCounts) int64 { return c.SegmentsCommitted }},
	{counterDesc("strata_agent_segment_commit_errors_total", "Segments given up on: their upload or commit failed, and their producers got an error."),
		func(c AgentCounts) int64 { return c.SegmentsFailed }},
	{counterDesc("strata_agent_produced_batches_total", "Record batches accepted into segments."),
		func(c AgentCounts) int64 { return c.ProducedBatches }},
	{counterDesc("strata_agent_produced_records_total", "Records in the batches accepted into segments."),
		func(c AgentCounts) int64 { return c.ProducedRecords }},
	{counterDesc("strata_agent_produced_bytes_total", "Bytes of the record batches accepted into segments, as stored."),
		func(c AgentCounts) int64 { return c.ProducedBytes }},
	{counterDesc("strata_agent_fetched_bytes_total", "Record batch bytes sent in fetch responses."),
		func(c AgentCounts) int64 { return c.FetchedBytes }},
}

func counterDesc(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }

// agentCollector reads an agent's counters once per scrape.
type agentCollector struct{ read func() AgentCounts }

// NewAgentCollector exposes the counters read returns (the strata_agent_* family).
// read is called once per scrape, from the scraping goroutine; it must not block.
func NewAgentCollector(read func() AgentCounts) prometheus.Collector {
	return agentCollector{read}
}

func (agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range agentMetrics {
		ch <- m.desc
	}
	ch <- stageSeconds
}

func (a agentCollector) Collect(ch chan<- prometheus.Metric) {
	c := a.read()
	for _, m := range agentMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(c)))
	}
	for _, h := range c.Stages {
		if len(h.Counts) != len(h.Bounds)+1 {
			continue // not a histogram: nothing sound to expose
		}
		buckets := make(map[float64]uint64, len(h.Bounds))
		var n uint64
		for i, b := range h.Bounds {
			n += h.Counts[i]
			buckets[b.Seconds()] = n
		}
		n += h.Counts[len(h.Bounds)]
		ch <- prometheus.MustNewConstHistogram(stageSeconds, n, h.Sum.Seconds(), buckets, h.Stage)
	}
}

// NewLeaderGauge exposes strata_metastore_leader: 1 while isLeader reports true.
// isLeader is called once per scrape; it must not block.
func NewLeaderGauge(isLeader func() bool) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_metastore_leader",
		Help: "1 while this metastore node is the Raft leader, else 0.",
	}, func() float64 {
		if isLeader() {
			return 1
		}
		return 0
	})
}
