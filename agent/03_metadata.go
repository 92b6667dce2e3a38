package agent

// Metadata (key 3), versions 0-13.
//
// Brokers are the live agents (registered, lease unexpired), each with its stable
// node id, advertised host:port and zone as rack. Every agent serves every partition;
// the leader a partition names is a routing hint chosen by rendezvous hashing over
// the agents in the client's zone (strata_zone=... in the client id), or over all
// agents when none is in that zone, so a producer's partitions spread over agents and
// a partition's reads land on one agent whose cache is warm. Replicas and ISR list
// min(replication.factor, agents) agents in rendezvous order, leader first.
//
// Leader epochs are always 0: a partition never changes hands in a way a client
// could observe as truncation. Missing topics are created when auto-creation is on
// and the request allows it (v4+; always allowed before v4), and returned ready to
// use rather than with LEADER_NOT_AVAILABLE. Deviation: the controller is the agent
// with the lowest node id; there is no controller role.

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/topicconfig"
	"github.com/stratalog/strata/objectlog"
)

func serveMetadata(c *conn, r *request) reply {
	req := r.msg.(*kmsg.MetadataRequest)
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	s := c.s
	agents := s.cat.liveAgents()
	brokers := brokersOf(agents)
	for _, b := range brokers {
		mb := kmsg.NewMetadataResponseBroker()
		mb.NodeID, mb.Host, mb.Port, mb.Rack = b.nodeID, b.host, b.port, b.rack
		resp.Brokers = append(resp.Brokers, mb)
	}
	resp.ClusterID = &s.cfg.ClusterID
	resp.ControllerID = controllerOf(brokers)

	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	if all {
		for _, ti := range s.cat.topics() {
			resp.Topics = append(resp.Topics, s.topicMetadata(ti, agents, c.zone))
		}
		return now(resp)
	}
	autoCreate := s.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
	for _, rt := range req.Topics {
		var ti *topicInfo
		var err error
		name := ""
		if rt.Topic != nil {
			name = *rt.Topic
		}
		switch {
		case name == "" && rt.TopicID != [16]byte{}:
			ti, err = s.cat.topicID(c.ctx, objectlog.TopicID(rt.TopicID))
		case name != "":
			ti, err = s.cat.topic(c.ctx, name)
			if err == nil && ti == nil && autoCreate {
				ti, err = s.autoCreate(c, name)
			}
		}
		if ti != nil && err == nil {
			resp.Topics = append(resp.Topics, s.topicMetadata(ti, agents, c.zone))
			continue
		}
		mt := kmsg.NewMetadataResponseTopic()
		if name != "" {
			mt.Topic = &name
		}
		mt.TopicID = rt.TopicID
		switch {
		case err != nil:
			mt.ErrorCode = kafkaCode(err)
		case name == "" && rt.TopicID == [16]byte{}:
			mt.ErrorCode = kerr.InvalidTopicException.Code
		case name == "":
			mt.ErrorCode = kerr.UnknownTopicID.Code
		default:
			mt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		}
		resp.Topics = append(resp.Topics, mt)
	}
	return now(resp)
}

// autoCreate creates a topic with the broker defaults; nil, err with a Kafka-mapped
// error (INVALID_TOPIC_EXCEPTION for a bad name). A concurrent creation by someone
// else is not an error: the topic exists either way.
func (s *Server) autoCreate(c *conn, name string) (*topicInfo, error) {
	if err := topicconfig.ValidTopicName(name); err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalidTopic, err)
	}
	resp, err := s.meta.CreateTopics(c.ctx, &pb.CreateTopicsRequest{Topics: []*pb.TopicSpec{{
		Name:              name,
		Partitions:        s.cfg.DefaultPartitions,
		ReplicationFactor: int32(s.cfg.DefaultReplicationFactor),
	}}})
	if err != nil {
		return nil, err
	}
	for _, tr := range resp.Results {
		switch {
		case tr.Error == pb.ErrorCode_NONE && tr.Topic != nil:
			s.log.Info("agent: auto-created topic", "topic", name, "partitions", tr.Topic.Partitions)
			return s.cat.put(tr.Topic), nil
		case tr.Error == pb.ErrorCode_TOPIC_ALREADY_EXISTS:
			return s.cat.fetch(c.ctx, &pb.TopicRef{Name: name})
		default:
			return nil, metastore.ErrorOf(tr.Error, tr.Message)
		}
	}
	return nil, nil
}

func (s *Server) topicMetadata(ti *topicInfo, agents []*pb.AgentInfo, zone string) kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	name := ti.name
	mt.Topic = &name
	mt.TopicID = ti.id
	rf := int(ti.pb.ReplicationFactor)
	cands := agentsInZone(agents, zone)
	for p := range ti.partitions {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = p
		mp.LeaderEpoch = 0
		if len(cands) == 0 {
			mp.ErrorCode = kerr.LeaderNotAvailable.Code
			mp.Leader = -1
		} else {
			order := rendezvous(cands, ti.id, p)
			mp.Leader = NodeIDOf(order[0].AgentId)
			for i := 0; i < min(max(rf, 1), len(order)); i++ {
				mp.Replicas = append(mp.Replicas, NodeIDOf(order[i].AgentId))
			}
			mp.ISR = mp.Replicas
		}
		mt.Partitions = append(mt.Partitions, mp)
	}
	return mt
}

// agentsInZone returns the agents in zone, or all of them when zone is empty or
// holds none.
func agentsInZone(agents []*pb.AgentInfo, zone string) []*pb.AgentInfo {
	if zone == "" {
		return agents
	}
	var in []*pb.AgentInfo
	for _, a := range agents {
		if a.Zone == zone {
			in = append(in, a)
		}
	}
	if len(in) == 0 {
		return agents
	}
	return in
}

// rendezvous orders agents by their highest-random-weight score for a partition:
// every agent computes the same order, and removing an agent moves only its own
// partitions.
func rendezvous(agents []*pb.AgentInfo, topic objectlog.TopicID, partition int32) []*pb.AgentInfo {
	key := binary.BigEndian.AppendUint32(append([]byte(nil), topic[:]...), uint32(partition))
	return rendezvousKey(agents, key)
}

// rendezvousKey orders agents by their score for any key (a partition, a group id).
func rendezvousKey(agents []*pb.AgentInfo, key []byte) []*pb.AgentInfo {
	type scored struct {
		a     *pb.AgentInfo
		score uint64
	}
	sc := make([]scored, len(agents))
	for i, a := range agents {
		h := fnv.New64a()
		h.Write([]byte(a.AgentId))
		h.Write(key)
		sc[i] = scored{a, mix64(h.Sum64())}
	}
	slices.SortFunc(sc, func(x, y scored) int {
		switch {
		case x.score > y.score:
			return -1
		case x.score < y.score:
			return 1
		}
		return 0
	})
	out := make([]*pb.AgentInfo, len(sc))
	for i := range sc {
		out[i] = sc[i].a
	}
	return out
}

// mix64 is a finalizer that spreads FNV's weak low bits (splitmix64's).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
