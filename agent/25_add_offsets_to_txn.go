package agent

// AddOffsetsToTxn (key 25), versions 0-4.
//
// Adds a consumer group to the producer's transaction, opening it if none is open,
// so that TxnOffsetCommit may commit the group's offsets in it (Kafka adds the
// group's __consumer_offsets partition; Strata's offsets live in the metastore, so
// the group itself is what the transaction names). Errors as AddPartitionsToTxn.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveAddOffsetsToTxn(c *conn, r *request) reply {
	req := r.msg.(*kmsg.AddOffsetsToTxnRequest)
	resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	switch {
	case req.TransactionalID == "":
		resp.ErrorCode = kerr.InvalidRequest.Code
		return now(resp)
	case req.Group == "":
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return now(resp)
	}
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.AddToTxn(c.ctx, &pb.AddToTxnRequest{Txns: []*pb.TxnAdd{{TransactionalId: req.TransactionalID,
			ProducerId: req.ProducerID, ProducerEpoch: int32(req.ProducerEpoch), Groups: []string{req.Group}}}})
		switch {
		case err != nil:
			resp.ErrorCode = txnCallCode(err)
		case len(mresp.Results) != 1:
			resp.ErrorCode = kerr.UnknownServerError.Code
		case mresp.Results[0].Error != pb.ErrorCode_NONE:
			resp.ErrorCode = kafkaCode(errOf(mresp.Results[0].Error))
		case len(mresp.Results[0].Groups) == 1 && mresp.Results[0].Groups[0].Error != pb.ErrorCode_NONE:
			resp.ErrorCode = kerr.InvalidGroupID.Code
		}
		resp.ErrorCode = fencedForVersion(resp.ErrorCode, req.Version, 2)
		return resp
	})
}
