package miniotest

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// Two servers side by side: tests in one binary may each start their own.
func TestStartTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Endpoint == b.Endpoint {
		t.Fatalf("both servers at %s", a.Endpoint)
	}
	for _, s := range []*Server{a, b} {
		s.MakeBucket(t, "bucket-one")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ok, err := s.Client(t).BucketExists(ctx, "bucket-one")
		if err != nil || !ok {
			t.Fatalf("bucket on %s: exists=%v err=%v", s.Endpoint, ok, err)
		}
	}
}

func TestStop(t *testing.T) {
	s := Start(t)
	s.Stop()
	s.Stop() // idempotent, and Cleanup calls it again
	resp, err := http.Get(s.Endpoint + "/minio/health/live")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("server still answers after Stop: %s", resp.Status)
	}
}

// TestWebhookNotifications: a server started with a webhook target POSTs an event
// for an object created under the configured prefix and suffix, in the S3 event
// shape (a Records array, the key URL-encoded), and nothing for other keys.
func TestWebhookNotifications(t *testing.T) {
	got := make(chan string, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Records []struct {
				EventName string `json:"eventName"`
				S3        struct {
					Object struct {
						Key string `json:"key"`
					} `json:"object"`
				} `json:"s3"`
			}
		}
		if r.Header.Get("Authorization") != "Bearer tok" || json.NewDecoder(r.Body).Decode(&ev) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, rec := range ev.Records {
			got <- rec.EventName + " " + rec.S3.Object.Key
		}
	}))
	defer hook.Close()
	s := StartWith(t, Options{Env: WebhookEnv("T1", hook.URL+"/events", "tok", t.TempDir())})
	s.MakeBucket(t, "hooked")
	s.NotifyWebhook(t, "hooked", "T1", "p/", ".seg")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, key := range []string{"q/x.seg", "p/x.txt", "p/a b.seg"} {
		if _, err := s.Client(t).PutObject(ctx, "hooked", key, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ev := <-got:
		if ev != "s3:ObjectCreated:Put p%2Fa+b.seg" {
			t.Fatalf("event %q", ev)
		}
	case <-ctx.Done():
		t.Fatal("no event arrived")
	}
	select {
	case ev := <-got:
		t.Fatalf("an event for a filtered key: %q", ev)
	default:
	}
}

// STRATA_MINIO_DATA places the data; the directory is fresh, and gone after the test.
func TestDataDirFromEnv(t *testing.T) {
	parent := t.TempDir()
	t.Setenv("STRATA_MINIO_DATA", parent)
	var dir string
	t.Run("server", func(t *testing.T) {
		s := Start(t)
		s.MakeBucket(t, "placed")
		dir = s.DataDir
		if filepath.Dir(dir) != parent {
			t.Fatalf("data in %s, want a directory under %s", dir, parent)
		}
		if _, err := os.Stat(filepath.Join(dir, "placed")); err != nil {
			t.Fatalf("the bucket is not in the data directory: %v", err)
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("data directory %s after the test: %v, want it removed", dir, err)
	}
}

// roomy refuses a filesystem by MinIO's rule: 1% of it plus room to write.
func TestRoomy(t *testing.T) {
	if err := roomy(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing directory is roomy")
	}
	var st syscall.Statfs_t
	dir := t.TempDir()
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	total, free := st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)
	err := roomy(dir)
	if want := free >= total/100+minSpare; (err == nil) != want {
		t.Fatalf("roomy(%s) = %v with %d of %d bytes free", dir, err, free, total)
	}
}

// Data directories a killed test left behind are removed once surely stale; fresh
// ones (another test's, running) and other names are left.
func TestSweepStale(t *testing.T) {
	parent := t.TempDir()
	old, fresh, other := filepath.Join(parent, dataPrefix+"old"), filepath.Join(parent, dataPrefix+"fresh"), filepath.Join(parent, "other")
	for _, d := range []string{old, fresh, other} {
		if err := os.MkdirAll(filepath.Join(d, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-staleAge - time.Hour)
	for _, d := range []string{old, other} {
		if err := os.Chtimes(d, long, long); err != nil {
			t.Fatal(err)
		}
	}
	sweepStale(parent)
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale %s: %v", old, err)
	}
	for _, d := range []string{fresh, other} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
}
