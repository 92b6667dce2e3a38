package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stratalog/strata/integration/bench"
	"github.com/stratalog/strata/internal/metrics"
)

const benchSynopsis = `bench [flags]   measure throughput, latency, CPU and request cost

Starts each --targets system itself (or measures --bootstrap), drives it with real
franz-go producers and consumers, and runs the same workload against franz-go's
in-memory fake Kafka (kfake) as a reference. Prints a table with ratios and writes
report.md, results.json and bench.png to --out. Ctrl-C stops the servers and still
writes the partial report.

Targets: local (strata local on a directory), minio (strata local on a MinIO server it
starts; needs ./bin/minio from make minio, or --minio-bin), cluster (3 strata metastore
+ 2 strata agent processes), kfake (the reference). --suite quick runs the default
suite of make bench.`

// benchFlags are strata bench's settings.
type benchFlags struct {
	w            bench.Workload
	targets      string
	bootstrap    string
	metricsURLs  string
	reference    string
	out          string
	minioBin     string
	storeLatency string
	agentLinger  time.Duration
	prices       bench.Prices
	suite        string
	serveKfake   string
	metricsAddr  string
}

func (f *benchFlags) register(fs *flag.FlagSet) {
	f.w = bench.DefaultWorkload()
	w := &f.w
	fs.StringVar(&f.targets, "targets", "local,kfake", "systems to measure, comma-separated: local, minio, cluster, kfake")
	fs.StringVar(&f.bootstrap, "bootstrap", "", "measure a running cluster at these brokers (host:port,...) instead of starting --targets (kfake still runs as the reference unless --reference none)")
	fs.StringVar(&f.metricsURLs, "metrics", "", "with --bootstrap: the agents' /metrics URLs, comma-separated, for CPU, memory and request figures")
	fs.StringVar(&f.reference, "reference", "kfake", "the target the others are compared with (none: no ratios)")
	fs.StringVar(&f.out, "out", "", "directory for the report (default bench-results/<time>)")
	fs.StringVar(&f.minioBin, "minio-bin", "", "MinIO server binary for the minio target (default $STRATA_MINIO_BIN, ./bin/minio, or minio on PATH)")
	fs.StringVar(&f.storeLatency, "store-latency", "", "delay the Strata targets' object-store calls: s3 (S3 Standard-like), a duration, or MIN-MAX")
	fs.DurationVar(&f.agentLinger, "agent-linger", 0, "the Strata agents' --linger (default: each command's own, 5ms for local, 250ms for agent)")
	fs.IntVar(&w.RecordBytes, "record-size", w.RecordBytes, "record value size in bytes")
	fs.IntVar(&w.Partitions, "partitions", w.Partitions, "partitions of the bench topic")
	fs.IntVar(&w.Producers, "producers", w.Producers, "producer clients")
	fs.IntVar(&w.Consumers, "consumers", w.Consumers, "consumer clients (0: produce only, no end-to-end latency)")
	fs.StringVar(&w.Acks, "acks", w.Acks, "producer acks: all, 1 or 0")
	fs.DurationVar(&w.Linger, "linger", w.Linger, "producer (client-side) linger")
	fs.StringVar(&w.Compression, "compression", w.Compression, "producer compression: none, gzip, snappy, lz4, zstd")
	fs.BoolVar(&w.Idempotent, "idempotent", w.Idempotent, "idempotent producers (needs --acks all)")
	fs.DurationVar(&w.Duration, "duration", w.Duration, "measured time per target, after the warm-up")
	fs.DurationVar(&w.Warmup, "warmup", w.Warmup, "time run first and discarded")
	fs.Float64Var(&w.RateMiBps, "rate", w.RateMiBps, "produce rate limit in MiB/s over all producers (0: as fast as it goes)")
	fs.IntVar(&w.MaxBufferedRecords, "max-buffered-records", w.MaxBufferedRecords, "records each producer holds in flight before it blocks")
	fs.IntVar(&w.MaxInflight, "max-inflight", w.MaxInflight, "produce requests in flight per broker, for --idempotent=false producers (0: the client's default of 1; idempotent producers keep 5)")
	fs.Float64Var(&f.prices.PutPer1000, "price-put", bench.DefaultPrices.PutPer1000, "dollars per 1000 PUT requests (S3 Standard us-east-1)")
	fs.Float64Var(&f.prices.GetPer1000, "price-get", bench.DefaultPrices.GetPer1000, "dollars per 1000 GET requests (S3 Standard us-east-1)")
	fs.StringVar(&f.suite, "suite", "", "run a named suite instead of one workload: quick (make bench: throughput, latency on a directory, latency with S3-like latency, a cluster)")
	fs.StringVar(&f.serveKfake, "serve-kfake", "", hiddenUsage+"run kfake on this address until killed (the reference target's process)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", hiddenUsage+"with --serve-kfake: serve /metrics here")
}

// validate reports every problem with the flags at once.
func (f *benchFlags) validate() error {
	var errs []error
	if err := f.w.Validate(); err != nil {
		errs = append(errs, err)
	}
	known := []string{"local", "minio", "cluster", "kfake"}
	if f.bootstrap == "" {
		names := splitList(f.targets)
		if len(names) == 0 {
			errs = append(errs, errors.New("--targets: name at least one of local, minio, cluster, kfake"))
		}
		for _, n := range names {
			if !slices.Contains(known, n) {
				errs = append(errs, fmt.Errorf("--targets: unknown target %q (want local, minio, cluster, kfake)", n))
			}
		}
		if slices.Contains(names, "minio") {
			if _, err := bench.FindMinIO(f.minioBin); err != nil {
				errs = append(errs, fmt.Errorf("--targets minio: %w", err))
			}
		}
	} else if f.metricsURLs != "" {
		for _, u := range splitList(f.metricsURLs) {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				errs = append(errs, fmt.Errorf("--metrics %q: want an http:// URL", u))
			}
		}
	}
	if f.metricsURLs != "" && f.bootstrap == "" {
		errs = append(errs, errors.New("--metrics needs --bootstrap (started targets are measured directly)"))
	}
	if f.storeLatency != "" {
		if _, err := parseStoreLatency(f.storeLatency); err != nil {
			errs = append(errs, fmt.Errorf("--store-latency: %w", err))
		}
	}
	if f.agentLinger < 0 || f.agentLinger > time.Minute {
		errs = append(errs, fmt.Errorf("--agent-linger %v: want 0 to 1m", f.agentLinger))
	}
	if f.prices.PutPer1000 < 0 || f.prices.GetPer1000 < 0 {
		errs = append(errs, errors.New("--price-put and --price-get: want 0 or more"))
	}
	if f.reference != "none" && !slices.Contains(known, f.reference) {
		errs = append(errs, fmt.Errorf("--reference %q: want none or one of local, minio, cluster, kfake", f.reference))
	}
	if f.suite != "" && f.suite != "quick" {
		errs = append(errs, fmt.Errorf("--suite %q: the only suite is quick", f.suite))
	}
	return errors.Join(errs...)
}

// scenario is one workload run against some targets.
type scenario struct {
	name    string
	title   string
	w       bench.Workload
	targets []string
	cfg     bench.Config // StoreLatency and AgentLinger
}

// quickSuite is make bench: every scenario of the targets, short.
func quickSuite(base bench.Workload, set map[string]bool) []scenario {
	w := base
	if !set["duration"] {
		w.Duration = 20 * time.Second
	}
	if !set["warmup"] {
		w.Warmup = 5 * time.Second
	}
	paced := w
	if !set["rate"] {
		paced.RateMiBps = 4
	}
	return []scenario{
		{name: "throughput", title: "Throughput: 1 KiB records, 16 partitions, acks=all, as fast as it goes", w: w, targets: []string{"local", "kfake"}},
		{name: "latency-dir", title: "Latency on a local directory: linger 5 ms, 4 MiB/s", w: paced, targets: []string{"local", "kfake"},
			cfg: bench.Config{AgentLinger: 5 * time.Millisecond}},
		{name: "latency-s3", title: "Latency with S3 Standard-like store latency: linger 250 ms, 4 MiB/s", w: paced, targets: []string{"local"},
			cfg: bench.Config{AgentLinger: 250 * time.Millisecond, StoreLatency: "s3"}},
		// An idempotent producer keeps at most 5 requests in flight per broker; with
		// no client linger it spends them at once on a few records each, then every
		// record waits for a whole segment cycle before it is even sent. A client
		// linger of about a fifth of the cycle (linger + PUT) spreads them out.
		{name: "latency-s3-client-linger", title: "Latency with S3 Standard-like store latency: linger 250 ms, client linger 70 ms, 4 MiB/s",
			w: clientLinger(paced, set, 70*time.Millisecond), targets: []string{"local"},
			cfg: bench.Config{AgentLinger: 250 * time.Millisecond, StoreLatency: "s3"}},
		{name: "cluster", title: "A cluster: 3 metastore + 2 agent processes, linger 250 ms, as fast as it goes", w: w, targets: []string{"cluster"}},
	}
}

// clientLinger is w with the producers' linger set to d, unless --linger was given.
func clientLinger(w bench.Workload, set map[string]bool, d time.Duration) bench.Workload {
	if !set["linger"] {
		w.Linger = d
	}
	return w
}

func runBench(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "bench", benchSynopsis)
	var f benchFlags
	f.register(fs)
	if err := parseFlags(fs, env, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "strata bench: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if f.serveKfake != "" {
		return serveKfake(ctx, env, &f)
	}
	if err := f.validate(); err != nil {
		return fmt.Errorf("strata bench: %w", err)
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("strata bench: %w", err)
	}
	out := f.out
	if out == "" {
		out = filepath.Join("bench-results", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("strata bench: --out: %w", err)
	}
	out, _ = filepath.Abs(out)

	scenarios := []scenario{{name: "", w: f.w, targets: splitList(f.targets),
		cfg: bench.Config{StoreLatency: f.storeLatency, AgentLinger: f.agentLinger}}}
	if f.suite == "quick" {
		scenarios = quickSuite(f.w, set)
	}
	reference := f.reference
	if reference == "none" {
		reference = ""
	}
	var summary strings.Builder
	fmt.Fprintf(&summary, "# strata bench\n\n")
	var runErr error
	for _, sc := range scenarios {
		dir := filepath.Join(out, sc.name)
		cfg := sc.cfg
		cfg.StrataBin, cfg.MinIOBin, cfg.Dir, cfg.Partitions = self, f.minioBin, filepath.Join(dir, "servers"), sc.w.Partitions
		targets := bench.Targets(&cfg)
		var list []bench.Target
		if f.bootstrap != "" {
			list = append(list, bench.External(splitList(f.bootstrap), splitList(f.metricsURLs)))
			if reference != "" {
				list = append(list, targets[reference])
			}
		} else {
			for _, n := range sc.targets {
				list = append(list, targets[n])
			}
		}
		title := sc.title
		if title == "" {
			title = "strata bench"
		}
		if sc.name != "" {
			fmt.Fprintf(env.stdout, "== %s: %s\n", sc.name, title)
		}
		results, err := runTargets(ctx, env, &cfg, sc.w, list)
		files, werr := bench.WriteReport(dir, results, reference, f.prices, title)
		table := bench.Table(results, reference, f.prices)
		fmt.Fprintln(env.stdout, table)
		if sc.name != "" {
			fmt.Fprintf(&summary, "## %s\n\n%s\n\n", title, table)
		}
		if werr != nil {
			err = errors.Join(err, fmt.Errorf("report: %w", werr))
		} else {
			fmt.Fprintf(env.stdout, "report: %s\n\n", strings.Join(files, ", "))
		}
		if err != nil {
			runErr = err
			break
		}
	}
	if f.suite != "" {
		p := filepath.Join(out, "README.md")
		if err := os.WriteFile(p, []byte(summary.String()), 0o644); err != nil {
			runErr = errors.Join(runErr, err)
		} else {
			fmt.Fprintf(env.stdout, "suite summary: %s\n", p)
		}
	}
	if runErr != nil {
		return fmt.Errorf("strata bench: %w", runErr)
	}
	return nil
}

// errInterrupted ends a bench stopped by a signal, after its partial report.
var errInterrupted = errors.New("interrupted; the report holds what was measured")

// runTargets runs w against each target in turn, stopping each target's servers
// before the next starts. On a signal it stops and returns what it has.
func runTargets(ctx context.Context, env *environment, cfg *bench.Config, w bench.Workload, targets []bench.Target) ([]*bench.Result, error) {
	var results []*bench.Result
	for _, t := range targets {
		if ctx.Err() != nil {
			return results, errInterrupted
		}
		fmt.Fprintf(env.stderr, "[%s] starting: %s\n", t.Name, t.Description)
		r, err := t.Start(ctx, cfg)
		if err != nil {
			if ctx.Err() != nil {
				return results, errInterrupted
			}
			return results, fmt.Errorf("target %s: %w", t.Name, err)
		}
		p := newProgressLine(env.stderr)
		res, err := bench.Run(ctx, t.Name, r.Bootstrap, w, r.Probe, p.update)
		p.done()
		if cerr := r.Close(); cerr != nil {
			fmt.Fprintf(env.stderr, "[%s] stopping: %v\n", t.Name, cerr)
		}
		if err != nil {
			return results, fmt.Errorf("target %s: %w", t.Name, err)
		}
		res.Description = t.Description
		results = append(results, res)
		if ctx.Err() != nil {
			return results, errInterrupted
		}
	}
	return results, nil
}

// progressLine shows a live line on a terminal (rewritten in place), or a line
// every 5 seconds elsewhere.
type progressLine struct {
	w    io.Writer
	tty  bool
	last time.Time
	text string
}

func newProgressLine(w io.Writer) *progressLine {
	p := &progressLine{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progressLine) update(pr bench.Progress) {
	phase := "measuring"
	if pr.Warmup {
		phase = "warm-up"
	}
	p.text = fmt.Sprintf("[%s] %3.0fs/%.0fs %-9s %8.1f MiB/s %9.0f rec/s  produce p99 %s  e2e p99 %s  consumed %d",
		pr.Target, pr.Elapsed.Seconds(), pr.Total.Seconds(), phase,
		float64(pr.Last.ProducedBytes)/(1<<20), float64(pr.Last.ProducedRecords),
		fmtMs(pr.Last.Produce.P99), fmtMs(pr.Last.EndToEnd.P99), pr.Consumed)
	switch {
	case p.tty:
		fmt.Fprintf(p.w, "\r%-130s", p.text)
	case time.Since(p.last) >= 5*time.Second:
		fmt.Fprintln(p.w, p.text)
		p.last = time.Now()
	}
}

func (p *progressLine) done() {
	if p.tty && p.text != "" {
		fmt.Fprintln(p.w)
	}
}

func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// serveKfake is the reference target's process: kfake and a /metrics endpoint.
func serveKfake(ctx context.Context, env *environment, f *benchFlags) error {
	log := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if f.metricsAddr != "" {
		srv, err := metrics.Serve(ctx, f.metricsAddr, metrics.NewRegistry(), log)
		if err != nil {
			return fmt.Errorf("strata bench: %w", err)
		}
		defer srv.Close()
	}
	if err := bench.ServeKfake(ctx, f.serveKfake, f.w.Partitions); err != nil {
		return fmt.Errorf("strata bench: %w", err)
	}
	return nil
}
