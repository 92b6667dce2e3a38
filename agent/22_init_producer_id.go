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
// Deviation: transactions are not served yet, so a transactional id is refused with
// INVALID_REQUEST (and transactional batches with INVALID_TXN_STATE).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveInitProducerID(c *conn, r *request) reply {
	req := r.msg.(*kmsg.InitProducerIDRequest)
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		resp.ErrorCode = kerr.InvalidRequest.Code
		return now(resp)
	}
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.InitProducer(c.ctx, &pb.InitProducerRequest{ProducerId: -1, ProducerEpoch: -1})
		if err != nil {
			// Not issued, or issued and the answer lost: either way the client asks
			// again, and an unused producer id costs nothing.
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			if code := kafkaCode(err); code != kerr.UnknownServerError.Code {
				resp.ErrorCode = code
			}
			return resp
		}
		resp.ProducerID, resp.ProducerEpoch = mresp.ProducerId, int16(mresp.ProducerEpoch)
		return resp
	})
}
