package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkTransactions measures franz-go transactions end to end through an agent
// (memory store, embedded metastore, linger 5 ms): each transaction writes one 1 KiB
// record to each of 10 partitions and commits. producers run at once, each its own
// transactional id. Reports transactions/s and the commit's (EndTransaction's) and
// whole transaction's p50/p99.
func BenchmarkTransactions(b *testing.B) {
	for _, producers := range []int{1, 8} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			s := startAgent(b)
			createTopic(b, s, "txbench", 10, nil)
			ctx := context.Background()
			value := make([]byte, 1024)
			clients := make([]*kgo.Client, producers)
			for i := range clients {
				clients[i] = txnProducer(b, s, fmt.Sprintf("bench-%d", i), kgo.ProducerLinger(0))
			}
			var mu sync.Mutex
			var commits, whole []time.Duration
			next := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, producers)
			b.ResetTimer()
			start := time.Now()
			for _, cl := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						t0 := time.Now()
						if err := cl.BeginTransaction(); err != nil {
							errs <- err
							return
						}
						var recs []*kgo.Record
						for p := range int32(10) {
							recs = append(recs, &kgo.Record{Topic: "txbench", Partition: p, Value: value})
						}
						if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
							errs <- err
							return
						}
						t1 := time.Now()
						if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
							errs <- err
							return
						}
						mu.Lock()
						commits = append(commits, time.Since(t1))
						whole = append(whole, time.Since(t0))
						mu.Unlock()
					}
				}()
			}
			for range b.N {
				next <- struct{}{}
			}
			close(next)
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			slices.Sort(commits)
			slices.Sort(whole)
			b.ReportMetric(float64(len(whole))/elapsed.Seconds(), "txn/s")
			b.ReportMetric(float64(commits[len(commits)/2].Microseconds()), "commit-p50-µs")
			b.ReportMetric(float64(commits[len(commits)*99/100].Microseconds()), "commit-p99-µs")
			b.ReportMetric(float64(whole[len(whole)/2].Microseconds()), "txn-p50-µs")
			b.ReportMetric(float64(whole[len(whole)*99/100].Microseconds()), "txn-p99-µs")
		})
	}
}
