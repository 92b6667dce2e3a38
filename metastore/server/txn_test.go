package server

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// BenchmarkTransaction measures whole transactions through the coordinator, as a
// transactional producer drives them: AddPartitionsToTxn of 10 partitions, one
// segment commit with a transactional batch in each, EndTxn (commit: 10 markers in
// one entry). callers producers run at once, each with its own transactional id.
// Reports transactions/s, the whole transaction's p50/p99 and EndTxn's.
func BenchmarkTransaction(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, callers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("nodes=%d/callers=%d", nodes, callers), func(b *testing.B) {
				c := newCluster(b, nodes)
				topic := createTopic(b, c.client(), "t", 10)
				cc, err := grpc.NewClient(c.nodes[c.waitLeader()].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Close()
				leader := pb.NewMetastoreClient(cc)
				ctx := ctxT(b, 10*time.Minute)
				type producer struct {
					id    string
					pid   int64
					epoch int32
					seq   int32
				}
				pool := make(chan *producer, callers)
				for i := range callers {
					p := &producer{id: fmt.Sprintf("bench-%d", i)}
					r, err := leader.InitProducer(ctx, &pb.InitProducerRequest{ProducerId: -1, TransactionalId: p.id, TransactionTimeoutMs: 60_000})
					if err != nil {
						b.Fatal(err)
					}
					p.pid, p.epoch = r.ProducerId, r.ProducerEpoch
					pool <- p
				}
				var parts []*pb.TxnPartition
				for p := range int32(10) {
					parts = append(parts, &pb.TxnPartition{TopicId: topic, Partition: p})
				}
				var mu sync.Mutex
				var ends []time.Duration
				measure(b, callers, "txn/s", func(int64) error {
					p := <-pool
					defer func() { pool <- p }()
					res, err := leader.AddToTxn(ctx, &pb.AddToTxnRequest{Txns: []*pb.TxnAdd{{TransactionalId: p.id,
						ProducerId: p.pid, ProducerEpoch: p.epoch, Partitions: parts}}})
					if err != nil {
						return err
					}
					if e := res.Results[0].Error; e != pb.ErrorCode_NONE {
						return fmt.Errorf("add: %v", e)
					}
					req := &pb.CommitSegmentRequest{SegmentId: randomID(), AgentId: "agent-1", Size: 1000}
					for i, tp := range parts {
						req.Chunks = append(req.Chunks, &pb.ChunkCommit{TopicId: topic, Partition: tp.Partition,
							Position: int64(i) * 100, Length: 100, MaxTimestamp: 1000,
							Batches: []*pb.BatchInfo{{OffsetCount: 1, RecordCount: 1, ProducerId: p.pid, ProducerEpoch: p.epoch,
								BaseSequence: p.seq, Transactional: true, Size: 100}}})
					}
					cr, err := leader.CommitSegment(ctx, req)
					if err != nil {
						return err
					}
					for _, ch := range cr.Chunks {
						if ch.Error != pb.ErrorCode_NONE || ch.Batches[0].Error != pb.ErrorCode_NONE {
							return fmt.Errorf("commit: %v", ch)
						}
					}
					p.seq++
					t0 := time.Now()
					if _, err := leader.EndTxn(ctx, &pb.EndTxnRequest{TransactionalId: p.id, ProducerId: p.pid, ProducerEpoch: p.epoch, Commit: true}); err != nil {
						return err
					}
					d := time.Since(t0)
					mu.Lock()
					ends = append(ends, d)
					mu.Unlock()
					return nil
				})
				slices.Sort(ends)
				if len(ends) > 0 {
					b.ReportMetric(float64(ends[len(ends)/2].Microseconds()), "end-p50-µs")
					b.ReportMetric(float64(ends[len(ends)*99/100].Microseconds()), "end-p99-µs")
				}
			})
		}
	}
}
