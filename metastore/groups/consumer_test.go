package groups

import (
	"context"
	"testing"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

const topicA = "aaaaaaaaaaaaaaaa" // a 16-byte topic id

func consumerFixture(t *testing.T, partitions int32) *fixture {
	f := newFixture(t)
	f.store.topics = []TopicMeta{{Name: "a", ID: topicA, Partitions: partitions}}
	return f
}

// cmem is a KIP-848 client as the protocol expects one to behave: it owns what
// the last answer assigned it and says so in every heartbeat.
type cmem struct {
	f     *fixture
	id    string
	epoch int32
	owned []int32
}

func (m *cmem) beat() *pb.ConsumerHeartbeatResponse {
	m.f.t.Helper()
	req := &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: m.id, MemberEpoch: m.epoch, RebalanceTimeoutMs: 30_000,
		OwnedSet: true, Owned: []*pb.TopicPartitions{{TopicId: []byte(topicA), Partitions: m.owned}}}
	if m.epoch == 0 {
		req.SubscriptionSet, req.SubscribedTopics = true, []string{"a"}
	}
	r := m.f.c.ConsumerHeartbeat(context.Background(), req)
	if r.ErrorCode != 0 {
		m.f.t.Fatalf("heartbeat of %s: %v", m.id, r)
	}
	m.epoch = r.MemberEpoch
	if r.HasAssignment {
		m.owned = nil
		for _, tp := range r.Assignment {
			m.owned = append(m.owned, tp.Partitions...)
		}
	}
	return r
}

// checkDisjoint fails if two members own a partition.
func checkDisjoint(t *testing.T, ms ...*cmem) int {
	t.Helper()
	seen := map[int32]string{}
	for _, m := range ms {
		for _, p := range m.owned {
			if o, ok := seen[p]; ok {
				t.Fatalf("partition %d owned by %s and %s", p, o, m.id)
			}
			seen[p] = m.id
		}
	}
	return len(seen)
}

func TestConsumerGroupReconciles(t *testing.T) {
	f := consumerFixture(t, 6)
	a := &cmem{f: f, id: "member-a"}
	r := a.beat()
	if r.MemberEpoch != 1 || len(a.owned) != 6 || r.HeartbeatIntervalMs != 5000 {
		t.Fatalf("first member: %v", r)
	}
	b := &cmem{f: f, id: "member-b"}
	b.beat()
	if len(b.owned) != 0 {
		t.Fatalf("b got partitions a still owns: %v", b.owned)
	}
	checkDisjoint(t, a, b)
	// a is told to revoke three: its assignment shrinks, its epoch stays.
	a.beat()
	if len(a.owned) != 3 || a.epoch != 1 {
		t.Fatalf("a after the target moved: owned %v epoch %d", a.owned, a.epoch)
	}
	checkDisjoint(t, a, b)
	// Its next heartbeat acknowledges the revocation: it moves to the new epoch.
	a.beat()
	if a.epoch != 2 {
		t.Fatalf("a's epoch after revoking: %d", a.epoch)
	}
	b.beat()
	if len(b.owned) != 3 || checkDisjoint(t, a, b) != 6 {
		t.Fatalf("b after a released: %v / %v", b.owned, a.owned)
	}
	d := f.c.ConsumerDescribe(context.Background(), []string{"g"})[0]
	if d.State != "Stable" || d.GroupEpoch != 2 || len(d.Members) != 2 {
		t.Fatalf("describe: %v", d)
	}
	// Errors: a stale epoch, an unknown member, a classic join.
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: a.id, MemberEpoch: 7}); r.ErrorCode != codeFencedMemberEpoch {
		t.Fatalf("wrong epoch: %v", r)
	}
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "ghost", MemberEpoch: 3}); r.ErrorCode != codeUnknownMemberID {
		t.Fatalf("unknown member: %v", r)
	}
	if r := wait(t, f.join(joinReq(""))); r.ErrorCode != codeInconsistentGroupProtocol {
		t.Fatalf("classic join into a consumer group: %v", r)
	}
	if code := f.c.CheckCommit(context.Background(), "g", a.epoch, a.id, nil); code != codeNone {
		t.Fatalf("commit: %d", code)
	}
	if code := f.c.CheckCommit(context.Background(), "g", a.epoch+5, a.id, nil); code != codeStaleMemberEpoch {
		t.Fatalf("stale commit: %d", code)
	}
	// b leaves: a gets everything back.
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: b.id, MemberEpoch: -1}); r.ErrorCode != 0 || r.MemberEpoch != -1 {
		t.Fatalf("leave: %v", r)
	}
	a.beat()
	if len(a.owned) != 6 {
		t.Fatalf("a after b left: %v", a.owned)
	}
	// The state survives a new coordinator.
	f.restart()
	a.beat()
	if len(a.owned) != 6 || a.epoch != 3 {
		t.Fatalf("after failover: owned %v epoch %d", a.owned, a.epoch)
	}
}

func TestConsumerGroupNoDoubleOwnership(t *testing.T) {
	f := consumerFixture(t, 12)
	var ms []*cmem
	for i := range 4 {
		ms = append(ms, &cmem{f: f, id: string(rune('a' + i))})
		// Members heartbeat in every order while others join: never two owners.
		for round := range 3 {
			for j := range ms {
				ms[(j+round)%len(ms)].beat()
				checkDisjoint(t, ms...)
			}
		}
	}
	for range 3 {
		for _, m := range ms {
			m.beat()
		}
	}
	if n := checkDisjoint(t, ms...); n != 12 {
		t.Fatalf("owned %d of 12 partitions after settling", n)
	}
	for _, m := range ms {
		if len(m.owned) != 3 {
			t.Fatalf("%s owns %v, want 3", m.id, m.owned)
		}
	}
	// Partitions added: the group epoch moves and the new ones are assigned.
	f.store.topics[0].Partitions = 16
	f.clk.advance(2 * time.Second) // past the topic cache
	for range 4 {
		for _, m := range ms {
			m.beat()
			checkDisjoint(t, ms...)
		}
	}
	if n := checkDisjoint(t, ms...); n != 16 {
		t.Fatalf("owned %d of 16 partitions after growing", n)
	}
}

func TestConsumerSessionAndRevocationTimeouts(t *testing.T) {
	f := consumerFixture(t, 4)
	a, b := &cmem{f: f, id: "a"}, &cmem{f: f, id: "b"}
	a.beat()
	b.beat()
	// a never acknowledges its revocation (it stops heartbeating): after its
	// session it is removed and b gets everything.
	f.clk.advance(46 * time.Second)
	b.beat() // b's own session restarted just now
	f.c.Tick()
	for range 3 {
		b.beat()
	}
	if len(b.owned) != 4 {
		t.Fatalf("b after a's session ended: %v", b.owned)
	}
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "a", MemberEpoch: a.epoch}); r.ErrorCode != codeUnknownMemberID {
		t.Fatalf("expired member: %v", r)
	}
}

func TestConsumerStaticMemberRestart(t *testing.T) {
	f := consumerFixture(t, 4)
	inst := "i1"
	join := func(id string) *pb.ConsumerHeartbeatResponse {
		return f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: id, MemberEpoch: 0,
			InstanceId: &inst, SubscriptionSet: true, SubscribedTopics: []string{"a"}, RebalanceTimeoutMs: 30_000})
	}
	r := join("first")
	if r.ErrorCode != 0 || len(r.Assignment) != 1 {
		t.Fatalf("join: %v", r)
	}
	// A second instance while the first is live is refused.
	if r := join("second"); r.ErrorCode != codeUnreleasedInstanceID {
		t.Fatalf("duplicate instance: %v", r)
	}
	// The first leaves temporarily (-2); the restart takes over its assignment and
	// epoch without a new group epoch.
	f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "first", MemberEpoch: -2, InstanceId: &inst})
	r2 := join("second")
	if r2.ErrorCode != 0 || r2.MemberEpoch != r.MemberEpoch || len(r2.Assignment[0].Partitions) != 4 {
		t.Fatalf("restart: %v (before %v)", r2, r)
	}
}

func TestConsumerBadInput(t *testing.T) {
	f := consumerFixture(t, 4)
	bad := []*pb.ConsumerHeartbeatRequest{
		{Group: "", MemberId: "m"},
		{Group: "g", MemberId: "", MemberEpoch: 0},
		{Group: "g", MemberId: "m", MemberEpoch: -3},
		{Group: "g", MemberId: "m", MemberEpoch: 0, SubscriptionSet: true, SubscribedTopics: []string{""}},
		{Group: "g", MemberId: "m", MemberEpoch: 0},
	}
	for i, req := range bad {
		if r := f.c.ConsumerHeartbeat(context.Background(), req); r.ErrorCode != codeInvalidRequest {
			t.Errorf("bad request %d: %v", i, r)
		}
	}
	assignor := "sticky-ish"
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "m", ServerAssignor: &assignor,
		SubscriptionSet: true, SubscribedTopics: []string{"a"}}); r.ErrorCode != codeUnsupportedAssignor {
		t.Errorf("unknown assignor: %v", r)
	}
	re := "(["
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "m", SubscribedRegex: &re}); r.ErrorCode != codeInvalidRegex {
		t.Errorf("bad regex: %v", r)
	}
	// A classic group with members refuses consumer members.
	f.stableGroup(1)
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "m",
		SubscriptionSet: true, SubscribedTopics: []string{"a"}}); r.ErrorCode != codeInconsistentGroupProtocol {
		t.Errorf("consumer member in a classic group: %v", r)
	}
}

func TestAssignors(t *testing.T) {
	ids := []string{"a", "b", "c"}
	sub := map[string][]TopicMeta{}
	for _, id := range ids {
		sub[id] = []TopicMeta{{Name: "x", ID: "x", Partitions: 7}, {Name: "y", ID: "y", Partitions: 2}}
	}
	r := assignRange(ids, sub)
	if len(r["a"]) != 4 || len(r["b"]) != 3 || len(r["c"]) != 2 || !r["a"][tpKey{"x", 0}] || !r["a"][tpKey{"x", 2}] || !r["c"][tpKey{"x", 6}] {
		t.Fatalf("range: %v", r)
	}
	u := assignUniform(ids, sub, nil)
	for _, id := range ids {
		if len(u[id]) != 3 {
			t.Fatalf("uniform: %v", u)
		}
	}
	// Sticky: a new member takes only what it needs; the others keep the rest.
	ids4 := append(ids, "d")
	sub["d"] = sub["a"]
	u2 := assignUniform(ids4, sub, u)
	kept := 0
	for _, id := range ids {
		for k := range u2[id] {
			if u[id][k] {
				kept++
			}
		}
	}
	if kept < 9-3 || len(u2["d"]) < 2 {
		t.Fatalf("uniform after a join kept %d of 9, d has %d", kept, len(u2["d"]))
	}
}

func TestConsumerStaticFencing(t *testing.T) {
	f := consumerFixture(t, 4)
	i1, i2 := "i1", "i2"
	hb := func(id string, epoch int32, inst *string) *pb.ConsumerHeartbeatResponse {
		return f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: id, MemberEpoch: epoch,
			InstanceId: inst, SubscriptionSet: true, SubscribedTopics: []string{"a"}, RebalanceTimeoutMs: 30_000})
	}
	first := hb("first", 0, &i1)
	hb("first", -2, &i1)
	// The old incarnation is done: its heartbeats are fenced.
	if r := hb("first", first.MemberEpoch, &i1); r.ErrorCode != codeFencedMemberEpoch {
		t.Fatalf("heartbeat after -2: %v", r)
	}
	second := hb("second", 0, &i1)
	if second.ErrorCode != 0 || len(second.Assignment) != 1 {
		t.Fatalf("takeover: %v", second)
	}
	// A late leave of the old incarnation cannot remove the new one.
	if r := hb("first", -1, &i1); r.ErrorCode != codeFencedInstanceID {
		t.Fatalf("late leave of the old incarnation: %v", r)
	}
	// A join reusing a live member's id under another instance is refused (and
	// does not crash anything later).
	d := hb("d", 0, &i2)
	if r := hb("second", 0, &i2); r.ErrorCode != codeFencedInstanceID {
		t.Fatalf("join with a live member's id: %v", r)
	}
	if r := hb("d", d.MemberEpoch, &i2); r.ErrorCode != 0 {
		t.Fatalf("d after the refused join: %v", r)
	}
}

func TestConsumerCommitNeedsCurrentEpoch(t *testing.T) {
	f := consumerFixture(t, 4)
	a, b := &cmem{f: f, id: "a"}, &cmem{f: f, id: "b"}
	a.beat()
	b.beat()
	old := a.epoch
	a.beat() // revoke
	a.beat() // acknowledged: a moves on
	if a.epoch == old {
		t.Fatal("a did not move to the new epoch")
	}
	if code := f.c.CheckCommit(context.Background(), "g", old, "a", nil); code != codeStaleMemberEpoch {
		t.Fatalf("commit with the previous epoch: %d, want STALE_MEMBER_EPOCH", code)
	}
}

func TestConsumerFullRequestGetsAssignment(t *testing.T) {
	f := consumerFixture(t, 2)
	a := &cmem{f: f, id: "a"}
	a.beat()
	r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "a", MemberEpoch: a.epoch,
		RebalanceTimeoutMs: 30_000, SubscriptionSet: true, SubscribedTopics: []string{"a"},
		OwnedSet: true, Owned: []*pb.TopicPartitions{{TopicId: []byte(topicA), Partitions: a.owned}}})
	if !r.HasAssignment {
		t.Fatalf("full heartbeat without a change: %v, want the assignment", r)
	}
	keepalive := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "a", MemberEpoch: a.epoch, RebalanceTimeoutMs: -1})
	if keepalive.HasAssignment || keepalive.ErrorCode != 0 {
		t.Fatalf("keepalive: %v", keepalive)
	}
}

func TestConsumerRefusalsLeaveNoGroup(t *testing.T) {
	f := consumerFixture(t, 2)
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "nope", MemberId: "m", MemberEpoch: 5}); r.ErrorCode != codeGroupIDNotFound {
		t.Fatalf("heartbeat to no group: %v", r)
	}
	if r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "nope2", MemberId: "m", MemberEpoch: 0}); r.ErrorCode != codeInvalidRequest {
		t.Fatalf("join without a subscription: %v", r)
	}
	if n := len(f.c.Loaded()); n != 0 {
		t.Fatalf("%d groups left in memory by refused heartbeats", n)
	}
}

func TestConsumerRegexMatchesWholeNames(t *testing.T) {
	f := newFixture(t)
	f.store.topics = []TopicMeta{{Name: "orders", ID: "oooooooooooooooo", Partitions: 1}, {Name: "orders-dlq", ID: "dddddddddddddddd", Partitions: 1}}
	re := "orders"
	r := f.c.ConsumerHeartbeat(context.Background(), &pb.ConsumerHeartbeatRequest{Group: "g", MemberId: "m", SubscribedRegex: &re, RebalanceTimeoutMs: 30_000})
	if r.ErrorCode != 0 || len(r.Assignment) != 1 || string(r.Assignment[0].TopicId) != "oooooooooooooooo" {
		t.Fatalf("regex %q assigned %v", re, r.Assignment)
	}
}
