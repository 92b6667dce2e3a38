package agent

// ListGroups (key 16), versions 0-5.
//
// Until the group coordinator exists (issue 5), the groups are those with committed
// offsets and none has members: each is listed in state Empty, type classic, with no
// protocol type (as Kafka lists a group that only ever committed offsets). The state
// (v4+) and type (v5+) filters apply, case-insensitively.

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveListGroups(c *conn, r *request) reply {
	req := r.msg.(*kmsg.ListGroupsRequest)
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.ListGroups(c.ctx, &pb.ListGroupsRequest{})
		if err != nil {
			resp.ErrorCode = kafkaCode(err)
			return resp
		}
		if !matchesFilter(req.StatesFilter, "Empty") || !matchesFilter(req.TypesFilter, "classic") {
			return resp
		}
		for _, g := range mresp.Groups {
			lg := kmsg.NewListGroupsResponseGroup()
			lg.Group, lg.GroupState, lg.GroupType = g, "Empty", "classic"
			resp.Groups = append(resp.Groups, lg)
		}
		return resp
	})
}

// matchesFilter: an empty filter matches everything.
func matchesFilter(filter []string, v string) bool {
	if len(filter) == 0 {
		return true
	}
	for _, f := range filter {
		if strings.EqualFold(f, v) {
			return true
		}
	}
	return false
}
