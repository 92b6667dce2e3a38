package agent

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// DeleteRecords and the log start offset: what a client sees on the agent it asked,
// and on another agent that learns the move from the metastore's watch.

// deleteRecords asks s, through kadm, to move topic's log starts; it returns each
// partition's answer.
func deleteRecords(t *testing.T, s *Server, topic string, offsets map[int32]int64) map[int32]kadm.DeleteRecordsResponse {
	t.Helper()
	os := kadm.Offsets{}
	for p, o := range offsets {
		os.Add(kadm.Offset{Topic: topic, Partition: p, At: o})
	}
	resp, err := kadm.NewClient(zoned(t, s)).DeleteRecords(testContext(t), os)
	if err != nil {
		t.Fatalf("delete records: %v", err)
	}
	return resp[topic]
}

// wantDeleted checks one partition's DeleteRecords answer.
func wantDeleted(t *testing.T, what string, got kadm.DeleteRecordsResponse, low int64, err *kerr.Error) {
	t.Helper()
	if err == nil && (got.Err != nil || got.LowWatermark != low) || err != nil && !errors.Is(got.Err, err) {
		t.Fatalf("%s: low watermark %d, %v; want %d, %v", what, got.LowWatermark, got.Err, low, err)
	}
}

// startOffset is ListOffsets' earliest for a partition, asked of s.
func startOffset(t *testing.T, s *Server, topic string, partition int32) int64 {
	t.Helper()
	got, err := kadm.NewClient(zoned(t, s)).ListStartOffsets(testContext(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := got.Lookup(topic, partition)
	if !ok || o.Err != nil {
		t.Fatalf("earliest offset of %s/%d: %v", topic, partition, o.Err)
	}
	return o.Offset
}

// A DeleteRecords through kadm moves the log start: the answer is the new low
// watermark, fetches below it are OFFSET_OUT_OF_RANGE and ListOffsets' earliest is
// it, on the agent asked and, through the watch, on another whose cache held the
// entries below it; consumers from the start begin there. -1 means the high
// watermark; an offset past it or an unknown partition is refused; an offset below
// the log start moves nothing.
func TestDeleteRecords(t *testing.T) {
	a, cl := startCluster(t, nil)
	b := cl.join(t, "b", nil, nil)
	createTopic(t, a, "trim", 2, nil)
	produceBatches(t, a, "trim", 4) // offsets 0-11 in partition 0, batches of three
	// b reads everything: its cache holds the head and the entries from offset 0.
	if _, got := fetchFrom(t, b, "trim", 0); len(got) != 12 {
		t.Fatalf("agent b fetched %v", got)
	}

	wantDeleted(t, "delete to 5", deleteRecords(t, a, "trim", map[int32]int64{0: 5})[0], 5, nil)
	if p, _ := fetchFrom(t, a, "trim", 4); p.ErrorCode != kerr.OffsetOutOfRange.Code || p.LogStartOffset != 5 {
		t.Fatalf("fetch at 4: %v, log start %d; want OFFSET_OUT_OF_RANGE, 5", kerr.ErrorForCode(p.ErrorCode), p.LogStartOffset)
	}
	if p, got := fetchFrom(t, a, "trim", 5); p.ErrorCode != 0 || p.LogStartOffset != 5 || !slices.Contains(got, "5:v5") || slices.Contains(got, "2:v2") {
		t.Fatalf("fetch at 5: %v, log start %d, records %v", kerr.ErrorForCode(p.ErrorCode), p.LogStartOffset, got)
	}
	if got := startOffset(t, a, "trim", 0); got != 5 {
		t.Fatalf("earliest offset %d, want 5", got)
	}
	// By timestamp: batch 3-5 carries 1010-1012, but 3 and 4 are gone.
	if got, err := kadm.NewClient(zoned(t, a)).ListOffsetsAfterMilli(testContext(t), 1010, "trim"); err != nil {
		t.Fatal(err)
	} else if o, _ := got.Lookup("trim", 0); o.Err != nil || o.Offset != 5 || o.Timestamp != 1012 {
		t.Fatalf("offset after 1010: %d at %d, %v; want 5 at 1012", o.Offset, o.Timestamp, o.Err)
	}
	// The other agent hears of the move from the watch: its cached entries below 5
	// are served no more.
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, _ := fetchFrom(t, b, "trim", 0)
		if p.ErrorCode == kerr.OffsetOutOfRange.Code && p.LogStartOffset == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent b still answers a fetch at 0 with %v, log start %d", kerr.ErrorForCode(p.ErrorCode), p.LogStartOffset)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := consumeFrom(t, b, "trim", 7); got[0] != "5:v5" || len(got) != 7 {
		t.Fatalf("consumer from the start on agent b: %v", got)
	}
	if got := startOffset(t, b, "trim", 0); got != 5 {
		t.Fatalf("earliest offset on agent b %d, want 5", got)
	}

	wantDeleted(t, "delete below the log start", deleteRecords(t, a, "trim", map[int32]int64{0: 2})[0], 5, nil)
	got := deleteRecords(t, a, "trim", map[int32]int64{0: 13, 1: 1})
	wantDeleted(t, "delete past the high watermark", got[0], -1, kerr.OffsetOutOfRange)
	wantDeleted(t, "delete past an empty partition's high watermark", got[1], -1, kerr.OffsetOutOfRange)
	wantDeleted(t, "delete to -1", deleteRecords(t, a, "trim", map[int32]int64{0: -1})[0], 12, nil)
	if p, _ := fetchFrom(t, a, "trim", 11); p.ErrorCode != kerr.OffsetOutOfRange.Code {
		t.Fatalf("fetch at 11 after deleting all: %v", kerr.ErrorForCode(p.ErrorCode))
	}
	if p, got := fetchFrom(t, a, "trim", 12); p.ErrorCode != 0 || len(got) != 0 || p.LogStartOffset != 12 || p.HighWatermark != 12 {
		t.Fatalf("fetch at 12 after deleting all: %v %v, log start %d, high watermark %d", kerr.ErrorForCode(p.ErrorCode), got, p.LogStartOffset, p.HighWatermark)
	}
	// The log goes on after the deletion.
	produceBatches(t, a, "trim", 1)
	if p, got := fetchFrom(t, a, "trim", 12); p.ErrorCode != 0 || len(got) != 3 {
		t.Fatalf("fetch at 12 after a new batch: %v %v", kerr.ErrorForCode(p.ErrorCode), got)
	}
}

// deleteRecordsRaw sends one DeleteRecords of version v to s itself.
func deleteRecordsRaw(t *testing.T, s *Server, v int16, timeoutMs int32, topics map[string]map[int32]int64) *kmsg.DeleteRecordsResponse {
	t.Helper()
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.TimeoutMillis = timeoutMs
	for _, topic := range slices.Sorted(maps.Keys(topics)) {
		rt := kmsg.NewDeleteRecordsRequestTopic()
		rt.Topic = topic
		for p, o := range topics[topic] {
			rp := kmsg.NewDeleteRecordsRequestTopicPartition()
			rp.Partition, rp.Offset = p, o
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp := send[*kmsg.DeleteRecordsResponse](t, s, pinned(t, s, 21, v), req)
	if resp.Version != v {
		t.Fatalf("answered version %d, want %d", resp.Version, v)
	}
	return resp
}

// partitionOf finds one partition's answer in a DeleteRecords response.
func partitionOf(t *testing.T, resp *kmsg.DeleteRecordsResponse, topic string, partition int32) kmsg.DeleteRecordsResponseTopicPartition {
	t.Helper()
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if rt.Topic == topic && p.Partition == partition {
				return p
			}
		}
	}
	t.Fatalf("no answer for %s/%d in %+v", topic, partition, resp.Topics)
	return kmsg.DeleteRecordsResponseTopicPartition{}
}

// DeleteRecords in its oldest version (v0) and its flexible one (v2), raw.
func TestDeleteRecordsRaw(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "raw", 1, nil)
	produceBatches(t, s, "raw", 3) // offsets 0-8
	for _, tc := range []struct {
		v      int16
		offset int64
	}{{0, 2}, {1, 3}, {2, 4}} {
		resp := deleteRecordsRaw(t, s, tc.v, 10_000, map[string]map[int32]int64{
			"raw":  {0: tc.offset, 5: 1},
			"nope": {0: 1},
		})
		if p := partitionOf(t, resp, "raw", 0); p.ErrorCode != 0 || p.LowWatermark != tc.offset {
			t.Errorf("v%d: low watermark %d, %v; want %d", tc.v, p.LowWatermark, kerr.ErrorForCode(p.ErrorCode), tc.offset)
		}
		wantCode(t, "unknown partition", partitionOf(t, resp, "raw", 5).ErrorCode, kerr.UnknownTopicOrPartition)
		wantCode(t, "unknown topic", partitionOf(t, resp, "nope", 0).ErrorCode, kerr.UnknownTopicOrPartition)
		if got := startOffset(t, s, "raw", 0); got != tc.offset {
			t.Errorf("v%d: earliest offset %d, want %d", tc.v, got, tc.offset)
		}
	}
	for _, offset := range []int64{-2, 10} {
		resp := deleteRecordsRaw(t, s, 2, 10_000, map[string]map[int32]int64{"raw": {0: offset}})
		if p := partitionOf(t, resp, "raw", 0); p.ErrorCode != kerr.OffsetOutOfRange.Code || p.LowWatermark != -1 {
			t.Errorf("offset %d: low watermark %d, %v; want OFFSET_OUT_OF_RANGE", offset, p.LowWatermark, kerr.ErrorForCode(p.ErrorCode))
		}
	}
	resp := deleteRecordsRaw(t, s, 0, 10_000, map[string]map[int32]int64{"raw": {0: -1}})
	if p := partitionOf(t, resp, "raw", 0); p.ErrorCode != 0 || p.LowWatermark != 9 {
		t.Errorf("offset -1: low watermark %d, %v; want 9", p.LowWatermark, kerr.ErrorForCode(p.ErrorCode))
	}
}

// Agents whose watch is late: the one asked moves its own cached log start at once,
// so its cached entries below it are served no more; another, with no entry cached
// at the offset asked, learns the move from the metastore's refusal of its Lookup
// and answers with the new log start.
func TestDeleteRecordsLateWatch(t *testing.T) {
	heldOn := func(h **heldWatch) func(Metastore) Metastore {
		return func(m Metastore) Metastore {
			*h = newHeldWatch(m)
			return *h
		}
	}
	var heldA, heldB *heldWatch
	a, cl := startCluster(t, heldOn(&heldA))
	b := cl.join(t, "b", heldOn(&heldB), nil)
	createTopic(t, a, "late", 1, nil)
	produceBatches(t, a, "late", 4) // offsets 0-11
	if _, got := fetchFrom(t, a, "late", 0); len(got) != 12 {
		t.Fatalf("agent a fetched %v", got)
	}
	if p, got := fetchFrom(t, b, "late", 12); p.ErrorCode != 0 || len(got) != 0 || p.LogStartOffset != 0 {
		t.Fatalf("fetch at the high watermark: %v %v, log start %d", kerr.ErrorForCode(p.ErrorCode), got, p.LogStartOffset)
	}
	heldA.hold()
	heldB.hold()
	defer heldA.release()
	defer heldB.release()
	wantDeleted(t, "delete to 5", deleteRecords(t, a, "late", map[int32]int64{0: 5})[0], 5, nil)
	for _, s := range []*Server{a, b} {
		for _, offset := range []int64{2, 0} {
			if p, _ := fetchFrom(t, s, "late", offset); p.ErrorCode != kerr.OffsetOutOfRange.Code || p.LogStartOffset != 5 {
				t.Fatalf("agent %s: fetch at %d: %v, log start %d; want OFFSET_OUT_OF_RANGE, 5",
					s.cfg.Zone, offset, kerr.ErrorForCode(p.ErrorCode), p.LogStartOffset)
			}
		}
	}
}

// stepMetastore moves a log start at most step offsets per DeleteRecords call (as a
// metastore bounding its work does), or, with stuck set, never past 2; calls counts
// the calls.
type stepMetastore struct {
	Metastore
	step  int64
	stuck bool
	down  bool // DeleteRecords waits for its context to end

	mu    sync.Mutex
	last  int64
	calls int
}

func (m *stepMetastore) DeleteRecords(ctx context.Context, req *pb.DeleteRecordsRequest) (*pb.DeleteRecordsResponse, error) {
	m.mu.Lock()
	m.calls++
	down := m.down
	for _, p := range req.Partitions {
		if m.stuck {
			p.Offset = min(p.Offset, 2)
		} else {
			p.Offset = min(p.Offset, m.last+m.step)
		}
	}
	m.mu.Unlock()
	if down {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	resp, err := m.Metastore.DeleteRecords(ctx, req)
	if err == nil && len(resp.Results) > 0 {
		m.mu.Lock()
		m.last = max(m.last, resp.Results[0].LogStartOffset)
		m.mu.Unlock()
	}
	return resp, err
}

// A metastore that moves the log start part of the way is asked again until it
// gets there; one that stops making progress, or cannot be reached within
// TimeoutMillis, is a retriable error.
func TestDeleteRecordsRetries(t *testing.T) {
	m := &stepMetastore{step: 3}
	s := startAgent(t, withMetastore(func(inner Metastore) Metastore {
		m.Metastore = inner
		return m
	}))
	createTopic(t, s, "steps", 1, nil)
	produceBatches(t, s, "steps", 4) // offsets 0-11

	resp := deleteRecordsRaw(t, s, 2, 10_000, map[string]map[int32]int64{"steps": {0: 11}})
	if p := partitionOf(t, resp, "steps", 0); p.ErrorCode != 0 || p.LowWatermark != 11 {
		t.Fatalf("stepped delete: low watermark %d, %v; want 11", p.LowWatermark, kerr.ErrorForCode(p.ErrorCode))
	}
	if m.calls != 4 { // 0 to 3, 6, 9, 11
		t.Fatalf("%d metastore calls, want 4", m.calls)
	}

	m.mu.Lock()
	m.stuck, m.calls = true, 0
	m.mu.Unlock()
	produceBatches(t, s, "steps", 1)
	resp = deleteRecordsRaw(t, s, 2, 10_000, map[string]map[int32]int64{"steps": {0: 14}})
	wantCode(t, "a metastore making no progress", partitionOf(t, resp, "steps", 0).ErrorCode, kerr.RequestTimedOut)
	if m.calls != 2 {
		t.Fatalf("%d metastore calls without progress, want 2", m.calls)
	}

	m.mu.Lock()
	m.down = true
	m.mu.Unlock()
	start := time.Now()
	resp = deleteRecordsRaw(t, s, 2, 200, map[string]map[int32]int64{"steps": {0: 14}})
	wantCode(t, "an unreachable metastore", partitionOf(t, resp, "steps", 0).ErrorCode, kerr.RequestTimedOut)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("answered after %v with a timeout of 200ms", d)
	}
}

// A log start inside a committed transactional batch (DeleteRecords mid-batch, as
// Kafka Streams purges repartition topics): read_committed consumers read on from
// it, and the last stable offset never reports below it, even past an open
// transaction's first offset.
func TestDeleteRecordsInsideTransactions(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "purged", 1, nil)
	ctx := testContext(t)
	p := txnProducer(t, s, "purger", kgo.ProducerLinger(50*time.Millisecond))
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, v := range []string{"a", "b", "c"} { // one batch: offsets 0-2
		wg.Add(1)
		p.Produce(ctx, &kgo.Record{Topic: "purged", Value: []byte(v)}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				t.Errorf("produce %s: %v", v, err)
			}
		})
	}
	wg.Wait()
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil { // marker at 3
		t.Fatal(err)
	}
	wantDeleted(t, "delete to 1", deleteRecords(t, s, "purged", map[int32]int64{0: 1})[0], 1, nil)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if got := consumeAll(t, cctx, s, "purged", true, 2)[0]; !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("read_committed from a log start inside a transactional batch: %v, want [b c]", got)
	}

	// An open transaction from offset 4; the log start moves past its first offset.
	inOpen := txnProducer(t, s, "open")
	if err := inOpen.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := inOpen.ProduceSync(ctx, &kgo.Record{Topic: "purged", Value: []byte("open")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	wantDeleted(t, "delete past the open transaction", deleteRecords(t, s, "purged", map[int32]int64{0: -1})[0], 5, nil)
	adm := kadm.NewClient(kafkaClient(t, s, kgo.FetchIsolationLevel(kgo.ReadCommitted())))
	ends, err := adm.ListCommittedOffsets(ctx, "purged")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("purged", 0); o.Err != nil || o.Offset < 5 {
		t.Fatalf("read_committed end offset %d (%v), below the log start 5", o.Offset, o.Err)
	}
}

// Kafka refuses DeleteRecords on a topic that only compacts.
func TestDeleteRecordsCompactedTopic(t *testing.T) {
	s := startAgent(t)
	compact := "compact"
	createTopic(t, s, "keyed", 1, map[string]*string{"cleanup.policy": &compact})
	produceBatches(t, s, "keyed", 1)
	wantDeleted(t, "compacted topic", deleteRecords(t, s, "keyed", map[int32]int64{0: 1})[0], -1, kerr.PolicyViolation)
	both := "compact,delete"
	createTopic(t, s, "both", 1, map[string]*string{"cleanup.policy": &both})
	produceBatches(t, s, "both", 1)
	wantDeleted(t, "compact,delete topic", deleteRecords(t, s, "both", map[int32]int64{0: 1})[0], 1, nil)
}
