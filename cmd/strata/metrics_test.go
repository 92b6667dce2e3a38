package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stratalog/strata/internal/metrics"
	"github.com/stratalog/strata/internal/syncbuf"
)

// freeAddr is a loopback address nothing listens on (a port the kernel just gave out).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape reads http://addr/metrics.
func scrape(addr string) (metrics.Samples, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return metrics.ParseText(resp.Body)
}

// runCommand runs strata args in-process until the test ends, which cancels it and
// wants a clean exit.
func runCommand(t *testing.T, args ...string) (done <-chan error, stderr fmt.Stringer) {
	t.Helper()
	env, _, _ := testEnv(nil)
	// The command logs while the test reads what it logged.
	errb := &syncbuf.Buffer{}
	env.stderr = errb
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- run(ctx, env, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("strata %s: %v\n%s", args[0], err, errb)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("strata %s did not stop\n%s", args[0], errb)
		}
	})
	return ch, errb
}

// waitScrape scrapes addr until ok holds of the samples, for up to 30 s.
func waitScrape(t *testing.T, addr string, done <-chan error, stderr fmt.Stringer, what string, ok func(metrics.Samples) bool) metrics.Samples {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := scrape(addr)
		if err == nil && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen in 30s (last scrape: %v)\n%s", what, err, stderr)
		}
		select {
		case err := <-done:
			t.Fatalf("exited: %v\n%s", err, stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func at(s metrics.Samples, name string, labels ...string) float64 {
	v, _ := s.Value(name, labels...)
	return v
}

// TestLocalMetrics runs strata local with --metrics-addr, produces and consumes a few
// records, and reads the store, agent and process figures from /metrics.
func TestLocalMetrics(t *testing.T) {
	kafka, maddr := freeAddr(t), freeAddr(t)
	done, stderr := runCommand(t, "local", "--data", t.TempDir(), "--kafka-addr", kafka,
		"--metrics-addr", maddr, "--linger", "5ms", "--sweep-interval", "0")
	before := waitScrape(t, maddr, done, stderr, "/metrics", func(metrics.Samples) bool { return true })
	if !strings.Contains(stderr.String(), "metrics: serving") || !strings.Contains(stderr.String(), maddr) {
		t.Errorf("the metrics address is not logged:\n%s", stderr)
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines"} {
		if _, ok := before.Value(name); !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}

	// /metrics answers before the Kafka listener is up: wait for it too.
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", kafka, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Kafka listener: %v\n%s", err, stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ConsumeTopics("metrics"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "metrics"); err != nil {
		t.Fatalf("create topic: %v\n%s", err, stderr)
	}
	const n = 5
	for i := range n {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "metrics", Value: fmt.Appendf(nil, "record %d", i)}).FirstErr(); err != nil {
			t.Fatalf("produce: %v\n%s", err, stderr)
		}
	}
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatalf("fetch: %v\n%s", err, stderr)
		}
		got += fs.NumRecords()
	}

	// Produce is answered after the commit, so only the fetch side may trail a little.
	after := waitScrape(t, maddr, done, stderr, "fetched bytes", func(s metrics.Samples) bool {
		return at(s, "strata_agent_fetched_bytes_total") > 0
	})
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"strata_objstore_requests_total", []string{"op", "put"}, 1},
		{"strata_objstore_bytes_total", []string{"direction", "written"}, 1},
		{"strata_agent_segments_committed_total", nil, 1},
		{"strata_agent_produced_records_total", nil, n},
		{"strata_agent_produced_batches_total", nil, 1},
		{"strata_agent_produced_bytes_total", nil, 1},
	} {
		if v := at(after, c.name, c.labels...); v < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, v, c.min)
		}
	}
	if v := at(after, "strata_agent_segment_commit_errors_total"); v != 0 {
		t.Errorf("segment commit errors: %v", v)
	}
	// Every segment committed was put first, through the counted store.
	if puts, segs := at(after, "strata_objstore_requests_total", "op", "put"), at(after, "strata_agent_segments_committed_total"); puts < segs {
		t.Errorf("%v puts for %v segments committed", puts, segs)
	}
	if at(after, "process_cpu_seconds_total") < at(before, "process_cpu_seconds_total") {
		t.Errorf("process CPU went backwards")
	}

	resp, err := http.Get("http://" + maddr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/debug/pprof/: %s", resp.Status)
	}
}

// TestMetastoreMetrics: a one-node metastore with --metrics-addr reports that it leads.
func TestMetastoreMetrics(t *testing.T) {
	raft, api, maddr := freeAddr(t), freeAddr(t), freeAddr(t)
	done, stderr := runCommand(t, "metastore", "--node-id", "1", "--data", t.TempDir(), "--raft-addr", raft,
		"--api-addr", api, "--initial-cluster", "1="+raft+"/"+api, "--metrics-addr", maddr,
		"--election-timeout", "500ms", "--heartbeat-timeout", "500ms")
	s := waitScrape(t, maddr, done, stderr, "strata_metastore_leader 1", func(s metrics.Samples) bool {
		return at(s, "strata_metastore_leader") == 1
	})
	if _, ok := s.Value("process_cpu_seconds_total"); !ok {
		t.Error("/metrics has no process_cpu_seconds_total")
	}
}

// TestFunctionsMetrics: strata functions with --metrics-addr exposes its store's
// counters (every op, zero until a request).
func TestFunctionsMetrics(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0") // a metastore that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	maddr := freeAddr(t)
	done, stderr := runCommand(t, "functions", "--listen", freeAddr(t), "--metastore", dead.Addr().String(),
		"--store", "file://"+t.TempDir(), "--sweep-interval", "0", "--metrics-addr", maddr)
	waitScrape(t, maddr, done, stderr, `strata_objstore_requests_total{op="put"}`, func(s metrics.Samples) bool {
		_, ok := s.Value("strata_objstore_requests_total", "op", "put")
		return ok
	})
}

func TestMetricsAddrFlag(t *testing.T) {
	for _, cmd := range []string{"agent", "local", "metastore", "functions"} {
		env, out, _ := testEnv(nil)
		if err := run(context.Background(), env, []string{"help", cmd}); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("help %s: %v", cmd, err)
		}
		if !strings.Contains(out.String(), "--metrics-addr (env STRATA_METRICS_ADDR)") {
			t.Errorf("strata %s has no --metrics-addr:\n%s", cmd, out)
		}
	}
	// A malformed address is reported with the other flag problems, before anything
	// starts; one already in use when the endpoint starts.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, args := range [][]string{
		{"agent", "--store", "mem://", "--metrics-addr", "nonsense"},
		{"local", "--data", t.TempDir(), "--kafka-addr", freeAddr(t), "--metrics-addr", busy.Addr().String()},
		{"metastore", "--metrics-addr", "nonsense"},
		{"functions", "--store", "mem://", "--metrics-addr", "nonsense"},
	} {
		env, _, _ := testEnv(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := run(ctx, env, args)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
			t.Errorf("strata %s: %v; want an error naming --metrics-addr", strings.Join(args, " "), err)
		}
	}
	env, _, _ := testEnv(map[string]string{"STRATA_METRICS_ADDR": "nonsense"})
	if err := run(context.Background(), env, []string{"agent", "--store", "mem://"}); err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Errorf("STRATA_METRICS_ADDR=nonsense: %v", err)
	}
}
