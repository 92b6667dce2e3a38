package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// --- harness -----------------------------------------------------------------------

const txnTimeout = 60_000

func initTxnCmd(txnID string, pid int64, epoch int32, timeout int32) *pb.Command {
	return &pb.Command{Op: &pb.Command_InitProducer{InitProducer: &pb.InitProducerCommand{
		TransactionalId: txnID, ProducerId: pid, ProducerEpoch: epoch,
		TransactionTimeoutMs: timeout, MaxTransactionTimeoutMs: 900_000}}}
}

// tx is a transactional producer as its client sees it: id, producer id, epoch and
// the next sequence per partition.
type tx struct {
	a     *applier
	id    string
	pid   int64
	epoch int32
	seq   map[tpID]int32
}

func newTx(a *applier, txnID string, timeout int32) *tx {
	a.t.Helper()
	r := a.apply(initTxnCmd(txnID, -1, -1, timeout))
	if r.Err != nil {
		a.t.Fatalf("init %q: %v", txnID, r.Err)
	}
	return &tx{a: a, id: txnID, pid: r.Producer.ProducerId, epoch: r.Producer.Epoch, seq: map[tpID]int32{}}
}

// reinit is InitProducerId again without the producer's pair (a new instance).
func (x *tx) reinit() {
	x.a.t.Helper()
	r := x.a.apply(initTxnCmd(x.id, -1, -1, txnTimeout))
	if r.Err != nil {
		x.a.t.Fatalf("reinit %q: %v", x.id, r.Err)
	}
	x.pid, x.epoch, x.seq = r.Producer.ProducerId, r.Producer.Epoch, map[tpID]int32{}
}

func (x *tx) addCmd(epoch int32, parts []*pb.TxnPartition, groups []string) *pb.Command {
	return &pb.Command{Op: &pb.Command_AddToTxn{AddToTxn: &pb.AddToTxnCommand{Txns: []*pb.TxnAdd{
		{TransactionalId: x.id, ProducerId: x.pid, ProducerEpoch: epoch, Partitions: parts, Groups: groups},
	}}}}
}

func (x *tx) addAt(epoch int32, parts []*pb.TxnPartition, groups ...string) *pb.TxnAddResult {
	x.a.t.Helper()
	r := x.a.apply(x.addCmd(epoch, parts, groups))
	if r.Err != nil || len(r.TxnAdds) != 1 {
		x.a.t.Fatalf("add to txn: %+v", r)
	}
	return r.TxnAdds[0]
}

// add adds partitions and groups and requires success.
func (x *tx) add(parts []*pb.TxnPartition, groups ...string) {
	x.a.t.Helper()
	r := x.addAt(x.epoch, parts, groups...)
	if r.Error != 0 {
		x.a.t.Fatalf("add to txn %q: %v", x.id, r)
	}
	for _, p := range r.Partitions {
		if p.Error != 0 {
			x.a.t.Fatalf("add to txn %q: %v", x.id, r)
		}
	}
	for _, g := range r.Groups {
		if g.Error != 0 {
			x.a.t.Fatalf("add to txn %q: %v", x.id, r)
		}
	}
}

func parts(tid []byte, ps ...int32) []*pb.TxnPartition {
	var out []*pb.TxnPartition
	for _, p := range ps {
		out = append(out, &pb.TxnPartition{TopicId: tid, Partition: p})
	}
	return out
}

func (x *tx) endCmd(epoch int32, commit bool) *pb.Command {
	return &pb.Command{Op: &pb.Command_EndTxn{EndTxn: &pb.EndTxnCommand{TransactionalId: x.id, ProducerId: x.pid, ProducerEpoch: epoch, Commit: commit}}}
}

func (x *tx) endAt(epoch int32, commit bool) *Error {
	x.a.t.Helper()
	return x.a.apply(x.endCmd(epoch, commit)).Err
}

func (x *tx) end(commit bool) {
	x.a.t.Helper()
	if err := x.endAt(x.epoch, commit); err != nil {
		x.a.t.Fatalf("end txn %q (commit %v): %v", x.id, commit, err)
	}
}

func (x *tx) offsetsCmd(epoch int32, group string, offs ...*pb.CommittedOffset) *pb.Command {
	return &pb.Command{Op: &pb.Command_TxnOffsetCommit{TxnOffsetCommit: &pb.TxnOffsetCommitCommand{
		TransactionalId: x.id, Group: group, ProducerId: x.pid, ProducerEpoch: epoch, Offsets: offs}}}
}

// batch is the producer's next transactional batch of n records in a partition.
func (x *tx) batch(tid []byte, p int32, n int32) bi {
	k := tp(tid, p)
	b := bi{pid: x.pid, epoch: x.epoch, seq: x.seq[k], n: n, txn: true}
	x.seq[k] += n
	return b
}

// produce commits one chunk holding the producer's next batch and returns its result.
func (x *tx) produce(tid []byte, p int32, n int32) *pb.BatchResult {
	x.a.t.Helper()
	return produce(x.a, tid, p, x.batch(tid, p, n))[0]
}

// bi is one batch of a chunk: pid -1 is a plain producer.
type bi struct {
	pid   int64
	epoch int32
	seq   int32
	n     int32
	txn   bool
}

func plain(n int32) bi { return bi{pid: -1, epoch: -1, seq: -1, n: n} }

// chunkOf is a chunk at position 0 holding the batches back to back, 10 bytes each.
func chunkOf(tid []byte, p int32, batches ...bi) *pb.ChunkCommit {
	c := &pb.ChunkCommit{TopicId: tid, Partition: p, Length: 10 * int64(len(batches))}
	for _, b := range batches {
		c.Batches = append(c.Batches, &pb.BatchInfo{OffsetCount: b.n, RecordCount: b.n, ProducerId: b.pid,
			ProducerEpoch: b.epoch, BaseSequence: b.seq, Transactional: b.txn, Size: 10})
	}
	return c
}

// nextSeg is a segment id no commit used: it carries the Raft index the commit will
// be applied at.
func nextSeg(a *applier) []byte {
	s := make([]byte, 16)
	s[0] = 0xee
	binary.BigEndian.PutUint64(s[8:], a.index+1)
	return s
}

// produce commits one chunk and returns its batch results (for a chunk of plain
// batches only: one result per batch, offsets in order).
func produce(a *applier, tid []byte, p int32, batches ...bi) []*pb.BatchResult {
	a.t.Helper()
	r := a.apply(commit(nextSeg(a), chunkOf(tid, p, batches...)))
	if r.Err != nil || len(r.Commits) != 1 || len(r.Commits[0].Chunks) != 1 {
		a.t.Fatalf("commit: %+v", r)
	}
	ch := r.Commits[0].Chunks[0]
	if ch.Error != 0 {
		a.t.Fatalf("commit: %v", ch)
	}
	if ch.Batches != nil {
		return ch.Batches
	}
	out := make([]*pb.BatchResult, len(batches))
	next := ch.BaseOffset
	for i, b := range batches {
		out[i] = &pb.BatchResult{BaseOffset: next}
		next += int64(b.n)
	}
	return out
}

func lookup(t testing.TB, s *State, tid []byte, p int32, from, upto int64) *pb.LookupResponse {
	t.Helper()
	r, err := s.Lookup(tid, p, from, 10_000, upto)
	if err != nil {
		t.Fatal(err)
	}
	if r.Error != 0 {
		t.Fatalf("lookup %x/%d at %d: %v", tid[:1], p, from, r.Error)
	}
	return r
}

func head(t testing.TB, s *State, tid []byte, p int32) *pb.PartitionHead {
	t.Helper()
	return lookup(t, s, tid, p, 0, 0).Head
}

func txnRecord(t testing.TB, s *State, txnID string) *pb.TransactionRecord {
	t.Helper()
	recs, err := s.Transactions([]string{txnID}, nil)
	if err != nil || len(recs) != 1 {
		t.Fatalf("transactions: %v %v", recs, err)
	}
	return recs[0]
}

// checkContiguous requires a partition's index entries to cover [0, next) without
// gaps or overlaps.
func checkContiguous(t testing.TB, s *State, tid []byte, p int32) []*pb.IndexEntry {
	t.Helper()
	r := lookup(t, s, tid, p, 0, 0)
	next := int64(0)
	for _, e := range r.Entries {
		if e.BaseOffset != next || e.LastOffset < e.BaseOffset {
			t.Fatalf("entry [%d, %d] after offset %d: %v", e.BaseOffset, e.LastOffset, next-1, r.Entries)
		}
		next = e.LastOffset + 1
	}
	if next != r.Head.NextOffset {
		t.Fatalf("entries end at %d, head at %d", next, r.Head.NextOffset)
	}
	return r.Entries
}

func wantMarker(t testing.TB, e *pb.IndexEntry, offset int64, marker int32, pid int64, epoch int32) {
	t.Helper()
	if e.Marker != marker || e.BaseOffset != offset || e.LastOffset != offset || e.ProducerId != pid || e.ProducerEpoch != epoch ||
		e.BatchCount != 1 || e.RecordCount != 1 || e.SegmentId != nil {
		t.Fatalf("marker: %v, want marker %d at %d from %d/%d", e, marker, offset, pid, epoch)
	}
}

func errCode(e *Error) pb.ErrorCode {
	if e == nil {
		return pb.ErrorCode_NONE
	}
	return e.Code
}

// --- InitProducerId ------------------------------------------------------------------

func TestTxnInitProducerFencing(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	initProducer(a, -1, 0) // an idempotent producer takes id 0
	x := newTx(a, "tx", txnTimeout)
	if x.pid != 1 || x.epoch != 0 {
		t.Fatalf("first init: %d/%d", x.pid, x.epoch)
	}
	if rec := txnRecord(t, a.s, "tx"); rec.State != pb.TxnState_TXN_EMPTY || rec.LastEpoch != -1 || rec.ProducerId != 1 || rec.TimeoutMs != txnTimeout {
		t.Fatalf("record: %v", rec)
	}
	// The old instance opened a transaction and wrote to it.
	x.add(parts(id(1), 0), "g")
	if br := x.produce(id(1), 0, 2); br.Error != 0 || br.BaseOffset != 0 {
		t.Fatalf("batch: %v", br)
	}
	if r := a.apply(x.offsetsCmd(0, "g", &pb.CommittedOffset{TopicId: id(1), Partition: 0, Offset: 9})); r.Err != nil || r.Offsets[0].Error != 0 {
		t.Fatalf("txn offset commit: %+v", r)
	}
	old := *x
	// A new instance: same producer id, epoch 1; the open transaction is aborted.
	x.reinit()
	if x.pid != 1 || x.epoch != 1 {
		t.Fatalf("reinit: %d/%d", x.pid, x.epoch)
	}
	lk := lookup(t, a.s, id(1), 0, 0, 3)
	if len(lk.Entries) != 2 || lk.Head.StableOffset() != 3 || lk.Head.OpenTxns != 0 {
		t.Fatalf("after fencing: %v", lk)
	}
	wantMarker(t, lk.Entries[1], 2, pb.MarkerAbort, 1, 0)
	if len(lk.Aborted) != 1 || lk.Aborted[0].FirstOffset != 0 || lk.Aborted[0].LastOffset != 2 || lk.Aborted[0].ProducerId != 1 {
		t.Fatalf("aborted: %v", lk.Aborted)
	}
	if offs, _ := a.s.Offsets("g", nil); len(offs) != 0 {
		t.Fatalf("the aborted transaction's offsets: %v", offs)
	}
	if rec := txnRecord(t, a.s, "tx"); rec.State != pb.TxnState_TXN_EMPTY || rec.ProducerEpoch != 1 || len(rec.Partitions) != 0 {
		t.Fatalf("record after reinit: %v", rec)
	}
	if due, _ := a.s.TxnDue(a.now + 10*txnTimeout); due {
		t.Fatal("the aborted transaction is still due")
	}

	// The old instance, epoch 0, is fenced everywhere.
	if br := produce(a, id(1), 0, old.batch(id(1), 0, 1))[0]; br.Error != pb.ErrorCode_INVALID_PRODUCER_EPOCH {
		t.Fatalf("old epoch batch: %v", br)
	}
	if r := old.addAt(0, parts(id(1), 0)); r.Error != pb.ErrorCode_PRODUCER_FENCED || r.Partitions[0].Error != pb.ErrorCode_PRODUCER_FENCED {
		t.Fatalf("old epoch add: %v", r)
	}
	if e := old.endAt(0, true); errCode(e) != pb.ErrorCode_PRODUCER_FENCED {
		t.Fatalf("old epoch end: %v", e)
	}
	if r := a.apply(old.offsetsCmd(0, "g")); errCode(r.Err) != pb.ErrorCode_PRODUCER_FENCED {
		t.Fatalf("old epoch txn offset commit: %v", r.Err)
	}
	// An epoch never issued is fenced too (not accepted as newer).
	if e := old.endAt(5, true); errCode(e) != pb.ErrorCode_PRODUCER_FENCED {
		t.Fatalf("future epoch end: %v", e)
	}

	// KIP-360: the current instance recovers with its pair and gets epoch 2; the
	// retry of that request (its answer lost) carries epoch 1 and gets epoch 2
	// again, however often it is retried.
	for i := range 3 {
		r := a.apply(initTxnCmd("tx", 1, 1, txnTimeout))
		if r.Err != nil || r.Producer.ProducerId != 1 || r.Producer.Epoch != 2 {
			t.Fatalf("recovery %d from epoch 1: %+v", i, r)
		}
	}
	// A producer id without an epoch is malformed (it must not pass for the
	// epoch before the last bump while there is none).
	x.reinit() // epoch 3, no previous epoch
	if r := a.apply(initTxnCmd("tx", 1, -1, txnTimeout)); errCode(r.Err) != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("recovery with epoch -1: %+v", r)
	}
	if r := a.apply(initTxnCmd("tx", 1, 3, txnTimeout)); r.Err != nil || r.Producer.Epoch != 4 {
		t.Fatalf("recovery from epoch 3: %+v", r)
	}
	for _, c := range []struct {
		pid   int64
		epoch int32
	}{{1, 0}, {1, 2}, {1, 5}, {7, 4}, {0, 0}} {
		if r := a.apply(initTxnCmd("tx", c.pid, c.epoch, txnTimeout)); errCode(r.Err) != pb.ErrorCode_PRODUCER_FENCED {
			t.Fatalf("recovery with %d/%d: %+v", c.pid, c.epoch, r)
		}
	}
	// A fresh instance makes the previous epoch worthless for recovery.
	x.reinit()
	if x.epoch != 5 {
		t.Fatalf("reinit: epoch %d", x.epoch)
	}
	if r := a.apply(initTxnCmd("tx", 1, 4, txnTimeout)); errCode(r.Err) != pb.ErrorCode_PRODUCER_FENCED {
		t.Fatalf("recovery from epoch 4 after a new instance: %+v", r)
	}
	// The current epoch works end to end.
	x.add(parts(id(1), 0))
	if br := x.produce(id(1), 0, 1); br.Error != 0 || br.BaseOffset != 3 {
		t.Fatalf("batch at epoch %d: %v", x.epoch, br)
	}
	x.end(true)

	// Timeouts.
	for _, c := range []struct {
		timeout, max int32
		want         pb.ErrorCode
	}{{0, 0, pb.ErrorCode_INVALID_TRANSACTION_TIMEOUT}, {-5, 0, pb.ErrorCode_INVALID_TRANSACTION_TIMEOUT},
		{1001, 1000, pb.ErrorCode_INVALID_TRANSACTION_TIMEOUT}, {1000, 1000, pb.ErrorCode_NONE}, {5_000_000, 0, pb.ErrorCode_NONE}} {
		cmd := initTxnCmd("timeouts", -1, -1, c.timeout)
		cmd.GetInitProducer().MaxTransactionTimeoutMs = c.max
		if r := a.apply(cmd); errCode(r.Err) != c.want {
			t.Fatalf("timeout %d (max %d): %v, want %v", c.timeout, c.max, r.Err, c.want)
		}
	}
	if r := a.apply(initTxnCmd(strings.Repeat("x", maxTxnIDLen+1), -1, -1, 1000)); errCode(r.Err) != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("long transactional id: %v", r.Err)
	}
	// Recovering an id that does not exist creates it (Kafka: the producer
	// recovers from UNKNOWN_PRODUCER_ID with a fresh id).
	if r := a.apply(initTxnCmd("fresh", 1, 4, txnTimeout)); r.Err != nil || r.Producer.ProducerId == 1 || r.Producer.Epoch != 0 {
		t.Fatalf("recovery of an unknown id: %+v", r)
	}
}

// An idempotent InitProducerId naming a transactional producer's id must not move
// that producer's epoch behind its transaction record's back.
func TestIdempotentInitDoesNotTouchTransactionalProducer(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	x := newTx(a, "tx", txnTimeout)
	r := a.apply(&pb.Command{Op: &pb.Command_InitProducer{InitProducer: &pb.InitProducerCommand{ProducerId: x.pid, ProducerEpoch: x.epoch}}})
	if r.Err == nil && r.Producer.ProducerId == x.pid {
		t.Fatalf("idempotent init took over transactional producer %d: %v", x.pid, r.Producer)
	}
	x.add(parts(id(1), 0))
	if br := x.produce(id(1), 0, 1); br.Error != 0 {
		t.Fatalf("transactional batch after an idempotent init: %v", br)
	}
	x.end(true)
}

func TestTxnEpochExhaustion(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	x := newTx(a, "tx", txnTimeout)
	x.add(parts(id(1), 0))
	x.produce(id(1), 0, 1)
	// Put the id at the last epoch but one, as 32765 bumps would.
	rec := txnRecord(t, a.s, "tx")
	rec.ProducerEpoch = math.MaxInt16 - 1
	setRaw(t, a.s, txnKey("tx"), rec)
	setRaw(t, a.s, producerKey(x.pid), &pb.ProducerRecord{ProducerId: x.pid, Epoch: rec.ProducerEpoch, TransactionalId: "tx"})
	oldPid := x.pid
	x.reinit()
	if x.pid == oldPid || x.epoch != 0 {
		t.Fatalf("exhausted epoch: got %d/%d", x.pid, x.epoch)
	}
	// The open transaction was aborted under the old producer id.
	lk := lookup(t, a.s, id(1), 0, 0, 2)
	wantMarker(t, lk.Entries[1], 1, pb.MarkerAbort, oldPid, math.MaxInt16-1)
	if len(lk.Aborted) != 1 || lk.Aborted[0].ProducerId != oldPid || lk.Head.StableOffset() != 2 {
		t.Fatalf("after rotation: %v", lk)
	}
	// The old producer id is left to expire like an idempotent one.
	var old pb.ProducerRecord
	if ok, err := getProto(a.s.db, producerKey(oldPid), &old); !ok || err != nil || old.TransactionalId != "" {
		t.Fatalf("old producer record: %v %v %v", &old, ok, err)
	}
	x.add(parts(id(1), 0))
	if br := x.produce(id(1), 0, 1); br.Error != 0 || br.BaseOffset != 2 {
		t.Fatalf("batch from the new producer id: %v", br)
	}
}

// setRaw writes a record straight into Pebble, for states too costly to reach by
// commands. Only for keys the apply cache does not hold.
func setRaw(t testing.TB, s *State, key []byte, m proto.Message) {
	t.Helper()
	v, err := marshal.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set(key, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// --- commit and abort ----------------------------------------------------------------

func TestTxnCommitAcrossPartitions(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 2, nil))
	var events []*pb.WatchEvent
	a.s.SetNotifier(func(ev *pb.WatchEvent) { events = append(events, ev) })
	x := newTx(a, "tx", txnTimeout)

	produce(a, id(1), 0, plain(2)) // 0-1
	x.add(parts(id(1), 0, 1))
	if h := head(t, a.s, id(1), 0); h.StableOffset() != 2 || h.OpenTxns != 0 {
		t.Fatalf("an added partition without data holds nothing back: %v", h)
	}
	if br := x.produce(id(1), 0, 3); br.Error != 0 || br.BaseOffset != 2 { // 2-4
		t.Fatalf("first transactional batch: %v", br)
	}
	// A plain producer's batches go on, in their own chunk and in one shared with
	// the transaction.
	produce(a, id(1), 0, plain(2))                             // 5-6
	rs := produce(a, id(1), 0, x.batch(id(1), 0, 2), plain(1)) // 7-8, 9
	if rs[0].Error != 0 || rs[0].BaseOffset != 7 || rs[1].BaseOffset != 9 {
		t.Fatalf("mixed chunk: %v", rs)
	}
	if br := x.produce(id(1), 1, 2); br.Error != 0 || br.BaseOffset != 0 { // p1: 0-1
		t.Fatalf("partition 1: %v", br)
	}
	h0, h1 := head(t, a.s, id(1), 0), head(t, a.s, id(1), 1)
	if h0.NextOffset != 10 || h0.StableOffset() != 2 || h0.OpenTxns != 1 || h1.NextOffset != 2 || h1.StableOffset() != 0 {
		t.Fatalf("heads while open: %v / %v", h0, h1)
	}
	if ps, found, _ := a.s.Producers(id(1), 0); !found || len(ps) != 1 || ps[0].ProducerId != x.pid || ps[0].TxnStartOffset != 2 || ps[0].LastSequence != 4 {
		t.Fatalf("producers: %v", ps)
	}
	// The chunk result reports the stable offset.
	r := a.apply(commit(nextSeg(a), chunkOf(id(1), 0, plain(1)))) // 10
	if c := r.Commits[0].Chunks[0]; c.BaseOffset != 10 || c.LastStableOffset != 2 {
		t.Fatalf("chunk result while open: %v", c)
	}

	events = nil
	x.end(true)
	// Each partition's marker takes the next offset; the LSO reaches the end.
	h0, h1 = head(t, a.s, id(1), 0), head(t, a.s, id(1), 1)
	if h0.NextOffset != 12 || h0.StableOffset() != 12 || h0.OpenTxns != 0 || h1.NextOffset != 3 || h1.StableOffset() != 3 {
		t.Fatalf("heads after commit: %v / %v", h0, h1)
	}
	e0 := checkContiguous(t, a.s, id(1), 0)
	e1 := checkContiguous(t, a.s, id(1), 1)
	if len(e0) != 6 || len(e1) != 2 {
		t.Fatalf("entries: %v / %v", e0, e1)
	}
	wantMarker(t, e0[5], 11, pb.MarkerCommit, x.pid, 0)
	wantMarker(t, e1[1], 2, pb.MarkerCommit, x.pid, 0)
	if e0[3].BaseOffset != 7 || e0[3].LastOffset != 9 || e0[3].BatchCount != 2 || e0[3].Marker != 0 {
		t.Fatalf("mixed chunk entry: %v", e0[3])
	}
	if lk := lookup(t, a.s, id(1), 0, 11, 12); len(lk.Entries) != 1 || lk.Entries[0].Marker != pb.MarkerCommit || len(lk.Aborted) != 0 {
		t.Fatalf("lookup at the marker: %v", lk)
	}
	if lk := lookup(t, a.s, id(1), 0, 0, 12); len(lk.Aborted) != 0 {
		t.Fatalf("a commit is not aborted: %v", lk.Aborted)
	}
	// Watchers hear of both markers with the stable offsets after them.
	if len(events) != 1 || len(events[0].Entries) != 2 {
		t.Fatalf("events: %v", events)
	}
	for _, e := range events[0].Entries {
		want := map[int32]int64{0: 12, 1: 3}[e.Partition]
		if e.Marker != pb.MarkerCommit || !bytes.Equal(e.TopicId, id(1)) || e.LastStableOffset != want || e.LastOffset != want-1 {
			t.Fatalf("marker event: %v", e)
		}
	}
	if rec := txnRecord(t, a.s, "tx"); rec.State != pb.TxnState_TXN_COMPLETE_COMMIT || len(rec.Partitions) != 0 {
		t.Fatalf("record: %v", rec)
	}
	if ps, _, _ := a.s.Producers(id(1), 0); len(ps) != 1 || ps[0].TxnStartOffset != -1 {
		t.Fatalf("producers after commit: %v", ps)
	}
	// The next transaction of the same epoch goes on with the sequences.
	x.add(parts(id(1), 0))
	if br := x.produce(id(1), 0, 1); br.Error != 0 || br.BaseOffset != 12 {
		t.Fatalf("second transaction: %v", br)
	}
	if h := head(t, a.s, id(1), 0); h.StableOffset() != 12 {
		t.Fatalf("second transaction's LSO: %v", h)
	}
}

func TestTxnAbortAndAbortedIndex(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	ta, tb := newTx(a, "a", txnTimeout), newTx(a, "b", txnTimeout)
	lso := func() int64 { return head(t, a.s, id(1), 0).StableOffset() }

	produce(a, id(1), 0, plain(2)) // 0-1
	ta.add(parts(id(1), 0))
	ta.produce(id(1), 0, 2) // 2-3: A starts at 2
	tb.add(parts(id(1), 0))
	tb.produce(id(1), 0, 2)        // 4-5: B starts at 4
	produce(a, id(1), 0, plain(1)) // 6
	ta.produce(id(1), 0, 1)        // 7
	if lso() != 2 {
		t.Fatalf("LSO with A and B open: %d", lso())
	}
	ta.end(false) // marker 8
	if lso() != 4 {
		t.Fatalf("LSO after A aborts, B open: %d", lso())
	}
	tb.produce(id(1), 0, 1) // 9
	tb.end(true)            // marker 10
	if lso() != 11 {
		t.Fatalf("LSO after B commits: %d", lso())
	}
	abortA := &pb.AbortedTxn{ProducerId: ta.pid, FirstOffset: 2, LastOffset: 8, StableAfter: 4}
	cases := []struct {
		from, upto int64
		want       []*pb.AbortedTxn
	}{
		{0, 11, []*pb.AbortedTxn{abortA}},
		{0, 2, nil}, // before A's first offset
		{0, 3, []*pb.AbortedTxn{abortA}},
		{8, 9, []*pb.AbortedTxn{abortA}}, // the marker itself
		{9, 11, nil},                     // after A's marker
		{4, 6, []*pb.AbortedTxn{abortA}},
	}
	for _, c := range cases {
		if got := lookup(t, a.s, id(1), 0, c.from, c.upto).Aborted; !equalAborted(got, c.want) {
			t.Errorf("aborted in [%d, %d): %v, want %v", c.from, c.upto, got, c.want)
		}
	}

	// The stop rule. C starts at 11, D at 12; C aborts at 13 with D still open
	// (stable after: 12), D aborts at 14 (stable after: 15). For a fetch of
	// [11, 13) Kafka's index walk takes C (first 11 < 13), goes on because C's
	// stable offset 12 < 13, takes D (first 12 < 13), and stops at D (15 >= 13):
	// both. For [11, 12) it stops at C (12 >= 12): D's data starts at 12.
	tc, td := newTx(a, "c", txnTimeout), newTx(a, "d", txnTimeout)
	tc.add(parts(id(1), 0))
	td.add(parts(id(1), 0))
	tc.produce(id(1), 0, 1) // 11
	td.produce(id(1), 0, 1) // 12
	tc.end(false)           // 13
	td.end(false)           // 14
	abortC := &pb.AbortedTxn{ProducerId: tc.pid, FirstOffset: 11, LastOffset: 13, StableAfter: 12}
	abortD := &pb.AbortedTxn{ProducerId: td.pid, FirstOffset: 12, LastOffset: 14, StableAfter: 15}
	for _, c := range []struct {
		from, upto int64
		want       []*pb.AbortedTxn
	}{
		{11, 13, []*pb.AbortedTxn{abortC, abortD}},
		{11, 12, []*pb.AbortedTxn{abortC}},
		{12, 13, []*pb.AbortedTxn{abortC, abortD}},
		{13, 15, []*pb.AbortedTxn{abortC, abortD}},
		{14, 15, []*pb.AbortedTxn{abortD}},
		{0, 15, []*pb.AbortedTxn{abortA, abortC, abortD}},
		{0, 12, []*pb.AbortedTxn{abortA, abortC}},
	} {
		if got := lookup(t, a.s, id(1), 0, c.from, c.upto).Aborted; !equalAborted(got, c.want) {
			t.Errorf("aborted in [%d, %d): %v, want %v", c.from, c.upto, got, c.want)
		}
	}
	checkContiguous(t, a.s, id(1), 0)

	// An abort with no data in the partition writes a marker but indexes nothing.
	te := newTx(a, "e", txnTimeout)
	te.add(parts(id(1), 0))
	te.end(false)
	lk := lookup(t, a.s, id(1), 0, 0, 16)
	wantMarker(t, lk.Entries[len(lk.Entries)-1], 15, pb.MarkerAbort, te.pid, 0)
	if len(lk.Aborted) != 3 || lk.Head.StableOffset() != 16 {
		t.Fatalf("abort without data: %v", lk)
	}
}

func equalAborted(got, want []*pb.AbortedTxn) bool {
	return slices.EqualFunc(got, want, func(a, b *pb.AbortedTxn) bool { return proto.Equal(a, b) })
}

// TestTxnRandomLSOAndAborted drives one partition with random interleavings of
// plain batches and several transactional producers (commits, aborts, new
// instances fencing open transactions) and checks the stable offset after every
// step and the aborted lists of random ranges against a model. The same command
// log, applied again one by one and in random batches, must give identical states.
func TestTxnRandomLSOAndAborted(t *testing.T) {
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 7))
		a := newApplier(t)
		var log []*pb.Command
		apply := func(cmd *pb.Command) *Result {
			r := a.apply(cmd)
			log = append(log, cmd)
			return r
		}
		apply(createTopic("t", id(1), 1, nil))
		type model struct {
			x       *tx
			ongoing bool  // the partition is in an ONGOING transaction
			first   int64 // -1: no data in the open transaction
			ended   int   // how the last transaction ended: 0 none (or a new instance since), 1 commit, 2 abort
		}
		var txns []*model
		for i := range 4 {
			r := apply(initTxnCmd(fmt.Sprint("t", i), -1, -1, txnTimeout))
			txns = append(txns, &model{x: &tx{a: a, id: fmt.Sprint("t", i), pid: r.Producer.ProducerId, seq: map[tpID]int32{}}, first: -1})
		}
		type abort struct{ pid, first, marker int64 }
		var aborts []abort
		next := int64(0)
		end := func(m *model, commit bool) {
			if m.ongoing && !commit && m.first >= 0 {
				aborts = append(aborts, abort{m.x.pid, m.first, next})
			}
			if m.ongoing {
				next++ // the marker
				m.ended = map[bool]int{true: 1, false: 2}[commit]
			}
			m.ongoing, m.first = false, -1
		}
		for step := range 300 {
			m := txns[rng.IntN(len(txns))]
			switch k := rng.IntN(10); {
			case k < 2:
				n := int32(1 + rng.IntN(3))
				r := apply(commit(nextSeg(a), chunkOf(id(1), 0, plain(n))))
				if c := r.Commits[0].Chunks[0]; c.BaseOffset != next {
					t.Fatalf("seed %d step %d: plain batch at %d, want %d", seed, step, c.BaseOffset, next)
				}
				next += int64(n)
			case k < 6:
				if !m.ongoing {
					if r := apply(m.x.addCmd(m.x.epoch, parts(id(1), 0), nil)); r.TxnAdds[0].Error != 0 {
						t.Fatalf("seed %d step %d: add: %v", seed, step, r.TxnAdds[0])
					}
					m.ongoing = true
				}
				n := int32(1 + rng.IntN(3))
				b := m.x.batch(id(1), 0, n)
				batches := []bi{b}
				if rng.IntN(3) == 0 {
					batches = append(batches, plain(1))
				}
				r := apply(commit(nextSeg(a), chunkOf(id(1), 0, batches...)))
				if br := r.Commits[0].Chunks[0].Batches[0]; br.Error != 0 || br.BaseOffset != next {
					t.Fatalf("seed %d step %d: transactional batch %v, want offset %d", seed, step, br, next)
				}
				if m.first < 0 {
					m.first = next
				}
				next += int64(n) + int64(len(batches)-1)
			case k < 9:
				commit := rng.IntN(2) == 0
				r := apply(m.x.endCmd(m.x.epoch, commit))
				// Allowed: ending the open transaction, or a retry of how the
				// last one ended.
				ok := m.ongoing || m.ended == map[bool]int{true: 1, false: 2}[commit]
				if ok != (r.Err == nil) || !ok && r.Err.Code != pb.ErrorCode_INVALID_TXN_STATE {
					t.Fatalf("seed %d step %d: end (commit %v, ongoing %v, ended %d): %v", seed, step, commit, m.ongoing, m.ended, r.Err)
				}
				end(m, commit)
			default:
				// A new instance: the open transaction is aborted, the epoch bumped.
				r := apply(initTxnCmd(m.x.id, -1, -1, txnTimeout))
				end(m, false)
				m.ended = 0
				m.x.epoch, m.x.seq = r.Producer.Epoch, map[tpID]int32{}
			}
			want := next
			for _, o := range txns {
				if o.ongoing && o.first >= 0 {
					want = min(want, o.first)
				}
			}
			h := head(t, a.s, id(1), 0)
			if h.NextOffset != next || h.StableOffset() != want {
				t.Fatalf("seed %d step %d: head %v, want next %d stable %d", seed, step, h, next, want)
			}
			if step%25 != 24 {
				continue
			}
			checkContiguous(t, a.s, id(1), 0)
			for range 40 {
				from := rng.Int64N(next + 1)
				upto := from + 1 + rng.Int64N(next-from+2)
				var wantAb []abort
				for _, ab := range aborts {
					if ab.marker >= from && ab.first < upto {
						wantAb = append(wantAb, ab)
					}
				}
				got := lookup(t, a.s, id(1), 0, from, upto).Aborted
				ok := len(got) == len(wantAb)
				for i := 0; ok && i < len(got); i++ {
					ok = got[i].ProducerId == wantAb[i].pid && got[i].FirstOffset == wantAb[i].first && got[i].LastOffset == wantAb[i].marker
				}
				if !ok {
					t.Fatalf("seed %d step %d: aborted in [%d, %d): %v, want %v", seed, step, from, upto, got, wantAb)
				}
			}
		}
		if len(aborts) == 0 {
			t.Fatalf("seed %d: no aborts exercised", seed)
		}

		// Determinism: the same log one by one and in random batches.
		want := digest(t, a.s)
		one := openState(t)
		for i, c := range log {
			if _, err := one.Apply(uint64(i+1), c); err != nil {
				t.Fatal(err)
			}
		}
		if got := digest(t, one); got != want {
			t.Fatalf("seed %d: replayed state differs", seed)
		}
		batched := openState(t)
		for i := 0; i < len(log); {
			n := 1 + rng.IntN(20)
			var entries []Entry
			for j := i; j < min(len(log), i+n); j++ {
				entries = append(entries, Entry{Index: uint64(j + 1), Cmd: log[j]})
			}
			if _, err := batched.ApplyBatch(entries); err != nil {
				t.Fatal(err)
			}
			i += n
		}
		if got := digest(t, batched); got != want {
			t.Fatalf("seed %d: batched state differs", seed)
		}
	}
}

// --- KIP-890 part 1 ------------------------------------------------------------------

func TestTxnBatchVerification(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 2, nil))
	x := newTx(a, "tx", txnTimeout)

	// No transaction open: refused, not indexed; the plain batch beside it goes in
	// at the refused batch's offset, from its own bytes.
	b := x.batch(id(1), 0, 2)
	rs := produce(a, id(1), 0, b, plain(1))
	if rs[0].Error != pb.ErrorCode_INVALID_TXN_STATE || rs[1].Error != 0 || rs[1].BaseOffset != 0 {
		t.Fatalf("batch outside a transaction: %v", rs)
	}
	lk := lookup(t, a.s, id(1), 0, 0, 0)
	if len(lk.Entries) != 1 || lk.Entries[0].Position != 10 || lk.Entries[0].Length != 10 || lk.Head.NextOffset != 1 || lk.Head.OpenTxns != 0 {
		t.Fatalf("index after a refused batch: %v", lk)
	}
	// Open with partition 1 only: partition 0 is still refused.
	x.add(parts(id(1), 1))
	if br := produce(a, id(1), 0, b)[0]; br.Error != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("batch to a partition not added: %v", br)
	}
	// VerifyOnly answers per partition and changes nothing.
	vr := a.apply(&pb.Command{Op: &pb.Command_AddToTxn{AddToTxn: &pb.AddToTxnCommand{Txns: []*pb.TxnAdd{
		{TransactionalId: "tx", ProducerId: x.pid, ProducerEpoch: x.epoch, Partitions: parts(id(1), 0, 1), VerifyOnly: true}}}}})
	if p := vr.TxnAdds[0].Partitions; p[0].Error != pb.ErrorCode_INVALID_TXN_STATE || p[1].Error != 0 {
		t.Fatalf("verify only: %v", vr.TxnAdds[0])
	}
	if br := produce(a, id(1), 0, b)[0]; br.Error != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("verify only added the partition: %v", br)
	}
	// Added: accepted (sequence 0: refused batches leave no trace).
	x.add(parts(id(1), 0))
	if br := produce(a, id(1), 0, b)[0]; br.Error != 0 || br.BaseOffset != 1 {
		t.Fatalf("batch after add: %v", br)
	}
	// Its retry is a duplicate with the original offset, before and after the end.
	if br := produce(a, id(1), 0, b)[0]; !br.Duplicate || br.BaseOffset != 1 {
		t.Fatalf("retry while open: %v", br)
	}
	// A non-transactional batch of the producer while its transaction has data
	// here is refused (Kafka: "expected transactional write").
	nb := x.batch(id(1), 0, 1)
	nb.txn = false
	if br := produce(a, id(1), 0, nb)[0]; br.Error != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("plain batch inside the transaction: %v", br)
	}
	x.seq[tp(id(1), 0)]--
	x.end(true) // marker at 3
	if br := produce(a, id(1), 0, b)[0]; !br.Duplicate || br.BaseOffset != 1 {
		t.Fatalf("retry after the end: %v", br)
	}
	// A late batch of the ended transaction (same epoch) is refused.
	if br := x.produce(id(1), 0, 1); br.Error != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("late batch after the end: %v", br)
	}
	if h := head(t, a.s, id(1), 0); h.NextOffset != 4 || h.StableOffset() != 4 {
		t.Fatalf("head: %v", h)
	}
	// A transactional batch from an idempotent producer, or a producer never
	// issued, is refused.
	idem := initProducer(a, -1, 0)
	if br := produce(a, id(1), 0, bi{pid: idem.ProducerId, epoch: 0, seq: 0, n: 1, txn: true})[0]; br.Error != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("transactional batch of an idempotent producer: %v", br)
	}
	if br := produce(a, id(1), 0, bi{pid: 99, epoch: 0, seq: 0, n: 1, txn: true})[0]; br.Error != pb.ErrorCode_UNKNOWN_PRODUCER_ID {
		t.Fatalf("transactional batch of an unknown producer: %v", br)
	}
	checkContiguous(t, a.s, id(1), 0)
}

func TestTxnAddValidation(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	x := newTx(a, "tx", txnTimeout)
	// An unknown partition fails the whole add.
	r := x.addAt(x.epoch, []*pb.TxnPartition{{TopicId: id(1), Partition: 0}, {TopicId: id(1), Partition: 3}, {TopicId: id(9), Partition: 0}})
	if p := r.Partitions; p[0].Error != pb.ErrorCode_OPERATION_NOT_ATTEMPTED || p[1].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION || p[2].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("add with unknown partitions: %v", r)
	}
	if rec := txnRecord(t, a.s, "tx"); rec.State != pb.TxnState_TXN_EMPTY {
		t.Fatalf("a failed add opened the transaction: %v", rec)
	}
	r = x.addAt(x.epoch, parts(id(1), 0), "")
	if r.Groups[0].Error != pb.ErrorCode_INVALID_REQUEST || r.Partitions[0].Error != pb.ErrorCode_OPERATION_NOT_ATTEMPTED {
		t.Fatalf("add with an empty group: %v", r)
	}
	if r := x.addAt(x.epoch+1, parts(id(1), 0)); r.Error != pb.ErrorCode_PRODUCER_FENCED {
		t.Fatalf("add with an epoch never issued: %v", r)
	}
	other := &tx{a: a, id: "nope", pid: x.pid}
	if r := other.addAt(0, parts(id(1), 0)); r.Error != pb.ErrorCode_INVALID_PRODUCER_ID_MAPPING || r.Partitions[0].Error != pb.ErrorCode_INVALID_PRODUCER_ID_MAPPING {
		t.Fatalf("add to an unknown id: %v", r)
	}
	// Adding the same partition twice keeps one.
	x.add(parts(id(1), 0, 0))
	x.add(parts(id(1), 0), "g", "g")
	if rec := txnRecord(t, a.s, "tx"); len(rec.Partitions) != 1 || !slices.Equal(rec.Groups, []string{"g"}) {
		t.Fatalf("record: %v", rec)
	}
}

// A refused add must leave no trace: before the fix the deadline of a transaction
// that never opened stayed behind, kept TxnDue true and later aborted a real
// transaction of the id long before its timeout.
func TestTxnRefusedAddLeavesNoDeadline(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	x := newTx(a, "tx", 1000)
	var groups []string
	for i := range maxTxnGroups + 1 {
		groups = append(groups, fmt.Sprint("g", i))
	}
	if r := x.addAt(x.epoch, nil, groups...); r.Error != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("too many groups: %v", r)
	}
	if rec := txnRecord(t, a.s, "tx"); rec.State != pb.TxnState_TXN_EMPTY {
		t.Fatalf("a refused add opened the transaction: %v", rec)
	}
	if due, _ := a.s.TxnDue(a.now + 10_000); due {
		t.Fatal("a refused add left a deadline")
	}
	// A real transaction opened later lives its whole timeout.
	a.now += 900
	x.add(parts(id(1), 0), groups[:60]...)
	start := a.now
	x.produce(id(1), 0, 1)
	// Growing it past the bound is refused whole.
	if r := x.addAt(x.epoch, nil, groups[50:]...); r.Error != pb.ErrorCode_INVALID_REQUEST || r.Groups[0].Error != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("too many groups in all: %v", r)
	}
	if rec := txnRecord(t, a.s, "tx"); len(rec.Groups) != 60 || len(rec.Partitions) != 1 || rec.StartMs != start {
		t.Fatalf("a refused add changed the transaction: %v", rec)
	}
	// A deadline no transaction has (as the refused add used to leave) is
	// dropped by the expiry, and aborts nothing.
	if err := a.s.db.Set(txnDeadline(start-50, "tx"), nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	r := a.apply(&pb.Command{NowMs: start + 999, Op: &pb.Command_ExpireTxns{ExpireTxns: &pb.ExpireTxnsCommand{}}})
	if r.Err != nil || r.More {
		t.Fatalf("expire: %+v", r)
	}
	if rec := txnRecord(t, a.s, "tx"); rec.State != pb.TxnState_TXN_ONGOING {
		t.Fatalf("transaction aborted before its timeout: %v", rec)
	}
	if due, _ := a.s.TxnDue(start + 999); due {
		t.Fatal("the stale deadline is still due")
	}
	if due, _ := a.s.TxnDue(start + 1000); !due {
		t.Fatal("the real deadline is gone")
	}
}

// --- TxnOffsetCommit -----------------------------------------------------------------

func TestTxnOffsetCommit(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 2, nil))
	x := newTx(a, "tx", txnTimeout)
	refs := []*pb.PartitionRef{{TopicId: id(1), Partition: 0}, {TopicId: id(1), Partition: 1}}
	off := func(p int32, o int64) *pb.CommittedOffset {
		return &pb.CommittedOffset{TopicId: id(1), Partition: p, Offset: o, LeaderEpoch: -1, Metadata: "m"}
	}
	offsets := func(group string) map[int32]int64 {
		t.Helper()
		os, err := a.s.Offsets(group, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := map[int32]int64{}
		for _, o := range os {
			m[o.Partition] = o.Offset
		}
		return m
	}
	unstable := func(group string) []bool {
		t.Helper()
		u, err := a.s.Unstable(group, refs)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	a.apply(&pb.Command{Op: &pb.Command_CommitOffsets{CommitOffsets: &pb.CommitOffsetsCommand{Group: "g", Offsets: []*pb.CommittedOffset{off(0, 1)}}}})

	// Not in a transaction, then in one without the group: refused.
	if r := a.apply(x.offsetsCmd(x.epoch, "g", off(0, 5))); errCode(r.Err) != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("no transaction: %v", r.Err)
	}
	x.add(parts(id(1), 0))
	if r := a.apply(x.offsetsCmd(x.epoch, "g", off(0, 5))); errCode(r.Err) != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("group not added: %v", r.Err)
	}
	x.add(nil, "g")
	big := off(1, 7)
	big.Metadata = strings.Repeat("m", maxOffsetMetadata+1)
	r := a.apply(x.offsetsCmd(x.epoch, "g", off(0, 5), off(1, 7), &pb.CommittedOffset{TopicId: id(1), Partition: 9}, big))
	if r.Err != nil || r.Offsets[0].Error != 0 || r.Offsets[1].Error != 0 || r.Offsets[2].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION || r.Offsets[3].Error != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("txn offset commit: %+v", r)
	}
	if got := offsets("g"); len(got) != 1 || got[0] != 1 {
		t.Fatalf("pending offsets are visible: %v", got)
	}
	if u := unstable("g"); !u[0] || !u[1] {
		t.Fatalf("unstable while pending: %v", u)
	}
	if u := unstable("h"); u[0] || u[1] {
		t.Fatalf("another group unstable: %v", u)
	}
	x.end(false)
	if got := offsets("g"); len(got) != 1 || got[0] != 1 {
		t.Fatalf("offsets after abort: %v", got)
	}
	if u := unstable("g"); u[0] || u[1] {
		t.Fatalf("unstable after abort: %v", u)
	}

	// The next transaction commits: its offsets replace the committed ones; a
	// later commit of the same partition in it wins.
	x.add(nil, "g")
	a.apply(x.offsetsCmd(x.epoch, "g", off(0, 8)))
	a.apply(x.offsetsCmd(x.epoch, "g", off(0, 9)))
	if got := offsets("g"); got[0] != 1 {
		t.Fatalf("pending offsets are visible: %v", got)
	}
	x.end(true)
	if got := offsets("g"); len(got) != 1 || got[0] != 9 {
		t.Fatalf("offsets after commit: %v", got)
	}
	if u := unstable("g"); u[0] || u[1] {
		t.Fatalf("unstable after commit: %v", u)
	}
	// A transaction of groups only writes no marker.
	if h := head(t, a.s, id(1), 0); h.NextOffset != 1 {
		t.Fatalf("markers: %v", h)
	}
}

// TxnOffsetCommit must see a topic created earlier in the same apply batch, as it
// would had the entries been applied one by one.
func TestTxnOffsetCommitInOneBatch(t *testing.T) {
	s := openState(t)
	cmds := []*pb.Command{
		createTopic("t", id(1), 1, nil),
		initTxnCmd("tx", -1, -1, txnTimeout),
		{Op: &pb.Command_AddToTxn{AddToTxn: &pb.AddToTxnCommand{Txns: []*pb.TxnAdd{{TransactionalId: "tx", ProducerId: 0, Groups: []string{"g"}}}}}},
		{Op: &pb.Command_TxnOffsetCommit{TxnOffsetCommit: &pb.TxnOffsetCommitCommand{TransactionalId: "tx", Group: "g", ProducerId: 0,
			Offsets: []*pb.CommittedOffset{{TopicId: id(1), Partition: 0, Offset: 3}}}}},
	}
	var entries []Entry
	for i, c := range cmds {
		c.Version, c.NowMs = CommandVersion, 1000
		entries = append(entries, Entry{Index: uint64(i + 1), Cmd: c})
	}
	rs, err := s.ApplyBatch(entries)
	if err != nil {
		t.Fatal(err)
	}
	if r := rs[3]; r.Err != nil || len(r.Offsets) != 1 || r.Offsets[0].Error != 0 {
		t.Fatalf("txn offset commit in the topic's batch: %+v", r)
	}
}

// --- EndTxn --------------------------------------------------------------------------

func TestEndTxnStates(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	x := newTx(a, "tx", txnTimeout)
	if e := (&tx{a: a, id: "nope", pid: x.pid}).endAt(0, true); errCode(e) != pb.ErrorCode_INVALID_PRODUCER_ID_MAPPING {
		t.Fatalf("unknown id: %v", e)
	}
	if e := (&tx{a: a, id: "tx", pid: x.pid + 1}).endAt(0, true); errCode(e) != pb.ErrorCode_INVALID_PRODUCER_ID_MAPPING {
		t.Fatalf("wrong producer id: %v", e)
	}
	if e := (&tx{a: a, id: "", pid: x.pid}).endAt(0, true); errCode(e) != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("empty id: %v", e)
	}
	for _, commit := range []bool{true, false} {
		if e := x.endAt(x.epoch, commit); errCode(e) != pb.ErrorCode_INVALID_TXN_STATE {
			t.Fatalf("end (commit %v) of an empty transaction: %v", commit, e)
		}
	}
	next := func() int64 { return head(t, a.s, id(1), 0).NextOffset }

	x.add(parts(id(1), 0))
	x.produce(id(1), 0, 1) // 0
	x.end(true)            // marker 1
	if e := x.endAt(x.epoch, true); e != nil || next() != 2 {
		t.Fatalf("retried commit: %v, next %d", e, next())
	}
	if e := x.endAt(x.epoch, false); errCode(e) != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("abort after commit: %v", e)
	}
	x.add(parts(id(1), 0))
	x.produce(id(1), 0, 1) // 2
	x.end(false)           // marker 3
	if e := x.endAt(x.epoch, false); e != nil || next() != 4 {
		t.Fatalf("retried abort: %v, next %d", e, next())
	}
	if e := x.endAt(x.epoch, true); errCode(e) != pb.ErrorCode_INVALID_TXN_STATE {
		t.Fatalf("commit after abort: %v", e)
	}
	if lk := lookup(t, a.s, id(1), 0, 0, 4); len(lk.Aborted) != 1 || lk.Aborted[0].FirstOffset != 2 || lk.Aborted[0].LastOffset != 3 {
		t.Fatalf("aborted: %v", lk.Aborted)
	}
	// A transaction with a partition but no data still writes its marker.
	x.add(parts(id(1), 0))
	x.end(true)
	if lk := lookup(t, a.s, id(1), 0, 4, 0); len(lk.Entries) != 1 {
		t.Fatalf("marker of a transaction without data: %v", lk)
	} else {
		wantMarker(t, lk.Entries[0], 4, pb.MarkerCommit, x.pid, x.epoch)
	}
}

// --- timeouts and expiry -------------------------------------------------------------

func TestExpireTxns(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	x := newTx(a, "tx", 1000)
	produce(a, id(1), 0, plain(1)) // 0
	x.add(parts(id(1), 0))
	start := a.now
	x.produce(id(1), 0, 2) // 1-2
	expire := func(now, expiration int64) *Result {
		t.Helper()
		r := a.apply(&pb.Command{NowMs: now, Op: &pb.Command_ExpireTxns{ExpireTxns: &pb.ExpireTxnsCommand{ExpirationMs: expiration}}})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r
	}
	if due, _ := a.s.TxnDue(start + 999); due {
		t.Fatal("due before its timeout")
	}
	if due, _ := a.s.TxnDue(start + 1000); !due {
		t.Fatal("not due at its timeout")
	}
	expire(start+999, 0)
	if rec := txnRecord(t, a.s, "tx"); rec.State != pb.TxnState_TXN_ONGOING || head(t, a.s, id(1), 0).StableOffset() != 1 {
		t.Fatalf("expired early: %v", rec)
	}
	a.now = start + 1000
	expire(start+1000, 0)
	rec := txnRecord(t, a.s, "tx")
	if rec.State != pb.TxnState_TXN_COMPLETE_ABORT || rec.ProducerEpoch != 1 || rec.LastEpoch != 0 {
		t.Fatalf("after the timeout: %v", rec)
	}
	lk := lookup(t, a.s, id(1), 0, 0, 4)
	if lk.Head.StableOffset() != 4 || len(lk.Aborted) != 1 || lk.Aborted[0].FirstOffset != 1 || lk.Aborted[0].LastOffset != 3 {
		t.Fatalf("partition after the timeout: %v", lk)
	}
	wantMarker(t, lk.Entries[len(lk.Entries)-1], 3, pb.MarkerAbort, x.pid, 0)
	if due, _ := a.s.TxnDue(a.now + 1_000_000); due {
		t.Fatal("still due")
	}
	// The producer that left it may recover (INVALID_PRODUCER_EPOCH), not fenced.
	if e := x.endAt(0, false); errCode(e) != pb.ErrorCode_INVALID_PRODUCER_EPOCH {
		t.Fatalf("end from the timed-out epoch: %v", e)
	}
	if r := x.addAt(0, parts(id(1), 0)); r.Error != pb.ErrorCode_INVALID_PRODUCER_EPOCH {
		t.Fatalf("add from the timed-out epoch: %v", r)
	}
	if br := x.produce(id(1), 0, 1); br.Error != pb.ErrorCode_INVALID_PRODUCER_EPOCH {
		t.Fatalf("batch from the timed-out epoch: %v", br)
	}
	r := a.apply(initTxnCmd("tx", x.pid, 0, 1000))
	if r.Err != nil || r.Producer.ProducerId != x.pid || r.Producer.Epoch < 1 {
		t.Fatalf("recovery after the timeout: %+v", r)
	}
	x.epoch, x.seq = r.Producer.Epoch, map[tpID]int32{}
	x.add(parts(id(1), 0))
	if br := x.produce(id(1), 0, 1); br.Error != 0 || br.BaseOffset != 4 {
		t.Fatalf("batch after recovery: %v", br)
	}
	x.end(true)

	// Id expiry: ids idle longer than the expiration go, unless a transaction is
	// open; their producer ids with them.
	idle := newTx(a, "idle", 1000)
	busy := newTx(a, "busy", 600_000)
	busy.add(parts(id(1), 0))
	a.now += 10_000
	recent := newTx(a, "recent", 1000)
	expire(a.now+1, 5_000)
	got, err := a.s.Transactions([]string{"idle", "busy", "recent", "tx"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != nil || got[1] == nil || got[2] == nil || got[3] != nil {
		t.Fatalf("after id expiry: %v", got)
	}
	if br := produce(a, id(1), 0, bi{pid: idle.pid, epoch: 0, seq: 0, n: 1})[0]; br.Error != pb.ErrorCode_UNKNOWN_PRODUCER_ID {
		t.Fatalf("batch of an expired id's producer: %v", br)
	}
	if y := newTx(a, "idle", 1000); y.pid <= recent.pid || y.epoch != 0 {
		t.Fatalf("expired id again: %d/%d", y.pid, y.epoch)
	}
}

func TestExpireTxnsIsBounded(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	for i := range maxTxnExpirePerEntry + 5 {
		x := newTx(a, fmt.Sprint("tx", i), 1000)
		x.add(parts(id(1), 0))
	}
	now := a.now + 1000
	r := a.apply(&pb.Command{NowMs: now, Op: &pb.Command_ExpireTxns{ExpireTxns: &pb.ExpireTxnsCommand{ExpirationMs: 1}}})
	if !r.More || head(t, a.s, id(1), 0).NextOffset != maxTxnExpirePerEntry {
		t.Fatalf("first expiry: more %v, head %v", r.More, head(t, a.s, id(1), 0))
	}
	r = a.apply(&pb.Command{NowMs: now, Op: &pb.Command_ExpireTxns{ExpireTxns: &pb.ExpireTxnsCommand{}}})
	if r.More || head(t, a.s, id(1), 0).NextOffset != maxTxnExpirePerEntry+5 {
		t.Fatalf("second expiry: more %v, head %v", r.More, head(t, a.s, id(1), 0))
	}
	if due, _ := a.s.TxnDue(now + 1_000_000); due {
		t.Fatal("still due")
	}
}

// --- topics deleted under a transaction ----------------------------------------------

func TestTxnSurvivesTopicDeletion(t *testing.T) {
	for _, sameBatch := range []bool{false, true} {
		t.Run(fmt.Sprint("same batch ", sameBatch), func(t *testing.T) {
			a := newApplier(t)
			a.apply(createTopic("a", id(1), 1, nil))
			a.apply(createTopic("b", id(2), 1, nil))
			x := newTx(a, "tx", txnTimeout)
			x.add(parts(id(1), 0), "g")
			x.add(parts(id(2), 0))
			x.produce(id(1), 0, 2)
			x.produce(id(2), 0, 1)
			a.apply(x.offsetsCmd(x.epoch, "g", &pb.CommittedOffset{TopicId: id(1), Partition: 0, Offset: 4}, &pb.CommittedOffset{TopicId: id(2), Partition: 0, Offset: 5}))
			del := &pb.Command{Op: &pb.Command_DeleteTopics{DeleteTopics: &pb.DeleteTopicsCommand{Topics: []*pb.TopicRef{{Name: "a"}}}}}
			end := x.endCmd(x.epoch, true)
			if sameBatch {
				for _, c := range []*pb.Command{del, end} {
					c.Version, c.NowMs = CommandVersion, a.now
				}
				rs, err := a.s.ApplyBatch([]Entry{{Index: a.index + 1, Cmd: del}, {Index: a.index + 2, Cmd: end}})
				a.index += 2
				if err != nil || rs[0].Topics[0].Error != 0 || rs[1].Err != nil {
					t.Fatalf("delete and end: %v %v", rs, err)
				}
			} else {
				a.apply(del)
				if e := a.apply(end).Err; e != nil {
					t.Fatalf("end after delete: %v", e)
				}
			}
			if rec := txnRecord(t, a.s, "tx"); rec.State != pb.TxnState_TXN_COMPLETE_COMMIT {
				t.Fatalf("record: %v", rec)
			}
			lk := lookup(t, a.s, id(2), 0, 0, 0)
			if len(lk.Entries) != 2 || lk.Head.StableOffset() != 2 {
				t.Fatalf("the other topic: %v", lk)
			}
			wantMarker(t, lk.Entries[1], 1, pb.MarkerCommit, x.pid, x.epoch)
			if offs, _ := a.s.Offsets("g", nil); len(offs) != 1 || !bytes.Equal(offs[0].TopicId, id(2)) || offs[0].Offset != 5 {
				t.Fatalf("offsets: %v", offs)
			}
			if _, found, _ := a.s.Producers(id(1), 0); found {
				t.Fatal("producers of a deleted topic")
			}
			// The id goes on: a recreated topic of the same name is a new partition.
			a.apply(createTopic("a", id(3), 1, nil))
			x.add(parts(id(3), 0))
			if br := x.produce(id(3), 0, 1); br.Error != 0 || br.BaseOffset != 0 {
				t.Fatalf("batch to the recreated topic: %v", br)
			}
			x.end(false)
			if lk := lookup(t, a.s, id(3), 0, 0, 2); lk.Head.StableOffset() != 2 || len(lk.Aborted) != 1 {
				t.Fatalf("recreated topic: %v", lk)
			}
			digest(t, a.s) // the apply cache agrees with Pebble
		})
	}
}

// --- the index encoding --------------------------------------------------------------

func TestMarkerEncoding(t *testing.T) {
	key := indexKey(id(4), 3, 77)
	for _, e := range []*pb.IndexEntry{
		{Marker: pb.MarkerCommit, ProducerId: 0, ProducerEpoch: 0, MaxTimestamp: 0},
		{Marker: pb.MarkerAbort, ProducerId: math.MaxInt64, ProducerEpoch: math.MaxInt16, MaxTimestamp: -1},
		{Marker: pb.MarkerCommit, ProducerId: 12345, ProducerEpoch: 3, MaxTimestamp: 1_700_000_000_000},
	} {
		v := encodeIndexValue(e)
		if v[0] != markerValueVersion {
			t.Fatalf("version %d", v[0])
		}
		got, err := decodeIndexEntry(key, v)
		if err != nil {
			t.Fatal(err)
		}
		want := proto.Clone(e).(*pb.IndexEntry)
		want.TopicId, want.Partition, want.BaseOffset, want.LastOffset, want.BatchCount, want.RecordCount = id(4), 3, 77, 77, 1, 1
		if !proto.Equal(got, want) {
			t.Fatalf("round trip: %v, want %v", got, want)
		}
	}
	good := encodeIndexValue(&pb.IndexEntry{Marker: pb.MarkerAbort, ProducerId: 5, ProducerEpoch: 2, MaxTimestamp: 9})
	bad := map[string][]byte{
		"marker 3":      append([]byte{markerValueVersion, 3}, good[2:]...),
		"marker 0":      append([]byte{markerValueVersion, 0}, good[2:]...),
		"trailing byte": append(slices.Clone(good), 0),
		"truncated":     good[:len(good)-1],
		"epoch 32768":   binary.AppendVarint(binary.AppendUvarint(binary.AppendVarint([]byte{markerValueVersion, 1}, 5), 1<<15), 9),
		"only header":   {markerValueVersion, 1},
		"version 3":     append([]byte{3}, good[1:]...),
	}
	for name, v := range bad {
		if _, err := decodeIndexEntry(key, v); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := decodeIndexEntry(key[:len(key)-1], good); err == nil {
		t.Error("short key: decoded")
	}
}

func FuzzDecodeIndexEntry(f *testing.F) {
	key := indexKey(id(4), 3, 77)
	f.Add(key, encodeIndexValue(&pb.IndexEntry{Marker: pb.MarkerAbort, ProducerId: 5, ProducerEpoch: 2, MaxTimestamp: 9}))
	f.Add(key, encodeIndexValue(&pb.IndexEntry{BaseOffset: 70, LastOffset: 77, SegmentId: id(9), Position: 100, Length: 50,
		MaxTimestamp: 1_700_000_000_000, BatchCount: 2, RecordCount: 8, Flags: 1}))
	f.Add(key, []byte{markerValueVersion, 1, 0})
	f.Add(key, []byte{indexValueVersion})
	f.Add(key[:5], []byte{})
	f.Add(key, encodeIndexValue(&pb.IndexEntry{BaseOffset: 10, LastOffset: 77, SegmentId: id(8), Position: 0, Length: 4 << 20,
		MaxTimestamp: 1_700_000_000_000, BatchCount: 9, RecordCount: 30, Flags: 1, Level: 2, CleanedMs: 1_700_000_000_500}))
	f.Fuzz(func(t *testing.T, key, val []byte) {
		e, err := decodeIndexEntry(key, val)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same entry.
		again, err := decodeIndexEntry(key, encodeIndexValue(e))
		if err != nil || !proto.Equal(again, e) {
			t.Fatalf("re-encoding %v: %v, %v", e, again, err)
		}
		if e.Marker != 0 && (e.BaseOffset != e.LastOffset || len(e.SegmentId) != 0) {
			t.Fatalf("marker entry %v", e)
		}
	})
}

// A topic id that is not 16 bytes names no partition, even when its first 16
// bytes are a topic's: it must not reach keys built for 16-byte ids.
func TestTxnMalformedTopicIDs(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	produce(a, id(1), 0, plain(1)) // the head is in the apply cache
	x := newTx(a, "tx", txnTimeout)
	long := append(id(1), 0, 0, 0, 0)
	for _, tid := range [][]byte{long, id(1)[:15], nil} {
		r := x.addAt(x.epoch, []*pb.TxnPartition{{TopicId: tid, Partition: 0}})
		if r.Partitions[0].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
			t.Fatalf("add of topic id %x: %v", tid, r)
		}
	}
	if r := x.addAt(x.epoch, []*pb.TxnPartition{{TopicId: id(1), Partition: -1}}); r.Partitions[0].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("add of partition -1: %v", r)
	}
	x.add(nil, "g")
	r := a.apply(x.offsetsCmd(x.epoch, "g", &pb.CommittedOffset{TopicId: long, Partition: 0, Offset: 1}))
	if r.Err != nil || r.Offsets[0].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("txn offset commit of a long topic id: %+v", r)
	}
	x.end(true)
	if offs, _ := a.s.Offsets("g", nil); len(offs) != 0 {
		t.Fatalf("offsets: %v", offs)
	}
	checkContiguous(t, a.s, id(1), 0)
}

// A chunk refused whole (its batch sizes do not add up to its length) must leave
// nothing of the transactions its batches would have opened.
func TestTxnRefusedChunkLeavesNoOpenTxn(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	z, ta, tb := newTx(a, "z", txnTimeout), newTx(a, "a", txnTimeout), newTx(a, "b", txnTimeout)
	z.add(parts(id(1), 0))
	bad := chunkOf(id(1), 0, z.batch(id(1), 0, 1))
	bad.Length = 30
	if r := a.apply(commit(nextSeg(a), bad)); r.Commits[0].Chunks[0].Error != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("chunk of the wrong length: %v", r.Commits[0].Chunks[0])
	}
	z.end(false)                   // marker 0, no data
	produce(a, id(1), 0, plain(1)) // 1
	ta.add(parts(id(1), 0))
	tb.add(parts(id(1), 0))
	ta.produce(id(1), 0, 1) // 2
	tb.produce(id(1), 0, 1) // 3
	ta.end(true)            // 4
	if h := head(t, a.s, id(1), 0); h.StableOffset() != 3 || h.OpenTxns != 1 {
		t.Fatalf("LSO with b open from 3: %v", h)
	}
	tb.end(true) // 5
	if h := head(t, a.s, id(1), 0); h.StableOffset() != 6 || h.OpenTxns != 0 {
		t.Fatalf("head: %v", h)
	}
}

// TxnBatch applies its commands in order, each with its own result, as if each
// had its own entry; anything but AddToTxn, EndTxn and TxnOffsetCommit is refused
// alone.
func TestTxnBatch(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	x, y := newTx(a, "x", txnTimeout), newTx(a, "y", txnTimeout)
	y.add(parts(id(1), 0))
	y.produce(id(1), 0, 1) // 0
	ops := []*pb.Command{
		x.addCmd(x.epoch, parts(id(1), 0), []string{"g"}),
		x.offsetsCmd(x.epoch, "g", &pb.CommittedOffset{TopicId: id(1), Partition: 0, Offset: 7}),
		y.endCmd(y.epoch, false),                                    // marker 1
		createTopic("u", id(2), 1, nil),                             // refused
		{Op: &pb.Command_TxnBatch{TxnBatch: &pb.TxnBatchCommand{}}}, // refused
		x.endCmd(x.epoch, true),                                     // marker 2
		x.endCmd(x.epoch+1, true),                                   // fenced
		y.offsetsCmd(y.epoch, "g"),                                  // y's transaction ended
	}
	r := a.apply(&pb.Command{Op: &pb.Command_TxnBatch{TxnBatch: &pb.TxnBatchCommand{Ops: ops}}})
	if r.Err != nil || len(r.Batch) != len(ops) {
		t.Fatalf("txn batch: %+v", r)
	}
	want := []pb.ErrorCode{0, 0, 0, pb.ErrorCode_INVALID_REQUEST, pb.ErrorCode_INVALID_REQUEST, 0, pb.ErrorCode_PRODUCER_FENCED, pb.ErrorCode_INVALID_TXN_STATE}
	for i, w := range want {
		if got := errCode(r.Batch[i].Err); got != w {
			t.Errorf("op %d: %v, want %v", i, r.Batch[i].Err, w)
		}
	}
	if ta := r.Batch[0].TxnAdds; len(ta) != 1 || ta[0].Error != 0 || r.Batch[1].Offsets[0].Error != 0 {
		t.Fatalf("op results: %v %v", r.Batch[0], r.Batch[1])
	}
	lk := lookup(t, a.s, id(1), 0, 0, 3)
	if len(lk.Entries) != 3 || lk.Head.StableOffset() != 3 || len(lk.Aborted) != 1 || lk.Aborted[0].ProducerId != y.pid {
		t.Fatalf("partition: %v", lk)
	}
	wantMarker(t, lk.Entries[1], 1, pb.MarkerAbort, y.pid, y.epoch)
	wantMarker(t, lk.Entries[2], 2, pb.MarkerCommit, x.pid, x.epoch)
	if offs, _ := a.s.Offsets("g", nil); len(offs) != 1 || offs[0].Offset != 7 {
		t.Fatalf("offsets: %v", offs)
	}
	if res, _, _ := a.s.Topics([]*pb.TopicRef{{Name: "u"}}); res[0].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("a refused op created a topic: %v", res)
	}
}
