package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// groupCaller calls the group RPCs on whichever live node answers (followers
// forward to the leader), as an agent does.
type groupCaller struct {
	t testing.TB
	c *testCluster
}

func (g groupCaller) stubs() []pb.MetastoreClient {
	var out []pb.MetastoreClient
	for _, tn := range g.c.nodes {
		if tn.n == nil {
			continue
		}
		cc, err := grpc.NewClient(tn.apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			g.t.Fatal(err)
		}
		g.t.Cleanup(func() { cc.Close() })
		out = append(out, pb.NewMetastoreClient(cc))
	}
	return out
}

// do retries f on every live node until one answers without a transport or
// leadership error, for up to 20 s.
func do[Resp any](g groupCaller, f func(context.Context, pb.MetastoreClient) (Resp, error)) Resp {
	g.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		for _, s := range g.stubs() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := f(ctx, s)
			cancel()
			if err == nil {
				return r
			}
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.t.Fatalf("no node answered: %v", last)
	var zero Resp
	return zero
}

func (g groupCaller) join(req *pb.JoinGroupRequest) *pb.JoinGroupResponse {
	return do(g, func(ctx context.Context, s pb.MetastoreClient) (*pb.JoinGroupResponse, error) {
		return s.JoinGroup(ctx, req)
	})
}

func (g groupCaller) sync(req *pb.SyncGroupRequest) *pb.SyncGroupResponse {
	return do(g, func(ctx context.Context, s pb.MetastoreClient) (*pb.SyncGroupResponse, error) {
		return s.SyncGroup(ctx, req)
	})
}

func (g groupCaller) heartbeat(member string, gen int32) int32 {
	return do(g, func(ctx context.Context, s pb.MetastoreClient) (*pb.HeartbeatResponse, error) {
		return s.Heartbeat(ctx, &pb.HeartbeatRequest{Group: "g", Generation: gen, MemberId: member})
	}).ErrorCode
}

func (g groupCaller) commit(member string, gen int32, topic []byte, offset int64) *pb.CommitOffsetsResponse {
	return do(g, func(ctx context.Context, s pb.MetastoreClient) (*pb.CommitOffsetsResponse, error) {
		return s.CommitOffsets(ctx, &pb.CommitOffsetsRequest{Group: "g", Generation: &gen, MemberId: member,
			Offsets: []*pb.CommittedOffset{{TopicId: topic, Partition: 0, Offset: offset}}})
	})
}

func groupJoin(member string) *pb.JoinGroupRequest {
	return &pb.JoinGroupRequest{Group: "g", MemberId: member, ProtocolType: "consumer", ClientId: "c",
		SessionTimeoutMs: 10_000, RebalanceTimeoutMs: 10_000, RequireMemberId: true,
		Protocols: []*pb.GroupProtocol{{Name: "range", Metadata: []byte(member)}}}
}

// TestGroupSurvivesLeaderFailover forms a group on a 3-node cluster, kills the
// leader, and checks that the new leader's coordinator carries on: the Stable
// group keeps its generation, assignments and offsets with no rebalance; a
// rebalance cut off between join and sync restarts in a higher generation.
func TestGroupSurvivesLeaderFailover(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.Groups.InitialRebalanceDelay = 0 })
	g := groupCaller{t: t, c: c}
	topic := createTopic(t, c.client(), "t", 1)

	ids := make([]string, 2)
	for i := range ids {
		r := g.join(groupJoin(""))
		if r.ErrorCode != 79 {
			t.Fatalf("first join: %v", r)
		}
		ids[i] = r.MemberId
	}
	joined := make(chan *pb.JoinGroupResponse, 2)
	for _, id := range ids {
		go func() { joined <- g.join(groupJoin(id)) }()
	}
	r1, r2 := <-joined, <-joined
	if r1.ErrorCode != 0 || r2.ErrorCode != 0 || r1.Generation != r2.Generation {
		t.Fatalf("joins: %v / %v", r1, r2)
	}
	gen, leader := r1.Generation, r1.Leader
	other := ids[0]
	if other == leader {
		other = ids[1]
	}
	synced := make(chan *pb.SyncGroupResponse, 1)
	go func() { synced <- g.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: other}) }()
	if r := g.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: leader, Assignments: []*pb.GroupAssignment{
		{MemberId: leader, Assignment: []byte("L")}, {MemberId: other, Assignment: []byte("O")}}}); r.ErrorCode != 0 {
		t.Fatalf("leader sync: %v", r)
	}
	if r := <-synced; string(r.Assignment) != "O" {
		t.Fatalf("member sync: %v", r)
	}
	if r := g.commit(other, gen, topic, 42); r.GroupError != 0 || r.Results[0].Error != 0 {
		t.Fatalf("commit: %v", r)
	}

	old := c.waitLeader()
	c.kill(old)
	if c.waitLeader() == old {
		t.Fatal("the killed node still leads")
	}
	for _, id := range ids {
		if code := g.heartbeat(id, gen); code != 0 {
			t.Fatalf("heartbeat after failover: %d", code)
		}
	}
	if r := g.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: other}); string(r.Assignment) != "O" {
		t.Fatalf("assignment after failover: %v", r)
	}
	if r := g.commit(other, gen-1, topic, 43); r.GroupError != 22 {
		t.Fatalf("stale commit after failover: %v, want ILLEGAL_GENERATION", r)
	}
	offs := do(g, func(ctx context.Context, s pb.MetastoreClient) (*pb.FetchOffsetsResponse, error) {
		return s.FetchOffsets(ctx, &pb.FetchOffsetsRequest{Group: "g"})
	})
	if len(offs.Offsets) != 1 || offs.Offsets[0].Offset != 42 {
		t.Fatalf("offsets after failover: %v", offs)
	}

	// A third member starts a rebalance; the leader dies after the join phase and
	// before the assignments.
	third := g.join(groupJoin("")).MemberId
	go func() { joined <- g.join(groupJoin(third)) }()
	waitFor(t, 10*time.Second, "the rebalance", func() bool { return g.heartbeat(ids[0], gen) == 27 })
	for _, id := range ids {
		go func() { joined <- g.join(groupJoin(id)) }()
	}
	var resps []*pb.JoinGroupResponse
	for range 3 {
		resps = append(resps, <-joined)
	}
	for _, r := range resps {
		if r.ErrorCode != 0 || r.Generation != gen+1 {
			t.Fatalf("rejoin: %v, want generation %d", r, gen+1)
		}
	}
	c.restart(old)
	old = c.waitLeader()
	c.kill(old)
	c.waitLeader()
	if r := g.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen + 1, MemberId: third}); r.ErrorCode != 27 {
		t.Fatalf("sync of an interrupted rebalance: %v, want REBALANCE_IN_PROGRESS", r)
	}
	for _, id := range append(ids, third) {
		go func() { joined <- g.join(groupJoin(id)) }()
	}
	for range 3 {
		if r := <-joined; r.ErrorCode != 0 || r.Generation != gen+2 {
			t.Fatalf("rejoin after failover: %v, want generation %d", r, gen+2)
		}
	}
}

// BenchmarkOffsetCommit measures OffsetCommit as a Stable group's member sends it
// (the coordinator checks member and generation, then the offsets go through Raft)
// with 10 partitions per commit, on 1 and 3 nodes with fsync, from 1 and 64
// callers. It reports commits/s and p50/p99 latency.
func BenchmarkOffsetCommit(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, callers := range []int{1, 64} {
			b.Run(fmt.Sprintf("nodes=%d/callers=%d", nodes, callers), func(b *testing.B) {
				c := newCluster(b, nodes, func(cfg *Config) { cfg.Groups.InitialRebalanceDelay = 0 })
				g := groupCaller{t: b, c: c}
				topic := createTopic(b, c.client(), "t", 10)
				id := g.join(groupJoin("")).MemberId
				r := g.join(groupJoin(id))
				if r.ErrorCode != 0 {
					b.Fatalf("join: %v", r)
				}
				if s := g.sync(&pb.SyncGroupRequest{Group: "g", Generation: r.Generation, MemberId: id}); s.ErrorCode != 0 {
					b.Fatalf("sync: %v", s)
				}
				var offsets []*pb.CommittedOffset
				for p := range int32(10) {
					offsets = append(offsets, &pb.CommittedOffset{TopicId: topic, Partition: p})
				}
				cc, err := grpc.NewClient(c.nodes[c.waitLeader()].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Close()
				leader := pb.NewMetastoreClient(cc)
				ctx := ctxT(b, 10*time.Minute)
				measure(b, callers, "commits/s", func(seq int64) error {
					resp, err := leader.CommitOffsets(ctx, &pb.CommitOffsetsRequest{Group: "g", Generation: &r.Generation, MemberId: id, Offsets: offsets})
					if err == nil && resp.GroupError != 0 {
						err = fmt.Errorf("group error %d", resp.GroupError)
					}
					return err
				})
			})
		}
	}
}
