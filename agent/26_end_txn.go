package agent

// EndTxn (key 26), versions 0-4.
//
// Commits or aborts the producer's transaction in one metastore entry: every
// partition in it gets a control record (the marker) at its own offset, the offsets
// committed in it become the groups' offsets (commit) or are dropped (abort), and
// the partitions' last stable offsets move past it. The answer comes after that
// entry is committed by a Raft quorum, so a consumer that reads after the answer
// sees the outcome. A retried commit of a committed transaction (or abort of an
// aborted one) succeeds; the opposite is INVALID_TXN_STATE, as is ending when no
// transaction is open. A stale epoch is PRODUCER_FENCED (INVALID_PRODUCER_EPOCH
// before v2), or INVALID_PRODUCER_EPOCH when the coordinator itself bumped it by
// aborting the transaction on timeout (the producer may recover, KIP-588).
//
// Deviation: transaction version 2 (KIP-890 part 2, EndTxn v5 bumping the epoch per
// transaction) is not served, so clients use the classic protocol.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveEndTxn(c *conn, r *request) reply {
	req := r.msg.(*kmsg.EndTxnRequest)
	resp := req.ResponseKind().(*kmsg.EndTxnResponse)
	if req.TransactionalID == "" {
		resp.ErrorCode = kerr.InvalidRequest.Code
		return now(resp)
	}
	s := c.s
	return later(func() kmsg.Response {
		_, err := s.meta.EndTxn(c.ctx, &pb.EndTxnRequest{TransactionalId: req.TransactionalID,
			ProducerId: req.ProducerID, ProducerEpoch: int32(req.ProducerEpoch), Commit: req.Commit})
		if err != nil {
			resp.ErrorCode = fencedForVersion(txnCallCode(err), req.Version, 2)
		}
		return resp
	})
}
