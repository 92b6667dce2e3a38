package state

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Idempotent producers: the state issues producer ids (InitProducer) and checks
// every batch of an idempotent producer when its chunk commits, per (producer id,
// partition), as Kafka's log does:
//
//   - an epoch older than the producer's current one is INVALID_PRODUCER_EPOCH;
//   - a batch whose sequences equal one of the producer's last five batches in the
//     partition is a duplicate: it is answered with its original offsets and left
//     out of the index (its bytes stay in the segment, never read);
//   - otherwise its first sequence must follow the last one (or be 0 in a new
//     epoch), or it is OUT_OF_ORDER_SEQUENCE_NUMBER and left out too;
//   - a producer id never issued is UNKNOWN_PRODUCER_ID.
//
// Because the check happens in the Raft state machine, it holds whichever agent a
// retry goes through and however late a paused agent's upload commits.

// Keys under prefixProducer.
const (
	producerNextKey byte = 0x01 // -> uint64: the next producer id to issue
	producerIDKey   byte = 0x02 // producer id (8) -> pb.ProducerRecord
	producerPartKey byte = 0x03 // topic id (16) partition (4) producer id (8) -> pb.ProducerPartition
)

// recentBatches is how many batches per producer and partition are remembered for
// duplicate detection (Kafka's max.in.flight.requests.per.connection bound).
const recentBatches = 5

func producerNext() []byte { return []byte{prefixProducer, producerNextKey} }

func producerKey(pid int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixProducer, producerIDKey}, uint64(pid))
}

// producersOf is the prefix of one partition's producer states (DescribeProducers),
// or with partition < 0 of a topic's.
func producersOf(topic []byte, partition int32) []byte {
	k := append([]byte{prefixProducer, producerPartKey}, topic...)
	if partition < 0 {
		return k
	}
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

func producerPartitionKey(pid int64, topic []byte, partition int32) []byte {
	return binary.BigEndian.AppendUint64(producersOf(topic, partition), uint64(pid))
}

func (t *txn) initProducer(cmd *pb.InitProducerCommand, now int64) (*Result, error) {
	if cmd.GetTransactionalId() != "" {
		return t.initTxnProducer(cmd, now)
	}
	if cmd.GetProducerId() >= 0 {
		var rec pb.ProducerRecord
		ok, err := t.getProto(producerKey(cmd.ProducerId), &rec)
		if err != nil {
			return nil, err
		}
		switch {
		case !ok:
			return &Result{Err: refuse(pb.ErrorCode_UNKNOWN_PRODUCER_ID, "producer id %d was never issued", cmd.ProducerId)}, nil
		case rec.TransactionalId != "":
			// A transactional producer's epoch moves only with its transaction
			// record: the caller gets a new producer id (Kafka always issues
			// one to a producer without a transactional id).
		case cmd.ProducerEpoch != rec.Epoch:
			return &Result{Err: refuse(pb.ErrorCode_INVALID_PRODUCER_EPOCH, "producer %d is at epoch %d, not %d", cmd.ProducerId, rec.Epoch, cmd.ProducerEpoch)}, nil
		case rec.Epoch < math.MaxInt16-1:
			rec.Epoch++
			if err := t.setProto(producerKey(rec.ProducerId), &rec); err != nil {
				return nil, err
			}
			return &Result{Producer: &rec}, nil
		}
		// The epoch is exhausted, or the id is a transactional producer's: a new
		// producer id.
	}
	rec, err := t.newProducer(now, "")
	if err != nil {
		return nil, err
	}
	return &Result{Producer: rec}, nil
}

// newProducer issues the next producer id at epoch 0.
func (t *txn) newProducer(now int64, transactionalID string) (*pb.ProducerRecord, error) {
	var next uint64
	v, ok, err := t.get(producerNext())
	if err != nil {
		return nil, err
	}
	if ok && len(v) == 8 {
		next = binary.BigEndian.Uint64(v)
	}
	rec := &pb.ProducerRecord{ProducerId: int64(next), Epoch: 0, IssuedMs: now, TransactionalId: transactionalID}
	if err := t.set(producerNext(), binary.BigEndian.AppendUint64(nil, next+1)); err != nil {
		return nil, err
	}
	if err := t.setProto(producerKey(rec.ProducerId), rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// producerCheck checks the batches of idempotent producers in one chunk, in order.
type producerCheck struct {
	t         *txn
	topic     []byte
	partition int32
	now       int64
	states    map[int64]*pb.ProducerPartition // loaded or created, written back by flush
	producers map[int64]*pb.ProducerRecord    // issued producers; nil: never issued
	txns      map[int64]bool                  // transactional producers: this partition is in their open transaction
}

func newProducerCheck(t *txn, topic []byte, partition int32, now int64) *producerCheck {
	return &producerCheck{t: t, topic: topic, partition: partition, now: now,
		states: map[int64]*pb.ProducerPartition{}, producers: map[int64]*pb.ProducerRecord{}, txns: map[int64]bool{}}
}

// lastSequence is the sequence of a batch's last record: sequences wrap to 0
// after MaxInt32, as Kafka's do.
func lastSequence(first, records int32) int32 {
	last := int64(first) + int64(records) - 1
	if last > math.MaxInt32 {
		last -= math.MaxInt32 + 1
	}
	return int32(last)
}

func nextSequence(last int32) int32 {
	if last == math.MaxInt32 {
		return 0
	}
	return last + 1
}

// check decides one batch: accepted (no error, not a duplicate), a duplicate with
// its original base offset, or refused with a code. base is where the batch lands
// if accepted; record with accepted() once its offsets are final.
func (c *producerCheck) check(b *pb.BatchInfo) (dupBase int64, dup bool, code pb.ErrorCode, err error) {
	prec, ok := c.producers[b.ProducerId]
	if !ok {
		var rec pb.ProducerRecord
		found, err := c.t.getProto(producerKey(b.ProducerId), &rec)
		if err != nil {
			return 0, false, 0, err
		}
		if found {
			prec = &rec
		}
		c.producers[b.ProducerId] = prec
	}
	epoch := int32(-1)
	if prec != nil {
		epoch = prec.Epoch
	}
	switch {
	case epoch < 0:
		return 0, false, pb.ErrorCode_UNKNOWN_PRODUCER_ID, nil
	case b.ProducerEpoch < epoch:
		return 0, false, pb.ErrorCode_INVALID_PRODUCER_EPOCH, nil
	case b.ProducerEpoch > epoch:
		// An epoch the producer was never given.
		return 0, false, pb.ErrorCode_INVALID_PRODUCER_EPOCH, nil
	case b.BaseSequence < 0:
		return 0, false, pb.ErrorCode_OUT_OF_ORDER_SEQUENCE_NUMBER, nil
	}
	st, err := c.state(b.ProducerId)
	if err != nil {
		return 0, false, 0, err
	}
	last := lastSequence(b.BaseSequence, b.RecordCount)
	if st.Epoch == b.ProducerEpoch {
		for _, rb := range st.Batches {
			if rb.FirstSequence == b.BaseSequence && rb.LastSequence == last {
				return rb.BaseOffset, true, 0, nil
			}
		}
	}
	if b.Transactional {
		// KIP-890 part 1: a transactional batch only for a partition added to
		// the producer's open transaction.
		in, err := c.inTxn(prec)
		if err != nil {
			return 0, false, 0, err
		}
		if !in {
			return 0, false, pb.ErrorCode_INVALID_TXN_STATE, nil
		}
	} else if st.TxnOpen {
		// Kafka's log refuses a plain batch from a producer whose transaction
		// has data here and no marker yet.
		return 0, false, pb.ErrorCode_INVALID_TXN_STATE, nil
	}
	switch {
	case st.Epoch != b.ProducerEpoch || len(st.Batches) == 0:
		// A new epoch (or the first batch here) starts at sequence 0.
		if b.BaseSequence != 0 {
			return 0, false, pb.ErrorCode_OUT_OF_ORDER_SEQUENCE_NUMBER, nil
		}
	case b.BaseSequence != nextSequence(st.Batches[len(st.Batches)-1].LastSequence):
		return 0, false, pb.ErrorCode_OUT_OF_ORDER_SEQUENCE_NUMBER, nil
	}
	return 0, false, pb.ErrorCode_NONE, nil
}

// inTxn reports whether this partition is in the producer's open transaction.
func (c *producerCheck) inTxn(prec *pb.ProducerRecord) (bool, error) {
	if in, ok := c.txns[prec.ProducerId]; ok {
		return in, nil
	}
	in := false
	if prec.TransactionalId != "" {
		var rec pb.TransactionRecord
		found, err := c.t.getProto(txnKey(prec.TransactionalId), &rec)
		if err != nil {
			return false, err
		}
		if found && rec.ProducerId == prec.ProducerId && rec.ProducerEpoch == prec.Epoch && rec.State == pb.TxnState_TXN_ONGOING {
			for _, p := range rec.Partitions {
				if p.Partition == c.partition && string(p.TopicId) == string(c.topic) {
					in = true
					break
				}
			}
		}
	}
	c.txns[prec.ProducerId] = in
	return in, nil
}

// accepted records an accepted batch at its offsets. It reports whether the batch
// opened its transaction in this partition (its base is the transaction's first
// offset here).
func (c *producerCheck) accepted(b *pb.BatchInfo, base, last int64) (opened bool) {
	st := c.states[b.ProducerId]
	if st.Epoch != b.ProducerEpoch {
		st.Epoch, st.Batches = b.ProducerEpoch, nil
	}
	if b.Transactional && !st.TxnOpen {
		st.TxnOpen, st.TxnFirstOffset, opened = true, base, true
	}
	st.Batches = append(st.Batches, &pb.ProducedBatch{FirstSequence: b.BaseSequence,
		LastSequence: lastSequence(b.BaseSequence, b.RecordCount), BaseOffset: base, LastOffset: last})
	if len(st.Batches) > recentBatches {
		st.Batches = st.Batches[len(st.Batches)-recentBatches:]
	}
	st.LastMs = c.now
	return opened
}

func (c *producerCheck) state(pid int64) (*pb.ProducerPartition, error) {
	if st := c.states[pid]; st != nil {
		return st, nil
	}
	st := &pb.ProducerPartition{Epoch: -1}
	if _, err := c.t.getProto(producerPartitionKey(pid, c.topic, c.partition), st); err != nil {
		return nil, err
	}
	c.states[pid] = st
	return st, nil
}

// flush writes back every producer state the chunk touched, in producer id order
// (the batch never depends on map iteration).
func (c *producerCheck) flush() error {
	for _, pid := range slices.Sorted(maps.Keys(c.states)) {
		st := c.states[pid]
		if st.Epoch < 0 {
			continue // looked at, nothing accepted
		}
		if err := c.t.setProto(producerPartitionKey(pid, c.topic, c.partition), st); err != nil {
			return err
		}
	}
	return nil
}

// expireProducers applies ExpireProducersCommand, deleting at most
// maxExpirePerCommand keys (Result.More when there is more).
func (t *txn) expireProducers(expirationMs, now int64) (*Result, error) {
	if expirationMs <= 0 {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "expiration must be positive, got %d ms", expirationMs)}, nil
	}
	cutoff := now - expirationMs
	var drop [][]byte
	more := false
	live := map[int64]bool{} // producers with partition state left
	lo := []byte{prefixProducer, producerPartKey}
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != 2+16+4+8 {
			it.Close()
			return nil, fmt.Errorf("%w: producer key %x", ErrCorrupt, k)
		}
		pid := int64(binary.BigEndian.Uint64(k[2+16+4:]))
		var st pb.ProducerPartition
		if err := proto.Unmarshal(it.Value(), &st); err != nil {
			it.Close()
			return nil, fmt.Errorf("%w: %x: %v", ErrCorrupt, k, err)
		}
		if st.LastMs > cutoff || st.TxnOpen {
			live[pid] = true
			continue
		}
		if len(drop) >= maxExpirePerCommand {
			more = true
			live[pid] = true
			break
		}
		drop = append(drop, append([]byte(nil), k...))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if !more {
		err := scanProtosUnder(t.b, []byte{prefixProducer, producerIDKey}, func(r *pb.ProducerRecord) error {
			// A transactional producer's id lives as long as its transactional id.
			if !live[r.ProducerId] && r.TransactionalId == "" && r.IssuedMs <= cutoff && len(drop) < maxExpirePerCommand {
				drop = append(drop, producerKey(r.ProducerId))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for _, k := range drop {
		if err := t.del(k); err != nil {
			return nil, err
		}
	}
	return &Result{More: more}, nil
}
