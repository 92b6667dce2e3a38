package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stratalog/strata/lambdas/compaction"
	"github.com/stratalog/strata/lambdas/runner"
)

func testEnv(vars map[string]string) (*environment, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &environment{stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}, &out, &errb
}

func TestVersion(t *testing.T) {
	env, out, _ := testEnv(nil)
	if err := run(context.Background(), env, []string{"version"}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "strata dev go") {
		t.Fatalf("version printed %q", out.String())
	}
	out.Reset()
	if err := run(context.Background(), env, []string{"version", "--json"}); err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v["version"] != "dev" {
		t.Fatalf("version --json printed %q (%v)", out.String(), err)
	}
}

func TestVersionFromEnvironment(t *testing.T) {
	env, out, _ := testEnv(map[string]string{"STRATA_JSON": "true"})
	if err := run(context.Background(), env, []string{"version"}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "{") {
		t.Fatalf("STRATA_JSON=true did not select JSON: %q", out.String())
	}
	// The command line wins over the environment.
	out.Reset()
	if err := run(context.Background(), env, []string{"version", "--json=false"}); err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(out.String(), "{") {
		t.Fatalf("--json=false lost to STRATA_JSON: %q", out.String())
	}
}

func TestBadEnvironmentIsReported(t *testing.T) {
	env, _, _ := testEnv(map[string]string{"STRATA_JSON": "maybe"})
	err := run(context.Background(), env, []string{"version"})
	if err == nil || !strings.Contains(err.Error(), "STRATA_JSON") {
		t.Fatalf("got %v, want an error naming STRATA_JSON", err)
	}
}

func TestHelpAndUnknown(t *testing.T) {
	env, out, errb := testEnv(nil)
	if err := run(context.Background(), env, []string{"help"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range commands() {
		if !strings.Contains(out.String(), c.name) {
			t.Errorf("help does not mention %q", c.name)
		}
	}
	out.Reset()
	if err := run(context.Background(), env, []string{"help", "version"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("help version: %v", err)
	}
	if !strings.Contains(out.String(), "STRATA_JSON") {
		t.Fatalf("command help does not list env twins: %q", out.String())
	}
	if n := strings.Count(out.String()+errb.String(), "Usage: strata version"); n != 1 {
		t.Fatalf("help printed %d times: %q", n, out.String()+errb.String())
	}
	errb.Reset()
	if err := run(context.Background(), env, []string{"version", "--no-such-flag"}); !errors.Is(err, errUsage) {
		t.Fatalf("unknown flag: %v", err)
	}
	if !strings.Contains(errb.String(), "no-such-flag") || strings.Count(errb.String(), "Usage:") != 1 {
		t.Fatalf("unknown flag stderr: %q", errb.String())
	}
	if err := run(context.Background(), env, []string{"frobnicate"}); !errors.Is(err, errUsage) {
		t.Fatalf("unknown command: %v", err)
	}
	if !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Fatalf("stderr = %q", errb.String())
	}
	if err := run(context.Background(), env, nil); !errors.Is(err, errUsage) {
		t.Fatalf("no command: %v", err)
	}
}

func TestLogFlags(t *testing.T) {
	env, _, _ := testEnv(map[string]string{"STRATA_LOG_LEVEL": "debug", "STRATA_LOG_FORMAT": "json"})
	fs := newFlagSet(env, "x", "x")
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, env, nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	l, err := lf.logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("hello", "k", 1)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m["msg"] != "hello" || lf.level != slog.LevelDebug {
		t.Fatalf("log line %q (%v)", buf.String(), err)
	}
	lf.format = "xml"
	if _, err := lf.logger(&buf); err == nil {
		t.Fatal("log format xml accepted")
	}
}

func TestFunctionsConfigReportsEveryProblem(t *testing.T) {
	env, _, _ := testEnv(map[string]string{"STRATA_WORKERS": "0"})
	err := run(context.Background(), env, []string{"functions", "--listen", "nonsense", "--metastore", "", "--retry-backoff", "0s"})
	if err == nil {
		t.Fatal("functions without a store or metastore started")
	}
	for _, want := range []string{"--listen", "metastore", "store URL", "workers", "retry backoff"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing from %v", want, err)
		}
	}
	env, _, _ = testEnv(map[string]string{"STRATA_SWEEP_INTERVAL": "often"})
	if err := run(context.Background(), env, []string{"functions"}); err == nil || !strings.Contains(err.Error(), "STRATA_SWEEP_INTERVAL") {
		t.Fatalf("bad STRATA_SWEEP_INTERVAL: %v", err)
	}
	env, _, _ = testEnv(nil)
	if err := run(context.Background(), env, []string{"local", "--function-workers", "0", "--data", t.TempDir()}); err == nil || !strings.Contains(err.Error(), "workers") {
		t.Fatalf("strata local --function-workers 0: %v", err)
	}
}

// The compaction Lambda reads the same STRATA_* names as strata functions' flags,
// so one configuration serves both.
func TestFunctionsFlagsMatchLambdaEnvironment(t *testing.T) {
	env, out, _ := testEnv(nil)
	if err := run(context.Background(), env, []string{"help", "functions"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("help functions: %v", err)
	}
	for _, name := range compaction.EnvVars() {
		if !strings.Contains(out.String(), "(env "+name+")") {
			t.Errorf("the Lambda reads %s, but strata functions has no such flag", name)
		}
	}
	out.Reset()
	if err := run(context.Background(), env, []string{"help", "local"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("help local: %v", err)
	}
	for _, name := range []string{"STRATA_FUNCTIONS", "STRATA_FUNCTION_WORKERS", "STRATA_SWEEP_INTERVAL", "STRATA_GC_GRACE", "STRATA_COMMIT_WAIT"} {
		if !strings.Contains(out.String(), "(env "+name+")") {
			t.Errorf("strata local has no flag for %s", name)
		}
	}
}

// TestFunctionsServes runs strata functions in-process: the webhook takes a MinIO
// event and the runner hands its segment to the compaction handler (which fails: no
// metastore answers, and the one attempt allowed is counted), /health reports it,
// and cancelling the context shuts down cleanly.
func TestFunctionsServes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dead, err := net.Listen("tcp", "127.0.0.1:0") // a metastore address that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	env, _, errb := testEnv(map[string]string{"STRATA_AUTH_TOKEN": "s3cret"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, env, []string{"functions", "--listen", addr, "--metastore", dead.Addr().String(),
			"--store", "s3://strata-it/dev", "--s3-endpoint", "http://127.0.0.1:1", "--s3-region", "us-east-1",
			"--s3-access-key", "k", "--s3-secret-key", "s", "--max-attempts", "1", "--attempt-timeout", "200ms",
			"--sweep-interval", "0", "--log-level", "debug"})
	}()
	health := func() (runner.Stats, int) {
		resp, err := http.Get("http://" + addr + "/health")
		if err != nil {
			return runner.Stats{}, 0
		}
		defer resp.Body.Close()
		var s runner.Stats
		_ = json.NewDecoder(resp.Body).Decode(&s)
		return s, resp.StatusCode
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, code := health(); code != http.StatusOK; _, code = health() {
		if time.Now().After(deadline) {
			t.Fatalf("strata functions never answered /health\n%s", errb)
		}
		select {
		case err := <-done:
			t.Fatalf("strata functions exited: %v\n%s", err, errb)
		case <-time.After(10 * time.Millisecond):
		}
	}
	event, err := os.ReadFile("../../lambdas/trigger/testdata/minio-webhook.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		auth string
		code int
	}{{"", http.StatusForbidden}, {"Bearer s3cret", http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", bytes.NewReader(event))
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Fatalf("POST with Authorization %q: %s, want %d", c.auth, resp.Status, c.code)
		}
	}
	for s, _ := health(); s.Failed != 1; s, _ = health() {
		if time.Now().After(deadline) {
			t.Fatalf("the segment never reached the handler: %+v\n%s", s, errb)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if !strings.Contains(errb.String(), "giving up on an object") || !strings.Contains(errb.String(), "segments/0a/000001a213f8c48a5d03fa91440b7c0a.seg") {
		t.Fatalf("log does not show the segment's failure:\n%s", errb)
	}
}
