package agent

// OffsetDelete (key 47), version 0.
//
// Removes a group's committed offsets for some partitions. A group with no offsets at
// all is GROUP_ID_NOT_FOUND. Kafka refuses partitions the group is consuming
// (GROUP_SUBSCRIBED_TO_TOPIC); until the group coordinator exists (issue 5) no group
// has members, so every delete goes ahead.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveOffsetDelete(c *conn, r *request) reply {
	req := r.msg.(*kmsg.OffsetDeleteRequest)
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	s := c.s
	return later(func() kmsg.Response {
		if req.Group == "" {
			resp.ErrorCode = kerr.InvalidGroupID.Code
			return resp
		}
		have, err := s.meta.FetchOffsets(c.ctx, &pb.FetchOffsetsRequest{Group: req.Group})
		switch {
		case err != nil:
			resp.ErrorCode = kafkaCode(err)
			return resp
		case len(have.Offsets) == 0:
			resp.ErrorCode = kerr.GroupIDNotFound.Code
			return resp
		}
		type slot struct{ t, p int }
		var refs []*pb.PartitionRef
		var slots []slot
		for ti, rt := range req.Topics {
			st := kmsg.NewOffsetDeleteResponseTopic()
			st.Topic = rt.Topic
			topic, terr := s.cat.topic(c.ctx, rt.Topic)
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetDeleteResponseTopicPartition()
				sp.Partition = rp.Partition
				switch {
				case terr != nil:
					sp.ErrorCode = kafkaCode(terr)
				case topic == nil || rp.Partition < 0 || rp.Partition >= topic.partitions:
					sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				default:
					refs = append(refs, &pb.PartitionRef{TopicId: topic.id[:], Partition: rp.Partition})
					slots = append(slots, slot{ti, len(st.Partitions)})
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if len(refs) == 0 {
			return resp
		}
		mresp, err := s.meta.DeleteOffsets(c.ctx, &pb.DeleteOffsetsRequest{Group: req.Group, Partitions: refs})
		for i, sl := range slots {
			resp.Topics[sl.t].Partitions[sl.p].ErrorCode = offsetResultCode(mresp.GetResults(), i, err)
		}
		return resp
	})
}
