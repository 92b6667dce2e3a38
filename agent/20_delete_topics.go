package agent

// DeleteTopics (key 20), versions 0-6 (v6 names topics by name or by id).
//
// The metastore deletes the topics in one Raft entry: the topic, its partition heads
// and offset index go at once, and its segments lose their references so garbage
// collection removes the objects later. The topics leave this agent's catalog at
// once; other agents drop them when the watch delivers the deletion. An unknown name
// is UNKNOWN_TOPIC_OR_PARTITION, an unknown id UNKNOWN_TOPIC_ID. A topic named twice
// in one request, or a v6 entry with both or neither of name and id, is
// INVALID_REQUEST. TimeoutMillis bounds the wait (REQUEST_TIMED_OUT past it; the
// deletion may still happen).

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

func serveDeleteTopics(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DeleteTopicsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	s := c.s
	// One list for every version: v0-5 send names only.
	topics := req.Topics
	if req.Version < 6 {
		topics = nil
		for _, name := range req.TopicNames {
			t := kmsg.NewDeleteTopicsRequestTopic()
			t.Topic = ptr(name)
			topics = append(topics, t)
		}
	}
	return later(func() kmsg.Response {
		ctx, cancel := requestContext(c.ctx, req.TimeoutMillis)
		defer cancel()

		key := func(t kmsg.DeleteTopicsRequestTopic) string {
			if t.Topic != nil && *t.Topic != "" {
				return "n:" + *t.Topic
			}
			return "i:" + string(t.TopicID[:])
		}
		count := map[string]int{}
		for _, t := range topics {
			count[key(t)]++
		}
		type pending struct {
			idx  int
			byID bool
		}
		var todo []pending
		var refs []*pb.TopicRef
		answered := map[string]bool{}
		for _, t := range topics {
			st := kmsg.NewDeleteTopicsResponseTopic()
			st.Topic, st.TopicID = t.Topic, t.TopicID
			hasName := t.Topic != nil && *t.Topic != ""
			hasID := t.TopicID != [16]byte{}
			var err error
			switch {
			case count[key(t)] > 1:
				if answered[key(t)] {
					continue
				}
				answered[key(t)] = true
				err = fmt.Errorf("%w: topic named more than once in the request", errInvalidRequest)
			case hasName && hasID:
				err = fmt.Errorf("%w: name a topic by name or by id, not both", errInvalidRequest)
			case hasID:
				refs = append(refs, &pb.TopicRef{TopicId: t.TopicID[:]})
				todo = append(todo, pending{len(resp.Topics), true})
			case hasName:
				refs = append(refs, &pb.TopicRef{Name: *t.Topic})
				todo = append(todo, pending{len(resp.Topics), false})
			case req.Version >= 6:
				err = fmt.Errorf("%w: topic without a name or an id", errInvalidRequest)
			default:
				err = fmt.Errorf("%w: empty topic name", errUnknownTopic)
			}
			if err != nil {
				st.ErrorCode, st.ErrorMessage = kafkaCode(err), errMessage(err)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if len(refs) == 0 {
			return resp
		}
		mresp, err := s.meta.DeleteTopics(ctx, &pb.DeleteTopicsRequest{Topics: refs})
		for i, p := range todo {
			st := &resp.Topics[p.idx]
			terr := err
			if terr == nil {
				if i >= len(mresp.Results) {
					terr = fmt.Errorf("agent: metastore answered %d of %d topics", len(mresp.Results), len(refs))
				} else if tr := mresp.Results[i]; tr.Error != pb.ErrorCode_NONE {
					terr = metastore.ErrorOf(tr.Error, tr.Message)
				} else {
					var id objectlog.TopicID
					copy(id[:], tr.TopicId)
					s.cat.drop(id)
					st.Topic, st.TopicID = ptr(tr.Name), id
					s.log.Info("agent: deleted topic", "topic", tr.Name)
					continue
				}
			}
			st.ErrorCode, st.ErrorMessage = kafkaCode(terr), errMessage(terr)
			if p.byID && st.ErrorCode == kerr.UnknownTopicOrPartition.Code {
				st.ErrorCode = kerr.UnknownTopicID.Code
			}
		}
		return resp
	})
}
