package server

import (
	"github.com/stratalog/strata/metastore/groups"

	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Peer is one member's addresses: where Raft reaches it and where clients reach its
// gRPC API.
type Peer struct {
	RaftAddr string
	APIAddr  string // may be empty when unknown
}

// Config configures a Node. DefaultConfig fills everything but the identity and the
// addresses; Validate reports every problem at once.
type Config struct {
	// NodeID names the node in the Raft configuration ("1", "ms-a", ...). It must
	// never change for a data directory.
	NodeID string
	// DataDir holds raft/ (the log), snapshots/, state/ and members.json.
	DataDir string

	// RaftAddr is where Raft listens (host:port); RaftAdvertise is what the other
	// nodes dial (default RaftAddr, required when RaftAddr binds every interface).
	RaftAddr, RaftAdvertise string
	// APIAddr is where the gRPC API listens; APIAdvertise is what clients and other
	// nodes dial (default APIAddr).
	APIAddr, APIAdvertise string
	// RaftListener and APIListener, when set, are used instead of listening on
	// RaftAddr and APIAddr (tests, embedding). The node closes them, also when
	// Start fails.
	RaftListener, APIListener net.Listener

	// InitialCluster is every member of a new cluster, this node included, by node
	// id. It is used only on the first start, when DataDir holds no Raft state: the
	// node then bootstraps Raft with all of them as voters (every member bootstraps
	// the same configuration, which is harmless). Once the node has state it is
	// ignored, except that its API addresses seed the address book.
	InitialCluster map[string]Peer
	// Join lists API addresses of members of a running cluster. On the first start
	// the node asks them (retrying until one leader accepts) to add it as a voter.
	// Ignored once the node has Raft state. Exclusive with InitialCluster.
	Join []string
	// Embedded runs a single node with Raft on an in-memory transport (no Raft
	// port): it bootstraps itself on the first start. For `strata local` and tests.
	Embedded bool

	// Snapshots: Raft checks every SnapshotInterval whether SnapshotThreshold
	// entries were applied since the last snapshot, keeps TrailingLogs entries
	// behind it for slow followers, and SnapshotRetain snapshots on disk.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotRetain    int

	// Raft timing (hashicorp/raft's meanings).
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration

	// Commit batching: concurrent CommitSegment calls on the leader are gathered
	// into one Raft entry of at most CommitBatchMax calls and CommitBatchMaxBytes;
	// at most CommitInflight entries are in Raft at once (while all are busy, calls
	// gather). CommitBatchWindow, when positive, waits that long for a batch to
	// fill before proposing it (0: never wait).
	CommitBatchMax      int
	CommitBatchMaxBytes int
	CommitInflight      int
	CommitBatchWindow   time.Duration

	// ApplyTimeout bounds how long the leader waits for one proposal (the caller's
	// deadline also applies); past it the outcome is ambiguous.
	ApplyTimeout time.Duration
	// AgentExpiryInterval is how often the leader looks for agents whose lease
	// ended and proposes their expiry.
	AgentExpiryInterval time.Duration
	// MemberSyncInterval is how often a node that lacks a member's API address asks
	// the others for it.
	MemberSyncInterval time.Duration
	// WatchBuffer is how many events a watcher may lag before it gets a resync.
	WatchBuffer int

	// NoSync makes the Raft log skip fsync. Tests and benchmarks only: a crash then
	// loses acknowledged writes.
	NoSync bool

	Logger *slog.Logger

	// Groups configures the group coordinator the leader runs.
	Groups groups.Config
	// ProducerExpiration is producer.id.expiration.ms: idempotent producers idle this
	// long are forgotten (0: never). ProducerExpiryInterval is how often the leader
	// looks for them.
	ProducerExpiration, ProducerExpiryInterval time.Duration
	// TransactionMaxTimeout is transaction.max.timeout.ms: the longest timeout a
	// transactional producer may ask for. TransactionalIDExpiration is
	// transactional.id.expiration.ms: an id with no transaction for this long is
	// forgotten (0: never), checked every ProducerExpiryInterval.
	TransactionMaxTimeout, TransactionalIDExpiration time.Duration

	// raftFS, when set, is the file system of the Raft log (tests inject faults).
	raftFS vfs.FS
}

// DefaultConfig returns the production defaults; the caller sets NodeID, DataDir,
// the addresses and InitialCluster or Join.
func DefaultConfig() Config {
	return Config{
		SnapshotInterval:    2 * time.Minute,
		SnapshotThreshold:   8192,
		TrailingLogs:        10240,
		SnapshotRetain:      2,
		HeartbeatTimeout:    time.Second,
		ElectionTimeout:     time.Second,
		LeaderLeaseTimeout:  500 * time.Millisecond,
		CommitTimeout:       50 * time.Millisecond,
		CommitBatchMax:      512,
		CommitBatchMaxBytes: 4 << 20,
		CommitInflight:      4,
		ApplyTimeout:        10 * time.Second,
		AgentExpiryInterval: time.Second,
		MemberSyncInterval:  2 * time.Second,
		WatchBuffer:         1024,
		Groups:              groups.DefaultConfig(),

		ProducerExpiration:     24 * time.Hour,
		ProducerExpiryInterval: 10 * time.Minute,

		TransactionMaxTimeout:     15 * time.Minute,
		TransactionalIDExpiration: 7 * 24 * time.Hour,
	}
}

// EmbeddedConfig is a single node in dataDir with Raft in memory and the API on
// apiAddr ("127.0.0.1:0" picks a free port; Node.APIAddr tells which).
func EmbeddedConfig(dataDir, apiAddr string) Config {
	c := DefaultConfig()
	c.NodeID = "1"
	c.DataDir = dataDir
	c.APIAddr = apiAddr
	c.Embedded = true
	// One voter: elections are instant, no need to wait a heartbeat timeout long.
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	return c
}

// Validate reports every problem with c.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := validID(c.NodeID); err != nil {
		bad("node id: %v", err)
	}
	if err := c.Groups.Validate(); err != nil {
		bad("%v", err)
	}
	if c.TransactionMaxTimeout <= 0 || c.TransactionalIDExpiration < 0 {
		bad("transaction max timeout %v must be positive and transactional id expiration %v not negative", c.TransactionMaxTimeout, c.TransactionalIDExpiration)
	}
	if c.TransactionalIDExpiration > 0 && c.ProducerExpiryInterval <= 0 {
		bad("transactional id expiration %v needs a positive check interval, got %v", c.TransactionalIDExpiration, c.ProducerExpiryInterval)
	}
	if c.ProducerExpiration < 0 || (c.ProducerExpiration > 0 && c.ProducerExpiryInterval <= 0) {
		bad("producer expiration %v needs a positive check interval, got %v", c.ProducerExpiration, c.ProducerExpiryInterval)
	}
	if c.DataDir == "" {
		bad("data dir is required")
	}
	if c.APIListener == nil {
		if err := validListen(c.APIAddr, c.APIAdvertise); err != nil {
			bad("api address: %v", err)
		}
	}
	if c.APIAdvertise != "" {
		if err := validHostPort(c.APIAdvertise); err != nil {
			bad("api advertise address: %v", err)
		}
	}
	if c.Embedded {
		if len(c.InitialCluster) > 0 || len(c.Join) > 0 {
			bad("an embedded node has no initial cluster and joins nothing")
		}
	} else {
		if c.RaftListener == nil {
			if err := validListen(c.RaftAddr, c.RaftAdvertise); err != nil {
				bad("raft address: %v", err)
			}
		}
		if c.RaftAdvertise != "" {
			if err := validHostPort(c.RaftAdvertise); err != nil {
				bad("raft advertise address: %v", err)
			}
		}
		if len(c.InitialCluster) > 0 && len(c.Join) > 0 {
			bad("initial cluster and join are exclusive: a node either founds the cluster or joins it")
		}
		if len(c.InitialCluster) > 0 {
			if _, ok := c.InitialCluster[c.NodeID]; !ok {
				bad("initial cluster does not contain this node (%q)", c.NodeID)
			}
			for _, id := range sortedIDs(c.InitialCluster) {
				p := c.InitialCluster[id]
				if err := validID(id); err != nil {
					bad("initial cluster: node id: %v", err)
				}
				if err := validHostPort(p.RaftAddr); err != nil {
					bad("initial cluster: node %s raft address: %v", id, err)
				}
				if p.APIAddr != "" {
					if err := validHostPort(p.APIAddr); err != nil {
						bad("initial cluster: node %s api address: %v", id, err)
					}
				}
			}
		}
		for _, a := range c.Join {
			if err := validHostPort(a); err != nil {
				bad("join address: %v", err)
			}
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"snapshot interval", c.SnapshotInterval},
		{"heartbeat timeout", c.HeartbeatTimeout},
		{"election timeout", c.ElectionTimeout},
		{"leader lease timeout", c.LeaderLeaseTimeout},
		{"commit timeout", c.CommitTimeout},
		{"apply timeout", c.ApplyTimeout},
		{"agent expiry interval", c.AgentExpiryInterval},
		{"member sync interval", c.MemberSyncInterval},
	} {
		if d.v <= 0 {
			bad("%s must be positive, got %v", d.name, d.v)
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("leader lease timeout %v exceeds heartbeat timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("election timeout %v is below heartbeat timeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.CommitBatchWindow < 0 {
		bad("commit batch window must not be negative, got %v", c.CommitBatchWindow)
	}
	if c.SnapshotThreshold < 1 {
		bad("snapshot threshold must be at least 1")
	}
	if c.SnapshotRetain < 1 {
		bad("snapshot retain must be at least 1, got %d", c.SnapshotRetain)
	}
	if c.CommitBatchMax < 1 || c.CommitBatchMax > 100_000 {
		bad("commit batch max must be in [1, 100000], got %d", c.CommitBatchMax)
	}
	if c.CommitBatchMaxBytes < 1<<10 {
		bad("commit batch max bytes must be at least 1 KiB, got %d", c.CommitBatchMaxBytes)
	}
	if c.CommitInflight < 1 || c.CommitInflight > 1024 {
		bad("commit inflight must be in [1, 1024], got %d", c.CommitInflight)
	}
	if c.WatchBuffer < 1 {
		bad("watch buffer must be at least 1, got %d", c.WatchBuffer)
	}
	if len(errs) > 0 {
		return fmt.Errorf("metastore server: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

func validID(id string) error {
	switch {
	case id == "":
		return errors.New("empty")
	case len(id) > 64:
		return fmt.Errorf("%q is longer than 64 bytes", id)
	case strings.ContainsAny(id, ",=/ \t\n"):
		return fmt.Errorf("%q contains one of , = / or a space", id)
	}
	return nil
}

func validHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if port == "" || port == "0" {
		return fmt.Errorf("%q has no fixed port", addr)
	}
	return nil
}

// validListen checks a listen address and whether others can be told where it is.
func validListen(listen, advertise string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	if advertise == "" && unspecifiedHost(host) {
		return fmt.Errorf("%q listens on every interface: set the advertise address", listen)
	}
	return nil
}

func unspecifiedHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func sortedIDs[V any](m map[string]V) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ParsePeers parses an initial cluster: comma-separated id=raftAddr[/apiAddr], e.g.
//
//	1=10.0.0.1:7000/10.0.0.1:7001,2=10.0.0.2:7000/10.0.0.2:7001
//
// The API address is optional but without it a follower cannot point clients at
// that member while it leads until the address is learned (see Node).
func ParsePeers(s string) (map[string]Peer, error) {
	peers := map[string]Peer{}
	if strings.TrimSpace(s) == "" {
		return peers, nil
	}
	var errs []error
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		id, addrs, ok := strings.Cut(item, "=")
		if !ok || id == "" || addrs == "" {
			errs = append(errs, fmt.Errorf("%q: want id=raftHost:port[/apiHost:port]", item))
			continue
		}
		if _, dup := peers[id]; dup {
			errs = append(errs, fmt.Errorf("node %q listed twice", id))
			continue
		}
		raftAddr, apiAddr, _ := strings.Cut(addrs, "/")
		peers[id] = Peer{RaftAddr: raftAddr, APIAddr: apiAddr}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("metastore server: initial cluster: %w", errors.Join(errs...))
	}
	return peers, nil
}

// FormatPeers is ParsePeers' inverse, ordered by id.
func FormatPeers(peers map[string]Peer) string {
	var b strings.Builder
	for i, id := range sortedIDs(peers) {
		if i > 0 {
			b.WriteByte(',')
		}
		p := peers[id]
		b.WriteString(id + "=" + p.RaftAddr)
		if p.APIAddr != "" {
			b.WriteString("/" + p.APIAddr)
		}
	}
	return b.String()
}
