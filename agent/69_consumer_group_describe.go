package agent

// ConsumerGroupDescribe (key 69), versions 0-1: KIP-848 consumer groups as their
// coordinator (the metastore's leader) sees them.
//
// Each group's state (Empty, Assigning, Reconciling, Stable), group and assignment
// epochs and assignor, and each member's ids, epoch, client, subscription and two
// assignments: the partitions it owns now (without those it still has to revoke) and
// its target. Topics are named through the agent's catalog; a topic it cannot find
// (deleted since) is left out, as Kafka leaves out topics missing from its metadata.
// Every member is a consumer-protocol member (v1 MemberType 1). An empty group id is
// INVALID_GROUP_ID; a group that is unknown, or not a consumer group, is
// GROUP_ID_NOT_FOUND. A metastore that cannot be reached is NOT_COORDINATOR for every
// group (see JoinGroup). Every operation is authorized: there are no ACLs yet.

import (
	"context"
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// consumerMemberType is ConsumerGroupDescribe's MemberType of a member that speaks
// the consumer protocol (0 is a classic member of a consumer group, which Strata does
// not have).
const consumerMemberType = 1

func serveConsumerGroupDescribe(c *conn, r *request) reply {
	req := r.msg.(*kmsg.ConsumerGroupDescribeRequest)
	resp := req.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
	s := c.s
	return later(func() kmsg.Response {
		described, err := describeNamed(req.Groups, func(named []string) ([]*pb.ConsumerGroupDescription, error) {
			mresp, err := s.meta.ConsumerGroupDescribe(c.ctx, &pb.ConsumerGroupDescribeRequest{Groups: named})
			return mresp.GetGroups(), err
		}, (*pb.ConsumerGroupDescription).GetGroup)
		names := topicNames{ctx: c.ctx, cat: s.cat, known: map[objectlog.TopicID]string{}}
		for _, g := range req.Groups {
			dg := kmsg.NewConsumerGroupDescribeResponseGroup()
			dg.Group = g
			d := described[g]
			switch {
			case g == "":
				dg.ErrorCode = kerr.InvalidGroupID.Code
			case err != nil:
				dg.ErrorCode = coordinatorCode(err)
			case d == nil:
				dg.ErrorCode = kerr.GroupIDNotFound.Code
				dg.ErrorMessage = kmsg.StringPtr("Group " + g + " not found.")
			default:
				describeConsumerGroup(&dg, d, &names)
			}
			dg.AuthorizedOperations = math.MinInt32 // Kafka's "not asked for"
			if req.IncludeAuthorizedOperations {
				dg.AuthorizedOperations = allGroupOperations
			}
			resp.Groups = append(resp.Groups, dg)
		}
		return resp
	})
}

// describeConsumerGroup fills dg from the coordinator's description.
func describeConsumerGroup(dg *kmsg.ConsumerGroupDescribeResponseGroup, d *pb.ConsumerGroupDescription, names *topicNames) {
	dg.ErrorCode = int16(d.ErrorCode)
	dg.ErrorMessage = nonEmpty(d.ErrorMessage)
	if dg.ErrorCode != 0 {
		return
	}
	dg.State, dg.Epoch, dg.AssignmentEpoch, dg.AssignorName = d.State, d.GroupEpoch, d.AssignmentEpoch, d.Assignor
	for _, m := range d.Members {
		dm := kmsg.NewConsumerGroupDescribeResponseGroupMember()
		dm.MemberID, dm.InstanceID, dm.RackID = m.MemberId, m.InstanceId, nonEmpty(m.RackId)
		dm.MemberEpoch = m.MemberEpoch
		dm.ClientID, dm.ClientHost = m.ClientId, m.ClientHost
		dm.SubscribedTopics = m.SubscribedTopics
		dm.SubscribedTopicRegex = nonEmpty(m.SubscribedRegex)
		dm.Assignment.TopicPartitions = names.assignment(m.Assigned)
		dm.TargetAssignment.TopicPartitions = names.assignment(m.Target)
		dm.MemberType = consumerMemberType
		dg.Members = append(dg.Members, dm)
	}
}

// topicNames names topic ids for one response, asking the catalog once per id.
type topicNames struct {
	ctx   context.Context
	cat   *catalog
	known map[objectlog.TopicID]string // "": not found
}

func (n *topicNames) name(id objectlog.TopicID) string {
	if name, ok := n.known[id]; ok {
		return name
	}
	name := ""
	if ti, err := n.cat.topicID(n.ctx, id); err == nil && ti != nil {
		name = ti.name
	}
	n.known[id] = name
	return name
}

// assignment is tps with topic names, without the topics that have none.
func (n *topicNames) assignment(tps []*pb.TopicPartitions) []kmsg.AssignmentTopicPartition {
	var out []kmsg.AssignmentTopicPartition
	for _, tp := range tps {
		var id objectlog.TopicID
		copy(id[:], tp.TopicId)
		name := n.name(id)
		if name == "" {
			continue
		}
		at := kmsg.NewAssignmentTopicPartition()
		at.TopicID, at.Topic, at.Partitions = id, name, tp.Partitions
		out = append(out, at)
	}
	return out
}
