package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/stratalog/strata/objectlog/objstore"
)

// storeLatencyUsage documents --store-latency: it makes object-store calls slower, for
// benchmarks ("s3": figures for cloud latency without the cloud) and for process-level
// tests that need requests retried while their first attempt is still in flight.
const storeLatencyUsage = "delay every object-store call, for benchmarks and tests: s3 (S3 Standard-like, see README), a duration (100ms), or a range (0-700ms) to draw each delay from uniformly"

// s3Standard is the "s3" preset of --store-latency: heavy-tailed (log-normal) delays
// per operation that approximate S3 Standard in-region request latency for objects of
// a few MiB. AWS documents "typical latencies of 100-200 ms" for first bytes; measured
// PUTs of small objects from EC2 in the same region sit around a 50-70 ms median with a
// p99 near 3x the median. The figures:
//
//	PUT                  median 60 ms, sigma 0.45: p90 107 ms, p99 170 ms, p99.9 241 ms
//	GET, ranged GET      median 25 ms, sigma 0.55: p90 51 ms,  p99 90 ms,  p99.9 138 ms
//	HEAD, DELETE, LIST   median 20 ms, sigma 0.5:  p90 38 ms,  p99 64 ms,  p99.9 94 ms
type s3Standard struct{}

// Sample implements objstore.Latency with the PUT distribution; withStoreLatency
// sets each operation's own.
func (s3Standard) Sample(r *rand.Rand) time.Duration { return s3StandardOps[objstore.OpPut].Sample(r) }

var s3StandardOps = map[objstore.Op]objstore.Latency{
	objstore.OpPut:      objstore.LogNormal{Median: 60 * time.Millisecond, Sigma: 0.45},
	objstore.OpGet:      objstore.LogNormal{Median: 25 * time.Millisecond, Sigma: 0.55},
	objstore.OpGetRange: objstore.LogNormal{Median: 25 * time.Millisecond, Sigma: 0.55},
	objstore.OpHead:     objstore.LogNormal{Median: 20 * time.Millisecond, Sigma: 0.5},
	objstore.OpDelete:   objstore.LogNormal{Median: 20 * time.Millisecond, Sigma: 0.5},
	objstore.OpList:     objstore.LogNormal{Median: 20 * time.Millisecond, Sigma: 0.5},
}

// parseStoreLatency reads "s3" as the S3 Standard-like preset, "D" as a fixed delay and "MIN-MAX" as a uniform one; a
// range whose MIN has no unit takes MAX's ("0-700ms").
func parseStoreLatency(s string) (objstore.Latency, error) {
	if s == "s3" {
		return s3Standard{}, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	maxD, err := time.ParseDuration(hi)
	if !isRange {
		maxD, err = time.ParseDuration(lo)
	}
	if err != nil || maxD < 0 {
		return nil, fmt.Errorf("want s3, a duration or MIN-MAX durations, got %q", s)
	}
	if !isRange {
		return objstore.Fixed(maxD), nil
	}
	minD, err := time.ParseDuration(lo)
	if err != nil && lo == "0" {
		minD, err = 0, nil
	}
	if err != nil || minD < 0 || minD > maxD {
		return nil, fmt.Errorf("want a duration or MIN-MAX durations with MIN <= MAX, got %q", s)
	}
	return objstore.Uniform{Min: minD, Max: maxD}, nil
}

// withStoreLatency wraps st so every call first waits a sample of l; nil returns st.
func withStoreLatency(st objstore.Store, l objstore.Latency) objstore.Store {
	if l == nil {
		return st
	}
	f := objstore.NewFaulty(st, uint64(time.Now().UnixNano()))
	if _, ok := l.(s3Standard); ok {
		for op, d := range s3StandardOps {
			f.Set(op, objstore.OpFaults{Latency: d})
		}
		return f
	}
	f.SetAll(objstore.OpFaults{Latency: l})
	return f
}
