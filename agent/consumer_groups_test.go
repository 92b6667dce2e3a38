package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore/groups"
)

// The KIP-848 consumer group protocol through the agent to the metastore's
// coordinator: raw ConsumerGroupHeartbeat requests for each step and refusal, then
// franz-go's own server-side-assigned groups.

// startConsumerGroupAgent is an agent whose coordinator tells KIP-848 members to
// heartbeat every 100ms, so that franz-go members converge in a second.
func startConsumerGroupAgent(t *testing.T) *Server {
	t.Helper()
	return startAgent(t, withGroups(func(c *groups.Config) {
		c.InitialRebalanceDelay = 0
		c.ConsumerHeartbeatInterval = 100 * time.Millisecond
	}))
}

// cgMember is one KIP-848 member of a group subscribed to one topic, driven by raw
// heartbeats over its own client. It behaves as the protocol expects of a client:
// what an answer assigns it owns at once, and its next heartbeat reports exactly that
// as owned, which acknowledges any revocation.
type cgMember struct {
	t     *testing.T
	s     *Server
	cl    *kgo.Client
	group string
	topic string
	tid   [16]byte
	id    string
	epoch int32
	owns  []int32 // the partitions of topic of its last assignment, sorted
	// reported is what its last heartbeat told the coordinator it owns: until the
	// coordinator has seen a heartbeat without a partition, the member may still
	// hold it.
	reported []int32
	fleet    *cgFleet
}

// cgFleet checks that the coordinator never gives a partition to one member while
// another may still hold it.
type cgFleet struct {
	members []*cgMember
}

func (f *cgFleet) newMember(t *testing.T, s *Server, group, topic, id string) *cgMember {
	m := &cgMember{t: t, s: s, cl: kafkaClient(t, s), group: group, topic: topic, tid: topicIDOf(s, topic), id: id, fleet: f}
	f.members = append(f.members, m)
	return m
}

// request is a full heartbeat of the member: its subscription and what it owns.
func (m *cgMember) request() *kmsg.ConsumerGroupHeartbeatRequest {
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Group, req.MemberID, req.MemberEpoch = m.group, m.id, m.epoch
	req.RebalanceTimeoutMillis = 10_000
	req.SubscribedTopicNames = []string{m.topic}
	req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	if len(m.owns) > 0 {
		rt := kmsg.NewConsumerGroupHeartbeatRequestTopic()
		rt.TopicID, rt.Partitions = m.tid, slices.Clone(m.owns)
		req.Topics = append(req.Topics, rt)
	}
	return req
}

// send sends req as the member and returns the answer, without acting on it.
func (m *cgMember) send(req *kmsg.ConsumerGroupHeartbeatRequest) *kmsg.ConsumerGroupHeartbeatResponse {
	m.t.Helper()
	return send[*kmsg.ConsumerGroupHeartbeatResponse](m.t, m.s, m.cl, req)
}

// join sends the member's first heartbeat (epoch 0, nothing owned) and wants success.
func (m *cgMember) join() *kmsg.ConsumerGroupHeartbeatResponse {
	m.t.Helper()
	m.epoch, m.owns = 0, nil
	return m.beat()
}

// beat sends a full heartbeat, wants success, takes the answer's epoch and
// assignment and checks that the assignment overlaps no other member's.
func (m *cgMember) beat() *kmsg.ConsumerGroupHeartbeatResponse {
	m.t.Helper()
	req := m.request()
	resp := m.send(req)
	if resp.ErrorCode != 0 {
		m.t.Fatalf("heartbeat of %s at epoch %d: %v %v", m.id, m.epoch, kerr.ErrorForCode(resp.ErrorCode), deref(resp.ErrorMessage))
	}
	if resp.MemberID == nil || *resp.MemberID != m.id {
		m.t.Fatalf("heartbeat of %s: member id %v", m.id, deref(resp.MemberID))
	}
	if resp.MemberEpoch < 1 || resp.HeartbeatIntervalMillis <= 0 {
		m.t.Fatalf("heartbeat of %s: epoch %d, heartbeat interval %dms", m.id, resp.MemberEpoch, resp.HeartbeatIntervalMillis)
	}
	m.reported = slices.Clone(m.owns)
	m.epoch = resp.MemberEpoch
	if resp.Assignment != nil {
		var ps []int32
		for _, at := range resp.Assignment.Topics {
			if at.TopicID != m.tid {
				m.t.Fatalf("heartbeat of %s: assigned topic id %x, subscribed to %s (%x)", m.id, at.TopicID, m.topic, m.tid)
			}
			ps = append(ps, at.Partitions...)
		}
		slices.Sort(ps)
		m.owns = ps
		m.fleet.checkDisjoint(m)
	}
	return resp
}

// checkDisjoint fails the test if m was just given a partition another member may
// still hold: one it owns, or one it has not yet told the coordinator it gave up.
func (f *cgFleet) checkDisjoint(m *cgMember) {
	m.t.Helper()
	for _, o := range f.members {
		if o == m {
			continue
		}
		for _, p := range m.owns {
			if slices.Contains(o.owns, p) || slices.Contains(o.reported, p) {
				m.t.Fatalf("partition %d given to %s (now %v) while %s may hold it (owns %v, last reported %v)",
					p, m.id, m.owns, o.id, o.owns, o.reported)
			}
		}
	}
}

// beatUntil heartbeats until cond holds, failing after a few seconds.
func (m *cgMember) beatUntil(what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.beat()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: %s owns %v at epoch %d", what, m.id, m.owns, m.epoch)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keepalive is a heartbeat that changes nothing: no subscription, no owned list.
func keepalive(group, id string, epoch int32) *kmsg.ConsumerGroupHeartbeatRequest {
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Group, req.MemberID, req.MemberEpoch = group, id, epoch
	return req
}

func deref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

// describeConsumerRaw is the raw ConsumerGroupDescribe answer for one group.
func describeConsumerRaw(t *testing.T, s *Server, cl *kgo.Client, group string) kmsg.ConsumerGroupDescribeResponseGroup {
	t.Helper()
	req := kmsg.NewPtrConsumerGroupDescribeRequest()
	req.Groups, req.IncludeAuthorizedOperations = []string{group}, true
	resp := send[*kmsg.ConsumerGroupDescribeResponse](t, s, cl, req)
	if len(resp.Groups) != 1 || resp.Groups[0].Group != group {
		t.Fatalf("describe consumer group %q: %d groups", group, len(resp.Groups))
	}
	return resp.Groups[0]
}

// One group's life in raw heartbeats: a member joins with the id it made (v1) and gets
// every partition; a second joins and gets nothing while the first is told to revoke,
// nor after a heartbeat of the first that does not list what it owns; once the first's
// heartbeat shows it gave them up, the second gets them. No partition
// is ever given to a member while the other may hold it. ConsumerGroupDescribe and
// ListGroups show the group; a wrong epoch is fenced, an unknown member refused, and a
// leave hands everything to the one left.
func TestConsumerGroupProtocol(t *testing.T) {
	s := startConsumerGroupAgent(t)
	const group, topic = "cg", "cg-topic"
	createTopic(t, s, topic, 4, nil)
	all := []int32{0, 1, 2, 3}
	fleet := &cgFleet{}
	a := fleet.newMember(t, s, group, topic, "member-a")
	b := fleet.newMember(t, s, group, topic, "member-b")

	resp := a.join()
	if resp.Assignment == nil {
		t.Fatal("join: no assignment in the answer")
	}
	a.beatUntil("the only member gets every partition", func() bool { return slices.Equal(a.owns, all) })
	a.beat() // reports all four owned

	joinEpoch := a.epoch
	b.join()
	if b.epoch <= joinEpoch || len(b.owns) != 0 {
		t.Fatalf("second member joined at epoch %d (the first was at %d) with %v, want a new epoch and nothing yet", b.epoch, joinEpoch, b.owns)
	}

	a.beatUntil("the first member is told to revoke", func() bool { return len(a.owns) < len(all) })
	if len(a.owns) == 0 || a.epoch != joinEpoch {
		t.Fatalf("first member told to keep %v at epoch %d; want a share, and its epoch (%d) kept until it revokes", a.owns, a.epoch, joinEpoch)
	}
	var revoked []int32
	for _, p := range all {
		if !slices.Contains(a.owns, p) {
			revoked = append(revoked, p)
		}
	}
	b.beat()
	if len(b.owns) != 0 {
		t.Fatalf("second member got %v before the first gave up %v", b.owns, revoked)
	}
	// A heartbeat without an owned list says nothing about what the member gave up
	// (franz-go sends one while its revoke callback commits): the partitions stay
	// withheld, as Kafka assumes a member still owns what it has not reported gone.
	if ka := a.send(keepalive(group, a.id, a.epoch)); ka.ErrorCode != 0 || ka.MemberEpoch != joinEpoch {
		t.Fatalf("keepalive while revoking: %v at epoch %d, want success at %d", kerr.ErrorForCode(ka.ErrorCode), ka.MemberEpoch, joinEpoch)
	}
	b.beat()
	if len(b.owns) != 0 {
		t.Fatalf("second member got %v after the first sent a heartbeat without its owned partitions; it never said it gave up %v", b.owns, revoked)
	}
	a.beat() // acknowledges the revocation
	if a.epoch <= joinEpoch {
		t.Fatalf("first member at epoch %d after revoking, want past %d", a.epoch, joinEpoch)
	}
	b.beatUntil("the second member gets the revoked partitions", func() bool { return slices.Equal(b.owns, revoked) })
	if a.epoch != b.epoch {
		t.Fatalf("members at epochs %d and %d once reconciled", a.epoch, b.epoch)
	}

	// ConsumerGroupDescribe, as franz-go's kadm asks it.
	admin := kafkaClient(t, s)
	var dg kmsg.ConsumerGroupDescribeResponseGroup
	deadline := time.Now().Add(10 * time.Second)
	for {
		dg = describeConsumerRaw(t, s, admin, group)
		if dg.ErrorCode == 0 && dg.State == "Stable" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("describe: %v, state %q; want Stable", kerr.ErrorForCode(dg.ErrorCode), dg.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if dg.Epoch != a.epoch || dg.AssignmentEpoch != a.epoch || dg.AssignorName == "" || dg.AuthorizedOperations != allGroupOperations {
		t.Errorf("describe: epoch %d, assignment epoch %d, assignor %q, operations %#x; want epochs %d, an assignor, %#x",
			dg.Epoch, dg.AssignmentEpoch, dg.AssignorName, dg.AuthorizedOperations, a.epoch, allGroupOperations)
	}
	if len(dg.Members) != 2 {
		t.Fatalf("describe: %d members, want 2", len(dg.Members))
	}
	for _, dm := range dg.Members {
		m := map[string]*cgMember{a.id: a, b.id: b}[dm.MemberID]
		if m == nil {
			t.Fatalf("describe: unknown member %q", dm.MemberID)
		}
		if dm.MemberEpoch != m.epoch || dm.MemberType != 1 || dm.ClientID != "kgo" || !strings.HasPrefix(dm.ClientHost, "/127.0.0.1") ||
			!slices.Equal(dm.SubscribedTopics, []string{topic}) || dm.SubscribedTopicRegex != nil || dm.InstanceID != nil || dm.RackID != nil {
			t.Errorf("describe: member %s: epoch %d, type %d, client %q %q, topics %v, regex %v, instance %v, rack %v; want epoch %d, a consumer from kgo on /127.0.0.1 subscribed to %s",
				m.id, dm.MemberEpoch, dm.MemberType, dm.ClientID, dm.ClientHost, dm.SubscribedTopics, dm.SubscribedTopicRegex, dm.InstanceID, dm.RackID, m.epoch, topic)
		}
		for what, asg := range map[string]kmsg.Assignment{"assignment": dm.Assignment, "target": dm.TargetAssignment} {
			if len(asg.TopicPartitions) != 1 || asg.TopicPartitions[0].Topic != topic || asg.TopicPartitions[0].TopicID != m.tid ||
				!slices.Equal(slices.Sorted(slices.Values(asg.TopicPartitions[0].Partitions)), m.owns) {
				t.Errorf("describe: member %s: %s %+v, want %s (%x) %v", m.id, what, asg.TopicPartitions, topic, m.tid, m.owns)
			}
		}
	}
	unknown := describeConsumerRaw(t, s, admin, "no-such-group")
	wantCode(t, "describe an unknown group", unknown.ErrorCode, kerr.GroupIDNotFound)
	wantCode(t, "describe without a group id", describeConsumerRaw(t, s, admin, "").ErrorCode, kerr.InvalidGroupID)

	// ListGroups v5 filters by type.
	if g, ok := listGroups(t, s, admin, nil, []string{"consumer"})[group]; !ok || g.GroupType != "consumer" || g.ProtocolType != "consumer" || g.GroupState != "Stable" {
		t.Errorf("list consumer groups: %s listed %v as %+v; want a Stable consumer group", group, ok, g)
	}
	if g, ok := listGroups(t, s, admin, []string{"stable"}, []string{"CONSUMER"})[group]; !ok {
		t.Errorf("list Stable consumer groups (filters in other cases): %s not listed (%+v)", group, g)
	}
	if g, ok := listGroups(t, s, admin, nil, []string{"classic"})[group]; ok {
		t.Errorf("list classic groups: the consumer group %s is listed: %+v", group, g)
	}
	if g, ok := listGroups(t, s, admin, nil, nil)[group]; !ok || g.GroupType != "consumer" {
		t.Errorf("list every group: %s listed %v as %+v; want type consumer", group, ok, g)
	}

	// Refusals change nothing: heartbeats without a subscription or owned list are
	// "unchanged".
	wantCode(t, "heartbeat at a future epoch", a.send(keepalive(group, a.id, a.epoch+10)).ErrorCode, kerr.FencedMemberEpoch)
	wantCode(t, "heartbeat at an old epoch", a.send(keepalive(group, a.id, joinEpoch)).ErrorCode, kerr.FencedMemberEpoch)
	wantCode(t, "heartbeat of an unknown member", a.send(keepalive(group, "no-such-member", a.epoch)).ErrorCode, kerr.UnknownMemberID)
	if ka := a.send(keepalive(group, a.id, a.epoch)); ka.ErrorCode != 0 || ka.MemberEpoch != a.epoch || ka.Assignment != nil {
		t.Fatalf("keepalive after the refusals: %v, epoch %d (want %d), assignment %v (want none: nothing changed)",
			kerr.ErrorForCode(ka.ErrorCode), ka.MemberEpoch, a.epoch, ka.Assignment)
	}

	// The first member leaves; the second ends with everything.
	leave := a.send(keepalive(group, a.id, -1))
	wantCode(t, "leave", leave.ErrorCode, nil)
	if leave.MemberEpoch != -1 {
		t.Fatalf("leave: epoch %d, want -1", leave.MemberEpoch)
	}
	a.owns, a.reported = nil, nil
	b.beatUntil("the member left gets every partition", func() bool { return slices.Equal(b.owns, all) })
	wantCode(t, "heartbeat of the member that left", a.send(keepalive(group, a.id, a.epoch)).ErrorCode, kerr.UnknownMemberID)
	if dg := describeConsumerRaw(t, s, admin, group); len(dg.Members) != 1 || dg.Members[0].MemberID != b.id {
		t.Errorf("describe after the leave: %d members, want only %s", len(dg.Members), b.id)
	}
}

// Requests Kafka refuses for their shape are INVALID_REQUEST with Kafka's message,
// from the agent itself; a v0 member joining without an id is given one.
func TestConsumerGroupHeartbeatInvalid(t *testing.T) {
	s := startConsumerGroupAgent(t)
	createTopic(t, s, "cg-invalid", 1, nil)
	cl := kafkaClient(t, s)
	join := func(mutate func(*kmsg.ConsumerGroupHeartbeatRequest)) *kmsg.ConsumerGroupHeartbeatRequest {
		req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
		req.Group, req.MemberID, req.RebalanceTimeoutMillis = "cg-invalid", "member", 10_000
		req.SubscribedTopicNames = []string{"cg-invalid"}
		req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{}
		mutate(req)
		return req
	}
	for _, tc := range []struct {
		name, msg string
		req       *kmsg.ConsumerGroupHeartbeatRequest
	}{
		{"no group id", "GroupId can't be empty.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.Group = "" })},
		{"no member id (v1)", "MemberId can't be empty.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.MemberID = "" })},
		{"no member id at epoch 3", "MemberId can't be empty.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.MemberID, r.MemberEpoch = "", 3 })},
		{"empty instance id", "InstanceId can't be empty.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.InstanceID = kmsg.StringPtr("") })},
		{"empty rack id", "RackId can't be empty.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.RackID = kmsg.StringPtr("") })},
		{"join without a rebalance timeout", "RebalanceTimeoutMs must be provided in first request.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.RebalanceTimeoutMillis = -1 })},
		{"join with owned partitions", "TopicPartitions must be empty when (re-)joining.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) {
			r.Topics = append(r.Topics, kmsg.ConsumerGroupHeartbeatRequestTopic{TopicID: topicIDOf(s, "cg-invalid"), Partitions: []int32{0}})
		})},
		{"join with a null owned list", "TopicPartitions must be empty when (re-)joining.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.Topics = nil })},
		{"join without a subscription", "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
			join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.SubscribedTopicNames = nil })},
		{"static leave without an instance id", "InstanceId can't be null.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.MemberEpoch = -2 })},
		{"epoch -3", "MemberEpoch is invalid.", join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.MemberEpoch = -3 })},
	} {
		resp := send[*kmsg.ConsumerGroupHeartbeatResponse](t, s, cl, tc.req)
		if resp.ErrorCode != kerr.InvalidRequest.Code || deref(resp.ErrorMessage) != tc.msg {
			t.Errorf("%s: %v %q, want INVALID_REQUEST %q", tc.name, kerr.ErrorForCode(resp.ErrorCode), deref(resp.ErrorMessage), tc.msg)
		}
	}
	// Nothing above reached the coordinator: the group does not exist.
	wantCode(t, "describe after the refusals", describeConsumerRaw(t, s, cl, "cg-invalid").ErrorCode, kerr.GroupIDNotFound)

	// v0: the coordinator makes the member id.
	req := join(func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.MemberID = "" })
	resp := send[*kmsg.ConsumerGroupHeartbeatResponse](t, s, pinned(t, s, 68, 0), req)
	wantCode(t, "v0 join without a member id", resp.ErrorCode, nil)
	if resp.MemberID == nil || *resp.MemberID == "" || resp.MemberEpoch < 1 {
		t.Fatalf("v0 join: member id %v, epoch %d; want an id and an epoch", deref(resp.MemberID), resp.MemberEpoch)
	}
	if resp.Assignment == nil || len(resp.Assignment.Topics) != 1 || !slices.Equal(resp.Assignment.Topics[0].Partitions, []int32{0}) {
		t.Fatalf("v0 join: assignment %+v, want partition 0", resp.Assignment)
	}
}

// kgoMember is a franz-go member of a KIP-848 group (its server-side balancer, over
// the range assignor) that polls in the background and keeps what its callbacks and
// fetches tell: the partitions it owns and the offsets it received.
type kgoMember struct {
	name string
	cl   *kgo.Client
	stop context.CancelFunc
	done chan struct{}
	once sync.Once

	mu       sync.Mutex
	owns     map[int32]bool
	received map[int32][]int64
	errs     []error
}

// kgoGroup is franz-go members of one group on one topic; it records a partition
// assigned to a member while another still owns it.
type kgoGroup struct {
	t            *testing.T
	s            *Server
	group, topic string

	mu       sync.Mutex
	members  []*kgoMember
	overlaps []string
}

func (g *kgoGroup) start(name string) *kgoMember {
	t := g.t
	m := &kgoMember{name: name, owns: map[int32]bool{}, received: map[int32][]int64{}, done: make(chan struct{})}
	g.mu.Lock()
	g.members = append(g.members, m)
	g.mu.Unlock()
	assigned := func(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
		for _, p := range tps[g.topic] {
			if other := g.ownerOtherThan(m, p); other != "" {
				g.mu.Lock()
				g.overlaps = append(g.overlaps, fmt.Sprintf("partition %d assigned to %s while %s owned it", p, name, other))
				g.mu.Unlock()
			}
			m.mu.Lock()
			m.owns[p] = true
			m.mu.Unlock()
		}
	}
	gone := func(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range tps[g.topic] {
			delete(m.owns, p)
		}
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(g.s.AdvertiseAddr()), kgo.ClientID(name),
		kgo.ConsumerGroup(g.group), kgo.ConsumeTopics(g.topic),
		kgo.Balancers(kgo.RangeBalancer()), kgo.ServerSideBalancer(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.OnPartitionsAssigned(assigned), kgo.OnPartitionsRevoked(gone), kgo.OnPartitionsLost(gone))
	if err != nil {
		t.Fatalf("kafka client %s: %v", name, err)
	}
	m.cl = cl
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	go func() {
		defer close(m.done)
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			m.mu.Lock()
			fs.EachError(func(_ string, _ int32, err error) { m.errs = append(m.errs, err) })
			fs.EachRecord(func(r *kgo.Record) { m.received[r.Partition] = append(m.received[r.Partition], r.Offset) })
			m.mu.Unlock()
		}
	}()
	t.Cleanup(m.close)
	return m
}

// close stops polling and closes the client, which leaves the group.
func (m *kgoMember) close() {
	m.once.Do(func() {
		m.stop()
		<-m.done
		m.cl.Close()
		m.mu.Lock()
		clear(m.owns)
		m.mu.Unlock()
	})
}

func (g *kgoGroup) ownerOtherThan(m *kgoMember, p int32) string {
	g.mu.Lock()
	members := slices.Clone(g.members)
	g.mu.Unlock()
	for _, o := range members {
		if o != m && slices.Contains(o.held(), p) {
			return o.name
		}
	}
	return ""
}

// held is what the member owns, sorted.
func (m *kgoMember) held() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.owns))
}

// receivedFrom is a copy of the offsets received per partition, in order.
func (m *kgoMember) receivedFrom() map[int32][]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[int32][]int64{}
	for p, o := range m.received {
		out[p] = slices.Clone(o)
	}
	return out
}

// waitFor polls cond until it returns "", failing with its last answer and every
// member's errors after 30 seconds.
func (g *kgoGroup) waitFor(what string, cond func() string) {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			g.mu.Lock()
			for _, m := range g.members {
				m.mu.Lock()
				g.t.Logf("%s: errors %v", m.name, m.errs)
				m.mu.Unlock()
			}
			g.mu.Unlock()
			g.t.Fatalf("%s: %s", what, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shares is "" when ms each own something and between them every partition of n,
// once each.
func shares(n int32, ms ...*kgoMember) string {
	var every []int32
	for _, m := range ms {
		ps := m.held()
		if len(ps) == 0 {
			return m.name + " owns nothing"
		}
		every = append(every, ps...)
	}
	slices.Sort(every)
	want := make([]int32, n)
	for i := range want {
		want[i] = int32(i)
	}
	if !slices.Equal(every, want) {
		return fmt.Sprintf("owned between them: %v", every)
	}
	return ""
}

// consumed is "" when m received offsets up to upTo-1 of every partition it owns and
// nothing of any other.
func consumed(m *kgoMember, upTo int64) string {
	owns, got := m.held(), m.receivedFrom()
	for _, p := range owns {
		if o := got[p]; len(o) == 0 || o[len(o)-1] != upTo-1 {
			return fmt.Sprintf("%s received offsets %v of partition %d, want up to %d", m.name, o, p, upTo-1)
		}
	}
	for p := range got {
		if !slices.Contains(owns, p) {
			return fmt.Sprintf("%s received from partition %d, it owns %v", m.name, p, owns)
		}
	}
	return ""
}

// franz-go members with its server-side balancer (KIP-848, since the agent offers
// ConsumerGroupHeartbeat v1): two split a six-partition topic, each consumes exactly
// its share and commits it; when one closes, the other takes everything, resuming
// the closed one's partitions from its commits. No partition is ever assigned to one
// while the other owns it.
func TestConsumerGroupKgo(t *testing.T) {
	s := startConsumerGroupAgent(t)
	const partitions = 6
	g := &kgoGroup{t: t, s: s, group: "cg-kgo", topic: "cg-kgo-topic"}
	createTopic(t, s, g.topic, partitions, nil)
	ctx := testContext(t)
	a, b := g.start("cg-kgo-a"), g.start("cg-kgo-b")
	g.waitFor("two members share the topic", func() string { return shares(partitions, a, b) })
	// Through KIP-848, not the classic protocol: the coordinator knows them as
	// consumer-protocol members holding what they say they own.
	admin := kafkaClient(t, s)
	g.waitFor("ConsumerGroupDescribe shows what the members own", func() string {
		dg := describeConsumerRaw(t, s, admin, g.group)
		if dg.ErrorCode != 0 || dg.State != "Stable" || len(dg.Members) != 2 {
			return fmt.Sprintf("%v, state %q, %d members", kerr.ErrorForCode(dg.ErrorCode), dg.State, len(dg.Members))
		}
		for _, dm := range dg.Members {
			var ps []int32
			for _, tp := range dm.Assignment.TopicPartitions {
				ps = append(ps, tp.Partitions...)
			}
			slices.Sort(ps)
			m := map[string]*kgoMember{a.name: a, b.name: b}[dm.ClientID]
			if m == nil || dm.MemberType != 1 || !slices.Equal(ps, m.held()) {
				return fmt.Sprintf("member %s of client %s (type %d) assigned %v", dm.MemberID, dm.ClientID, dm.MemberType, ps)
			}
		}
		return ""
	})

	producer := kafkaClient(t, s, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce := func(perPartition int) {
		t.Helper()
		var recs []*kgo.Record
		for p := range int32(partitions) {
			for range perPartition {
				recs = append(recs, &kgo.Record{Topic: g.topic, Partition: p, Value: []byte("v")})
			}
		}
		if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	committed := func(want int64) string {
		offsets, err := adminClient(t, s).FetchOffsets(ctx, g.group)
		if err == nil {
			err = offsets.Error()
		}
		if err != nil {
			return "fetch offsets: " + err.Error()
		}
		for p := range int32(partitions) {
			if o, ok := offsets.Lookup(g.topic, p); !ok || o.At != want {
				return fmt.Sprintf("partition %d: committed %d (listed %v), want %d", p, o.At, ok, want)
			}
		}
		return ""
	}
	commit := func(want int64, ms ...*kgoMember) func() string {
		return func() string {
			for _, m := range ms {
				if err := m.cl.CommitUncommittedOffsets(ctx); err != nil {
					return fmt.Sprintf("%s commits: %v", m.name, err)
				}
			}
			return committed(want)
		}
	}

	produce(5)
	g.waitFor("each member consumes exactly its share", func() string {
		if why := shares(partitions, a, b); why != "" {
			return why
		}
		if why := consumed(a, 5); why != "" {
			return why
		}
		return consumed(b, 5)
	})
	g.waitFor("both members commit", commit(5, a, b))
	aHad := a.held()

	a.close()
	g.waitFor("the member left owns every partition", func() string { return shares(partitions, b) })
	produce(5)
	g.waitFor("the member left consumes every partition", func() string { return consumed(b, 10) })
	got := b.receivedFrom()
	for _, p := range aHad {
		if o := got[p]; len(o) == 0 || o[0] != 5 {
			t.Errorf("%s read partition %d, which %s had, at offsets %v; want from %s's commit (5)", b.name, p, a.name, o, a.name)
		}
	}
	g.waitFor("the member left commits", commit(10, b))
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, o := range g.overlaps {
		t.Error(o)
	}
}
