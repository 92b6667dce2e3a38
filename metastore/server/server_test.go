package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func TestSingleNodeEmbedded(t *testing.T) {
	dir := t.TempDir()
	cfg := EmbeddedConfig(dir, "127.0.0.1:0")
	cfg.Logger = testLogger(t)
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { n.Close() }()
	cl := dial(t, n.APIAddr())
	ctx := ctxT(t, 20*time.Second)

	topic := createTopic(t, cl, "orders", 3)
	// A retried create (same name and id) reports the topic; another id is refused.
	resp, err := cl.CreateTopics(ctx, &pb.CreateTopicsRequest{Topics: []*pb.TopicSpec{
		{Name: "orders", TopicId: topic, Partitions: 3, ReplicationFactor: -1},
		{Name: "orders", Partitions: 3, ReplicationFactor: -1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Results[0]; r.Error != pb.ErrorCode_NONE || !bytes.Equal(r.TopicId, topic) {
		t.Fatalf("retried create: %v", r)
	}
	if r := resp.Results[1]; !errors.Is(metastore.ErrorOf(r.Error, r.Message), metastore.ErrTopicExists) {
		t.Fatalf("duplicate create: %v", r)
	}

	c1, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0, 1}, 10))
	if err != nil {
		t.Fatal(err)
	}
	req2 := commitReq(topic, []int32{0}, 5)
	c2, err := cl.CommitSegment(ctx, req2)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Chunks[0].BaseOffset != 0 || c1.Chunks[0].LastOffset != 9 || c2.Chunks[0].BaseOffset != 10 || c2.Chunks[0].LastOffset != 14 {
		t.Fatalf("offsets: %v then %v", c1, c2)
	}
	// CommitSegment is idempotent on the segment id.
	again, err := cl.CommitSegment(ctx, req2)
	if err != nil || again.Chunks[0].BaseOffset != 10 {
		t.Fatalf("retried commit: %v, %v", again, err)
	}

	lk, err := cl.Lookup(ctx, &pb.LookupRequest{TopicId: topic, Partition: 0, Offset: 12, MaxEntries: 10})
	if err != nil {
		t.Fatal(err)
	}
	if lk.Error != pb.ErrorCode_NONE || len(lk.Entries) != 1 || lk.Entries[0].BaseOffset != 10 || lk.Head.NextOffset != 15 {
		t.Fatalf("lookup: %v", lk)
	}
	lo, err := cl.ListOffsets(ctx, &pb.ListOffsetsRequest{TopicId: topic, Partition: 0, Timestamp: -1})
	if err != nil || lo.Offset != 15 {
		t.Fatalf("list offsets latest: %v, %v", lo, err)
	}
	lk, err = cl.Lookup(ctx, &pb.LookupRequest{TopicId: randomID(), Partition: 0})
	if err != nil || lk.Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("lookup of an unknown topic: %v, %v", lk, err)
	}
	desc, err := cl.DescribeTopics(ctx, &pb.DescribeTopicsRequest{})
	if err != nil || len(desc.Results) != 1 || desc.Results[0].Topic.Partitions != 3 || desc.AppliedIndex == 0 {
		t.Fatalf("describe: %v, %v", desc, err)
	}

	// Agents and intents; whole-call refusals arrive as typed errors.
	if _, err := cl.RegisterAgent(ctx, &pb.RegisterAgentRequest{Agent: &pb.AgentInfo{AgentId: "a1", Address: "127.0.0.1:9092", LeaseMs: 60_000}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RegisterAgent(ctx, &pb.RegisterAgentRequest{Agent: &pb.AgentInfo{AgentId: "a2", Address: "nonsense", LeaseMs: 60_000}}); !errors.Is(err, metastore.ErrInvalidRequest) {
		t.Fatalf("bad agent address: %v", err)
	}
	agents, err := cl.ListAgents(ctx, &pb.ListAgentsRequest{})
	if err != nil || len(agents.Agents) != 1 || agents.Agents[0].LeaseExpiryMs == 0 {
		t.Fatalf("list agents: %v, %v", agents, err)
	}
	if _, err := cl.DeregisterAgent(ctx, &pb.DeregisterAgentRequest{AgentId: "nobody"}); !errors.Is(err, metastore.ErrUnknownAgent) {
		t.Fatalf("deregister unknown: %v", err)
	}
	seg := randomID()
	in, err := cl.RecordIntent(ctx, &pb.RecordIntentRequest{SegmentId: seg, AgentId: "a1", TtlMs: 1})
	if err != nil || in.Intent.ExpiresMs != in.Intent.CreatedMs+1 {
		t.Fatalf("record intent: %v, %v", in, err)
	}
	waitFor(t, 5*time.Second, "the intent to expire", func() bool {
		ex, err := cl.ListExpiredIntents(ctx, &pb.ListExpiredIntentsRequest{})
		return err == nil && len(ex.Intents) == 1 && bytes.Equal(ex.Intents[0].SegmentId, seg)
	})
	if _, err := cl.ResolveIntent(ctx, &pb.ResolveIntentRequest{SegmentId: seg}); err != nil {
		t.Fatal(err)
	}

	// A short lease expires by itself: the leader proposes the expiry.
	if _, err := cl.RegisterAgent(ctx, &pb.RegisterAgentRequest{Agent: &pb.AgentInfo{AgentId: "short", Address: "127.0.0.1:9093", LeaseMs: 100}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the short lease to expire", func() bool {
		agents, err := cl.ListAgents(ctx, &pb.ListAgentsRequest{})
		return err == nil && len(agents.Agents) == 1 && agents.Agents[0].AgentId == "a1"
	})

	// Restart from the data dir: everything is still there.
	applied := n.State().Applied()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.APIAddr = n.APIAddr()
	if n, err = Start(cfg); err != nil {
		t.Fatal(err)
	}
	if got := n.State().Applied(); got < applied {
		t.Fatalf("applied %d after restart, was %d", got, applied)
	}
	lk, err = cl.Lookup(ctx, &pb.LookupRequest{TopicId: topic, Partition: 0, Offset: 0, MaxEntries: 10})
	if err != nil || len(lk.Entries) != 2 || lk.Head.NextOffset != 15 {
		t.Fatalf("lookup after restart: %v, %v", lk, err)
	}
}

func TestFollowerForwardsWrites(t *testing.T) {
	c := newCluster(t, 3)
	f := c.follower()
	cl := c.client(f) // knows only the follower
	topic := createTopic(t, cl, "t", 2)
	ctx := ctxT(t, 20*time.Second)
	var last *pb.CommitSegmentResponse
	for range 20 {
		var err error
		if last, err = cl.CommitSegment(ctx, commitReq(topic, []int32{0, 1}, 3)); err != nil {
			t.Fatal(err)
		}
	}
	if last.Chunks[1].LastOffset != 59 {
		t.Fatalf("last commit: %v", last)
	}
	// The follower told the client where the leader is.
	l := c.waitLeader()
	if got := cl.Leader(); got != c.nodes[l].apiAddr {
		t.Fatalf("client follows %q, leader is at %s", got, c.nodes[l].apiAddr)
	}

	// A call that was already forwarded once is answered NOT_LEADER with the
	// leader's address, not forwarded again.
	cc, err := grpc.NewClient(c.nodes[f].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	fctx := metadata.AppendToOutgoingContext(ctx, metastore.HeaderForwarded, "test")
	_, err = pb.NewMetastoreClient(cc).Lookup(fctx, &pb.LookupRequest{TopicId: topic})
	me := statusError(err)
	if me == nil || me.Code != pb.ErrorCode_NOT_LEADER || me.Leader != c.nodes[l].apiAddr {
		t.Fatalf("forwarded call on a follower: %v", err)
	}
}

// statusError decodes a raw gRPC error from a node into the typed error.
func statusError(err error) *metastore.Error {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == metastore.ErrorDomain {
			return &metastore.Error{Code: pb.ErrorCode(pb.ErrorCode_value[info.Reason]), Message: st.Message(), Leader: info.Metadata[metastore.MetadataLeader]}
		}
	}
	return nil
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

func removeAll(dir string) error { return os.RemoveAll(dir) }

func TestLeaderFailover(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	topic := createTopic(t, cl, "t", 1)
	ctx := ctxT(t, 30*time.Second)
	next := int64(0)
	commit := func() {
		t.Helper()
		r, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0}, 2))
		if err != nil {
			t.Fatal(err)
		}
		if r.Chunks[0].BaseOffset != next {
			t.Fatalf("base offset %d, want %d", r.Chunks[0].BaseOffset, next)
		}
		next += 2
	}
	for range 5 {
		commit()
	}
	old := c.waitLeader()
	c.kill(old)
	nl := c.waitLeader()
	if nl == old {
		t.Fatal("the killed node still leads")
	}
	for range 5 {
		commit()
	}
	lk, err := cl.Lookup(ctx, &pb.LookupRequest{TopicId: topic, Offset: 0, MaxEntries: 100})
	if err != nil || len(lk.Entries) != 10 || lk.Head.NextOffset != 20 {
		t.Fatalf("lookup after failover: %v, %v", lk, err)
	}
}

func TestRestartedNodeCatchesUp(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	topic := createTopic(t, cl, "t", 4)
	ctx := ctxT(t, 30*time.Second)
	f := c.follower()
	c.kill(f)
	for i := range 30 {
		if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{int32(i % 4)}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	c.restart(f)
	l := c.waitLeader()
	c.waitApplied(c.nodes[l].n.st.Applied())
	for p := int32(0); p < 4; p++ {
		want, err := c.nodes[l].n.st.Lookup(topic, p, 0, 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.nodes[f].n.st.Lookup(topic, p, 0, 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Entries) != 8-int(p)/2 || !equalEntries(got.Entries, want.Entries) {
			t.Fatalf("partition %d: restarted node has %v, leader %v", p, got.Entries, want.Entries)
		}
	}
}

func equalEntries(a, b []*pb.IndexEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].BaseOffset != b[i].BaseOffset || a[i].LastOffset != b[i].LastOffset || !bytes.Equal(a[i].SegmentId, b[i].SegmentId) {
			return false
		}
	}
	return true
}

func TestMembershipAddRemove(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	topic := createTopic(t, cl, "t", 1)
	ctx := ctxT(t, 30*time.Second)
	for range 5 {
		if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	added := c.add()
	waitFor(t, 20*time.Second, "the new node to be a voter", func() bool {
		resp, err := cl.Cluster(ctx)
		if err != nil {
			return false
		}
		for _, m := range resp.Members {
			if m.Id == c.nodes[added].id && m.Voter {
				return len(resp.Members) == 4
			}
		}
		return false
	})
	l := c.waitLeader()
	c.waitApplied(c.nodes[l].n.st.Applied())
	// Every node learns the newcomer's API address, and the newcomer everyone's.
	waitFor(t, 10*time.Second, "address books to fill", func() bool {
		for _, tn := range c.nodes {
			for _, o := range c.nodes {
				if p, _ := tn.n.book.get(o.id); p.APIAddr != o.apiAddr {
					return false
				}
			}
		}
		return true
	})

	// Make the newcomer lead, then serve through it.
	for !c.nodes[added].n.IsLeader() {
		l := c.waitLeader()
		if l == added {
			break
		}
		c.kill(l)
		c.waitLeader()
		c.restart(l)
	}
	if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0}, 1)); err != nil {
		t.Fatal(err)
	}

	// Remove node 1 (whoever leads does it).
	if err := cl.Leave(ctx, &pb.LeaveRequest{Id: "1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "node 1 to be gone", func() bool {
		resp, err := cl.Cluster(ctx)
		if err != nil || len(resp.Members) != 3 {
			return false
		}
		for _, m := range resp.Members {
			if m.Id == "1" {
				return false
			}
		}
		return true
	})
	// The removed node notices and stops.
	select {
	case <-c.nodes[0].n.Done():
		if !errors.Is(c.nodes[0].n.Err(), errRemoved) {
			t.Fatalf("removed node stopped with %v", c.nodes[0].n.Err())
		}
	case <-ctx.Done():
		t.Fatal("the removed node did not stop")
	}
	c.kill(0)
	if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0}, 1)); err != nil {
		t.Fatal(err)
	}
	// Leaving twice is fine.
	if err := cl.Leave(ctx, &pb.LeaveRequest{Id: "1"}); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotAndRestart(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.TrailingLogs = 5
		cfg.SnapshotThreshold = 5
		cfg.SnapshotInterval = time.Hour // snapshots only when the test asks
	})
	cl := c.client()
	topic := createTopic(t, cl, "t", 2)
	ctx := ctxT(t, 40*time.Second)
	commit := func(k int) {
		t.Helper()
		for i := range k {
			if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{int32(i % 2)}, 1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit(10)

	// A follower that misses more than the leader keeps in its log gets the
	// leader's snapshot (Restore).
	f := c.follower()
	c.kill(f)
	commit(20)
	l := c.waitLeader()
	if err := c.nodes[l].n.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.restart(f)
	c.waitApplied(c.nodes[l].n.st.Applied())
	assertSameIndex(t, c, topic, 2)

	// A node restarts from its own snapshot; simulate a power loss that left its
	// state behind the snapshot (state writes are not fsynced) by putting back an
	// old copy of the state: the node must catch up before serving.
	f = c.follower()
	c.kill(f)
	stale := t.TempDir()
	copyDir(t, c.nodes[f].dir+"/state", stale)
	c.restart(f)
	commit(20)
	c.waitApplied(c.nodes[c.waitLeader()].n.st.Applied())
	if err := c.nodes[f].n.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.kill(f)
	if err := removeAll(c.nodes[f].dir + "/state"); err != nil {
		t.Fatal(err)
	}
	copyDir(t, stale, c.nodes[f].dir+"/state")
	c.restart(f)
	l = c.waitLeader()
	c.waitApplied(c.nodes[l].n.st.Applied())
	assertSameIndex(t, c, topic, 2)
	if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0}, 1)); err != nil {
		t.Fatal(err)
	}
}

// assertSameIndex checks every live node holds the same index for topic.
func assertSameIndex(t *testing.T, c *testCluster, topic []byte, partitions int32) {
	t.Helper()
	l := c.waitLeader()
	for p := range partitions {
		want, err := c.nodes[l].n.st.Lookup(topic, p, 0, 10_000, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, tn := range c.nodes {
			if tn.n == nil || i == l {
				continue
			}
			got, err := tn.n.st.Lookup(topic, p, 0, 10_000, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !equalEntries(got.Entries, want.Entries) || got.Head.NextOffset != want.Head.NextOffset {
				t.Fatalf("node %s partition %d: %d entries next %d; leader %d entries next %d",
					tn.id, p, len(got.Entries), got.Head.NextOffset, len(want.Entries), want.Head.NextOffset)
			}
		}
	}
}

func TestWatch(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	topic := createTopic(t, cl, "t", 2)
	ctx := ctxT(t, 40*time.Second)

	// Watch partition 1 only.
	wcl := c.client()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := wcl.Watch(wctx, &pb.WatchRequest{Partitions: []*pb.PartitionRef{{TopicId: topic, Partition: 1}}})
	next := func() *pb.WatchEvent {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("watch ended")
			}
			return ev
		case <-ctx.Done():
			t.Fatal("no watch event")
		}
		return nil
	}
	if ev := next(); !ev.Resync {
		t.Fatalf("first event is not a resync: %v", ev)
	}
	if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0}, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0, 1}, 4)); err != nil {
		t.Fatal(err)
	}
	ev := next()
	if ev.Resync || len(ev.Entries) != 1 || ev.Entries[0].Partition != 1 || ev.Entries[0].LastOffset != 3 {
		t.Fatalf("event: %v", ev)
	}

	// The watched node goes away: the watch reconnects elsewhere with a resync and
	// goes on.
	watched := -1
	for i, tn := range c.nodes {
		tn.n.watch.mu.Lock()
		if len(tn.n.watch.subs) > 0 {
			watched = i
		}
		tn.n.watch.mu.Unlock()
	}
	if watched < 0 {
		t.Fatal("no node serves the watch")
	}
	c.kill(watched)
	for {
		if ev := next(); ev.Resync {
			break
		}
	}
	c.waitLeader()
	if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{1}, 2)); err != nil {
		t.Fatal(err)
	}
	for {
		ev := next()
		if len(ev.Entries) == 1 && ev.Entries[0].BaseOffset == 4 && ev.Entries[0].LastOffset == 5 {
			break
		}
	}
}

func TestWatchOverflowResyncs(t *testing.T) {
	h := newHub(2)
	sub, err := h.subscribe(&pb.WatchRequest{Metadata: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		h.publish(&pb.WatchEvent{AppliedIndex: uint64(i + 1), AgentsRemoved: []string{"a"}})
	}
	evs, resync, idx := sub.take()
	if len(evs) != 0 || !resync || idx != 5 {
		t.Fatalf("after overflow: %v %v %d", evs, resync, idx)
	}
	h.publish(&pb.WatchEvent{AppliedIndex: 6, AgentsRemoved: []string{"a"}})
	h.publish(&pb.WatchEvent{AppliedIndex: 7, Entries: []*pb.IndexEntry{{}}}) // no partitions asked for... all are
	evs, resync, _ = sub.take()
	if resync || len(evs) != 2 || evs[0].AppliedIndex != 6 {
		t.Fatalf("after resync: %v %v", evs, resync)
	}
	// Metadata not asked for: agent events are filtered out.
	quiet, _ := h.subscribe(&pb.WatchRequest{Partitions: []*pb.PartitionRef{{TopicId: []byte("x"), Partition: 0}}})
	h.publish(&pb.WatchEvent{AppliedIndex: 8, AgentsRemoved: []string{"a"}})
	h.publish(&pb.WatchEvent{AppliedIndex: 9, Entries: []*pb.IndexEntry{{TopicId: []byte("x")}, {TopicId: []byte("y")}}})
	evs, _, _ = quiet.take()
	if len(evs) != 2 || quiet.filter(evs[0]) != nil || len(quiet.filter(evs[1]).Entries) != 1 {
		t.Fatalf("filtered subscriber: %v", evs)
	}
	h.close()
	select {
	case <-sub.done:
	default:
		t.Fatal("close did not end the subscription")
	}
	if _, err := h.subscribe(&pb.WatchRequest{}); err == nil {
		t.Fatal("subscribe after close")
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.NodeID, good.DataDir = "1", "/tmp/x"
	good.RaftAddr, good.APIAddr = "127.0.0.1:7000", "127.0.0.1:7001"
	good.InitialCluster = map[string]Peer{"1": {RaftAddr: "127.0.0.1:7000", APIAddr: "127.0.0.1:7001"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	emb := EmbeddedConfig("/tmp/x", "127.0.0.1:0")
	if err := emb.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.NodeID = "a,b"
	bad.DataDir = ""
	bad.RaftAddr = "0.0.0.0:7000"
	bad.Join = []string{"nohost"}
	bad.HeartbeatTimeout = 0
	bad.CommitBatchMax = 0
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"node id", "data dir", "every interface", "exclusive", "join address", "heartbeat timeout", "commit batch max", "does not contain this node"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}

func TestParsePeers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]Peer
		err  bool
	}{
		{"", map[string]Peer{}, false},
		{"1=h1:1", map[string]Peer{"1": {RaftAddr: "h1:1"}}, false},
		{"1=h1:1/h1:2, 2=h2:1/h2:2", map[string]Peer{"1": {"h1:1", "h1:2"}, "2": {"h2:1", "h2:2"}}, false},
		{"1=h1:1,1=h1:2", nil, true},
		{"1", nil, true},
		{"=h:1", nil, true},
	} {
		got, err := ParsePeers(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if err == nil && FormatPeers(got) != FormatPeers(tc.want) {
			t.Errorf("%q: got %v want %v", tc.in, got, tc.want)
		}
	}
}
