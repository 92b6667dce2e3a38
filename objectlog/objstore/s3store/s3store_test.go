package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/stratalog/strata/internal/miniotest"
	"github.com/stratalog/strata/objectlog/objstore"
	"github.com/stratalog/strata/objectlog/objstore/storetest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newBucket(t *testing.T, srv *miniotest.Server) string {
	b := make([]byte, 6)
	rand.Read(b)
	name := "strata-" + hex.EncodeToString(b)
	srv.MakeBucket(t, name)
	return name
}

// storeConfig points a Config at srv (or at endpoint, when a proxy sits in front).
func storeConfig(srv *miniotest.Server, endpoint, bucket, prefix string) Config {
	cfg := DefaultConfig()
	cfg.Bucket = bucket
	cfg.Prefix = prefix
	cfg.Endpoint = endpoint
	cfg.Region = srv.Region
	cfg.PathStyle = true
	cfg.AccessKeyID = srv.AccessKey
	cfg.SecretAccessKey = srv.SecretKey
	cfg.MaxBackoff = 20 * time.Millisecond
	return cfg
}

func mustNew(t *testing.T, cfg Config, extra ...func(*s3.Options)) *Store {
	t.Helper()
	s, err := newStore(testCtx(t), cfg, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAcceptance(t *testing.T) {
	srv := miniotest.Start(t)
	for _, prefix := range []string{"", "some/prefix"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) objstore.Store {
				bucket := newBucket(t, srv)
				if prefix != "" {
					// Neighbours just outside the prefix must stay invisible.
					root := mustNew(t, storeConfig(srv, srv.Endpoint, bucket, ""))
					for _, k := range []string{"some/prefixed", "some/prefix-x/y", "other"} {
						if _, err := root.Put(testCtx(t), k, strings.NewReader("n"), 1, objstore.PutOptions{}); err != nil {
							t.Fatal(err)
						}
					}
				}
				return mustNew(t, storeConfig(srv, srv.Endpoint, bucket, prefix))
			})
		})
	}
}

// TestPrefixLayout checks where keys land in the bucket.
func TestPrefixLayout(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := newBucket(t, srv)
	s := mustNew(t, storeConfig(srv, srv.Endpoint, bucket, "some/prefix/"))
	if _, err := s.Put(testCtx(t), "a/b", strings.NewReader("x"), 1, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	root := mustNew(t, storeConfig(srv, srv.Endpoint, bucket, ""))
	if _, err := root.Head(testCtx(t), "some/prefix/a/b"); err != nil {
		t.Fatalf("object not at some/prefix/a/b: %v", err)
	}
	// A key valid on its own may be too long once prefixed.
	_, err := s.Head(testCtx(t), strings.Repeat("k", objstore.MaxKeyLen))
	if !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("long key under prefix: %v", err)
	}
	if got := s.String(); got != "s3://"+bucket+"/some/prefix/" {
		t.Fatalf("String() = %q", got)
	}
}

// faultProxy sits between a store and MinIO and misbehaves on request.
type faultProxy struct {
	rp *httputil.ReverseProxy
	// slowDown: answer this many more requests with 503 SlowDown.
	slowDown atomic.Int32
	// conflict: answer this many more PUTs with 409 ConditionalRequestConflict, as
	// AWS does to the loser of overlapping conditional writes.
	conflict atomic.Int32
	// hang: hold this many more requests for hangFor before forwarding.
	hang    atomic.Int32
	hangFor time.Duration
	// loseResponse: forward this many more PUTs, then answer 500 as if the
	// response were lost on the way back.
	loseResponse atomic.Int32
	// flip: corrupt one byte of this many more PUT bodies.
	flip atomic.Int32
	// flipGet: corrupt one byte of this many more GET response bodies.
	flipGet  atomic.Int32
	requests atomic.Int32
}

func newFaultProxy(t *testing.T, target string) (*faultProxy, string) {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{rp: httputil.NewSingleHostReverseProxy(u)}
	// Requests cut off by the client are expected here; do not log them.
	p.rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) {
		w.WriteHeader(http.StatusBadGateway)
	}
	ts := httptest.NewServer(p)
	t.Cleanup(ts.Close)
	return p, ts.URL
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if p.hang.Add(-1) >= 0 {
		// Read the body first: only then does the server notice the client leaving.
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case <-time.After(p.hangFor):
		case <-r.Context().Done():
			return
		}
	}
	if p.slowDown.Add(-1) >= 0 {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+
			`<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>`+
			`<RequestId>test</RequestId></Error>`)
		return
	}
	if r.Method == http.MethodPut && p.conflict.Add(-1) >= 0 {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+
			`<Error><Code>ConditionalRequestConflict</Code><Message>A conflicting conditional operation is currently in progress against this resource.</Message></Error>`)
		return
	}
	if r.Method == http.MethodPut && p.flip.Add(-1) >= 0 {
		body, _ := io.ReadAll(r.Body)
		if len(body) > 0 {
			body[len(body)/2] ^= 0x40
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if r.Method == http.MethodPut && p.loseResponse.Add(-1) >= 0 {
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+
			`<Error><Code>InternalError</Code><Message>lost</Message></Error>`)
		return
	}
	if r.Method == http.MethodGet && p.flipGet.Add(-1) >= 0 {
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if len(body) > 0 {
			body[len(body)/2] ^= 0x40
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
		return
	}
	p.rp.ServeHTTP(w, r)
}

func TestRetrySlowDown(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := newBucket(t, srv)
	proxy, endpoint := newFaultProxy(t, srv.Endpoint)
	s := mustNew(t, storeConfig(srv, endpoint, bucket, ""))
	ctx := testCtx(t)

	proxy.slowDown.Store(3)
	if _, err := s.Put(ctx, "k", strings.NewReader("hello"), 5, objstore.PutOptions{}); err != nil {
		t.Fatalf("put through 3 SlowDowns: %v", err)
	}
	if n := proxy.requests.Load(); n != 4 {
		t.Fatalf("put took %d requests, want 4", n)
	}

	proxy.slowDown.Store(2)
	rc, _, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatalf("get through 2 SlowDowns: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != "hello" {
		t.Fatalf("get = %q, %v", got, err)
	}

	proxy.conflict.Store(1)
	proxy.requests.Store(0)
	if _, err := s.Put(ctx, "c", strings.NewReader("x"), 1, objstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("conditional put after a ConditionalRequestConflict: %v", err)
	}
	if n := proxy.requests.Load(); n != 2 {
		t.Fatalf("conditional put took %d requests, want 2", n)
	}

	cfg := storeConfig(srv, endpoint, bucket, "")
	cfg.MaxAttempts = 1
	once := mustNew(t, cfg)
	proxy.slowDown.Store(1)
	proxy.requests.Store(0)
	_, err = once.Put(ctx, "k2", strings.NewReader("x"), 1, objstore.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "SlowDown") {
		t.Fatalf("put with MaxAttempts=1 through a SlowDown: %v", err)
	}
	if n := proxy.requests.Load(); n != 1 {
		t.Fatalf("MaxAttempts=1 made %d requests", n)
	}
	if _, err := s.Head(ctx, "k2"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("refused put stored something: %v", err)
	}
}

func TestAttemptTimeout(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := newBucket(t, srv)
	proxy, endpoint := newFaultProxy(t, srv.Endpoint)
	cfg := storeConfig(srv, endpoint, bucket, "")
	cfg.RequestTimeout = 300 * time.Millisecond
	s := mustNew(t, cfg)
	ctx := testCtx(t)

	proxy.hangFor = 5 * time.Second
	proxy.hang.Store(1)
	if _, err := s.Put(ctx, "k", strings.NewReader("hello"), 5, objstore.PutOptions{}); err != nil {
		t.Fatalf("put after a hung attempt: %v", err)
	}

	// A Get's body is not under the deadline while the caller is busy elsewhere.
	rc, _, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * cfg.RequestTimeout)
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != "hello" {
		t.Fatalf("slow reader got %q, %v", got, err)
	}
}

// A conditional Put whose first attempt landed but whose response was lost must not
// report the retry's 412 as a lost race.
func TestConditionalPutLostResponse(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := newBucket(t, srv)
	proxy, endpoint := newFaultProxy(t, srv.Endpoint)
	s := mustNew(t, storeConfig(srv, endpoint, bucket, ""))
	ctx := testCtx(t)

	proxy.loseResponse.Store(1)
	info, err := s.Put(ctx, "once", strings.NewReader("mine"), 4, objstore.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("conditional put with a lost response: %v", err)
	}
	h, err := s.Head(ctx, "once")
	if err != nil || h.ETag != info.ETag {
		t.Fatalf("head = %+v, %v; put said %+v", h, err, info)
	}

	// Same again, but someone else's bytes are there: the outcome is unknown, which
	// is not ErrPreconditionFailed.
	proxy.loseResponse.Store(1)
	_, err = s.Put(ctx, "once", strings.NewReader("other"), 5, objstore.PutOptions{IfNoneMatch: true})
	if err == nil || errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Fatalf("put over another object after a lost response: %v", err)
	}

	// Without an ambiguous attempt a lost condition is reported as such, also after
	// a retried SlowDown, which is a refusal rather than an unknown outcome.
	_, err = s.Put(ctx, "once", strings.NewReader("other"), 5, objstore.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Fatalf("plain lost condition: %v", err)
	}
	proxy.slowDown.Store(1)
	_, err = s.Put(ctx, "once", strings.NewReader("other"), 5, objstore.PutOptions{IfMatch: "stale"})
	if !errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Fatalf("lost condition after SlowDown: %v", err)
	}
}

func TestChecksumMismatchRejected(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := newBucket(t, srv)
	proxy, endpoint := newFaultProxy(t, srv.Endpoint)
	cfg := storeConfig(srv, endpoint, bucket, "")
	cfg.MaxAttempts = 1
	data := bytes.Repeat([]byte("0123456789"), 1000)

	// Over plain HTTP the SDK also signs the payload's SHA-256, which alone would
	// catch the flipped byte. Sign UNSIGNED-PAYLOAD (as over TLS) so that only our
	// CRC-32C stands between the corruption and the bucket.
	unsigned := func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
	}
	for name, s := range map[string]*Store{
		"signed payload":   mustNew(t, cfg),
		"unsigned payload": mustNew(t, cfg, unsigned),
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			proxy.flip.Store(1)
			_, err := s.Put(ctx, "corrupt", bytes.NewReader(data), int64(len(data)), objstore.PutOptions{})
			if err == nil {
				t.Fatal("corrupted put succeeded")
			}
			t.Logf("corrupted put: %v", err)
			if _, err := s.Head(ctx, "corrupt"); !errors.Is(err, objstore.ErrNotExist) {
				t.Fatalf("corrupted put stored something: %v", err)
			}
			// The same store, uncorrupted, works: the rejection was the checksum's.
			if _, err := s.Put(ctx, "corrupt", bytes.NewReader(data), int64(len(data)), objstore.PutOptions{}); err != nil {
				t.Fatalf("clean put: %v", err)
			}
			if err := s.Delete(ctx, "corrupt"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Get checks what it reads against the stored CRC-32C.
func TestGetDetectsCorruption(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := newBucket(t, srv)
	proxy, endpoint := newFaultProxy(t, srv.Endpoint)
	s := mustNew(t, storeConfig(srv, endpoint, bucket, ""))
	ctx := testCtx(t)
	data := bytes.Repeat([]byte("abcdefgh"), 512)
	if _, err := s.Put(ctx, "k", bytes.NewReader(data), int64(len(data)), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy.flipGet.Store(1)
	rc, _, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err == nil {
		t.Fatalf("corrupted get read %d bytes without error (equal: %v)", len(got), bytes.Equal(got, data))
	}
	t.Logf("corrupted get: %v", err)
}

// The CRC-32C we send is the one MinIO stores and reports.
func TestStoredChecksum(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := newBucket(t, srv)
	s := mustNew(t, storeConfig(srv, srv.Endpoint, bucket, ""))
	ctx := testCtx(t)
	data := []byte("The quick brown fox jumps over the lazy dog")
	if _, err := s.Put(ctx, "fox", bytes.NewReader(data), int64(len(data)), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: &s.bucket, Key: strPtr("fox"), ChecksumMode: "ENABLED",
	})
	if err != nil {
		t.Fatal(err)
	}
	// CRC-32C of the sentence is 0x22620404.
	if got := *out.ChecksumCRC32C; got != "ImIEBA==" {
		t.Fatalf("stored CRC-32C = %q, want ImIEBA==", got)
	}
}

func strPtr(s string) *string { return &s }

func TestConfigValidate(t *testing.T) {
	if err := (Config{Bucket: "ok-bucket"}).Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	cfg := Config{
		Bucket:         "Bad_Bucket",
		Prefix:         "/abs//x",
		Endpoint:       "ftp://host",
		AccessKeyID:    "only-the-id",
		RequestTimeout: -time.Second,
		MaxAttempts:    -1,
		MaxBackoff:     -time.Second,
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("bad config passed")
	}
	for _, want := range []string{"bucket", "prefix", "endpoint", "AccessKeyID", "RequestTimeout", "MaxAttempts", "MaxBackoff"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	if _, err := New(context.Background(), cfg); err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, bad := range []string{"", "ab", strings.Repeat("a", 64), "-ab", "ab-", "a b"} {
		if err := (Config{Bucket: bad}).Validate(); err == nil {
			t.Errorf("bucket %q accepted", bad)
		}
	}
	for _, bad := range []string{"a/../b", "a//b", "/x"} {
		if err := (Config{Bucket: "abc", Prefix: bad}).Validate(); err == nil {
			t.Errorf("prefix %q accepted", bad)
		}
	}
	if err := (Config{Bucket: "abc", Endpoint: "http://"}).Validate(); err == nil {
		t.Error("endpoint without host accepted")
	}
}
