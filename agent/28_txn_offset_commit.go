package agent

// TxnOffsetCommit (key 28), versions 0-4.
//
// Records a group's offsets inside the producer's transaction: they become the
// group's committed offsets when the transaction commits (and OffsetFetch with
// RequireStable answers UNSTABLE_OFFSET_COMMIT for them until it ends), and vanish
// if it aborts. The group must have been added with AddOffsetsToTxn
// (INVALID_TXN_STATE otherwise). From v3 a member of the group sends its generation
// and member id (KIP-447), checked as OffsetCommit's are, so a zombie from an older
// generation cannot commit; generation -1 with no member id is not checked.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveTxnOffsetCommit(c *conn, r *request) reply {
	req := r.msg.(*kmsg.TxnOffsetCommitRequest)
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	s := c.s
	return later(func() kmsg.Response {
		groupErr := int16(0)
		switch {
		case req.Group == "":
			groupErr = kerr.InvalidGroupID.Code
		case req.TransactionalID == "":
			groupErr = kerr.InvalidRequest.Code
		}
		type slot struct{ t, p int }
		var commits []*pb.CommittedOffset
		var slots []slot
		for ti, rt := range req.Topics {
			st := kmsg.NewTxnOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			topic, terr := s.cat.topic(c.ctx, rt.Topic)
			for _, rp := range rt.Partitions {
				sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				epoch := int32(-1)
				if req.Version >= 2 {
					epoch = rp.LeaderEpoch
				}
				var o *pb.CommittedOffset
				if sp.ErrorCode, o = offsetToCommit(topic, terr, groupErr, rp.Partition, rp.Offset, epoch, rp.Metadata); o != nil {
					commits = append(commits, o)
					slots = append(slots, slot{ti, len(st.Partitions)})
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if len(commits) == 0 {
			return resp
		}
		mreq := &pb.TxnOffsetCommitRequest{TransactionalId: req.TransactionalID, Group: req.Group,
			ProducerId: req.ProducerID, ProducerEpoch: int32(req.ProducerEpoch), Offsets: commits}
		if req.Version >= 3 && (req.Generation >= 0 || req.MemberID != "") {
			mreq.Generation, mreq.MemberId, mreq.InstanceId = ptr(req.Generation), req.MemberID, req.InstanceID
		}
		mresp, err := s.meta.TxnOffsetCommit(c.ctx, mreq)
		for i, sl := range slots {
			var code int16
			switch {
			case err != nil:
				code = txnCallCode(err)
			case mresp.GroupError != 0:
				code = int16(mresp.GroupError)
			default:
				code = offsetResultCode(mresp.Results, i, nil)
			}
			resp.Topics[sl.t].Partitions[sl.p].ErrorCode = fencedForVersion(code, req.Version, 2)
		}
		return resp
	})
}
