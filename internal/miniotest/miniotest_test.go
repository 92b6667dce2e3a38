package miniotest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
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
