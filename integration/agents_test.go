package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// startMetastoreCluster runs three `strata metastore` processes and returns their API
// addresses; they are killed when the test ends.
func startMetastoreCluster(t *testing.T) []string {
	t.Helper()
	var apis []string
	for _, p := range startMetastoreProcs(t) {
		apis = append(apis, p.api)
	}
	return apis
}

// startMetastoreProcs runs three `strata metastore` processes with extra flags and
// returns them; they are killed when the test ends.
func startMetastoreProcs(t *testing.T, extra ...string) []*metastoreProc {
	t.Helper()
	procs := make([]*metastoreProc, 3)
	var peers []string
	for i := range procs {
		p := &metastoreProc{id: fmt.Sprint(i + 1), raft: freePort(t), api: freePort(t), data: t.TempDir()}
		procs[i] = p
		peers = append(peers, fmt.Sprintf("%s=%s/%s", p.id, p.raft, p.api))
	}
	for _, p := range procs {
		p.args = []string{"metastore", "--node-id", p.id, "--data", p.data, "--raft-addr", p.raft, "--api-addr", p.api,
			"--initial-cluster", strings.Join(peers, ","), "--election-timeout", "500ms", "--heartbeat-timeout", "500ms"}
		p.args = append(p.args, extra...)
		p.start(t)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.signal(syscall.SIGKILL)
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("metastore %s output:\n%s", p.id, p.out)
			}
		}
	})
	return procs
}

// agentProc is one `strata agent` process.
type agentProc struct {
	metastoreProc
	addr string
}

func startAgentProc(t *testing.T, name, zone string, metastores []string, store string, extra ...string) *agentProc {
	t.Helper()
	a := &agentProc{addr: freePort(t)}
	a.id = name
	a.args = []string{"agent", "--metastore", strings.Join(metastores, ","), "--store", store,
		"--kafka-addr", a.addr, "--agent-id", name, "--zone", zone, "--linger", "10ms", "--lease-ttl", "2s"}
	a.args = append(a.args, extra...) // later flags win
	a.start(t)
	t.Cleanup(func() {
		a.signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("agent %s output:\n%s", name, a.out)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", a.addr, time.Second)
		if err == nil {
			c.Close()
			return a
		}
		select {
		case err := <-a.exited:
			t.Fatalf("agent %s exited: %v\n%s", name, err, a.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s never listened on %s\n%s", name, a.addr, a.out)
		}
	}
}

// TestAgentsShareMetastoreAndStore runs two agents over a three-node metastore and one
// store. A producer in zone a is routed to agent a, a consumer in zone b to agent b:
// records produced through one are consumed through the other. Agent a is SIGKILLed
// mid-produce: the producer moves to agent b, and every acknowledged record is read
// back at its acknowledged offset, with no gap in any partition.
func TestAgentsShareMetastoreAndStore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	metas := startMetastoreCluster(t)
	store := "file://" + t.TempDir()
	a := startAgentProc(t, "agent-a", "a", metas, store)
	b := startAgentProc(t, "agent-b", "b", metas, store)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	admin, err := kgo.NewClient(kgo.SeedBrokers(b.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	for {
		// A fresh client each time: franz-go answers repeated Metadata requests from
		// its cache, which would keep showing one agent if the first call came
		// before the second agent registered.
		fresh, err := kgo.NewClient(kgo.SeedBrokers(b.addr))
		if err != nil {
			t.Fatal(err)
		}
		meta, err := kadm.NewClient(fresh).BrokerMetadata(ctx)
		fresh.Close()
		if err == nil && len(meta.Brokers) == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("metadata never listed both agents: %v %v", meta.Brokers, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	const partitions = 3
	if r, err := adm.CreateTopic(ctx, partitions, 3, nil, "shared"); err != nil || r.Err != nil {
		t.Fatalf("create topic: %v %v", err, r.Err)
	}

	producer, err := kgo.NewClient(kgo.SeedBrokers(a.addr, b.addr), kgo.ClientID("it,strata_zone=a"),
		kgo.DefaultProduceTopic("shared"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		kgo.ProducerLinger(0), kgo.RecordRetries(1000), kgo.RecordDeliveryTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()

	var mu sync.Mutex
	ackedAt := map[int32]map[int64]string{}
	var firstErr error
	var wg sync.WaitGroup
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			wg.Add(1)
			producer.Produce(ctx, &kgo.Record{Value: fmt.Appendf(nil, "r%05d", i)}, func(r *kgo.Record, err error) {
				defer wg.Done()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					return
				}
				if ackedAt[r.Partition] == nil {
					ackedAt[r.Partition] = map[int64]string{}
				}
				ackedAt[r.Partition][r.Offset] = string(r.Value)
			})
		}
	}
	produce(0, 300)
	wg.Wait()
	produce(300, 600)
	a.signal(syscall.SIGKILL) // mid-produce: some of 300-600 may be in flight
	<-a.exited
	produce(600, 900)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("produce after agent a died: %v", firstErr)
	}
	total := 0
	for _, m := range ackedAt {
		total += len(m)
	}
	t.Logf("acknowledged %d records", total)

	consumer, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.ClientID("it,strata_zone=b"),
		kgo.ConsumeTopics("shared"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	seen := map[int32]map[int64]string{}
	found := 0
	for found < total {
		fs := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d acknowledged records before the deadline", found, total)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if seen[r.Partition] == nil {
				seen[r.Partition] = map[int64]string{}
			}
			if _, dup := seen[r.Partition][r.Offset]; dup {
				t.Fatalf("partition %d offset %d delivered twice", r.Partition, r.Offset)
			}
			seen[r.Partition][r.Offset] = string(r.Value)
			if want, ok := ackedAt[r.Partition][r.Offset]; ok {
				if want != string(r.Value) {
					t.Fatalf("partition %d offset %d holds %q, %q was acknowledged there", r.Partition, r.Offset, r.Value, want)
				}
				found++
			}
		})
	}
	for p, m := range seen {
		for off := range int64(len(m)) {
			if _, ok := m[off]; !ok {
				t.Fatalf("partition %d: offset %d missing among %d consumed (a gap)", p, off, len(m))
			}
		}
	}
}
