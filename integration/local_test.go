package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/internal/miniotest"
	"github.com/stratalog/strata/internal/syncbuf"
)

const (
	localStartTimeout = 60 * time.Second
	localStopTimeout  = 10 * time.Second
)

// localOptions configures one `strata local` process.
type localOptions struct {
	// MinIO runs the server on a bucket of a fresh MinIO server (internal/miniotest)
	// instead of a directory store under the data directory.
	MinIO bool
	// Linger is the produce linger; zero means 5ms, which keeps produce round trips short.
	Linger time.Duration
	// Args are extra flags appended to the command line.
	Args []string
}

// localServer is a running `strata local`: one process with an embedded metastore, one
// agent and an object store, serving Kafka on Addr.
type localServer struct {
	// Addr is the Kafka listener (and the advertised broker address), 127.0.0.1:port.
	Addr string
	// Data is the data directory.
	Data string
	// MinIO is the S3 server holding the objects when the server runs on MinIO, with
	// Bucket and Prefix naming where.
	MinIO          *miniotest.Server
	Bucket, Prefix string

	args   []string
	env    []string
	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	exited chan struct{} // closed when the process has exited; err is then set
	err    error
	// earlier holds the output of processes before restarts, for the failure report.
	earlier []string
}

// startLocal builds the binary, starts `strata local` on a free loopback port with a
// fresh data directory, and returns once the port answers Kafka ApiVersions and
// Metadata lists a broker. The process is stopped (SIGTERM, then SIGKILL) when the test
// ends; a non-zero exit after SIGTERM fails the test, and the process output is logged
// if the test failed.
func startLocal(t *testing.T, opts localOptions) *localServer {
	t.Helper()
	bin := strataBinary(t)
	s := &localServer{Addr: freePort(t), Data: t.TempDir()}
	linger := opts.Linger
	if linger == 0 {
		linger = 5 * time.Millisecond
	}
	s.args = []string{"local", "--data", s.Data, "--kafka-addr", s.Addr, "--linger", linger.String()}
	s.env = environWithout("STRATA_", "AWS_")
	if opts.MinIO {
		s.MinIO = miniotest.Start(t) // its Cleanup runs after ours: the server stops first
		s.Bucket, s.Prefix = "strata-it", "local"
		s.MinIO.MakeBucket(t, s.Bucket)
		s.args = append(s.args,
			"--store", fmt.Sprintf("s3://%s/%s", s.Bucket, s.Prefix),
			"--s3-endpoint", s.MinIO.Endpoint,
			"--s3-region", s.MinIO.Region,
			"--s3-access-key", s.MinIO.AccessKey,
			"--s3-secret-key", s.MinIO.SecretKey)
	}
	s.args = append(s.args, opts.Args...)
	// The port was free when freePort closed it, but any process (another test's
	// server, a client's outgoing connection) may take it before ours binds: try
	// another one then.
	for attempt := 1; ; attempt++ {
		err := s.startOnce(bin)
		if err == nil {
			break
		}
		if attempt == 5 || !strings.Contains(s.out.String(), "address already in use") {
			t.Fatalf("strata local on %s: %v\noutput:\n%s", s.Addr, err, s.out.String())
		}
		s.Addr = freePort(t)
		s.args[4] = s.Addr // after "local", "--data", dir, "--kafka-addr"
	}
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			for i, out := range s.earlier {
				t.Logf("strata local output, run %d of %d:\n%s", i+1, len(s.earlier)+1, out)
			}
			t.Logf("strata %s\noutput:\n%s", strings.Join(s.args, " "), s.out.String())
		}
	})
	return s
}

// restart stops the server (it must exit 0 on SIGTERM) and starts it again with the
// same flags, data directory and port.
func (s *localServer) restart(t *testing.T) {
	t.Helper()
	s.stop(t)
	s.earlier = append(s.earlier, s.out.String())
	s.start(t, strataBinary(t))
}

func (s *localServer) start(t *testing.T, bin string) {
	t.Helper()
	// A restart keeps its port, which another process may hold for a moment.
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		if err = s.startOnce(bin); err == nil || !strings.Contains(s.out.String(), "address already in use") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("strata local on %s: %v\noutput:\n%s", s.Addr, err, s.out.String())
	}
}

// startOnce starts the process and waits until it serves; on failure the process
// is gone.
func (s *localServer) startOnce(bin string) error {
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Env = s.env
	s.out = &syncbuf.Buffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	s.exited = make(chan struct{})
	s.err = nil
	go func(cmd *exec.Cmd, exited chan struct{}) {
		s.err = cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
	if err := s.waitReady(); err != nil {
		s.kill()
		return err
	}
	return nil
}

// waitReady polls until the Kafka port answers ApiVersions and Metadata with at least
// one broker, the process exits, or the start deadline passes.
func (s *localServer) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), localStartTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = s.probe(ctx); last == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited during startup (%v)", s.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: %v", localStartTimeout, last)
		case <-tick.C:
		}
	}
}

// probe is one readiness check: a TCP dial first (cheap while nothing listens), then
// ApiVersions and Metadata through franz-go.
func (s *localServer) probe(ctx context.Context) error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Addr), kgo.RequestRetries(0))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cl.Request(ctx, kmsg.NewPtrApiVersionsRequest())
	if err != nil {
		return fmt.Errorf("ApiVersions: %w", err)
	}
	if av := resp.(*kmsg.ApiVersionsResponse); av.ErrorCode != 0 || len(av.ApiKeys) == 0 {
		return fmt.Errorf("ApiVersions: error code %d, %d keys", av.ErrorCode, len(av.ApiKeys))
	}
	resp, err = cl.Request(ctx, kmsg.NewPtrMetadataRequest())
	if err != nil {
		return fmt.Errorf("Metadata: %w", err)
	}
	if md := resp.(*kmsg.MetadataResponse); len(md.Brokers) == 0 {
		return errors.New("Metadata lists no broker yet")
	}
	return nil
}

// stop sends SIGTERM and waits; SIGKILL after localStopTimeout. The process must exit
// 0 on SIGTERM: it is the clean shutdown path that flushes.
func (s *localServer) stop(t *testing.T) {
	t.Helper()
	select {
	case <-s.exited:
		if s.err != nil {
			t.Errorf("strata local exited before the test ended: %v", s.err)
		}
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.kill()
		return
	}
	select {
	case <-s.exited:
		if s.err != nil {
			t.Errorf("strata local exited with %v after SIGTERM, want exit 0", s.err)
		}
	case <-time.After(localStopTimeout):
		s.kill()
		t.Errorf("strata local did not exit within %v of SIGTERM; killed", localStopTimeout)
	}
}

func (s *localServer) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// objectCount is the number of objects the server has written under its prefix on
// MinIO.
func (s *localServer) objectCount(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	opts := minio.ListObjectsOptions{Prefix: s.Prefix + "/", Recursive: true}
	for obj := range s.MinIO.Client(t).ListObjects(ctx, s.Bucket, opts) {
		if obj.Err != nil {
			t.Fatalf("list objects in s3://%s/%s: %v", s.Bucket, s.Prefix, obj.Err)
		}
		n++
	}
	return n
}

// environWithout is os.Environ minus variables with any of the prefixes, so a
// developer's STRATA_* or AWS_* settings do not leak into test servers.
func environWithout(prefixes ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}
