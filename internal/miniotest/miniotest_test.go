package miniotest

import (
	"context"
	"net/http"
	"testing"
	"time"
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
