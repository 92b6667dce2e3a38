package agent

// Heartbeat (key 12), versions 0-4.
//
// Renews a member's session with the group coordinator (the metastore's leader) and
// tells it whether a rebalance has begun (REBALANCE_IN_PROGRESS), its generation is
// old (ILLEGAL_GENERATION) or it is no longer a member (UNKNOWN_MEMBER_ID,
// FENCED_INSTANCE_ID for a replaced static member, v3+). A metastore that cannot be
// reached is NOT_COORDINATOR (see JoinGroup).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveHeartbeat(c *conn, r *request) reply {
	req := r.msg.(*kmsg.HeartbeatRequest)
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	if req.Group == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return now(resp)
	}
	mreq := &pb.HeartbeatRequest{Group: req.Group, Generation: req.Generation, MemberId: req.MemberID}
	if req.Version >= 3 {
		mreq.InstanceId = req.InstanceID
	}
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.Heartbeat(c.ctx, mreq)
		if err != nil {
			resp.ErrorCode = coordinatorCode(err)
		} else {
			resp.ErrorCode = int16(mresp.ErrorCode)
		}
		return resp
	})
}
