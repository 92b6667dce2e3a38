package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Transactions: the transaction coordinator's state, and what ending a transaction
// does to the partitions and groups in it.
//
// A transactional id has one TransactionRecord: its producer id and epoch, and the
// open transaction's partitions and groups. InitProducerId bumps the epoch (fencing
// older instances, aborting what they left open); AddPartitionsToTxn and
// AddOffsetsToTxn open a transaction and add to it; TxnOffsetCommit keeps offsets
// aside (pending) until the end; EndTxn ends it in one Raft entry: every partition in
// it gets a control record (marker) at its own offset, pending offsets become the
// groups' committed offsets on commit and are dropped on abort. Because ending is a
// single entry, there are no Prepare states and no markers to retry: a transaction
// is open or complete, everywhere at once.
//
// Per partition the state keeps what a reader needs: the open transactions' first
// offsets (the last stable offset is the lowest of them, or the high watermark),
// and an index of aborted transactions, so read_committed fetches return the
// aborted list for their range.

// Keys under prefixTxn.
const (
	txnRecordKey   byte = 0x01 // transactional id -> pb.TransactionRecord
	txnDeadlineKey byte = 0x02 // deadline ms (8, ordered) transactional id -> empty: open transactions by timeout
	txnPendingKey  byte = 0x03 // producer id (8) group length (2) group topic id (16) partition (4) -> pb.CommittedOffset
	txnUnstableKey byte = 0x04 // group length (2) group topic id (16) partition (4) producer id (8) -> empty
)

// Bounds on transactions, so one request cannot make an entry unbounded.
const (
	maxTxnIDLen        = 1 << 10
	maxTxnPartitions   = 10_000 // partitions in one transaction
	maxTxnGroups       = 100    // groups in one transaction
	maxTxnAddsPerEntry = 10_000
	// maxTxnExpirePerEntry bounds the transactions one ExpireTxns aborts.
	maxTxnExpirePerEntry = 100
)

func txnKey(id string) []byte { return append([]byte{prefixTxn, txnRecordKey}, id...) }

func txnDeadline(deadline int64, id string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixTxn, txnDeadlineKey}, orderedInt64(deadline))
	return append(k, id...)
}

func groupPart(group string, topic []byte, partition int32) []byte {
	k := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(group)+20), uint16(len(group)))
	k = append(k, group...)
	k = append(k, topic...)
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

func txnPendingPrefix(pid int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixTxn, txnPendingKey}, uint64(pid))
}

func txnPending(pid int64, group string, topic []byte, partition int32) []byte {
	return append(txnPendingPrefix(pid), groupPart(group, topic, partition)...)
}

func txnUnstable(group string, topic []byte, partition int32, pid int64) []byte {
	k := append([]byte{prefixTxn, txnUnstableKey}, groupPart(group, topic, partition)...)
	return binary.BigEndian.AppendUint64(k, uint64(pid))
}

// openTxnKey orders a partition's open transactions by first offset.
func openTxnKey(topic []byte, partition int32, first, pid int64) []byte {
	k := binary.BigEndian.AppendUint64(tpKey(prefixOpenTxn, topic, partition), uint64(first))
	return binary.BigEndian.AppendUint64(k, uint64(pid))
}

func abortedKey(topic []byte, partition int32, last int64) []byte {
	return binary.BigEndian.AppendUint64(tpKey(prefixAborted, topic, partition), uint64(last))
}

// fencedCode is the refusal of a request from an epoch older than the current one:
// the epoch just before the coordinator's own bump (a timeout abort) may recover
// (INVALID_PRODUCER_EPOCH, KIP-588); anything older was fenced by a newer instance.
func fencedCode(rec *pb.TransactionRecord, epoch int32) pb.ErrorCode {
	if rec.LastEpoch >= 0 && epoch == rec.LastEpoch && rec.State == pb.TxnState_TXN_COMPLETE_ABORT {
		return pb.ErrorCode_INVALID_PRODUCER_EPOCH
	}
	return pb.ErrorCode_PRODUCER_FENCED
}

// partitionHead is getHead for ids from requests: the cache keys heads by the
// first 16 bytes of the topic id, so an id of another length must not reach it
// (it would find a real topic's head and build keys of the wrong shape).
func (t *txn) partitionHead(topic []byte, partition int32) (*pb.PartitionHead, error) {
	if len(topic) != 16 || partition < 0 {
		return nil, nil
	}
	return t.getHead(topic, partition)
}

// txnFor loads a transactional id's record and checks the producer id and epoch.
func (t *txn) txnFor(id string, pid int64, epoch int32) (*pb.TransactionRecord, *Error, error) {
	if id == "" || len(id) > maxTxnIDLen {
		return nil, refuse(pb.ErrorCode_INVALID_REQUEST, "transactional id must be 1 to %d bytes", maxTxnIDLen), nil
	}
	rec := &pb.TransactionRecord{}
	found, err := t.getProto(txnKey(id), rec)
	switch {
	case err != nil:
		return nil, nil, err
	case !found || rec.ProducerId != pid:
		return nil, refuse(pb.ErrorCode_INVALID_PRODUCER_ID_MAPPING, "transactional id %q does not have producer id %d", id, pid), nil
	case epoch != rec.ProducerEpoch:
		return nil, refuse(fencedCode(rec, epoch), "transactional id %q is at epoch %d, not %d", id, rec.ProducerEpoch, epoch), nil
	}
	return rec, nil, nil
}

func (t *txn) saveTxn(rec *pb.TransactionRecord) error {
	return t.setProto(txnKey(rec.TransactionalId), rec)
}

// setProducerEpoch keeps a transactional producer's ProducerRecord (which produce
// checks) at the transaction record's epoch.
func (t *txn) setProducerEpoch(rec *pb.TransactionRecord, issued int64) error {
	return t.setProto(producerKey(rec.ProducerId), &pb.ProducerRecord{ProducerId: rec.ProducerId,
		Epoch: rec.ProducerEpoch, IssuedMs: issued, TransactionalId: rec.TransactionalId})
}

// initTxnProducer is InitProducerId with a transactional id.
func (t *txn) initTxnProducer(cmd *pb.InitProducerCommand, now int64) (*Result, error) {
	id := cmd.TransactionalId
	if len(id) > maxTxnIDLen {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "transactional id must be at most %d bytes", maxTxnIDLen)}, nil
	}
	if cmd.TransactionTimeoutMs <= 0 || cmd.MaxTransactionTimeoutMs > 0 && cmd.TransactionTimeoutMs > cmd.MaxTransactionTimeoutMs {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_TRANSACTION_TIMEOUT, "transaction timeout %d ms is not in [1, %d]", cmd.TransactionTimeoutMs, cmd.MaxTransactionTimeoutMs)}, nil
	}
	rec := &pb.TransactionRecord{}
	found, err := t.getProto(txnKey(id), rec)
	if err != nil {
		return nil, err
	}
	if !found {
		p, err := t.newProducer(now, id)
		if err != nil {
			return nil, err
		}
		rec = &pb.TransactionRecord{TransactionalId: id, ProducerId: p.ProducerId, ProducerEpoch: 0, LastEpoch: -1,
			State: pb.TxnState_TXN_EMPTY, TimeoutMs: cmd.TransactionTimeoutMs, UpdatedMs: now}
		if err := t.saveTxn(rec); err != nil {
			return nil, err
		}
		return &Result{Producer: p}, nil
	}
	recovering := cmd.ProducerId >= 0
	if recovering && cmd.ProducerEpoch < 0 {
		// Kafka's rule: both or neither. (pid, -1) must not pass as the epoch
		// before a bump while last_epoch is -1.
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "producer id %d without an epoch", cmd.ProducerId)}, nil
	}
	if recovering && (cmd.ProducerId != rec.ProducerId || cmd.ProducerEpoch != rec.ProducerEpoch && cmd.ProducerEpoch != rec.LastEpoch) {
		return &Result{Err: refuse(pb.ErrorCode_PRODUCER_FENCED, "transactional id %q is producer %d epoch %d", id, rec.ProducerId, rec.ProducerEpoch)}, nil
	}
	if recovering && cmd.ProducerEpoch != rec.ProducerEpoch {
		// The epoch before the last bump: a retry of a KIP-360 bump whose answer
		// was lost, or the recovery of the producer whose transaction timed out.
		// Nobody holds the current epoch, so it is the answer, unchanged (as
		// Kafka's): bumping again would make a second retry PRODUCER_FENCED.
		return &Result{Producer: &pb.ProducerRecord{ProducerId: rec.ProducerId, Epoch: rec.ProducerEpoch, IssuedMs: now, TransactionalId: id}}, nil
	}
	if rec.State == pb.TxnState_TXN_ONGOING {
		// An older instance left a transaction open: it ends now, aborted.
		if err := t.finishTxn(rec, false, now); err != nil {
			return nil, err
		}
	}
	issued := now
	prior := rec.ProducerEpoch
	if rec.ProducerEpoch >= math.MaxInt16-1 {
		// The epoch is exhausted: the id gets a new producer id. The old one is
		// left to expire like an idempotent producer's.
		if err := t.setProto(producerKey(rec.ProducerId), &pb.ProducerRecord{ProducerId: rec.ProducerId, Epoch: rec.ProducerEpoch, IssuedMs: now}); err != nil {
			return nil, err
		}
		p, err := t.newProducer(now, id)
		if err != nil {
			return nil, err
		}
		rec.ProducerId, rec.ProducerEpoch, prior = p.ProducerId, 0, -1
	} else {
		rec.ProducerEpoch++
	}
	rec.LastEpoch = -1
	if recovering {
		// A KIP-360 bump: a retry of it (the answer lost) carries the epoch before.
		rec.LastEpoch = prior
	}
	rec.State, rec.TimeoutMs, rec.UpdatedMs, rec.StartMs = pb.TxnState_TXN_EMPTY, cmd.TransactionTimeoutMs, now, 0
	rec.Partitions, rec.Groups = nil, nil
	if err := t.saveTxn(rec); err != nil {
		return nil, err
	}
	if err := t.setProducerEpoch(rec, issued); err != nil {
		return nil, err
	}
	return &Result{Producer: &pb.ProducerRecord{ProducerId: rec.ProducerId, Epoch: rec.ProducerEpoch, IssuedMs: issued, TransactionalId: id}}, nil
}

// addToTxn applies AddPartitionsToTxn and AddOffsetsToTxn, each TxnAdd on its own.
func (t *txn) addToTxn(cmd *pb.AddToTxnCommand, now int64) (*Result, error) {
	if len(cmd.Txns) > maxTxnAddsPerEntry {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d transactions per request", maxTxnAddsPerEntry)}, nil
	}
	res := &Result{TxnAdds: make([]*pb.TxnAddResult, 0, len(cmd.Txns))}
	for _, a := range cmd.Txns {
		r, err := t.addOne(a, now)
		if err != nil {
			return nil, err
		}
		res.TxnAdds = append(res.TxnAdds, r)
	}
	return res, nil
}

func (t *txn) addOne(a *pb.TxnAdd, now int64) (*pb.TxnAddResult, error) {
	r := &pb.TxnAddResult{TransactionalId: a.TransactionalId}
	partResults := func(code pb.ErrorCode) {
		r.Partitions = r.Partitions[:0]
		for _, p := range a.Partitions {
			r.Partitions = append(r.Partitions, &pb.TxnPartition{TopicId: p.TopicId, Partition: p.Partition, Error: code})
		}
	}
	rec, refusal, err := t.txnFor(a.TransactionalId, a.ProducerId, a.ProducerEpoch)
	if err != nil {
		return nil, err
	}
	if refusal == nil && (len(a.Partitions) > maxTxnPartitions || len(a.Groups) > maxTxnGroups) {
		// Before any work on them: the bound below only counts what is new.
		refusal = refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d partitions and %d groups in a transaction", maxTxnPartitions, maxTxnGroups)
	}
	if refusal != nil {
		r.Error = refusal.Code
		partResults(refusal.Code)
		return r, nil
	}
	// Every partition must exist, or none is added.
	failed := false
	for _, p := range a.Partitions {
		h, err := t.partitionHead(p.TopicId, p.Partition)
		if err != nil {
			return nil, err
		}
		code := pb.ErrorCode_NONE
		if h == nil {
			code, failed = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION, true
		}
		r.Partitions = append(r.Partitions, &pb.TxnPartition{TopicId: p.TopicId, Partition: p.Partition, Error: code})
	}
	for _, g := range a.Groups {
		r.Groups = append(r.Groups, &pb.GroupResult{Group: g})
		if validGroup(g) != nil {
			r.Groups[len(r.Groups)-1].Error = pb.ErrorCode_INVALID_REQUEST
			failed = true
		}
	}
	if failed {
		for _, p := range r.Partitions {
			if p.Error == pb.ErrorCode_NONE {
				p.Error = pb.ErrorCode_OPERATION_NOT_ATTEMPTED
			}
		}
		return r, nil
	}
	opening := rec.State != pb.TxnState_TXN_ONGOING
	if opening {
		rec.Partitions, rec.Groups = nil, nil
	}
	// A set of the transaction's partitions: adding n partitions one request at a
	// time must not cost n squared.
	in := make(map[string]bool, len(rec.Partitions)+len(a.Partitions))
	pk := func(p *pb.TxnPartition) string {
		return string(binary.BigEndian.AppendUint32(bytes.Clone(p.TopicId), uint32(p.Partition)))
	}
	for _, p := range rec.Partitions {
		in[pk(p)] = true
	}
	if a.VerifyOnly {
		for i, p := range a.Partitions {
			if opening || !in[pk(p)] {
				r.Partitions[i].Error = pb.ErrorCode_INVALID_TXN_STATE
			}
		}
		return r, nil
	}
	for _, p := range a.Partitions {
		if k := pk(p); !in[k] {
			in[k] = true
			rec.Partitions = append(rec.Partitions, &pb.TxnPartition{TopicId: p.TopicId, Partition: p.Partition})
		}
	}
	for _, g := range a.Groups {
		if !slices.Contains(rec.Groups, g) {
			rec.Groups = append(rec.Groups, g)
		}
	}
	if len(rec.Partitions) > maxTxnPartitions || len(rec.Groups) > maxTxnGroups {
		// Refused whole; the transaction keeps what it had (rec is not saved).
		r.Error = pb.ErrorCode_INVALID_REQUEST
		partResults(pb.ErrorCode_INVALID_REQUEST)
		for _, g := range r.Groups {
			g.Error = pb.ErrorCode_INVALID_REQUEST
		}
		return r, nil
	}
	if opening {
		// Written only now that the add is accepted: a deadline left by a
		// refused add would abort a later transaction of the id early.
		rec.State, rec.StartMs = pb.TxnState_TXN_ONGOING, now
		if err := t.set(txnDeadline(now+int64(rec.TimeoutMs), rec.TransactionalId), nil); err != nil {
			return nil, err
		}
	}
	rec.UpdatedMs = now
	return r, t.saveTxn(rec)
}

// endTxn applies EndTxn.
func (t *txn) endTxn(cmd *pb.EndTxnCommand, now int64) (*Result, error) {
	rec, refusal, err := t.txnFor(cmd.TransactionalId, cmd.ProducerId, cmd.ProducerEpoch)
	if err != nil {
		return nil, err
	}
	if refusal != nil {
		return &Result{Err: refusal}, nil
	}
	switch rec.State {
	case pb.TxnState_TXN_ONGOING:
		if err := t.finishTxn(rec, cmd.Commit, now); err != nil {
			return nil, err
		}
		return &Result{}, t.saveTxn(rec)
	case pb.TxnState_TXN_COMPLETE_COMMIT:
		if cmd.Commit {
			return &Result{}, nil // a retry of the commit that ended it
		}
	case pb.TxnState_TXN_COMPLETE_ABORT:
		if !cmd.Commit {
			return &Result{}, nil
		}
	}
	return &Result{Err: refuse(pb.ErrorCode_INVALID_TXN_STATE, "transaction of %q is %s; cannot %s", rec.TransactionalId, rec.State, map[bool]string{true: "commit", false: "abort"}[cmd.Commit])}, nil
}

// finishTxn ends rec's open transaction: a marker in every partition, the pending
// offsets applied (commit) or dropped. The caller saves rec.
func (t *txn) finishTxn(rec *pb.TransactionRecord, commit bool, now int64) error {
	marker := pb.MarkerAbort
	if commit {
		marker = pb.MarkerCommit
	}
	for _, p := range rec.Partitions {
		if err := t.writeMarker(rec, p.TopicId, p.Partition, marker, now); err != nil {
			return err
		}
	}
	// Offsets committed in the transaction.
	lo := txnPendingPrefix(rec.ProducerId)
	var keys [][]byte
	var offs []*pb.CommittedOffset
	var groups []string
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		rest := k[len(lo):]
		if len(rest) < 2 || len(rest) != 2+int(binary.BigEndian.Uint16(rest))+20 {
			it.Close()
			return fmt.Errorf("%w: pending offset key %x", ErrCorrupt, k)
		}
		var o pb.CommittedOffset
		if err := proto.Unmarshal(it.Value(), &o); err != nil {
			it.Close()
			return fmt.Errorf("%w: %x: %v", ErrCorrupt, k, err)
		}
		keys = append(keys, append([]byte(nil), k...))
		offs = append(offs, &o)
		groups = append(groups, string(rest[2:2+binary.BigEndian.Uint16(rest)]))
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	for i, k := range keys {
		o, g := offs[i], groups[i]
		if err := t.del(k); err != nil {
			return err
		}
		if err := t.del(txnUnstable(g, o.TopicId, o.Partition, rec.ProducerId)); err != nil {
			return err
		}
		if !commit {
			continue
		}
		if h, err := t.partitionHead(o.TopicId, o.Partition); err != nil {
			return err
		} else if h == nil {
			continue // the topic went away meanwhile
		}
		o.CommitMs = now
		if err := t.setProto(groupOffsetKey(g, o.TopicId, o.Partition), o); err != nil {
			return err
		}
	}
	if err := t.del(txnDeadline(rec.StartMs+int64(rec.TimeoutMs), rec.TransactionalId)); err != nil {
		return err
	}
	rec.State = pb.TxnState_TXN_COMPLETE_ABORT
	if commit {
		rec.State = pb.TxnState_TXN_COMPLETE_COMMIT
	}
	rec.Partitions, rec.Groups, rec.UpdatedMs = nil, nil, now
	return nil
}

// writeMarker appends a control record to a partition at its next offset, closes
// the producer's open transaction there, and indexes an abort.
func (t *txn) writeMarker(rec *pb.TransactionRecord, topic []byte, partition int32, marker int32, now int64) error {
	cur, err := t.partitionHead(topic, partition)
	if err != nil || cur == nil {
		return err // a deleted topic needs no marker
	}
	head := proto.Clone(cur).(*pb.PartitionHead)
	at := head.NextOffset
	st := &pb.ProducerPartition{Epoch: -1}
	found, err := t.getProto(producerPartitionKey(rec.ProducerId, topic, partition), st)
	if err != nil {
		return err
	}
	hadData := found && st.TxnOpen
	first := st.TxnFirstOffset
	if hadData {
		st.TxnOpen, st.TxnFirstOffset = false, 0
		if err := t.setProto(producerPartitionKey(rec.ProducerId, topic, partition), st); err != nil {
			return err
		}
		if err := t.del(openTxnKey(topic, partition, first, rec.ProducerId)); err != nil {
			return err
		}
		head.OpenTxns--
		if head.OpenTxns <= 0 {
			head.OpenTxns, head.FirstUnstable = 0, 0
		} else if head.FirstUnstable, err = t.firstOpen(topic, partition); err != nil {
			return err
		}
	}
	entry := &pb.IndexEntry{BaseOffset: at, LastOffset: at, Marker: marker, ProducerId: rec.ProducerId,
		ProducerEpoch: rec.ProducerEpoch, MaxTimestamp: now, BatchCount: 1, RecordCount: 1}
	if err := t.set(indexKey(topic, partition, at), encodeIndexValue(entry)); err != nil {
		return err
	}
	head.NextOffset = at + 1
	if err := t.putHead(topic, partition, head); err != nil {
		return err
	}
	if marker == pb.MarkerAbort && hadData {
		ab := &pb.AbortedTxn{ProducerId: rec.ProducerId, FirstOffset: first, LastOffset: at, StableAfter: head.StableOffset()}
		if err := t.setProto(abortedKey(topic, partition, at), ab); err != nil {
			return err
		}
	}
	entry.TopicId, entry.Partition, entry.LastStableOffset = topic, partition, head.StableOffset()
	t.ev.Entries = append(t.ev.Entries, entry)
	t.watchable = true
	return nil
}

// firstOpen is the lowest first offset of the partition's open transactions.
func (t *txn) firstOpen(topic []byte, partition int32) (int64, error) {
	lo := tpKey(prefixOpenTxn, topic, partition)
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return 0, fmt.Errorf("state: %w", err)
	}
	defer it.Close()
	if !it.First() {
		return 0, fmt.Errorf("%w: partition %x/%d counts open transactions but has none", ErrCorrupt, topic, partition)
	}
	k := it.Key()
	if len(k) != len(lo)+16 {
		return 0, fmt.Errorf("%w: open transaction key %x", ErrCorrupt, k)
	}
	return int64(binary.BigEndian.Uint64(k[len(lo):])), nil
}

// txnOffsetCommit applies TxnOffsetCommit: the offsets wait for the transaction.
func (t *txn) txnOffsetCommit(cmd *pb.TxnOffsetCommitCommand, now int64) (*Result, error) {
	if e := validGroup(cmd.Group); e != nil {
		return &Result{Err: e}, nil
	}
	if len(cmd.Offsets) > maxOffsetsPerCommit {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d offsets per commit", maxOffsetsPerCommit)}, nil
	}
	rec, refusal, err := t.txnFor(cmd.TransactionalId, cmd.ProducerId, cmd.ProducerEpoch)
	if err != nil {
		return nil, err
	}
	if refusal != nil {
		return &Result{Err: refusal}, nil
	}
	if rec.State != pb.TxnState_TXN_ONGOING || !slices.Contains(rec.Groups, cmd.Group) {
		// KIP-890 part 1: the group must have been added (AddOffsetsToTxn).
		return &Result{Err: refuse(pb.ErrorCode_INVALID_TXN_STATE, "group %q is not in the open transaction of %q", cmd.Group, cmd.TransactionalId)}, nil
	}
	res := &Result{Offsets: make([]*pb.OffsetResult, 0, len(cmd.Offsets))}
	for _, o := range cmd.Offsets {
		r := &pb.OffsetResult{TopicId: o.TopicId, Partition: o.Partition}
		res.Offsets = append(res.Offsets, r)
		// The apply cache, not t.b: heads reach the batch only when it ends, and a
		// topic created earlier in the batch must exist here too.
		if h, err := t.partitionHead(o.TopicId, o.Partition); err != nil {
			return nil, err
		} else if h == nil {
			r.Error = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION
			continue
		}
		if len(o.Metadata) > maxOffsetMetadata {
			r.Error = pb.ErrorCode_INVALID_REQUEST
			continue
		}
		p := &pb.CommittedOffset{TopicId: o.TopicId, Partition: o.Partition, Offset: o.Offset,
			LeaderEpoch: o.LeaderEpoch, Metadata: o.Metadata, CommitMs: now}
		if err := t.setProto(txnPending(rec.ProducerId, cmd.Group, o.TopicId, o.Partition), p); err != nil {
			return nil, err
		}
		if err := t.set(txnUnstable(cmd.Group, o.TopicId, o.Partition, rec.ProducerId), nil); err != nil {
			return nil, err
		}
	}
	rec.UpdatedMs = now
	return res, t.saveTxn(rec)
}

// expireTxns aborts transactions past their timeout, bumping the epoch so the
// producer that left them cannot add to them, and forgets transactional ids unused
// for expirationMs (0: not now).
func (t *txn) expireTxns(expirationMs, now int64) (*Result, error) {
	lo := []byte{prefixTxn, txnDeadlineKey}
	hi := binary.BigEndian.AppendUint64([]byte{prefixTxn, txnDeadlineKey}, orderedInt64(now+1))
	more := false
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	type deadline struct {
		key []byte
		at  int64
		id  string
	}
	var due []deadline
	for valid := it.First(); valid; valid = it.Next() {
		if len(due) == maxTxnExpirePerEntry {
			more = true
			break
		}
		k := it.Key()
		if len(k) < 2+8 {
			it.Close()
			return nil, fmt.Errorf("%w: transaction deadline key %x", ErrCorrupt, k)
		}
		due = append(due, deadline{key: bytes.Clone(k), at: int64(binary.BigEndian.Uint64(k[2:]) ^ 1<<63), id: string(k[2+8:])})
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	markers := 0 // markers this entry writes: bounded like one transaction's
	for i, d := range due {
		rec := &pb.TransactionRecord{}
		found, err := t.getProto(txnKey(d.id), rec)
		if err != nil {
			return nil, err
		}
		if found && i > 0 && markers+len(rec.Partitions) > maxTxnPartitions {
			more = true
			break
		}
		if !found || rec.State != pb.TxnState_TXN_ONGOING || rec.StartMs+int64(rec.TimeoutMs) != d.at {
			// A deadline no open transaction has (none should be left; one
			// left would keep TxnDue true and this bound busy): drop it.
			if err := t.del(d.key); err != nil {
				return nil, err
			}
			continue
		}
		markers += len(rec.Partitions)
		if err := t.finishTxn(rec, false, now); err != nil {
			return nil, err
		}
		if rec.ProducerEpoch < math.MaxInt16-1 {
			rec.LastEpoch = rec.ProducerEpoch
			rec.ProducerEpoch++
			if err := t.setProducerEpoch(rec, now); err != nil {
				return nil, err
			}
		}
		if err := t.saveTxn(rec); err != nil {
			return nil, err
		}
	}
	if expirationMs > 0 && !more {
		cutoff := now - expirationMs
		var drop []*pb.TransactionRecord
		err := scanProtosUnder(t.b, []byte{prefixTxn, txnRecordKey}, func(r *pb.TransactionRecord) error {
			if r.State != pb.TxnState_TXN_ONGOING && r.UpdatedMs <= cutoff && len(drop) < maxExpirePerCommand {
				drop = append(drop, r)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		more = len(drop) == maxExpirePerCommand
		for _, r := range drop {
			if err := t.del(txnKey(r.TransactionalId)); err != nil {
				return nil, err
			}
			// Its producer id goes with it; the partition states expire on their own.
			if err := t.del(producerKey(r.ProducerId)); err != nil {
				return nil, err
			}
		}
	}
	return &Result{More: more}, nil
}

// txnBatch applies transaction coordinator commands in order, each on its own.
func (t *txn) txnBatch(ops []*pb.Command, now int64) (*Result, error) {
	if len(ops) > maxTxnAddsPerEntry {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d commands per batch", maxTxnAddsPerEntry)}, nil
	}
	res := &Result{Batch: make([]*Result, 0, len(ops))}
	for _, op := range ops {
		var r *Result
		var err error
		switch o := op.GetOp().(type) {
		case *pb.Command_AddToTxn:
			r, err = t.addToTxn(o.AddToTxn, now)
		case *pb.Command_EndTxn:
			r, err = t.endTxn(o.EndTxn, now)
		case *pb.Command_TxnOffsetCommit:
			r, err = t.txnOffsetCommit(o.TxnOffsetCommit, now)
		default:
			r = &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "only transaction commands are batched")}
		}
		if err != nil {
			return nil, err
		}
		res.Batch = append(res.Batch, r)
	}
	return res, nil
}

// --- reads -----------------------------------------------------------------------

// abortedIn appends to resp the aborted transactions overlapping [from, upto) of a
// partition: a marker at or after from and a first offset before upto. The search
// walks the abort index from `from` and stops at the first abort after which the
// partition was stable past upto: no transaction aborted later can have data
// before upto.
func abortedIn(r pebble.Reader, topic []byte, partition int32, from, upto int64, limit int) ([]*pb.AbortedTxn, error) {
	prefix := tpKey(prefixAborted, topic, partition)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: abortedKey(topic, partition, max(from, 0)), UpperBound: upperBound(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []*pb.AbortedTxn
	for it.First(); it.Valid(); it.Next() {
		var a pb.AbortedTxn
		if err := proto.Unmarshal(it.Value(), &a); err != nil {
			return nil, fmt.Errorf("%w: aborted txn %x: %v", ErrCorrupt, it.Key(), err)
		}
		if a.FirstOffset < upto {
			if len(out) == limit {
				break
			}
			out = append(out, &a)
		}
		if a.StableAfter >= upto {
			break
		}
	}
	return out, it.Error()
}

// Transactions returns the records of the given transactional ids (nil for unknown
// ones), or with ids empty, every record matching keep.
func (s *State) Transactions(ids []string, keep func(*pb.TransactionRecord) bool) ([]*pb.TransactionRecord, error) {
	var out []*pb.TransactionRecord
	err := s.view(func(r pebble.Reader, _ uint64) error {
		if len(ids) == 0 {
			return scanProtosUnder(r, []byte{prefixTxn, txnRecordKey}, func(rec *pb.TransactionRecord) error {
				if keep == nil || keep(rec) {
					out = append(out, rec)
				}
				return nil
			})
		}
		for _, id := range ids {
			rec := &pb.TransactionRecord{}
			found, err := getProto(r, txnKey(id), rec)
			if err != nil {
				return err
			}
			if !found {
				rec = nil
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// Producers returns a partition's producer states (DescribeProducers); found is
// false for a partition that does not exist.
func (s *State) Producers(topic []byte, partition int32) (producers []*pb.ActiveProducer, found bool, err error) {
	err = s.view(func(r pebble.Reader, _ uint64) error {
		h, err := headOf(r, topic, partition)
		if err != nil || h == nil {
			return err
		}
		found = true
		lo := producersOf(topic, partition)
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
		if err != nil {
			return err
		}
		defer it.Close()
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			if len(k) != len(lo)+8 {
				return fmt.Errorf("%w: producer key %x", ErrCorrupt, k)
			}
			var st pb.ProducerPartition
			if err := proto.Unmarshal(it.Value(), &st); err != nil {
				return fmt.Errorf("%w: %x: %v", ErrCorrupt, k, err)
			}
			ap := &pb.ActiveProducer{ProducerId: int64(binary.BigEndian.Uint64(k[len(lo):])), ProducerEpoch: st.Epoch,
				LastSequence: -1, LastTimestampMs: st.LastMs, TxnStartOffset: -1}
			if n := len(st.Batches); n > 0 {
				ap.LastSequence = st.Batches[n-1].LastSequence
			}
			if st.TxnOpen {
				ap.TxnStartOffset = st.TxnFirstOffset
			}
			producers = append(producers, ap)
		}
		return it.Error()
	})
	return producers, found, err
}

// unstableIn reports, per partition, whether a group has offsets pending in an open
// transaction there (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT).
func unstableIn(r pebble.Reader, group string, partitions []*pb.PartitionRef) ([]bool, error) {
	out := make([]bool, len(partitions))
	if validGroup(group) != nil {
		return out, nil
	}
	for i, p := range partitions {
		lo := append([]byte{prefixTxn, txnUnstableKey}, groupPart(group, p.TopicId, p.Partition)...)
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
		if err != nil {
			return nil, err
		}
		out[i] = it.First()
		if err := it.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Unstable is unstableIn on the current state.
func (s *State) Unstable(group string, partitions []*pb.PartitionRef) (out []bool, err error) {
	err = s.view(func(r pebble.Reader, _ uint64) error {
		out, err = unstableIn(r, group, partitions)
		return err
	})
	return out, err
}

// TxnDue reports whether some open transaction's timeout has passed by now.
func (s *State) TxnDue(now int64) (bool, error) {
	due := false
	err := s.view(func(r pebble.Reader, _ uint64) error {
		lo := []byte{prefixTxn, txnDeadlineKey}
		hi := binary.BigEndian.AppendUint64([]byte{prefixTxn, txnDeadlineKey}, orderedInt64(now+1))
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return err
		}
		due = it.First()
		return it.Close()
	})
	return due, err
}
