package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratalog/strata/agent"
	"github.com/stratalog/strata/internal/metrics"
	"github.com/stratalog/strata/objectlog/objstore"
)

// metricsFlags is --metrics-addr, the operator endpoint every long-running command
// takes: Prometheus /metrics and pprof /debug/pprof/ on one port.
type metricsFlags struct {
	addr string
}

func (m *metricsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.addr, "metrics-addr", "", "host:port serving Prometheus /metrics and pprof /debug/pprof/, unauthenticated: bind a private address (default off)")
}

// validate checks the address's shape; whether it can be bound is known at serve.
func (m *metricsFlags) validate() error {
	if m.addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(m.addr); err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	return nil
}

// registry is a fresh registry with the Go and process collectors when
// --metrics-addr is set; nil when it is not, and then nothing is counted.
func (m *metricsFlags) registry() *prometheus.Registry {
	if m.addr == "" {
		return nil
	}
	return metrics.NewRegistry()
}

// serve starts the endpoint on reg (nothing when reg is nil) until ctx ends; stop
// ends it sooner and waits for it.
func (m *metricsFlags) serve(ctx context.Context, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	if reg == nil {
		return func() {}, nil
	}
	s, err := metrics.Serve(ctx, m.addr, reg, log)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	return func() { s.Close() }, nil
}

// countStore wraps st in a request counter that reg exposes; a nil reg returns st.
// It goes right over the real store, under any test decorator (latency, put hold),
// so that it counts exactly the requests the bucket sees.
func countStore(reg *prometheus.Registry, st objstore.Store) objstore.Store {
	if reg == nil {
		return st
	}
	c := objstore.NewCounting(st)
	reg.MustRegister(metrics.NewStoreCollector(c))
	return c
}

// registerAgent exposes a's counters in reg (nothing when reg is nil).
func registerAgent(reg *prometheus.Registry, a *agent.Server) {
	if reg == nil {
		return
	}
	reg.MustRegister(metrics.NewAgentCollector(func() metrics.AgentCounts {
		s := a.Stats()
		var stages []metrics.StageHistogram
		for i, h := range s.Stages {
			stages = append(stages, metrics.StageHistogram{Stage: agent.Stage(i).String(),
				Bounds: agent.StageBuckets[:], Counts: h.Counts, Sum: h.Sum})
		}
		return metrics.AgentCounts{
			Stages:            stages,
			SegmentsCommitted: s.SegmentsCommitted,
			SegmentsFailed:    s.SegmentsFailed,
			ProducedBatches:   s.ProducedBatches,
			ProducedRecords:   s.ProducedRecords,
			ProducedBytes:     s.ProducedBytes,
			FetchedBytes:      s.FetchedBytes,
		}
	}))
}
