package objectlog

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ControlBatch builds the record batch of a transaction marker at offset: a
// control batch (attributes transactional | control) of the producer's, holding one
// record whose key is the control type (version 0; 0 abort, 1 commit) and whose
// value is the end-transaction marker (version 0, coordinator epoch). Markers are
// not stored in segments; the metastore's index holds what this needs, and readers
// build the batch when they serve it.
func ControlBatch(offset, producerID int64, producerEpoch int16, commit bool, timestamp int64) []byte {
	typ := kmsg.ControlRecordKeyTypeAbort
	if commit {
		typ = kmsg.ControlRecordKeyTypeCommit
	}
	key := (&kmsg.ControlRecordKey{Version: 0, Type: typ}).AppendTo(nil)
	value := (&kmsg.EndTxnMarker{Version: 0, CoordinatorEpoch: 0}).AppendTo(nil)
	rec := kmsg.Record{Key: key, Value: value}
	body := rec.AppendTo(nil)
	rec.Length = int32(len(body) - 1) // the zero length took one byte
	records := rec.AppendTo(nil)
	b := (&kmsg.RecordBatch{
		FirstOffset:          offset,
		PartitionLeaderEpoch: 0,
		Magic:                2,
		Attributes:           int16(AttrTransactional | AttrControl),
		LastOffsetDelta:      0,
		FirstTimestamp:       timestamp,
		MaxTimestamp:         timestamp,
		ProducerID:           producerID,
		ProducerEpoch:        producerEpoch,
		FirstSequence:        -1,
		NumRecords:           1,
		Records:              records,
	}).AppendTo(make([]byte, 0, BatchHeaderSize+len(records)))
	binary.BigEndian.PutUint32(b[offBatchLength:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[offCRC:], CRC32C(b[offAttributes:]))
	return b
}
