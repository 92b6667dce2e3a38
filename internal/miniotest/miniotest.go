// Package miniotest runs a real MinIO server for tests, so S3 code is tested against an
// S3 implementation rather than a fake. Each Start launches a private server (own ports,
// credentials and data directory) that stops when the test ends; tests may run several.
//
// The binary comes from $STRATA_MINIO_BIN or <repo root>/bin/minio (`make minio`).
// Without it tests skip, except under CI=true, where the suite must not silently shrink.
// Servers listen on loopback only.
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/notification"
	"golang.org/x/sys/unix"

	"github.com/stratalog/strata/internal/syncbuf"
)

const (
	// Region is the region every server reports.
	Region = "us-east-1"

	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	// startTries bounds restarts after losing a probed free port to another process.
	startTries = 3
)

// Server is one running MinIO.
type Server struct {
	// Endpoint is the S3 API base URL, http://127.0.0.1:<port>.
	Endpoint string
	// AccessKey and SecretKey are the root credentials, random per server.
	AccessKey string
	SecretKey string
	// Region is the server's region ("us-east-1").
	Region string
	// DataDir is the directory holding the server's data.
	DataDir string

	cmd      *exec.Cmd
	out      *syncbuf.Buffer
	exited   chan struct{} // closed when the process has exited
	stopOnce sync.Once
}

// Options change how Start launches a server.
type Options struct {
	// Env adds KEY=VALUE settings to the server's environment, such as the
	// notification targets WebhookEnv returns.
	Env []string
}

// Start launches a MinIO server and waits until it is live. It is stopped in
// tb.Cleanup; its output is logged if the test failed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is Start with options.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin := binary(tb)
	dataDir := dataDir(tb) // before our Cleanup, so removed after the server stops

	var lastErr error
	for range startTries {
		s, err := start(tb, bin, dataDir, opts)
		if err == nil {
			tb.Cleanup(func() {
				s.Stop()
				if tb.Failed() {
					tb.Logf("miniotest: output of MinIO at %s:\n%s", s.Endpoint, s.out.String())
				}
			})
			return s
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	tb.Fatalf("miniotest: %v", lastErr)
	return nil
}

var errPortTaken = errors.New("port taken")

func start(tb testing.TB, bin, dataDir string, opts Options) (*Server, error) {
	apiAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	consoleAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Endpoint:  "http://" + apiAddr,
		AccessKey: "strata-" + randomHex(tb, 6),
		SecretKey: randomHex(tb, 16),
		Region:    Region,
		DataDir:   dataDir,
		out:       &syncbuf.Buffer{},
		exited:    make(chan struct{}),
	}
	s.cmd = exec.Command(bin, "server", dataDir,
		"--address", apiAddr,
		"--console-address", consoleAddr)
	s.cmd.Env = append(environWithout("MINIO_"),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_SITE_REGION="+Region,
	)
	s.cmd.Env = append(s.cmd.Env, opts.Env...)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitLive(); err != nil {
		s.Stop()
		if strings.Contains(s.out.String(), "address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, fmt.Errorf("%w\nMinIO output:\n%s", err, s.out.String())
	}
	return s, nil
}

// waitLive polls the liveness endpoint until it answers 200, the process exits or the
// start deadline passes.
func (s *Server) waitLive() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/minio/health/live", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("MinIO exited during startup (%v)", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("MinIO at %s not live after %v", s.Endpoint, startTimeout)
		case <-tick.C:
		}
	}
}

// Stop terminates the server: SIGTERM, then SIGKILL if it has not exited in time.
// Safe to call more than once; fault tests call it to take the server away.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			_ = s.cmd.Process.Kill()
		}
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// Output returns what the server has printed so far.
func (s *Server) Output() string { return s.out.String() }

// Client returns a minio-go client with root credentials, for administration that
// the code under test should not do itself.
func (s *Server) Client(tb testing.TB) *minio.Client {
	tb.Helper()
	u, err := url.Parse(s.Endpoint)
	if err != nil {
		tb.Fatalf("miniotest: %v", err)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure: false,
		Region: s.Region,
	})
	if err != nil {
		tb.Fatalf("miniotest: client: %v", err)
	}
	return c
}

// MakeBucket creates a bucket, failing the test if it cannot.
func (s *Server) MakeBucket(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(tb).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		tb.Fatalf("miniotest: make bucket %q: %v", name, err)
	}
}

// WebhookEnv returns the settings of a webhook notification target with the given
// id, for Options.Env: MinIO POSTs every event routed to the target to endpoint, with
// "Authorization: Bearer token" when token is set. With queueDir set, events are
// persisted there and redelivered until the endpoint answers 2xx; without it, events
// the endpoint misses are lost.
func WebhookEnv(id, endpoint, token, queueDir string) []string {
	env := []string{
		"MINIO_NOTIFY_WEBHOOK_ENABLE_" + id + "=on",
		"MINIO_NOTIFY_WEBHOOK_ENDPOINT_" + id + "=" + endpoint,
	}
	if token != "" {
		env = append(env, "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_"+id+"="+token)
	}
	if queueDir != "" {
		env = append(env, "MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_"+id+"="+queueDir)
	}
	return env
}

// NotifyWebhook routes the bucket's object-created events (s3:ObjectCreated:*) whose
// keys start with prefix and end with suffix (either may be empty) to the webhook
// target id, which the server must have been started with (WebhookEnv). It replaces
// the bucket's notification configuration, waiting (up to 30 s) for the server to
// have loaded the target.
func (s *Server) NotifyWebhook(tb testing.TB, bucket, id, prefix, suffix string) {
	tb.Helper()
	q := notification.NewConfig(notification.NewArn("minio", "sqs", "", id, "webhook"))
	q.AddEvents(notification.ObjectCreatedAll)
	if prefix != "" {
		q.AddFilterPrefix(prefix)
	}
	if suffix != "" {
		q.AddFilterSuffix(suffix)
	}
	var cfg notification.Configuration
	cfg.AddQueue(q)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := s.Client(tb)
	for {
		err := client.SetBucketNotification(ctx, bucket, cfg)
		if err == nil {
			return
		}
		// MinIO loads its notification targets in the background after it reports
		// itself live: until then the target's ARN is unknown. Try again.
		if !strings.Contains(err.Error(), "destination ARN") || ctx.Err() != nil {
			tb.Fatalf("miniotest: bucket %q: notifications to webhook %q: %v", bucket, id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MinIO refuses every write (507 XMinioStorageFull) while its drive has less than 1%
// of its size free, however little the write; a CI machine's disk can be that full
// though the tests store only a few MiB. So the data goes on the RAM filesystem
// /dev/shm when it has room (writes are real MinIO writes either way, and fsyncs are
// cheaper), and on the test's temporary directory otherwise. STRATA_MINIO_DATA names a
// parent directory to use instead.
const (
	shmDir     = "/dev/shm"
	dataPrefix = "strata-minio-"
	// minSpare is the room a data directory's filesystem must have beyond MinIO's 1%.
	minSpare = 512 << 20
)

// dataDir returns a fresh directory for one server's data, removed when the test ends.
// A filesystem too full for MinIO ends the test with that reason rather than with a
// storage-full error from the code under test.
func dataDir(tb testing.TB) string {
	tb.Helper()
	if parent := os.Getenv("STRATA_MINIO_DATA"); parent != "" {
		return subdir(tb, parent)
	}
	if roomy(shmDir) == nil {
		sweepStale(shmDir)
		return subdir(tb, shmDir)
	}
	dir := tb.TempDir()
	if err := roomy(dir); err != nil {
		tb.Fatalf("miniotest: no room for MinIO's data: %v (and %s: %v); free some space or set STRATA_MINIO_DATA", err, shmDir, roomy(shmDir))
	}
	return dir
}

// staleAge is when a data directory left in /dev/shm is surely no running test's:
// a test process killed (go test -timeout, SIGKILL) never ran its cleanup, and the
// RAM stays taken until reboot.
const staleAge = 6 * time.Hour

// sweepStale removes data directories under parent older than staleAge.
func sweepStale(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), dataPrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleAge {
			_ = os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
}

// subdir makes a fresh directory under parent, removed when the test ends.
func subdir(tb testing.TB, parent string) string {
	tb.Helper()
	dir, err := os.MkdirTemp(parent, dataPrefix+"*")
	if err != nil {
		tb.Fatalf("miniotest: data directory: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// roomy reports why the filesystem holding dir cannot take MinIO's writes, or nil.
func roomy(dir string) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("%s: not writable: %w", dir, err)
	}
	total := st.Blocks * uint64(st.Bsize)
	free := st.Bavail * uint64(st.Bsize)
	if need := total/100 + minSpare; free < need {
		return fmt.Errorf("%s: %d MiB free of %d MiB, MinIO needs %d MiB (1%% of the filesystem and %d MiB to write)",
			dir, free>>20, total>>20, need>>20, minSpare>>20)
	}
	return nil
}

// binary locates the MinIO binary or ends the test (skip, or fail under CI).
func binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("STRATA_MINIO_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("miniotest: STRATA_MINIO_BIN: %v", err)
		}
		return p
	}
	root, err := repoRoot()
	if err == nil {
		p := filepath.Join(root, "bin", "minio")
		if _, err = os.Stat(p); err == nil {
			return p
		}
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		tb.Fatalf("miniotest: MinIO binary not found (%v); CI must run the S3 tests: run `make minio` or set STRATA_MINIO_BIN", err)
	}
	tb.Skipf("MinIO not built: run `make minio` (%v)", err)
	return ""
}

// repoRoot walks up from the working directory (a package directory under go test) to
// the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// freeAddr asks the kernel for a free loopback port. Another process may take it
// before MinIO binds it; Start retries when that happens.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("miniotest: random: %v", err)
	}
	return hex.EncodeToString(b)
}

// environWithout is os.Environ minus variables starting with prefix, so a developer's
// own MinIO settings do not leak into test servers.
func environWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}
