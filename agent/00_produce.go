package agent

// Produce (key 0), versions 3-13 (v13 names topics by id).
//
// Every batch is checked before anything is buffered: magic 2, CRC-32C, sizes,
// max.message.bytes (the topic's, else the broker's message.max.bytes), a record count
// matching the offsets it takes, well-formed records after decompression, no control
// batches from clients. A bad batch fails its partition only (CORRUPT_MESSAGE,
// MESSAGE_TOO_LARGE, INVALID_RECORD, UNKNOWN_TOPIC_OR_PARTITION); the rest of the
// request goes ahead. Topics whose compression.type is not "producer" get their
// batches recompressed.
//
// Accepted batches go to the shared open segment (writer.go). The answer comes when
// the segment is in object storage and committed: acks=1 and acks=all both mean
// durable and ordered; acks=0 gets no answer. A partition whose commit does not
// finish within the request's timeout gets REQUEST_TIMED_OUT (retriable; its data may
// still commit later, as with Kafka). Produce never creates topics.
//
// Topics with message.timestamp.type=LogAppendTime get their batches stamped with the
// agent's clock when accepted (Kafka stamps at append; here that is the moment the
// batch joins a segment), and the response carries that time.
//
// Idempotent producers' batches are checked by the metastore at commit time (see
// 22_init_producer_id.go): each batch has its own outcome, and a duplicate is
// answered with its original offset. Transactional batches are checked there too:
// only for a partition added to the producer's open transaction (KIP-890 part 1,
// INVALID_TXN_STATE otherwise); one without a producer id is INVALID_RECORD.

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// maxDecompressed bounds one batch's decompressed records during validation.
const maxDecompressed = 256 << 20

func serveProduce(c *conn, r *request) reply {
	start := time.Now()
	req := r.msg.(*kmsg.ProduceRequest)
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	s := c.s
	type waiting struct {
		topic, part int // indexes into resp.Topics and its Partitions
		t           *ticket
		appendTime  int64
	}
	var waits []waiting
	badAcks := req.Acks != 0 && req.Acks != 1 && req.Acks != -1
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		var ti *topicInfo
		var terr error
		if req.Version >= 13 {
			ti, terr = s.cat.topicID(c.ctx, objectlog.TopicID(rt.TopicID))
		} else {
			ti, terr = s.cat.topic(c.ctx, rt.Topic)
		}
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.BaseOffset, sp.LogAppendTime, sp.LogStartOffset = -1, -1, -1
			err := terr
			switch {
			case badAcks:
				sp.ErrorCode = kerr.InvalidRequiredAcks.Code
			case err != nil:
			case ti == nil || rp.Partition < 0 || rp.Partition >= ti.partitions:
				err = errUnknownTopic
			}
			var batches []pendingBatch
			var size int64
			appendTime := int64(-1)
			if err == nil && sp.ErrorCode == 0 {
				if ti.logAppendTime {
					appendTime = time.Now().UnixMilli()
				}
				batches, size, err = checkBatches(ti, rp.Records, appendTime)
			}
			if err == nil && sp.ErrorCode == 0 {
				if err = s.w.reserve(c.ctx, size); err == nil {
					var t *ticket
					if t, err = s.w.append(partKey{ti.id, rp.Partition}, batches, size); err == nil {
						waits = append(waits, waiting{len(resp.Topics), len(st.Partitions), t, appendTime})
						st.Partitions = append(st.Partitions, sp)
						continue
					}
				}
			}
			if err != nil {
				sp.ErrorCode = kafkaCode(err)
				sp.ErrorMessage = errMessage(err)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	if req.Acks == 0 && !badAcks {
		return now(nil)
	}
	if len(waits) == 0 {
		return now(resp)
	}
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return later(func() kmsg.Response {
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		defer cancel()
		for _, w := range waits {
			rp := &resp.Topics[w.topic].Partitions[w.part]
			base, logStart, err := w.t.wait(ctx)
			if err != nil {
				rp.ErrorCode = kafkaCode(err)
				rp.ErrorMessage = errMessage(err)
				continue
			}
			rp.BaseOffset, rp.LogStartOffset, rp.LogAppendTime = base, logStart, w.appendTime
		}
		s.stats.since(StageProduce, start)
		return resp
	})
}

// checkBatches validates a partition's records and returns its batches, ready to
// buffer, and their total size. appendTime >= 0 stamps them (LogAppendTime).
func checkBatches(ti *topicInfo, records []byte, appendTime int64) ([]pendingBatch, int64, error) {
	if len(records) == 0 {
		return nil, 0, fmt.Errorf("%w: no record batches", errInvalidRecord)
	}
	var out []pendingBatch
	var size int64
	var scratch []objectlog.Record
	for b, err := range objectlog.Batches(records) {
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %v", errCorruptBatch, err)
		}
		if len(b.Raw) > int(ti.maxMessageBytes) {
			return nil, 0, fmt.Errorf("%w: batch of %d bytes, max.message.bytes is %d", errBatchTooLarge, len(b.Raw), ti.maxMessageBytes)
		}
		if b.Attributes.Control() {
			return nil, 0, fmt.Errorf("%w: clients may not write control batches", errInvalidRecord)
		}
		if b.Attributes.Transactional() && b.ProducerID < 0 {
			return nil, 0, fmt.Errorf("%w: a transactional batch without a producer id", errInvalidRecord)
		}
		if b.RecordCount <= 0 || b.LastOffsetDelta != b.RecordCount-1 {
			return nil, 0, fmt.Errorf("%w: %d records taking %d offsets", errInvalidRecord, b.RecordCount, int64(b.LastOffsetDelta)+1)
		}
		var err error
		if scratch, err = b.Records(scratch[:0], maxDecompressed); err != nil {
			return nil, 0, fmt.Errorf("%w: %v", errCorruptBatch, err)
		}
		raw := b.Raw
		if !ti.keep && b.Attributes.Codec() != ti.codec {
			if raw, err = b.Recompress(nil, ti.codec, maxDecompressed); err != nil {
				return nil, 0, fmt.Errorf("%w: recompress: %v", errCorruptBatch, err)
			}
			if len(raw) > int(ti.maxMessageBytes) {
				return nil, 0, fmt.Errorf("%w: batch of %d bytes after recompression, max.message.bytes is %d", errBatchTooLarge, len(raw), ti.maxMessageBytes)
			}
		}
		maxTs := b.MaxTimestamp
		if appendTime >= 0 {
			// The batch bytes are this request's own (or a fresh recompressed copy).
			if err := objectlog.SetLogAppendTime(raw, appendTime); err != nil {
				return nil, 0, fmt.Errorf("%w: %v", errCorruptBatch, err)
			}
			maxTs = appendTime
		}
		out = append(out, pendingBatch{raw: raw, info: &pb.BatchInfo{
			OffsetCount:   b.LastOffsetDelta + 1,
			RecordCount:   b.RecordCount,
			ProducerId:    b.ProducerID,
			ProducerEpoch: int32(b.ProducerEpoch),
			BaseSequence:  b.BaseSequence,
			Transactional: b.Attributes.Transactional(),
			MaxTimestamp:  maxTs,
			Size:          int32(len(raw)),
		}})
		size += int64(len(raw))
	}
	return out, size, nil
}
