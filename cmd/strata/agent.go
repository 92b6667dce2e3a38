package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratalog/strata/agent"
	"github.com/stratalog/strata/metastore"
	"github.com/stratalog/strata/metastore/groups"
	"github.com/stratalog/strata/metastore/server"
	"github.com/stratalog/strata/objectlog/objstore"
	"github.com/stratalog/strata/objectlog/objstore/s3store"
	"github.com/stratalog/strata/objectlog/objstore/storeurl"
)

const agentSynopsis = `agent --metastore HOST:PORT,... --store URL [flags]   run a Kafka agent

Agents are stateless: run as many as you like against one metastore cluster and one
bucket. Each registers itself, and clients may connect to any of them.`

const localSynopsis = `local [flags]   run everything in one process

An embedded single-node metastore, one agent and a local-directory store under
--data, serving Kafka on --kafka-addr. --store s3://bucket/prefix (with
--s3-endpoint for MinIO) keeps the data in S3 instead. Data survives restarts;
SIGTERM flushes open segments and exits.

The functions (compaction, retention, garbage collection) run in-process: every
segment the agent writes is handed to them, and a sweep runs every --sweep-interval.
--functions=false turns them off.`

// agentFlags are the flags strata agent and strata local share.
type agentFlags struct {
	cfg       agent.Config
	store     string
	s3        s3store.Config
	autoTopic bool
	// storeLatency delays every store call (hidden, for tests); nil for none.
	storeLatency objstore.Latency
	logFlags
	metrics metricsFlags
	// reg is the metrics registry finish made; nil when --metrics-addr is not set.
	reg *prometheus.Registry
}

func (f *agentFlags) register(fs *flag.FlagSet, linger time.Duration) {
	f.cfg = agent.DefaultConfig()
	f.s3 = s3store.DefaultConfig()
	c := &f.cfg
	f.logFlags.register(fs)
	f.metrics.register(fs)
	fs.StringVar(&c.KafkaAddr, "kafka-addr", "127.0.0.1:9092", "host:port the Kafka listener binds")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", "", "host:port clients are told to connect to (default --kafka-addr)")
	fs.StringVar(&c.AgentID, "agent-id", "", "this agent's stable id in the registry (default the advertised address)")
	fs.StringVar(&c.Zone, "zone", "", "availability zone, reported as the broker rack")
	fs.StringVar(&c.ClusterID, "cluster-id", c.ClusterID, "cluster id reported to clients")
	fs.DurationVar(&c.Linger, "linger", linger, "how long a segment collects batches before it is uploaded")
	fs.IntVar(&c.SegmentBytes, "segment-bytes", c.SegmentBytes, "segment size that triggers an upload before the linger ends")
	fs.IntVar(&c.MaxInflightSegments, "max-inflight-segments", c.MaxInflightSegments, "segments uploading at once")
	fs.Int64Var(&c.MaxBufferedBytes, "max-buffered-bytes", c.MaxBufferedBytes, "produce bytes held in memory before connections are paused")
	fs.DurationVar(&c.UploadTimeout, "upload-timeout", c.UploadTimeout, "how long a segment keeps retrying its upload and commit")
	var maxReq int
	fs.Func("socket-request-max-bytes", fmt.Sprintf("largest request frame accepted (default %d)", c.MaxRequestBytes), func(s string) error {
		_, err := fmt.Sscan(s, &maxReq)
		c.MaxRequestBytes = int32(maxReq)
		return err
	})
	fs.DurationVar(&c.IdleTimeout, "connections-max-idle", c.IdleTimeout, "close connections idle this long")
	fs.Func("message-max-bytes", fmt.Sprintf("largest record batch when a topic sets no max.message.bytes (default %d)", c.MessageMaxBytes), func(s string) error {
		var n int
		_, err := fmt.Sscan(s, &n)
		c.MessageMaxBytes = int32(n)
		return err
	})
	fs.BoolVar(&f.autoTopic, "auto-create-topics", c.AutoCreateTopics, "create topics on first metadata request (auto.create.topics.enable)")
	fs.Func("num-partitions", fmt.Sprintf("partitions of auto-created topics (default %d)", c.DefaultPartitions), func(s string) error {
		var n int
		_, err := fmt.Sscan(s, &n)
		c.DefaultPartitions = int32(n)
		return err
	})
	fs.Func("default-replication-factor", fmt.Sprintf("replication factor reported for new topics (default %d)", c.DefaultReplicationFactor), func(s string) error {
		var n int
		_, err := fmt.Sscan(s, &n)
		c.DefaultReplicationFactor = int16(n)
		return err
	})
	fs.Int64Var(&c.CacheBytes, "cache-bytes", c.CacheBytes, "fetch cache size")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "registration lease; renewed every third of it")
	fs.Func("store-latency", storeLatencyUsage, func(s string) (err error) {
		f.storeLatency, err = parseStoreLatency(s)
		return err
	})
	registerS3Flags(fs, &f.s3)
}

// registerS3Flags adds the S3 settings of a store URL's s3:// backend.
func registerS3Flags(fs *flag.FlagSet, c *s3store.Config) {
	fs.StringVar(&c.Endpoint, "s3-endpoint", "", "S3 endpoint (for MinIO: http://127.0.0.1:9000)")
	fs.StringVar(&c.Region, "s3-region", "", "S3 region (default from the environment)")
	fs.BoolVar(&c.PathStyle, "s3-path-style", false, "path-style bucket addressing (default true when --s3-endpoint is set)")
	fs.StringVar(&c.AccessKeyID, "s3-access-key", "", "S3 access key id (default the AWS credential chain)")
	fs.StringVar(&c.SecretAccessKey, "s3-secret-key", "", "S3 secret access key")
}

// defaultPathStyle turns path-style addressing on for an S3 endpoint (MinIO needs it)
// unless --s3-path-style was given, on the command line or in the environment.
func defaultPathStyle(fs *flag.FlagSet, env *environment, c *s3store.Config) {
	set := false
	fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == "s3-path-style" })
	if !set && env.getenv("STRATA_S3_PATH_STYLE") == "" && c.Endpoint != "" {
		c.PathStyle = true
	}
}

// finish validates the flags after parsing and opens the store, counted in f.reg
// when --metrics-addr is set.
func (f *agentFlags) finish(ctx context.Context, fs *flag.FlagSet, env *environment, log *slog.Logger) (objstore.Store, error) {
	f.cfg.AutoCreateTopics = f.autoTopic
	f.cfg.Logger = log
	defaultPathStyle(fs, env, &f.s3)
	var errs []error
	if err := f.cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if f.store == "" {
		errs = append(errs, errors.New("--store is required (file:///abs/path, s3://bucket/prefix, mem://)"))
	}
	if err := f.metrics.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	st, err := storeurl.Open(ctx, f.store, f.s3)
	if err != nil {
		return nil, fmt.Errorf("--store: %w", err)
	}
	f.reg = f.metrics.registry()
	return withStoreLatency(countStore(f.reg, st), f.storeLatency), nil
}

func runAgent(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "agent", agentSynopsis)
	var f agentFlags
	f.register(fs, agent.DefaultConfig().Linger)
	metaAddrs := fs.String("metastore", "127.0.0.1:7401", "API addresses (comma-separated) of metastore nodes")
	fs.StringVar(&f.store, "store", "", "object store URL: s3://bucket/prefix, file:///abs/path (required)")
	if err := parseFlags(fs, env, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "strata agent: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	log, err := f.logger(env.stderr)
	if err != nil {
		return fmt.Errorf("strata agent: %w", err)
	}
	st, err := f.finish(ctx, fs, env, log)
	if err != nil {
		return fmt.Errorf("strata agent: %w", err)
	}
	stopMetrics, err := f.metrics.serve(ctx, f.reg, log)
	if err != nil {
		return fmt.Errorf("strata agent: %w", err)
	}
	defer stopMetrics()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	client, err := metastore.Dial(dctx, splitList(*metaAddrs), metastore.Options{Logger: log})
	cancel()
	if err != nil {
		return fmt.Errorf("strata agent: %w", err)
	}
	defer client.Close()
	return serveAgent(ctx, "strata agent", f.cfg, client, st, f.reg, log, nil)
}

func runLocal(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "local", localSynopsis)
	var f agentFlags
	// Locally the store is a disk, so a short linger costs nothing and keeps latency low.
	f.register(fs, 5*time.Millisecond)
	data := fs.String("data", "./strata-data", "data directory: metastore state and, unless --store is set, the objects")
	metaAddr := fs.String("metastore-addr", "127.0.0.1:0", "host:port of the embedded metastore's API (port 0: any free port)")
	fs.StringVar(&f.store, "store", "", "object store URL (default file://DATA/objects)")
	groupCfg := groups.DefaultConfig()
	registerGroupFlags(fs, &groupCfg)
	producerCfg := server.DefaultConfig()
	registerProducerFlags(fs, &producerCfg)
	var fnFlags localFunctionFlags
	fnFlags.register(fs)
	if err := parseFlags(fs, env, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "strata local: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if err := fnFlags.validate(); err != nil {
		return fmt.Errorf("strata local: %w", err)
	}
	log, err := f.logger(env.stderr)
	if err != nil {
		return fmt.Errorf("strata local: %w", err)
	}
	dir, err := filepath.Abs(*data)
	if err != nil {
		return fmt.Errorf("strata local: --data: %w", err)
	}
	if f.store == "" {
		objects := filepath.Join(dir, "objects")
		if err := os.MkdirAll(objects, 0o755); err != nil {
			return fmt.Errorf("strata local: %w", err)
		}
		f.store = "file://" + objects
	}
	st, err := f.finish(ctx, fs, env, log)
	if err != nil {
		return fmt.Errorf("strata local: %w", err)
	}
	stopMetrics, err := f.metrics.serve(ctx, f.reg, log)
	if err != nil {
		return fmt.Errorf("strata local: %w", err)
	}
	defer stopMetrics()
	mcfg := server.EmbeddedConfig(filepath.Join(dir, "metastore"), *metaAddr)
	mcfg.Logger = log
	mcfg.Groups = groupCfg
	mcfg.ProducerExpiration, mcfg.ProducerExpiryInterval = producerCfg.ProducerExpiration, producerCfg.ProducerExpiryInterval
	mcfg.TransactionMaxTimeout, mcfg.TransactionalIDExpiration = producerCfg.TransactionMaxTimeout, producerCfg.TransactionalIDExpiration
	if err := mcfg.Validate(); err != nil {
		return fmt.Errorf("strata local: %w", err)
	}
	node, err := server.Start(mcfg)
	if err != nil {
		return fmt.Errorf("strata local: metastore: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	client, err := metastore.Dial(dctx, []string{node.APIAddr()}, metastore.Options{Logger: log})
	cancel()
	if err != nil {
		node.Close()
		return fmt.Errorf("strata local: %w", err)
	}
	fns, err := startLocalFunctions(fnFlags, client, st, log)
	if err != nil {
		client.Close()
		node.Close()
		return fmt.Errorf("strata local: functions: %w", err)
	}
	err = serveAgent(ctx, "strata local", f.cfg, client, fns.store(st), f.reg, log, node.Done())
	// The agent has flushed its last segments: let their functions finish.
	if ferr := fns.close(); ferr != nil {
		err = errors.Join(err, fmt.Errorf("strata local: functions: %w", ferr))
	}
	client.Close()
	if cerr := node.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("strata local: metastore: %w", cerr)
	}
	return err
}

// serveAgent runs an agent until ctx ends (a signal) or stopped closes, then shuts it
// down gracefully: open segments are flushed and waiting producers answered. Its
// counters go to reg, if not nil.
func serveAgent(ctx context.Context, name string, cfg agent.Config, meta agent.Metastore, st objstore.Store, reg *prometheus.Registry, log *slog.Logger, stopped <-chan struct{}) error {
	a, err := agent.New(cfg, meta, st)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	registerAgent(reg, a)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = a.Start(sctx)
	cancel()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info(name + ": shutting down")
	case <-stopped:
		runErr = fmt.Errorf("%s: the embedded metastore stopped", name)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Close(cctx); err != nil {
		return errors.Join(runErr, fmt.Errorf("%s: %w", name, err))
	}
	return runErr
}
