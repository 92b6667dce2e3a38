package agent

// OffsetForLeaderEpoch (key 23), versions 0-4.
//
// Every partition has had leader epoch 0 for all time: data is never truncated by a
// leader change, so the only epoch a client can have seen is 0. Asked for epoch 0,
// the answer is epoch 0 ending at the high watermark, read from the metastore (not
// the cache: a stale, lower end offset would make a consumer believe its log was
// truncated). Asked for a larger epoch, or -1, the answer is Kafka's "no such epoch":
// epoch -1 and end offset -1, without an error. A CurrentLeaderEpoch above 0 (v2+) is
// UNKNOWN_LEADER_EPOCH (the client knows of an epoch this cluster never had); -1
// means unchecked. Unknown topics and partitions are UNKNOWN_TOPIC_OR_PARTITION.
// ReplicaID (v3+) is ignored: there are no follower replicas.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func serveOffsetForLeaderEpoch(c *conn, r *request) reply {
	req := r.msg.(*kmsg.OffsetForLeaderEpochRequest)
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	s := c.s
	return later(func() kmsg.Response {
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetForLeaderEpochResponseTopic()
			st.Topic = rt.Topic
			ti, terr := s.cat.topic(c.ctx, rt.Topic)
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.LeaderEpoch, sp.EndOffset = -1, -1
				switch {
				case terr != nil:
					sp.ErrorCode = kafkaCode(terr)
				case ti == nil || rp.Partition < 0 || rp.Partition >= ti.partitions:
					sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				case req.Version >= 2 && rp.CurrentLeaderEpoch > 0:
					sp.ErrorCode = kerr.UnknownLeaderEpoch.Code
				case rp.LeaderEpoch != 0:
				default:
					hwm, _, _, err := s.rd.head(c.ctx, partKey{ti.id, rp.Partition}, true)
					if err != nil {
						sp.ErrorCode = kafkaCode(err)
						break
					}
					sp.LeaderEpoch, sp.EndOffset = 0, hwm
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	})
}
