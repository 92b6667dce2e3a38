package groups

import (
	"context"
	"slices"
	"sync"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

type groupState int

const (
	stateEmpty groupState = iota
	statePreparingRebalance
	stateCompletingRebalance
	stateStable
)

func (s groupState) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable"}[s]
}

type member struct {
	id         string
	instanceID *string
	clientID   string
	clientHost string
	session    time.Duration
	rebalance  time.Duration
	protocols  []*pb.GroupProtocol
	assignment []byte
	seq        uint64 // admission order: the leader is the earliest member left

	deadline time.Time                  // session end, unless waiting below
	joinWait chan *pb.JoinGroupResponse // set while in a join phase
	syncWait chan *pb.SyncGroupResponse // set while waiting for the leader's SyncGroup
	synced   bool                       // sent SyncGroup in this generation
}

func (m *member) metadata(protocol string) []byte {
	for _, p := range m.protocols {
		if p.Name == protocol {
			return p.Metadata
		}
	}
	return nil
}

// group is one group's state; every field is guarded by mu.
type group struct {
	c    *Coordinator
	name string
	term uint64 // the coordinator term that loaded it

	mu       sync.Mutex
	loaded   bool
	lastUsed time.Time
	gone     bool // forgotten by the coordinator: reload through acquire
	known    bool // the store has something for it
	state    groupState
	gen      int32
	ptype    string
	proto    string
	leader   string
	seq      uint64
	members  map[string]*member
	static   map[string]string    // instance id -> member id
	pending  map[string]time.Time // member ids handed out with MEMBER_ID_REQUIRED -> expiry

	cg            *consumerGroup // a KIP-848 group (then members is empty)
	consumerDirty bool           // cg changed since it was last saved

	joinDeadline time.Time // a join phase ends by then even if members are missing
	initialUntil time.Time // the first join phase of an empty group waits till then
	initialLimit time.Time // ... but not past this
	syncDeadline time.Time // members that sent no SyncGroup by then are removed
}

func (g *group) load(rec *pb.GroupRecord, exists bool, now time.Time) {
	g.loaded = true
	g.known = exists
	if rec == nil {
		return
	}
	g.gen = rec.Generation
	g.ptype = rec.ProtocolType
	if rec.Consumer != nil {
		g.loadConsumer(rec.Consumer, now)
	}
	g.proto = rec.Protocol
	g.leader = rec.Leader
	for _, rm := range rec.Members {
		g.seq++
		m := &member{id: rm.MemberId, instanceID: rm.InstanceId, clientID: rm.ClientId, clientHost: rm.ClientHost,
			session: ms(rm.SessionTimeoutMs), rebalance: ms(rm.RebalanceTimeoutMs), protocols: rm.Protocols,
			assignment: rm.Assignment, seq: g.seq, synced: true}
		m.deadline = now.Add(m.session)
		g.members[m.id] = m
		if m.instanceID != nil {
			g.static[*m.instanceID] = m.id
		}
	}
	switch {
	case len(g.members) == 0:
		g.state = stateEmpty
	case rec.Assigned:
		g.state = stateStable
	default:
		// Saved between a join phase and its assignment: the members' SyncGroup of
		// that generation gets REBALANCE_IN_PROGRESS and they rejoin.
		g.state = statePreparingRebalance
		g.joinDeadline = now.Add(g.maxRebalance())
	}
}

func ms(v int32) time.Duration { return time.Duration(v) * time.Millisecond }

// exists reports whether the group is more than a name: saved, or with members.
func (g *group) exists() bool {
	return g.known || len(g.members) > 0 || len(g.pending) > 0 || g.gen > 0 || g.cg != nil
}

// forgetIfAbsent drops a group that turned out not to exist, so requests naming
// groups at random leave nothing behind. Call with mu held.
func (g *group) forgetIfAbsent() {
	if !g.gone && !g.exists() {
		g.drop()
	}
}

// drop forgets the group (and answers its waiters NOT_COORDINATOR): the next
// request reloads it from the store.
func (g *group) drop() {
	g.abandon()
	g.c.mu.Lock()
	if g.c.groups[g.name] == g {
		delete(g.c.groups, g.name)
	}
	g.c.mu.Unlock()
}

// abandon answers every waiter NOT_COORDINATOR and marks the group gone.
func (g *group) abandon() {
	g.gone = true
	for _, m := range g.members {
		m.answerJoin(&pb.JoinGroupResponse{ErrorCode: codeNotCoordinator, MemberId: m.id, Generation: -1})
		m.answerSync(&pb.SyncGroupResponse{ErrorCode: codeNotCoordinator})
	}
}

func (m *member) answerJoin(r *pb.JoinGroupResponse) {
	if m.joinWait != nil {
		m.joinWait <- r
		m.joinWait = nil
	}
}

func (m *member) answerSync(r *pb.SyncGroupResponse) {
	if m.syncWait != nil {
		m.syncWait <- r
		m.syncWait = nil
	}
}

func (g *group) maxRebalance() time.Duration {
	var d time.Duration
	for _, m := range g.members {
		d = max(d, m.rebalance)
	}
	return d
}

// save commits the group as it is now. On failure the group is dropped: whatever
// the store holds is the truth the next coordinator (or the next request) loads.
func (g *group) save() bool {
	g.c.mu.Lock()
	current := g.c.term == g.term && g.c.groups[g.name] == g
	g.c.mu.Unlock()
	if !current {
		// Left over from an earlier term: whatever it decided is not this
		// coordinator's to save.
		g.drop()
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	if err := g.c.store.Save(ctx, g.record()); err != nil {
		g.drop()
		return false
	}
	g.known = true
	return true
}

func (g *group) record() *pb.GroupRecord {
	rec := &pb.GroupRecord{Group: g.name, ProtocolType: g.ptype, Protocol: g.proto, Generation: g.gen,
		Leader: g.leader, Assigned: g.state == stateStable, CoordinatorTerm: g.term}
	if g.cg != nil {
		rec.ProtocolType = consumerProtocolType
		rec.Consumer = g.consumerRecord()
		return rec
	}
	for _, m := range g.sorted() {
		rec.Members = append(rec.Members, &pb.GroupMember{MemberId: m.id, InstanceId: m.instanceID,
			ClientId: m.clientID, ClientHost: m.clientHost, SessionTimeoutMs: int32(m.session / time.Millisecond),
			RebalanceTimeoutMs: int32(m.rebalance / time.Millisecond), Protocols: m.protocols, Assignment: m.assignment})
	}
	return rec
}

func (g *group) sorted() []*member {
	ms := make([]*member, 0, len(g.members))
	for _, m := range g.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return int(a.seq) - int(b.seq) })
	return ms
}

// supports reports whether a member of this protocol type with these protocols
// may be in the group: the type matches and some protocol is one every other
// member supports too.
func (g *group) supports(self string, ptype string, protocols []*pb.GroupProtocol) bool {
	others := 0
	for id := range g.members {
		if id != self {
			others++
		}
	}
	if others == 0 {
		return true
	}
	if ptype != g.ptype {
		return false
	}
	counts := make(map[string]int, len(protocols))
	for _, p := range protocols {
		counts[p.Name] = 0
	}
	for id, m := range g.members {
		if id == self {
			continue
		}
		for _, p := range m.protocols {
			if n, ok := counts[p.Name]; ok {
				counts[p.Name] = n + 1
			}
		}
	}
	for _, n := range counts {
		if n >= others {
			return true
		}
	}
	return false
}

// full reports whether extra more members would exceed group.max.size, counting
// the member ids handed out and not yet used, as Kafka does; without a configured
// size only members count against the built-in bound.
func (g *group) full(extra int) bool {
	if limit := g.c.cfg.MaxSize; limit > 0 {
		return len(g.members)+len(g.pending)+extra > limit
	}
	return len(g.members)+extra > maxMembers
}

// addPending remembers a member id handed out with MEMBER_ID_REQUIRED; past
// maxPending the one closest to expiry is forgotten (its client gets
// UNKNOWN_MEMBER_ID and starts over).
func (g *group) addPending(id string, expiry time.Time) {
	if len(g.pending) >= maxPending {
		oldest, at := "", time.Time{}
		for p, e := range g.pending {
			if oldest == "" || e.Before(at) {
				oldest, at = p, e
			}
		}
		delete(g.pending, oldest)
	}
	g.pending[id] = expiry
}

// memberBytes is what a member adds to the group's saved record.
func memberBytes(m *member) int {
	n := 64 + len(m.id) + len(m.clientID) + len(m.clientHost) + protocolsBytes(m.protocols) + len(m.assignment)
	if m.instanceID != nil {
		n += len(*m.instanceID)
	}
	return n
}

func (g *group) groupBytes() int {
	n := 0
	for _, m := range g.members {
		n += memberBytes(m)
	}
	return n
}

// requestBytes is what a joining member would add to the group.
func requestBytes(id string, req *pb.JoinGroupRequest) int {
	m := &member{id: id, instanceID: req.InstanceId, clientID: req.ClientId, clientHost: req.ClientHost, protocols: req.Protocols}
	return memberBytes(m)
}

// --- JoinGroup ---------------------------------------------------------------------

func (g *group) join(req *pb.JoinGroupRequest) (*pb.JoinGroupResponse, chan *pb.JoinGroupResponse) {
	now := g.c.now()
	fail := func(code int32) (*pb.JoinGroupResponse, chan *pb.JoinGroupResponse) {
		return &pb.JoinGroupResponse{ErrorCode: code, MemberId: req.MemberId, Generation: -1}, nil
	}
	if g.consumerMembers() > 0 {
		return fail(codeInconsistentGroupProtocol) // a KIP-848 group
	}
	if g.cg != nil {
		// An empty consumer group becomes a classic one, its epochs going on as
		// generations.
		g.gen = max(g.gen, g.cg.epoch)
		g.cg = nil
		g.ptype = ""
	}
	if req.MemberId == "" {
		if !g.supports("", req.ProtocolType, req.Protocols) {
			return fail(codeInconsistentGroupProtocol)
		}
		if req.InstanceId != nil {
			if old, ok := g.static[*req.InstanceId]; ok {
				return g.replaceStatic(g.members[old], req, now)
			}
		}
		if g.full(1) {
			return fail(codeGroupMaxSizeReached)
		}
		id := newMemberID(req.ClientId)
		if req.InstanceId == nil && req.RequireMemberId {
			// KIP-394: the client must come back with this id, so a client that
			// times out and retries cannot leave an orphan member behind.
			g.addPending(id, now.Add(min(ms(req.SessionTimeoutMs), 5*time.Minute)))
			return &pb.JoinGroupResponse{ErrorCode: codeMemberIDRequired, MemberId: id, Generation: -1}, nil
		}
		return g.admit(id, req, now)
	}

	if req.InstanceId != nil {
		switch owner, ok := g.static[*req.InstanceId]; {
		case ok && owner != req.MemberId:
			return fail(codeFencedInstanceID)
		case !ok:
			return fail(codeUnknownMemberID)
		}
	}
	if _, ok := g.pending[req.MemberId]; ok {
		if !g.supports("", req.ProtocolType, req.Protocols) {
			return fail(codeInconsistentGroupProtocol)
		}
		delete(g.pending, req.MemberId)
		return g.admit(req.MemberId, req, now)
	}
	m := g.members[req.MemberId]
	if m == nil {
		return fail(codeUnknownMemberID)
	}
	if !g.supports(m.id, req.ProtocolType, req.Protocols) {
		return fail(codeInconsistentGroupProtocol)
	}
	if g.groupBytes()-memberBytes(m)+requestBytes(m.id, req) > maxGroupBytes {
		return fail(codeGroupMaxSizeReached)
	}
	same := sameProtocols(m.protocols, req.Protocols)
	m.update(req)
	switch g.state {
	case stateCompletingRebalance, stateStable:
		if same && (g.state == stateCompletingRebalance || m.id != g.leader) {
			// Nothing changed: the member lost the answer of the join phase, or
			// rejoined a Stable group for no reason. Answer with the current
			// generation rather than rebalancing everyone.
			return g.joinAnswer(m), nil
		}
		g.prepareRebalance(now)
	}
	return g.await(m, now)
}

func (m *member) update(req *pb.JoinGroupRequest) {
	m.protocols = req.Protocols
	m.session = ms(req.SessionTimeoutMs)
	m.rebalance = ms(req.RebalanceTimeoutMs)
	m.clientID = req.ClientId
	m.clientHost = req.ClientHost
}

// admit adds a new member and starts (or joins) a join phase.
func (g *group) admit(id string, req *pb.JoinGroupRequest, now time.Time) (*pb.JoinGroupResponse, chan *pb.JoinGroupResponse) {
	if g.full(1) {
		return &pb.JoinGroupResponse{ErrorCode: codeGroupMaxSizeReached, MemberId: id, Generation: -1}, nil
	}
	if g.groupBytes()+requestBytes(id, req) > maxGroupBytes {
		return &pb.JoinGroupResponse{ErrorCode: codeGroupMaxSizeReached, MemberId: id, Generation: -1}, nil
	}
	g.seq++
	m := &member{id: id, instanceID: req.InstanceId, seq: g.seq}
	m.update(req)
	wasEmpty := len(g.members) == 0
	g.members[id] = m
	if m.instanceID != nil {
		g.static[*m.instanceID] = id
	}
	if wasEmpty {
		g.ptype = req.ProtocolType
	}
	switch g.state {
	case stateEmpty:
		g.prepareRebalance(now)
		if d := g.c.cfg.InitialRebalanceDelay; d > 0 {
			g.initialUntil = now.Add(min(d, m.rebalance))
			g.initialLimit = now.Add(m.rebalance)
		}
	case statePreparingRebalance:
		if now.Before(g.initialUntil) {
			g.initialUntil = minTime(now.Add(g.c.cfg.InitialRebalanceDelay), g.initialLimit)
		}
	default:
		g.prepareRebalance(now)
	}
	return g.await(m, now)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// replaceStatic handles a static member's new instance (KIP-345): the old member
// id is fenced and the new one takes its place. In a Stable group whose selected
// protocol the new instance still supports nothing is rebalanced: the member gets
// the current generation back (a leader only if it can skip the assignment).
func (g *group) replaceStatic(old *member, req *pb.JoinGroupRequest, now time.Time) (*pb.JoinGroupResponse, chan *pb.JoinGroupResponse) {
	id := newMemberID(req.ClientId)
	if g.groupBytes()-memberBytes(old)+requestBytes(id, req) > maxGroupBytes {
		return &pb.JoinGroupResponse{ErrorCode: codeGroupMaxSizeReached, Generation: -1}, nil
	}
	old.answerJoin(&pb.JoinGroupResponse{ErrorCode: codeFencedInstanceID, MemberId: old.id, Generation: -1})
	old.answerSync(&pb.SyncGroupResponse{ErrorCode: codeFencedInstanceID})
	delete(g.members, old.id)
	m := *old
	m.id = id
	m.joinWait, m.syncWait = nil, nil
	m.update(req)
	g.members[id] = &m
	g.static[*req.InstanceId] = id
	wasLeader := g.leader == old.id
	if wasLeader {
		g.leader = id
	}
	// As Kafka: the new metadata is taken as is (clients put their generation and
	// owned partitions in it, so it differs on every restart); only a change of
	// the protocol the group would select rebalances.
	same := g.selectProtocol() == g.proto
	switch {
	case g.state == stateStable && same:
		if !g.save() {
			return &pb.JoinGroupResponse{ErrorCode: codeNotCoordinator, MemberId: id, Generation: -1}, nil
		}
		m.deadline = now.Add(m.session)
		r := g.joinAnswer(&m)
		switch {
		case wasLeader && req.CanSkipAssignment:
			r.SkipAssignment = true // KIP-814: the leader learns the members, assigns nothing
		case wasLeader:
			// Before JoinGroup v9 the leader cannot be told to skip the assignment:
			// as Kafka, it is answered as a follower (the old leader id, no
			// members) and takes its assignment from SyncGroup.
			r.Leader, r.Members = old.id, nil
		}
		return r, nil
	case g.state == statePreparingRebalance:
	default:
		g.prepareRebalance(now)
	}
	return g.await(&m, now)
}

// joinAnswer is the current generation as the member's JoinGroup answer: the
// leader gets every member's metadata.
func (g *group) joinAnswer(m *member) *pb.JoinGroupResponse {
	r := &pb.JoinGroupResponse{Generation: g.gen, ProtocolType: g.ptype, Protocol: g.proto, Leader: g.leader, MemberId: m.id}
	if m.id == g.leader {
		for _, o := range g.sorted() {
			r.Members = append(r.Members, &pb.GroupMember{MemberId: o.id, InstanceId: o.instanceID,
				Protocols: []*pb.GroupProtocol{{Name: g.proto, Metadata: o.metadata(g.proto)}}})
		}
	}
	return r
}

func (g *group) await(m *member, now time.Time) (*pb.JoinGroupResponse, chan *pb.JoinGroupResponse) {
	if m.joinWait != nil {
		// A second JoinGroup while the first waits: the first is answered as
		// superseded and the second takes its place.
		m.answerJoin(&pb.JoinGroupResponse{ErrorCode: codeRebalanceInProgress, MemberId: m.id, Generation: -1})
	}
	m.joinWait = make(chan *pb.JoinGroupResponse, 1)
	ch := m.joinWait
	g.tryCompleteJoin(now)
	return nil, ch
}

// prepareRebalance starts a join phase: members waiting for an assignment are told
// to rejoin, and the phase ends when every member has rejoined or the longest
// rebalance timeout passed.
func (g *group) prepareRebalance(now time.Time) {
	if g.state == stateCompletingRebalance {
		for _, m := range g.members {
			if m.syncWait != nil {
				m.answerSync(&pb.SyncGroupResponse{ErrorCode: codeRebalanceInProgress})
				m.deadline = now.Add(m.session) // its session runs again from the answer
			}
		}
	}
	if g.state != statePreparingRebalance {
		g.joinDeadline = now.Add(g.maxRebalance())
	}
	g.state = statePreparingRebalance
}

func (g *group) tryCompleteJoin(now time.Time) {
	if g.state != statePreparingRebalance || now.Before(g.initialUntil) {
		return
	}
	if len(g.pending) == 0 {
		all := true
		for _, m := range g.members {
			if m.joinWait == nil {
				all = false
				break
			}
		}
		if !all && now.Before(g.joinDeadline) {
			return
		}
	} else if now.Before(g.joinDeadline) {
		return
	}
	g.completeJoin(now)
}

// completeJoin ends a join phase: members that did not rejoin are removed, the
// generation advances and is saved, and every joined member is answered.
func (g *group) completeJoin(now time.Time) {
	// Dynamic members that did not rejoin are gone; static ones stay (their
	// instance may be restarting) until their session ends, as in Kafka.
	for id, m := range g.members {
		if m.joinWait == nil && m.instanceID == nil {
			g.remove(id)
		}
	}
	clear(g.pending)
	g.initialUntil, g.initialLimit = time.Time{}, time.Time{}
	g.gen++
	for _, m := range g.members {
		m.assignment = nil
		m.synced = false
	}
	if len(g.members) == 0 {
		g.state = stateEmpty
		g.proto, g.leader = "", ""
		g.save()
		return
	}
	g.proto = g.selectProtocol()
	if _, ok := g.members[g.leader]; !ok {
		g.leader = g.sorted()[0].id
	}
	g.state = stateCompletingRebalance
	g.syncDeadline = now.Add(g.maxRebalance())
	if !g.save() {
		return // dropped: the waiters were answered NOT_COORDINATOR
	}
	for _, m := range g.members {
		if m.joinWait != nil {
			m.deadline = now.Add(m.session)
			m.answerJoin(g.joinAnswer(m))
		}
	}
}

// selectProtocol picks the protocol every member supports that most members
// prefer; ties go to the earliest member's preference.
func (g *group) selectProtocol() string {
	ms := g.sorted()
	support := map[string]int{}
	for _, m := range ms {
		seen := make(map[string]bool, len(m.protocols))
		for _, p := range m.protocols {
			if !seen[p.Name] {
				seen[p.Name] = true
				support[p.Name]++
			}
		}
	}
	var candidates []string
	isCandidate := map[string]bool{}
	for _, p := range ms[0].protocols {
		if support[p.Name] == len(ms) && !isCandidate[p.Name] {
			isCandidate[p.Name] = true
			candidates = append(candidates, p.Name)
		}
	}
	votes := map[string]int{}
	for _, m := range ms {
		for _, p := range m.protocols {
			if isCandidate[p.Name] {
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, c := range candidates {
		if best == "" || votes[c] > votes[best] {
			best = c
		}
	}
	return best
}

// remove takes a member out (answering what it waits for with UNKNOWN_MEMBER_ID).
func (g *group) remove(id string) {
	m := g.members[id]
	if m == nil {
		return
	}
	m.answerJoin(&pb.JoinGroupResponse{ErrorCode: codeUnknownMemberID, MemberId: id, Generation: -1})
	m.answerSync(&pb.SyncGroupResponse{ErrorCode: codeUnknownMemberID})
	delete(g.members, id)
	if m.instanceID != nil && g.static[*m.instanceID] == id {
		delete(g.static, *m.instanceID)
	}
}

// removed rebalances after members left or expired.
func (g *group) removed(now time.Time) {
	switch g.state {
	case stateStable, stateCompletingRebalance:
		g.prepareRebalance(now)
		g.tryCompleteJoin(now)
	case statePreparingRebalance:
		g.tryCompleteJoin(now)
	}
}

// --- SyncGroup ---------------------------------------------------------------------

func (g *group) sync(req *pb.SyncGroupRequest) (*pb.SyncGroupResponse, chan *pb.SyncGroupResponse) {
	fail := func(code int32) (*pb.SyncGroupResponse, chan *pb.SyncGroupResponse) {
		return &pb.SyncGroupResponse{ErrorCode: code}, nil
	}
	if code := g.checkMember(req.MemberId, req.InstanceId); code != codeNone {
		return fail(code)
	}
	m := g.members[req.MemberId]
	switch {
	case req.Generation != g.gen:
		return fail(codeIllegalGeneration)
	case req.ProtocolType != "" && req.ProtocolType != g.ptype, req.Protocol != "" && req.Protocol != g.proto:
		return fail(codeInconsistentGroupProtocol)
	}
	now := g.c.now()
	switch g.state {
	case statePreparingRebalance:
		return fail(codeRebalanceInProgress)
	case stateStable:
		m.deadline = now.Add(m.session)
		return &pb.SyncGroupResponse{ProtocolType: g.ptype, Protocol: g.proto, Assignment: m.assignment}, nil
	}
	// CompletingRebalance.
	m.deadline = now.Add(m.session)
	if m.id == g.leader {
		size := 0
		for _, a := range req.Assignments {
			size += len(a.Assignment)
		}
		if size+g.groupBytes() > maxGroupBytes {
			// As Kafka does with an assignment it cannot store: everyone waiting
			// gets the error, and the group rebalances.
			for _, o := range g.members {
				if o.syncWait != nil {
					o.answerSync(&pb.SyncGroupResponse{ErrorCode: codeGroupMaxSizeReached})
					o.deadline = now.Add(o.session)
				}
			}
			g.prepareRebalance(now)
			return fail(codeGroupMaxSizeReached)
		}
	}
	m.synced = true
	if m.syncWait != nil {
		m.answerSync(&pb.SyncGroupResponse{ErrorCode: codeRebalanceInProgress})
	}
	m.syncWait = make(chan *pb.SyncGroupResponse, 1)
	ch := m.syncWait
	if m.id != g.leader {
		return nil, ch
	}
	for _, o := range g.members {
		o.assignment = nil
	}
	for _, a := range req.Assignments {
		if o := g.members[a.MemberId]; o != nil {
			o.assignment = a.Assignment
		}
	}
	g.state = stateStable
	if !g.save() {
		return nil, ch // dropped: answered NOT_COORDINATOR
	}
	for _, o := range g.members {
		if o.syncWait != nil {
			o.answerSync(&pb.SyncGroupResponse{ProtocolType: g.ptype, Protocol: g.proto, Assignment: o.assignment})
			o.deadline = now.Add(o.session) // its session runs again from the answer
		}
	}
	return nil, ch
}

// checkMember is the identity check shared by SyncGroup, Heartbeat and
// OffsetCommit: a static member's instance must be held by this member id.
func (g *group) checkMember(memberID string, instanceID *string) int32 {
	if instanceID != nil {
		if owner, ok := g.static[*instanceID]; ok && owner != memberID {
			return codeFencedInstanceID
		}
	}
	if _, ok := g.members[memberID]; !ok {
		return codeUnknownMemberID
	}
	return codeNone
}

// --- Heartbeat, LeaveGroup, OffsetCommit ----------------------------------------------

func (g *group) heartbeat(req *pb.HeartbeatRequest) int32 {
	if _, ok := g.pending[req.MemberId]; ok {
		return codeRebalanceInProgress
	}
	if code := g.checkMember(req.MemberId, req.InstanceId); code != codeNone {
		return code
	}
	if req.Generation != g.gen {
		return codeIllegalGeneration
	}
	m := g.members[req.MemberId]
	m.deadline = g.c.now().Add(m.session)
	if g.state == statePreparingRebalance {
		return codeRebalanceInProgress
	}
	return codeNone
}

func (g *group) leave(req *pb.LeaveGroupRequest) *pb.LeaveGroupResponse {
	resp := &pb.LeaveGroupResponse{}
	left, pendingLeft := false, false
	for _, lm := range req.Members {
		out := &pb.LeavingMember{MemberId: lm.MemberId, InstanceId: lm.InstanceId, Reason: lm.Reason}
		resp.Members = append(resp.Members, out)
		id := lm.MemberId
		if lm.InstanceId != nil {
			owner, ok := g.static[*lm.InstanceId]
			switch {
			case !ok:
				out.ErrorCode = codeUnknownMemberID
				continue
			case id != "" && owner != id:
				out.ErrorCode = codeFencedInstanceID
				continue
			}
			id = owner
		}
		if _, ok := g.pending[id]; ok {
			delete(g.pending, id)
			pendingLeft = true
			continue
		}
		if _, ok := g.members[id]; !ok {
			out.ErrorCode = codeUnknownMemberID
			continue
		}
		g.remove(id)
		left = true
	}
	switch {
	case left:
		g.removed(g.c.now())
	case pendingLeft:
		g.tryCompleteJoin(g.c.now()) // a join phase may have been waiting for it
	}
	return resp
}

func (g *group) checkCommit(generation int32, memberID string, instanceID *string) int32 {
	if n := g.consumerMembers(); n > 0 {
		m := g.cg.members[memberID]
		switch {
		case m == nil:
			return codeUnknownMemberID
		case instanceID != nil && g.cg.static[*instanceID] != memberID:
			return codeFencedInstanceID
		case generation != m.epoch:
			return codeStaleMemberEpoch // as Kafka: only the current epoch commits
		}
		return codeNone
	}
	switch {
	case generation < 0 && len(g.members) == 0:
		return codeNone // a simple consumer or an admin tool
	case !g.exists():
		return codeIllegalGeneration // as Kafka: a commit for a generation of no group
	}
	if code := g.checkMember(memberID, instanceID); code != codeNone {
		return code
	}
	if generation != g.gen {
		return codeIllegalGeneration
	}
	if g.state == stateCompletingRebalance {
		return codeRebalanceInProgress // the member must learn its new assignment first
	}
	m := g.members[memberID]
	m.deadline = g.c.now().Add(m.session)
	return codeNone
}

// --- deadlines and description -----------------------------------------------------------

func (g *group) tick(now time.Time) {
	for id, exp := range g.pending {
		if !now.Before(exp) {
			delete(g.pending, id)
		}
	}
	expired := false
	for id, m := range g.members {
		if m.joinWait != nil || m.syncWait != nil {
			continue // waiting on the coordinator, not on itself
		}
		if !now.Before(m.deadline) {
			g.remove(id)
			expired = true
		}
	}
	if g.state == stateCompletingRebalance && !now.Before(g.syncDeadline) {
		for id, m := range g.members {
			if !m.synced {
				g.remove(id)
				expired = true
			}
		}
	}
	if expired {
		g.removed(now)
	}
	g.tryCompleteJoin(now)
}

func (g *group) describe(withMembers bool) *pb.GroupDescription {
	d := &pb.GroupDescription{Group: g.name, State: g.state.String(), ProtocolType: g.ptype, Protocol: g.proto, Generation: g.gen, GroupType: "classic"}
	if g.cg != nil {
		d.GroupType, d.State, d.ProtocolType, d.Protocol, d.Generation = "consumer", g.consumerState(), consumerProtocolType, "", g.cg.epoch
		if withMembers {
			for _, m := range g.consumerRecord().Members {
				d.Members = append(d.Members, &pb.GroupMember{MemberId: m.MemberId, InstanceId: m.InstanceId,
					ClientId: m.ClientId, ClientHost: m.ClientHost})
			}
		}
		return d
	}
	if !g.exists() {
		d.State = "Dead"
		d.ErrorCode = codeGroupIDNotFound
		return d
	}
	stable := g.state == stateStable
	if !stable {
		d.Protocol = "" // as Kafka: the protocol, metadata and assignments only once Stable
	}
	if !withMembers {
		return d
	}
	for _, m := range g.sorted() {
		gm := &pb.GroupMember{MemberId: m.id, InstanceId: m.instanceID, ClientId: m.clientID,
			ClientHost: m.clientHost, SessionTimeoutMs: int32(m.session / time.Millisecond),
			RebalanceTimeoutMs: int32(m.rebalance / time.Millisecond)}
		if stable {
			gm.Protocols = []*pb.GroupProtocol{{Name: g.proto, Metadata: m.metadata(g.proto)}}
			gm.Assignment = m.assignment
		}
		d.Members = append(d.Members, gm)
	}
	return d
}
