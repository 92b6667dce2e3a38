package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/metastoretest"
)

// TestLinearizableUnderFailover records every commit and latest-offset read that
// clients make against a 3-node cluster while its leader is killed twice, and checks
// the whole history with porcupine against the sequential model: per partition,
// commits take the next offsets in order and reads see exactly what committed before
// them. Outcomes a client never learned count as "maybe, at any later time".
func TestLinearizableUnderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	c := newCluster(t, 3)
	const partitions = 3
	topic := createTopic(t, c.client(), "linear", partitions)
	h := metastoretest.NewHistory()

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	var done atomic.Int64
	for client := range 6 {
		cl := c.client() // one connection per client: they fail over independently
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(client), 11))
			for ctx.Err() == nil {
				p := rng.Int32N(partitions)
				name := fmt.Sprint(p)
				cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				if rng.IntN(3) == 0 {
					h.Read(client, name, func() (int64, error) {
						resp, err := cl.ListOffsets(cctx, &pb.ListOffsetsRequest{TopicId: topic, Partition: p, Timestamp: -1})
						if err == nil {
							err = metastore.ErrorOf(resp.Error, "")
						}
						return resp.GetOffset(), err
					})
				} else {
					count := int64(1 + rng.IntN(5))
					h.Commit(client, name, count, func() (int64, error) {
						resp, err := cl.CommitSegment(cctx, commitReq(topic, []int32{p}, int32(count)))
						if err != nil {
							return 0, err
						}
						ch := resp.Chunks[0]
						if err := metastore.ErrorOf(ch.Error, ""); err != nil {
							return 0, err
						}
						return ch.BaseOffset, nil
					})
				}
				cancel()
				done.Add(1)
			}
		}()
	}
	for kill := range 2 {
		target := done.Load() + 150
		waitFor(t, 30*time.Second, "operations before a kill", func() bool { return done.Load() >= target })
		l := c.waitLeader()
		t.Logf("kill %d: node %s leads after %d operations", kill+1, c.nodes[l].id, done.Load())
		c.kill(l)
		c.waitLeader()
		target = done.Load() + 100
		waitFor(t, 30*time.Second, "operations under the new leader", func() bool { return done.Load() >= target })
		c.restart(l)
	}
	stop()
	wg.Wait()
	t.Logf("checking %d operations", h.Len())
	h.Check(t, 2*time.Minute)
}
