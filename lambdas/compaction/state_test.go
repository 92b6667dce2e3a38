package compaction

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratalog/strata/compactor"
	"github.com/stratalog/strata/lambdas/runner"
	"github.com/stratalog/strata/lambdas/trigger"
	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/server"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// state is a real compactor's world: an embedded single-node metastore and a
// memory store, with ingestion segments committed as an agent commits them.
type state struct {
	t     *testing.T
	ctx   context.Context
	meta  *metastore.Client
	store objstore.Store
	c     *compactor.Compactor
	keys  []string // ingestion segment keys, in commit order
	seq   int      // segments written, for their ids
}

func newState(t *testing.T) *state {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	mcfg := server.EmbeddedConfig(t.TempDir(), "127.0.0.1:0")
	mcfg.NoSync = true
	node, err := server.Start(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	meta, err := metastore.Dial(ctx, []string{node.APIAddr()}, metastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	s := &state{t: t, ctx: ctx, meta: meta, store: objstore.NewMemory()}
	// Small thresholds, so a handful of segments makes merges due; no age-based
	// work, so both runs plan alike however long they take.
	cfg := compactor.Config{CommitWait: time.Second, GCGrace: time.Hour, L0MaxEntries: 4, L0MaxAge: time.Hour, L1MaxEntries: 2}
	if s.c, err = compactor.New(meta, s.store, cfg, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *state) createTopic(name string, configs map[string]string) objectlog.TopicID {
	s.t.Helper()
	resp, err := s.meta.CreateTopics(s.ctx, &pb.CreateTopicsRequest{Topics: []*pb.TopicSpec{{Name: name, Partitions: 1, ReplicationFactor: 1, Configs: configs}}})
	if err != nil {
		s.t.Fatal(err)
	}
	if r := resp.Results[0]; r.Error != pb.ErrorCode_NONE {
		s.t.Fatalf("create topic %s: %v %s", name, r.Error, r.Message)
	}
	return objectlog.TopicID(resp.Results[0].TopicId)
}

// produce commits one segment holding one batch of records for partition 0 of
// topic: key=value pairs, "" for a null key or value.
func (s *state) produce(topic objectlog.TopicID, kvs ...[2]string) {
	s.t.Helper()
	now := time.Now().UnixMilli()
	var body []byte
	for i, kv := range kvs {
		r := objectlog.Record{OffsetDelta: int32(i)}
		if kv[0] != "" {
			r.Key = []byte(kv[0])
		}
		if kv[1] != "" {
			r.Value = []byte(kv[1])
		}
		body = objectlog.AppendRecord(body, &r)
	}
	raw, err := objectlog.AppendBatch(nil, objectlog.BatchHeader{
		PartitionLeaderEpoch: -1, LastOffsetDelta: int32(len(kvs) - 1), BaseTimestamp: now, MaxTimestamp: now,
		ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, RecordCount: int32(len(kvs)),
	}, objectlog.CodecNone, body)
	if err != nil {
		s.t.Fatal(err)
	}
	var seg bytes.Buffer
	w := objectlog.NewSegmentWriter(&seg)
	if err := w.StartChunk(topic, 0, 0); err != nil {
		s.t.Fatal(err)
	}
	if err := w.WriteBatch(raw); err != nil {
		s.t.Fatal(err)
	}
	ix, err := w.Close()
	if err != nil {
		s.t.Fatal(err)
	}
	s.seq++
	id := objectlog.NewSegmentID(time.Now(), [8]byte{7, byte(s.seq >> 8), byte(s.seq)})
	key := objectlog.SegmentKey(id)
	if _, err := s.meta.RecordIntent(s.ctx, &pb.RecordIntentRequest{SegmentId: id[:], AgentId: "test", TtlMs: time.Minute.Milliseconds()}); err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.store.Put(s.ctx, key, bytes.NewReader(seg.Bytes()), int64(seg.Len()), objstore.PutOptions{IfNoneMatch: true}); err != nil {
		s.t.Fatal(err)
	}
	c, _ := ix.Find(topic, 0)
	resp, err := s.meta.CommitSegment(s.ctx, &pb.CommitSegmentRequest{SegmentId: id[:], Size: int64(seg.Len()), AgentId: "test",
		Chunks: []*pb.ChunkCommit{{TopicId: topic[:], Partition: 0, Position: c.Position, Length: c.Length,
			FirstTimestamp: c.FirstTimestamp, MaxTimestamp: c.MaxTimestamp, Flags: uint32(c.Flags),
			Batches: []*pb.BatchInfo{{OffsetCount: int32(len(kvs)), RecordCount: int32(len(kvs)), ProducerId: -1, ProducerEpoch: -1,
				BaseSequence: -1, MaxTimestamp: now, Size: int32(len(raw))}}}}})
	if err != nil {
		s.t.Fatal(err)
	}
	if r := resp.Chunks[0]; r.Error != pb.ErrorCode_NONE {
		s.t.Fatalf("commit: %v", r.Error)
	}
	s.keys = append(s.keys, key)
}

// build gives a state its content: a key-compacted topic with updates, tombstones
// and null keys, and a plain topic, in segments of their own. arrived is called
// after each commit with the segment's key, as an object-created event would be.
func (s *state) build(arrived func(key string)) {
	compacted := s.createTopic("compacted", map[string]string{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})
	plain := s.createTopic("plain", nil)
	produce := func(topic objectlog.TopicID, kvs ...[2]string) {
		s.produce(topic, kvs...)
		arrived(s.keys[len(s.keys)-1])
	}
	for round := range 3 {
		for k := range 4 {
			produce(compacted, [2]string{fmt.Sprintf("k%d", k), fmt.Sprintf("v%d", round)}, [2]string{"", "no key"})
		}
		produce(plain, [2]string{"", fmt.Sprintf("p%d", round)})
		produce(plain, [2]string{"", fmt.Sprintf("q%d", round)})
	}
	produce(compacted, [2]string{"k0", ""}, [2]string{"k1", "last"})
	produce(compacted, [2]string{"end", "end"})
}

// s3Event is the AWS fixture with its records replaced by one per key, each
// written as S3 writes it (the key URL-encoded, under the bucket's prefix).
func s3Event(t *testing.T, scope trigger.Scope, keys []string) []byte {
	t.Helper()
	fx := string(fixture(t, "s3-put.json"))
	start := strings.Index(fx, "    {")
	end := strings.LastIndex(fx, "    }") + len("    }")
	first := fx[start : strings.Index(fx, "\n    },")+len("\n    }")]
	var recs []string
	for _, k := range keys {
		rec := strings.Replace(first, "dev/segments/3f/000001a213f8c4409a114207c35e213f.seg", url.QueryEscape(scope.Prefix+"/"+k), 1)
		recs = append(recs, strings.ReplaceAll(rec, "strata-prod", scope.Bucket))
	}
	return []byte(fx[:start] + strings.Join(recs, ",\n") + fx[end:])
}

// TestSameResultOnRealState builds two identical states. Each segment of one is
// announced to the Lambda handler in process, by the AWS S3 event of its key; each
// segment of the other is announced by the same event as a MinIO webhook POST
// through the runner, which handles it before the next segment arrives. An orphan
// (an object that never commits) is announced to both at the end. What the real
// compactor did adds up to equal summaries, and it did merge, clean and skip.
func TestSameResultOnRealState(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two embedded metastores")
	}
	scope := trigger.Scope{Bucket: "strata-it", Prefix: "dev"}
	orphan := objectlog.SegmentKey(objectlog.NewSegmentID(time.Now(), [8]byte{9}))

	a := newState(t)
	ha := NewHandler(a.c, scope, nil)
	var viaLambda Summary
	lambdaArrived := func(key string) {
		s, err := invoke(t, ha, s3Event(t, scope, []string{key}))
		if err != nil {
			t.Fatal(err)
		}
		viaLambda.add(s)
	}
	a.build(lambdaArrived)
	lambdaArrived(orphan)

	b := newState(t)
	h := NewHandler(b.c, scope, nil)
	viaRunner := Summary{}
	var mu sync.Mutex
	cfg := runner.DefaultConfig()
	cfg.SweepInterval, cfg.Scope = 0, scope
	r, err := runner.New(cfg, runner.Funcs{Object: func(ctx context.Context, key string) error {
		rep, err := h.Object(ctx, key)
		if err == nil {
			mu.Lock()
			viaRunner.Records++
			viaRunner.Add(rep)
			mu.Unlock()
		}
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	runnerArrived := func(key string) {
		want := r.Stats().Done + 1
		resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(s3Event(t, scope, []string{key})))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("webhook: %s", resp.Status)
		}
		deadline := time.Now().Add(30 * time.Second)
		for r.Stats().Done < want {
			if st := r.Stats(); st.Failed > 0 || time.Now().After(deadline) {
				t.Fatalf("runner: %+v", st)
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.build(runnerArrived)
	runnerArrived(orphan)

	t.Logf("summary: %+v", viaLambda)
	if viaLambda.Handled != len(a.keys)+1 || viaLambda.Total.Merges == 0 || viaLambda.Total.Cleans == 0 ||
		viaLambda.Total.RecordsRemoved == 0 || viaLambda.Skipped[compactor.SkipNotCommitted] != 1 {
		t.Fatalf("the compactor did not merge, clean and skip the orphan: %+v", viaLambda)
	}
	if !reflect.DeepEqual(viaLambda, viaRunner) {
		t.Fatalf("Lambda summary %+v\nrunner summary %+v", viaLambda, viaRunner)
	}
}

// add sums another summary into s (for a run of invocations).
func (s *Summary) add(o Summary) {
	s.Records += o.Records
	for reason, n := range o.Skipped {
		for range n {
			s.skip(reason)
		}
	}
	s.Handled += o.Handled
	s.Total.Add(o.Total)
}
