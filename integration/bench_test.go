package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stratalog/strata/integration/bench"
	"github.com/stratalog/strata/internal/syncbuf"
)

// benchReport is results.json as strata bench writes it.
type benchReport struct {
	Reference string
	Results   []struct {
		bench.Result
		MiBps float64
	}
}

func readBenchReport(t *testing.T, dir string) benchReport {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r benchReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("results.json: %v\n%s", err, b)
	}
	return r
}

// TestBench runs `strata bench` against strata local and kfake with a short
// workload and checks that every figure the report promises was measured: records
// went through both, and Strata's server figures (CPU, memory, PUTs, commits) came
// from the agent's own process.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	out := t.TempDir()
	cmd := exec.Command(strataBinary(t), "bench", "--targets", "local,kfake", "--duration", "3s", "--warmup", "1s",
		"--partitions", "4", "--producers", "2", "--rate", "2", "--out", out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("strata bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	rep := readBenchReport(t, out)
	if rep.Reference != "kfake" || len(rep.Results) != 2 {
		t.Fatalf("report: reference %q, %d results", rep.Reference, len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Interrupted || r.Err != "" {
			t.Errorf("%s: interrupted %v, err %q", r.Target, r.Interrupted, r.Err)
		}
		// 2 MiB/s for 3 s is about 6,000 records of 1 KiB.
		if r.Records < 1000 || r.Bytes != r.Records*1024 || r.Consumed < 1000 || r.MiBps < 1 {
			t.Errorf("%s: %d records, %d bytes, %d consumed, %.2f MiB/s", r.Target, r.Records, r.Bytes, r.Consumed, r.MiBps)
		}
		if r.Produce.Count == 0 || r.Produce.P50 <= 0 || r.Produce.P99 < r.Produce.P50 || r.EndToEnd.Count == 0 || r.EndToEnd.P99 <= 0 {
			t.Errorf("%s: produce latencies %+v, end-to-end %+v", r.Target, r.Produce, r.EndToEnd)
		}
		if r.Server.Processes != 1 || r.Server.CPUSeconds <= 0 || r.Server.PeakRSSBytes < 1<<20 {
			t.Errorf("%s: server figures %+v", r.Target, r.Server)
		}
		if len(r.Series) < 3 {
			t.Errorf("%s: %d seconds in the series", r.Target, len(r.Series))
		}
		switch r.Target {
		case "local":
			// One segment per 5 ms linger at most, and each committed.
			if !r.Server.HasStore || r.Server.Puts < 10 || r.Server.Commits < 10 || r.Server.Puts > 3*200 {
				t.Errorf("local: store figures %+v", r.Server)
			}
		case "kfake":
			if r.Server.HasStore {
				t.Errorf("kfake: store figures %+v", r.Server)
			}
		default:
			t.Errorf("unexpected target %q", r.Target)
		}
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "local / kfake") || !strings.Contains(stdout.String(), "local / kfake") {
		t.Errorf("no ratio row in the report or the output:\n%s", md)
	}
	if st, err := os.Stat(filepath.Join(out, "bench.png")); err != nil || st.Size() < 1000 {
		t.Errorf("bench.png: %v", err)
	}
}

// TestBenchInterrupted: a SIGINT in the middle of the measured window stops the
// servers and still writes the report, marked interrupted, with what was measured.
func TestBenchInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	out := t.TempDir()
	cmd := exec.Command(strataBinary(t), "bench", "--targets", "local,kfake", "--duration", "5m", "--warmup", "1s",
		"--partitions", "2", "--producers", "1", "--rate", "1", "--out", out)
	// Read while the bench writes it.
	var stdout, stderr syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Interrupt once the measured window has begun.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(stderr.String(), "measuring") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("never measuring; stderr:\n%s", stderr.String())
		}
		select {
		case err := <-done:
			t.Fatalf("strata bench exited early: %v\n%s", err, stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	time.Sleep(2 * time.Second)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("exit %v; an interrupted bench fails and says so:\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("strata bench did not stop within a minute of SIGINT:\n%s", stderr.String())
	}
	rep := readBenchReport(t, out)
	if len(rep.Results) != 1 || rep.Results[0].Target != "local" || !rep.Results[0].Interrupted {
		t.Fatalf("want one interrupted local result, got %+v", rep.Results)
	}
	if r := rep.Results[0]; r.Records == 0 || r.Measured <= 0 || r.Measured > time.Minute {
		t.Errorf("partial result: %d records in %v", r.Records, r.Measured)
	}
	// Its servers are gone: no process runs with the bench's data directory.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(out)) {
			t.Errorf("a server outlived the bench: %s", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}
