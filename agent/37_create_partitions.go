package agent

// CreatePartitions (key 37), versions 0-3.
//
// Count is the new total. The metastore grows the topics in one Raft entry: new
// partitions start empty at offset 0 and existing ones are untouched. A count that
// does not grow the topic, or exceeds the metastore's limit, is INVALID_PARTITIONS; an
// unknown topic UNKNOWN_TOPIC_OR_PARTITION; a topic named twice INVALID_REQUEST. An
// assignment, when given, must have one entry per new partition
// (INVALID_REPLICA_ASSIGNMENT otherwise); its broker ids are not used, since every
// agent serves every partition. ValidateOnly checks and changes nothing. Grown topics
// are put in the catalog at once. TimeoutMillis bounds the wait.

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveCreatePartitions(c *conn, r *request) reply {
	req := r.msg.(*kmsg.CreatePartitionsRequest)
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	s := c.s
	return later(func() kmsg.Response {
		ctx, cancel := requestContext(c.ctx, req.TimeoutMillis)
		defer cancel()

		count := map[string]int{}
		for _, rt := range req.Topics {
			count[rt.Topic]++
		}
		var todo []int // indexes into resp.Topics
		var growths []*pb.PartitionGrowth
		answered := map[string]bool{}
		for _, rt := range req.Topics {
			st := kmsg.NewCreatePartitionsResponseTopic()
			st.Topic = rt.Topic
			var err error
			switch {
			case count[rt.Topic] > 1:
				if answered[rt.Topic] {
					continue
				}
				answered[rt.Topic] = true
				err = fmt.Errorf("%w: topic %q appears more than once in the request", errInvalidRequest, rt.Topic)
			case rt.Assignment != nil:
				err = s.checkNewAssignment(c, rt)
			}
			if err != nil {
				st.ErrorCode, st.ErrorMessage = kafkaCode(err), errMessage(err)
				resp.Topics = append(resp.Topics, st)
				continue
			}
			todo = append(todo, len(resp.Topics))
			growths = append(growths, &pb.PartitionGrowth{Topic: &pb.TopicRef{Name: rt.Topic}, Total: rt.Count})
			resp.Topics = append(resp.Topics, st)
		}
		if len(growths) == 0 {
			return resp
		}
		mresp, err := s.meta.CreatePartitions(ctx, &pb.CreatePartitionsRequest{Topics: growths, ValidateOnly: req.ValidateOnly})
		for i, idx := range todo {
			st := &resp.Topics[idx]
			terr := err
			if terr == nil {
				if i >= len(mresp.Results) {
					terr = fmt.Errorf("agent: metastore answered %d of %d topics", len(mresp.Results), len(growths))
				} else if tr := mresp.Results[i]; tr.Error != pb.ErrorCode_NONE {
					terr = metastore.ErrorOf(tr.Error, tr.Message)
				} else {
					if !req.ValidateOnly && tr.Topic != nil {
						s.cat.put(tr.Topic)
						s.log.Info("agent: grew topic", "topic", tr.Name, "partitions", tr.Topic.Partitions)
					}
					continue
				}
			}
			st.ErrorCode, st.ErrorMessage = kafkaCode(terr), errMessage(terr)
		}
		return resp
	})
}

// checkNewAssignment checks an assignment has one entry of replicas per partition
// added. The current count is the catalog's: the metastore checks the growth itself.
func (s *Server) checkNewAssignment(c *conn, rt kmsg.CreatePartitionsRequestTopic) error {
	ti, err := s.cat.topic(c.ctx, rt.Topic)
	if err != nil {
		return err
	}
	if ti == nil {
		return fmt.Errorf("%w: %q", errUnknownTopic, rt.Topic)
	}
	if rt.Count <= ti.partitions {
		return nil // the metastore refuses it with INVALID_PARTITIONS
	}
	if want := rt.Count - ti.partitions; int32(len(rt.Assignment)) != want {
		return fmt.Errorf("%w: %d entries for %d new partitions", errInvalidAssignment, len(rt.Assignment), want)
	}
	for _, a := range rt.Assignment {
		if len(a.Replicas) == 0 {
			return fmt.Errorf("%w: a new partition without replicas", errInvalidAssignment)
		}
	}
	return nil
}
