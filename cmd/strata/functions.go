package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/stratalog/strata/compactor"
	"github.com/stratalog/strata/lambdas/compaction"
	"github.com/stratalog/strata/lambdas/runner"
	"github.com/stratalog/strata/lambdas/trigger"
	"github.com/stratalog/strata/metastore"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

const functionsSynopsis = `functions --listen HOST:PORT --metastore HOST:PORT,... --store URL [flags]
       run the functions on MinIO webhook notifications

The local twin of the AWS Lambda functions (lambdas/): a MinIO webhook target
(MINIO_NOTIFY_WEBHOOK_ENDPOINT_<ID>=http://HOST:PORT/) POSTs an event for every object
created in the store's bucket; each segment is queued and handed to the compaction
function, retried with backoff until it succeeds (at-least-once). Every
--sweep-interval a sweep does the time-based work (retention, merges due by age,
garbage collection). GET /health answers with the counters.

Answers to MinIO: 200 queued, 400 not an event, 403 wrong --auth-token, 413 body
over 1 MiB, 503 queue full (MinIO redelivers when its target has a queue dir).`

// functionsConfig is what strata functions runs: a webhook listener, the compaction
// function and the runner between them.
type functionsConfig struct {
	Listen  string
	Handler compaction.Config
	Runner  runner.Config
}

// Validate reports every problem at once.
func (c functionsConfig) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen is required (host:port for the webhook)"))
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen: %w", err))
	}
	if err := c.Handler.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Runner.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// registerFunctionFlags adds the settings strata functions and strata local share;
// workers names the flag of runner.Config.Workers.
func registerFunctionFlags(fs *flag.FlagSet, cc *compactor.Config, rc *runner.Config, workers string) {
	fs.IntVar(&rc.Workers, workers, rc.Workers, "objects the functions handle at once")
	fs.DurationVar(&rc.SweepInterval, "sweep-interval", rc.SweepInterval, "time between sweeps: retention, merges due by age, garbage collection (0: none)")
	fs.DurationVar(&cc.GCGrace, "gc-grace", cc.GCGrace, "how long an object stays after nothing references it (fetches in flight may read it)")
	fs.DurationVar(&cc.CommitWait, "commit-wait", cc.CommitWait, "how long a segment event waits for the segment's commit before it is skipped")
	fs.IntVar(&cc.L0MaxEntries, "l0-max-entries", cc.L0MaxEntries, "merge a partition's run of ingestion chunks into one object once it has this many (key compaction works on merged objects)")
	fs.DurationVar(&cc.L0MaxAge, "l0-max-age", cc.L0MaxAge, "merge a partition's run of ingestion chunks into one object once its oldest was written this long ago")
}

func runFunctions(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "functions", functionsSynopsis)
	cfg := functionsConfig{Handler: compaction.DefaultConfig(), Runner: runner.DefaultConfig()}
	var lf logFlags
	lf.register(fs)
	var mf metricsFlags
	mf.register(fs)
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:9400", "host:port of the webhook (POST /) and GET /health")
	metaAddrs := fs.String("metastore", "127.0.0.1:7401", "API addresses (comma-separated) of metastore nodes")
	fs.StringVar(&cfg.Handler.Store, "store", "", "object store URL of the segments: s3://bucket/prefix, file:///abs/path (required)")
	registerS3Flags(fs, &cfg.Handler.S3)
	fs.StringVar(&cfg.Runner.AuthToken, "auth-token", "", "require this token in the Authorization header (MinIO's MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_<ID>)")
	registerFunctionFlags(fs, &cfg.Handler.Compactor, &cfg.Runner, "workers")
	fs.IntVar(&cfg.Runner.QueueSize, "queue-size", cfg.Runner.QueueSize, "objects waiting for a worker; when full, the webhook answers 503")
	fs.IntVar(&cfg.Runner.MaxAttempts, "max-attempts", cfg.Runner.MaxAttempts, "calls per object before it is given up on (the next sweep covers it)")
	fs.DurationVar(&cfg.Runner.BackoffMin, "retry-backoff", cfg.Runner.BackoffMin, "pause before the first retry; it doubles per retry")
	fs.DurationVar(&cfg.Runner.BackoffMax, "retry-backoff-max", cfg.Runner.BackoffMax, "longest pause between retries")
	fs.DurationVar(&cfg.Runner.AttemptTimeout, "attempt-timeout", cfg.Runner.AttemptTimeout, "bound on one call of a function (one object, or one sweep)")
	fs.DurationVar(&cfg.Handler.Compactor.IntentTTL, "intent-ttl", cfg.Handler.Compactor.IntentTTL, hiddenUsage+"how long a compaction output may take from its upload intent to its commit before GC may collect it")
	var storeLatency objstore.Latency
	fs.Func("store-latency", storeLatencyUsage, func(s string) (err error) {
		storeLatency, err = parseStoreLatency(s)
		return err
	})
	putHold := fs.Duration("store-put-hold", 0, hiddenUsage+"after each successful object-store Put, wait this long before returning: widens the window between an upload and its commit (testing only)")
	if err := parseFlags(fs, env, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "strata functions: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	cfg.Handler.Metastore = splitList(*metaAddrs)
	reg := mf.registry()
	if storeLatency != nil || *putHold > 0 || reg != nil {
		cfg.Handler.WrapStore = func(st objstore.Store) objstore.Store {
			return withPutHold(withStoreLatency(countStore(reg, st), storeLatency), *putHold)
		}
	}
	defaultPathStyle(fs, env, &cfg.Handler.S3)
	log, err := lf.logger(env.stderr)
	if err != nil {
		return fmt.Errorf("strata functions: %w", err)
	}
	cfg.Runner.Logger = log
	if err := errors.Join(cfg.Validate(), mf.validate()); err != nil {
		return fmt.Errorf("strata functions: %w", err)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("strata functions: %w", err)
	}
	defer ln.Close()
	stopMetrics, err := mf.serve(ctx, reg, log)
	if err != nil {
		return fmt.Errorf("strata functions: %w", err)
	}
	defer stopMetrics()
	h, err := compaction.Open(ctx, cfg.Handler, log)
	if err != nil {
		return fmt.Errorf("strata functions: %w", err)
	}
	defer h.Close()
	cfg.Runner.Scope = h.Scope()
	r, err := runner.New(cfg.Runner, compactionFuncs(h))
	if err != nil {
		return fmt.Errorf("strata functions: %w", err)
	}
	srv := &http.Server{
		Handler:           r.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("strata functions: listening", "addr", ln.Addr().String(), "store", cfg.Handler.Store,
		"bucket", h.Scope().Bucket, "prefix", h.Scope().Prefix, "sweep_interval", cfg.Runner.SweepInterval)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("strata functions: shutting down")
	case err := <-served:
		runErr = fmt.Errorf("strata functions: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Stop taking events first: what is queued then finishes, or is left to the next
	// sweep (and to MinIO's redelivery of what it could not deliver).
	if err := srv.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("strata functions: %w", err))
	}
	if err := r.Close(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("strata functions: %w", err))
	}
	return runErr
}

// compactionFuncs has the runner call the compaction function's handler: the same
// Object and Sweep a Lambda invocation calls.
func compactionFuncs(h *compaction.Handler) runner.Funcs {
	return runner.Funcs{
		Object: func(ctx context.Context, key string) error {
			_, err := h.Object(ctx, key)
			return err
		},
		Sweep: func(ctx context.Context) error {
			_, err := h.Sweep(ctx)
			return err
		},
	}
}

// localFunctionFlags are strata local's switches for the in-process functions.
type localFunctionFlags struct {
	enabled   bool
	compactor compactor.Config
	runner    runner.Config
}

func (f *localFunctionFlags) register(fs *flag.FlagSet) {
	f.enabled = true
	f.compactor = compaction.DefaultConfig().Compactor
	f.runner = runner.DefaultConfig()
	fs.BoolVar(&f.enabled, "functions", f.enabled, "run the functions in-process: compaction, retention and GC on every segment, and sweeps")
	registerFunctionFlags(fs, &f.compactor, &f.runner, "function-workers")
}

// validate reports every problem with the flags at once.
func (f *localFunctionFlags) validate() error {
	if !f.enabled {
		return nil
	}
	var errs []error
	if err := f.runner.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := f.compactor.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// localFunctions are strata local's functions: the compaction handler called by a
// runner that hears of segments from the agent's own Puts, no webhook needed.
type localFunctions struct {
	r   *runner.Runner
	log *slog.Logger
}

// startLocalFunctions starts the runner; nil when --functions=false.
func startLocalFunctions(f localFunctionFlags, meta *metastore.Client, st objstore.Store, log *slog.Logger) (*localFunctions, error) {
	if !f.enabled {
		return nil, nil
	}
	f.runner.Logger = log
	if err := f.validate(); err != nil {
		return nil, err
	}
	c, err := compactor.New(meta, st, f.compactor, log)
	if err != nil {
		return nil, err
	}
	r, err := runner.New(f.runner, compactionFuncs(compaction.NewHandler(c, trigger.Scope{}, log)))
	if err != nil {
		return nil, err
	}
	return &localFunctions{r: r, log: log}, nil
}

// store wraps the agent's store so that every segment it puts is queued for the
// functions. A full queue drops the key (the next sweep finds the segment) rather
// than slow the produce path.
func (l *localFunctions) store(st objstore.Store) objstore.Store {
	if l == nil {
		return st
	}
	return runner.NotifyPuts(st, func(key string) {
		if _, err := objectlog.ParseSegmentKey(key); err != nil {
			return
		}
		if err := l.r.Enqueue(key); err != nil {
			l.log.Warn("strata local: segment not queued for the functions; the next sweep handles it", "key", key, "err", err)
		}
	})
}

// close lets the queued work finish, for up to 5 s: the sweeps after a restart cover the
// rest, and SIGTERM should not wait long.
func (l *localFunctions) close() error {
	if l == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return l.r.Close(ctx)
}

// withPutHold wraps st so that every successful Put returns only d later (0: st).
func withPutHold(st objstore.Store, d time.Duration) objstore.Store {
	if d <= 0 {
		return st
	}
	return &putHolder{Store: st, d: d}
}

type putHolder struct {
	objstore.Store
	d time.Duration
}

func (p *putHolder) Put(ctx context.Context, key string, body io.Reader, size int64, opts objstore.PutOptions) (objstore.ObjectInfo, error) {
	info, err := p.Store.Put(ctx, key, body, size, opts)
	if err != nil {
		return info, err
	}
	t := time.NewTimer(p.d)
	defer t.Stop()
	select {
	case <-t.C:
		return info, nil
	case <-ctx.Done():
		return info, ctx.Err()
	}
}
