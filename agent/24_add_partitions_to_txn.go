package agent

// AddPartitionsToTxn (key 24), versions 0-5.
//
// Adds partitions to the producer's transaction in the metastore's transaction
// coordinator, opening it if none is open. Before v4 a request carries one
// transaction; v4+ (the broker-to-coordinator form) carries several, each answered
// on its own, and may only verify (VerifyOnly) that partitions are in. Every
// partition must exist, or none is added: the unknown ones get
// UNKNOWN_TOPIC_OR_PARTITION and the rest OPERATION_NOT_ATTEMPTED. A stale epoch is
// PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before v2), a producer id that is not the
// transactional id's INVALID_PRODUCER_ID_MAPPING.
//
// Once a partition is in, the producer's transactional batches for it are accepted;
// batches for a partition not added are refused with INVALID_TXN_STATE (KIP-890
// part 1), checked where offsets are assigned.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// maxTxnAddPartitions bounds the partitions of one request (the metastore bounds a
// transaction's).
const maxTxnAddPartitions = 10_000

func serveAddPartitionsToTxn(c *conn, r *request) reply {
	req := r.msg.(*kmsg.AddPartitionsToTxnRequest)
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	s := c.s
	return later(func() kmsg.Response {
		if req.Version < 4 {
			tx := kmsg.NewAddPartitionsToTxnRequestTransaction()
			tx.TransactionalID, tx.ProducerID, tx.ProducerEpoch = req.TransactionalID, req.ProducerID, req.ProducerEpoch
			for _, t := range req.Topics {
				tt := kmsg.NewAddPartitionsToTxnRequestTransactionTopic()
				tt.Topic, tt.Partitions = t.Topic, t.Partitions
				tx.Topics = append(tx.Topics, tt)
			}
			res := s.addPartitions(c.ctx, req.Version, []kmsg.AddPartitionsToTxnRequestTransaction{tx})
			for _, rt := range res[0].Topics {
				t := kmsg.NewAddPartitionsToTxnResponseTopic()
				t.Topic = rt.Topic
				for _, rp := range rt.Partitions {
					p := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
					p.Partition, p.ErrorCode = rp.Partition, rp.ErrorCode
					t.Partitions = append(t.Partitions, p)
				}
				resp.Topics = append(resp.Topics, t)
			}
			return resp
		}
		resp.Transactions = s.addPartitions(c.ctx, req.Version, req.Transactions)
		return resp
	})
}

// addPartitions adds (or verifies) the partitions of several transactions in one
// metastore call and answers each.
func (s *Server) addPartitions(ctx context.Context, version int16, txns []kmsg.AddPartitionsToTxnRequestTransaction) []kmsg.AddPartitionsToTxnResponseTransaction {
	out := make([]kmsg.AddPartitionsToTxnResponseTransaction, len(txns))
	mreq := &pb.AddToTxnRequest{}
	type slot struct{ t, p int }
	var slots [][]slot // per metastore TxnAdd: where each partition's answer goes
	var sent []int     // per metastore TxnAdd: its transaction's index
	for i, tx := range txns {
		total := 0
		rt := &out[i]
		*rt = kmsg.NewAddPartitionsToTxnResponseTransaction()
		rt.TransactionalID = tx.TransactionalID
		add := &pb.TxnAdd{TransactionalId: tx.TransactionalID, ProducerId: tx.ProducerID,
			ProducerEpoch: int32(tx.ProducerEpoch), VerifyOnly: tx.VerifyOnly}
		var sl []slot
		unknown := false
		for _, t := range tx.Topics {
			total += len(t.Partitions)
			topic, err := s.cat.topic(ctx, t.Topic)
			rtt := kmsg.NewAddPartitionsToTxnResponseTransactionTopic()
			rtt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTransactionTopicPartition()
				rp.Partition = p
				switch {
				case err != nil:
					rp.ErrorCode = kafkaCode(err)
					unknown = true
				case topic == nil || p < 0 || p >= topic.partitions:
					rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
					unknown = true
				default:
					add.Partitions = append(add.Partitions, &pb.TxnPartition{TopicId: topic.id[:], Partition: p})
					sl = append(sl, slot{len(rt.Topics), len(rtt.Partitions)})
				}
				rtt.Partitions = append(rtt.Partitions, rp)
			}
			rt.Topics = append(rt.Topics, rtt)
		}
		code := int16(0)
		switch {
		case tx.TransactionalID == "":
			code = kerr.InvalidRequest.Code
		case total > maxTxnAddPartitions:
			code = kerr.InvalidRequest.Code
		case unknown:
			code = kerr.OperationNotAttempted.Code
		}
		if code != 0 {
			for ti := range rt.Topics {
				for pi := range rt.Topics[ti].Partitions {
					if rt.Topics[ti].Partitions[pi].ErrorCode == 0 {
						rt.Topics[ti].Partitions[pi].ErrorCode = code
					}
				}
			}
			continue
		}
		mreq.Txns = append(mreq.Txns, add)
		slots = append(slots, sl)
		sent = append(sent, i)
	}
	if len(mreq.Txns) == 0 {
		return out
	}
	mresp, err := s.meta.AddToTxn(ctx, mreq)
	for k, i := range sent {
		rt := &out[i]
		for j, sl := range slots[k] {
			code := int16(0)
			switch {
			case err != nil:
				code = txnCallCode(err)
			case k >= len(mresp.Results) || j >= len(mresp.Results[k].Partitions):
				code = kerr.UnknownServerError.Code
			default:
				res := mresp.Results[k]
				code = kafkaCode(errOf(res.Partitions[j].Error))
				if res.Error != pb.ErrorCode_NONE {
					code = kafkaCode(errOf(res.Error))
				}
			}
			rt.Topics[sl.t].Partitions[sl.p].ErrorCode = fencedForVersion(code, version, 2)
		}
	}
	return out
}

// txnCallCode is the Kafka code of a transaction coordinator call that failed:
// what the metastore said, or a retriable code when it could not say.
func txnCallCode(err error) int16 {
	code := kafkaCode(err)
	if code == kerr.UnknownServerError.Code || code == kerr.RequestTimedOut.Code || code == kerr.NotLeaderForPartition.Code {
		return kerr.CoordinatorNotAvailable.Code
	}
	return code
}
