package agent

// OffsetCommit (key 8), versions 0-9.
//
// Offsets are stored in the metastore (Raft-committed), so they survive any agent and
// any metastore node. The group coordinator (the metastore's leader) checks the
// committer as Kafka does: generation -1 with no member id (v0, simple consumers,
// admin tools) is accepted while the group has no members; otherwise the member and
// generation (and v7+ static instance id) must be current, or every partition gets
// the group's error (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS,
// FENCED_INSTANCE_ID). Metadata over 4096 bytes gets OFFSET_METADATA_TOO_LARGE;
// unknown topics or partitions UNKNOWN_TOPIC_OR_PARTITION, per partition, and those
// never reach the coordinator. RetentionTimeMillis (v2-v4) is ignored: the broker's
// offsets retention applies.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// maxOffsetMetadata is offset.metadata.max.bytes.
const maxOffsetMetadata = 4096

func serveOffsetCommit(c *conn, r *request) reply {
	req := r.msg.(*kmsg.OffsetCommitRequest)
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	s := c.s
	return later(func() kmsg.Response {
		groupErr := int16(0)
		if req.Group == "" {
			groupErr = kerr.InvalidGroupID.Code
		}
		type slot struct{ t, p int }
		var commits []*pb.CommittedOffset
		var slots []slot
		for ti, rt := range req.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			topic, terr := s.cat.topic(c.ctx, rt.Topic)
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				epoch := int32(-1)
				if req.Version >= 6 {
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
		mreq := &pb.CommitOffsetsRequest{Group: req.Group, Offsets: commits, Generation: ptr(int32(-1))}
		if req.Version >= 1 {
			mreq.Generation, mreq.MemberId = ptr(req.Generation), req.MemberID
		}
		if req.Version >= 7 {
			mreq.InstanceId = req.InstanceID
		}
		mresp, err := s.meta.CommitOffsets(c.ctx, mreq)
		for i, sl := range slots {
			code := offsetResultCode(mresp.GetResults(), i, err)
			if ge := mresp.GetGroupError(); err == nil && ge != 0 {
				code = int16(ge)
			}
			resp.Topics[sl.t].Partitions[sl.p].ErrorCode = code
		}
		return resp
	})
}

// offsetToCommit checks one partition of an offset commit (plain or
// transactional): its error code, or the offset to send to the metastore.
func offsetToCommit(topic *topicInfo, terr error, groupErr int16, partition int32, offset int64, leaderEpoch int32, metadata *string) (int16, *pb.CommittedOffset) {
	switch {
	case groupErr != 0:
		return groupErr, nil
	case terr != nil:
		return kafkaCode(terr), nil
	case topic == nil || partition < 0 || partition >= topic.partitions:
		return kerr.UnknownTopicOrPartition.Code, nil
	case metadata != nil && len(*metadata) > maxOffsetMetadata:
		return kerr.OffsetMetadataTooLarge.Code, nil
	}
	o := &pb.CommittedOffset{TopicId: topic.id[:], Partition: partition, Offset: offset, LeaderEpoch: leaderEpoch}
	if metadata != nil {
		o.Metadata = *metadata
	}
	return 0, o
}

// offsetResultCode is the Kafka code of the i-th partition of a metastore offset
// commit or delete that answered results or failed with err.
func offsetResultCode(results []*pb.OffsetResult, i int, err error) int16 {
	switch {
	case err != nil:
		return kafkaCode(err)
	case i < len(results):
		return kafkaCode(errOf(results[i].Error))
	}
	return kerr.UnknownServerError.Code
}
