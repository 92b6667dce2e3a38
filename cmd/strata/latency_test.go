package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog/objstore"
)

// TestStoreLatencyFlag: --store-latency is parsed (from the command line or
// STRATA_STORE_LATENCY) and listed in the agent's help.
func TestStoreLatencyFlag(t *testing.T) {
	env, out, _ := testEnv(nil)
	if err := run(context.Background(), env, []string{"help", "agent"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("help agent: %v", err)
	}
	if !strings.Contains(out.String(), "--store-latency") {
		t.Fatalf("agent help misses --store-latency:\n%s", out.String())
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
		{"s3", s3Standard{}},
		{"S3", nil},
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

// TestS3StandardPreset: the preset's distributions have the percentiles its doc
// comment and the README state (within sampling error).
func TestS3StandardPreset(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		op       objstore.Op
		p50, p99 time.Duration
	}{
		{objstore.OpPut, 60 * time.Millisecond, 170 * time.Millisecond},
		{objstore.OpGet, 25 * time.Millisecond, 90 * time.Millisecond},
		{objstore.OpGetRange, 25 * time.Millisecond, 90 * time.Millisecond},
		{objstore.OpHead, 20 * time.Millisecond, 64 * time.Millisecond},
		{objstore.OpDelete, 20 * time.Millisecond, 64 * time.Millisecond},
		{objstore.OpList, 20 * time.Millisecond, 64 * time.Millisecond},
	} {
		d, ok := s3StandardOps[tc.op]
		if !ok {
			t.Fatalf("%v: no latency", tc.op)
		}
		const n = 50000
		xs := make([]time.Duration, n)
		for i := range xs {
			xs[i] = d.Sample(r)
		}
		slices.Sort(xs)
		near := func(got, want time.Duration, tol float64) bool {
			return math.Abs(float64(got-want)) <= tol*float64(want)
		}
		if p50, p99 := xs[n/2], xs[n*99/100]; !near(p50, tc.p50, 0.05) || !near(p99, tc.p99, 0.1) {
			t.Errorf("%v: p50 %v p99 %v, want about %v and %v", tc.op, p50, p99, tc.p50, tc.p99)
		}
	}
}
