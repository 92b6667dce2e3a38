package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config says how to start the systems under test.
type Config struct {
	// StrataBin is the strata binary run as the server processes (and, with
	// --serve-kfake, as the reference cluster).
	StrataBin string
	// MinIOBin is the MinIO server binary, for the minio target.
	MinIOBin string
	// Dir holds each target's data and the processes' logs (DIR/<target>/...).
	Dir string
	// StoreLatency, if set, is passed to Strata processes as --store-latency ("s3"
	// for S3 Standard-like latency).
	StoreLatency string
	// AgentLinger, if non-zero, is the agents' --linger; zero keeps each command's
	// default (5 ms for strata local, 250 ms for strata agent).
	AgentLinger time.Duration
	// Partitions is passed to the kfake reference as its default partition count.
	Partitions int
}

// Target is one system under test.
type Target struct {
	Name        string
	Description string
	start       func(ctx context.Context, cfg *Config, dir string) (*Running, error)
}

// Running is a started target.
type Running struct {
	Bootstrap []string
	Probe     Probe
	procs     []*proc
	cleanup   []func()
}

// Close stops the target's processes (SIGTERM, then SIGKILL after 10 s).
func (r *Running) Close() error {
	var errs []error
	for i := len(r.procs) - 1; i >= 0; i-- {
		if err := r.procs[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range r.cleanup {
		f()
	}
	return errors.Join(errs...)
}

// Targets are the built-in systems under test, by name.
func Targets(cfg *Config) map[string]Target {
	lat := ""
	if cfg.StoreLatency != "" {
		lat = ", store latency " + cfg.StoreLatency
	}
	linger := "5 ms"
	if cfg.AgentLinger > 0 {
		linger = cfg.AgentLinger.String()
	}
	agentLinger := "250 ms"
	if cfg.AgentLinger > 0 {
		agentLinger = cfg.AgentLinger.String()
	}
	return map[string]Target{
		"local": {Name: "local", Description: "strata local (one process: metastore, agent, functions), local-directory store, linger " + linger + lat,
			start: startLocal},
		"minio": {Name: "minio", Description: "strata local on a MinIO server (S3 API over loopback), linger " + linger + lat,
			start: startMinIOLocal},
		"cluster": {Name: "cluster", Description: "3 strata metastore processes (Raft, fsync) + 2 strata agent processes on a shared local-directory store, linger " + agentLinger + lat + "; server figures are the agents'",
			start: startCluster},
		"kfake": {Name: "kfake", Description: "franz-go's in-memory fake Kafka (pkg/kfake), one broker, in its own process: the reference",
			start: startKfake},
	}
}

// External is a target at a running cluster: bootstrap brokers, and optionally the
// /metrics URLs of its agents for the server figures.
func External(bootstrap, metrics []string) Target {
	return Target{Name: "external", Description: "a running cluster at " + strings.Join(bootstrap, ","),
		start: func(context.Context, *Config, string) (*Running, error) {
			r := &Running{Bootstrap: bootstrap}
			if len(metrics) > 0 {
				r.Probe = &processProbe{metrics: metrics}
			}
			return r, nil
		}}
}

// Start starts t with its data and logs under cfg.Dir/t.Name, emptied first: a run
// into an earlier run's directory must measure fresh servers, not restart the old
// ones' data (a Raft cluster's old configuration names ports long gone).
func (t Target) Start(ctx context.Context, cfg *Config) (*Running, error) {
	if t.Name == "" || t.start == nil {
		return nil, errors.New("bench: an unnamed target")
	}
	dir := filepath.Join(cfg.Dir, t.Name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return t.start(ctx, cfg, dir)
}

func (cfg *Config) strataArgs(args ...string) []string {
	if cfg.StoreLatency != "" {
		args = append(args, "--store-latency", cfg.StoreLatency)
	}
	if cfg.AgentLinger > 0 {
		args = append(args, "--linger", cfg.AgentLinger.String())
	}
	return args
}

func startLocal(ctx context.Context, cfg *Config, dir string) (*Running, error) {
	return startLocalWith(ctx, cfg, dir, nil)
}

func startLocalWith(ctx context.Context, cfg *Config, dir string, extra []string) (*Running, error) {
	kafka, metrics, err := freeAddr(), freeAddr(), error(nil)
	args := cfg.strataArgs("local", "--data", filepath.Join(dir, "data"), "--kafka-addr", kafka,
		"--metrics-addr", metrics, "--log-level", "warn")
	p, err := startProc(ctx, "strata-local", dir, cfg.StrataBin, append(args, extra...), nil)
	if err != nil {
		return nil, err
	}
	r := &Running{Bootstrap: []string{kafka}, procs: []*proc{p}}
	if err := waitReady(ctx, []*proc{p}, []string{kafka}, []string{metrics}); err != nil {
		r.Close()
		return nil, err
	}
	r.Probe = &processProbe{metrics: []string{"http://" + metrics + "/metrics"}, pids: []int{p.cmd.Process.Pid}}
	return r, nil
}

func startMinIOLocal(ctx context.Context, cfg *Config, dir string) (*Running, error) {
	m, err := startMinIO(ctx, cfg.MinIOBin, dir)
	if err != nil {
		return nil, err
	}
	r, err := startLocalWith(ctx, cfg, dir, []string{"--store", "s3://" + m.bucket + "/strata",
		"--s3-endpoint", m.endpoint, "--s3-region", "us-east-1", "--s3-access-key", m.user, "--s3-secret-key", m.password})
	if err != nil {
		m.stop(10 * time.Second)
		return nil, err
	}
	r.procs = append([]*proc{m.proc}, r.procs...) // stopped last
	return r, nil
}

func startCluster(ctx context.Context, cfg *Config, dir string) (*Running, error) {
	type node struct{ id, raft, api string }
	var nodes []node
	var peers []string
	for i := 1; i <= 3; i++ {
		n := node{id: strconv.Itoa(i), raft: freeAddr(), api: freeAddr()}
		nodes = append(nodes, n)
		peers = append(peers, fmt.Sprintf("%s=%s/%s", n.id, n.raft, n.api))
	}
	r := &Running{}
	fail := func(err error) (*Running, error) {
		r.Close()
		return nil, err
	}
	var apis []string
	for _, n := range nodes {
		p, err := startProc(ctx, "metastore-"+n.id, dir, cfg.StrataBin, []string{"metastore", "--node-id", n.id,
			"--data", filepath.Join(dir, "metastore-"+n.id), "--raft-addr", n.raft, "--api-addr", n.api,
			"--initial-cluster", strings.Join(peers, ","), "--log-level", "warn"}, nil)
		if err != nil {
			return fail(err)
		}
		r.procs = append(r.procs, p)
		apis = append(apis, n.api)
	}
	objects := filepath.Join(dir, "objects")
	if err := os.MkdirAll(objects, 0o755); err != nil {
		return fail(err)
	}
	var agents []*proc
	var metrics, urls []string
	var pids []int
	for i := 1; i <= 2; i++ {
		kafka, m := freeAddr(), freeAddr()
		args := cfg.strataArgs("agent", "--metastore", strings.Join(apis, ","), "--store", "file://"+objects,
			"--kafka-addr", kafka, "--agent-id", fmt.Sprintf("bench-agent-%d", i), "--metrics-addr", m, "--log-level", "warn")
		p, err := startProc(ctx, fmt.Sprintf("agent-%d", i), dir, cfg.StrataBin, args, nil)
		if err != nil {
			return fail(err)
		}
		r.procs = append(r.procs, p)
		agents = append(agents, p)
		r.Bootstrap = append(r.Bootstrap, kafka)
		metrics = append(metrics, m)
		urls = append(urls, "http://"+m+"/metrics")
		pids = append(pids, p.cmd.Process.Pid)
	}
	if err := waitReady(ctx, agents, r.Bootstrap, metrics); err != nil {
		return fail(err)
	}
	r.Probe = &processProbe{metrics: urls, pids: pids}
	return r, nil
}

func startKfake(ctx context.Context, cfg *Config, dir string) (*Running, error) {
	kafka, metrics := freeAddr(), freeAddr()
	p, err := startProc(ctx, "kfake", dir, cfg.StrataBin, []string{"bench", "--serve-kfake", kafka,
		"--metrics-addr", metrics, "--partitions", strconv.Itoa(max(cfg.Partitions, 1))}, nil)
	if err != nil {
		return nil, err
	}
	r := &Running{Bootstrap: []string{kafka}, procs: []*proc{p}}
	if err := waitReady(ctx, []*proc{p}, r.Bootstrap, []string{metrics}); err != nil {
		r.Close()
		return nil, err
	}
	r.Probe = &processProbe{metrics: []string{"http://" + metrics + "/metrics"}, pids: []int{p.cmd.Process.Pid}, noStore: true}
	return r, nil
}

// proc is one server process; its output goes to DIR/<name>.log.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startProc(ctx context.Context, name, dir, bin string, args, env []string) (*proc, error) {
	if bin == "" {
		return nil, errors.New("no strata binary to run")
	}
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so a Ctrl-C at the terminal reaches only the bench, which
	// measures, then stops its servers; and killed with the bench if it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.name, grace)
	}
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	f, err := os.Open(p.log)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 20 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// waitReady waits until every Kafka address answers a metadata request and every
// metrics address answers, or a process exits (its log tail is in the error).
func waitReady(ctx context.Context, procs []*proc, kafka, metrics []string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ready := func() error {
		for _, m := range metrics {
			resp, err := http.Get("http://" + m + "/metrics")
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", m, resp.Status)
			}
		}
		for _, k := range kafka {
			cl, err := kgo.NewClient(kgo.SeedBrokers(k))
			if err != nil {
				return err
			}
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			err = cl.Ping(pctx)
			pcancel()
			cl.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		return nil
	}
	for {
		err := ready()
		if err == nil {
			return nil
		}
		for _, p := range procs {
			select {
			case <-p.exited:
				return fmt.Errorf("%s exited during startup (%v); its log:\n%s", p.name, p.cmd.ProcessState, p.tail())
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// minioServer is a MinIO process with a bucket for the bench.
type minioServer struct {
	*proc
	endpoint, user, password, bucket string
}

// FindMinIO returns the MinIO binary to use: bin if set, else $STRATA_MINIO_BIN,
// ./bin/minio, or minio on the PATH.
func FindMinIO(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv("STRATA_MINIO_BIN")
	}
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("MinIO binary: %w", err)
		}
		return bin, nil
	}
	if _, err := os.Stat("bin/minio"); err == nil {
		return filepath.Abs("bin/minio")
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", errors.New("no MinIO server binary: run `make minio` (it builds ./bin/minio) or pass --minio-bin")
}

func startMinIO(ctx context.Context, bin, dir string) (*minioServer, error) {
	bin, err := FindMinIO(bin)
	if err != nil {
		return nil, err
	}
	addr, console := freeAddr(), freeAddr()
	m := &minioServer{endpoint: "http://" + addr, user: "strata-bench", password: "strata-bench-secret", bucket: "strata-bench"}
	m.proc, err = startProc(ctx, "minio", dir, bin, []string{"server", filepath.Join(dir, "minio-data"),
		"--address", addr, "--console-address", console}, []string{
		"MINIO_ROOT_USER=" + m.user, "MINIO_ROOT_PASSWORD=" + m.password, "MINIO_BROWSER=off", "MINIO_UPDATE=off"})
	if err != nil {
		return nil, err
	}
	cl, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(m.user, m.password, "")})
	if err != nil {
		m.stop(time.Second)
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err = cl.MakeBucket(ctx, m.bucket, minio.MakeBucketOptions{Region: "us-east-1"})
		if err == nil {
			return m, nil
		}
		select {
		case <-m.exited:
			return nil, fmt.Errorf("MinIO exited during startup; its log:\n%s", m.tail())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			m.stop(time.Second)
			return nil, fmt.Errorf("MinIO at %s: make bucket: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
