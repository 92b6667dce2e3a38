package storeurl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stratalog/strata/internal/miniotest"
	"github.com/stratalog/strata/objectlog/objstore"
	"github.com/stratalog/strata/objectlog/objstore/s3store"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	s3cfg := s3store.DefaultConfig()
	s3cfg.Region = "us-east-1"
	s3cfg.Endpoint = "http://127.0.0.1:1" // never contacted: Open does no I/O
	s3cfg.AccessKeyID, s3cfg.SecretAccessKey = "id", "secret"
	s3cfg.Bucket, s3cfg.Prefix = "ignored", "ignored" // the URL decides these

	cases := []struct {
		url  string
		want string // fmt %T of the store, or "" for an error
		// name is the s3 store's String(), or the error's distinctive part.
		detail string
	}{
		{"mem://", "*objstore.Memory", ""},
		{"mem:", "*objstore.Memory", ""},
		{"mem://named", "", "takes no name"},
		{"file://" + filepath.ToSlash(dir), "*objstore.Dir", ""},
		{"file://localhost" + filepath.ToSlash(dir) + "/sub", "*objstore.Dir", ""},
		{"file://relative/path", "", "absolute path"},
		{"file:relative/path", "", "absolute path"},
		{"s3://my-bucket", "*s3store.Store", "s3://my-bucket/"},
		{"s3://my-bucket/", "*s3store.Store", "s3://my-bucket/"},
		{"s3://my-bucket/some/prefix", "*s3store.Store", "s3://my-bucket/some/prefix/"},
		{"s3://my-bucket/some/prefix/", "*s3store.Store", "s3://my-bucket/some/prefix/"},
		{"s3:///prefix-only", "", "no bucket"},
		{"s3://", "", "no bucket"},
		{"s3://Bad_Bucket", "", "bucket"},
		{"s3://b-ucket/a//b", "", "prefix"},
		{"s3://user:pw@bucket", "", "user info"},
		{"s3://bucket?region=x", "", "query"},
		{"gs://bucket", "", `unknown scheme "gs"`},
		{"/var/lib/strata", "", "no scheme"},
		{"::", "", "missing protocol scheme"},
	}
	for _, c := range cases {
		t.Run(c.url, func(t *testing.T) {
			store, err := Open(context.Background(), c.url, s3cfg)
			if c.want == "" {
				if err == nil {
					t.Fatalf("Open(%q) = %T, want an error", c.url, store)
				}
				if !strings.Contains(err.Error(), c.detail) || !strings.HasPrefix(err.Error(), "storeurl: ") {
					t.Fatalf("Open(%q) error %q, want it to mention %q", c.url, err, c.detail)
				}
				if strings.Contains(err.Error(), ":pw@") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", c.url, err)
			}
			if got := fmt.Sprintf("%T", store); got != c.want {
				t.Fatalf("Open(%q) = %s, want %s", c.url, got, c.want)
			}
			if s, ok := store.(fmt.Stringer); ok && c.detail != "" && s.String() != c.detail {
				t.Fatalf("Open(%q) = %s, want %s", c.url, s, c.detail)
			}
		})
	}
}

// An s3:// URL reaches a real server with the bucket and prefix it names.
func TestOpenS3RoundTrip(t *testing.T) {
	srv := miniotest.Start(t)
	b := make([]byte, 6)
	rand.Read(b)
	bucket := "strata-" + hex.EncodeToString(b)
	srv.MakeBucket(t, bucket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg := s3store.DefaultConfig()
	cfg.Endpoint, cfg.Region, cfg.PathStyle = srv.Endpoint, srv.Region, true
	cfg.AccessKeyID, cfg.SecretAccessKey = srv.AccessKey, srv.SecretKey
	under, err := Open(ctx, "s3://"+bucket+"/p/q", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := under.Put(ctx, "k", strings.NewReader("v"), 1, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	root, err := Open(ctx, "s3://"+bucket, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := root.Get(ctx, "p/q/k")
	if err != nil {
		t.Fatalf("object not under the URL's prefix: %v", err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || string(got) != "v" {
		t.Fatalf("got %q, %v", got, err)
	}
}
