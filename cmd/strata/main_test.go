package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"strings"
	"testing"
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
