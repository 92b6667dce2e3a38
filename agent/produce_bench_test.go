package agent

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkProduce measures acks=all produce throughput of one franz-go client
// through an agent over an in-memory store and an embedded metastore: 1 KiB records
// over 16 partitions, no compression, linger 5 ms, idempotent (franz-go's default) and plain. The
// difference is the cost of the metastore's sequence checks.
func BenchmarkProduce(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []kgo.Opt
	}{
		{"idempotent", nil},
		{"plain", []kgo.Opt{kgo.DisableIdempotentWrite()}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			s := startAgent(b)
			createTopic(b, s, "bench", 16, nil)
			cl := kafkaClient(b, s, append([]kgo.Opt{kgo.ProducerLinger(5 * time.Millisecond), kgo.MaxBufferedRecords(1 << 16),
				kgo.ProducerBatchCompression(kgo.NoCompression())}, mode.opts...)...)
			value := make([]byte, 1024)
			rand.Read(value) // incompressible, though nothing compresses here
			ctx := context.Background()
			var wg sync.WaitGroup
			var mu sync.Mutex
			var firstErr error
			b.SetBytes(int64(len(value)))
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				wg.Add(1)
				cl.Produce(ctx, &kgo.Record{Topic: "bench", Value: value}, func(_ *kgo.Record, err error) {
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
					wg.Done()
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if firstErr != nil {
				b.Fatal(firstErr)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
		})
	}
}
