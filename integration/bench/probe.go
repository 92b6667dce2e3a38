package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/stratalog/strata/internal/metrics"
)

// processProbe reads server figures from the processes' /metrics endpoints (CPU,
// object-store requests, commits) and, for processes it can see, /proc (peak RSS).
type processProbe struct {
	metrics []string // /metrics URLs
	pids    []int    // local processes, for VmHWM
	noStore bool     // the target has no object store (kfake)

	mu      sync.Mutex
	peakRSS int64 // highest process_resident_memory_bytes seen, when there are no pids
}

// Snapshot implements Probe.
func (p *processProbe) Snapshot(ctx context.Context) (ServerStats, error) {
	s := ServerStats{Processes: len(p.metrics), HasStore: !p.noStore}
	for _, u := range p.metrics {
		m, err := scrape(ctx, u)
		if err != nil {
			return ServerStats{}, err
		}
		value := func(name string, labels ...string) float64 { v, _ := m.Value(name, labels...); return v }
		s.CPUSeconds += value("process_cpu_seconds_total")
		s.Puts += int64(value("strata_objstore_requests_total", "op", "put"))
		s.Gets += int64(value("strata_objstore_requests_total", "op", "get") + value("strata_objstore_requests_total", "op", "get_range"))
		s.Commits += int64(value("strata_agent_segments_committed_total"))
		p.mu.Lock()
		p.peakRSS = max(p.peakRSS, int64(value("process_resident_memory_bytes")))
		s.PeakRSSBytes = p.peakRSS
		p.mu.Unlock()
	}
	if len(p.pids) > 0 {
		s.PeakRSSBytes = 0
		for _, pid := range p.pids {
			hwm, err := peakRSS(pid)
			if err != nil {
				return ServerStats{}, err
			}
			s.PeakRSSBytes = max(s.PeakRSSBytes, hwm)
		}
	}
	return s, nil
}

// scrape reads one /metrics endpoint.
func scrape(ctx context.Context, url string) (metrics.Samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	m, err := metrics.ParseText(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return m, nil
}

// peakRSS is a process's peak resident set (VmHWM in /proc/PID/status), in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS of %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb << 10, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("peak RSS of %d: no VmHWM in /proc/%d/status", pid, pid)
}
