package agent

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Config is one agent's settings. DefaultConfig fills the defaults; the caller sets
// the addresses and, for clusters, AgentID.
type Config struct {
	// AgentID names this agent in the metastore's registry; stable across restarts so
	// the agent keeps its Kafka node id (default: the advertised address).
	AgentID string
	// NodeID is the Kafka broker id clients see: NodeIDOf(AgentID), set by Validate.
	NodeID int32
	// KafkaAddr is the host:port the Kafka listener binds.
	KafkaAddr string
	// AdvertiseAddr is the host:port clients are told to connect to (default:
	// KafkaAddr, which must then name a host).
	AdvertiseAddr string
	// Zone is this agent's availability zone, reported as its rack.
	Zone string
	// ClusterID is the cluster id Metadata and DescribeCluster report.
	ClusterID string

	// Linger is how long the open segment collects batches before it is sealed.
	Linger time.Duration
	// SegmentBytes seals the open segment early when it reaches this size.
	SegmentBytes int
	// MaxInflightSegments bounds sealed segments being uploaded and committed at once.
	MaxInflightSegments int
	// MaxBufferedBytes caps produce bytes held in memory (open plus in-flight
	// segments). When full, connections stop being read until uploads finish.
	MaxBufferedBytes int64
	// UploadTimeout bounds how long a sealed segment keeps retrying its PUT and
	// commit; requests waiting on it time out earlier, at their own timeout.
	UploadTimeout time.Duration
	// IntentTTL is how long an upload intent protects an uncommitted object from GC.
	IntentTTL time.Duration

	// MaxRequestBytes is socket.request.max.bytes: a larger request frame closes the
	// connection.
	MaxRequestBytes int32
	// IdleTimeout closes a connection that sent nothing for this long
	// (connections.max.idle.ms).
	IdleTimeout time.Duration
	// MaxPipelined bounds requests read from one connection and not yet answered.
	MaxPipelined int

	// MessageMaxBytes is the broker's message.max.bytes: the largest record batch
	// accepted when a topic does not set max.message.bytes.
	MessageMaxBytes int32
	// AutoCreateTopics is auto.create.topics.enable.
	AutoCreateTopics bool
	// DefaultPartitions is num.partitions for auto-created topics and CreateTopics
	// requests that leave the count to the broker.
	DefaultPartitions int32
	// DefaultReplicationFactor is default.replication.factor, accepted and reported.
	DefaultReplicationFactor int16

	// LeaseTTL is how long the agent's registration lasts without renewal; it renews
	// every third of it.
	LeaseTTL time.Duration

	// CacheBytes bounds the fetch cache of chunks (patched, ready to serve).
	CacheBytes int64
	// FetchSessions bounds the incremental fetch sessions kept (KIP-227).
	FetchSessions int

	Logger *slog.Logger
}

// DefaultConfig returns the defaults for a cluster agent.
func DefaultConfig() Config {
	return Config{
		ClusterID:                "strata",
		Linger:                   250 * time.Millisecond,
		SegmentBytes:             8 << 20,
		MaxInflightSegments:      8,
		MaxBufferedBytes:         256 << 20,
		UploadTimeout:            2 * time.Minute,
		IntentTTL:                time.Hour,
		MaxRequestBytes:          100 << 20,
		IdleTimeout:              10 * time.Minute,
		MaxPipelined:             64,
		MessageMaxBytes:          1048588,
		AutoCreateTopics:         true,
		DefaultPartitions:        1,
		DefaultReplicationFactor: 3,
		LeaseTTL:                 10 * time.Second,
		CacheBytes:               256 << 20,
		FetchSessions:            1000,
	}
}

// Validate reports every problem with c at once, after filling the derived defaults
// (AdvertiseAddr, AgentID, NodeID, Logger).
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.KafkaAddr); err != nil {
		bad("kafka address %q: %v", c.KafkaAddr, err)
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = c.KafkaAddr
	}
	if host, port, err := net.SplitHostPort(c.AdvertiseAddr); err != nil {
		bad("advertise address %q: %v", c.AdvertiseAddr, err)
	} else if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		if c.AdvertiseAddr != c.KafkaAddr || port != "0" {
			bad("advertise address %q: want a port in 1-65535", c.AdvertiseAddr)
		}
	} else if host == "" || net.ParseIP(host).IsUnspecified() {
		bad("advertise address %q: clients need a host to connect to (set the advertised address)", c.AdvertiseAddr)
	}
	if c.AgentID == "" {
		c.AgentID = c.AdvertiseAddr
	}
	c.NodeID = NodeIDOf(c.AgentID)
	if c.Linger < time.Millisecond || c.Linger > time.Minute {
		bad("linger %v: want 1ms to 1m", c.Linger)
	}
	if c.SegmentBytes < 1<<10 || c.SegmentBytes > 1<<30 {
		bad("segment bytes %d: want 1 KiB to 1 GiB", c.SegmentBytes)
	}
	if c.MaxInflightSegments < 1 {
		bad("max in-flight segments %d: want >= 1", c.MaxInflightSegments)
	}
	if c.MaxBufferedBytes < int64(c.MaxRequestBytes) || c.MaxBufferedBytes < int64(c.SegmentBytes) {
		bad("max buffered bytes %d: want at least the segment size and the max request size", c.MaxBufferedBytes)
	}
	if c.UploadTimeout < time.Second {
		bad("upload timeout %v: want >= 1s", c.UploadTimeout)
	}
	if c.IntentTTL < 4*c.UploadTimeout+c.Linger {
		// Linger, a wait for an upload slot, the PUT and the commit must all fit.
		bad("intent ttl %v: want >= 4 x the upload timeout + linger (%v)", c.IntentTTL, 4*c.UploadTimeout+c.Linger)
	}
	if c.MaxRequestBytes < 1<<10 {
		bad("max request bytes %d: want >= 1 KiB", c.MaxRequestBytes)
	}
	if c.IdleTimeout < time.Second {
		bad("idle timeout %v: want >= 1s", c.IdleTimeout)
	}
	if c.MaxPipelined < 1 {
		bad("max pipelined %d: want >= 1", c.MaxPipelined)
	}
	if c.MessageMaxBytes < 1<<10 || c.MessageMaxBytes > c.MaxRequestBytes {
		bad("message.max.bytes %d: want 1 KiB to the max request size", c.MessageMaxBytes)
	}
	if c.DefaultPartitions < 1 {
		bad("num.partitions %d: want >= 1", c.DefaultPartitions)
	}
	if c.DefaultReplicationFactor < 1 {
		bad("default.replication.factor %d: want >= 1", c.DefaultReplicationFactor)
	}
	if c.LeaseTTL < time.Second {
		bad("lease ttl %v: want >= 1s", c.LeaseTTL)
	}
	if c.CacheBytes < 0 {
		bad("cache bytes %d: want >= 0", c.CacheBytes)
	}
	if c.FetchSessions < 0 {
		bad("fetch sessions %d: want >= 0", c.FetchSessions)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(errs) > 0 {
		return fmt.Errorf("agent: %w", errors.Join(errs...))
	}
	return nil
}

// NodeIDOf is the Kafka node id of an agent: a stable 31-bit hash of its id, so every
// agent computes every other's without coordination.
func NodeIDOf(agentID string) int32 {
	h := fnv.New32a()
	h.Write([]byte(agentID))
	id := int32(h.Sum32() & 0x7fffffff)
	if id == 0 {
		id = 1
	}
	return id
}
