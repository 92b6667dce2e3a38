package server

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// BenchmarkCommitSegment measures CommitSegment through the Go client with 50
// partitions per commit, from many concurrent callers (which the leader batches into
// few Raft entries), on 1 and 3 nodes on loopback with fsync. It reports commits/s
// and the p50 and p99 latency of one call.
func BenchmarkCommitSegment(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, callers := range []int{1, 64} {
			b.Run(fmt.Sprintf("nodes=%d/callers=%d", nodes, callers), func(b *testing.B) {
				benchCommits(b, nodes, callers)
			})
		}
	}
}

func benchCommits(b *testing.B, nodes, callers int) {
	c := newCluster(b, nodes)
	cl := c.client()
	const partitions = 50
	topic := createTopic(b, cl, "bench", partitions)
	parts := make([]int32, partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	ctx := ctxT(b, 10*time.Minute)
	measure(b, callers, "commits/s", func(int64) error {
		_, err := cl.CommitSegment(ctx, commitReq(topic, parts, 3))
		return err
	})
}

// measure runs op b.N times from callers goroutines and reports the rate (as unit)
// and the p50 and p99 latency of one call.
func measure(b *testing.B, callers int, unit string, op func(seq int64) error) {
	var (
		mu   sync.Mutex
		lats []time.Duration
		wg   sync.WaitGroup
		next = make(chan int64)
	)
	b.ResetTimer()
	start := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for seq := range next {
				t0 := time.Now()
				if err := op(seq); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	for i := range b.N {
		next <- int64(i)
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lats)
	if len(lats) == 0 {
		return
	}
	b.ReportMetric(float64(len(lats))/elapsed.Seconds(), unit)
	b.ReportMetric(float64(lats[len(lats)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkLookup measures Lookup through the Go client (a linearizable read on the
// leader) of a random offset in a 50-partition topic holding 10,000 index entries,
// on 1 and 3 nodes, from 1 and 16 callers. It reports lookups/s and p50/p99 latency.
func BenchmarkLookup(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, callers := range []int{1, 16} {
			b.Run(fmt.Sprintf("nodes=%d/callers=%d", nodes, callers), func(b *testing.B) {
				benchLookups(b, nodes, callers)
			})
		}
	}
}

func benchLookups(b *testing.B, nodes, callers int) {
	c := newCluster(b, nodes)
	cl := c.client()
	const partitions = 50
	topic := createTopic(b, cl, "bench", partitions)
	parts := make([]int32, partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	ctx := ctxT(b, 10*time.Minute)
	const commits = 200 // 10,000 index entries, 3 offsets each
	var fill sync.WaitGroup
	for w := range 8 {
		fill.Add(1)
		go func() {
			defer fill.Done()
			for i := w; i < commits; i += 8 {
				if _, err := cl.CommitSegment(ctx, commitReq(topic, parts, 3)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	fill.Wait()
	measure(b, callers, "lookups/s", func(seq int64) error {
		req := &pb.LookupRequest{TopicId: topic, Partition: int32(seq % partitions), Offset: (seq * 7919) % (commits * 3), MaxEntries: 1}
		resp, err := cl.Lookup(ctx, req)
		if err == nil && (resp.Error != pb.ErrorCode_NONE || len(resp.Entries) != 1) {
			err = fmt.Errorf("lookup %v: %v", req, resp)
		}
		return err
	})
}
