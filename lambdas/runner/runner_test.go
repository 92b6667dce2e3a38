package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratalog/strata/lambdas/trigger"
	"github.com/stratalog/strata/objectlog/objstore"
)

// testConfig is fast: short backoffs, no periodic sweep.
func testConfig() Config {
	c := DefaultConfig()
	c.BackoffMin, c.BackoffMax = time.Millisecond, 5*time.Millisecond
	c.AttemptTimeout = 10 * time.Second
	c.SweepInterval = 0
	return c
}

func newRunner(t *testing.T, cfg Config, f Funcs) *Runner {
	t.Helper()
	r, err := New(cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// calls counts Object calls per key.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key]++
	return c.n[key]
}

func (c *calls) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func TestRetriesUntilSuccess(t *testing.T) {
	var c calls
	r := newRunner(t, testConfig(), Funcs{Object: func(ctx context.Context, key string) error {
		if c.add(key) < 3 {
			return errors.New("not yet")
		}
		return nil
	}})
	if err := r.Enqueue("a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a done", func() bool { return r.Stats().Done == 1 })
	if s := r.Stats(); c.get("a") != 3 || s.Retries != 2 || s.Failed != 0 {
		t.Fatalf("%d calls, stats %+v; want 3 calls, 2 retries, no failure", c.get("a"), s)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAttempts = 3
	var c calls
	r := newRunner(t, cfg, Funcs{Object: func(ctx context.Context, key string) error {
		if c.add(key) == 1 {
			panic("a bug in a function") // a panic counts as a failed attempt
		}
		return errors.New("always")
	}})
	if err := r.Enqueue("a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a given up", func() bool { return r.Stats().Failed == 1 })
	if s := r.Stats(); c.get("a") != 3 || s.Retries != 2 || s.Done != 0 {
		t.Fatalf("%d calls, stats %+v; want 3 calls, 2 retries", c.get("a"), s)
	}
}

func TestBackoffGrowsToTheCap(t *testing.T) {
	r := &Runner{cfg: Config{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}}
	for _, c := range []struct {
		attempt int
		lo, hi  time.Duration
	}{{1, 50 * time.Millisecond, 100 * time.Millisecond}, {2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond}, {5, 500 * time.Millisecond, time.Second}, {60, 500 * time.Millisecond, time.Second}} {
		for range 100 {
			if d := r.backoff(c.attempt); d < c.lo || d > c.hi {
				t.Fatalf("attempt %d: backoff %v outside [%v, %v]", c.attempt, d, c.lo, c.hi)
			}
		}
	}
}

// blocker is an Object function that holds key "block" until released.
type blocker struct {
	calls   calls
	release chan struct{}
}

func newBlocker() *blocker { return &blocker{release: make(chan struct{})} }

func (b *blocker) object(ctx context.Context, key string) error {
	b.calls.add(key)
	if key == "block" {
		select {
		case <-b.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func TestDedupeAndQueueFull(t *testing.T) {
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 1, 2
	b := newBlocker()
	r := newRunner(t, cfg, Funcs{Object: b.object})
	if err := r.Enqueue("block"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker busy", func() bool { return r.Stats().Running == 1 })
	for _, keys := range [][]string{{"x", "x"}, {"x"}, {"y", "x"}, {"y"}} {
		if err := r.Enqueue(keys...); err != nil {
			t.Fatalf("enqueue %v: %v", keys, err)
		}
	}
	if q := r.Stats().Queued; q != 2 {
		t.Fatalf("%d queued, want 2 (x and y once each)", q)
	}
	// All or none: z does not fit, so neither does the batch it is in.
	if err := r.Enqueue("x", "z"); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("enqueue into a full queue: %v", err)
	}
	if s := r.Stats(); s.Queued != 2 || s.Refused != 1 {
		t.Fatalf("stats %+v: want 2 queued, 1 refused", s)
	}
	close(b.release)
	waitFor(t, "everything done", func() bool { return r.Stats().Done == 3 })
	if b.calls.get("x") != 1 || b.calls.get("y") != 1 || b.calls.get("z") != 0 {
		t.Fatalf("calls %v: want x and y once, z never", b.calls.n)
	}
	// Once handled, a key may come again (a redelivery) and is handled again.
	if err := r.Enqueue("x"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "x again", func() bool { return b.calls.get("x") == 2 })
}

func TestSweepTicks(t *testing.T) {
	cfg := testConfig()
	cfg.SweepInterval = 5 * time.Millisecond
	var n, running, overlap atomic.Int64
	r := newRunner(t, cfg, Funcs{
		Object: func(context.Context, string) error { return nil },
		Sweep: func(context.Context) error {
			if running.Add(1) > 1 {
				overlap.Add(1)
			}
			defer running.Add(-1)
			time.Sleep(2 * time.Millisecond) // longer than nothing, so overlaps could show
			if n.Add(1)%2 == 0 {
				return errors.New("every other sweep fails")
			}
			return nil
		},
	})
	waitFor(t, "six sweeps", func() bool { return n.Load() >= 6 })
	s := r.Stats()
	if s.Sweeps < 2 || s.SweepErrors < 2 || overlap.Load() != 0 {
		t.Fatalf("stats %+v, %d overlapping sweeps: want successes and failures counted, no overlap", s, overlap.Load())
	}
}

func TestSweepNowWithoutInterval(t *testing.T) {
	var n atomic.Int64
	r := newRunner(t, testConfig(), Funcs{
		Object: func(context.Context, string) error { return nil },
		Sweep:  func(context.Context) error { n.Add(1); return nil },
	})
	r.SweepNow()
	waitFor(t, "a sweep", func() bool { return r.Stats().Sweeps == 1 })
	if n.Load() != 1 {
		t.Fatalf("%d sweeps", n.Load())
	}
}

func TestCloseDrainsTheQueue(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	b := newBlocker()
	var swept atomic.Int64
	r, err := New(cfg, Funcs{Object: b.object, Sweep: func(context.Context) error { swept.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Enqueue("a", "b", "c"); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.Done != 3 || s.Queued != 0 {
		t.Fatalf("after Close: %+v, want all 3 done", s)
	}
	if err := r.Enqueue("d"); !errors.Is(err, ErrClosed) {
		t.Fatalf("enqueue after Close: %v", err)
	}
	r.SweepNow() // harmless after Close
	if err := r.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseGivesUpAtItsDeadline(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	b := newBlocker()
	r, err := New(cfg, Funcs{Object: b.object})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Enqueue("block", "after"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker busy", func() bool { return r.Stats().Running == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = r.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "1 keys dropped") {
		t.Fatalf("Close past its deadline: %v", err)
	}
	if b.calls.get("after") != 0 {
		t.Fatal("a queued key ran after Close gave up")
	}
	if s := r.Stats(); s.Failed != 2 || s.Running != 0 {
		t.Fatalf("stats %+v: want the canceled and the dropped key failed", s)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	err := Config{BackoffMin: time.Second, BackoffMax: time.Millisecond, SweepInterval: -1}.Validate()
	if err == nil {
		t.Fatal("zero config accepted")
	}
	for _, want := range []string{"workers", "queue size", "max attempts", "below the minimum", "attempt timeout", "sweep interval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing from %v", want, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if _, err := New(DefaultConfig(), Funcs{}); err == nil {
		t.Fatal("runner without an Object function")
	}
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "trigger", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t *testing.T, url, auth string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestWebhook(t *testing.T) {
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 1, 1
	cfg.Scope = trigger.Scope{Bucket: "strata-it", Prefix: "dev"}
	b := newBlocker()
	var swept atomic.Int64
	r := newRunner(t, cfg, Funcs{Object: b.object, Sweep: func(context.Context) error { swept.Add(1); return nil }})
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	minio := bytes.TrimSpace(fixture(t, "minio-webhook.json"))
	const key = "segments/0a/000001a213f8c48a5d03fa91440b7c0a.seg"

	if code, body := post(t, srv.URL+"/minio/events", "", minio); code != http.StatusOK || !strings.Contains(body, `"queued":1`) {
		t.Fatalf("MinIO event: %d %s", code, body)
	}
	waitFor(t, "the key handled", func() bool { return b.calls.get(key) == 1 })

	if code, body := post(t, srv.URL, "", fixture(t, "scheduled.json")); code != http.StatusOK || !strings.Contains(body, `"sweep":true`) {
		t.Fatalf("scheduled event: %d %s", code, body)
	}
	waitFor(t, "a sweep", func() bool { return swept.Load() == 1 })

	for _, c := range []struct {
		name string
		body []byte
		code int
	}{
		{"not JSON", []byte(`{"Records":`), http.StatusBadRequest},
		{"unknown event", []byte(`{"EventName":"s3:ObjectCreated:Put"}`), http.StatusBadRequest},
		{"bad key escape", []byte(`{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"%zz"}}}]}`), http.StatusBadRequest},
		{"over 1 MiB", append(append(minio[:len(minio)-1:len(minio)-1], bytes.Repeat([]byte(" "), MaxBodyBytes)...), '}'), http.StatusRequestEntityTooLarge},
		{"just 1 MiB", append(append(minio[:len(minio)-1:len(minio)-1], bytes.Repeat([]byte(" "), MaxBodyBytes-len(minio))...), '}'), http.StatusOK},
	} {
		if code, body := post(t, srv.URL, "", c.body); code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
		}
	}

	waitFor(t, "the 1 MiB event handled", func() bool { return b.calls.get(key) == 2 })

	// A full queue answers 503 (MinIO redelivers), and the redelivery is taken once
	// there is room.
	if err := r.Enqueue("block"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker busy", func() bool { return r.Stats().Running == 1 })
	if err := r.Enqueue("filler"); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(minio))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("full queue: %s (Retry-After %q), want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	close(b.release)
	waitFor(t, "room again", func() bool { return r.Stats().Queued == 0 })
	if code, body := post(t, srv.URL, "", minio); code != http.StatusOK {
		t.Fatalf("redelivery: %d %s", code, body)
	}
	waitFor(t, "the redelivered key handled", func() bool { return b.calls.get(key) == 3 })

	resp, err = http.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	health, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(health), `"done":`) {
		t.Fatalf("health: %s %s", resp.Status, health)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, _ := post(t, srv.URL, "", minio); code != http.StatusServiceUnavailable {
		t.Fatalf("event after Close: %d, want 503", code)
	}
	resp, err = http.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("health after Close: %s", resp.Status)
	}
}

func TestWebhookAuthToken(t *testing.T) {
	for _, c := range []struct {
		token string
		ok    []string
		bad   []string
	}{
		// MinIO sends "Bearer TOKEN" for a one-word token, a two-word token as it is.
		{"s3cret", []string{"Bearer s3cret", "s3cret"}, []string{"", "Bearer s3cre", "bearer s3cret", "Basic s3cret"}},
		{"Key s3cret", []string{"Key s3cret"}, []string{"", "Bearer s3cret", "Bearer Key s3cre"}},
	} {
		cfg := testConfig()
		cfg.AuthToken = c.token
		r := newRunner(t, cfg, Funcs{Object: func(context.Context, string) error { return nil }})
		srv := httptest.NewServer(r.Handler())
		for _, h := range c.ok {
			if code, body := post(t, srv.URL, h, fixture(t, "minio-webhook.json")); code != http.StatusOK {
				t.Errorf("token %q, header %q: %d %s", c.token, h, code, body)
			}
		}
		for _, h := range c.bad {
			if code, _ := post(t, srv.URL, h, fixture(t, "minio-webhook.json")); code != http.StatusForbidden {
				t.Errorf("token %q, header %q: %d, want 403", c.token, h, code)
			}
		}
		srv.Close()
	}
}

func TestNotifyPuts(t *testing.T) {
	var got []string
	st := NotifyPuts(objstore.NewMemory(), func(key string) { got = append(got, key) })
	ctx := context.Background()
	put := func(key string, opts objstore.PutOptions) error {
		_, err := st.Put(ctx, key, strings.NewReader("x"), 1, opts)
		return err
	}
	if err := put("a/1", objstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
	if err := put("a/1", objstore.PutOptions{IfNoneMatch: true}); !errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Fatalf("second conditional put: %v", err)
	}
	if err := put("../bad", objstore.PutOptions{}); err == nil {
		t.Fatal("bad key stored")
	}
	if fmt.Sprint(got) != "[a/1]" {
		t.Fatalf("notified %v, want only the successful put", got)
	}
	if _, err := st.Head(ctx, "a/1"); err != nil {
		t.Fatalf("other methods pass through: %v", err)
	}
}

// A key waiting out a long backoff does not hold up Close: it is given up on.
func TestCloseDuringBackoff(t *testing.T) {
	cfg := testConfig()
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
	var c calls
	r, err := New(cfg, Funcs{Object: func(ctx context.Context, key string) error {
		c.add(key)
		return errors.New("fails")
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Enqueue("a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first attempt", func() bool { return c.get("a") == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close during a backoff: %v", err)
	}
	if s := r.Stats(); s.Failed != 1 || s.Retries != 0 || c.get("a") != 1 {
		t.Fatalf("stats %+v after %d calls: want the key given up on, not retried", s, c.get("a"))
	}
}
