package server

import (
	"context"
	"slices"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/state"
)

// The transaction coordinator is the Raft leader: every transactional request is
// one command (txn.go in the state machine), so ending a transaction, its markers
// and its offsets happen in one entry. The leader's loop aborts transactions past
// their timeout (checked every groupTick) and forgets unused transactional ids.

// InitProducer issues a producer id, bumps an issued one's epoch (KIP-360), or
// initializes a transactional id.
func (a *api) InitProducer(ctx context.Context, req *pb.InitProducerRequest) (*pb.InitProducerResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.InitProducer, func() (*pb.InitProducerResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_InitProducer{InitProducer: &pb.InitProducerCommand{
			ProducerId: req.ProducerId, ProducerEpoch: req.ProducerEpoch,
			TransactionalId: req.TransactionalId, TransactionTimeoutMs: req.TransactionTimeoutMs,
			MaxTransactionTimeoutMs: int32(min(a.n.cfg.TransactionMaxTimeout.Milliseconds(), 1<<31-1)),
		}}})
		if err != nil {
			return nil, err
		}
		return &pb.InitProducerResponse{ProducerId: res.Producer.ProducerId, ProducerEpoch: res.Producer.Epoch}, nil
	})
}

func (a *api) AddToTxn(ctx context.Context, req *pb.AddToTxnRequest) (*pb.AddToTxnResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.AddToTxn, func() (*pb.AddToTxnResponse, error) {
		res, err := a.txnWrite(ctx, &pb.Command{Op: &pb.Command_AddToTxn{AddToTxn: &pb.AddToTxnCommand{Txns: req.Txns}}})
		if err != nil {
			return nil, err
		}
		return &pb.AddToTxnResponse{Results: res.TxnAdds}, nil
	})
}

func (a *api) EndTxn(ctx context.Context, req *pb.EndTxnRequest) (*pb.EndTxnResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.EndTxn, func() (*pb.EndTxnResponse, error) {
		_, err := a.txnWrite(ctx, &pb.Command{Op: &pb.Command_EndTxn{EndTxn: &pb.EndTxnCommand{
			TransactionalId: req.TransactionalId, ProducerId: req.ProducerId, ProducerEpoch: req.ProducerEpoch, Commit: req.Commit}}})
		if err != nil {
			return nil, err
		}
		return &pb.EndTxnResponse{}, nil
	})
}

func (a *api) TxnOffsetCommit(ctx context.Context, req *pb.TxnOffsetCommitRequest) (*pb.TxnOffsetCommitResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.TxnOffsetCommit, func() (*pb.TxnOffsetCommitResponse, error) {
		if req.Generation != nil {
			// KIP-447: a member of the group commits only from its generation.
			c, err := a.coordinator(ctx)
			if err != nil {
				return nil, err
			}
			if code := c.CheckCommit(ctx, req.Group, *req.Generation, req.MemberId, req.InstanceId); code != 0 {
				return &pb.TxnOffsetCommitResponse{GroupError: code}, nil
			}
		}
		res, err := a.txnWrite(ctx, &pb.Command{Op: &pb.Command_TxnOffsetCommit{TxnOffsetCommit: &pb.TxnOffsetCommitCommand{
			TransactionalId: req.TransactionalId, Group: req.Group, ProducerId: req.ProducerId,
			ProducerEpoch: req.ProducerEpoch, Offsets: req.Offsets}}})
		if err != nil {
			return nil, err
		}
		return &pb.TxnOffsetCommitResponse{Results: res.Offsets}, nil
	})
}

// txnWrite applies a transaction command, sharing a Raft entry with concurrent ones.
func (a *api) txnWrite(ctx context.Context, cmd *pb.Command) (*state.Result, error) {
	res, err := a.n.txns.submit(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, refusal(res.Err)
	}
	return res, nil
}

func (a *api) DescribeTransactions(ctx context.Context, req *pb.DescribeTransactionsRequest) (*pb.DescribeTransactionsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DescribeTransactions, func() (*pb.DescribeTransactionsResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		resp := &pb.DescribeTransactionsResponse{}
		if len(req.TransactionalIds) == 0 {
			return resp, nil
		}
		recs, err := a.n.st.Transactions(req.TransactionalIds, nil)
		if err != nil {
			return nil, readError(err)
		}
		for i, r := range recs {
			if r == nil {
				r = &pb.TransactionRecord{TransactionalId: req.TransactionalIds[i]}
			}
			resp.Transactions = append(resp.Transactions, r)
			resp.Found = append(resp.Found, recs[i] != nil)
		}
		return resp, nil
	})
}

func (a *api) ListTransactions(ctx context.Context, req *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ListTransactions, func() (*pb.ListTransactionsResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		now := time.Now().UnixMilli()
		recs, err := a.n.st.Transactions(nil, func(r *pb.TransactionRecord) bool {
			if len(req.States) > 0 && !slices.Contains(req.States, r.State) {
				return false
			}
			if len(req.ProducerIds) > 0 && !slices.Contains(req.ProducerIds, r.ProducerId) {
				return false
			}
			if req.MinDurationMs > 0 && (r.State != pb.TxnState_TXN_ONGOING || now-r.StartMs < req.MinDurationMs) {
				return false
			}
			r.Partitions, r.Groups = nil, nil
			return true
		})
		if err != nil {
			return nil, readError(err)
		}
		return &pb.ListTransactionsResponse{Transactions: recs}, nil
	})
}

func (a *api) DescribeProducers(ctx context.Context, req *pb.DescribeProducersRequest) (*pb.DescribeProducersResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DescribeProducers, func() (*pb.DescribeProducersResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		resp := &pb.DescribeProducersResponse{}
		for _, p := range req.Partitions {
			prods, found, err := a.n.st.Producers(p.TopicId, p.Partition)
			if err != nil {
				return nil, readError(err)
			}
			pp := &pb.PartitionProducers{TopicId: p.TopicId, Partition: p.Partition, Producers: prods}
			if !found {
				pp.Error = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION
			}
			resp.Partitions = append(resp.Partitions, pp)
		}
		return resp, nil
	})
}

// expireTxns is the leader loop's transaction work: abort what timed out (at once,
// when the state says something is due) and, every interval, forget unused ids.
func (n *Node) expireTxns(idExpiry bool) bool {
	expiration := int64(0)
	if idExpiry {
		expiration = n.cfg.TransactionalIDExpiration.Milliseconds()
	} else if due, err := n.st.TxnDue(time.Now().UnixMilli()); err != nil || !due {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	res, err := n.propose(ctx, &pb.Command{Op: &pb.Command_ExpireTxns{ExpireTxns: &pb.ExpireTxnsCommand{ExpirationMs: expiration}}})
	if err != nil {
		n.log.Debug("metastore server: expire transactions", "err", err)
		return false
	}
	return res.More
}
