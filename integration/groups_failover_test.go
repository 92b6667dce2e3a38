package integration

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stratalog/strata/metastore"
)

// TestGroupSurvivesMetastoreLeaderKill runs two franz-go group members through a
// `strata agent` over three `strata metastore` processes, and SIGKILLs the metastore
// leader (the group coordinator) while they consume. The group carries on under the
// new leader: every record is consumed, the members end up owning every partition
// exactly once, and the offsets they committed before the kill are still there.
func TestGroupSurvivesMetastoreLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	procs := startMetastoreProcs(t, "--group-initial-rebalance-delay", "100ms", "--group-min-session-timeout", "1s")
	var apis []string
	for _, p := range procs {
		apis = append(apis, p.api)
	}
	agent := startAgentProc(t, "agent-g", "a", apis, "file://"+t.TempDir())
	const topic, partitions, perPartition = "failover", 6, 200
	createTopic(t, agent.addr, topic, partitions, nil)
	groupProduceN(t, agent.addr, topic, partitions, perPartition)

	var (
		mu       sync.Mutex
		owned    = map[string]map[int32]bool{}
		consumed = map[string]bool{}
	)
	track := func(name string, add bool) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range m[topic] {
				if add {
					owned[name][p] = true
				} else {
					delete(owned[name], p)
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, name := range []string{"m1", "m2"} {
		owned[name] = map[int32]bool{}
		cl, err := kgo.NewClient(kgo.SeedBrokers(agent.addr), kgo.ClientID(name), kgo.ConsumerGroup("fo"),
			kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(300*time.Millisecond),
			kgo.AutoCommitInterval(200*time.Millisecond), kgo.FetchMaxBytes(64<<10), kgo.FetchMaxPartitionBytes(8<<10),
			kgo.OnPartitionsAssigned(track(name, true)), kgo.OnPartitionsRevoked(track(name, false)), kgo.OnPartitionsLost(track(name, false)))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				fs := cl.PollRecords(ctx, 20)
				if fs.IsClientClosed() {
					return
				}
				fs.EachRecord(func(r *kgo.Record) {
					mu.Lock()
					consumed[fmt.Sprintf("%d/%d", r.Partition, r.Offset)] = true
					mu.Unlock()
				})
				time.Sleep(5 * time.Millisecond) // consume slowly enough for the kill to land mid-way
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(consumed)
	}
	groupWaitFor(t, time.Minute, "a third of the records consumed", func() error {
		if n := count(); n < partitions*perPartition/3 {
			return fmt.Errorf("%d consumed", n)
		}
		return nil
	})

	mc, err := metastore.Dial(ctx, apis, metastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	cluster, err := mc.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	killed := ""
	for _, m := range cluster.Members {
		if m.Leader {
			for _, p := range procs {
				if p.id == m.Id {
					p.signal(syscall.SIGKILL)
					killed = p.id
				}
			}
		}
	}
	if killed == "" {
		t.Fatalf("no leader among %v", cluster.Members)
	}
	t.Logf("killed metastore leader %s after %d records", killed, count())

	groupWaitFor(t, time.Minute, "every record consumed after the kill", func() error {
		if n := count(); n < partitions*perPartition {
			return fmt.Errorf("%d of %d consumed", n, partitions*perPartition)
		}
		return nil
	})
	groupWaitFor(t, 30*time.Second, "both members owning every partition once", func() error {
		mu.Lock()
		defer mu.Unlock()
		seen := map[int32]string{}
		for name, ps := range owned {
			if len(ps) == 0 {
				return fmt.Errorf("%s owns nothing", name)
			}
			for p := range ps {
				if o, ok := seen[p]; ok {
					return fmt.Errorf("partition %d owned by %s and %s", p, o, name)
				}
				seen[p] = name
			}
		}
		if len(seen) != partitions {
			return fmt.Errorf("%d of %d partitions owned", len(seen), partitions)
		}
		return nil
	})
	adm := kadm.NewClient(franzClient(t, agent.addr))
	groupWaitFor(t, 30*time.Second, "the committed offsets at the end of every partition", func() error {
		offs, err := adm.FetchOffsets(ctx, "fo")
		if err != nil {
			return err
		}
		for p := range int32(partitions) {
			if o, ok := offs.Lookup(topic, p); !ok || o.At != perPartition {
				return fmt.Errorf("partition %d committed %v (%v), want %d", p, o.At, ok, perPartition)
			}
		}
		return nil
	})
}

// groupProduceN produces n records to each partition of topic.
func groupProduceN(t *testing.T, addr, topic string, partitions int32, n int) {
	t.Helper()
	cl := franzClient(t, addr, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	var recs []*kgo.Record
	for p := range partitions {
		for i := range n {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: fmt.Appendf(nil, "%d/%d", p, i)})
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}
