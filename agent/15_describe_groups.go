package agent

// DescribeGroups (key 15), versions 0-5.
//
// Until the group coordinator exists (issue 5), a group with committed offsets is
// described as Kafka describes a group without members: state Empty, no protocol, no
// members; any other group is Dead, with no error, as Kafka answers for a group it
// does not know. Lag tools (kadm's Lag) combine this with OffsetFetch and ListOffsets.

import (
	"math"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// allGroupOperations is every operation on a GROUP resource: there are no ACLs yet.
const allGroupOperations = 1<<kmsg.ACLOperationRead | 1<<kmsg.ACLOperationDescribe | 1<<kmsg.ACLOperationDelete

var invalidGroupID = kerr.InvalidGroupID.Code

func serveDescribeGroups(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DescribeGroupsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.ListGroups(c.ctx, &pb.ListGroupsRequest{})
		for _, g := range req.Groups {
			dg := kmsg.NewDescribeGroupsResponseGroup()
			dg.Group, dg.State = g, "Dead"
			switch {
			case err != nil:
				dg.ErrorCode = kafkaCode(err)
			case g == "":
				dg.ErrorCode = invalidGroupID
			default:
				if _, found := slices.BinarySearch(mresp.Groups, g); found {
					dg.State = "Empty"
				}
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
