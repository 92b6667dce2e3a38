package metastore

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Options tune a Client. The zero value is usable.
type Options struct {
	// DialOptions are passed to grpc.NewClient for every node. Nil means plaintext.
	DialOptions []grpc.DialOption
	// Timeout bounds a call whose context has no deadline (0: 30s).
	Timeout time.Duration
	// AttemptTimeout bounds one attempt on one node, so a hung node costs at most
	// this much before the client tries another (0: 5s).
	AttemptTimeout time.Duration
	// BackoffMin and BackoffMax bound the pause between attempts, which doubles from
	// min to max, with full jitter (0: 10ms and 1s).
	BackoffMin, BackoffMax time.Duration
	// Logger receives debug messages about retries (nil: discarded).
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 5 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 10 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(time.Second, o.BackoffMin)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.DialOptions == nil {
		o.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
}

// Client talks to a metastore cluster. It is safe for concurrent use. It keeps one
// gRPC connection per node it has used and sends calls to the node it believes leads.
type Client struct {
	opts Options

	mu     sync.Mutex
	addrs  []string // every API address known: given to Dial, then learned
	conns  map[string]*grpc.ClientConn
	leader string // API address believed to lead; "" when unknown
	next   int    // round-robin position when the leader is unknown
	closed bool
}

// Dial returns a client for the cluster whose nodes' API addresses (host:port) are
// addrs; one live node is enough, the others are learned from it. Dial asks the
// nodes for the cluster's members and leader within ctx but does not fail when none
// answers: calls retry until their own deadlines.
func Dial(ctx context.Context, addrs []string, opts Options) (*Client, error) {
	opts.defaults()
	if len(addrs) == 0 {
		return nil, errors.New("metastore: no addresses to dial")
	}
	c := &Client{opts: opts, conns: map[string]*grpc.ClientConn{}}
	for _, a := range addrs {
		if a == "" {
			return nil, errors.New("metastore: empty address")
		}
		c.learn(a)
	}
	for _, a := range slices.Clone(c.addrs) {
		if ctx.Err() != nil {
			break
		}
		cl, err := c.conn(a)
		if err != nil {
			c.Close()
			return nil, err
		}
		actx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := cl.Cluster(actx, &pb.ClusterRequest{})
		cancel()
		if err == nil {
			c.learnCluster(resp)
			break
		}
	}
	return c, nil
}

// Close closes every connection. Calls in flight fail; watches end.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	clear(c.conns)
	return errors.Join(errs...)
}

// learn adds an address to the known set. Call with mu held or before sharing c.
func (c *Client) learn(addr string) {
	if addr != "" && !slices.Contains(c.addrs, addr) {
		c.addrs = append(c.addrs, addr)
	}
}

func (c *Client) learnCluster(resp *pb.ClusterResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range resp.Members {
		c.learn(m.ApiAddress)
		if m.Leader && m.ApiAddress != "" {
			c.leader = m.ApiAddress
		}
	}
}

// MaxMessageBytes bounds one API message either way: a DescribeGroups answer holds
// whole groups' metadata and assignments (each group is at most a few MiB).
const MaxMessageBytes = 64 << 20

// conn returns the stub for addr, connecting lazily.
func (c *Client) conn(addr string) (pb.MetastoreClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("metastore: client closed")
	}
	cc, ok := c.conns[addr]
	if !ok {
		var err error
		opts := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes))}, c.opts.DialOptions...)
		cc, err = grpc.NewClient(addr, opts...)
		if err != nil {
			return nil, fmt.Errorf("metastore: %s: %w", addr, err)
		}
		c.conns[addr] = cc
	}
	return pb.NewMetastoreClient(cc), nil
}

// pick chooses the node for the next attempt: the leader if known, else the next
// node in turn.
func (c *Client) pick() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader != "" {
		return c.leader
	}
	a := c.addrs[c.next%len(c.addrs)]
	c.next++
	return a
}

// follow records what an attempt on from taught: the leader is at leader, or
// (leader == "") from is not worth asking first again.
func (c *Client) follow(from, leader string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if leader != "" && leader != from {
		c.learn(leader)
		c.leader = leader
		return
	}
	if c.leader == from {
		c.leader = ""
	}
}

// Leader is the API address the client currently believes leads ("" if unknown).
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.BackoffMin << min(attempt, 20)
	if d <= 0 || d > c.opts.BackoffMax {
		d = c.opts.BackoffMax
	}
	return rand.N(d) + 1
}

// pause waits before the next attempt; false when ctx ended.
func (c *Client) pause(ctx context.Context, attempt int) bool {
	t := time.NewTimer(c.backoff(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ready reports whether the connection to addr is up (connecting if need be),
// within ctx.
func (c *Client) ready(ctx context.Context, addr string) bool {
	c.mu.Lock()
	cc := c.conns[addr]
	c.mu.Unlock()
	if cc == nil {
		return false
	}
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		}
		if !cc.WaitForStateChange(ctx, s) {
			return false
		}
	}
}

// callSpec says how a call may be retried.
type callSpec struct {
	// idempotent: repeating the call after an ambiguous attempt is harmless and
	// returns what the first attempt would have.
	idempotent bool
	// read: nothing to be ambiguous about; failing only means unavailable.
	read bool
	// doneAfterAmbiguous recognises a refusal that, after an ambiguous attempt,
	// means an earlier attempt took effect (e.g. UNKNOWN_AGENT on deregister).
	doneAfterAmbiguous func(error) bool
	// wholeContext: the server may hold the call until something happens (a
	// group's join or sync phase), so an attempt may take all of ctx instead of
	// Options.AttemptTimeout. Retrying stops once Options.Timeout has passed, so
	// an unreachable cluster is reported in seconds, not at ctx's end.
	wholeContext bool
}

// call runs f against the cluster until it succeeds, fails for good, or ctx ends.
func call[Req, Resp any](ctx context.Context, c *Client, spec callSpec, req Req,
	f func(pb.MetastoreClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	var zero Resp
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
	}
	whole := ctx
	if spec.wholeContext {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout) // the retry budget
		defer cancel()
	}
	ambiguous := false
	var last error
	for attempt := 0; ; attempt++ {
		addr := c.pick()
		cl, err := c.conn(addr)
		if err != nil {
			return zero, err
		}
		actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		if !spec.idempotent && !c.ready(actx, addr) {
			// Never sent: a clean miss. Only sent on a ready connection can a
			// failure be ambiguous.
			cancel()
			last = fmt.Errorf("metastore: %s: not connected", addr)
			c.follow(addr, "")
			if !c.pause(ctx, attempt) {
				break
			}
			continue
		}
		if spec.wholeContext {
			actx = whole
		}
		var hdr metadata.MD
		resp, err := f(cl, actx, req, grpc.Header(&hdr))
		cancel()
		if err == nil {
			if l := hdr.Get(HeaderLeader); len(l) > 0 && l[0] != addr {
				c.follow(addr, l[0])
			}
			return resp, nil
		}
		w := classify(err)
		if w.typed != nil && !w.notLeader {
			if ambiguous && spec.doneAfterAmbiguous != nil && spec.doneAfterAmbiguous(w.typed) {
				return zero, nil
			}
			return zero, w.typed
		}
		if !w.retry {
			return zero, fmt.Errorf("metastore: %s: %w", addr, err)
		}
		last = err
		leaderHint := ""
		if w.notLeader {
			leaderHint = w.typed.Leader
		}
		c.follow(addr, leaderHint)
		if w.ambiguous && !spec.read {
			ambiguous = true
			if !spec.idempotent {
				return zero, fmt.Errorf("%w: %s: %v", ErrAmbiguous, addr, err)
			}
		}
		c.opts.Logger.Debug("metastore: retrying", "node", addr, "attempt", attempt, "err", err)
		if ctx.Err() != nil {
			break
		}
		// A fresh leader address is worth trying at once.
		if leaderHint != "" && leaderHint != addr && attempt == 0 {
			continue
		}
		if !c.pause(ctx, attempt) {
			break
		}
	}
	if ambiguous {
		return zero, fmt.Errorf("%w: %v (%w)", ErrAmbiguous, last, ctx.Err())
	}
	return zero, fmt.Errorf("%w: %v (%w)", ErrUnavailable, last, ctx.Err())
}

var (
	retryAll      = callSpec{idempotent: true}
	retryUntilAmb = callSpec{idempotent: false}
	retryRead     = callSpec{idempotent: true, read: true}
	// waitUntilAmb is retryUntilAmb for a call the server holds until an event.
	waitUntilAmb = callSpec{wholeContext: true}
)

// NewTopicID returns a random topic id, as CreateTopics assigns.
func NewTopicID() []byte {
	id := make([]byte, 16)
	crand.Read(id)
	return id
}

// CreateTopics creates topics. Specs without a topic id get a random one from the
// client (the request is copied, not changed), which makes retries safe: the
// metastore recognises a repeated create of the same name and id. Per-topic
// refusals are in the results (ErrorOf(r.Error, r.Message)).
func (c *Client) CreateTopics(ctx context.Context, req *pb.CreateTopicsRequest) (*pb.CreateTopicsResponse, error) {
	req = proto.CloneOf(req)
	for _, t := range req.Topics {
		if len(t.TopicId) == 0 {
			t.TopicId = NewTopicID()
		}
	}
	return call(ctx, c, retryAll, req, pb.MetastoreClient.CreateTopics)
}

// DeleteTopics deletes topics; refer to them by id so retries are exact.
func (c *Client) DeleteTopics(ctx context.Context, req *pb.DeleteTopicsRequest) (*pb.DeleteTopicsResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.DeleteTopics)
}

// AlterConfigs changes topic configs.
func (c *Client) AlterConfigs(ctx context.Context, req *pb.AlterConfigsRequest) (*pb.AlterConfigsResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.AlterConfigs)
}

// CreatePartitions grows topics. Not idempotent: an ambiguous attempt is reported as
// ErrAmbiguous at once (DescribeTopics tells what happened).
func (c *Client) CreatePartitions(ctx context.Context, req *pb.CreatePartitionsRequest) (*pb.CreatePartitionsResponse, error) {
	return call(ctx, c, retryUntilAmb, req, pb.MetastoreClient.CreatePartitions)
}

// DescribeTopics reads topics (all when the request names none), linearizably.
func (c *Client) DescribeTopics(ctx context.Context, req *pb.DescribeTopicsRequest) (*pb.DescribeTopicsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.DescribeTopics)
}

// CommitSegment assigns offsets to a segment's chunks. Idempotent on the segment id:
// a retry gets the first commit's offsets. Per-chunk refusals are in the response.
func (c *Client) CommitSegment(ctx context.Context, req *pb.CommitSegmentRequest) (*pb.CommitSegmentResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.CommitSegment)
}

// Lookup reads index entries from an offset on, linearizably.
func (c *Client) Lookup(ctx context.Context, req *pb.LookupRequest) (*pb.LookupResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.Lookup)
}

// ListOffsets answers Kafka's ListOffsets for one partition, linearizably.
func (c *Client) ListOffsets(ctx context.Context, req *pb.ListOffsetsRequest) (*pb.ListOffsetsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.ListOffsets)
}

// RegisterAgent registers or renews an agent's lease.
func (c *Client) RegisterAgent(ctx context.Context, req *pb.RegisterAgentRequest) (*pb.RegisterAgentResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.RegisterAgent)
}

// DeregisterAgent removes an agent. After an ambiguous attempt, UNKNOWN_AGENT means
// an earlier attempt removed it and the call succeeds.
func (c *Client) DeregisterAgent(ctx context.Context, req *pb.DeregisterAgentRequest) (*pb.DeregisterAgentResponse, error) {
	spec := callSpec{idempotent: true, doneAfterAmbiguous: func(err error) bool { return errors.Is(err, ErrUnknownAgent) }}
	resp, err := call(ctx, c, spec, req, pb.MetastoreClient.DeregisterAgent)
	if err == nil && resp == nil {
		resp = &pb.DeregisterAgentResponse{}
	}
	return resp, err
}

// ListAgents lists registered agents, linearizably.
func (c *Client) ListAgents(ctx context.Context, req *pb.ListAgentsRequest) (*pb.ListAgentsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.ListAgents)
}

// RecordIntent records an upload intent; a retry keeps the first deadline.
func (c *Client) RecordIntent(ctx context.Context, req *pb.RecordIntentRequest) (*pb.RecordIntentResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.RecordIntent)
}

// ResolveIntent drops an upload intent.
func (c *Client) ResolveIntent(ctx context.Context, req *pb.ResolveIntentRequest) (*pb.ResolveIntentResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.ResolveIntent)
}

// ListExpiredIntents lists upload intents past their deadline, linearizably.
func (c *Client) ListExpiredIntents(ctx context.Context, req *pb.ListExpiredIntentsRequest) (*pb.ListExpiredIntentsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.ListExpiredIntents)
}

// Segment reports what the metastore knows of a segment (committed record, upload
// intent, or neither), linearizably.
func (c *Client) Segment(ctx context.Context, req *pb.SegmentRequest) (*pb.SegmentResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.Segment)
}

// ReplaceIndex commits a compaction: one atomic compare-and-swap of a run of index
// entries. A retry of an applied replacement (same output segment) succeeds; a lost
// race is STALE_INDEX in the response.
func (c *Client) ReplaceIndex(ctx context.Context, req *pb.ReplaceIndexRequest) (*pb.ReplaceIndexResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.ReplaceIndex)
}

// DeleteRecords moves log start offsets forward (never back); retries are harmless.
func (c *Client) DeleteRecords(ctx context.Context, req *pb.DeleteRecordsRequest) (*pb.DeleteRecordsResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.DeleteRecords)
}

// ClaimGarbage condemns unneeded objects and lists every condemned one not yet
// forgotten: the caller deletes them, then calls ForgetGarbage.
func (c *Client) ClaimGarbage(ctx context.Context, req *pb.ClaimGarbageRequest) (*pb.ClaimGarbageResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.ClaimGarbage)
}

// ForgetGarbage records that condemned objects are deleted.
func (c *Client) ForgetGarbage(ctx context.Context, req *pb.ForgetGarbageRequest) (*pb.ForgetGarbageResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.ForgetGarbage)
}

// CommitOffsets stores a consumer group's offsets; a retry writes the same values.
func (c *Client) CommitOffsets(ctx context.Context, req *pb.CommitOffsetsRequest) (*pb.CommitOffsetsResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.CommitOffsets)
}

// FetchOffsets reads a consumer group's committed offsets, linearizably.
func (c *Client) FetchOffsets(ctx context.Context, req *pb.FetchOffsetsRequest) (*pb.FetchOffsetsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.FetchOffsets)
}

// DeleteOffsets removes a consumer group's offsets for some partitions.
func (c *Client) DeleteOffsets(ctx context.Context, req *pb.DeleteOffsetsRequest) (*pb.DeleteOffsetsResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.DeleteOffsets)
}

// ListGroups lists the groups with state, linearizably.
func (c *Client) ListGroups(ctx context.Context, req *pb.ListGroupsRequest) (*pb.ListGroupsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.ListGroups)
}

// DeleteGroups removes groups' state. A retry after an ambiguous first attempt may
// answer GROUP_NOT_FOUND for a group the first attempt deleted.
func (c *Client) DeleteGroups(ctx context.Context, req *pb.DeleteGroupsRequest) (*pb.DeleteGroupsResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.DeleteGroups)
}

// Cluster describes the cluster as the answering node sees it (members, leader,
// term, its applied index), and teaches the client the members' addresses.
func (c *Client) Cluster(ctx context.Context) (*pb.ClusterResponse, error) {
	resp, err := call(ctx, c, retryRead, &pb.ClusterRequest{}, pb.MetastoreClient.Cluster)
	if err == nil {
		c.learnCluster(resp)
	}
	return resp, err
}

// Join adds a node to the cluster as a voter (done by the leader). Joining a node
// that is already a member at the same address succeeds.
func (c *Client) Join(ctx context.Context, req *pb.JoinRequest) error {
	_, err := call(ctx, c, retryAll, req, pb.MetastoreClient.Join)
	return err
}

// Leave removes a node from the cluster (done by the leader).
func (c *Client) Leave(ctx context.Context, req *pb.LeaveRequest) error {
	_, err := call(ctx, c, retryAll, req, pb.MetastoreClient.Leave)
	return err
}

// Watch streams change events until ctx ends or the client is closed; the channel
// is closed then. Any node serves a watch. When a stream breaks, Watch reconnects
// (to another node if need be) and the first event after every (re)connection has
// Resync set: the watcher must re-read what it caches, since events in between were
// lost. Events on one stream are never reordered; across a reconnection the applied
// index may go back (a lagging node), which the Resync covers. Consume promptly: a
// watcher that falls behind gets a Resync in place of what it missed.
func (c *Client) Watch(ctx context.Context, req *pb.WatchRequest) <-chan *pb.WatchEvent {
	out := make(chan *pb.WatchEvent, 64)
	go c.watch(ctx, req, out)
	return out
}

func (c *Client) watch(ctx context.Context, req *pb.WatchRequest, out chan<- *pb.WatchEvent) {
	defer close(out)
	c.mu.Lock()
	next := rand.N(len(c.addrs))
	c.mu.Unlock()
	failures := 0
	for ctx.Err() == nil {
		c.mu.Lock()
		closed := c.closed
		addr := c.addrs[next%len(c.addrs)]
		c.mu.Unlock()
		if closed {
			return
		}
		if c.watchOnce(ctx, addr, req, out) {
			failures = 0
		} else {
			failures++
		}
		next++
		t := time.NewTimer(c.backoff(failures))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// watchOnce runs one stream; it reports whether the stream delivered anything.
func (c *Client) watchOnce(ctx context.Context, addr string, req *pb.WatchRequest, out chan<- *pb.WatchEvent) bool {
	cl, err := c.conn(addr)
	if err != nil {
		return false
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cl.Watch(sctx, req)
	if err != nil {
		return false
	}
	first := true
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				c.opts.Logger.Debug("metastore: watch broke, reconnecting", "node", addr, "err", err)
			}
			return !first
		}
		if first {
			ev.Resync = true
			first = false
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return true
		}
	}
}

// JoinGroup joins a member to a classic consumer group. The coordinator holds the
// call until the join phase completes, up to the member's rebalance timeout, so ctx
// should allow that much. Not idempotent (a repeated join is another join): a failure
// after the request may have been sent is ErrAmbiguous at once. Kafka's refusals are
// in ErrorCode.
func (c *Client) JoinGroup(ctx context.Context, req *pb.JoinGroupRequest) (*pb.JoinGroupResponse, error) {
	return call(ctx, c, waitUntilAmb, req, pb.MetastoreClient.JoinGroup)
}

// SyncGroup hands out (leader) or collects (follower) a generation's assignments. A
// follower's call is held until the leader's arrives, so ctx should allow the
// member's rebalance timeout. Not idempotent, as JoinGroup.
func (c *Client) SyncGroup(ctx context.Context, req *pb.SyncGroupRequest) (*pb.SyncGroupResponse, error) {
	return call(ctx, c, waitUntilAmb, req, pb.MetastoreClient.SyncGroup)
}

// Heartbeat renews a member's session; repeating one is harmless.
func (c *Client) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.Heartbeat)
}

// LeaveGroup removes members from a group. Not retried after the request may have
// been sent: a repeat would answer UNKNOWN_MEMBER_ID for members the first removed.
func (c *Client) LeaveGroup(ctx context.Context, req *pb.LeaveGroupRequest) (*pb.LeaveGroupResponse, error) {
	return call(ctx, c, retryUntilAmb, req, pb.MetastoreClient.LeaveGroup)
}

// DescribeGroups describes groups as their coordinator sees them.
func (c *Client) DescribeGroups(ctx context.Context, req *pb.DescribeGroupsRequest) (*pb.DescribeGroupsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.DescribeGroups)
}

// ConsumerHeartbeat is a KIP-848 consumer group heartbeat: it joins, renews, reconciles
// or leaves a member, and answers its epoch and assignment. Not retried after the
// request may have been sent (ErrAmbiguous): the coordinator may have moved the member
// to a new epoch that only the lost answer told, so the retry must come from the Kafka
// client as a full heartbeat, which restates what the member owns. Kafka's refusals
// are in ErrorCode.
func (c *Client) ConsumerHeartbeat(ctx context.Context, req *pb.ConsumerHeartbeatRequest) (*pb.ConsumerHeartbeatResponse, error) {
	return call(ctx, c, retryUntilAmb, req, pb.MetastoreClient.ConsumerHeartbeat)
}

// ConsumerGroupDescribe describes KIP-848 consumer groups as their coordinator sees
// them.
func (c *Client) ConsumerGroupDescribe(ctx context.Context, req *pb.ConsumerGroupDescribeRequest) (*pb.ConsumerGroupDescribeResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.ConsumerGroupDescribe)
}

// InitProducer issues a producer id (ProducerId -1) or bumps an issued producer's
// epoch. Not retried once possibly sent: a retry would issue another id, which is
// harmless but wasteful, so an ambiguous outcome is reported and the Kafka client
// asks again.
func (c *Client) InitProducer(ctx context.Context, req *pb.InitProducerRequest) (*pb.InitProducerResponse, error) {
	return call(ctx, c, retryUntilAmb, req, pb.MetastoreClient.InitProducer)
}

// AddToTxn adds partitions and groups to transactions (or verifies they are in).
// Adding is idempotent, so it is retried through ambiguity.
func (c *Client) AddToTxn(ctx context.Context, req *pb.AddToTxnRequest) (*pb.AddToTxnResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.AddToTxn)
}

// EndTxn commits or aborts a transaction. A retry of an end that was applied is
// answered as a success (same outcome), so it is retried through ambiguity.
func (c *Client) EndTxn(ctx context.Context, req *pb.EndTxnRequest) (*pb.EndTxnResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.EndTxn)
}

// TxnOffsetCommit records offsets in a transaction.
func (c *Client) TxnOffsetCommit(ctx context.Context, req *pb.TxnOffsetCommitRequest) (*pb.TxnOffsetCommitResponse, error) {
	return call(ctx, c, retryAll, req, pb.MetastoreClient.TxnOffsetCommit)
}

// DescribeTransactions reads transactional ids' state, linearizably.
func (c *Client) DescribeTransactions(ctx context.Context, req *pb.DescribeTransactionsRequest) (*pb.DescribeTransactionsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.DescribeTransactions)
}

// ListTransactions lists transactional ids, linearizably.
func (c *Client) ListTransactions(ctx context.Context, req *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.ListTransactions)
}

// DescribeProducers reads partitions' producer states, linearizably.
func (c *Client) DescribeProducers(ctx context.Context, req *pb.DescribeProducersRequest) (*pb.DescribeProducersResponse, error) {
	return call(ctx, c, retryRead, req, pb.MetastoreClient.DescribeProducers)
}
