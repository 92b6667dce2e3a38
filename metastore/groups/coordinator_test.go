package groups

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// memStore is a Store in memory; fail makes every Save fail.
type memStore struct {
	mu     sync.Mutex
	recs   map[string]*pb.GroupRecord
	saves  []*pb.GroupRecord
	fail   bool
	topics []TopicMeta
}

func newMemStore() *memStore { return &memStore{recs: map[string]*pb.GroupRecord{}} }

func (s *memStore) Load(_ context.Context, g string) (*pb.GroupRecord, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs[g]
	if r == nil {
		return nil, false, nil
	}
	return proto.CloneOf(r), true, nil
}

func (s *memStore) Save(_ context.Context, r *pb.GroupRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("injected save failure")
	}
	if old := s.recs[r.Group]; old != nil && r.Generation < old.Generation {
		return errors.New("stale generation")
	}
	s.recs[r.Group] = proto.CloneOf(r)
	s.saves = append(s.saves, proto.CloneOf(r))
	return nil
}

func (s *memStore) Delete(_ context.Context, g string) (pb.ErrorCode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recs[g] == nil {
		return pb.ErrorCode_GROUP_NOT_FOUND, nil
	}
	delete(s.recs, g)
	return pb.ErrorCode_NONE, nil
}

func (s *memStore) Topics(context.Context) ([]TopicMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.topics), nil
}

func (s *memStore) get(g string) *pb.GroupRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recs[g]
}

// clock is a manual clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t     *testing.T
	c     *Coordinator
	store *memStore
	clk   *clock
}

func newFixture(t *testing.T, adjust ...func(*Config)) *fixture {
	cfg := DefaultConfig()
	cfg.InitialRebalanceDelay = 0
	for _, f := range adjust {
		f(&cfg)
	}
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	st := newMemStore()
	c := New(cfg, st, clk.Now)
	c.Term(1)
	return &fixture{t: t, c: c, store: st, clk: clk}
}

// restart gives the fixture a new coordinator over the same store: a new leader.
func (f *fixture) restart() {
	f.c.Reset()
	f.c = New(f.c.cfg, f.store, f.clk.Now)
	f.c.Term(2)
}

func joinReq(member string, protocols ...string) *pb.JoinGroupRequest {
	if len(protocols) == 0 {
		protocols = []string{"range"}
	}
	r := &pb.JoinGroupRequest{Group: "g", MemberId: member, ProtocolType: "consumer", ClientId: "client",
		SessionTimeoutMs: 10_000, RebalanceTimeoutMs: 30_000, RequireMemberId: true, CanSkipAssignment: true}
	for _, p := range protocols {
		r.Protocols = append(r.Protocols, &pb.GroupProtocol{Name: p, Metadata: []byte(member + "/" + p)})
	}
	return r
}

func static(req *pb.JoinGroupRequest, instance string) *pb.JoinGroupRequest {
	req.InstanceId = &instance
	return req
}

// join starts a JoinGroup in the background.
func (f *fixture) join(req *pb.JoinGroupRequest) <-chan *pb.JoinGroupResponse {
	ch := make(chan *pb.JoinGroupResponse, 1)
	go func() { ch <- f.c.Join(context.Background(), req) }()
	return ch
}

func (f *fixture) sync(req *pb.SyncGroupRequest) <-chan *pb.SyncGroupResponse {
	ch := make(chan *pb.SyncGroupResponse, 1)
	go func() { ch <- f.c.Sync(context.Background(), req) }()
	return ch
}

func wait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
		panic("unreachable")
	}
}

func pending[T any](t *testing.T, ch <-chan T) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("answered early: %v", v)
	case <-time.After(20 * time.Millisecond):
	}
}

// newMember runs the KIP-394 handshake and returns the member id to join with.
func (f *fixture) newMember() string {
	f.t.Helper()
	r := wait(f.t, f.join(joinReq("")))
	if r.ErrorCode != codeMemberIDRequired || r.MemberId == "" {
		f.t.Fatalf("first join: %v, want MEMBER_ID_REQUIRED with an id", r)
	}
	return r.MemberId
}

// stableGroup forms a group of n members and returns their ids (the leader first)
// and the generation, after the leader's SyncGroup handed out assignments.
func (f *fixture) stableGroup(n int) ([]string, int32) {
	f.t.Helper()
	ids := make([]string, n)
	chans := make([]<-chan *pb.JoinGroupResponse, n)
	for i := range ids {
		ids[i] = f.newMember()
	}
	for i, id := range ids {
		chans[i] = f.join(joinReq(id))
		if i < n-1 {
			pending(f.t, chans[i])
		}
	}
	resps := make([]*pb.JoinGroupResponse, n)
	for i := range chans {
		resps[i] = wait(f.t, chans[i])
		if resps[i].ErrorCode != codeNone {
			f.t.Fatalf("join %d: %v", i, resps[i])
		}
	}
	leader := resps[0].Leader
	gen := resps[0].Generation
	var syncs []<-chan *pb.SyncGroupResponse
	for _, id := range ids {
		if id != leader {
			syncs = append(syncs, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: id}))
		}
	}
	var assignments []*pb.GroupAssignment
	for _, id := range ids {
		assignments = append(assignments, &pb.GroupAssignment{MemberId: id, Assignment: []byte("for " + id)})
	}
	lr := wait(f.t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: leader, Assignments: assignments}))
	if lr.ErrorCode != codeNone || string(lr.Assignment) != "for "+leader {
		f.t.Fatalf("leader sync: %v", lr)
	}
	for _, s := range syncs {
		if r := wait(f.t, s); r.ErrorCode != codeNone || len(r.Assignment) == 0 {
			f.t.Fatalf("member sync: %v", r)
		}
	}
	out := []string{leader}
	for _, id := range ids {
		if id != leader {
			out = append(out, id)
		}
	}
	return out, gen
}

func (f *fixture) heartbeat(member string, gen int32) int32 {
	return f.c.Heartbeat(context.Background(), &pb.HeartbeatRequest{Group: "g", Generation: gen, MemberId: member}).ErrorCode
}

func TestJoinSyncFormsAGroup(t *testing.T) {
	f := newFixture(t)
	a := f.newMember()
	b := f.newMember()
	ja := f.join(joinReq(a, "cooperative-sticky", "range"))
	pending(t, ja)
	jb := f.join(joinReq(b, "range", "cooperative-sticky"))
	ra, rb := wait(t, ja), wait(t, jb)
	if ra.ErrorCode != 0 || rb.ErrorCode != 0 || ra.Generation != 1 || rb.Generation != 1 {
		t.Fatalf("joins: %v / %v", ra, rb)
	}
	if ra.Leader != a || rb.Leader != a {
		t.Fatalf("leader %q/%q, want the first member %q", ra.Leader, rb.Leader, a)
	}
	// Both support both; one vote each: the tie goes to the first member's choice.
	if ra.Protocol != "cooperative-sticky" {
		t.Fatalf("protocol %q", ra.Protocol)
	}
	if len(ra.Members) != 2 || len(rb.Members) != 0 {
		t.Fatalf("members to leader %d, to follower %d", len(ra.Members), len(rb.Members))
	}
	if string(ra.Members[1].Protocols[0].Metadata) != b+"/cooperative-sticky" {
		t.Fatalf("leader sees %q", ra.Members[1].Protocols[0].Metadata)
	}
	if rec := f.store.get("g"); rec == nil || rec.Generation != 1 || rec.Assigned || len(rec.Members) != 2 {
		t.Fatalf("saved after the join phase: %v", rec)
	}
	sb := f.sync(&pb.SyncGroupRequest{Group: "g", Generation: 1, MemberId: b, ProtocolType: "consumer", Protocol: "cooperative-sticky"})
	pending(t, sb)
	if code := f.heartbeat(b, 1); code != codeNone {
		t.Fatalf("heartbeat while completing: %d", code)
	}
	sa := wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: 1, MemberId: a, Assignments: []*pb.GroupAssignment{
		{MemberId: a, Assignment: []byte("A")}, {MemberId: b, Assignment: []byte("B")}, {MemberId: "stranger", Assignment: []byte("X")}}}))
	if sa.ErrorCode != 0 || string(sa.Assignment) != "A" {
		t.Fatalf("leader sync %v", sa)
	}
	if r := wait(t, sb); r.ErrorCode != 0 || string(r.Assignment) != "B" || r.Protocol != "cooperative-sticky" {
		t.Fatalf("follower sync %v", r)
	}
	if rec := f.store.get("g"); !rec.Assigned || string(rec.Members[1].Assignment) != "B" {
		t.Fatalf("saved after sync: %v", rec)
	}
	// Stable: a late SyncGroup gets its assignment at once; wrong protocol does not.
	if r := wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: 1, MemberId: b})); string(r.Assignment) != "B" {
		t.Fatalf("stable sync %v", r)
	}
	if r := wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: 1, MemberId: b, Protocol: "range"})); r.ErrorCode != codeInconsistentGroupProtocol {
		t.Fatalf("wrong protocol sync %v", r)
	}
	d := f.c.Describe(context.Background(), []string{"g", "nope"})
	if d[0].State != "Stable" || len(d[0].Members) != 2 || string(d[0].Members[1].Assignment) != "B" || d[1].State != "Dead" {
		t.Fatalf("describe: %v", d)
	}
}

func TestMembershipErrors(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxSize = 2 })
	ids, gen := f.stableGroup(2)
	cases := []struct {
		name string
		code int32
		want int32
	}{
		{"unknown member", f.heartbeat("ghost", gen), codeUnknownMemberID},
		{"stale generation", f.heartbeat(ids[1], gen-1), codeIllegalGeneration},
		{"current", f.heartbeat(ids[1], gen), codeNone},
		{"join unknown id", wait(t, f.join(joinReq("ghost"))).ErrorCode, codeUnknownMemberID},
		{"group full", wait(t, f.join(joinReq(""))).ErrorCode, codeGroupMaxSizeReached},
		{"other protocol type", wait(t, f.join(&pb.JoinGroupRequest{Group: "g", ProtocolType: "connect", SessionTimeoutMs: 10_000, RebalanceTimeoutMs: 10_000,
			Protocols: []*pb.GroupProtocol{{Name: "range"}}})).ErrorCode, codeInconsistentGroupProtocol},
		{"no common protocol", wait(t, f.join(joinReq(ids[1], "roundrobin"))).ErrorCode, codeInconsistentGroupProtocol},
		{"session too short", wait(t, f.join(&pb.JoinGroupRequest{Group: "g", ProtocolType: "consumer", SessionTimeoutMs: 10, RebalanceTimeoutMs: 10,
			Protocols: []*pb.GroupProtocol{{Name: "range"}}})).ErrorCode, codeInvalidSessionTimeout},
		{"no protocols", wait(t, f.join(&pb.JoinGroupRequest{Group: "g", ProtocolType: "consumer", SessionTimeoutMs: 10_000, RebalanceTimeoutMs: 10_000})).ErrorCode, codeInconsistentGroupProtocol},
		{"empty group id", f.c.Heartbeat(context.Background(), &pb.HeartbeatRequest{}).ErrorCode, codeInvalidGroupID},
		{"sync stale generation", wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen + 1, MemberId: ids[0]})).ErrorCode, codeIllegalGeneration},
		{"commit unknown member", f.c.CheckCommit(context.Background(), "g", gen, "ghost", nil), codeUnknownMemberID},
		{"simple commit to a live group", f.c.CheckCommit(context.Background(), "g", -1, "", nil), codeUnknownMemberID},
		{"commit stale generation", f.c.CheckCommit(context.Background(), "g", gen-1, ids[0], nil), codeIllegalGeneration},
		{"commit", f.c.CheckCommit(context.Background(), "g", gen, ids[0], nil), codeNone},
		{"simple commit to no group", f.c.CheckCommit(context.Background(), "other", -1, "", nil), codeNone},
		{"member commit to no group", f.c.CheckCommit(context.Background(), "other", 3, "m", nil), codeIllegalGeneration},
	}
	for _, c := range cases {
		if c.code != c.want {
			t.Errorf("%s: code %d, want %d", c.name, c.code, c.want)
		}
	}
	if r := f.c.Delete(context.Background(), []string{"g"}); r[0].Error != pb.ErrorCode_NON_EMPTY_GROUP {
		t.Fatalf("delete a live group: %v", r)
	}
}

func TestSessionExpiryRebalances(t *testing.T) {
	f := newFixture(t)
	ids, gen := f.stableGroup(3)
	// Everyone but the last heartbeats; the last one's session ends.
	for range 4 {
		f.clk.advance(3 * time.Second)
		f.heartbeat(ids[0], gen)
		f.heartbeat(ids[1], gen)
		f.c.Tick()
	}
	if code := f.heartbeat(ids[0], gen); code != codeRebalanceInProgress {
		t.Fatalf("heartbeat after a member expired: %d, want REBALANCE_IN_PROGRESS", code)
	}
	if code := f.heartbeat(ids[2], gen); code != codeUnknownMemberID {
		t.Fatalf("expired member's heartbeat: %d", code)
	}
	j0, j1 := f.join(joinReq(ids[0])), f.join(joinReq(ids[1]))
	r0, r1 := wait(t, j0), wait(t, j1)
	if r0.Generation != gen+1 || r1.Generation != gen+1 || len(r0.Members) != 2 {
		t.Fatalf("after expiry: %v / %v", r0, r1)
	}
}

func TestRebalanceTimeoutRemovesStragglers(t *testing.T) {
	f := newFixture(t)
	ids, gen := f.stableGroup(2)
	// The leader rejoins with other protocols: a rebalance. The other member keeps
	// heartbeating (told to rejoin) but never does.
	j := f.join(joinReq(ids[0], "range", "roundrobin"))
	pending(t, j)
	f.clk.advance(time.Second)
	if code := f.heartbeat(ids[1], gen); code != codeRebalanceInProgress {
		t.Fatalf("heartbeat: %d", code)
	}
	f.clk.advance(30 * time.Second)
	f.c.Tick()
	r := wait(t, j)
	if r.ErrorCode != 0 || r.Generation != gen+1 || len(r.Members) != 1 {
		t.Fatalf("after the rebalance timeout: %v", r)
	}
	if code := f.heartbeat(ids[1], gen); code != codeUnknownMemberID {
		t.Fatalf("the straggler: %d", code)
	}
}

func TestLeaveRebalancesAtOnce(t *testing.T) {
	f := newFixture(t)
	ids, gen := f.stableGroup(2)
	resp := f.c.Leave(context.Background(), &pb.LeaveGroupRequest{Group: "g", Members: []*pb.LeavingMember{{MemberId: ids[1]}, {MemberId: "ghost"}}})
	if resp.Members[0].ErrorCode != 0 || resp.Members[1].ErrorCode != codeUnknownMemberID {
		t.Fatalf("leave: %v", resp)
	}
	if code := f.heartbeat(ids[0], gen); code != codeRebalanceInProgress {
		t.Fatalf("heartbeat after leave: %d", code)
	}
	if r := wait(t, f.join(joinReq(ids[0]))); r.Generation != gen+1 {
		t.Fatalf("rejoin: %v", r)
	}
	// The last member leaving empties the group, saved with a new generation.
	f.c.Leave(context.Background(), &pb.LeaveGroupRequest{Group: "g", Members: []*pb.LeavingMember{{MemberId: ids[0]}}})
	if rec := f.store.get("g"); rec == nil || len(rec.Members) != 0 || rec.Generation != gen+2 {
		t.Fatalf("after the last leave: %v", rec)
	}
	if d := f.c.Describe(context.Background(), []string{"g"}); d[0].State != "Empty" {
		t.Fatalf("describe: %v", d[0])
	}
	if code := f.c.CheckCommit(context.Background(), "g", -1, "", nil); code != codeNone {
		t.Fatalf("simple commit to an empty group: %d", code)
	}
	if r := f.c.Delete(context.Background(), []string{"g"}); r[0].Error != pb.ErrorCode_NONE {
		t.Fatalf("delete: %v", r)
	}
}

func TestStaticMemberRestartsWithoutRebalance(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.InitialRebalanceDelay = time.Second })
	// Two static members, gathered by the initial delay.
	ja := f.join(static(joinReq(""), "a"))
	pending(t, ja)
	jb := f.join(static(joinReq(""), "b"))
	pending(t, jb)
	f.clk.advance(2 * time.Second)
	f.c.Tick()
	ra, rb := wait(t, ja), wait(t, jb)
	if ra.ErrorCode != 0 || rb.ErrorCode != 0 {
		t.Fatalf("static joins need no member id round: %v / %v", ra, rb)
	}
	leader, gen := ra.Leader, ra.Generation
	follower, followerInstance := rb.MemberId, "b"
	if leader == rb.MemberId {
		follower, followerInstance = ra.MemberId, "a"
	}
	sf := f.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: follower})
	wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: leader, Assignments: []*pb.GroupAssignment{
		{MemberId: leader, Assignment: []byte("L")}, {MemberId: follower, Assignment: []byte("F")}}}))
	wait(t, sf)

	// The follower restarts: a new JoinGroup with no member id, same instance, and
	// other metadata bytes (clients put their last generation in them).
	restarted := static(joinReq(""), followerInstance)
	restarted.Protocols[0].Metadata = []byte("owned partitions, generation 1")
	r := wait(t, f.join(restarted))
	if r.ErrorCode != 0 || r.Generation != gen || r.MemberId == follower || r.MemberId == "" {
		t.Fatalf("static rejoin: %v, want generation %d and a new member id", r, gen)
	}
	if s := wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: r.MemberId})); string(s.Assignment) != "F" {
		t.Fatalf("the restarted member's assignment: %v", s)
	}
	if code := f.heartbeat(leader, gen); code != codeNone {
		t.Fatalf("the leader saw a rebalance: %d", code)
	}
	// The old instance is fenced.
	old := f.c.Heartbeat(context.Background(), &pb.HeartbeatRequest{Group: "g", Generation: gen, MemberId: follower, InstanceId: &followerInstance})
	if old.ErrorCode != codeFencedInstanceID {
		t.Fatalf("fenced instance heartbeat: %d", old.ErrorCode)
	}
	if code := f.c.CheckCommit(context.Background(), "g", gen, follower, &followerInstance); code != codeFencedInstanceID {
		t.Fatalf("fenced instance commit: %d", code)
	}
	// The leader restarting with KIP-814 support keeps the assignment too.
	leaderInstance := "a"
	if followerInstance == "a" {
		leaderInstance = "b"
	}
	lr := wait(t, f.join(static(joinReq(""), leaderInstance)))
	if lr.ErrorCode != 0 || lr.Generation != gen || !lr.SkipAssignment || len(lr.Members) != 2 {
		t.Fatalf("static leader rejoin: %v", lr)
	}
	if rec := f.store.get("g"); rec.Leader != lr.MemberId || rec.Generation != gen || !rec.Assigned {
		t.Fatalf("saved after the replacements: %v", rec)
	}
	// A static member that leaves by instance id rebalances the group.
	resp := f.c.Leave(context.Background(), &pb.LeaveGroupRequest{Group: "g", Members: []*pb.LeavingMember{{InstanceId: &followerInstance}}})
	if resp.Members[0].ErrorCode != 0 {
		t.Fatalf("leave by instance: %v", resp)
	}
	if code := f.heartbeat(lr.MemberId, gen); code != codeRebalanceInProgress {
		t.Fatalf("after a static leave: %d", code)
	}
}

func TestNewCoordinatorKeepsStableGroup(t *testing.T) {
	f := newFixture(t)
	ids, gen := f.stableGroup(2)
	f.restart()
	for _, id := range ids {
		if code := f.heartbeat(id, gen); code != codeNone {
			t.Fatalf("heartbeat to the new coordinator: %d", code)
		}
	}
	if s := wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: gen, MemberId: ids[1]})); string(s.Assignment) != "for "+ids[1] {
		t.Fatalf("assignment after failover: %v", s)
	}
	// Sessions restart with the new coordinator: members that never come back
	// expire.
	f.clk.advance(11 * time.Second)
	f.c.Tick()
	if code := f.heartbeat(ids[0], gen); code != codeUnknownMemberID {
		t.Fatalf("expired after failover: %d", code)
	}
}

func TestNewCoordinatorMidRebalance(t *testing.T) {
	f := newFixture(t)
	a, b := f.newMember(), f.newMember()
	ja, jb := f.join(joinReq(a)), f.join(joinReq(b))
	ra := wait(t, ja)
	wait(t, jb)
	// The join phase was saved; the leader's sync never reached the old coordinator.
	f.restart()
	if r := wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: ra.Generation, MemberId: b})); r.ErrorCode != codeRebalanceInProgress {
		t.Fatalf("sync after failover mid-rebalance: %v", r)
	}
	ja, jb = f.join(joinReq(a)), f.join(joinReq(b))
	ra2, rb2 := wait(t, ja), wait(t, jb)
	if ra2.Generation != ra.Generation+1 || rb2.Generation != ra.Generation+1 {
		t.Fatalf("generations after failover: %d %d, want %d", ra2.Generation, rb2.Generation, ra.Generation+1)
	}
}

func TestLostLeadershipAnswersWaiters(t *testing.T) {
	f := newFixture(t)
	a := f.newMember()
	b := f.newMember()
	ja := f.join(joinReq(a))
	pending(t, ja) // waits for b
	f.c.Term(7)    // another term: everything is forgotten
	if r := wait(t, ja); r.ErrorCode != codeNotCoordinator {
		t.Fatalf("waiter after a term change: %v", r)
	}
	f.store.fail = true
	ja, jb := f.join(joinReq(a)), f.join(joinReq(b))
	// Neither is known any more to the new term (the pending ids were memory only).
	if ra, rb := wait(t, ja), wait(t, jb); ra.ErrorCode != codeUnknownMemberID || rb.ErrorCode != codeUnknownMemberID {
		t.Fatalf("after the term change: %v / %v", ra, rb)
	}
	// A join phase whose save fails answers NOT_COORDINATOR.
	ja = f.join(static(joinReq(""), "x"))
	if r := wait(t, ja); r.ErrorCode != codeNotCoordinator {
		t.Fatalf("join with a failing store: %v", r)
	}
}

func TestInitialRebalanceDelayGathersMembers(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.InitialRebalanceDelay = 3 * time.Second })
	a := f.newMember()
	ja := f.join(joinReq(a))
	pending(t, ja)
	f.clk.advance(2 * time.Second)
	f.c.Tick()
	pending(t, ja)
	b := f.newMember()
	jb := f.join(joinReq(b))
	pending(t, jb)
	f.clk.advance(2 * time.Second) // the second member extended the delay
	f.c.Tick()
	pending(t, ja)
	f.clk.advance(2 * time.Second)
	f.c.Tick()
	ra, rb := wait(t, ja), wait(t, jb)
	if ra.Generation != 1 || rb.Generation != 1 || len(ra.Members)+len(rb.Members) != 2 {
		t.Fatalf("after the delay: %v / %v", ra, rb)
	}
}

func TestLeaderThatNeverSyncsIsRemoved(t *testing.T) {
	f := newFixture(t)
	a, b := f.newMember(), f.newMember()
	ja, jb := f.join(joinReq(a)), f.join(joinReq(b))
	ra := wait(t, ja)
	wait(t, jb)
	leader, other := ra.Leader, b
	if leader == b {
		other = a
	}
	sb := f.sync(&pb.SyncGroupRequest{Group: "g", Generation: ra.Generation, MemberId: other})
	pending(t, sb)
	f.clk.advance(31 * time.Second)
	f.c.Tick()
	if r := wait(t, sb); r.ErrorCode != codeRebalanceInProgress {
		t.Fatalf("waiting member when the leader never synced: %v", r)
	}
	if code := f.heartbeat(leader, ra.Generation); code != codeUnknownMemberID {
		t.Fatalf("the leader that never synced: %d", code)
	}
}

func TestSyncAnswerRestartsSessions(t *testing.T) {
	f := newFixture(t)
	a, b := f.newMember(), f.newMember()
	ja := f.join(joinReq(a))
	pending(t, ja)
	jb := f.join(joinReq(b))
	ra := wait(t, ja)
	wait(t, jb)
	other := b
	if ra.Leader == b {
		other = a
	}
	// The follower waits in SyncGroup (no heartbeats) while a slow leader takes
	// longer than the session timeout to assign.
	sf := f.sync(&pb.SyncGroupRequest{Group: "g", Generation: ra.Generation, MemberId: other})
	pending(t, sf)
	f.clk.advance(8 * time.Second)
	f.heartbeat(ra.Leader, ra.Generation) // the leader is alive, still assigning
	f.clk.advance(7 * time.Second)
	f.c.Tick()
	wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: ra.Generation, MemberId: ra.Leader}))
	wait(t, sf)
	f.c.Tick()
	if code := f.heartbeat(other, ra.Generation); code != codeNone {
		t.Fatalf("the follower after a slow sync: %d, want its session to run from the answer", code)
	}
}

func TestStaticMemberSurvivesRebalanceItMissed(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.InitialRebalanceDelay = time.Second })
	long := func(r *pb.JoinGroupRequest) *pb.JoinGroupRequest { r.SessionTimeoutMs = 120_000; return r }
	ja := f.join(long(static(joinReq(""), "a")))
	pending(t, ja)
	jb := f.join(long(static(joinReq(""), "b")))
	pending(t, jb)
	f.clk.advance(2 * time.Second)
	f.c.Tick()
	ra, rb := wait(t, ja), wait(t, jb)
	leader := ra
	if rb.MemberId == ra.Leader {
		leader = rb
	}
	wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: ra.Generation, MemberId: leader.MemberId}))
	// A third member joins; the leader rejoins; the other static member is
	// restarting and misses the whole join phase (shorter than its session).
	c := f.newMember()
	jc := f.join(joinReq(c))
	pending(t, jc)
	jl := f.join(long(static(joinReq(leader.MemberId), map[bool]string{true: "a", false: "b"}[leader == ra])))
	pending(t, jl)
	f.clk.advance(31 * time.Second)
	f.c.Tick()
	rl := wait(t, jl)
	wait(t, jc)
	if rl.ErrorCode != 0 || len(rl.Members) != 3 {
		t.Fatalf("the new generation: %v, want the absent static member kept", rl)
	}
}

func TestPendingLeaveDoesNotRebalance(t *testing.T) {
	f := newFixture(t)
	ids, gen := f.stableGroup(2)
	p := f.newMember()
	f.c.Leave(context.Background(), &pb.LeaveGroupRequest{Group: "g", Members: []*pb.LeavingMember{{MemberId: p}}})
	if code := f.heartbeat(ids[0], gen); code != codeNone {
		t.Fatalf("a member id that never joined left and the group rebalanced: %d", code)
	}
}

func TestJoinBounds(t *testing.T) {
	f := newFixture(t)
	req := joinReq("")
	for i := range maxProtocols {
		req.Protocols = append(req.Protocols, &pb.GroupProtocol{Name: fmt.Sprint(i)})
	}
	if r := wait(t, f.join(req)); r.ErrorCode != codeInvalidRequest {
		t.Fatalf("%d protocols: %v", len(req.Protocols), r)
	}
	long := string(make([]byte, maxInstanceID+1))
	if r := wait(t, f.join(static(joinReq(""), long))); r.ErrorCode != codeInvalidRequest {
		t.Fatalf("long instance id: %v", r)
	}
	// Random names leave nothing behind.
	f.c.Heartbeat(context.Background(), &pb.HeartbeatRequest{Group: "random", MemberId: "m"})
	if len(f.c.groups) != 0 {
		t.Fatalf("groups in memory after a heartbeat to nothing: %d", len(f.c.groups))
	}
}

func TestPreloadExpiresMembersThatNeverReturn(t *testing.T) {
	f := newFixture(t)
	f.stableGroup(2)
	f.restart()
	f.c.Preload(context.Background(), []string{"g"})
	f.clk.advance(11 * time.Second)
	f.c.Tick()
	// Both sessions ended at the new coordinator; the join phase that follows has
	// no one and empties the group.
	f.c.Tick()
	if rec := f.store.get("g"); len(rec.Members) != 0 {
		t.Fatalf("members after failover with no one coming back: %v", rec.Members)
	}
}

func TestStaticLeaderRestartBeforeV9(t *testing.T) {
	f := newFixture(t)
	r := wait(t, f.join(static(joinReq(""), "lead")))
	wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: r.Generation, MemberId: r.MemberId,
		Assignments: []*pb.GroupAssignment{{MemberId: r.MemberId, Assignment: []byte("L")}}}))
	old := static(joinReq(""), "lead")
	old.CanSkipAssignment = false // JoinGroup v5-v8
	r2 := wait(t, f.join(old))
	if r2.ErrorCode != 0 || r2.Generation != r.Generation || r2.Leader == r2.MemberId || len(r2.Members) != 0 {
		t.Fatalf("pre-v9 static leader restart: %v, want the same generation answered as a follower", r2)
	}
	if s := wait(t, f.sync(&pb.SyncGroupRequest{Group: "g", Generation: r.Generation, MemberId: r2.MemberId})); string(s.Assignment) != "L" {
		t.Fatalf("its assignment: %v", s)
	}
}
