// Package server is one metastore node: Raft (hashicorp/raft) with its log in
// metastore/raftlog, its state machine in metastore/state, and the gRPC API of
// metastorepb.Metastore.
//
// Writes are proposed by the leader only; a follower forwards them to the leader
// (or answers NOT_LEADER with the leader's API address when it does not know it).
// Concurrent CommitSegment calls on the leader are gathered into one Raft entry.
// Reads that must be linearizable are served by the leader after a barrier in its
// term and a leadership check. Watches are served by every node from its own
// applied log.
//
// A write whose outcome the leader cannot know (leadership lost while the entry was
// in flight, a deadline passed after it was proposed) is answered with the
// AMBIGUOUS reason, never as a clean failure; see package metastore.
//
// A storage failure (the state cannot apply, the Raft log cannot fsync) stops the
// node: it shuts Raft down and refuses every call. It never serves from a state it
// cannot trust. Done and Err tell the owner, which should exit; a restart recovers
// from what the disk kept.
//
// The package must never decide anything from a clock, randomness or map order
// inside apply: the leader stamps time and ids into commands before proposing.
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/stratalog/strata/metastore"
	"github.com/stratalog/strata/metastore/groups"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/raftlog"
	"github.com/stratalog/strata/metastore/state"
)

// Node is a running metastore node.
type Node struct {
	cfg Config
	log *slog.Logger

	st    *state.State
	fsm   *fsm
	logs  *raftlog.Store
	snaps *raft.FileSnapshotStore
	trans raft.Transport
	raft  *raft.Raft
	book  *addressBook
	watch *hub

	commits *batcher[*pb.CommitSegmentRequest, *pb.CommitSegmentResponse]
	offsets *batcher[*pb.CommitOffsetsCommand, *state.Result]
	txns    *batcher[*pb.Command, *state.Result]
	verify  *verifier
	groups  *groups.Coordinator

	barrierMu   sync.Mutex
	barrierTerm atomic.Uint64 // the term whose barrier has completed

	grpc         *grpc.Server
	apiAdvertise string
	raftAddr     string

	peerMu    sync.Mutex
	peerConns map[string]*grpc.ClientConn // by API address: forwarding, member sync

	startMu  sync.Mutex
	started  bool // Start succeeded: fail stops the node
	failure  atomic.Pointer[error]
	stopCh   chan struct{} // closed when stopping begins
	done     chan struct{} // closed when stopped
	stopOnce sync.Once
	stopErr  error
	wg       sync.WaitGroup
}

// Start opens the node's data, starts Raft and serves the API. On the first start
// it bootstraps from InitialCluster (or itself when embedded) or joins the cluster
// at Join; with existing data it simply starts and rejoins.
func Start(cfg Config) (n *Node, err error) {
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
			for _, l := range []net.Listener{cfg.APIListener, cfg.RaftListener} {
				if l != nil {
					l.Close()
				}
			}
		}
	}()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n = &Node{
		cfg:       cfg,
		log:       cfg.Logger.With("node", cfg.NodeID),
		watch:     newHub(cfg.WatchBuffer),
		peerConns: map[string]*grpc.ClientConn{},
		stopCh:    make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("metastore server: %w", err)
	}
	if n.book, err = loadBook(filepath.Join(cfg.DataDir, "members.json")); err != nil {
		return nil, err
	}
	if n.st, err = state.Open(filepath.Join(cfg.DataDir, "state"), state.Options{Logger: n.log}); err != nil {
		return nil, err
	}
	closers = append(closers, n.st.Close)
	n.st.SetNotifier(n.watch.publish)
	n.fsm = &fsm{st: n.st, log: n.log, onFail: n.fail}

	if n.logs, err = raftlog.Open(filepath.Join(cfg.DataDir, "raft"), raftlog.Options{NoSync: cfg.NoSync, Logger: n.log, FS: cfg.raftFS}); err != nil {
		return nil, err
	}
	closers = append(closers, n.logs.Close)
	logs := logStore{Store: n.logs, onFail: n.fail}
	hlog := hclogger(n.log, "raft")
	if n.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, hlog); err != nil {
		return nil, fmt.Errorf("metastore server: snapshots: %w", err)
	}
	if err := catchUp(n.fsm, n.snaps, logs, n.log); err != nil {
		return nil, err
	}
	hasState, err := raft.HasExistingState(logs, logs, n.snaps)
	if err != nil {
		return nil, fmt.Errorf("metastore server: %w", err)
	}

	// Listen for the API first: its address goes into the address book and joins.
	apiLis := cfg.APIListener
	if apiLis == nil {
		if apiLis, err = net.Listen("tcp", cfg.APIAddr); err != nil {
			return nil, fmt.Errorf("metastore server: api: %w", err)
		}
	}
	closers = append(closers, func() error { apiLis.Close(); return nil })
	n.apiAdvertise = cfg.APIAdvertise
	if n.apiAdvertise == "" {
		n.apiAdvertise = apiLis.Addr().String()
	}

	if cfg.Embedded {
		addr, t := raft.NewInmemTransport(raft.ServerAddress("embedded-" + cfg.NodeID))
		n.trans, n.raftAddr = t, string(addr)
	} else {
		raftLis := cfg.RaftListener
		if raftLis == nil {
			if raftLis, err = net.Listen("tcp", cfg.RaftAddr); err != nil {
				return nil, fmt.Errorf("metastore server: raft: %w", err)
			}
		}
		n.raftAddr = cfg.RaftAdvertise
		if n.raftAddr == "" {
			n.raftAddr = raftLis.Addr().String()
		}
		if p, ok := cfg.InitialCluster[cfg.NodeID]; ok && !hasState && p.RaftAddr != n.raftAddr {
			raftLis.Close()
			return nil, fmt.Errorf("metastore server: initial cluster gives this node raft address %s but it advertises %s", p.RaftAddr, n.raftAddr)
		}
		n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  &streamLayer{Listener: raftLis, advertise: advertiseAddr(n.raftAddr)},
			MaxPool: 3,
			Timeout: 10 * time.Second,
			Logger:  hclogger(n.log, "raft-net"),
		})
	}
	closers = append(closers, func() error {
		if c, ok := n.trans.(interface{ Close() error }); ok {
			return c.Close()
		}
		return nil
	})

	for id, p := range cfg.InitialCluster {
		n.book.set(id, p)
	}
	n.book.set(cfg.NodeID, Peer{RaftAddr: n.raftAddr, APIAddr: n.apiAdvertise})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	// The state persists in Pebble and skips entries at or below its applied index;
	// catchUp above repaired it if it was behind the latest snapshot.
	rc.NoSnapshotRestoreOnStart = true
	rc.NoLegacyTelemetry = true
	rc.Logger = hlog
	if n.raft, err = raft.NewRaft(rc, n.fsm, logs, logs, n.snaps, n.trans); err != nil {
		return nil, fmt.Errorf("metastore server: raft: %w", err)
	}
	closers = append(closers, func() error { return n.raft.Shutdown().Error() })

	switch {
	case hasState:
		n.log.Info("metastore server: restarting from existing state", "applied", n.st.Applied())
	case cfg.Embedded:
		err = n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(n.raftAddr)}}}).Error()
	case len(cfg.InitialCluster) > 0:
		var servers []raft.Server
		for _, id := range sortedIDs(cfg.InitialCluster) {
			servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(cfg.InitialCluster[id].RaftAddr)})
		}
		err = n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	case len(cfg.Join) > 0:
		n.log.Info("metastore server: joining", "via", cfg.Join)
	default:
		err = errors.New("metastore server: no raft state in the data dir and neither an initial cluster nor a join address")
	}
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return nil, fmt.Errorf("metastore server: bootstrap: %w", err)
	}

	n.verify = &verifier{n: n}
	n.groups = groups.New(cfg.Groups, groupStore{n}, nil)
	n.commits = segmentBatcher(n)
	n.offsets = offsetBatcher(n)
	n.txns = txnBatcher(n)
	n.grpc = grpc.NewServer(grpc.WaitForHandlers(true), grpc.MaxRecvMsgSize(metastore.MaxMessageBytes))
	pb.RegisterMetastoreServer(n.grpc, &api{n: n})
	n.goLoop(func() { n.grpc.Serve(apiLis) })
	n.goLoop(n.commits.run)
	n.goLoop(n.offsets.run)
	n.goLoop(n.txns.run)
	n.goLoop(n.leaderLoop)
	n.goLoop(n.expiryLoop)
	n.goLoop(n.groupLoop)
	n.goLoop(n.memberLoop)
	if !hasState && len(cfg.Join) > 0 {
		n.goLoop(n.joinLoop)
	}
	n.startMu.Lock()
	n.started = true
	if n.Err() != nil {
		go n.stop(false)
	}
	n.startMu.Unlock()
	n.log.Info("metastore server: started", "raft", n.raftAddr, "api", n.apiAdvertise)
	return n, nil
}

func (n *Node) goLoop(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// ID is the node's Raft server id.
func (n *Node) ID() string { return n.cfg.NodeID }

// APIAddr is the advertised address of the node's gRPC API.
func (n *Node) APIAddr() string { return n.apiAdvertise }

// RaftAddr is the advertised Raft address.
func (n *Node) RaftAddr() string { return n.raftAddr }

// Raft exposes the Raft instance (tests, admin: Snapshot, Stats).
func (n *Node) Raft() *raft.Raft { return n.raft }

// State exposes the state machine for local reads that need not be linearizable.
func (n *Node) State() *state.State { return n.st }

// IsLeader reports whether this node is the Raft leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Done is closed when the node has stopped: by Close, after a storage failure, or
// after the cluster removed it.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is why the node stopped by itself (a storage failure, or removal), if it did.
func (n *Node) Err() error {
	if p := n.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops the node gracefully: a leader hands leadership to another voter
// first, calls in flight get a few seconds to finish, then Raft stops and the data
// is closed.
func (n *Node) Close() error { return n.stop(true) }

// fail stops the node after a storage failure (or its removal from the cluster). It never blocks its caller (which
// may be Raft's apply goroutine, which stop waits for).
func (n *Node) fail(err error) {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	if n.failure.CompareAndSwap(nil, &err) {
		n.log.Error("metastore server: stopping the node", "err", err)
		// During Start the failure surfaces as Start's error (or is acted on at its
		// end); stopping a half-built node is Start's job.
		if n.started {
			go n.stop(false)
		}
	}
}

// serving is nil while the node may serve calls.
func (n *Node) serving() error {
	if err := n.Err(); err != nil {
		return metastore.UnavailableError("node %s stopped: %v", n.cfg.NodeID, err)
	}
	select {
	case <-n.stopCh:
		return metastore.UnavailableError("node %s is stopping", n.cfg.NodeID)
	default:
		return nil
	}
}

func (n *Node) stop(graceful bool) error {
	n.stopOnce.Do(func() {
		if graceful && n.IsLeader() {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Debug("metastore server: leadership transfer", "err", err)
			}
		}
		close(n.stopCh)
		n.watch.close()
		if graceful {
			stopped := make(chan struct{})
			go func() { n.grpc.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				n.grpc.Stop()
			}
		} else {
			n.grpc.Stop()
		}
		errs := []error{n.raft.Shutdown().Error()}
		n.wg.Wait()
		if c, ok := n.trans.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
		n.peerMu.Lock()
		for _, cc := range n.peerConns {
			cc.Close()
		}
		clear(n.peerConns)
		n.peerMu.Unlock()
		if err := n.logs.Close(); err != nil && !errors.Is(err, raftlog.ErrFailed) {
			errs = append(errs, err)
		}
		errs = append(errs, n.st.Close())
		n.stopErr = errors.Join(errs...)
		close(n.done)
		n.log.Info("metastore server: stopped")
	})
	<-n.done
	return n.stopErr
}

// peer returns a stub for another node's API.
func (n *Node) peer(addr string) (pb.MetastoreClient, error) {
	n.peerMu.Lock()
	defer n.peerMu.Unlock()
	select {
	case <-n.stopCh:
		return nil, metastore.UnavailableError("node %s is stopping", n.cfg.NodeID)
	default:
	}
	cc, ok := n.peerConns[addr]
	if !ok {
		var err error
		cc, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(metastore.MaxMessageBytes)))
		if err != nil {
			return nil, fmt.Errorf("metastore server: %s: %w", addr, err)
		}
		n.peerConns[addr] = cc
	}
	return pb.NewMetastoreClient(cc), nil
}

// leader returns the leader's id and API address as far as this node knows.
func (n *Node) leader() (id, api string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	p, _ := n.book.get(string(lid))
	return string(lid), p.APIAddr
}

// notLeader is the NOT_LEADER refusal, carrying the leader's API address if known.
func (n *Node) notLeader() error {
	id, api := n.leader()
	msg := fmt.Sprintf("node %s is not the leader", n.cfg.NodeID)
	if id != "" {
		msg += "; node " + id + " is"
	}
	return &metastore.Error{Code: pb.ErrorCode_NOT_LEADER, Message: msg, Leader: api}
}

// leaderLoop runs the term's barrier as soon as this node leads, so the first
// linearizable read of a term does not pay for it.
func (n *Node) leaderLoop() {
	for {
		select {
		case <-n.stopCh:
			return
		case leader := <-n.raft.LeaderCh():
			if !leader {
				continue
			}
			n.log.Info("metastore server: leading", "term", n.raft.CurrentTerm())
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			if err := n.barrier(ctx); err != nil {
				n.log.Debug("metastore server: barrier on election", "err", err)
			}
			cancel()
		}
	}
}

// expiryLoop has the leader propose ExpireAgents when some agent's lease ended.
func (n *Node) expiryLoop() {
	t := time.NewTicker(n.cfg.AgentExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stopCh:
			return
		case <-t.C:
		}
		if !n.IsLeader() || n.serving() != nil {
			continue
		}
		agents, err := n.st.Agents()
		if err != nil {
			continue
		}
		now := time.Now().UnixMilli()
		expired := false
		for _, a := range agents {
			if a.LeaseExpiryMs < now {
				expired = true
				break
			}
		}
		if !expired {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		if _, err := n.propose(ctx, &pb.Command{Op: &pb.Command_ExpireAgents{ExpireAgents: &pb.ExpireAgentsCommand{}}}); err != nil {
			n.log.Debug("metastore server: expire agents", "err", err)
		}
		cancel()
	}
}

// memberLoop fills the address book: for members of the Raft configuration whose
// API address this node lacks, it asks the members it can reach.
func (n *Node) memberLoop() {
	t := time.NewTicker(n.cfg.MemberSyncInterval)
	defer t.Stop()
	wasMember := n.inConfig()
	for {
		select {
		case <-n.stopCh:
			return
		case <-t.C:
		}
		// A leader that removed itself shuts Raft down; a follower that was a member
		// and is no longer in the configuration was removed too, as is one that
		// missed its removal (the leader stops replicating to it) when the leader
		// says so.
		if n.serving() != nil {
			return // stopping: Raft may be shut down already
		}
		member := n.inConfig()
		if n.raft.State() == raft.Shutdown || (wasMember && !member) || (wasMember && n.droppedByLeader()) {
			// stop closes stopCh before it shuts Raft down, so a Raft found shut
			// down by stop is seen here.
			if n.serving() == nil {
				n.fail(errRemoved)
			}
			return
		}
		wasMember = wasMember || member
		n.syncMembers()
	}
}

// droppedByLeader asks the members this node knows, when it has no leader, whether
// the leader's configuration still holds it. Only the leader's own answer counts:
// a lagging follower may not know yet that this node was added.
func (n *Node) droppedByLeader() bool {
	if n.raft.State() == raft.Leader {
		return false
	}
	if _, id := n.raft.LeaderWithID(); id != "" {
		return false
	}
	for id, p := range n.book.all() {
		if id == n.cfg.NodeID || p.APIAddr == "" {
			continue
		}
		stub, err := n.peer(p.APIAddr)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := stub.Cluster(ctx, &pb.ClusterRequest{})
		cancel()
		if err != nil {
			continue
		}
		answeredByLeader, holdsUs := false, false
		for _, m := range resp.Members {
			answeredByLeader = answeredByLeader || (m.Leader && m.Id == id)
			holdsUs = holdsUs || m.Id == n.cfg.NodeID
		}
		if answeredByLeader {
			return !holdsUs
		}
	}
	return false
}

// inConfig reports whether this node is in its latest Raft configuration.
func (n *Node) inConfig() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.NodeID {
			return true
		}
	}
	return false
}

// errRemoved stops a node that the cluster removed.
var errRemoved = errors.New("metastore server: this node was removed from the cluster")

func (n *Node) syncMembers() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	missing := false
	for _, s := range f.Configuration().Servers {
		if p, _ := n.book.get(string(s.ID)); p.APIAddr == "" {
			missing = true
			break
		}
	}
	if !missing {
		return
	}
	asked := map[string]bool{n.apiAdvertise: true}
	ask := func(addr string) {
		if addr == "" || asked[addr] {
			return
		}
		asked[addr] = true
		stub, err := n.peer(addr)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := stub.Cluster(ctx, &pb.ClusterRequest{})
		if err != nil {
			return
		}
		for _, m := range resp.Members {
			if m.ApiAddress != "" && validID(m.Id) == nil {
				n.book.fill(m.Id, Peer{RaftAddr: m.RaftAddress, APIAddr: m.ApiAddress})
			}
		}
	}
	for _, p := range n.book.all() {
		ask(p.APIAddr)
	}
	for _, a := range n.cfg.Join {
		ask(a)
	}
}

// joinLoop asks the cluster to add this node until it is a member.
func (n *Node) joinLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := metastore.Dial(ctx, n.cfg.Join, metastore.Options{Logger: n.log, Timeout: time.Minute})
	if err != nil {
		n.log.Error("metastore server: join", "err", err)
		return
	}
	defer c.Close()
	req := &pb.JoinRequest{Id: n.cfg.NodeID, RaftAddress: n.raftAddr, ApiAddress: n.apiAdvertise}
	for ctx.Err() == nil {
		err := c.Join(ctx, req)
		if err == nil {
			n.log.Info("metastore server: joined the cluster")
			n.syncMembers()
			return
		}
		n.log.Warn("metastore server: join failed, retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// newTopicID is the id the leader gives a topic created without one.
func newTopicID() []byte {
	id := make([]byte, 16)
	rand.Read(id)
	return id
}
