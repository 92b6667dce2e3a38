package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/stratalog/strata/internal/metrics"
	"github.com/stratalog/strata/metastore"
	"github.com/stratalog/strata/metastore/groups"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/server"
)

const metastoreSynopsis = `metastore [flags]                       run a metastore node
       strata metastore leave --api-addr ADDR --node-id N   remove a member
       strata metastore cluster --api-addr ADDR            print the members

A new cluster: start every node with the same --initial-cluster, each with its own
--node-id. A node added later: start it with --join pointing at a member's API.
Restarting a node with the same flags on its data dir rejoins: --initial-cluster
and --join only matter on the first start.

--initial-cluster is id=raftHost:port/apiHost:port,... (the /api part may be left
out, but then followers cannot point clients at that node while it leads until they
learn its API address from the others).`

// runMetastore runs a node, or one of the admin verbs leave and cluster.
func runMetastore(ctx context.Context, env *environment, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "leave":
			return runMetastoreLeave(ctx, env, args[1:])
		case "cluster":
			return runMetastoreCluster(ctx, env, args[1:])
		}
	}
	fs := newFlagSet(env, "metastore", metastoreSynopsis)
	cfg := server.DefaultConfig()
	var lf logFlags
	lf.register(fs)
	var mf metricsFlags
	mf.register(fs)
	fs.StringVar(&cfg.NodeID, "node-id", "", "this node's id in the cluster, never changed for a data dir (required)")
	fs.StringVar(&cfg.DataDir, "data", "", "data directory: raft log, snapshots, state (required)")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", "127.0.0.1:7400", "host:port Raft listens on")
	fs.StringVar(&cfg.RaftAdvertise, "raft-advertise", "", "host:port other nodes reach Raft at (default --raft-addr)")
	fs.StringVar(&cfg.APIAddr, "api-addr", "127.0.0.1:7401", "host:port the gRPC API listens on")
	fs.StringVar(&cfg.APIAdvertise, "api-advertise", "", "host:port clients reach the API at (default --api-addr)")
	initial := fs.String("initial-cluster", "", "founding members: id=raftHost:port/apiHost:port,... (first start only)")
	join := fs.String("join", "", "API addresses (comma-separated) of a running cluster to join (first start only)")
	fs.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", cfg.SnapshotInterval, "how often to check whether a snapshot is due")
	fs.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", cfg.SnapshotThreshold, "entries applied since the last snapshot that make one due")
	fs.Uint64Var(&cfg.TrailingLogs, "trailing-logs", cfg.TrailingLogs, "log entries kept behind a snapshot for slow followers")
	fs.IntVar(&cfg.CommitBatchMax, "commit-batch-max", cfg.CommitBatchMax, "most CommitSegment calls gathered into one Raft entry")
	fs.IntVar(&cfg.CommitInflight, "commit-inflight", cfg.CommitInflight, "commit batches in Raft at once")
	fs.DurationVar(&cfg.CommitBatchWindow, "commit-batch-window", cfg.CommitBatchWindow, "how long a commit batch waits to fill (0: never)")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", cfg.HeartbeatTimeout, "Raft heartbeat timeout")
	fs.DurationVar(&cfg.ElectionTimeout, "election-timeout", cfg.ElectionTimeout, "Raft election timeout")
	registerGroupFlags(fs, &cfg.Groups)
	registerProducerFlags(fs, &cfg)
	if err := parseFlags(fs, env, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "strata metastore: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	var errs []error
	if *initial != "" {
		peers, err := server.ParsePeers(*initial)
		if err != nil {
			errs = append(errs, fmt.Errorf("--initial-cluster: %w", err))
		}
		cfg.InitialCluster = peers
	}
	cfg.Join = splitList(*join)
	// A shorter heartbeat needs a lease no longer than it.
	cfg.LeaderLeaseTimeout = min(cfg.LeaderLeaseTimeout, cfg.HeartbeatTimeout)
	log, err := lf.logger(env.stderr)
	if err != nil {
		errs = append(errs, err)
	}
	cfg.Logger = log
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := mf.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("strata metastore: %w", errors.Join(errs...))
	}

	node, err := server.Start(cfg)
	if err != nil {
		return fmt.Errorf("strata metastore: %w", err)
	}
	reg := mf.registry()
	if reg != nil {
		reg.MustRegister(metrics.NewLeaderGauge(node.IsLeader))
	}
	stopMetrics, err := mf.serve(ctx, reg, log)
	if err != nil {
		node.Close()
		return fmt.Errorf("strata metastore: %w", err)
	}
	defer stopMetrics()
	select {
	case <-ctx.Done():
		log.Info("strata metastore: shutting down")
		if err := node.Close(); err != nil {
			return fmt.Errorf("strata metastore: %w", err)
		}
		return nil
	case <-node.Done():
		// Stopped by itself: a storage failure. Exit non-zero; a restart recovers
		// from what the disk kept.
		return fmt.Errorf("strata metastore: node stopped: %w", node.Err())
	}
}

func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// adminClient parses the flags shared by the admin verbs and dials the cluster.
func adminClient(ctx context.Context, env *environment, fs *flag.FlagSet, args []string) (*metastore.Client, context.Context, context.CancelFunc, error) {
	addrs := fs.String("api-addr", "127.0.0.1:7401", "API addresses (comma-separated) of cluster members")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := parseFlags(fs, env, args); err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	c, err := metastore.Dial(ctx, splitList(*addrs), metastore.Options{})
	if err != nil {
		cancel()
		return nil, nil, nil, fmt.Errorf("strata metastore %s: %w", fs.Name(), err)
	}
	return c, ctx, cancel, nil
}

func runMetastoreLeave(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "leave", "metastore leave --api-addr ADDR[,ADDR...] --node-id N")
	id := fs.String("node-id", "", "id of the member to remove (required)")
	c, ctx, cancel, err := adminClient(ctx, env, fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	if *id == "" {
		fmt.Fprintln(env.stderr, "strata metastore leave: --node-id is required")
		return errUsage
	}
	if err := c.Leave(ctx, &pb.LeaveRequest{Id: *id}); err != nil {
		return fmt.Errorf("strata metastore leave: %w", err)
	}
	fmt.Fprintf(env.stdout, "node %s removed\n", *id)
	return nil
}

func runMetastoreCluster(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "cluster", "metastore cluster --api-addr ADDR[,ADDR...]")
	c, ctx, cancel, err := adminClient(ctx, env, fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	resp, err := c.Cluster(ctx)
	if err != nil {
		return fmt.Errorf("strata metastore cluster: %w", err)
	}
	type member struct {
		ID     string `json:"id"`
		Raft   string `json:"raft_address"`
		API    string `json:"api_address,omitempty"`
		Voter  bool   `json:"voter"`
		Leader bool   `json:"leader"`
	}
	out := struct {
		Term    uint64   `json:"term"`
		Applied uint64   `json:"applied_index"`
		Members []member `json:"members"`
	}{Term: resp.Term, Applied: resp.AppliedIndex}
	for _, m := range resp.Members {
		out.Members = append(out.Members, member{m.Id, m.RaftAddress, m.ApiAddress, m.Voter, m.Leader})
	}
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// registerGroupFlags adds the group coordinator's settings (Kafka's group.* and
// offsets.* broker configs) to a command that runs a metastore.
func registerGroupFlags(fs *flag.FlagSet, c *groups.Config) {
	fs.DurationVar(&c.InitialRebalanceDelay, "group-initial-rebalance-delay", c.InitialRebalanceDelay, "how long an empty group's first rebalance waits for more members (group.initial.rebalance.delay.ms)")
	fs.DurationVar(&c.MinSessionTimeout, "group-min-session-timeout", c.MinSessionTimeout, "shortest session timeout a member may ask for (group.min.session.timeout.ms)")
	fs.DurationVar(&c.MaxSessionTimeout, "group-max-session-timeout", c.MaxSessionTimeout, "longest session timeout a member may ask for (group.max.session.timeout.ms)")
	fs.IntVar(&c.MaxSize, "group-max-size", c.MaxSize, "most members in one group, 0 for no limit (group.max.size)")
	fs.DurationVar(&c.OffsetsRetention, "offsets-retention", c.OffsetsRetention, "how long an empty group's committed offsets are kept, 0 for ever (offsets.retention.minutes)")
	fs.DurationVar(&c.ConsumerSessionTimeout, "group-consumer-session-timeout", c.ConsumerSessionTimeout, "session timeout of KIP-848 consumer group members (group.consumer.session.timeout.ms)")
	fs.DurationVar(&c.ConsumerHeartbeatInterval, "group-consumer-heartbeat-interval", c.ConsumerHeartbeatInterval, "heartbeat interval KIP-848 members are given (group.consumer.heartbeat.interval.ms)")
	fs.DurationVar(&c.OffsetsRetentionCheck, "offsets-retention-check-interval", c.OffsetsRetentionCheck, "how often expired offsets are looked for (offsets.retention.check.interval.ms)")
}

// registerProducerFlags adds the idempotent producers' settings to a command that
// runs a metastore.
func registerProducerFlags(fs *flag.FlagSet, c *server.Config) {
	fs.DurationVar(&c.ProducerExpiration, "producer-id-expiration", c.ProducerExpiration, "forget idempotent producers idle this long, 0 for never (producer.id.expiration.ms)")
	fs.DurationVar(&c.ProducerExpiryInterval, "producer-id-expiration-check-interval", c.ProducerExpiryInterval, "how often idle producers (and unused transactional ids) are looked for")
	fs.DurationVar(&c.TransactionMaxTimeout, "transaction-max-timeout", c.TransactionMaxTimeout, "the longest transaction timeout a producer may ask for (transaction.max.timeout.ms)")
	fs.DurationVar(&c.TransactionalIDExpiration, "transactional-id-expiration", c.TransactionalIDExpiration, "forget transactional ids with no transaction for this long, 0 for never (transactional.id.expiration.ms)")
}
