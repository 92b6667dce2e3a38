package agent

// LeaveGroup (key 13), versions 0-5.
//
// Removes members from a group at the group coordinator (the metastore's leader),
// which starts a rebalance for those that stay. v0-2 name one member and answer one
// error: the request's, else the member's. v3+ name a batch, by member id or by
// static instance id (KIP-345), and answer each member's error; v5+ give each a
// reason. A metastore that cannot be reached is NOT_COORDINATOR (see JoinGroup).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveLeaveGroup(c *conn, r *request) reply {
	req := r.msg.(*kmsg.LeaveGroupRequest)
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	if req.Group == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return now(resp)
	}
	mreq := &pb.LeaveGroupRequest{Group: req.Group}
	if req.Version < 3 {
		mreq.Members = []*pb.LeavingMember{{MemberId: req.MemberID}}
	}
	for _, m := range req.Members {
		lm := &pb.LeavingMember{MemberId: m.MemberID, InstanceId: m.InstanceID}
		if req.Version >= 5 && m.Reason != nil {
			lm.Reason = *m.Reason
		}
		mreq.Members = append(mreq.Members, lm)
	}
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.LeaveGroup(c.ctx, mreq)
		if err != nil {
			resp.ErrorCode = coordinatorCode(err)
			return resp
		}
		resp.ErrorCode = int16(mresp.ErrorCode)
		for _, m := range mresp.Members {
			if req.Version < 3 {
				if resp.ErrorCode == 0 {
					resp.ErrorCode = int16(m.ErrorCode)
				}
				continue
			}
			rm := kmsg.NewLeaveGroupResponseMember()
			rm.MemberID, rm.InstanceID, rm.ErrorCode = m.MemberId, m.InstanceId, int16(m.ErrorCode)
			resp.Members = append(resp.Members, rm)
		}
		return resp
	})
}
