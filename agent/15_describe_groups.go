package agent

// DescribeGroups (key 15), versions 0-5.
//
// Groups as their coordinator (the metastore's leader) sees them: state (Empty,
// PreparingRebalance, CompletingRebalance, Stable, Dead), protocol type, protocol,
// and the members with their client id, client host, static instance id (v4+), the
// selected protocol's metadata and their assignment. A group with only committed
// offsets is Empty with no protocol; a group the metastore does not know is Dead
// with no error, as Kafka answers before v6. A metastore that cannot be reached is
// NOT_COORDINATOR for every group (see JoinGroup). Every operation is authorized:
// there are no ACLs yet.

import (
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// allGroupOperations is every operation on a GROUP resource: there are no ACLs yet.
const allGroupOperations = 1<<kmsg.ACLOperationRead | 1<<kmsg.ACLOperationDescribe | 1<<kmsg.ACLOperationDelete

var invalidGroupID = kerr.InvalidGroupID.Code

// describeNamed asks the coordinator (through call) to describe the groups that
// have a name, and returns the descriptions by group.
func describeNamed[D any](groups []string, call func([]string) ([]D, error), group func(D) string) (map[string]D, error) {
	var named []string
	for _, g := range groups {
		if g != "" {
			named = append(named, g)
		}
	}
	described := map[string]D{}
	if len(named) == 0 {
		return described, nil
	}
	ds, err := call(named)
	for _, d := range ds {
		described[group(d)] = d
	}
	return described, err
}

func serveDescribeGroups(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DescribeGroupsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	s := c.s
	return later(func() kmsg.Response {
		described, err := describeNamed(req.Groups, func(named []string) ([]*pb.GroupDescription, error) {
			mresp, err := s.meta.DescribeGroups(c.ctx, &pb.DescribeGroupsRequest{Groups: named})
			return mresp.GetGroups(), err
		}, (*pb.GroupDescription).GetGroup)
		for _, g := range req.Groups {
			dg := kmsg.NewDescribeGroupsResponseGroup()
			dg.Group, dg.State = g, "Dead"
			d := described[g]
			switch {
			case g == "":
				dg.ErrorCode = invalidGroupID
			case err != nil:
				dg.ErrorCode = coordinatorCode(err)
			case d == nil || d.ErrorCode == int32(kerr.GroupIDNotFound.Code):
				// Unknown: Dead with no error (GROUP_ID_NOT_FOUND is v6+).
			default:
				describeGroup(&dg, d)
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

// describeGroup fills dg from the coordinator's description.
func describeGroup(dg *kmsg.DescribeGroupsResponseGroup, d *pb.GroupDescription) {
	dg.ErrorCode = int16(d.ErrorCode)
	if d.State != "" {
		dg.State = d.State
	}
	dg.ProtocolType, dg.Protocol = d.ProtocolType, d.Protocol
	for _, m := range d.Members {
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.InstanceID = m.MemberId, m.InstanceId
		dm.ClientID, dm.ClientHost = m.ClientId, m.ClientHost
		if len(m.Protocols) > 0 {
			dm.ProtocolMetadata = m.Protocols[0].Metadata
		}
		dm.MemberAssignment = m.Assignment
		dg.Members = append(dg.Members, dm)
	}
}
