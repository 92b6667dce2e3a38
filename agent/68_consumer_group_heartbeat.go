package agent

// ConsumerGroupHeartbeat (key 68), versions 0-1: the KIP-848 consumer group protocol.
//
// The coordinator (the metastore's leader) assigns partitions itself. One request
// does everything a member does: join (epoch 0), renew its session, report what it
// owns (Topics), learn its epoch and assignment, and leave (epoch -1, or -2 for a
// static member that will come back). Fields the client leaves null mean "unchanged
// since the last heartbeat" and reach the coordinator as unset. The answer carries an
// assignment only when the coordinator has one to tell.
//
// The agent checks the request's shape as Kafka's coordinator service does, with
// Kafka's messages (INVALID_REQUEST): a group id; a member id unless a v0 member joins
// (v1 members make their own, KIP-1082; v0 members get one from the coordinator); no
// empty instance or rack id; on a join, a rebalance timeout, an empty owned list and a
// subscription (names, or a v1 regex); an instance id to leave with -2; no epoch below
// -2. Everything else (unknown members, fenced epochs, assignor names, regex syntax)
// is the coordinator's to refuse. client_host is "/" and the client's IP.
//
// Deviation: when the metastore cannot be reached, or the heartbeat's outcome is
// unknown, the answer is NOT_COORDINATOR (see JoinGroup) and the agent does not retry:
// the coordinator may have moved the member to a new epoch that only the lost answer
// told, and a client whose heartbeat failed sends a full one next, restating what it
// owns, which is the retry that is safe.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveConsumerGroupHeartbeat(c *conn, r *request) reply {
	req := r.msg.(*kmsg.ConsumerGroupHeartbeatRequest)
	resp := req.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
	if msg := invalidConsumerHeartbeat(req); msg != "" {
		resp.ErrorCode, resp.ErrorMessage = kerr.InvalidRequest.Code, &msg
		return now(resp)
	}
	mreq := &pb.ConsumerHeartbeatRequest{
		Group:              req.Group,
		MemberId:           req.MemberID,
		MemberEpoch:        req.MemberEpoch,
		InstanceId:         req.InstanceID,
		RackId:             req.RackID,
		RebalanceTimeoutMs: req.RebalanceTimeoutMillis,
		SubscriptionSet:    req.SubscribedTopicNames != nil,
		SubscribedTopics:   req.SubscribedTopicNames,
		SubscribedRegex:    req.SubscribedTopicRegex, // nil before v1
		ServerAssignor:     req.ServerAssignor,
		OwnedSet:           req.Topics != nil,
		ClientId:           r.clientID,
		ClientHost:         clientHost(c.nc),
		GenerateMemberId:   req.Version == 0 && req.MemberID == "" && req.MemberEpoch == 0,
	}
	for _, t := range req.Topics {
		mreq.Owned = append(mreq.Owned, &pb.TopicPartitions{TopicId: t.TopicID[:], Partitions: t.Partitions})
	}
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.ConsumerHeartbeat(c.ctx, mreq)
		if err != nil {
			resp.ErrorCode = coordinatorCode(err)
			return resp
		}
		resp.ErrorCode = int16(mresp.ErrorCode)
		resp.ErrorMessage = nonEmpty(mresp.ErrorMessage)
		if resp.ErrorCode != 0 {
			return resp // as Kafka: no member id, epoch 0
		}
		resp.MemberID = nonEmpty(mresp.MemberId)
		resp.MemberEpoch = mresp.MemberEpoch
		resp.HeartbeatIntervalMillis = mresp.HeartbeatIntervalMs
		if mresp.HasAssignment {
			a := kmsg.NewConsumerGroupHeartbeatResponseAssignment()
			for _, tp := range mresp.Assignment {
				at := kmsg.NewConsumerGroupHeartbeatResponseAssignmentTopic()
				copy(at.TopicID[:], tp.TopicId)
				at.Partitions = tp.Partitions
				a.Topics = append(a.Topics, at)
			}
			resp.Assignment = &a
		}
		return resp
	})
}

// Member epochs with a meaning of their own.
const (
	joinEpoch        = 0
	leaveEpoch       = -1
	leaveStaticEpoch = -2 // a static member that will come back
)

// invalidConsumerHeartbeat is why Kafka would refuse req's shape as INVALID_REQUEST,
// in Kafka's words, or "".
func invalidConsumerHeartbeat(req *kmsg.ConsumerGroupHeartbeatRequest) string {
	switch {
	case req.MemberID == "" && (req.Version >= 1 || req.MemberEpoch > 0 || req.MemberEpoch == leaveEpoch):
		return "MemberId can't be empty."
	case req.Group == "":
		return "GroupId can't be empty."
	case req.InstanceID != nil && *req.InstanceID == "":
		return "InstanceId can't be empty."
	case req.RackID != nil && *req.RackID == "":
		return "RackId can't be empty."
	}
	switch {
	case req.MemberEpoch == joinEpoch:
		switch {
		case req.RebalanceTimeoutMillis == -1:
			return "RebalanceTimeoutMs must be provided in first request."
		case req.Topics == nil || len(req.Topics) > 0:
			return "TopicPartitions must be empty when (re-)joining."
		case req.SubscribedTopicNames == nil && req.SubscribedTopicRegex == nil:
			return "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining."
		}
	case req.MemberEpoch == leaveStaticEpoch:
		if req.InstanceID == nil {
			return "InstanceId can't be null."
		}
	case req.MemberEpoch < leaveStaticEpoch:
		return "MemberEpoch is invalid."
	}
	return ""
}
