package integration

// Helpers for the transaction and idempotence tests in txn_test.go: a cluster of three
// metastore processes and two agents over one directory store, killing and restarting
// its processes, and reading a topic to its end.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
)

// procCluster is three `strata metastore` processes and two `strata agent`
// processes over one directory store.
type procCluster struct {
	metas  []*metastoreProc
	apis   []string
	store  string
	agents []*agentProc
}

// startProcCluster starts the metastores with metaArgs and two agents, agent-x in
// zones[0] and agent-y in zones[1], with agentArgs; it returns once a fresh client's
// Metadata lists both agents.
func startProcCluster(t *testing.T, zones [2]string, metaArgs []string, agentArgs ...string) *procCluster {
	t.Helper()
	c := &procCluster{metas: startMetastoreProcs(t, metaArgs...), store: "file://" + t.TempDir()}
	for _, p := range c.metas {
		c.apis = append(c.apis, p.api)
	}
	for i, name := range []string{"agent-x", "agent-y"} {
		c.agents = append(c.agents, startAgentProc(t, name, zones[i], c.apis, c.store, agentArgs...))
	}
	groupWaitFor(t, 30*time.Second, "metadata lists both agents", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := freshMetadata(ctx, c.agents[0].addr)
		if err != nil {
			return err
		}
		if len(resp.Brokers) != 2 {
			return fmt.Errorf("%d brokers", len(resp.Brokers))
		}
		return nil
	})
	return c
}

// addrs is the agents' Kafka addresses.
func (c *procCluster) addrs() []string {
	var out []string
	for _, a := range c.agents {
		out = append(out, a.addr)
	}
	return out
}

// agentAt is the agent serving Kafka on addr, or nil.
func (c *procCluster) agentAt(addr string) *agentProc {
	for _, a := range c.agents {
		if a.addr == addr {
			return a
		}
	}
	return nil
}

// freshMetadata asks seed for the metadata of topics (all topics if none) through a
// new client: franz-go answers a repeated Metadata request from its cache.
func freshMetadata(ctx context.Context, seed string, topics ...string) (*kmsg.MetadataResponse, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seed))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	for _, topic := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	return req.RequestWith(ctx, cl)
}

// partitionLeader is the address of the agent that Metadata through seed names as
// the leader of topic's partition.
func partitionLeader(ctx context.Context, seed, topic string, partition int32) (string, error) {
	resp, err := freshMetadata(ctx, seed, topic)
	if err != nil {
		return "", err
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.Partition != partition {
				continue
			}
			for _, br := range resp.Brokers {
				if br.NodeID == rp.Leader {
					return net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port))), nil
				}
			}
			return "", fmt.Errorf("%s/%d: leader %d is not among the brokers", topic, partition, rp.Leader)
		}
	}
	return "", fmt.Errorf("%s/%d: not in metadata", topic, partition)
}

// killAgent SIGKILLs the agent and waits until it has exited.
func killAgent(t *testing.T, a *agentProc) {
	t.Helper()
	a.signal(syscall.SIGKILL)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("agent %s still running 10s after SIGKILL", a.id)
	}
}

// restartAgent starts a killed agent again with the same flags, and returns once it
// listens. The output of the killed process is logged if the test fails.
func restartAgent(t *testing.T, a *agentProc) {
	t.Helper()
	earlier := a.out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent %s output before its restart:\n%s", a.id, earlier)
		}
	})
	a.start(t)
	groupWaitFor(t, 30*time.Second, "agent "+a.id+" listens again", func() error {
		select {
		case err := <-a.exited:
			t.Fatalf("agent %s exited after its restart: %v\n%s", a.id, err, a.out)
		default:
		}
		c, err := net.DialTimeout("tcp", a.addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// killMetastoreLeader SIGKILLs the metastore process that leads Raft and returns its id.
func killMetastoreLeader(t *testing.T, c *procCluster) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mc, err := metastore.Dial(ctx, c.apis, metastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	cluster, err := mc.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cluster.Members {
		if !m.Leader {
			continue
		}
		for _, p := range c.metas {
			if p.id == m.Id {
				p.signal(syscall.SIGKILL)
				<-p.exited
				return p.id
			}
		}
	}
	t.Fatalf("no leader among %v", cluster.Members)
	return ""
}

// readTopic reads topic from its start with the isolation level through seeds until
// it holds at least want records and none has arrived for quiet, or until limit
// passes; it returns the records in the order read. Fetch errors fail the test.
func readTopic(t *testing.T, seeds []string, topic string, iso kgo.IsolationLevel, want int, quiet, limit time.Duration) []*kgo.Record {
	t.Helper()
	cl := franzClient(t, seeds[0], kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(iso),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	defer cl.Close()
	var recs []*kgo.Record
	deadline := time.Now().Add(limit)
	last := time.Now()
	for time.Now().Before(deadline) && (len(recs) < want || time.Since(last) < quiet) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			last = time.Now()
		})
	}
	return recs
}

// valuesByPartition is the records' values per partition, in the order read.
func valuesByPartition(recs []*kgo.Record) map[int32][]string {
	out := map[int32][]string{}
	for _, r := range recs {
		out[r.Partition] = append(out[r.Partition], string(r.Value))
	}
	return out
}

// sortedKeys is m's keys, sorted.
func sortedKeys[V any](m map[int32]V) []int32 {
	var ks []int32
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
