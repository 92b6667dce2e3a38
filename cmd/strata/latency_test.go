package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog/objstore"
)

// TestStoreLatencyHidden: --store-latency is parsed (from the command line or
// STRATA_STORE_LATENCY) but left out of the agent's help.
func TestStoreLatencyHidden(t *testing.T) {
	env, out, _ := testEnv(nil)
	if err := run(context.Background(), env, []string{"help", "agent"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("help agent: %v", err)
	}
	if !strings.Contains(out.String(), "--lease-ttl") || strings.Contains(out.String(), "store-latency") {
		t.Fatalf("agent help lists --store-latency or misses --lease-ttl:\n%s", out.String())
	}
	for _, tc := range []struct {
		args []string
		vars map[string]string
	}{
		{[]string{"--store-latency", "250ms"}, nil},
		{nil, map[string]string{"STRATA_STORE_LATENCY": "250ms"}},
	} {
		env, _, _ := testEnv(tc.vars)
		fs := newFlagSet(env, "agent", agentSynopsis)
		var f agentFlags
		f.register(fs, time.Second)
		if err := parseFlags(fs, env, tc.args); err != nil {
			t.Fatal(err)
		}
		if f.storeLatency != objstore.Fixed(250*time.Millisecond) {
			t.Fatalf("%v %v: store latency %v, want 250ms", tc.args, tc.vars, f.storeLatency)
		}
	}
}

func TestParseStoreLatency(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want objstore.Latency // nil: an error
	}{
		{"250ms", objstore.Fixed(250 * time.Millisecond)},
		{"0-700ms", objstore.Uniform{Max: 700 * time.Millisecond}},
		{"100ms-1s", objstore.Uniform{Min: 100 * time.Millisecond, Max: time.Second}},
		{"", nil},
		{"fast", nil},
		{"-1s", nil},
		{"1s-100ms", nil},
		{"1s-", nil},
	} {
		got, err := parseStoreLatency(tc.in)
		if (err != nil) != (tc.want == nil) || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("parseStoreLatency(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestWithStoreLatency(t *testing.T) {
	mem := objstore.NewMemory()
	if withStoreLatency(mem, nil) != objstore.Store(mem) {
		t.Fatal("no latency wrapped the store")
	}
	st := withStoreLatency(mem, objstore.Fixed(50*time.Millisecond))
	start := time.Now()
	if _, err := st.Head(context.Background(), "missing"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("head: %v", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("head took %v, want at least 50ms", d)
	}
}
