package agent

// ListGroups (key 16), versions 0-5.
//
// Every group the metastore holds state for (committed offsets or a coordinator's
// record), with its protocol type, state (v4+) and type (v5+: "classic", or
// "consumer" for a KIP-848 group) as the coordinator sees it; a group with only
// committed offsets is a classic group, Empty with no protocol type, as Kafka lists
// it. The state (v4+, KIP-518) and type (v5+, KIP-848) filters apply,
// case-insensitively.

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
		for i, g := range mresp.Groups {
			lg := kmsg.NewListGroupsResponseGroup()
			lg.Group, lg.GroupState, lg.GroupType = g, "Empty", "classic"
			if i < len(mresp.Listed) {
				l := mresp.Listed[i]
				lg.ProtocolType = l.ProtocolType
				if l.State != "" {
					lg.GroupState = l.State
				}
				if l.GroupType != "" {
					lg.GroupType = l.GroupType
				}
			}
			if matchesFilter(req.StatesFilter, lg.GroupState) && matchesFilter(req.TypesFilter, lg.GroupType) {
				resp.Groups = append(resp.Groups, lg)
			}
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
