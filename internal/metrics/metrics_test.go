package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"

	"github.com/stratalog/strata/objectlog/objstore"
)

// countedStore returns a Counting memory store after 2 Puts (5 and 3 bytes), a full
// Get of the first, a Get of a missing key and 2 Heads.
func countedStore(t *testing.T) *objstore.Counting {
	t.Helper()
	ctx := context.Background()
	st := objstore.NewCounting(objstore.NewMemory())
	for key, body := range map[string]string{"a": "hello", "b": "abc"} {
		if _, err := st.Put(ctx, key, strings.NewReader(body), int64(len(body)), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rc, _, err := st.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, _, err := st.Get(ctx, "missing"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("get missing: %v", err)
	}
	for _, key := range []string{"a", "b"} {
		if _, err := st.Head(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func TestStoreCollector(t *testing.T) {
	c := NewStoreCollector(countedStore(t))
	want := `
# HELP strata_objstore_bytes_total Object bytes written by Put and read by Get and GetRange.
# TYPE strata_objstore_bytes_total counter
strata_objstore_bytes_total{direction="read"} 5
strata_objstore_bytes_total{direction="written"} 8
# HELP strata_objstore_request_errors_total Object-store requests that returned an error, by Store method.
# TYPE strata_objstore_request_errors_total counter
strata_objstore_request_errors_total{op="delete"} 0
strata_objstore_request_errors_total{op="get"} 1
strata_objstore_request_errors_total{op="get_range"} 0
strata_objstore_request_errors_total{op="head"} 0
strata_objstore_request_errors_total{op="list"} 0
strata_objstore_request_errors_total{op="put"} 0
# HELP strata_objstore_requests_total Object-store requests by Store method, whatever their outcome; a List counts one per 1000 keys.
# TYPE strata_objstore_requests_total counter
strata_objstore_requests_total{op="delete"} 0
strata_objstore_requests_total{op="get"} 2
strata_objstore_requests_total{op="get_range"} 0
strata_objstore_requests_total{op="head"} 2
strata_objstore_requests_total{op="list"} 0
strata_objstore_requests_total{op="put"} 2
`
	if got := collectText(t, c); got != strings.TrimLeft(want, "\n") {
		t.Fatalf("collected:\n%s\nwant:\n%s", got, want)
	}
	// Read at scrape time: one more Put shows at the next collection, once.
	st := c.(storeCollector).c
	if _, err := st.Put(context.Background(), "c", strings.NewReader("x"), 1, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := ParseText(strings.NewReader(collectText(t, c)))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Value("strata_objstore_requests_total", "op", "put"); v != 3 {
		t.Fatalf("puts after one more: %v, want 3", v)
	}
}

func TestAgentCollector(t *testing.T) {
	counts := AgentCounts{SegmentsCommitted: 7, SegmentsFailed: 1, ProducedBatches: 20, ProducedRecords: 300, ProducedBytes: 4096, FetchedBytes: 1024}
	reads := 0
	c := NewAgentCollector(func() AgentCounts { reads++; return counts })
	want := `
# HELP strata_agent_fetched_bytes_total Record batch bytes sent in fetch responses.
# TYPE strata_agent_fetched_bytes_total counter
strata_agent_fetched_bytes_total 1024
# HELP strata_agent_produced_batches_total Record batches accepted into segments.
# TYPE strata_agent_produced_batches_total counter
strata_agent_produced_batches_total 20
# HELP strata_agent_produced_bytes_total Bytes of the record batches accepted into segments, as stored.
# TYPE strata_agent_produced_bytes_total counter
strata_agent_produced_bytes_total 4096
# HELP strata_agent_produced_records_total Records in the batches accepted into segments.
# TYPE strata_agent_produced_records_total counter
strata_agent_produced_records_total 300
# HELP strata_agent_segment_commit_errors_total Segments given up on: their upload or commit failed, and their producers got an error.
# TYPE strata_agent_segment_commit_errors_total counter
strata_agent_segment_commit_errors_total 1
# HELP strata_agent_segments_committed_total Segments stored and committed to the metastore.
# TYPE strata_agent_segments_committed_total counter
strata_agent_segments_committed_total 7
`
	if got := collectText(t, c); got != strings.TrimLeft(want, "\n") {
		t.Fatalf("collected:\n%s\nwant:\n%s", got, want)
	}
	if reads != 1 {
		t.Fatalf("one collection read the agent's counters %d times, want 1", reads)
	}
}

func TestLeaderGauge(t *testing.T) {
	leader := false
	g := NewLeaderGauge(func() bool { return leader })
	for _, want := range []string{"0", "1"} {
		if got := collectText(t, g); !strings.HasSuffix(got, "\nstrata_metastore_leader "+want+"\n") {
			t.Fatalf("leader %v:\n%s", leader, got)
		}
		leader = true
	}
}

// TestLint holds the metrics to Prometheus's naming conventions.
func TestLint(t *testing.T) {
	for _, c := range []prometheus.Collector{
		NewStoreCollector(objstore.NewCounting(objstore.NewMemory())),
		NewAgentCollector(func() AgentCounts { return AgentCounts{} }),
		NewLeaderGauge(func() bool { return true }),
	} {
		problems, err := promlint.New(strings.NewReader(collectText(t, c))).Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// collectText is c's collection in the text format, families and series sorted.
func collectText(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestServe(t *testing.T) {
	reg := NewRegistry()
	reg.MustRegister(NewStoreCollector(countedStore(t)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs strings.Builder
	s, err := Serve(ctx, "127.0.0.1:0", reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "metrics: serving") || !strings.Contains(logs.String(), s.Addr()) {
		t.Fatalf("the bound address was not logged: %q", logs.String())
	}
	code, body := get(t, "http://"+s.Addr()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	samples, err := ParseText(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	if v, ok := samples.Value("strata_objstore_requests_total", "op", "put"); v != 2 {
		t.Errorf("puts = %v (%v), want 2", v, ok)
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines"} {
		if _, ok := samples.Value(name); !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		if code, body := get(t, "http://"+s.Addr()+path); code != http.StatusOK {
			t.Errorf("%s: %d %.200s", path, code, body)
		}
	}
	if code, _ := get(t, "http://"+s.Addr()+"/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing: %d, want 404", code)
	}

	// The context's end stops it: the port is closed once Close returns.
	cancel()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("the endpoint still accepts connections after its context ended")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestServeStopsWithContext: the context alone stops the server, with no Close.
func TestServeStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Serve(ctx, "127.0.0.1:0", NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the endpoint still accepts connections 10s after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeBadAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, addr := range []string{"", "nonsense", "127.0.0.1:99999", busy.Addr().String()} {
		s, err := Serve(context.Background(), addr, NewRegistry(), slog.New(slog.DiscardHandler))
		if err == nil {
			s.Close()
			t.Errorf("Serve(%q) started", addr)
			continue
		}
		if !strings.HasPrefix(err.Error(), "metrics: ") || addr != "" && !strings.Contains(err.Error(), addr) {
			t.Errorf("Serve(%q): %v: want an error naming the address", addr, err)
		}
	}
}

// Stage histograms are exposed with cumulative buckets in seconds, a count that
// includes the observations above the last bound, and the sum in seconds; a
// malformed one is left out rather than exposed wrong.
func TestAgentStageHistograms(t *testing.T) {
	bounds := []time.Duration{10 * time.Millisecond, 250 * time.Millisecond}
	c := NewAgentCollector(func() AgentCounts {
		return AgentCounts{Stages: []StageHistogram{
			{Stage: "linger", Bounds: bounds, Counts: []uint64{1, 3, 2}, Sum: 1500 * time.Millisecond},
			{Stage: "bad", Bounds: bounds, Counts: []uint64{1}},
		}}
	})
	got := collectText(t, c)
	want := `# HELP strata_agent_stage_seconds ` + stageHelp + `
# TYPE strata_agent_stage_seconds histogram
strata_agent_stage_seconds_bucket{stage="linger",le="0.01"} 1
strata_agent_stage_seconds_bucket{stage="linger",le="0.25"} 4
strata_agent_stage_seconds_bucket{stage="linger",le="+Inf"} 6
strata_agent_stage_seconds_sum{stage="linger"} 1.5
strata_agent_stage_seconds_count{stage="linger"} 6
`
	if !strings.Contains(got, want) {
		t.Fatalf("collected:\n%s\nwant within:\n%s", got, want)
	}
	if strings.Contains(got, `stage="bad"`) {
		t.Fatalf("a histogram with the wrong number of counts is exposed:\n%s", got)
	}
}
