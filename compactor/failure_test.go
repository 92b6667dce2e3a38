package compactor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// hooked is a Metastore whose ReplaceIndex runs a hook first (a concurrent change,
// a crash) and records the requests it saw.
type hooked struct {
	Metastore
	mu       sync.Mutex
	before   func(*pb.ReplaceIndexRequest) error // an error is returned instead of calling
	replaces []*pb.ReplaceIndexRequest
}

func (m *hooked) ReplaceIndex(ctx context.Context, req *pb.ReplaceIndexRequest) (*pb.ReplaceIndexResponse, error) {
	m.mu.Lock()
	m.replaces = append(m.replaces, req)
	hook := m.before
	m.before = nil // once
	m.mu.Unlock()
	if hook != nil {
		if err := hook(req); err != nil {
			return nil, err
		}
	}
	return m.Metastore.ReplaceIndex(ctx, req)
}

// produceRun commits n single-partition segments of a few records each.
func produceRun(h *harness, topic objectlog.TopicID, n int) {
	h.t.Helper()
	for i := range n {
		h.produce(topic, batch{recs: []rec{kv("k", fmt.Sprint(i), time.Now().UnixMilli()), kv("j", fmt.Sprint(i), time.Now().UnixMilli())}})
	}
}

func TestGCGrace(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) { c.GCGrace = time.Hour }))
	topic := h.createTopic("gc", 1, nil)
	produceRun(h, topic, 8)
	inputs := h.objects()
	if rep := h.sweep(); rep.Merges != 1 || rep.ObjectsDeleted != 0 {
		t.Fatalf("sweep with an hour of grace: %+v", rep)
	}
	// The replaced objects are unreferenced but within their grace: kept, readable.
	objs := h.objects()
	for k := range inputs {
		if !objs[k] {
			t.Fatalf("%s deleted within its grace period", k)
		}
	}
	// A collector with a short grace takes them, and only them.
	h.cfg.GCGrace = time.Millisecond
	short := h.compactor(h.meta)
	time.Sleep(5 * time.Millisecond)
	rep, err := short.CollectGarbage(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ObjectsDeleted != len(inputs) {
		t.Fatalf("deleted %d, want %d", rep.ObjectsDeleted, len(inputs))
	}
	if got, want := h.objects(), h.referenced(topic, 1); !maps.Equal(got, want) {
		t.Fatalf("objects %v, referenced %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	h.fetch(topic, 0) // every entry still readable
	for k := range inputs {
		id, _ := objectlog.ParseSegmentKey(k)
		resp, err := h.meta.Segment(h.ctx, &pb.SegmentRequest{SegmentId: id[:]})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Record == nil || !resp.Record.Deleted {
			t.Fatalf("%s: record %v", k, resp.Record)
		}
		// An event for a collected object is skipped.
		if rep := h.onSegment(k); rep.Skipped != SkipCondemned {
			t.Fatalf("event for a collected object: %+v", rep)
		}
	}
}

// uploadOrphan stores a segment whose writer recorded an intent of ttl and then
// never committed (it crashed between PUT and commit).
func (h *harness) uploadOrphan(topic objectlog.TopicID, ttl time.Duration) string {
	h.t.Helper()
	var buf bytes.Buffer
	sw := objectlog.NewSegmentWriter(&buf)
	if err := sw.StartChunk(topic, 0, 0); err != nil {
		h.t.Fatal(err)
	}
	if err := sw.WriteBatch(batch{recs: []rec{kv("o", "rphan", 1)}}.encode(h.t, -1)); err != nil {
		h.t.Fatal(err)
	}
	if _, err := sw.Close(); err != nil {
		h.t.Fatal(err)
	}
	id := objectlog.NewSegmentID(time.Now(), [8]byte{1, 2, 3, 4, 5, 6, 7, byte(len(h.keys))})
	if _, err := h.meta.RecordIntent(h.ctx, &pb.RecordIntentRequest{SegmentId: id[:], AgentId: "crashed", TtlMs: ttl.Milliseconds()}); err != nil {
		h.t.Fatal(err)
	}
	key := objectlog.SegmentKey(id)
	if _, err := h.store.Put(h.ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()), objstore.PutOptions{IfNoneMatch: true}); err != nil {
		h.t.Fatal(err)
	}
	return key
}

func TestOrphanCollected(t *testing.T) {
	h := newHarness(t)
	topic := h.createTopic("orphans", 1, nil)
	key := h.uploadOrphan(topic, 500*time.Millisecond)
	start := time.Now()
	if rep := h.onSegment(key); rep.Skipped != SkipNotCommitted {
		t.Fatalf("orphan: %+v", rep)
	}
	if waited := time.Since(start); waited < h.cfg.CommitWait/2 {
		t.Fatalf("gave up on a segment with an intent after %v (CommitWait %v)", waited, h.cfg.CommitWait)
	}
	h.gc()
	if !h.objects()[key] {
		t.Fatal("orphan deleted while its intent was live")
	}
	eventually(t, 10*time.Second, func() error {
		h.gc()
		if h.objects()[key] {
			return errNotYet
		}
		return nil
	})
	// Keys that are not segments are skipped.
	if rep := h.onSegment("connectors/x.json"); rep.Skipped != SkipNotSegment {
		t.Fatalf("%+v", rep)
	}
	if rep := h.onSegment(objectlog.SegmentKey(objectlog.SegmentID{1})); rep.Skipped != SkipNotCommitted {
		t.Fatalf("unknown segment: %+v", rep)
	}
}

func TestOnSegmentWaitsForCommit(t *testing.T) {
	// The event beats the commit: OnSegment polls while the upload intent is there.
	h := newHarness(t, withConfig(func(c *Config) { c.CommitWait = 10 * time.Second; c.L0MaxEntries = 1 }))
	topic := h.createTopic("racy", 1, nil)
	var buf bytes.Buffer
	sw := objectlog.NewSegmentWriter(&buf)
	raw := batch{recs: []rec{kv("k", "v", time.Now().UnixMilli())}}.encode(t, -1)
	if err := sw.StartChunk(topic, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := sw.WriteBatch(raw); err != nil {
		t.Fatal(err)
	}
	ix, err := sw.Close()
	if err != nil {
		t.Fatal(err)
	}
	id := objectlog.NewSegmentID(time.Now(), [8]byte{9})
	key := objectlog.SegmentKey(id)
	if _, err := h.meta.RecordIntent(h.ctx, &pb.RecordIntentRequest{SegmentId: id[:], AgentId: "slow", TtlMs: 60_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Put(h.ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		c := ix.Chunks[0]
		h.meta.CommitSegment(h.ctx, &pb.CommitSegmentRequest{SegmentId: id[:], Size: int64(buf.Len()), AgentId: "slow", Chunks: []*pb.ChunkCommit{{
			TopicId: topic[:], Position: c.Position, Length: c.Length, FirstTimestamp: c.FirstTimestamp, MaxTimestamp: c.MaxTimestamp,
			Batches: []*pb.BatchInfo{{OffsetCount: 1, RecordCount: 1, ProducerId: -1, ProducerEpoch: -1, BaseSequence: -1, Size: int32(len(raw))}},
		}}})
	}()
	if rep := h.onSegment(key); rep.Merges != 1 || rep.Skipped != "" {
		t.Fatalf("%+v", rep)
	}
}

func TestCrashBeforeCommit(t *testing.T) {
	// The compactor dies (here: its commit fails, ambiguously) after PUTting its
	// output: the index is untouched, and the output is collected once its intent
	// expires, never before.
	h := newHarness(t, withConfig(func(c *Config) { c.IntentTTL = 500 * time.Millisecond }))
	topic := h.createTopic("crash", 1, nil)
	produceRun(h, topic, 8)
	before, _ := h.fetch(topic, 0)
	inputs := h.objects()
	m := &hooked{Metastore: h.meta}
	m.before = func(*pb.ReplaceIndexRequest) error { return fmt.Errorf("%w: connection lost", metastore.ErrAmbiguous) }
	c := h.compactor(m)
	if _, err := c.OnSegment(h.ctx, h.keys[len(h.keys)-1]); !errors.Is(err, metastore.ErrAmbiguous) {
		t.Fatalf("error %v, want the ambiguous commit", err)
	}
	output := objectlog.SegmentKey(objectlog.SegmentID(m.replaces[0].SegmentId))
	if !h.objects()[output] {
		t.Fatal("an output whose commit is ambiguous was deleted")
	}
	after, _ := h.fetch(topic, 0)
	if !bytes.Equal(before, after) {
		t.Fatal("index changed")
	}
	h.gc()
	if !h.objects()[output] {
		t.Fatal("output collected while its intent was live")
	}
	eventually(t, 10*time.Second, func() error {
		h.gc()
		if h.objects()[output] {
			return errNotYet
		}
		return nil
	})
	if got := h.objects(); !maps.Equal(got, inputs) {
		t.Fatalf("objects %v, want the inputs %v", got, inputs)
	}
	// A retry merges for real.
	if rep := h.onSegment(h.keys[len(h.keys)-1]); rep.Merges != 1 {
		t.Fatalf("%+v", rep)
	}
}

func TestConflictWithDeleteRecords(t *testing.T) {
	h := newHarness(t)
	topic := h.createTopic("race", 1, nil)
	produceRun(h, topic, 8)
	inputs := h.objects()
	m := &hooked{Metastore: h.meta}
	m.before = func(*pb.ReplaceIndexRequest) error {
		_, err := h.meta.DeleteRecords(h.ctx, &pb.DeleteRecordsRequest{Partitions: []*pb.PartitionOffset{{TopicId: topic[:], Offset: 4}}})
		return err
	}
	c := h.compactor(m)
	rep, err := c.OnSegment(h.ctx, h.keys[len(h.keys)-1])
	if err != nil {
		t.Fatal(err)
	}
	if rep.Conflicts != 1 || rep.Merges != 0 {
		t.Fatalf("%+v", rep)
	}
	lost := objectlog.SegmentID(m.replaces[0].SegmentId)
	if got := h.objects(); !maps.Equal(got, inputs) {
		t.Fatalf("the losing output was not deleted: objects %v", slices.Sorted(maps.Keys(got)))
	}
	resp, err := h.meta.Segment(h.ctx, &pb.SegmentRequest{SegmentId: lost[:]})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Record != nil || resp.Intent != nil {
		t.Fatalf("the losing output is still known: %v", resp)
	}
	// The entries left (from offset 4) are 4 < L0MaxEntries: nothing is due.
	if rep := h.onSegment(h.keys[len(h.keys)-1]); rep.Merges != 0 {
		t.Fatalf("%+v", rep)
	}
}

func TestConflictWithSecondCompactor(t *testing.T) {
	h := newHarness(t)
	topic := h.createTopic("race2", 1, nil)
	produceRun(h, topic, 8)
	before, _ := h.fetch(topic, 0)
	m := &hooked{Metastore: h.meta}
	var second Report
	m.before = func(*pb.ReplaceIndexRequest) error {
		var err error
		second, err = h.c.OnSegment(h.ctx, h.keys[0])
		return err
	}
	c := h.compactor(m)
	rep, err := c.OnSegment(h.ctx, h.keys[len(h.keys)-1])
	if err != nil {
		t.Fatal(err)
	}
	if rep.Conflicts != 1 || rep.Merges != 0 || second.Merges != 1 {
		t.Fatalf("first %+v, second %+v", rep, second)
	}
	after, _ := h.fetch(topic, 0)
	if !bytes.Equal(before, after) {
		t.Fatal("batches changed")
	}
	h.gc()
	if got, want := h.objects(), h.referenced(topic, 1); !maps.Equal(got, want) {
		t.Fatalf("objects %v, referenced %v", got, want)
	}
}

// rewrite replaces an object's bytes in the store.
func (h *harness) rewrite(key string, f func([]byte)) {
	h.t.Helper()
	rc, _, err := h.store.Get(h.ctx, key)
	if err != nil {
		h.t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		h.t.Fatal(err)
	}
	f(data)
	if _, err := h.store.Put(h.ctx, key, bytes.NewReader(data), int64(len(data)), objstore.PutOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func TestCorruptInput(t *testing.T) {
	h := newHarness(t)
	topic := h.createTopic("corrupt", 1, nil)
	produceRun(h, topic, 8)
	entries := h.entries(topic, 0)
	objs := h.objects()
	bad := h.keys[2]
	h.rewrite(bad, func(b []byte) { b[objectlog.BatchHeaderSize+3] ^= 0xff }) // inside the first batch's CRC
	_, err := h.c.OnSegment(h.ctx, h.keys[len(h.keys)-1])
	var ie *InputError
	if !errors.Is(err, objectlog.ErrCorrupt) || !errors.As(err, &ie) || ie.Key != bad || !strings.Contains(err.Error(), bad) {
		t.Fatalf("error %v: want a corrupt input naming %s", err, bad)
	}
	if got := h.entries(topic, 0); len(got) != len(entries) || got[2].Level != 0 {
		t.Fatal("index changed")
	}
	if got := h.objects(); !maps.Equal(got, objs) {
		t.Fatalf("objects changed: %v", got)
	}

	// A missing input is an error too, naming it. (A fresh compactor: this one keeps
	// the small segments it read whole, and would serve the deleted one from memory,
	// rightly so: objects never change, and what it read checked out.)
	if err := h.store.Delete(h.ctx, h.keys[5]); err != nil {
		t.Fatal(err)
	}
	h.rewrite(bad, func(b []byte) { b[objectlog.BatchHeaderSize+3] ^= 0xff })
	_, err = h.compactor(h.meta).OnSegment(h.ctx, h.keys[len(h.keys)-1])
	if !errors.Is(err, objstore.ErrNotExist) || !errors.As(err, &ie) || ie.Key != h.keys[5] {
		t.Fatalf("error %v: want a missing input naming %s", err, h.keys[5])
	}
}
