package agent

// DescribeProducers (key 61), version 0.
//
// The idempotent and transactional producers the metastore holds state for in each
// partition asked (KIP-664): producer id and epoch, the last sequence written (-1
// when none is kept), the last batch's timestamp, and the first offset of the
// producer's open transaction there (-1 when none). Any agent answers for any
// partition, since that state lives in the metastore. An unknown topic or partition
// is UNKNOWN_TOPIC_OR_PARTITION; a metastore that cannot be reached gives each
// partition a retriable code.
//
// Deviation: the coordinator epoch is always -1, since Strata's transaction
// coordinator has no epochs (it is the metastore's Raft leader, and markers are
// written in its own log entry, not sent to partition leaders).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveDescribeProducers(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DescribeProducersRequest)
	resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
	s := c.s
	return later(func() kmsg.Response {
		// slot is where a partition asked of the metastore goes in resp.
		type slot struct{ t, p int }
		var (
			refs  []*pb.PartitionRef
			slots []slot
		)
		for i, rt := range req.Topics {
			dt := kmsg.NewDescribeProducersResponseTopic()
			dt.Topic = rt.Topic
			ti, err := s.cat.topic(c.ctx, rt.Topic)
			for j, p := range rt.Partitions {
				dp := kmsg.NewDescribeProducersResponseTopicPartition()
				dp.Partition = p
				switch {
				case err != nil:
					dp.ErrorCode = retriableCode(err)
				case ti == nil || p < 0 || p >= ti.partitions:
					dp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				default:
					refs = append(refs, &pb.PartitionRef{TopicId: ti.id[:], Partition: p})
					slots = append(slots, slot{i, j})
				}
				dt.Partitions = append(dt.Partitions, dp)
			}
			resp.Topics = append(resp.Topics, dt)
		}
		if len(refs) == 0 {
			return resp
		}
		mresp, err := s.meta.DescribeProducers(c.ctx, &pb.DescribeProducersRequest{Partitions: refs})
		for k, sl := range slots {
			dp := &resp.Topics[sl.t].Partitions[sl.p]
			switch {
			case err != nil:
				dp.ErrorCode = retriableCode(err)
			case k >= len(mresp.Partitions):
				dp.ErrorCode = kerr.UnknownServerError.Code
			case mresp.Partitions[k].Error != pb.ErrorCode_NONE:
				dp.ErrorCode = kafkaCode(errOf(mresp.Partitions[k].Error))
			default:
				for _, ap := range mresp.Partitions[k].Producers {
					p := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
					p.ProducerID, p.ProducerEpoch = ap.ProducerId, ap.ProducerEpoch
					p.LastSequence, p.LastTimestamp = ap.LastSequence, ap.LastTimestampMs
					p.CoordinatorEpoch, p.CurrentTxnStartOffset = -1, ap.TxnStartOffset
					dp.ActiveProducers = append(dp.ActiveProducers, p)
				}
			}
		}
		return resp
	})
}

// retriableCode is the Kafka code of a read that failed: what the metastore said,
// or, when it could not say, REQUEST_TIMED_OUT, which clients retry.
func retriableCode(err error) int16 {
	if code := kafkaCode(err); code != kerr.UnknownServerError.Code {
		return code
	}
	return kerr.RequestTimedOut.Code
}
