package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore/groups"
)

// The classic consumer-group protocol through the agent to the metastore's group
// coordinator: raw kmsg requests for each step and error, then franz-go's own
// consumer groups.

// startGroupAgent is an agent whose coordinator completes a new group's first join
// phase at once (no group.initial.rebalance.delay), so tests need not wait for it.
func startGroupAgent(t *testing.T) *Server {
	t.Helper()
	return startAgent(t, withGroups(func(c *groups.Config) { c.InitialRebalanceDelay = 0 }))
}

// groupMember is one member of a classic group, driven by raw requests over its own
// client, as each real member has its own connection.
type groupMember struct {
	s     *Server
	cl    *kgo.Client
	group string
	meta  string // protocol metadata it joins with
	id    string
	gen   int32
}

func newGroupMember(t *testing.T, s *Server, group, meta string) *groupMember {
	return &groupMember{s: s, cl: kafkaClient(t, s), group: group, meta: meta, gen: -1}
}

// do sends req to the agent itself. It does not fail the test, so members may run
// in goroutines while their calls are held.
func (m *groupMember) do(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	return m.cl.Broker(int(m.s.NodeID())).Request(ctx, req)
}

// join sends a JoinGroup (the newest version) with the member's current id; a
// success records the id and generation.
func (m *groupMember) join(ctx context.Context) (*kmsg.JoinGroupResponse, error) {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group, req.MemberID, req.ProtocolType = m.group, m.id, "consumer"
	req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 10_000, 10_000
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", []byte(m.meta)
	req.Protocols = append(req.Protocols, p)
	raw, err := m.do(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := raw.(*kmsg.JoinGroupResponse)
	if resp.ErrorCode == 0 {
		m.id, m.gen = resp.MemberID, resp.Generation
	}
	return resp, nil
}

// joinNew joins as a new member: MEMBER_ID_REQUIRED and an id, then (maybe held, so
// in the background) the join with that id, whose answer arrives on the channel.
func (m *groupMember) joinNew(t *testing.T, ctx context.Context) <-chan joined {
	t.Helper()
	resp, err := m.join(ctx)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	wantCode(t, "join without a member id", resp.ErrorCode, kerr.MemberIDRequired)
	if resp.MemberID == "" {
		t.Fatal("MEMBER_ID_REQUIRED without a member id")
	}
	m.id = resp.MemberID
	return m.joinAsync(ctx)
}

type joined struct {
	resp *kmsg.JoinGroupResponse
	err  error
}

func (m *groupMember) joinAsync(ctx context.Context) <-chan joined {
	out := make(chan joined, 1)
	go func() {
		resp, err := m.join(ctx)
		out <- joined{resp, err}
	}()
	return out
}

// joinedOK waits for a join's answer and wants success.
func joinedOK(t *testing.T, what string, ch <-chan joined) *kmsg.JoinGroupResponse {
	t.Helper()
	j := <-ch
	if j.err != nil {
		t.Fatalf("%s: %v", what, j.err)
	}
	wantCode(t, what, j.resp.ErrorCode, nil)
	return j.resp
}

// sync sends the member's SyncGroup (v5: protocol type and name checked) with the
// given assignments (leader) or none (follower).
func (m *groupMember) sync(ctx context.Context, assignments map[string]string) (*kmsg.SyncGroupResponse, error) {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Group, req.Generation, req.MemberID = m.group, m.gen, m.id
	req.ProtocolType, req.Protocol = kmsg.StringPtr("consumer"), kmsg.StringPtr("range")
	for id, a := range assignments {
		ga := kmsg.NewSyncGroupRequestGroupAssignment()
		ga.MemberID, ga.MemberAssignment = id, []byte(a)
		req.GroupAssignment = append(req.GroupAssignment, ga)
	}
	raw, err := m.do(ctx, req)
	if err != nil {
		return nil, err
	}
	return raw.(*kmsg.SyncGroupResponse), nil
}

// heartbeat is the error code of a Heartbeat as member id at generation gen.
func (m *groupMember) heartbeat(t *testing.T, ctx context.Context, id string, gen int32) int16 {
	t.Helper()
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group, req.Generation, req.MemberID = m.group, gen, id
	raw, err := m.do(ctx, req)
	if err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	return raw.(*kmsg.HeartbeatResponse).ErrorCode
}

// awaitHeartbeat heartbeats until the answer is want (a rebalance the coordinator
// starts as it handles another request), failing after a few seconds.
func (m *groupMember) awaitHeartbeat(t *testing.T, ctx context.Context, want *kerr.Error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code := m.heartbeat(t, ctx, m.id, m.gen)
		if code == want.Code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeat of %s: %v, want %v", m.id, kerr.ErrorForCode(code), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// describeRaw is the raw DescribeGroups answer for one group.
func describeRaw(t *testing.T, s *Server, cl *kgo.Client, group string) kmsg.DescribeGroupsResponseGroup {
	t.Helper()
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{group}
	resp := send[*kmsg.DescribeGroupsResponse](t, s, cl, req)
	if len(resp.Groups) != 1 {
		t.Fatalf("describe %s: %d groups", group, len(resp.Groups))
	}
	return resp.Groups[0]
}

// listGroups is the groups ListGroups names with the given filters.
func listGroups(t *testing.T, s *Server, cl *kgo.Client, states, types []string) map[string]kmsg.ListGroupsResponseGroup {
	t.Helper()
	req := kmsg.NewPtrListGroupsRequest()
	req.StatesFilter, req.TypesFilter = states, types
	resp := send[*kmsg.ListGroupsResponse](t, s, cl, req)
	wantCode(t, "list groups", resp.ErrorCode, nil)
	out := map[string]kmsg.ListGroupsResponseGroup{}
	for _, g := range resp.Groups {
		out[g.Group] = g
	}
	return out
}

// commitAs is the error code of committing offset 1 of topic/0 as member id at gen.
func commitAs(t *testing.T, s *Server, cl *kgo.Client, group, id string, gen int32, topic string) int16 {
	t.Helper()
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.MemberID, req.Generation = group, id, gen
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Offset = 1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := send[*kmsg.OffsetCommitResponse](t, s, cl, req)
	return resp.Topics[0].Partitions[0].ErrorCode
}

// One group's life in raw requests: a member joins (MEMBER_ID_REQUIRED, then with its
// id), leads, syncs and heartbeats; a second joins, which makes the first rejoin;
// the leader hands out both assignments; commits, describe, list and delete see the
// group as Kafka shows it; members leave (batched and v0-2), and the group is
// deleted once empty.
func TestGroupClassicProtocol(t *testing.T) {
	s := startGroupAgent(t)
	ctx := testContext(t)
	createTopic(t, s, "gt", 1, nil)
	admin := kafkaClient(t, s)
	const group = "classic"

	m1 := newGroupMember(t, s, group, "meta-1")
	r := joinedOK(t, "first join", m1.joinNew(t, ctx))
	if r.LeaderID != m1.id || r.Generation < 1 || r.Protocol == nil || *r.Protocol != "range" ||
		r.ProtocolType == nil || *r.ProtocolType != "consumer" {
		t.Fatalf("first join: leader %q generation %d protocol %v type %v; want leader %q, range, consumer",
			r.LeaderID, r.Generation, r.Protocol, r.ProtocolType, m1.id)
	}
	if len(r.Members) != 1 || r.Members[0].MemberID != m1.id || string(r.Members[0].ProtocolMetadata) != "meta-1" {
		t.Fatalf("leader's members: %+v, want %s with meta-1", r.Members, m1.id)
	}
	sr, err := m1.sync(ctx, map[string]string{m1.id: "a-1"})
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "leader's sync", sr.ErrorCode, nil)
	if string(sr.MemberAssignment) != "a-1" {
		t.Fatalf("leader's assignment %q, want a-1", sr.MemberAssignment)
	}

	wantCode(t, "heartbeat", m1.heartbeat(t, ctx, m1.id, m1.gen), nil)
	wantCode(t, "heartbeat of a later generation", m1.heartbeat(t, ctx, m1.id, m1.gen+1), kerr.IllegalGeneration)
	wantCode(t, "heartbeat of an unknown member", m1.heartbeat(t, ctx, "nobody", m1.gen), kerr.UnknownMemberID)

	// A second member: its join is held until the first rejoins, which the first
	// learns from its heartbeat.
	m2 := newGroupMember(t, s, group, "meta-2")
	held := m2.joinNew(t, ctx)
	m1.awaitHeartbeat(t, ctx, kerr.RebalanceInProgress)
	r1 := joinedOK(t, "first member's rejoin", m1.joinAsync(ctx))
	r2 := joinedOK(t, "second member's join", held)
	if r1.Generation != r2.Generation || r1.Generation <= r.Generation {
		t.Fatalf("generations after the rebalance: %d and %d, want one above %d", r1.Generation, r2.Generation, r.Generation)
	}
	if r1.LeaderID != r2.LeaderID || (r1.LeaderID != m1.id && r1.LeaderID != m2.id) {
		t.Fatalf("leaders %q and %q, want one of the members", r1.LeaderID, r2.LeaderID)
	}
	leader, follower, leaderResp, followerResp := m1, m2, r1, r2
	if r1.LeaderID == m2.id {
		leader, follower, leaderResp, followerResp = m2, m1, r2, r1
	}
	metas := map[string]string{}
	for _, m := range leaderResp.Members {
		metas[m.MemberID] = string(m.ProtocolMetadata)
	}
	if len(metas) != 2 || metas[m1.id] != "meta-1" || metas[m2.id] != "meta-2" {
		t.Fatalf("leader's members: %v, want both with their metadata", metas)
	}
	if len(followerResp.Members) != 0 {
		t.Fatalf("the follower was sent the members: %+v", followerResp.Members)
	}

	// The follower's sync is held until the leader's hands out the assignments.
	followerSync := make(chan *kmsg.SyncGroupResponse, 1)
	go func() {
		resp, _ := follower.sync(ctx, nil) // nil on error
		followerSync <- resp
	}()
	assignments := map[string]string{m1.id: "a-1", m2.id: "a-2"}
	lr, err := leader.sync(ctx, assignments)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "leader's sync", lr.ErrorCode, nil)
	fr := <-followerSync
	if fr == nil {
		t.Fatal("follower's sync failed")
	}
	wantCode(t, "follower's sync", fr.ErrorCode, nil)
	if string(lr.MemberAssignment) != assignments[leader.id] || string(fr.MemberAssignment) != assignments[follower.id] {
		t.Fatalf("assignments: leader %q follower %q, want %q and %q", lr.MemberAssignment, fr.MemberAssignment,
			assignments[leader.id], assignments[follower.id])
	}
	if fr.Protocol == nil || *fr.Protocol != "range" || fr.ProtocolType == nil || *fr.ProtocolType != "consumer" {
		t.Fatalf("sync v5 names protocol %v type %v, want range and consumer", fr.Protocol, fr.ProtocolType)
	}

	d := describeRaw(t, s, admin, group)
	wantCode(t, "describe", d.ErrorCode, nil)
	if d.State != "Stable" || d.ProtocolType != "consumer" || d.Protocol != "range" || len(d.Members) != 2 {
		t.Fatalf("describe: state %s type %q protocol %q, %d members; want Stable, consumer, range, 2",
			d.State, d.ProtocolType, d.Protocol, len(d.Members))
	}
	for _, dm := range d.Members {
		want := map[string]string{m1.id: "1", m2.id: "2"}[dm.MemberID]
		if want == "" || string(dm.ProtocolMetadata) != "meta-"+want || string(dm.MemberAssignment) != "a-"+want ||
			dm.ClientID != "kgo" || dm.ClientHost != "/127.0.0.1" {
			t.Errorf("described member %s: metadata %q assignment %q client %q host %q", dm.MemberID,
				dm.ProtocolMetadata, dm.MemberAssignment, dm.ClientID, dm.ClientHost)
		}
	}

	if g, ok := listGroups(t, s, admin, []string{"stable"}, nil)[group]; !ok || g.GroupState != "Stable" ||
		g.ProtocolType != "consumer" || g.GroupType != "classic" {
		t.Fatalf("list in state Stable: %+v (listed %v)", g, ok)
	}
	if _, ok := listGroups(t, s, admin, []string{"Empty"}, nil)[group]; ok {
		t.Fatal("a Stable group listed in state Empty")
	}
	if got := listGroups(t, s, admin, nil, []string{"consumer"}); len(got) != 0 {
		t.Fatalf("groups of type consumer: %v, want none (all are classic)", got)
	}

	wantCode(t, "commit at the current generation", commitAs(t, s, admin, group, m1.id, m1.gen, "gt"), nil)
	wantCode(t, "commit at a stale generation", commitAs(t, s, admin, group, m1.id, m1.gen-1, "gt"), kerr.IllegalGeneration)
	wantCode(t, "commit as a simple consumer", commitAs(t, s, admin, group, "", -1, "gt"), kerr.UnknownMemberID)

	del := kmsg.NewPtrDeleteGroupsRequest()
	del.Groups = []string{group}
	wantCode(t, "delete a group with members", send[*kmsg.DeleteGroupsResponse](t, s, admin, del).Groups[0].ErrorCode, kerr.NonEmptyGroup)

	// The second member leaves (v3+, batched): the first is told to rejoin.
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = group
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID, lm.Reason = m2.id, kmsg.StringPtr("test done")
	leave.Members = append(leave.Members, lm)
	lresp := send[*kmsg.LeaveGroupResponse](t, s, m2.cl, leave)
	wantCode(t, "leave", lresp.ErrorCode, nil)
	if len(lresp.Members) != 1 || lresp.Members[0].MemberID != m2.id || lresp.Members[0].ErrorCode != 0 {
		t.Fatalf("leave's members: %+v", lresp.Members)
	}
	m1.awaitHeartbeat(t, ctx, kerr.RebalanceInProgress)
	joinedOK(t, "rejoin alone", m1.joinAsync(ctx))

	// The last member leaves with LeaveGroup v2 (one member id, one error); then the
	// group is empty and may be deleted.
	old := pinned(t, s, 13, 2)
	leave = kmsg.NewPtrLeaveGroupRequest()
	leave.Group, leave.MemberID = group, "nobody"
	wantCode(t, "v2 leave of an unknown member", send[*kmsg.LeaveGroupResponse](t, s, old, leave).ErrorCode, kerr.UnknownMemberID)
	leave.MemberID = m1.id
	wantCode(t, "v2 leave", send[*kmsg.LeaveGroupResponse](t, s, old, leave).ErrorCode, nil)
	if d := describeRaw(t, s, admin, group); d.State != "Empty" || len(d.Members) != 0 {
		t.Fatalf("after every member left: state %s with %d members, want Empty", d.State, len(d.Members))
	}
	wantCode(t, "delete the empty group", send[*kmsg.DeleteGroupsResponse](t, s, admin, del).Groups[0].ErrorCode, nil)
	if d := describeRaw(t, s, admin, group); d.State != "Dead" {
		t.Fatalf("after delete: state %s, want Dead", d.State)
	}
}

// Requests without a group id are refused by the agent itself; JoinGroup v0 (no
// rebalance timeout, no member id required) joins at once.
func TestGroupInvalidAndV0(t *testing.T) {
	s := startGroupAgent(t)
	cl := kafkaClient(t, s)
	for _, req := range []kmsg.Request{
		kmsg.NewPtrJoinGroupRequest(), kmsg.NewPtrSyncGroupRequest(),
		kmsg.NewPtrHeartbeatRequest(), kmsg.NewPtrLeaveGroupRequest(),
	} {
		resp := send[kmsg.Response](t, s, cl, req)
		code := map[int16]func() int16{
			11: func() int16 { return resp.(*kmsg.JoinGroupResponse).ErrorCode },
			12: func() int16 { return resp.(*kmsg.HeartbeatResponse).ErrorCode },
			13: func() int16 { return resp.(*kmsg.LeaveGroupResponse).ErrorCode },
			14: func() int16 { return resp.(*kmsg.SyncGroupResponse).ErrorCode },
		}[req.Key()]()
		wantCode(t, kmsg.NameForKey(req.Key())+" without a group", code, kerr.InvalidGroupID)
	}

	// The member gets its id with its first answer.
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group, req.ProtocolType, req.SessionTimeoutMillis = "v0-group", "consumer", 10_000
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name = "range"
	req.Protocols = append(req.Protocols, p)
	resp := send[*kmsg.JoinGroupResponse](t, s, pinned(t, s, 11, 0), req)
	wantCode(t, "join v0", resp.ErrorCode, nil)
	if resp.MemberID == "" || resp.LeaderID != resp.MemberID || resp.Protocol == nil || *resp.Protocol != "range" {
		t.Fatalf("join v0: member %q leader %q protocol %v", resp.MemberID, resp.LeaderID, resp.Protocol)
	}
}

// franz-go consumer groups over the agent: two members of one group split a topic's
// partitions between them, and DescribeGroups shows the assignment they hold.
func TestGroupKgoConsumers(t *testing.T) {
	s := startGroupAgent(t)
	createTopic(t, s, "shared", 4, nil)
	ctx := testContext(t)

	type owner struct {
		mu    sync.Mutex
		parts map[int32]bool
		cl    *kgo.Client
	}
	consumer := func() *owner {
		o := &owner{parts: map[int32]bool{}}
		change := func(add bool) func(context.Context, *kgo.Client, map[string][]int32) {
			return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				o.mu.Lock()
				defer o.mu.Unlock()
				for _, p := range m["shared"] {
					if add {
						o.parts[p] = true
					} else {
						delete(o.parts, p)
					}
				}
			}
		}
		o.cl = kafkaClient(t, s,
			kgo.ConsumerGroup("sharing"), kgo.ConsumeTopics("shared"),
			kgo.HeartbeatInterval(100*time.Millisecond),
			kgo.OnPartitionsAssigned(change(true)), kgo.OnPartitionsRevoked(change(false)), kgo.OnPartitionsLost(change(false)))
		pctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		go func() {
			for pctx.Err() == nil {
				o.cl.PollFetches(pctx)
			}
		}()
		return o
	}
	held := func(o *owner) []int32 {
		o.mu.Lock()
		defer o.mu.Unlock()
		var ps []int32
		for p := range o.parts {
			ps = append(ps, p)
		}
		slices.Sort(ps)
		return ps
	}

	a := consumer()
	b := consumer()
	deadline := time.Now().Add(20 * time.Second)
	var pa, pb []int32
	for {
		pa, pb = held(a), held(b)
		all := slices.Sorted(slices.Values(append(slices.Clone(pa), pb...)))
		if len(pa) == 2 && len(pb) == 2 && slices.Equal(all, []int32{0, 1, 2, 3}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partitions held: %v and %v, want two each, disjoint, covering 0-3", pa, pb)
		}
		time.Sleep(20 * time.Millisecond)
	}

	adm := adminClient(t, s)
	for {
		described, err := adm.DescribeGroups(ctx, "sharing")
		if err != nil {
			t.Fatal(err)
		}
		dg := described["sharing"]
		got := map[string][]int32{}
		for _, m := range dg.Members {
			if c, ok := m.Assigned.AsConsumer(); ok {
				for _, tp := range c.Topics {
					got[m.MemberID] = append(got[m.MemberID], tp.Partitions...)
				}
			}
		}
		var sets []string
		for _, ps := range got {
			sets = append(sets, fmt.Sprint(slices.Sorted(slices.Values(ps))))
		}
		slices.Sort(sets)
		want := []string{fmt.Sprint(pa), fmt.Sprint(pb)}
		slices.Sort(want)
		if dg.State == "Stable" && len(dg.Members) == 2 && slices.Equal(sets, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("described: state %s, %d members, assignments %v; want Stable with %v", dg.State, len(dg.Members), sets, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
