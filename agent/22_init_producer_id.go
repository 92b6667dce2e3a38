package agent

// InitProducerId (key 22), versions 0-5.
//
// Without a transactional id: the metastore issues a new producer id at epoch 0 (as
// Kafka does for idempotent producers, whatever producer id and epoch v3+ sends).
// Its batches are then checked at commit time, in the metastore, per producer and
// partition: a duplicate of one of the last five batches is answered with its
// original offset and not written again; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; an
// old epoch INVALID_PRODUCER_EPOCH; a producer id never issued UNKNOWN_PRODUCER_ID.
//
// With a transactional id: the metastore's transaction coordinator keeps the id's
// producer id and bumps its epoch, which fences every older instance; a transaction
// the old instance left open is aborted first. v3+ may name its current producer id
// and epoch to recover after an abortable error (KIP-360); a pair that is not the
// id's is PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before v4). A timeout outside
// (0, transaction.max.timeout.ms] is INVALID_TRANSACTION_TIMEOUT.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveInitProducerID(c *conn, r *request) reply {
	req := r.msg.(*kmsg.InitProducerIDRequest)
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	mreq := &pb.InitProducerRequest{ProducerId: -1, ProducerEpoch: -1}
	if req.TransactionalID != nil {
		if *req.TransactionalID == "" {
			resp.ErrorCode = kerr.InvalidRequest.Code
			return now(resp)
		}
		mreq.TransactionalId, mreq.TransactionTimeoutMs = *req.TransactionalID, req.TransactionTimeoutMillis
		if req.Version >= 3 && req.ProducerID >= 0 {
			mreq.ProducerId, mreq.ProducerEpoch = req.ProducerID, int32(req.ProducerEpoch)
		}
	}
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.InitProducer(c.ctx, mreq)
		if err != nil {
			// Not done, or done and the answer lost: either way the client asks
			// again. An unused producer id costs nothing; a transactional retry
			// bumps once more, which only the caller itself sees.
			resp.ErrorCode = fencedForVersion(txnCallCode(err), req.Version, 4)
			return resp
		}
		resp.ProducerID, resp.ProducerEpoch = mresp.ProducerId, int16(mresp.ProducerEpoch)
		return resp
	})
}

// fencedForVersion is PRODUCER_FENCED as versions before since know it:
// INVALID_PRODUCER_EPOCH (KIP-588 added the code).
func fencedForVersion(code, version, since int16) int16 {
	if code == kerr.ProducerFenced.Code && version < since {
		return kerr.InvalidProducerEpoch.Code
	}
	return code
}
