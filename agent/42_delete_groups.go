package agent

// DeleteGroups (key 42), versions 0-2.
//
// Deletes a group's committed offsets and its coordinator record. A group that still
// has members is NON_EMPTY_GROUP, as in Kafka; a group without state is
// GROUP_ID_NOT_FOUND. A metastore that cannot be reached is NOT_COORDINATOR for every
// group (see JoinGroup).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveDeleteGroups(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DeleteGroupsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	s := c.s
	return later(func() kmsg.Response {
		var groups []string
		for _, g := range req.Groups {
			if g != "" {
				groups = append(groups, g)
			}
		}
		results := map[string]int16{}
		if len(groups) > 0 {
			mresp, err := s.meta.DeleteGroups(c.ctx, &pb.DeleteGroupsRequest{Groups: groups})
			for i, g := range groups {
				switch {
				case err != nil:
					results[g] = coordinatorCode(err)
				case i < len(mresp.Results) && mresp.Results[i].Error == pb.ErrorCode_GROUP_NOT_FOUND:
					results[g] = kerr.GroupIDNotFound.Code
				case i < len(mresp.Results):
					results[g] = kafkaCode(errOf(mresp.Results[i].Error))
				default:
					results[g] = kerr.UnknownServerError.Code
				}
			}
		}
		for _, g := range req.Groups {
			dg := kmsg.NewDeleteGroupsResponseGroup()
			dg.Group = g
			if g == "" {
				dg.ErrorCode = invalidGroupID
			} else {
				dg.ErrorCode = results[g]
			}
			resp.Groups = append(resp.Groups, dg)
		}
		return resp
	})
}
