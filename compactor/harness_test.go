package compactor

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/server"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// The harness: a real single-node metastore (embedded Raft, gRPC on loopback), a
// store (memory unless a test gives another), and ingestion segments committed the
// way an agent commits them: written with SegmentWriter (relative chunks), an
// upload intent, a conditional PUT, CommitSegment.

type harness struct {
	t     testing.TB
	ctx   context.Context
	node  *server.Node
	meta  *metastore.Client
	store objstore.Store
	cfg   Config
	c     *Compactor
	skew  atomic.Int64 // ms added to the compactor's clock

	mu   sync.Mutex
	seqs map[seqKey]int32 // next sequence per producer and partition
	keys []string         // ingestion segment keys, in commit order
}

type seqKey struct {
	pid       int64
	topic     objectlog.TopicID
	partition int32
}

type harnessOption func(*harness)

func withStore(s objstore.Store) harnessOption { return func(h *harness) { h.store = s } }
func withConfig(f func(*Config)) harnessOption { return func(h *harness) { f(&h.cfg) } }

// testConfig is small enough for tests to reach every threshold quickly.
func testConfig() Config {
	return Config{
		CommitWait:   200 * time.Millisecond,
		GCGrace:      time.Millisecond,
		IntentTTL:    time.Minute,
		L0MaxEntries: 8,
		L0MaxAge:     time.Hour,
		L1MaxBytes:   1 << 20,
		L1MaxEntries: 4,
		BlockBytes:   2 << 10,
		SpillBytes:   16 << 10, // outputs over this go through a temporary file
		TempDir:      "",
	}
}

func newHarness(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	h := &harness{t: t, ctx: ctx, cfg: testConfig(), seqs: map[seqKey]int32{}}
	h.cfg.TempDir = t.TempDir()
	for _, o := range opts {
		o(h)
	}
	if h.store == nil {
		h.store = objstore.NewMemory()
	}
	mcfg := server.EmbeddedConfig(t.TempDir(), "127.0.0.1:0")
	mcfg.NoSync = true
	node, err := server.Start(mcfg)
	if err != nil {
		t.Fatalf("start metastore: %v", err)
	}
	t.Cleanup(func() { node.Close() })
	h.node = node
	client, err := metastore.Dial(ctx, []string{node.APIAddr()}, metastore.Options{})
	if err != nil {
		t.Fatalf("dial metastore: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	h.meta = client
	h.cfg.Now = h.now
	h.c = h.compactor(client)
	return h
}

// compactor returns a compactor over meta (the harness's client, or a wrapper).
func (h *harness) compactor(meta Metastore) *Compactor {
	h.t.Helper()
	c, err := New(meta, h.store, h.cfg, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) now() time.Time {
	return time.Now().Add(time.Duration(h.skew.Load()) * time.Millisecond)
}

// advance moves the compactor's clock forward.
func (h *harness) advance(d time.Duration) { h.skew.Add(d.Milliseconds()) }

func (h *harness) createTopic(name string, partitions int32, configs map[string]string) objectlog.TopicID {
	h.t.Helper()
	resp, err := h.meta.CreateTopics(h.ctx, &pb.CreateTopicsRequest{Topics: []*pb.TopicSpec{{Name: name, Partitions: partitions, ReplicationFactor: 1, Configs: configs}}})
	if err != nil {
		h.t.Fatal(err)
	}
	r := resp.Results[0]
	if r.Error != pb.ErrorCode_NONE {
		h.t.Fatalf("create topic %s: %v %s", name, r.Error, r.Message)
	}
	return objectlog.TopicID(r.TopicId)
}

// rec is a record to produce; nil key or value is null.
type rec struct {
	key, value []byte
	ts         int64
	headers    []objectlog.Header
}

func kv(key, value string, ts int64) rec {
	r := rec{ts: ts}
	if key != "" {
		r.key = []byte(key)
	}
	if value != "" {
		r.value = []byte(value)
	}
	return r
}

// batchOpts shape a produced batch.
type batchOpts struct {
	codec objectlog.Codec
	idem  bool // written by the producer pid, epoch
	pid   int64
	epoch int16
	txn   bool
}

// batch is one batch to produce into a partition.
type batch struct {
	partition int32
	recs      []rec
	opts      batchOpts
}

// encode builds the batch; seq is its base sequence (-1 without a producer).
func (b batch) encode(t testing.TB, seq int32) []byte {
	t.Helper()
	var body []byte
	base := b.recs[0].ts
	maxTs := base
	for i, r := range b.recs {
		or := objectlog.Record{TimestampDelta: r.ts - base, OffsetDelta: int32(i), Key: r.key, Value: r.value, Headers: r.headers}
		body = objectlog.AppendRecord(body, &or)
		maxTs = max(maxTs, r.ts)
	}
	h := objectlog.BatchHeader{
		PartitionLeaderEpoch: -1, LastOffsetDelta: int32(len(b.recs) - 1),
		BaseTimestamp: base, MaxTimestamp: maxTs,
		ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, RecordCount: int32(len(b.recs)),
	}
	if b.opts.idem {
		h.ProducerID, h.ProducerEpoch, h.BaseSequence = b.opts.pid, b.opts.epoch, seq
	}
	if b.opts.txn {
		h.Attributes |= objectlog.AttrTransactional
	}
	raw, err := objectlog.AppendBatch(nil, h, b.opts.codec, body)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// produce commits one ingestion segment holding batches (grouped into one chunk per
// partition, in the order given) and returns its key and the commit's answer.
func (h *harness) produce(topic objectlog.TopicID, batches ...batch) (string, *pb.CommitSegmentResponse) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	byPart := map[int32][][]byte{}
	infos := map[int32][]*pb.BatchInfo{}
	var parts []int32
	for _, b := range batches {
		seq := int32(-1)
		if b.opts.idem {
			k := seqKey{b.opts.pid, topic, b.partition}
			seq = h.seqs[k]
			h.seqs[k] += int32(len(b.recs))
		}
		raw := b.encode(h.t, seq)
		pb0, err := objectlog.ParseBatch(raw)
		if err != nil {
			h.t.Fatal(err)
		}
		if _, ok := byPart[b.partition]; !ok {
			parts = append(parts, b.partition)
		}
		byPart[b.partition] = append(byPart[b.partition], raw)
		infos[b.partition] = append(infos[b.partition], &pb.BatchInfo{
			OffsetCount: pb0.LastOffsetDelta + 1, RecordCount: pb0.RecordCount,
			ProducerId: pb0.ProducerID, ProducerEpoch: int32(pb0.ProducerEpoch), BaseSequence: pb0.BaseSequence,
			Transactional: pb0.Attributes.Transactional(), MaxTimestamp: pb0.MaxTimestamp, Size: int32(len(raw)),
		})
	}
	slices.Sort(parts)
	var buf bytes.Buffer
	sw := objectlog.NewSegmentWriter(&buf)
	for _, p := range parts {
		if err := sw.StartChunk(topic, p, 0); err != nil {
			h.t.Fatal(err)
		}
		for _, raw := range byPart[p] {
			if err := sw.WriteBatch(raw); err != nil {
				h.t.Fatal(err)
			}
		}
	}
	ix, err := sw.Close()
	if err != nil {
		h.t.Fatal(err)
	}
	var random [8]byte
	crand.Read(random[:])
	id := objectlog.NewSegmentID(time.Now(), random)
	key := objectlog.SegmentKey(id)
	if _, err := h.meta.RecordIntent(h.ctx, &pb.RecordIntentRequest{SegmentId: id[:], AgentId: "test-agent", TtlMs: time.Minute.Milliseconds()}); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.store.Put(h.ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()), objstore.PutOptions{IfNoneMatch: true}); err != nil {
		h.t.Fatal(err)
	}
	req := &pb.CommitSegmentRequest{SegmentId: id[:], Size: int64(buf.Len()), AgentId: "test-agent"}
	for _, p := range parts {
		c, _ := ix.Find(topic, p)
		req.Chunks = append(req.Chunks, &pb.ChunkCommit{
			TopicId: topic[:], Partition: p, Position: c.Position, Length: c.Length,
			FirstTimestamp: c.FirstTimestamp, MaxTimestamp: c.MaxTimestamp, Flags: uint32(c.Flags), Batches: infos[p],
		})
	}
	resp, err := h.meta.CommitSegment(h.ctx, req)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, r := range resp.Chunks {
		if r.Error != pb.ErrorCode_NONE {
			h.t.Fatalf("commit chunk %d: %v", r.Partition, r.Error)
		}
		for _, br := range r.Batches {
			if br.Error != pb.ErrorCode_NONE {
				h.t.Fatalf("commit batch in %d: %v", r.Partition, br.Error)
			}
		}
	}
	h.keys = append(h.keys, key)
	return key, resp
}

// txn is a transactional producer.
type txn struct {
	id    string
	pid   int64
	epoch int16
}

func (h *harness) txnProducer(id string) *txn {
	h.t.Helper()
	resp, err := h.meta.InitProducer(h.ctx, &pb.InitProducerRequest{ProducerId: -1, ProducerEpoch: -1, TransactionalId: id, TransactionTimeoutMs: 60_000})
	if err != nil {
		h.t.Fatal(err)
	}
	return &txn{id: id, pid: resp.ProducerId, epoch: int16(resp.ProducerEpoch)}
}

// add puts partitions into the producer's transaction.
func (h *harness) add(x *txn, topic objectlog.TopicID, partitions ...int32) {
	h.t.Helper()
	add := &pb.TxnAdd{TransactionalId: x.id, ProducerId: x.pid, ProducerEpoch: int32(x.epoch)}
	for _, p := range partitions {
		add.Partitions = append(add.Partitions, &pb.TxnPartition{TopicId: topic[:], Partition: p})
	}
	resp, err := h.meta.AddToTxn(h.ctx, &pb.AddToTxnRequest{Txns: []*pb.TxnAdd{add}})
	if err != nil {
		h.t.Fatal(err)
	}
	if r := resp.Results[0]; r.Error != pb.ErrorCode_NONE {
		h.t.Fatalf("add to txn: %v", r.Error)
	}
}

func (h *harness) end(x *txn, commit bool) {
	h.t.Helper()
	if _, err := h.meta.EndTxn(h.ctx, &pb.EndTxnRequest{TransactionalId: x.id, ProducerId: x.pid, ProducerEpoch: int32(x.epoch), Commit: commit}); err != nil {
		h.t.Fatal(err)
	}
}

func (x *txn) opts() batchOpts { return batchOpts{idem: true, pid: x.pid, epoch: x.epoch, txn: true} }

// head is a partition's head.
func (h *harness) head(topic objectlog.TopicID, partition int32) *pb.PartitionHead {
	h.t.Helper()
	resp, err := h.meta.Lookup(h.ctx, &pb.LookupRequest{TopicId: topic[:], Partition: partition, Offset: -1})
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.Head
}

// entries lists a partition's index entries from its log start.
func (h *harness) entries(topic objectlog.TopicID, partition int32) []*pb.IndexEntry {
	h.t.Helper()
	head := h.head(topic, partition)
	var out []*pb.IndexEntry
	from := head.LogStartOffset
	for from < head.NextOffset {
		resp, err := h.meta.Lookup(h.ctx, &pb.LookupRequest{TopicId: topic[:], Partition: partition, Offset: from, MaxEntries: 10_000})
		if err != nil {
			h.t.Fatal(err)
		}
		if resp.Error != pb.ErrorCode_NONE {
			h.t.Fatalf("lookup %d: %v", from, resp.Error)
		}
		if len(resp.Entries) == 0 {
			break
		}
		out = append(out, resp.Entries...)
		from = resp.Entries[len(resp.Entries)-1].LastOffset + 1
	}
	return out
}

// logRec is one record as a consumer would see it.
type logRec struct {
	offset     int64
	key, value []byte
	ts         int64
	headers    int
	control    bool
	txn        bool
	pid        int64
}

func (r logRec) String() string {
	return fmt.Sprintf("%d:%q=%q@%d", r.offset, r.key, r.value, r.ts)
}

// fetch reads a partition from its log start to its high watermark the way an
// agent serves it: every entry's bytes (a marker's control batch), checked as the
// agent checks them (and, but for key compaction's outputs with gaps, covering
// the entry's offsets exactly), base offsets made absolute. It returns the concatenated batches and their records,
// skipping records below the log start as consumers do.
func (h *harness) fetch(topic objectlog.TopicID, partition int32) ([]byte, []logRec) {
	h.t.Helper()
	head := h.head(topic, partition)
	var all []byte
	var recs []logRec
	for _, e := range h.entries(topic, partition) {
		data := h.entryBytes(e)
		if err := agentCheck(e, data, h.cfg.SplitAtGaps || e.CleanedMs == 0); err != nil {
			h.t.Fatalf("entry [%d, %d] level %d: %v", e.BaseOffset, e.LastOffset, e.Level, err)
		}
		all = append(all, data...)
		for b, err := range objectlog.Batches(data) {
			if err != nil {
				h.t.Fatal(err)
			}
			rs, err := b.Records(nil, 1<<26)
			if err != nil {
				h.t.Fatal(err)
			}
			for _, r := range rs {
				off := b.BaseOffset + int64(r.OffsetDelta)
				if off < head.LogStartOffset {
					continue
				}
				recs = append(recs, logRec{offset: off, key: r.Key, value: r.Value, ts: b.BaseTimestamp + r.TimestampDelta,
					headers: len(r.Headers), control: b.Attributes.Control(), txn: b.Attributes.Transactional(), pid: b.ProducerID})
			}
		}
	}
	return all, recs
}

// entryBytes reads an entry's batches with absolute offsets.
func (h *harness) entryBytes(e *pb.IndexEntry) []byte {
	h.t.Helper()
	if e.Marker != 0 {
		return objectlog.ControlBatch(e.BaseOffset, e.ProducerId, int16(e.ProducerEpoch), e.Marker == pb.MarkerCommit, e.MaxTimestamp)
	}
	key := objectlog.SegmentKey(objectlog.SegmentID(e.SegmentId))
	rc, err := h.store.GetRange(h.ctx, key, e.Position, e.Length)
	if err != nil {
		h.t.Fatalf("entry [%d, %d]: %v", e.BaseOffset, e.LastOffset, err)
	}
	defer rc.Close()
	data, err := objstore.ReadAllN(rc, e.Length)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := objectlog.ResolveOffsets(&objectlog.Chunk{Flags: objectlog.ChunkFlags(e.Flags)}, data, e.BaseOffset); err != nil {
		h.t.Fatal(err)
	}
	return data
}

// agentCheck is the agent's check of an entry's bytes (agent/reader.go
// checkEntryChunk): batch and record counts as the entry says; relative batches
// cover its offsets exactly, absolute ones lie inside them in order (gaps allowed).
// With exact set, absolute ones must cover them exactly too.
func agentCheck(e *pb.IndexEntry, data []byte, exact bool) error {
	if int64(len(data)) != e.Length && e.Marker == 0 {
		return fmt.Errorf("%d bytes, entry says %d", len(data), e.Length)
	}
	absolute := e.Flags&1 != 0
	var batches, records, offsets int64
	next := e.BaseOffset
	for b, err := range objectlog.Batches(data) {
		if err != nil {
			return err
		}
		batches++
		records += int64(b.RecordCount)
		offsets += int64(b.LastOffsetDelta) + 1
		if absolute && (b.BaseOffset < next || b.BaseOffset+int64(b.LastOffsetDelta) > e.LastOffset) {
			return fmt.Errorf("batch at %d+%d outside or out of order", b.BaseOffset, b.LastOffsetDelta)
		}
		next = b.BaseOffset + int64(b.LastOffsetDelta) + 1
	}
	if batches != int64(e.BatchCount) || records != int64(e.RecordCount) || ((!absolute || exact) && offsets != e.LastOffset-e.BaseOffset+1) {
		return fmt.Errorf("holds %d batches, %d records, %d offsets; entry says %d, %d, %d",
			batches, records, offsets, e.BatchCount, e.RecordCount, e.LastOffset-e.BaseOffset+1)
	}
	return nil
}

// objects lists the segment objects in the store.
func (h *harness) objects() map[string]bool {
	h.t.Helper()
	out := map[string]bool{}
	for info, err := range h.store.List(h.ctx, objectlog.SegmentPrefix) {
		if err != nil {
			h.t.Fatal(err)
		}
		out[info.Key] = true
	}
	return out
}

// referenced lists the objects the index of the given partitions points at.
func (h *harness) referenced(topic objectlog.TopicID, partitions int32) map[string]bool {
	out := map[string]bool{}
	for p := range partitions {
		for _, e := range h.entries(topic, p) {
			if e.Marker == 0 {
				out[objectlog.SegmentKey(objectlog.SegmentID(e.SegmentId))] = true
			}
		}
	}
	return out
}

// onSegment, sweep and gc run the harness's compactor, failing the test on an error.
func (h *harness) onSegment(key string) Report { h.t.Helper(); return h.ok(h.c.OnSegment(h.ctx, key)) }
func (h *harness) sweep() Report               { h.t.Helper(); return h.ok(h.c.Sweep(h.ctx)) }
func (h *harness) gc() Report                  { h.t.Helper(); return h.ok(h.c.CollectGarbage(h.ctx)) }

func (h *harness) ok(r Report, err error) Report {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// lookup is a Lookup that must succeed.
func (h *harness) lookup(req *pb.LookupRequest) *pb.LookupResponse {
	h.t.Helper()
	resp, err := h.meta.Lookup(h.ctx, req)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")
