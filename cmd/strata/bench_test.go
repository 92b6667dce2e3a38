package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchBadFlags: every bad setting is named in one clear error, before anything
// is started or written.
func TestBenchBadFlags(t *testing.T) {
	out := filepath.Join(t.TempDir(), "never")
	for _, tc := range []struct {
		args []string
		vars map[string]string
		want []string
	}{
		{args: []string{"--partitions", "0", "--acks", "2", "--record-size", "8", "--targets", "local,foo"},
			want: []string{"partitions 0", `acks "2"`, "record size 8", `unknown target "foo"`}},
		{args: []string{"--idempotent", "--acks", "1"}, want: []string{"idempotence needs acks=all"}},
		{args: []string{"--compression", "brotli", "--duration", "10ms", "--rate", "-1"},
			want: []string{`compression "brotli"`, "duration 10ms", "rate -1"}},
		{args: []string{"--consumers", "17"}, want: []string{"consumers 17"}},
		{args: []string{"--targets", "minio", "--minio-bin", "/nonexistent/minio"}, want: []string{"--targets minio", "/nonexistent/minio"}},
		{args: []string{"--store-latency", "fast"}, want: []string{"--store-latency"}},
		{args: []string{"--metrics", "http://127.0.0.1:1/metrics"}, want: []string{"--metrics needs --bootstrap"}},
		{args: []string{"--bootstrap", "127.0.0.1:1", "--metrics", "127.0.0.1:1"}, want: []string{"want an http:// URL"}},
		{args: []string{"--suite", "long"}, want: []string{`--suite "long"`}},
		{args: []string{"--bootstrap", "127.0.0.1:1", "--reference", "redpanda"}, want: []string{`--reference "redpanda"`}},
		{args: []string{"--max-inflight", "10"}, want: []string{"max in-flight 10: only for producers that are not idempotent"}},
		{args: []string{"--idempotent=false", "--max-inflight", "-1"}, want: []string{"max in-flight -1"}},
		{args: []string{"--price-put", "-1"}, want: []string{"--price-put"}},
		{vars: map[string]string{"STRATA_PARTITIONS": "-3"}, want: []string{"partitions -3"}},
	} {
		env, _, _ := testEnv(tc.vars)
		err := run(context.Background(), env, append([]string{"bench", "--out", out}, tc.args...))
		if err == nil {
			t.Errorf("%v %v: no error", tc.args, tc.vars)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v: error %q does not mention %q", tc.args, tc.vars, err, w)
			}
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused bench wrote its output directory (%v)", err)
	}
}
