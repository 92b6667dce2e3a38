package groups

import (
	"context"
	"hash/fnv"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// KIP-848 consumer groups: the coordinator assigns partitions itself (server-side
// assignors "uniform" and "range") and every member converges on its target
// through heartbeats.
//
// Epochs: the group epoch grows with every change of membership, subscriptions or
// subscribed topics' partitions; the assignment epoch is the group epoch the
// target assignment was computed for (here always computed at once, so the two
// are equal after every heartbeat). A member's epoch reaches the assignment epoch
// once it has given up the partitions its target no longer holds.
//
// Reconciliation keeps one owner per partition: a member is first told to revoke
// (its assignment shrinks to what it keeps, its epoch stays), and only when a later
// heartbeat shows it no longer owns them are they handed to their new owner; a
// partition still owned or being revoked by another member is withheld until it is
// released. A member that does not revoke within its rebalance timeout is fenced.

// Kafka error codes of the consumer protocol.
const (
	codeFencedMemberEpoch     int32 = 110
	codeUnreleasedInstanceID  int32 = 111
	codeUnsupportedAssignor   int32 = 112
	codeStaleMemberEpoch      int32 = 113
	codeInvalidRegex          int32 = 122
	defaultAssignor                 = "uniform"
	maxSubscribedTopics             = 10_000
	topicCacheFor                   = time.Second
	consumerProtocolType            = "consumer"
	consumerLeaveEpoch        int32 = -1
	consumerStaticLeaveEpoch  int32 = -2
	consumerJoinEpoch         int32 = 0
	maxConsumerRegexLen             = 1 << 10
	maxConsumerTopicNameBytes       = 249
)

// TopicMeta is what an assignor needs of a topic.
type TopicMeta struct {
	Name       string
	ID         string // 16 bytes
	Partitions int32
}

type tpKey struct {
	id string
	p  int32
}

type partSet map[tpKey]bool

type cmember struct {
	id         string
	instanceID *string
	rack       string
	clientID   string
	clientHost string
	topics     []string
	regex      string
	assignor   string
	rebalance  time.Duration
	session    time.Duration
	epoch      int32
	prevEpoch  int32
	assigned   partSet
	revoking   partSet
	target     partSet
	leftTemp   bool

	deadline       time.Time
	revokeDeadline time.Time
}

type consumerGroup struct {
	epoch       int32
	assignEpoch int32
	members     map[string]*cmember
	static      map[string]string
	metaHash    uint64
}

func newConsumerGroup() *consumerGroup {
	return &consumerGroup{members: map[string]*cmember{}, static: map[string]string{}}
}

func toSet(tps []*pb.TopicPartitions) partSet {
	s := partSet{}
	for _, t := range tps {
		for _, p := range t.Partitions {
			s[tpKey{string(t.TopicId), p}] = true
		}
	}
	return s
}

func fromSet(s partSet) []*pb.TopicPartitions {
	by := map[string][]int32{}
	for k := range s {
		by[k.id] = append(by[k.id], k.p)
	}
	ids := make([]string, 0, len(by))
	for id := range by {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]*pb.TopicPartitions, 0, len(ids))
	for _, id := range ids {
		ps := by[id]
		slices.Sort(ps)
		out = append(out, &pb.TopicPartitions{TopicId: []byte(id), Partitions: ps})
	}
	return out
}

func (g *group) loadConsumer(rec *pb.ConsumerGroupState, now time.Time) {
	cg := newConsumerGroup()
	cg.epoch, cg.assignEpoch, cg.metaHash = rec.GroupEpoch, rec.AssignmentEpoch, rec.MetadataHash
	for _, rm := range rec.Members {
		m := &cmember{id: rm.MemberId, instanceID: rm.InstanceId, rack: rm.RackId, clientID: rm.ClientId,
			clientHost: rm.ClientHost, topics: rm.SubscribedTopics, regex: rm.SubscribedRegex, assignor: rm.ServerAssignor,
			rebalance: ms(rm.RebalanceTimeoutMs), session: ms(rm.SessionTimeoutMs), epoch: rm.MemberEpoch,
			prevEpoch: rm.PreviousMemberEpoch, assigned: toSet(rm.Assigned), revoking: toSet(rm.Revoking),
			target: toSet(rm.Target), leftTemp: rm.LeftTemporarily}
		if m.session <= 0 {
			m.session = g.c.cfg.ConsumerSessionTimeout
		}
		m.deadline = now.Add(m.session)
		if len(m.revoking) > 0 {
			m.revokeDeadline = now.Add(m.rebalance)
		}
		cg.members[m.id] = m
		if m.instanceID != nil {
			cg.static[*m.instanceID] = m.id
		}
	}
	g.cg = cg
}

func (g *group) consumerRecord() *pb.ConsumerGroupState {
	cg := g.cg
	st := &pb.ConsumerGroupState{GroupEpoch: cg.epoch, AssignmentEpoch: cg.assignEpoch, MetadataHash: cg.metaHash}
	ids := make([]string, 0, len(cg.members))
	for id := range cg.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		m := cg.members[id]
		st.Members = append(st.Members, &pb.ConsumerMember{MemberId: m.id, InstanceId: m.instanceID, RackId: m.rack,
			ClientId: m.clientID, ClientHost: m.clientHost, SubscribedTopics: m.topics, SubscribedRegex: m.regex,
			ServerAssignor: m.assignor, RebalanceTimeoutMs: int32(m.rebalance / time.Millisecond),
			SessionTimeoutMs: int32(m.session / time.Millisecond), MemberEpoch: m.epoch, PreviousMemberEpoch: m.prevEpoch,
			Assigned: fromSet(m.assigned), Revoking: fromSet(m.revoking), Target: fromSet(m.target), LeftTemporarily: m.leftTemp})
	}
	return st
}

// consumerMembers is how many KIP-848 members the group has.
func (g *group) consumerMembers() int {
	if g.cg == nil {
		return 0
	}
	return len(g.cg.members)
}

// ConsumerHeartbeat is ConsumerGroupHeartbeat (KIP-848).
func (c *Coordinator) ConsumerHeartbeat(ctx context.Context, req *pb.ConsumerHeartbeatRequest) *pb.ConsumerHeartbeatResponse {
	fail := func(code int32, msg string) *pb.ConsumerHeartbeatResponse {
		return &pb.ConsumerHeartbeatResponse{ErrorCode: code, ErrorMessage: msg, MemberId: req.MemberId, MemberEpoch: req.MemberEpoch}
	}
	switch {
	case req.Group == "" || len(req.Group) > maxGroupIDLen:
		return fail(codeInvalidRequest, "the group id must be 1 to 1024 bytes")
	case req.MemberEpoch < consumerStaticLeaveEpoch:
		return fail(codeInvalidRequest, "member epoch must be -2 or more")
	case req.MemberId == "" && !(req.GenerateMemberId && req.MemberEpoch == consumerJoinEpoch):
		return fail(codeInvalidRequest, "member id is required")
	case len(req.MemberId) > maxClientField+64:
		return fail(codeInvalidRequest, "member id too long")
	case req.InstanceId != nil && (*req.InstanceId == "" || len(*req.InstanceId) > maxInstanceID):
		return fail(codeInvalidRequest, "bad instance id")
	case len(req.SubscribedTopics) > maxSubscribedTopics:
		return fail(codeInvalidRequest, "too many subscribed topics")
	case req.SubscribedRegex != nil && len(*req.SubscribedRegex) > maxConsumerRegexLen:
		return fail(codeInvalidRegex, "regex too long")
	case req.ServerAssignor != nil && *req.ServerAssignor != "" && *req.ServerAssignor != "uniform" && *req.ServerAssignor != "range":
		return fail(codeUnsupportedAssignor, "server assignors: uniform, range")
	}
	for _, t := range req.SubscribedTopics {
		if t == "" || len(t) > maxConsumerTopicNameBytes {
			return fail(codeInvalidRequest, "bad subscribed topic name")
		}
	}
	if req.SubscribedRegex != nil && *req.SubscribedRegex != "" {
		if _, err := regexp.Compile(*req.SubscribedRegex); err != nil {
			return fail(codeInvalidRegex, err.Error())
		}
	}
	req.ClientId = truncate(req.ClientId, maxClientField)
	req.ClientHost = truncate(req.ClientHost, maxClientField)
	g, code := c.acquire(ctx, req.Group)
	if code != codeNone {
		return fail(code, "")
	}
	defer g.mu.Unlock()
	resp := g.consumerHeartbeat(ctx, req)
	g.forgetIfAbsent()
	return resp
}

func (g *group) consumerHeartbeat(ctx context.Context, req *pb.ConsumerHeartbeatRequest) *pb.ConsumerHeartbeatResponse {
	now := g.c.now()
	fail := func(code int32, msg string) *pb.ConsumerHeartbeatResponse {
		return &pb.ConsumerHeartbeatResponse{ErrorCode: code, ErrorMessage: msg, MemberId: req.MemberId, MemberEpoch: req.MemberEpoch}
	}
	if len(g.members) > 0 || len(g.pending) > 0 {
		return fail(codeInconsistentGroupProtocol, "the group uses the classic protocol")
	}
	if g.cg == nil && req.MemberEpoch != consumerJoinEpoch {
		return fail(codeGroupIDNotFound, "no consumer group "+g.name)
	}
	// Topics first: nothing below may fail after memory changed.
	topics, err := g.c.topics(ctx)
	if err != nil {
		return fail(codeNotCoordinator, "")
	}
	created := g.cg == nil
	if created {
		g.cg = newConsumerGroup()
		g.cg.epoch = max(g.gen, 0)
		g.cg.assignEpoch = g.cg.epoch
	}
	cg := g.cg
	admitted := false
	defer func() {
		if created && !admitted {
			g.cg = nil // a refused first member leaves no group behind
		}
	}()
	if req.InstanceId != nil {
		// A static member speaks for its instance only while it holds it.
		if owner, ok := cg.static[*req.InstanceId]; ok && owner != req.MemberId && req.MemberEpoch != consumerJoinEpoch {
			return fail(codeFencedInstanceID, "instance "+*req.InstanceId+" is held by another member")
		}
	}
	changed, bump := false, false

	switch req.MemberEpoch {
	case consumerLeaveEpoch, consumerStaticLeaveEpoch:
		m := cg.members[req.MemberId]
		if m == nil {
			return fail(codeUnknownMemberID, "")
		}
		if req.MemberEpoch == consumerStaticLeaveEpoch && m.instanceID != nil {
			// A static member restarting keeps its assignment for its session;
			// this member id is done (its epoch fences later heartbeats).
			m.leftTemp = true
			m.prevEpoch, m.epoch = m.epoch, consumerStaticLeaveEpoch
			g.consumerDirty = true
		} else {
			g.removeConsumer(m.id)
		}
		admitted = true
		g.consumerRebalance(topics, false)
		if !g.save() {
			return fail(codeNotCoordinator, "")
		}
		g.consumerDirty = false
		return &pb.ConsumerHeartbeatResponse{MemberId: m.id, MemberEpoch: req.MemberEpoch}
	}

	var m *cmember
	if req.MemberEpoch == consumerJoinEpoch {
		id := req.MemberId
		if id == "" {
			id = newMemberID(req.ClientId)
		}
		m = cg.members[id]
		if m != nil && req.InstanceId != nil && (m.instanceID == nil || *m.instanceID != *req.InstanceId) {
			return fail(codeFencedInstanceID, "member "+id+" is another instance")
		}
		if req.InstanceId != nil && m == nil {
			if owner, ok := cg.static[*req.InstanceId]; ok {
				old := cg.members[owner]
				if old != nil && !old.leftTemp {
					return fail(codeUnreleasedInstanceID, "instance "+*req.InstanceId+" is held by a live member")
				}
				if old != nil {
					// The restarted instance takes the old member's place,
					// assignment and epoch.
					if g.consumerBytes()-consumerMemberBytes(old)+consumerRequestBytes(id, req) > maxGroupBytes {
						return fail(codeGroupMaxSizeReached, "")
					}
					delete(cg.members, owner)
					nm := *old
					nm.id, nm.leftTemp = id, false
					if nm.epoch == consumerStaticLeaveEpoch {
						nm.epoch, nm.prevEpoch = nm.prevEpoch, 0
					}
					m = &nm
					cg.members[id] = m
					cg.static[*req.InstanceId] = id
					changed = true
				}
			}
		}
		switch {
		case m == nil:
			if !req.SubscriptionSet && req.SubscribedRegex == nil {
				return fail(codeInvalidRequest, "a joining member must subscribe")
			}
			if limit := g.c.cfg.MaxSize; (limit > 0 && len(cg.members) >= limit) || len(cg.members) >= maxMembers {
				return fail(codeGroupMaxSizeReached, "")
			}
			if g.consumerBytes()+consumerRequestBytes(id, req) > maxGroupBytes {
				return fail(codeGroupMaxSizeReached, "")
			}
			m = &cmember{id: id, instanceID: req.InstanceId, assigned: partSet{}, revoking: partSet{}, target: partSet{},
				session: g.c.cfg.ConsumerSessionTimeout, rebalance: g.c.cfg.MaxSessionTimeout}
			cg.members[id] = m
			if m.instanceID != nil {
				cg.static[*m.instanceID] = id
			}
			bump = true
			changed = true
		case !changed:
			// A member that lost its state (fenced, or its answer was lost)
			// rejoins: it owns nothing now.
			if len(m.assigned) > 0 || len(m.revoking) > 0 || m.epoch != 0 || m.leftTemp {
				m.assigned, m.revoking, m.leftTemp = partSet{}, partSet{}, false
				m.prevEpoch, m.epoch = m.epoch, 0
				changed = true
			}
		}
	} else {
		m = cg.members[req.MemberId]
		switch {
		case m == nil:
			return fail(codeUnknownMemberID, "")
		case m.leftTemp:
			return fail(codeFencedMemberEpoch, "the member left; its instance rejoins with epoch 0")
		case req.MemberEpoch == m.epoch:
		case req.MemberEpoch == m.prevEpoch && req.OwnedSet && subset(toSet(req.Owned), m.assigned):
			// Its last answer was lost: it still acts on the previous epoch.
		default:
			return fail(codeFencedMemberEpoch, "the member epoch is stale")
		}
		if (req.SubscriptionSet || req.SubscribedRegex != nil) &&
			g.consumerBytes()-consumerMemberBytes(m)+consumerRequestBytes(m.id, req) > maxGroupBytes {
			return fail(codeGroupMaxSizeReached, "")
		}
	}
	admitted = true
	m.deadline = now.Add(m.session)
	if g.updateConsumerMember(m, req) {
		bump = true
		changed = true
	}
	if req.MemberEpoch == consumerJoinEpoch {
		changed = true
	}
	before := fromSet(m.assigned)
	beforeEpoch := m.epoch
	g.consumerRebalance(topics, bump)
	// No owned list means "as before": the member still owns what it is revoking
	// (franz-go sends such heartbeats while its revoke callback commits).
	owned := partSet{}
	for k := range m.assigned {
		owned[k] = true
	}
	for k := range m.revoking {
		owned[k] = true
	}
	if req.OwnedSet {
		owned = toSet(req.Owned)
	}
	g.reconcile(m, owned, now)
	moved := m.epoch != beforeEpoch || !slices.EqualFunc(before, fromSet(m.assigned), func(a, b *pb.TopicPartitions) bool {
		return string(a.TopicId) == string(b.TopicId) && slices.Equal(a.Partitions, b.Partitions)
	})
	if changed || moved || g.consumerDirty {
		if !g.save() {
			return fail(codeNotCoordinator, "")
		}
		g.consumerDirty = false
	}
	resp := &pb.ConsumerHeartbeatResponse{MemberId: m.id, MemberEpoch: m.epoch,
		HeartbeatIntervalMs: int32(g.c.cfg.ConsumerHeartbeatInterval / time.Millisecond)}
	// As Kafka: a full request (everything set) always gets the assignment back.
	full := req.RebalanceTimeoutMs != -1 && (req.SubscriptionSet || req.SubscribedRegex != nil) && req.OwnedSet
	if moved || full || req.MemberEpoch == consumerJoinEpoch || (req.OwnedSet && !sameSet(owned, m.assigned)) {
		resp.HasAssignment = true
		resp.Assignment = fromSet(m.assigned)
	}
	return resp
}

// consumerMemberBytes is what a member adds to the saved group.
func consumerMemberBytes(m *cmember) int {
	n := 64 + len(m.id) + len(m.rack) + len(m.clientID) + len(m.clientHost) + len(m.regex) + len(m.assignor)
	if m.instanceID != nil {
		n += len(*m.instanceID)
	}
	for _, t := range m.topics {
		n += len(t) + 2
	}
	return n + 24*(len(m.assigned)+len(m.revoking)+len(m.target))
}

// consumerRequestBytes is consumerMemberBytes of the member a heartbeat describes
// (its assignment not counted: the group's partitions are counted once already).
func consumerRequestBytes(id string, req *pb.ConsumerHeartbeatRequest) int {
	m := &cmember{id: id, instanceID: req.InstanceId, clientID: req.ClientId, clientHost: req.ClientHost, topics: req.SubscribedTopics}
	if req.SubscribedRegex != nil {
		m.regex = *req.SubscribedRegex
	}
	return consumerMemberBytes(m)
}

func (g *group) consumerBytes() int {
	n := 0
	for _, m := range g.cg.members {
		n += consumerMemberBytes(m)
	}
	return n
}

// updateConsumerMember takes the fields a heartbeat sets; true if the
// subscription or assignor changed (a new group epoch).
func (g *group) updateConsumerMember(m *cmember, req *pb.ConsumerHeartbeatRequest) bool {
	changed := false
	if req.RackId != nil {
		m.rack = *req.RackId
	}
	if req.RebalanceTimeoutMs > 0 {
		m.rebalance = ms(req.RebalanceTimeoutMs)
	}
	m.clientID, m.clientHost = req.ClientId, req.ClientHost
	if req.SubscriptionSet {
		topics := slices.Clone(req.SubscribedTopics)
		slices.Sort(topics)
		topics = slices.Compact(topics)
		if !slices.Equal(topics, m.topics) {
			m.topics = topics
			changed = true
		}
	}
	if req.SubscribedRegex != nil && *req.SubscribedRegex != m.regex {
		m.regex = *req.SubscribedRegex
		changed = true
	}
	if req.ServerAssignor != nil && *req.ServerAssignor != m.assignor {
		m.assignor = *req.ServerAssignor
		changed = true
	}
	return changed
}

func (g *group) removeConsumer(id string) {
	m := g.cg.members[id]
	if m == nil {
		return
	}
	delete(g.cg.members, id)
	if m.instanceID != nil && g.cg.static[*m.instanceID] == id {
		delete(g.cg.static, *m.instanceID)
	}
	g.cg.epoch++
	g.consumerDirty = true
}

// consumerRebalance brings the target assignment up to the group epoch, after
// noticing changes of the subscribed topics; bump asks for a new group epoch (the
// membership or a subscription changed). One new epoch at most per call.
func (g *group) consumerRebalance(topics *topicView, bump bool) {
	cg := g.cg
	subscribed := g.subscribedTopics(topics)
	if h := metadataHash(subscribed); h != cg.metaHash {
		cg.metaHash = h
		bump = true
	}
	if bump {
		cg.epoch++
		g.consumerDirty = true
	}
	if cg.assignEpoch >= cg.epoch {
		return
	}
	g.assignTargets(subscribed)
	cg.assignEpoch = cg.epoch
	g.consumerDirty = true
}

// subscribedTopics resolves every member's subscription, by name and by regex
// (matching whole topic names, as Kafka does). A regex is matched against all
// topics once per topic listing (the listing is cached for a second), not on every
// heartbeat.
func (g *group) subscribedTopics(all *topicView) map[string][]TopicMeta {
	out := map[string][]TopicMeta{}
	for id, m := range g.cg.members {
		var ts []TopicMeta
		seen := map[string]bool{}
		for _, name := range m.topics {
			if t, ok := all.byName[name]; ok && !seen[name] {
				seen[name] = true
				ts = append(ts, t)
			}
		}
		if m.regex != "" {
			for _, t := range all.matching(m.regex) {
				if !seen[t.Name] {
					seen[t.Name] = true
					ts = append(ts, t)
				}
			}
		}
		slices.SortFunc(ts, func(a, b TopicMeta) int { return strings.Compare(a.Name, b.Name) })
		out[id] = ts
	}
	return out
}

func metadataHash(subscribed map[string][]TopicMeta) uint64 {
	seen := map[string]TopicMeta{}
	for _, ts := range subscribed {
		for _, t := range ts {
			seen[t.Name] = t
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	h := fnv.New64a()
	for _, n := range names {
		t := seen[n]
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(t.ID))
		h.Write([]byte{byte(t.Partitions >> 24), byte(t.Partitions >> 16), byte(t.Partitions >> 8), byte(t.Partitions)})
	}
	return h.Sum64()
}

// assignor is the group's assignor: the most common preference among members,
// "uniform" by default and on a tie.
func (cg *consumerGroup) assignor() string {
	votes := map[string]int{}
	for _, m := range cg.members {
		votes[m.assignor]++
	}
	if votes["range"] > votes["uniform"] {
		return "range"
	}
	return defaultAssignor
}

// assignTargets runs the group's assignor.
func (g *group) assignTargets(subscribed map[string][]TopicMeta) {
	assignor := g.cg.assignor()
	ids := make([]string, 0, len(g.cg.members))
	for id := range g.cg.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var targets map[string]partSet
	if assignor == "range" {
		targets = assignRange(ids, subscribed)
	} else {
		prev := map[string]partSet{}
		for id, m := range g.cg.members {
			prev[id] = m.target
		}
		targets = assignUniform(ids, subscribed, prev)
	}
	for id, m := range g.cg.members {
		m.target = targets[id]
		if m.target == nil {
			m.target = partSet{}
		}
	}
}

// assignRange gives each member, per topic, a contiguous range of partitions, as
// Kafka's range assignor does: members in id order, the first ones one more.
func assignRange(ids []string, subscribed map[string][]TopicMeta) map[string]partSet {
	out := map[string]partSet{}
	byTopic := map[string][]string{}
	metas := map[string]TopicMeta{}
	for _, id := range ids {
		out[id] = partSet{}
		for _, t := range subscribed[id] {
			byTopic[t.Name] = append(byTopic[t.Name], id)
			metas[t.Name] = t
		}
	}
	for name, members := range byTopic {
		t := metas[name]
		n, k := int(t.Partitions), len(members)
		p := 0
		for i, id := range members {
			count := n / k
			if i < n%k {
				count++
			}
			for range count {
				out[id][tpKey{t.ID, int32(p)}] = true
				p++
			}
		}
	}
	return out
}

// assignUniform spreads all subscribed partitions evenly, keeping each member's
// previous target where it can (sticky): members keep what they had up to their
// fair share, then the rest goes to the least loaded eligible member.
func assignUniform(ids []string, subscribed map[string][]TopicMeta, prev map[string]partSet) map[string]partSet {
	out := map[string]partSet{}
	eligible := map[string]map[string]bool{} // topic id -> member ids
	var all []tpKey
	seenTopic := map[string]bool{}
	for _, id := range ids {
		out[id] = partSet{}
		for _, t := range subscribed[id] {
			if eligible[t.ID] == nil {
				eligible[t.ID] = map[string]bool{}
			}
			eligible[t.ID][id] = true
			if !seenTopic[t.ID] {
				seenTopic[t.ID] = true
				for p := range t.Partitions {
					all = append(all, tpKey{t.ID, p})
				}
			}
		}
	}
	if len(ids) == 0 {
		return out
	}
	quota := (len(all) + len(ids) - 1) / len(ids)
	valid := map[tpKey]bool{}
	for _, k := range all {
		valid[k] = true
	}
	taken := map[tpKey]bool{}
	for _, id := range ids {
		keep := make([]tpKey, 0, len(prev[id]))
		for k := range prev[id] {
			if valid[k] && eligible[k.id][id] && !taken[k] {
				keep = append(keep, k)
			}
		}
		slices.SortFunc(keep, cmpTP)
		for _, k := range keep[:min(len(keep), quota)] {
			out[id][k] = true
			taken[k] = true
		}
	}
	slices.SortFunc(all, cmpTP)
	for _, k := range all {
		if taken[k] {
			continue
		}
		best := ""
		for _, id := range ids {
			if eligible[k.id][id] && (best == "" || len(out[id]) < len(out[best])) {
				best = id
			}
		}
		if best != "" {
			out[best][k] = true
			taken[k] = true
		}
	}
	// Even out what stickiness left uneven (members over the floor give to members
	// two below them), moving as little as possible.
	for range len(all) {
		hi, lo := "", ""
		for _, id := range ids {
			if hi == "" || len(out[id]) > len(out[hi]) {
				hi = id
			}
			if lo == "" || len(out[id]) < len(out[lo]) {
				lo = id
			}
		}
		if len(out[hi])-len(out[lo]) <= 1 {
			break
		}
		moved := false
		keys := make([]tpKey, 0, len(out[hi]))
		for k := range out[hi] {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, cmpTP)
		for _, k := range keys {
			if eligible[k.id][lo] {
				delete(out[hi], k)
				out[lo][k] = true
				moved = true
				break
			}
		}
		if !moved {
			break
		}
	}
	return out
}

func cmpTP(a, b tpKey) int {
	if c := strings.Compare(a.id, b.id); c != 0 {
		return c
	}
	return int(a.p - b.p)
}

func subset(a, b partSet) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func sameSet(a, b partSet) bool { return len(a) == len(b) && subset(a, b) }

// reconcile moves a member toward its target: revoke first, then take what no
// other member owns or is revoking.
func (g *group) reconcile(m *cmember, owned partSet, now time.Time) {
	cg := g.cg
	if len(m.revoking) > 0 {
		for k := range m.revoking {
			if owned[k] {
				return // still owned: wait (tick fences it past the rebalance timeout)
			}
		}
		m.revoking = partSet{}
		m.revokeDeadline = time.Time{}
	}
	revoke := partSet{}
	for k := range m.assigned {
		if !m.target[k] {
			revoke[k] = true
		}
	}
	if len(revoke) > 0 {
		for k := range revoke {
			delete(m.assigned, k)
		}
		m.revoking = revoke
		m.revokeDeadline = now.Add(m.rebalance)
		return
	}
	held := partSet{}
	for id, o := range cg.members {
		if id == m.id {
			continue
		}
		for k := range o.assigned {
			held[k] = true
		}
		for k := range o.revoking {
			held[k] = true
		}
	}
	for k := range m.target {
		if !m.assigned[k] && !held[k] {
			m.assigned[k] = true
		}
	}
	if m.epoch != cg.assignEpoch {
		m.prevEpoch, m.epoch = m.epoch, cg.assignEpoch
	}
}

// tickConsumer ends sessions and revocations that ran out.
func (g *group) tickConsumer(now time.Time) {
	if g.cg == nil {
		return
	}
	for id, m := range g.cg.members {
		if !now.Before(m.deadline) || (len(m.revoking) > 0 && !now.Before(m.revokeDeadline)) {
			g.removeConsumer(id)
		}
	}
	if g.consumerDirty {
		ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
		defer cancel()
		topics, err := g.c.topics(ctx)
		if err != nil {
			return // tried again next tick
		}
		g.consumerRebalance(topics, false)
		if g.save() {
			g.consumerDirty = false
		}
	}
}

func (g *group) consumerState() string {
	cg := g.cg
	switch {
	case len(cg.members) == 0:
		return "Empty"
	case cg.assignEpoch < cg.epoch:
		return "Assigning"
	}
	for _, m := range cg.members {
		if m.epoch != cg.assignEpoch || len(m.revoking) > 0 || !sameSet(m.assigned, m.target) {
			return "Reconciling"
		}
	}
	return "Stable"
}

// ConsumerDescribe is ConsumerGroupDescribe.
func (c *Coordinator) ConsumerDescribe(ctx context.Context, names []string) []*pb.ConsumerGroupDescription {
	out := make([]*pb.ConsumerGroupDescription, 0, len(names))
	for _, name := range names {
		var d *pb.ConsumerGroupDescription
		if code := c.withGroup(ctx, name, func(g *group) { d = g.consumerDescription() }); code != codeNone {
			d = &pb.ConsumerGroupDescription{Group: name, ErrorCode: code, State: "Dead"}
		}
		out = append(out, d)
	}
	return out
}

func (g *group) consumerDescription() *pb.ConsumerGroupDescription {
	if g.cg == nil {
		d := &pb.ConsumerGroupDescription{Group: g.name, ErrorCode: codeGroupIDNotFound, State: "Dead"}
		if g.exists() {
			d.ErrorMessage = "a classic group"
		}
		return d
	}
	return &pb.ConsumerGroupDescription{Group: g.name, State: g.consumerState(), GroupEpoch: g.cg.epoch,
		AssignmentEpoch: g.cg.assignEpoch, Assignor: g.cg.assignor(), Members: g.consumerRecord().Members}
}

// topicView is one listing of every topic, with the regex matches computed on
// it so far (a regex is matched against all topics once per listing).
type topicView struct {
	byName map[string]TopicMeta
	sorted []TopicMeta

	mu      sync.Mutex
	matches map[string][]TopicMeta
}

// maxRegexesPerView bounds the regexes remembered per listing.
const maxRegexesPerView = 1024

func (v *topicView) matching(expr string) []TopicMeta {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ts, ok := v.matches[expr]; ok {
		return ts
	}
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil
	}
	var ts []TopicMeta
	for _, t := range v.sorted {
		if re.MatchString(t.Name) {
			ts = append(ts, t)
		}
	}
	if len(v.matches) < maxRegexesPerView {
		v.matches[expr] = ts
	}
	return ts
}

// topics returns every topic, the listing cached for a second.
func (c *Coordinator) topics(ctx context.Context) (*topicView, error) {
	c.topicMu.Lock()
	defer c.topicMu.Unlock()
	if c.topicCache != nil && c.now().Sub(c.topicAt) < topicCacheFor && !c.now().Before(c.topicAt) {
		return c.topicCache, nil
	}
	ts, err := c.store.Topics(ctx)
	if err != nil {
		return nil, err
	}
	v := &topicView{byName: make(map[string]TopicMeta, len(ts)), matches: map[string][]TopicMeta{}}
	for _, t := range ts {
		v.byName[t.Name] = t
	}
	v.sorted = slices.Clone(ts)
	slices.SortFunc(v.sorted, func(a, b TopicMeta) int { return strings.Compare(a.Name, b.Name) })
	c.topicCache, c.topicAt = v, c.now()
	return v, nil
}
