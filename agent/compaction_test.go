package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// The fetch side over compacted partitions: index entries replaced by entries into an
// object with absolute offsets (merges, and key compaction's gaps), served by agents
// that never saw the old entries (cold) and by agents whose cache held them (warm),
// including after the old objects are collected.
//
// The compaction is made by hand here, the way the compactor makes one, so that the
// agent's side is checked on its own.

// cluster is what several agents share: the metastore (its client, unwrapped) and
// the object store.
type cluster struct {
	meta  *metastore.Client
	store objstore.Store
}

// startCluster starts a first agent, in zone "a", over a fresh metastore and store;
// wrap, when set, wraps the metastore that agent talks to.
func startCluster(t *testing.T, wrap func(Metastore) Metastore, opts ...agentOption) (*Server, *cluster) {
	t.Helper()
	cl := &cluster{}
	opts = append([]agentOption{
		withConfig(func(c *Config) { c.Zone = "a" }),
		withMetastore(func(m Metastore) Metastore {
			cl.meta = m.(*metastore.Client)
			if wrap != nil {
				return wrap(m)
			}
			return m
		}),
	}, opts...)
	s := startAgent(t, opts...)
	cl.store = s.store
	return s, cl
}

// join starts another agent over the cluster's metastore and store, in its own zone.
func (cl *cluster) join(t *testing.T, zone string, wrap func(Metastore) Metastore, cfg func(*Config)) *Server {
	t.Helper()
	c := DefaultConfig()
	c.KafkaAddr, c.Linger, c.Zone = "127.0.0.1:0", 5*time.Millisecond, zone
	if cfg != nil {
		cfg(&c)
	}
	var meta Metastore = cl.meta
	if wrap != nil {
		meta = wrap(meta)
	}
	return runAgent(t, c, meta, cl.store)
}

// zoned is a client of s in s's zone: Metadata names s the leader of every
// partition, so its consumers fetch from s alone.
func zoned(t testing.TB, s *Server, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return kafkaClient(t, s, append([]kgo.Opt{kgo.ClientID("strata-test,strata_zone=" + s.cfg.Zone)}, opts...)...)
}

// consumeFrom consumes topic from its start through s until it has want records and
// returns them as offset:value.
func consumeFrom(t *testing.T, s *Server, topic string, want int) []string {
	t.Helper()
	cl := zoned(t, s, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []string
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %v from agent %s, want %d records", got, s.cfg.Zone, want)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, fmt.Sprintf("%d:%s", r.Offset, r.Value)) })
	}
	return got
}

// produceBatches writes n batches of three records each to partition 0, one commit
// (so one index entry) per batch: offsets 3i to 3i+2 hold v<offset>.
func produceBatches(t *testing.T, s *Server, topic string, n int) {
	t.Helper()
	cl := kafkaClient(t, s)
	codecs := []objectlog.Codec{objectlog.CodecNone, objectlog.CodecLZ4, objectlog.CodecZstd, objectlog.CodecSnappy, objectlog.CodecGzip}
	for i := range n {
		b := batchOf(t, codecs[i%len(codecs)], int64(1000+10*i), fmt.Sprintf("v%d", 3*i), fmt.Sprintf("v%d", 3*i+1), fmt.Sprintf("v%d", 3*i+2))
		if code := produceRaw(t, s, cl, -1, topic, map[int32][]byte{0: b}).Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatal(kerr.ErrorForCode(code))
		}
	}
}

// compaction is a replacement committed by compact.
type compaction struct {
	inputs, outputs []*pb.IndexEntry
	old             []objectlog.SegmentID // the objects the inputs pointed into
}

// compact replaces every index entry of a partition by entries into one new object
// whose chunk carries absolute offsets, and commits it with ReplaceIndex. keep says
// which records survive (nil: all, a plain merge): a batch left with none goes, one
// left with some keeps its base offset and last offset delta. bounds cut the range
// replaced into output entries, bounds[i] being output i's last offset (the last is
// the range's end); an output no surviving batch falls in is left out: a gap.
func compact(t *testing.T, cl *cluster, topic objectlog.TopicID, partition int32, keep func(offset int64) bool, bounds []int64) *compaction {
	t.Helper()
	ctx := testContext(t)
	lk, err := cl.meta.Lookup(ctx, &pb.LookupRequest{TopicId: topic[:], Partition: partition, Offset: 0, MaxEntries: 10_000})
	if err != nil || lk.Error != pb.ErrorCode_NONE || len(lk.Entries) == 0 {
		t.Fatalf("lookup: %v %v (%d entries)", err, lk.GetError(), len(lk.GetEntries()))
	}
	c := &compaction{inputs: lk.Entries}
	if hi := lk.Entries[len(lk.Entries)-1].LastOffset; bounds[len(bounds)-1] != hi {
		t.Fatalf("bounds %v do not end at the range's end %d", bounds, hi)
	}
	var batches [][]byte // absolute, surviving
	for _, e := range lk.Entries {
		var id objectlog.SegmentID
		copy(id[:], e.SegmentId)
		if !slices.Contains(c.old, id) {
			c.old = append(c.old, id)
		}
		body, err := cl.store.GetRange(ctx, objectlog.SegmentKey(id), e.Position, e.Length)
		if err != nil {
			t.Fatal(err)
		}
		data, err := objstore.ReadAllN(body, e.Length)
		body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := objectlog.ResolveOffsets(&objectlog.Chunk{Flags: objectlog.ChunkFlags(e.Flags)}, data, e.BaseOffset); err != nil {
			t.Fatal(err)
		}
		for b, err := range objectlog.Batches(data) {
			if err != nil {
				t.Fatal(err)
			}
			if kept := survivors(t, b, keep); kept != nil {
				batches = append(batches, kept)
			}
		}
	}

	// The object: one chunk of the kept batches; each output entry a run of them.
	var seg objectlog.SegmentID
	var random [8]byte
	rand.Read(random[:])
	seg = objectlog.NewSegmentID(time.Now(), random)
	var buf bytes.Buffer
	w := objectlog.NewSegmentWriter(&buf)
	if err := w.StartChunk(topic, partition, objectlog.FlagAbsoluteOffsets); err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		if err := w.WriteBatch(b); err != nil {
			t.Fatal(err)
		}
	}
	index, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	pos := index.Chunks[0].Position
	from := lk.Entries[0].BaseOffset
	for _, to := range bounds {
		out := &pb.IndexEntry{TopicId: topic[:], Partition: partition, BaseOffset: from, LastOffset: to,
			SegmentId: seg[:], Position: pos, Flags: uint32(objectlog.FlagAbsoluteOffsets), Level: 1}
		for len(batches) > 0 {
			h, err := objectlog.ParseBatchHeader(batches[0])
			if err != nil {
				t.Fatal(err)
			}
			if h.BaseOffset > to {
				break
			}
			if h.BaseOffset+int64(h.LastOffsetDelta) > to {
				t.Fatalf("bound %d cuts batch %d+%d", to, h.BaseOffset, h.LastOffsetDelta)
			}
			out.Length += int64(h.Size())
			out.BatchCount++
			out.RecordCount += h.RecordCount
			out.MaxTimestamp = max(out.MaxTimestamp, h.MaxTimestamp)
			batches = batches[1:]
		}
		if out.BatchCount > 0 {
			c.outputs = append(c.outputs, out)
			pos += out.Length
		}
		from = to + 1
	}
	if _, err := cl.store.Put(ctx, objectlog.SegmentKey(seg), bytes.NewReader(buf.Bytes()), int64(buf.Len()), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	resp, err := cl.meta.ReplaceIndex(ctx, &pb.ReplaceIndexRequest{TopicId: topic[:], Partition: partition,
		Inputs: c.inputs, Outputs: c.outputs, SegmentId: seg[:], Size: int64(buf.Len())})
	if err != nil || resp.Error != pb.ErrorCode_NONE {
		t.Fatalf("replace index: %v %v %s", err, resp.GetError(), resp.GetMessage())
	}
	return c
}

// survivors is batch b (absolute) with only the records keep accepts: b itself when
// all are kept, nil when none is, else a batch rebuilt with the same base offset and
// last offset delta and fewer records.
func survivors(t *testing.T, b objectlog.Batch, keep func(int64) bool) []byte {
	t.Helper()
	if keep == nil {
		return b.Raw
	}
	recs, err := b.Records(nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	n := 0
	for _, r := range recs {
		if keep(b.BaseOffset + int64(r.OffsetDelta)) {
			body = objectlog.AppendRecord(body, &r)
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case len(recs):
		return b.Raw
	}
	h := b.BatchHeader
	h.RecordCount = int32(n)
	out, err := objectlog.AppendBatch(nil, h, h.Attributes.Codec(), body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// deleteObjects removes objects from the store, as GC does after its grace period.
func deleteObjects(t *testing.T, store objstore.Store, ids []objectlog.SegmentID) {
	t.Helper()
	for _, id := range ids {
		if err := store.Delete(testContext(t), objectlog.SegmentKey(id)); err != nil {
			t.Fatal(err)
		}
	}
}

// cachedRanges is what s caches of a partition's index: base-last@segment per entry.
func cachedRanges(s *Server, k partKey) string {
	s.rd.mu.Lock()
	defer s.rd.mu.Unlock()
	p := s.rd.parts[k]
	if p == nil {
		return ""
	}
	return rangesOf(p.entries)
}

func rangesOf(entries []*pb.IndexEntry) string {
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "[%d-%d@%x]", e.BaseOffset, e.LastOffset, e.SegmentId[len(e.SegmentId)-4:])
	}
	return b.String()
}

// waitCached waits until s caches exactly entries for k (the watch brought them).
func waitCached(t *testing.T, s *Server, k partKey, entries []*pb.IndexEntry) {
	t.Helper()
	want := rangesOf(entries)
	deadline := time.Now().Add(10 * time.Second)
	for cachedRanges(s, k) != want {
		if time.Now().After(deadline) {
			t.Fatalf("agent %s caches %s, want %s", s.cfg.Zone, cachedRanges(s, k), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fetchFrom fetches one partition at offset from s itself, and returns its answer
// with the offset:value of every record in it.
func fetchFrom(t *testing.T, s *Server, topic string, offset int64) (kmsg.FetchResponseTopicPartition, []string) {
	t.Helper()
	f := fetchRaw(t, s, zoned(t, s), topic, 0, offset, nil)
	p := f.Topics[0].Partitions[0]
	var got []string
	for b, err := range objectlog.Batches(p.RecordBatches) {
		if err != nil {
			t.Fatalf("fetched batch: %v", err)
		}
		recs, err := b.Records(nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			got = append(got, fmt.Sprintf("%d:%s", b.BaseOffset+int64(r.OffsetDelta), r.Value))
		}
	}
	return p, got
}

func allRecords(n int) []string {
	var out []string
	for o := range n {
		out = append(out, fmt.Sprintf("%d:v%d", o, o))
	}
	return out
}

// A plain merge: two output entries into one object replace seven ingestion
// entries. A warm agent switches to them by the watch and keeps serving once the old
// objects are gone; a cold agent serves them from its first Lookup. Both give the
// records the partition always held, at the same offsets.
func TestCompactionMergeServed(t *testing.T) {
	a, cl := startCluster(t, nil)
	createTopic(t, a, "merge", 1, nil)
	produceBatches(t, a, "merge", 7)
	want := allRecords(21)
	if got := consumeFrom(t, a, "merge", 21); !slices.Equal(got, want) {
		t.Fatalf("before compaction: %v", got)
	}
	k := partKey{topicIDOf(a, "merge"), 0}
	c := compact(t, cl, k.topic, 0, nil, []int64{8, 20})

	waitCached(t, a, k, c.outputs)
	deleteObjects(t, cl.store, c.old)
	if got := consumeFrom(t, a, "merge", 21); !slices.Equal(got, want) {
		t.Fatalf("warm agent after compaction: %v, want %v", got, want)
	}
	b := cl.join(t, "b", nil, nil)
	if got := consumeFrom(t, b, "merge", 21); !slices.Equal(got, want) {
		t.Fatalf("cold agent after compaction: %v, want %v", got, want)
	}
	if p, got := fetchFrom(t, b, "merge", 10); p.ErrorCode != 0 || !slices.Equal(got, want[9:]) {
		t.Fatalf("fetch at 10: %v %v", kerr.ErrorForCode(p.ErrorCode), got)
	}
}

// gapsKeep and gapsBounds make a key compaction of seven batches of three: batch
// 3-5 goes (entry 0-4 ends in a gap), record 7 goes from batch 6-8 (which keeps its
// offsets, so entry 5-11 starts in a gap), batch 12-14 goes (12-14 has no entry at
// all), and batch 18-20 goes (entry 15-20, the last, ends in a gap up to the high
// watermark 21).
var (
	gapsKeep = func(o int64) bool {
		return !(o >= 3 && o <= 5 || o == 7 || o >= 12 && o <= 14 || o >= 18)
	}
	gapsBounds = []int64{4, 11, 14, 20}
	gapsWant   = []string{"0:v0", "1:v1", "2:v2", "6:v6", "8:v8", "9:v9", "10:v10", "11:v11", "15:v15", "16:v16", "17:v17"}
)

// checkGapFetches fetches at offsets in the gaps of the gapsKeep compaction: each
// answer comes (no endless loop over a gap) with the batches after the gap.
func checkGapFetches(t *testing.T, s *Server, topic string) {
	t.Helper()
	for _, tc := range []struct {
		offset int64
		want   []string
	}{
		{3, gapsWant[3:]},  // in entry 0-4's trailing gap
		{5, gapsWant[3:]},  // in entry 5-11's leading gap
		{7, gapsWant[3:]},  // a dropped record inside a kept batch: the batch comes whole
		{12, gapsWant[8:]}, // in a range without an entry
		{18, nil},          // in the last entry's trailing gap, up to the high watermark
		{21, nil},
	} {
		p, got := fetchFrom(t, s, topic, tc.offset)
		if p.ErrorCode != 0 || p.HighWatermark != 21 || !slices.Equal(got, tc.want) {
			t.Errorf("agent %s: fetch at %d: %v, high watermark %d, records %v; want %v",
				s.cfg.Zone, tc.offset, kerr.ErrorForCode(p.ErrorCode), p.HighWatermark, got, tc.want)
		}
	}
}

// Key compaction: the surviving records keep their offsets; a consumer from the
// start sees only them, from a warm agent and from a cold one, and fetches at
// offsets in the gaps return the next batches.
func TestCompactionKeyCompactedGaps(t *testing.T) {
	a, cl := startCluster(t, nil)
	createTopic(t, a, "keyed", 1, nil)
	produceBatches(t, a, "keyed", 7)
	if got := consumeFrom(t, a, "keyed", 21); !slices.Equal(got, allRecords(21)) {
		t.Fatalf("before compaction: %v", got)
	}
	k := partKey{topicIDOf(a, "keyed"), 0}
	c := compact(t, cl, k.topic, 0, gapsKeep, gapsBounds)
	if n := len(c.outputs); n != 3 {
		t.Fatalf("%d output entries, want 3", n)
	}

	waitCached(t, a, k, c.outputs)
	deleteObjects(t, cl.store, c.old)
	if got := consumeFrom(t, a, "keyed", len(gapsWant)); !slices.Equal(got, gapsWant) {
		t.Fatalf("warm agent: %v, want %v", got, gapsWant)
	}
	checkGapFetches(t, a, "keyed")

	b := cl.join(t, "b", nil, nil)
	checkGapFetches(t, b, "keyed")
	if got := consumeFrom(t, b, "keyed", len(gapsWant)); !slices.Equal(got, gapsWant) {
		t.Fatalf("cold agent: %v, want %v", got, gapsWant)
	}
	// An entry whose chunk holds batches outside its range is corrupt, gaps or not.
	// The check of an absolute chunk still refuses batches outside the entry.
	good := c.outputs[1] // [5-11]: batches 6-8 and 9-11
	data := chunkBytes(t, cl.store, good)
	if err := checkEntryChunk(good, data); err != nil {
		t.Fatalf("entry %d-%d: %v", good.BaseOffset, good.LastOffset, err)
	}
	for _, bad := range []struct{ base, last int64 }{{7, 11}, {5, 10}} {
		e := proto.Clone(good).(*pb.IndexEntry)
		e.BaseOffset, e.LastOffset = bad.base, bad.last
		if err := checkEntryChunk(e, data); err == nil {
			t.Errorf("entry %d-%d over batches 6-8 and 9-11 passed the check", bad.base, bad.last)
		}
	}
}

// chunkBytes reads an entry's bytes from the store.
func chunkBytes(t *testing.T, store objstore.Store, e *pb.IndexEntry) []byte {
	t.Helper()
	var id objectlog.SegmentID
	copy(id[:], e.SegmentId)
	body, err := store.GetRange(testContext(t), objectlog.SegmentKey(id), e.Position, e.Length)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	data, err := objstore.ReadAllN(body, e.Length)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// heldWatch is a metastore whose watch, while held, holds back the first event that
// carries partition changes, and so every event after it: an agent that has not yet
// heard of a compaction or a log start move.
type heldWatch struct {
	Metastore
	mu   sync.Mutex
	gate chan struct{} // closed while events flow
}

func newHeldWatch(m Metastore) *heldWatch {
	h := &heldWatch{Metastore: m, gate: make(chan struct{})}
	close(h.gate)
	return h
}

func (h *heldWatch) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate = make(chan struct{})
}

func (h *heldWatch) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.gate)
}

func (h *heldWatch) Watch(ctx context.Context, req *pb.WatchRequest) <-chan *pb.WatchEvent {
	in := h.Metastore.Watch(ctx, req)
	out := make(chan *pb.WatchEvent)
	go func() {
		defer close(out)
		for ev := range in {
			if len(ev.Changes) > 0 {
				h.mu.Lock()
				gate := h.gate
				h.mu.Unlock()
				select {
				case <-gate:
				case <-ctx.Done():
					return
				}
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// An agent whose cache still names the replaced entries (its watch is late) and
// whose objects GC has collected finds them gone, reads the index again and serves
// the compacted data: no error reaches the consumer.
func TestCompactionStaleCacheObjectGone(t *testing.T) {
	var held *heldWatch
	a, cl := startCluster(t, func(m Metastore) Metastore {
		held = newHeldWatch(m)
		return held
	}, withConfig(func(c *Config) { c.CacheBytes = 0 })) // every read goes to the store
	createTopic(t, a, "stale", 1, nil)
	produceBatches(t, a, "stale", 7)
	if got := consumeFrom(t, a, "stale", 21); !slices.Equal(got, allRecords(21)) {
		t.Fatalf("before compaction: %v", got)
	}
	k := partKey{topicIDOf(a, "stale"), 0}
	held.hold()
	c := compact(t, cl, k.topic, 0, gapsKeep, gapsBounds)
	deleteObjects(t, cl.store, c.old)
	if got := cachedRanges(a, k); got != rangesOf(c.inputs) {
		t.Fatalf("agent caches %s before hearing of the compaction, want the inputs %s", got, rangesOf(c.inputs))
	}

	p, got := fetchFrom(t, a, "stale", 0)
	if p.ErrorCode != 0 || !slices.Equal(got, gapsWant) {
		t.Fatalf("fetch over collected objects: %v %v, want %v", kerr.ErrorForCode(p.ErrorCode), got, gapsWant)
	}
	if got := cachedRanges(a, k); got != rangesOf(c.outputs) {
		t.Fatalf("after the miss the agent caches %s, want the outputs %s", got, rangesOf(c.outputs))
	}
	if got := consumeFrom(t, a, "stale", len(gapsWant)); !slices.Equal(got, gapsWant) {
		t.Fatalf("consumer: %v, want %v", got, gapsWant)
	}
	held.release()
	waitCached(t, a, k, c.outputs)
	// ListOffsets by timestamp searches the compacted chunks: 1011 was in batch
	// 3-5, which is gone; the first record at or after it is 6, at 1020.
	lo := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = "stale"
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Timestamp = 1011
	rt.Partitions = append(rt.Partitions, rp)
	lo.Topics = append(lo.Topics, rt)
	resp, err := lo.RequestWith(testContext(t), zoned(t, a))
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.Offset != 6 || p.Timestamp != 1020 {
		t.Fatalf("list offsets at 1011: offset %d timestamp %d %v; want 6 at 1020", p.Offset, p.Timestamp, kerr.ErrorForCode(p.ErrorCode))
	}
}

// A Lookup answer read before a replacement and arriving after the watch brought it
// must not put the replaced entries back in the cache, nor one read before a log
// start move the entries below it; an answer sent after both is cached.
func TestReaderLateLookupAfterReplacement(t *testing.T) {
	r := &reader{parts: map[partKey]*partState{}, notify: make(chan struct{})}
	k := partKey{partition: 3}
	k.topic[0] = 7
	entry := func(base, last int64, seg byte) *pb.IndexEntry {
		return &pb.IndexEntry{TopicId: k.topic[:], Partition: k.partition, BaseOffset: base, LastOffset: last, SegmentId: []byte{seg, 0, 0, 0}}
	}
	old := []*pb.IndexEntry{entry(0, 4, 1), entry(5, 9, 2), entry(10, 14, 3)}
	merged := entry(0, 9, 9)
	head := &pb.PartitionHead{NextOffset: 15}
	cached := func() string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return rangesOf(r.parts[k].entries)
	}

	before := r.beginLookup(k)
	r.learn(k, &pb.LookupResponse{Head: head, Entries: old}, before)
	if got, want := cached(), rangesOf(old); got != want {
		t.Fatalf("cached %s, want %s", got, want)
	}

	late := r.beginLookup(k)
	wake := r.changed()
	r.apply(&pb.WatchEvent{
		Changes: []*pb.PartitionChange{{TopicId: k.topic[:], Partition: k.partition, Replaced: true, ReplacedFrom: 0, ReplacedTo: 9}},
		Entries: []*pb.IndexEntry{merged},
	})
	select {
	case <-wake:
	default:
		t.Fatal("a replacement did not wake long polls")
	}
	want := rangesOf([]*pb.IndexEntry{merged, old[2]})
	if got := cached(); got != want {
		t.Fatalf("after the replacement: cached %s, want %s", got, want)
	}
	r.learn(k, &pb.LookupResponse{Head: head, Entries: old}, late)
	if got := cached(); got != want {
		t.Fatalf("a late Lookup answer put replaced entries back: cached %s, want %s", got, want)
	}

	// The log start moves past the merged entry; a late answer cannot bring it back.
	late = r.beginLookup(k)
	r.apply(&pb.WatchEvent{Changes: []*pb.PartitionChange{{TopicId: k.topic[:], Partition: k.partition, LogStartOffset: 12}}})
	want = rangesOf(old[2:])
	if got := cached(); got != want || r.parts[k].logStart != 12 {
		t.Fatalf("after the log start move: cached %s log start %d, want %s and 12", got, r.parts[k].logStart, want)
	}
	r.learn(k, &pb.LookupResponse{Head: head, Entries: []*pb.IndexEntry{merged, old[2]}}, late)
	if got := cached(); got != want || r.parts[k].logStart != 12 {
		t.Fatalf("a late answer undid the log start move: cached %s log start %d", got, r.parts[k].logStart)
	}

	// An answer sent after every change is cached.
	fresh := r.beginLookup(k)
	next := entry(15, 19, 4)
	r.learn(k, &pb.LookupResponse{Head: &pb.PartitionHead{NextOffset: 20, LogStartOffset: 12}, Entries: []*pb.IndexEntry{old[2], next}}, fresh)
	if got, want := cached(), rangesOf([]*pb.IndexEntry{old[2], next}); got != want {
		t.Fatalf("a fresh answer: cached %s, want %s", got, want)
	}

	// A watch resync may stand for replacements missed: the entries go with it.
	r.resync()
	if got := cached(); got != "" || r.cached != 0 {
		t.Fatalf("after a resync: cached %s (%d counted)", got, r.cached)
	}
}
