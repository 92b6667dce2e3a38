package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// testCluster is the in-process cluster harness: n nodes on loopback TCP, each with
// its own data dir, that tests kill (abruptly) and restart by index.
type testCluster struct {
	t     testing.TB
	nodes []*testNode
	tweak func(*Config)
}

type testNode struct {
	id                string
	dir               string
	raftAddr, apiAddr string
	join              []string // set for nodes added by join
	n                 *Node    // nil while down
}

// newCluster starts n nodes that found a cluster together and waits for a leader.
func newCluster(t testing.TB, n int, tweak ...func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	if len(tweak) > 0 {
		c.tweak = tweak[0]
	}
	for i := range n {
		c.nodes = append(c.nodes, &testNode{id: strconv.Itoa(i + 1), dir: t.TempDir()})
	}
	rafts, apis := make([]net.Listener, n), make([]net.Listener, n)
	for i, tn := range c.nodes {
		rafts[i], apis[i] = listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
		tn.raftAddr, tn.apiAddr = rafts[i].Addr().String(), apis[i].Addr().String()
	}
	for i := range c.nodes {
		c.startWith(i, rafts[i], apis[i])
	}
	t.Cleanup(c.close)
	c.waitLeader()
	return c
}

func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testConfig is fast Raft timing for loopback under the race detector.
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.HeartbeatTimeout = 250 * time.Millisecond
	cfg.ElectionTimeout = 250 * time.Millisecond
	cfg.LeaderLeaseTimeout = 150 * time.Millisecond
	cfg.CommitTimeout = 10 * time.Millisecond
	cfg.MemberSyncInterval = 100 * time.Millisecond
	cfg.AgentExpiryInterval = 100 * time.Millisecond
	cfg.ApplyTimeout = 5 * time.Second
	cfg.Logger = testLogger(t)
	return cfg
}

func (c *testCluster) config(i int) Config {
	tn := c.nodes[i]
	cfg := testConfig(c.t)
	cfg.NodeID = tn.id
	cfg.DataDir = tn.dir
	cfg.RaftAddr, cfg.APIAddr = tn.raftAddr, tn.apiAddr
	if tn.join != nil {
		cfg.Join = tn.join
	} else {
		cfg.InitialCluster = map[string]Peer{}
		for _, o := range c.nodes {
			if o.join == nil {
				cfg.InitialCluster[o.id] = Peer{RaftAddr: o.raftAddr, APIAddr: o.apiAddr}
			}
		}
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	return cfg
}

func (c *testCluster) startWith(i int, raftLis, apiLis net.Listener) {
	c.t.Helper()
	cfg := c.config(i)
	cfg.RaftListener, cfg.APIListener = raftLis, apiLis
	n, err := Start(cfg)
	if err != nil {
		raftLis.Close()
		apiLis.Close()
		c.t.Fatalf("start node %s: %v", c.nodes[i].id, err)
	}
	c.nodes[i].n = n
}

// kill stops node i abruptly: no leadership transfer, calls cut off.
func (c *testCluster) kill(i int) {
	c.t.Helper()
	tn := c.nodes[i]
	if tn.n == nil {
		return
	}
	tn.n.stop(false)
	tn.n = nil
}

// restart starts node i again from its data dir, on the same addresses.
func (c *testCluster) restart(i int) {
	c.t.Helper()
	tn := c.nodes[i]
	c.startWith(i, listen(c.t, tn.raftAddr), listen(c.t, tn.apiAddr))
}

// add starts a new node that joins the cluster through the API of the live nodes.
func (c *testCluster) add() int {
	c.t.Helper()
	tn := &testNode{id: strconv.Itoa(len(c.nodes) + 1), dir: c.t.TempDir()}
	for _, o := range c.nodes {
		if o.n != nil {
			tn.join = append(tn.join, o.apiAddr)
		}
	}
	rl, al := listen(c.t, "127.0.0.1:0"), listen(c.t, "127.0.0.1:0")
	tn.raftAddr, tn.apiAddr = rl.Addr().String(), al.Addr().String()
	c.nodes = append(c.nodes, tn)
	c.startWith(len(c.nodes)-1, rl, al)
	return len(c.nodes) - 1
}

func (c *testCluster) close() {
	for i := range c.nodes {
		c.kill(i)
	}
}

// waitLeader polls until exactly one live node leads and every live node agrees on
// it, and returns its index.
func (c *testCluster) waitLeader() int {
	c.t.Helper()
	var leader int
	waitFor(c.t, 20*time.Second, "a leader", func() bool {
		leader = -1
		for i, tn := range c.nodes {
			if tn.n != nil && tn.n.IsLeader() {
				if leader >= 0 {
					return false
				}
				leader = i
			}
		}
		if leader < 0 {
			return false
		}
		for _, tn := range c.nodes {
			if tn.n == nil {
				continue
			}
			if _, id := tn.n.raft.LeaderWithID(); string(id) != c.nodes[leader].id && tn.n.inConfig() {
				return false
			}
		}
		return true
	})
	return leader
}

// follower returns the index of a live node that does not lead.
func (c *testCluster) follower() int {
	c.t.Helper()
	l := c.waitLeader()
	for i, tn := range c.nodes {
		if i != l && tn.n != nil {
			return i
		}
	}
	c.t.Fatal("no live follower")
	return -1
}

func (c *testCluster) apiAddrs() []string {
	var addrs []string
	for _, tn := range c.nodes {
		addrs = append(addrs, tn.apiAddr)
	}
	return addrs
}

// client dials the given nodes (all when none are given).
func (c *testCluster) client(idx ...int) *metastore.Client {
	c.t.Helper()
	addrs := c.apiAddrs()
	if len(idx) > 0 {
		addrs = nil
		for _, i := range idx {
			addrs = append(addrs, c.nodes[i].apiAddr)
		}
	}
	return dial(c.t, addrs...)
}

func dial(t testing.TB, addrs ...string) *metastore.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := metastore.Dial(ctx, addrs, metastore.Options{BackoffMin: 5 * time.Millisecond, BackoffMax: 200 * time.Millisecond, AttemptTimeout: 3 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// waitApplied polls until every live node applied at least index.
func (c *testCluster) waitApplied(index uint64) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, fmt.Sprintf("every node applied %d", index), func() bool {
		for _, tn := range c.nodes {
			if tn.n != nil && tn.n.st.Applied() < index {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// --- fixtures -----------------------------------------------------------------------

func randomID() []byte {
	id := make([]byte, 16)
	rand.Read(id)
	return id
}

// createTopic creates a topic through the client and returns its id.
func createTopic(t testing.TB, cl *metastore.Client, name string, partitions int32) []byte {
	t.Helper()
	resp, err := cl.CreateTopics(ctxT(t, 20*time.Second), &pb.CreateTopicsRequest{Topics: []*pb.TopicSpec{{Name: name, Partitions: partitions, ReplicationFactor: -1}}})
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	r := resp.Results[0]
	if err := metastore.ErrorOf(r.Error, r.Message); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	return r.TopicId
}

// commitReq commits records records to each partition of topic, one batch each.
func commitReq(topic []byte, partitions []int32, records int32) *pb.CommitSegmentRequest {
	req := &pb.CommitSegmentRequest{SegmentId: randomID(), AgentId: "agent-1"}
	pos := int64(0)
	for _, p := range partitions {
		req.Chunks = append(req.Chunks, &pb.ChunkCommit{
			TopicId: topic, Partition: p, Position: pos, Length: 100,
			FirstTimestamp: 1000, MaxTimestamp: 2000,
			Batches: []*pb.BatchInfo{{OffsetCount: records, RecordCount: records, ProducerId: -1, ProducerEpoch: -1, BaseSequence: -1, MaxTimestamp: 2000}},
		})
		pos += 100
	}
	req.Size = pos
	return req
}

// --- logging ------------------------------------------------------------------------

// testLogger logs warnings (everything with STRATA_TEST_DEBUG=1) through t.Log, and
// nothing once the test is over (Raft's goroutines may outlive it briefly).
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("STRATA_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Raft reports every failed heartbeat to a node a test killed.
	if !w.done && !bytes.Contains(p, []byte("raft: failed to")) {
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
