package compaction

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/stratalog/strata/compactor"
	"github.com/stratalog/strata/lambdas/runner"
	"github.com/stratalog/strata/lambdas/trigger"
)

const (
	seg3f = "segments/3f/000001a213f8c4409a114207c35e213f.seg"
	sege1 = "segments/e1/000001a213f8c46504be77102d8c6ae1.seg"
	seg0a = "segments/0a/000001a213f8c48a5d03fa91440b7c0a.seg"
)

// fixture reads an event from lambdas/trigger/testdata, where the decoder's fixtures live.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "trigger", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeCompactor answers each key with a report derived from the key alone, so that
// two runs over the same keys give the same reports in any order.
type fakeCompactor struct {
	mu     sync.Mutex
	keys   []string
	sweeps int
	fail   map[string]error
}

func (f *fakeCompactor) OnSegment(ctx context.Context, key string) (compactor.Report, error) {
	if _, ok := lambdacontext.FromContext(ctx); !ok && ctx.Value(wantLambdaContext{}) != nil {
		return compactor.Report{}, errors.New("no Lambda context reached the compactor")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = append(f.keys, key)
	if err := f.fail[key]; err != nil {
		return compactor.Report{}, err
	}
	if key == sege1 {
		return compactor.Report{Skipped: "not committed"}, nil
	}
	n := int(key[len("segments/")]) // the shard's first hex digit
	return compactor.Report{Merges: 1, BytesMerged: int64(100 * n), EntriesReplaced: n, EntriesWritten: 1, ObjectsDeleted: n % 3}, nil
}

func (f *fakeCompactor) Sweep(ctx context.Context) (compactor.Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweeps++
	return compactor.Report{LogStartMoves: 2, ObjectsDeleted: 5}, nil
}

func (f *fakeCompactor) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(slices.Values(f.keys))
}

type wantLambdaContext struct{}

// invoke calls h the way the Lambda runtime does: through lambda.NewHandler, with a
// Lambda context.
func invoke(t *testing.T, h *Handler, payload []byte) (Summary, error) {
	t.Helper()
	ctx := lambdacontext.NewContext(context.WithValue(context.Background(), wantLambdaContext{}, true),
		&lambdacontext.LambdaContext{AwsRequestID: "c6af9ac6-7b61-11e6-9a41-93e812345678",
			InvokedFunctionArn: "arn:aws:lambda:us-east-1:123456789012:function:strata-compaction"})
	out, err := lambda.NewHandler(h).Invoke(ctx, payload)
	if err != nil {
		return Summary{}, err
	}
	var s Summary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	return s, nil
}

var prod = trigger.Scope{Bucket: "strata-prod", Prefix: "dev"}

func TestInvokeS3Event(t *testing.T) {
	fc := &fakeCompactor{}
	s, err := invoke(t, NewHandler(fc, prod, nil), fixture(t, "s3-put.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := Summary{Records: 3, Handled: 2, Skipped: map[string]int{SkipNotSegment: 1, "not committed": 1},
		Total: compactor.Report{Merges: 1, BytesMerged: 5100, EntriesReplaced: 51, EntriesWritten: 1}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("summary %+v\nwant    %+v", s, want)
	}
	if got := fc.seen(); !slices.Equal(got, []string{seg3f, sege1}) {
		t.Fatalf("compactor saw %v", got)
	}
}

func TestInvokeScheduledEvent(t *testing.T) {
	fc := &fakeCompactor{}
	s, err := invoke(t, NewHandler(fc, prod, nil), fixture(t, "scheduled.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Swept || s.Total.LogStartMoves != 2 || s.Total.ObjectsDeleted != 5 || fc.sweeps != 1 || len(fc.keys) != 0 {
		t.Fatalf("summary %+v after %d sweeps, keys %v", s, fc.sweeps, fc.keys)
	}
}

func TestInvokeErrors(t *testing.T) {
	fc := &fakeCompactor{fail: map[string]error{seg3f: errors.New("metastore unavailable")}}
	h := NewHandler(fc, prod, nil)
	_, err := invoke(t, h, fixture(t, "s3-put.json"))
	if err == nil || !strings.Contains(err.Error(), "metastore unavailable") || !strings.Contains(err.Error(), seg3f) {
		t.Fatalf("a failed segment: %v, want its error returned (Lambda retries)", err)
	}
	if got := fc.seen(); !slices.Equal(got, []string{seg3f, sege1}) {
		t.Fatalf("compactor saw %v: every key is tried even after a failure", got)
	}
	for _, payload := range []string{`{"detail-type":"Object Created","source":"aws.s3"}`, `[]`, `nonsense`} {
		if _, err := invoke(t, h, []byte(payload)); err == nil || !strings.HasPrefix(err.Error(), "compaction: trigger: ") {
			t.Errorf("payload %s: %v, want a decoding error", payload, err)
		}
	}
}

// TestSameResultAsRunner sends each fixture both ways: to the Lambda handler in
// process, and as a MinIO webhook POST to a runner whose workers call the same
// handler's Object. The compactor sees the same keys and the reports add up to the
// same summary.
func TestSameResultAsRunner(t *testing.T) {
	for _, c := range []struct {
		file  string
		scope trigger.Scope
	}{
		{"s3-put.json", prod},
		{"minio-webhook.json", trigger.Scope{Bucket: "strata-it", Prefix: "dev"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			payload := fixture(t, c.file)
			lambdaSide := &fakeCompactor{}
			viaLambda, err := invoke(t, NewHandler(lambdaSide, c.scope, nil), payload)
			if err != nil {
				t.Fatal(err)
			}

			runnerSide := &fakeCompactor{}
			h := NewHandler(runnerSide, c.scope, nil)
			var mu sync.Mutex
			viaRunner := Summary{Records: viaLambda.Records}
			cfg := runner.DefaultConfig()
			cfg.Scope, cfg.SweepInterval = h.Scope(), 0
			r, err := runner.New(cfg, runner.Funcs{Object: func(ctx context.Context, key string) error {
				rep, err := h.Object(ctx, key)
				if err == nil {
					mu.Lock()
					viaRunner.Add(rep)
					mu.Unlock()
				}
				return err
			}})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(r.Handler())
			defer srv.Close()
			resp, err := http.Post(srv.URL+"/strata", "application/json", bytes.NewReader(payload))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("webhook: %s", resp.Status)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := r.Close(ctx); err != nil { // drains the queue
				t.Fatal(err)
			}
			if !slices.Equal(lambdaSide.seen(), runnerSide.seen()) || len(lambdaSide.seen()) == 0 {
				t.Fatalf("compactor keys: Lambda %v, runner %v", lambdaSide.seen(), runnerSide.seen())
			}
			if !reflect.DeepEqual(viaLambda, viaRunner) {
				t.Fatalf("Lambda summary %+v\nrunner summary %+v", viaLambda, viaRunner)
			}
		})
	}
}

// TestSummaryAddsEveryField sets every number of a Report to 1: a field the
// summary (compactor.Report.Add) misses is not 2 after two additions.
func TestSummaryAddsEveryField(t *testing.T) {
	var one compactor.Report
	v := reflect.ValueOf(&one).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch {
		case !f.CanSet():
		case f.CanInt():
			f.SetInt(1)
		case f.CanUint():
			f.SetUint(1)
		case f.CanFloat():
			f.SetFloat(1)
		}
	}
	var s Summary
	s.Add(one)
	s.Add(one)
	got := reflect.ValueOf(s.Total)
	for i := range got.NumField() {
		f, name := got.Field(i), got.Type().Field(i).Name
		if !f.CanInterface() {
			continue
		}
		if (f.CanInt() && f.Int() != 2) || (f.CanUint() && f.Uint() != 2) || (f.CanFloat() && f.Float() != 2) {
			t.Errorf("Total.%s = %v after adding 1 twice", name, f.Interface())
		}
	}
	if s.Handled != 2 || s.Total.Skipped != "" {
		t.Fatalf("summary %+v", s)
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := func(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }

	_, err := ConfigFromEnv(env(nil))
	if err == nil || !strings.Contains(err.Error(), EnvMetastore) || !strings.Contains(err.Error(), EnvStore) {
		t.Fatalf("empty environment: %v, want both required variables named", err)
	}
	_, err = ConfigFromEnv(env(map[string]string{EnvMetastore: "m:1", EnvStore: "s3://b/p",
		EnvGCGrace: "5", EnvCommitWait: "soon", EnvS3PathStyle: "maybe", EnvL0MaxEntries: "many", EnvL0MaxAge: "1"}))
	for _, name := range []string{EnvGCGrace, EnvCommitWait, EnvS3PathStyle, EnvL0MaxEntries, EnvL0MaxAge} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("bad %s not reported: %v", name, err)
		}
	}
	if _, err := ConfigFromEnv(env(map[string]string{EnvMetastore: "m:1", EnvStore: "s3:///p"})); err == nil {
		t.Error("a store URL without a bucket accepted")
	}
	if _, err := ConfigFromEnv(env(map[string]string{EnvMetastore: "m:1", EnvStore: "s3://b", EnvGCGrace: "-1s"})); err == nil ||
		!strings.Contains(err.Error(), "GCGrace") {
		t.Errorf("a negative GC grace: %v", err)
	}

	c, err := ConfigFromEnv(env(map[string]string{
		EnvMetastore: " m1:7401, m2:7401 ,", EnvStore: "s3://strata-prod/dev", EnvS3Endpoint: "http://127.0.0.1:9000",
		EnvS3Region: "eu-west-1", EnvS3AccessKey: "id", EnvS3SecretKey: "secret", EnvGCGrace: "90s", EnvCommitWait: "2s",
		EnvL0MaxEntries: "16", EnvL0MaxAge: "30s"}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Metastore, []string{"m1:7401", "m2:7401"}) || c.Store != "s3://strata-prod/dev" ||
		c.S3.Endpoint != "http://127.0.0.1:9000" || !c.S3.PathStyle || c.S3.Region != "eu-west-1" ||
		c.S3.AccessKeyID != "id" || c.S3.SecretAccessKey != "secret" ||
		c.Compactor.GCGrace != 90*time.Second || c.Compactor.CommitWait != 2*time.Second ||
		c.Compactor.L0MaxEntries != 16 || c.Compactor.L0MaxAge != 30*time.Second {
		t.Fatalf("config %+v", c)
	}
	c, err = ConfigFromEnv(env(map[string]string{EnvMetastore: "m:1", EnvStore: "s3://b", EnvS3Endpoint: "http://x", EnvS3PathStyle: "false"}))
	if err != nil || c.S3.PathStyle {
		t.Fatalf("STRATA_S3_PATH_STYLE=false: %+v %v", c.S3, err)
	}
}

func TestOpen(t *testing.T) {
	if _, err := Open(context.Background(), DefaultConfig(), nil); err == nil {
		t.Fatal("Open without a metastore or store")
	}
	cfg := DefaultConfig()
	cfg.Metastore, cfg.Store = []string{"127.0.0.1:1"}, "mem://"
	h, err := Open(context.Background(), cfg, nil) // no node answers: Dial still returns
	if err != nil {
		t.Fatal(err)
	}
	if h.Scope() != (trigger.Scope{}) {
		t.Fatalf("scope of mem:// %+v", h.Scope())
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}
