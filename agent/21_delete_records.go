package agent

// DeleteRecords (key 21), versions 0-2 (v2 flexible).
//
// Each partition's log start offset moves forward to the offset asked, -1 meaning
// the high watermark; the answer's LowWatermark is the log start after the move.
// Records below it are no longer served: fetches there get OFFSET_OUT_OF_RANGE, and
// GC removes the objects no index entry references any more. An offset at or below
// the log start moves nothing and answers the log start, as Kafka does. The
// metastore moves a log start in Raft entries of bounded work, so the agent asks
// again while the log start stops short of the offset and still progresses.
//
// An offset above the high watermark or below -1 is OFFSET_OUT_OF_RANGE; an unknown
// topic or partition UNKNOWN_TOPIC_OR_PARTITION. TimeoutMillis bounds the wait:
// REQUEST_TIMED_OUT past it (the move may still happen, and a retry is harmless),
// as when the metastore cannot be reached. This agent's cache takes the new log
// start at once; other agents' when the metastore's watch brings it. Deviations:
// any agent accepts any partition (never NOT_LEADER_OR_FOLLOWER).

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// deletion is one partition of a DeleteRecords request on its way.
type deletion struct {
	topic, part int // indexes into the response
	k           partKey
	offset      int64 // the log start asked for (-1 resolved to the watermark)
	low         int64 // the log start the metastore last answered
	err         error
}

func serveDeleteRecords(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DeleteRecordsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	s := c.s
	return later(func() kmsg.Response {
		ctx, cancel := requestContext(c.ctx, req.TimeoutMillis)
		defer cancel()
		var todo []*deletion
		for ti, rt := range req.Topics {
			st := kmsg.NewDeleteRecordsResponseTopic()
			st.Topic = rt.Topic
			info, terr := s.cat.topic(ctx, rt.Topic)
			for pi, rp := range rt.Partitions {
				sp := kmsg.NewDeleteRecordsResponseTopicPartition()
				sp.Partition, sp.LowWatermark = rp.Partition, -1
				switch {
				case terr != nil:
					sp.ErrorCode = kafkaCode(terr)
				case info == nil || rp.Partition < 0 || rp.Partition >= info.partitions:
					sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				case rp.Offset < -1:
					sp.ErrorCode = kerr.OffsetOutOfRange.Code
				case info.compactOnly():
					// Kafka refuses to delete records of a topic that only compacts.
					sp.ErrorCode = kerr.PolicyViolation.Code
				default:
					todo = append(todo, &deletion{topic: ti, part: pi, k: partKey{info.id, rp.Partition}, offset: rp.Offset, low: -1})
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		s.deleteRecords(ctx, todo)
		for _, d := range todo {
			sp := &resp.Topics[d.topic].Partitions[d.part]
			if d.err != nil {
				sp.ErrorCode = kafkaCode(d.err)
				continue
			}
			sp.LowWatermark = d.low
			s.log.Info("agent: deleted records", "topic", req.Topics[d.topic].Topic, "partition", d.k.partition, "log_start", d.low)
		}
		return resp
	})
}

// deleteRecords moves the log starts of ds: d.low on success, d.err otherwise.
func (s *Server) deleteRecords(ctx context.Context, ds []*deletion) {
	var pending []*deletion
	for _, d := range ds {
		// A cached watermark at or past the offset suffices (it never goes back);
		// -1 means the watermark now, so it is asked for.
		hwm, _, _, err := s.rd.head(ctx, d.k, d.offset == -1)
		if err == nil && d.offset > hwm {
			hwm, _, _, err = s.rd.head(ctx, d.k, true)
		}
		switch {
		case err != nil:
			d.err = err
		case d.offset == -1:
			d.offset = hwm
			pending = append(pending, d)
		case d.offset > hwm:
			d.err = fmt.Errorf("agent: delete records to %d, above the high watermark %d: %w", d.offset, hwm, metastore.ErrOffsetOutOfRange)
		default:
			pending = append(pending, d)
		}
	}
	for len(pending) > 0 {
		mreq := &pb.DeleteRecordsRequest{}
		for _, d := range pending {
			mreq.Partitions = append(mreq.Partitions, &pb.PartitionOffset{TopicId: d.k.topic[:], Partition: d.k.partition, Offset: d.offset})
		}
		mresp, err := s.meta.DeleteRecords(ctx, mreq)
		if err != nil {
			for _, d := range pending {
				d.err = err
			}
			return
		}
		results := make(map[partKey]*pb.PartitionOffsetResult, len(mresp.Results))
		for _, res := range mresp.Results {
			var k partKey
			copy(k.topic[:], res.TopicId)
			k.partition = res.Partition
			results[k] = res
		}
		// One metastore command drops a bounded number of entries over all its
		// partitions: a partition that did not move while another did goes on.
		var next, stalled []*deletion
		moved := false
		for _, d := range pending {
			res := results[d.k]
			switch {
			case res == nil:
				d.err = fmt.Errorf("agent: metastore did not answer partition %d of a delete records: %w", d.k.partition, metastore.ErrUnavailable)
				continue
			case res.Error != pb.ErrorCode_NONE:
				d.err = metastore.ErrorOf(res.Error, "")
				continue
			}
			s.rd.setLogStart(d.k, res.LogStartOffset)
			progressed := res.LogStartOffset > d.low
			d.low = res.LogStartOffset
			switch {
			case d.low >= d.offset:
			case !progressed:
				stalled = append(stalled, d)
			default:
				moved = true
				next = append(next, d)
			}
		}
		for _, d := range stalled {
			if moved {
				next = append(next, d)
				continue
			}
			// Retriable: the metastore did part of the work and stopped.
			d.err = fmt.Errorf("agent: log start stopped at %d, short of %d: %w", d.low, d.offset, metastore.ErrUnavailable)
		}
		pending = next
	}
}
