package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/stratalog/strata/objectlog/objstore"
)

// storeLatencyUsage documents --store-latency, a hidden test knob: process-level
// tests use it to make object-store calls slower than a client's request timeout,
// some of the time, so that produce requests are retried while their first attempt
// is still in flight.
const storeLatencyUsage = hiddenUsage + "delay every object-store call: a duration (100ms), or a range (0-700ms) to draw each delay from uniformly (testing only)"

// parseStoreLatency reads "D" as a fixed delay and "MIN-MAX" as a uniform one; a
// range whose MIN has no unit takes MAX's ("0-700ms").
func parseStoreLatency(s string) (objstore.Latency, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	maxD, err := time.ParseDuration(hi)
	if !isRange {
		maxD, err = time.ParseDuration(lo)
	}
	if err != nil || maxD < 0 {
		return nil, fmt.Errorf("want a duration or MIN-MAX durations, got %q", s)
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
	f.SetAll(objstore.OpFaults{Latency: l})
	return f
}
