package server

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
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
	var (
		mu   sync.Mutex
		lats []time.Duration
		wg   sync.WaitGroup
		next = make(chan struct{})
	)
	b.ResetTimer()
	start := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for range next {
				req := commitReq(topic, parts, 3)
				t0 := time.Now()
				if _, err := cl.CommitSegment(ctx, req); err != nil {
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
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lats)
	if len(lats) == 0 {
		return
	}
	b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(lats[len(lats)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op")
}
