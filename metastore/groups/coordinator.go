package groups

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Kafka error codes the coordinator answers with.
const (
	codeNone                      int32 = 0
	codeCoordinatorNotAvailable   int32 = 15
	codeNotCoordinator            int32 = 16
	codeIllegalGeneration         int32 = 22
	codeInconsistentGroupProtocol int32 = 23
	codeInvalidGroupID            int32 = 24
	codeUnknownMemberID           int32 = 25
	codeInvalidSessionTimeout     int32 = 26
	codeRebalanceInProgress       int32 = 27
	codeInvalidRequest            int32 = 42
	codeNonEmptyGroup             int32 = 68
	codeGroupIDNotFound           int32 = 69
	codeMemberIDRequired          int32 = 79
	codeGroupMaxSizeReached       int32 = 81
	codeFencedInstanceID          int32 = 82
)

const (
	// maxGroupBytes bounds the protocol metadata and assignments of one group, so
	// its record fits a Raft entry and an API message.
	maxGroupBytes = 2 << 20
	// maxGroupIDLen matches the state machine's bound on group ids.
	maxGroupIDLen = 1 << 10
	// maxMembers bounds one group when Config.MaxSize does not.
	maxMembers = 10_000
	// maxPending bounds the member ids handed out with MEMBER_ID_REQUIRED and not
	// yet used; past it the one closest to expiry is forgotten.
	maxPending = 1_000
	// maxProtocols, maxProtocolName and maxInstanceID bound a member's protocol
	// list (Kafka clients send one to three), protocol names and static instance
	// ids (Kafka's limit for the latter is 249).
	maxProtocols    = 64
	maxProtocolName = 255
	maxInstanceID   = 249
	// maxClientField bounds the client id and host kept per member.
	maxClientField = 256
	// saveTimeout bounds one Save.
	saveTimeout = 10 * time.Second
	// idleUnload is how long an empty group stays in memory after its last request:
	// simple consumers committing to a group without members find it loaded.
	idleUnload = time.Minute
)

// Store is where the coordinator keeps what outlives it: the metastore's state,
// through Raft on the leader.
type Store interface {
	// Load returns a group's saved record (nil if none) and whether the group exists
	// at all (a record or committed offsets). It must reflect every Save and
	// Delete committed before it is called.
	Load(ctx context.Context, group string) (rec *pb.GroupRecord, exists bool, err error)
	// Save commits rec; an error means it may or may not have been committed.
	Save(ctx context.Context, rec *pb.GroupRecord) error
	// Delete removes a group without members: its record and offsets.
	Delete(ctx context.Context, group string) (pb.ErrorCode, error)
	// Topics lists every topic, for the KIP-848 assignors.
	Topics(ctx context.Context) ([]TopicMeta, error)
}

// Coordinator runs every group of one leader term. It is safe for concurrent use.
type Coordinator struct {
	cfg   Config
	store Store
	now   func() time.Time

	mu     sync.Mutex
	term   uint64
	groups map[string]*group

	topicMu    sync.Mutex
	topicCache *topicView
	topicAt    time.Time
}

// New returns a coordinator over store with clock now (time.Now if nil).
func New(cfg Config, store Store, now func() time.Time) *Coordinator {
	if now == nil {
		now = time.Now
	}
	return &Coordinator{cfg: cfg, store: store, now: now, groups: map[string]*group{}}
}

// Term makes the coordinator serve leader term term: the groups of any other term
// are forgotten (their waiting members get NOT_COORDINATOR) and will be loaded from
// the store again. Call it before every request with the node's current term.
func (c *Coordinator) Term(term uint64) {
	c.mu.Lock()
	if c.term == term {
		c.mu.Unlock()
		return
	}
	c.term = term
	old := c.groups
	c.groups = map[string]*group{}
	c.mu.Unlock()
	for _, g := range old {
		g.mu.Lock()
		g.abandon()
		g.mu.Unlock()
	}
}

// Reset forgets every group, as when leadership is lost.
func (c *Coordinator) Reset() { c.Term(0) }

// acquire returns the group named name, loaded and locked, or a Kafka error code.
func (c *Coordinator) acquire(ctx context.Context, name string) (*group, int32) {
	for range 3 {
		c.mu.Lock()
		g := c.groups[name]
		if g == nil {
			g = &group{c: c, name: name, term: c.term, members: map[string]*member{}, static: map[string]string{}, pending: map[string]time.Time{}}
			c.groups[name] = g
		}
		c.mu.Unlock()
		g.mu.Lock()
		if g.gone {
			g.mu.Unlock()
			continue
		}
		if !g.loaded {
			lctx, cancel := context.WithTimeout(ctx, saveTimeout)
			rec, exists, err := c.store.Load(lctx, name)
			cancel()
			if err != nil {
				g.drop()
				g.mu.Unlock()
				return nil, codeNotCoordinator
			}
			g.load(rec, exists, c.now())
		}
		g.lastUsed = c.now()
		return g, codeNone
	}
	return nil, codeNotCoordinator
}

// Tick enforces every deadline that passed by now: session timeouts, the end of
// join phases and of the initial delay, the wait for SyncGroup, and member ids that
// were handed out but never used. Empty groups idle for a minute are unloaded
// (their record holds all there is). Call it every few hundred milliseconds on the
// leader.
func (c *Coordinator) Tick() {
	c.mu.Lock()
	gs := make([]*group, 0, len(c.groups))
	for _, g := range c.groups {
		gs = append(gs, g)
	}
	c.mu.Unlock()
	for _, g := range gs {
		g.mu.Lock()
		if !g.gone && g.loaded {
			now := c.now()
			g.tick(now)
			g.tickConsumer(now)
			if g.state == stateEmpty && len(g.pending) == 0 && g.consumerMembers() == 0 && now.Sub(g.lastUsed) >= idleUnload {
				g.drop()
			}
		}
		g.mu.Unlock()
	}
}

// Join is JoinGroup. It returns when the join phase the member is in completes,
// when the member is refused, or when ctx ends (NOT_COORDINATOR: the client
// retries).
func (c *Coordinator) Join(ctx context.Context, req *pb.JoinGroupRequest) *pb.JoinGroupResponse {
	fail := func(code int32) *pb.JoinGroupResponse {
		return &pb.JoinGroupResponse{ErrorCode: code, MemberId: req.MemberId, Generation: -1}
	}
	switch {
	case req.Group == "" || len(req.Group) > maxGroupIDLen:
		return fail(codeInvalidGroupID)
	case req.SessionTimeoutMs < int32(c.cfg.MinSessionTimeout/time.Millisecond) ||
		req.SessionTimeoutMs > int32(min(c.cfg.MaxSessionTimeout/time.Millisecond, 1<<31-1)):
		return fail(codeInvalidSessionTimeout)
	case req.ProtocolType == "" || len(req.Protocols) == 0:
		return fail(codeInconsistentGroupProtocol)
	case req.RebalanceTimeoutMs <= 0, len(req.Protocols) > maxProtocols,
		req.InstanceId != nil && (*req.InstanceId == "" || len(*req.InstanceId) > maxInstanceID):
		return fail(codeInvalidRequest)
	}
	for _, p := range req.Protocols {
		if p.Name == "" || len(p.Name) > maxProtocolName {
			return fail(codeInvalidRequest)
		}
	}
	if protocolsBytes(req.Protocols) > maxGroupBytes {
		return fail(codeGroupMaxSizeReached)
	}
	req.ClientId = truncate(req.ClientId, maxClientField)
	req.ClientHost = truncate(req.ClientHost, maxClientField)
	g, code := c.acquire(ctx, req.Group)
	if code != codeNone {
		return fail(code)
	}
	resp, wait := g.join(req)
	g.mu.Unlock()
	return answer(ctx, resp, wait, fail(codeNotCoordinator))
}

// answer is resp, or when the call waits (resp nil), what arrives on wait, or gone
// if ctx ends first.
func answer[T any](ctx context.Context, resp *T, wait <-chan *T, gone *T) *T {
	if resp != nil {
		return resp
	}
	select {
	case r := <-wait:
		return r
	case <-ctx.Done():
		return gone
	}
}

// Sync is SyncGroup. The leader's call hands out the assignments; the others wait
// for it (or get their assignment at once when the group is already Stable).
func (c *Coordinator) Sync(ctx context.Context, req *pb.SyncGroupRequest) *pb.SyncGroupResponse {
	if req.Group == "" || len(req.Group) > maxGroupIDLen {
		return &pb.SyncGroupResponse{ErrorCode: codeInvalidGroupID}
	}
	g, code := c.acquire(ctx, req.Group)
	if code != codeNone {
		return &pb.SyncGroupResponse{ErrorCode: code}
	}
	resp, wait := g.sync(req)
	g.forgetIfAbsent()
	g.mu.Unlock()
	return answer(ctx, resp, wait, &pb.SyncGroupResponse{ErrorCode: codeNotCoordinator})
}

// withGroup runs f on the named group, loaded and locked, and then forgets the
// group if it turned out not to exist. The code says why f did not run: a bad
// name, or the group could not be loaded.
func (c *Coordinator) withGroup(ctx context.Context, name string, f func(*group)) int32 {
	if name == "" || len(name) > maxGroupIDLen {
		return codeInvalidGroupID
	}
	g, code := c.acquire(ctx, name)
	if code != codeNone {
		return code
	}
	defer g.mu.Unlock()
	defer g.forgetIfAbsent()
	f(g)
	return codeNone
}

// Heartbeat is Heartbeat.
func (c *Coordinator) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) *pb.HeartbeatResponse {
	resp := &pb.HeartbeatResponse{}
	if code := c.withGroup(ctx, req.Group, func(g *group) { resp.ErrorCode = g.heartbeat(req) }); code != codeNone {
		resp.ErrorCode = code
	}
	return resp
}

// Leave is LeaveGroup: each member (by member id, or by instance id for a static
// member) leaves, and the group rebalances once.
func (c *Coordinator) Leave(ctx context.Context, req *pb.LeaveGroupRequest) *pb.LeaveGroupResponse {
	var resp *pb.LeaveGroupResponse
	if code := c.withGroup(ctx, req.Group, func(g *group) { resp = g.leave(req) }); code != codeNone {
		return &pb.LeaveGroupResponse{ErrorCode: code}
	}
	return resp
}

// CheckCommit decides whether an OffsetCommit from this member of this generation
// may be written, as Kafka's coordinator does: a simple commit (generation < 0)
// only while the group has no members, otherwise the member must belong to the
// current generation. A commit counts as a heartbeat.
func (c *Coordinator) CheckCommit(ctx context.Context, groupID string, generation int32, memberID string, instanceID *string) int32 {
	if groupID == "" || len(groupID) > maxGroupIDLen {
		return codeInvalidGroupID
	}
	g, code := c.acquire(ctx, groupID)
	if code != codeNone {
		return code
	}
	defer g.mu.Unlock()
	return g.checkCommit(generation, memberID, instanceID)
}

// Committed records that offsets were written for a group, so that a group known
// only by its offsets describes as Empty rather than Dead.
func (c *Coordinator) Committed(name string) {
	c.mu.Lock()
	g := c.groups[name]
	c.mu.Unlock()
	if g != nil {
		g.mu.Lock()
		g.known = true
		g.mu.Unlock()
	}
}

// Describe describes groups as DescribeGroups does. A group that does not exist is
// Dead (with GROUP_ID_NOT_FOUND in its error when notFoundError is set: v6+).
func (c *Coordinator) Describe(ctx context.Context, names []string) []*pb.GroupDescription {
	out := make([]*pb.GroupDescription, 0, len(names))
	for _, name := range names {
		var d *pb.GroupDescription
		if code := c.withGroup(ctx, name, func(g *group) { d = g.describe(true) }); code != codeNone {
			d = &pb.GroupDescription{Group: name, ErrorCode: code, State: "Dead"}
		}
		out = append(out, d)
	}
	return out
}

// Loaded describes, without members, every group this coordinator has in memory:
// the live state of groups the store may describe as it last saved them.
func (c *Coordinator) Loaded() map[string]*pb.GroupDescription {
	c.mu.Lock()
	gs := make([]*group, 0, len(c.groups))
	for _, g := range c.groups {
		gs = append(gs, g)
	}
	c.mu.Unlock()
	out := make(map[string]*pb.GroupDescription, len(gs))
	for _, g := range gs {
		g.mu.Lock()
		if g.loaded && !g.gone && g.exists() {
			out[g.name] = g.describe(false)
		}
		g.mu.Unlock()
	}
	return out
}

// Delete deletes groups as DeleteGroups does: only groups without members.
func (c *Coordinator) Delete(ctx context.Context, names []string) []*pb.GroupResult {
	out := make([]*pb.GroupResult, 0, len(names))
	for _, name := range names {
		r := &pb.GroupResult{Group: name}
		out = append(out, r)
		if name == "" || len(name) > maxGroupIDLen {
			r.Error = pb.ErrorCode_GROUP_NOT_FOUND
			continue
		}
		g, code := c.acquire(ctx, name)
		if code != codeNone {
			r.Error = pb.ErrorCode_NOT_LEADER
			continue
		}
		if len(g.members) > 0 || len(g.pending) > 0 || g.consumerMembers() > 0 {
			r.Error = pb.ErrorCode_NON_EMPTY_GROUP
			g.mu.Unlock()
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, saveTimeout)
		ec, err := c.store.Delete(sctx, name)
		cancel()
		switch {
		case err != nil:
			r.Error = pb.ErrorCode_NOT_LEADER
		default:
			r.Error = ec
		}
		// Deleted or not, the store has the truth: reload on next use.
		g.drop()
		g.mu.Unlock()
	}
	return out
}

// Preload loads groups (those the store holds with members, when a term begins),
// so that the sessions of members that never come back end and the group
// rebalances or empties as it would have under the previous coordinator.
func (c *Coordinator) Preload(ctx context.Context, names []string) {
	for _, name := range names {
		if g, code := c.acquire(ctx, name); code == codeNone {
			g.mu.Unlock()
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func newMemberID(clientID string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	if len(clientID) > 128 {
		clientID = clientID[:128]
	}
	return clientID + "-" + hex.EncodeToString(b[:])
}

func protocolsBytes(ps []*pb.GroupProtocol) int {
	n := 0
	for _, p := range ps {
		n += len(p.Name) + len(p.Metadata)
	}
	return n
}

func sameProtocols(a, b []*pb.GroupProtocol) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.GroupProtocol) bool {
		return x.Name == y.Name && string(x.Metadata) == string(y.Metadata)
	})
}
