package agent

// DescribeTransactions (key 65), version 0.
//
// Transactional ids as the transaction coordinator (the metastore's leader) holds
// them (KIP-664): state by Kafka's name (Empty, Ongoing, CompleteCommit,
// CompleteAbort), timeout, the start of the last transaction (-1 before the first),
// producer id and epoch, and the partitions of the open transaction by topic name.
// An unknown id is TRANSACTIONAL_ID_NOT_FOUND, an empty one INVALID_REQUEST; a
// metastore that cannot be reached is COORDINATOR_NOT_AVAILABLE. A partition of a
// topic deleted meanwhile is left out.
//
// Deviation: ending a transaction is one Raft entry, so the PrepareCommit,
// PrepareAbort and PrepareEpochFence states are never seen, nor is Dead (an expired
// id is gone at once).

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// txnStates are the Kafka names of the transaction states Strata has.
var txnStates = map[pb.TxnState]string{
	pb.TxnState_TXN_EMPTY:           "Empty",
	pb.TxnState_TXN_ONGOING:         "Ongoing",
	pb.TxnState_TXN_COMPLETE_COMMIT: "CompleteCommit",
	pb.TxnState_TXN_COMPLETE_ABORT:  "CompleteAbort",
}

// txnStateName is a state's Kafka name; "Unknown" for a state newer than this agent.
func txnStateName(st pb.TxnState) string {
	if name, ok := txnStates[st]; ok {
		return name
	}
	return "Unknown"
}

func serveDescribeTransactions(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DescribeTransactionsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	s := c.s
	return later(func() kmsg.Response {
		described, err := describeNamed(req.TransactionalIDs, func(ids []string) ([]*pb.TransactionRecord, error) {
			mresp, err := s.meta.DescribeTransactions(c.ctx, &pb.DescribeTransactionsRequest{TransactionalIds: ids})
			var found []*pb.TransactionRecord
			for i, rec := range mresp.GetTransactions() {
				if i < len(mresp.Found) && mresp.Found[i] {
					found = append(found, rec)
				}
			}
			return found, err
		}, (*pb.TransactionRecord).GetTransactionalId)
		for _, id := range req.TransactionalIDs {
			ts := kmsg.NewDescribeTransactionsResponseTransactionState()
			ts.TransactionalID = id
			ts.StartTimestamp, ts.ProducerID, ts.ProducerEpoch = -1, -1, -1
			rec := described[id]
			switch {
			case id == "":
				ts.ErrorCode = kerr.InvalidRequest.Code
			case err != nil:
				ts.ErrorCode = txnCallCode(err)
			case rec == nil:
				ts.ErrorCode = kerr.TransactionalIDNotFound.Code
			default:
				ts.ErrorCode = s.describeTxn(c.ctx, &ts, rec)
			}
			resp.TransactionStates = append(resp.TransactionStates, ts)
		}
		return resp
	})
}

// describeTxn fills ts from the coordinator's record, naming the topics of its
// partitions, and returns the error code (a topic lookup can fail).
func (s *Server) describeTxn(ctx context.Context, ts *kmsg.DescribeTransactionsResponseTransactionState, rec *pb.TransactionRecord) int16 {
	ts.State = txnStateName(rec.State)
	ts.TimeoutMillis = rec.TimeoutMs
	if rec.StartMs > 0 {
		ts.StartTimestamp = rec.StartMs
	}
	ts.ProducerID, ts.ProducerEpoch = rec.ProducerId, int16(rec.ProducerEpoch)
	byTopic := map[objectlog.TopicID]int{}
	for _, p := range rec.Partitions {
		var id objectlog.TopicID
		copy(id[:], p.TopicId)
		i, ok := byTopic[id]
		if !ok {
			ti, err := s.cat.topicID(ctx, id)
			if err != nil {
				ts.Topics = nil
				return txnCallCode(err)
			}
			i = -1 // deleted since it joined the transaction
			if ti != nil {
				i = len(ts.Topics)
				tt := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
				tt.Topic = ti.name
				ts.Topics = append(ts.Topics, tt)
			}
			byTopic[id] = i
		}
		if i >= 0 {
			ts.Topics[i].Partitions = append(ts.Topics[i].Partitions, p.Partition)
		}
	}
	return 0
}
