package agent

// CreateTopics (key 19), versions 0-7.
//
// Each topic is checked here for what only the request can tell (a name given twice:
// INVALID_REQUEST, answered once per name as Kafka does; counts and a replica
// assignment that disagree: INVALID_REQUEST; a malformed assignment:
// INVALID_REPLICA_ASSIGNMENT; null or repeated config values: INVALID_CONFIG), then
// the metastore creates the rest in one Raft entry and checks names, counts and
// config values (INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS,
// INVALID_REPLICATION_FACTOR, INVALID_CONFIG, TOPIC_ALREADY_EXISTS). NumPartitions
// and ReplicationFactor -1 take the broker defaults (num.partitions,
// default.replication.factor); a replica assignment decides both. ValidateOnly (v1+)
// checks everything and creates nothing. Created topics are put in the catalog at
// once, so a Metadata request that follows on any connection of this agent sees them.
//
// v5+ answers carry the partition count, replication factor and every config with
// its source (as DescribeConfigs lists them); v7 the topic id.
//
// The agent picks the topic id, so a create the metastore client retries after an
// ambiguous outcome is recognised as the same create rather than reported as
// TOPIC_ALREADY_EXISTS. TimeoutMillis bounds the wait (REQUEST_TIMED_OUT past it; the
// topic may still be created, as in Kafka).
//
// Deviations: the replication factor is recorded and reported but may exceed the
// number of agents (durability comes from object storage, not replicas); broker ids
// in a replica assignment are not checked, since every agent serves every partition.

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveCreateTopics(c *conn, r *request) reply {
	req := r.msg.(*kmsg.CreateTopicsRequest)
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	s := c.s
	return later(func() kmsg.Response {
		ctx, cancel := requestContext(c.ctx, req.TimeoutMillis)
		defer cancel()

		count := map[string]int{}
		for _, rt := range req.Topics {
			count[rt.Topic]++
		}
		type pending struct {
			idx  int // into resp.Topics
			spec *pb.TopicSpec
		}
		var todo []pending
		answered := map[string]bool{}
		for _, rt := range req.Topics {
			if count[rt.Topic] > 1 {
				if !answered[rt.Topic] {
					answered[rt.Topic] = true
					st := createTopicsError(rt.Topic, fmt.Errorf("%w: topic %q appears more than once in the request", errInvalidRequest, rt.Topic))
					resp.Topics = append(resp.Topics, st)
				}
				continue
			}
			spec, err := s.topicSpec(rt)
			if err != nil {
				resp.Topics = append(resp.Topics, createTopicsError(rt.Topic, err))
				continue
			}
			todo = append(todo, pending{len(resp.Topics), spec})
			resp.Topics = append(resp.Topics, kmsg.NewCreateTopicsResponseTopic())
		}
		if len(todo) == 0 {
			return resp
		}

		specs := make([]*pb.TopicSpec, len(todo))
		for i, p := range todo {
			specs[i] = p.spec
		}
		mresp, err := s.meta.CreateTopics(ctx, &pb.CreateTopicsRequest{Topics: specs, ValidateOnly: req.ValidateOnly})
		for i, p := range todo {
			st := &resp.Topics[p.idx]
			name := p.spec.Name
			var tr *pb.TopicResult
			if err == nil && i < len(mresp.Results) {
				tr = mresp.Results[i]
			}
			switch {
			case err != nil:
				*st = createTopicsError(name, err)
			case tr == nil:
				*st = createTopicsError(name, fmt.Errorf("agent: metastore answered %d of %d topics", len(mresp.Results), len(specs)))
			case tr.Error != pb.ErrorCode_NONE:
				*st = createTopicsError(name, metastore.ErrorOf(tr.Error, tr.Message))
			case tr.Topic == nil:
				*st = createTopicsError(name, fmt.Errorf("agent: metastore answered without the topic %q", name))
			default:
				if !req.ValidateOnly {
					s.cat.put(tr.Topic)
					s.log.Info("agent: created topic", "topic", name, "partitions", tr.Topic.Partitions)
				}
				*st = s.createdTopic(tr.Topic)
			}
		}
		return resp
	})
}

// requestContext bounds a request by its TimeoutMillis; zero or less leaves the
// metastore client's own deadline.
func requestContext(ctx context.Context, timeoutMillis int32) (context.Context, context.CancelFunc) {
	if timeoutMillis <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Duration(timeoutMillis)*time.Millisecond)
}

func createTopicsError(name string, err error) kmsg.CreateTopicsResponseTopic {
	st := kmsg.NewCreateTopicsResponseTopic()
	st.Topic = name
	st.ErrorCode, st.ErrorMessage = kafkaCode(err), errMessage(err)
	st.NumPartitions, st.ReplicationFactor = -1, -1
	return st
}

// topicSpec turns a request topic into what the metastore creates.
func (s *Server) topicSpec(rt kmsg.CreateTopicsRequestTopic) (*pb.TopicSpec, error) {
	spec := &pb.TopicSpec{Name: rt.Topic, TopicId: metastore.NewTopicID(), Partitions: rt.NumPartitions, ReplicationFactor: int32(rt.ReplicationFactor)}
	if len(rt.ReplicaAssignment) > 0 {
		n := int32(len(rt.ReplicaAssignment))
		rf := int32(len(rt.ReplicaAssignment[0].Replicas))
		if (rt.NumPartitions != -1 && rt.NumPartitions != n) || (rt.ReplicationFactor != -1 && int32(rt.ReplicationFactor) != rf) {
			return nil, fmt.Errorf("%w: %d partitions with replication factor %d disagree with the replica assignment (%d partitions of %d replicas)",
				errInvalidRequest, rt.NumPartitions, rt.ReplicationFactor, n, rf)
		}
		seen := make([]bool, n)
		for _, a := range rt.ReplicaAssignment {
			if a.Partition < 0 || a.Partition >= n || seen[a.Partition] {
				return nil, fmt.Errorf("%w: it must list partitions 0 to %d once each", errInvalidAssignment, n-1)
			}
			seen[a.Partition] = true
			if int32(len(a.Replicas)) != rf || rf == 0 {
				return nil, fmt.Errorf("%w: every partition needs the same, non-zero number of replicas", errInvalidAssignment)
			}
		}
		spec.Partitions, spec.ReplicationFactor = n, rf
	}
	if spec.Partitions == -1 {
		spec.Partitions = s.cfg.DefaultPartitions
	}
	if spec.ReplicationFactor == -1 {
		spec.ReplicationFactor = int32(s.cfg.DefaultReplicationFactor)
	}
	// Other counts below 1 are the metastore's to refuse (INVALID_PARTITIONS,
	// INVALID_REPLICATION_FACTOR), with the one message for them.
	for _, cfg := range rt.Configs {
		if cfg.Value == nil {
			return nil, fmt.Errorf("%w: null value for config %q", metastore.ErrInvalidConfig, cfg.Name)
		}
		if spec.Configs == nil {
			spec.Configs = map[string]string{}
		}
		if _, dup := spec.Configs[cfg.Name]; dup {
			return nil, fmt.Errorf("%w: config %q given twice", metastore.ErrInvalidConfig, cfg.Name)
		}
		spec.Configs[cfg.Name] = *cfg.Value
	}
	return spec, nil
}

// createdTopic is the answer for a topic created (or, validating only, creatable).
func (s *Server) createdTopic(t *pb.Topic) kmsg.CreateTopicsResponseTopic {
	st := kmsg.NewCreateTopicsResponseTopic()
	st.Topic = t.Name
	copy(st.TopicID[:], t.TopicId)
	st.NumPartitions = t.Partitions
	st.ReplicationFactor = int16(min(t.ReplicationFactor, 1<<15-1))
	for _, e := range s.topicConfigEntries(t, nil, false, false) {
		cc := kmsg.NewCreateTopicsResponseTopicConfig()
		cc.Name, cc.Value, cc.ReadOnly, cc.Source, cc.IsSensitive = e.Name, e.Value, e.ReadOnly, int8(e.Source), e.IsSensitive
		st.Configs = append(st.Configs, cc)
	}
	return st
}
