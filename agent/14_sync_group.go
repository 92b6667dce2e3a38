package agent

// SyncGroup (key 14), versions 0-5.
//
// After a join phase, the leader sends every member's assignment and each member
// collects its own, through the group coordinator (the metastore's leader). A
// follower's call is held until the leader's arrives (or the rebalance times out);
// since the request does not carry the member's rebalance timeout, the agent waits
// up to the longest allowed (30 minutes), ending sooner if the connection closes.
// v3+ members may be static; v5+ requests name the protocol type and protocol, which
// must match the group's (INCONSISTENT_GROUP_PROTOCOL), and the answer names them.
// A metastore that cannot be reached is NOT_COORDINATOR (see JoinGroup).

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveSyncGroup(c *conn, r *request) reply {
	req := r.msg.(*kmsg.SyncGroupRequest)
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	if req.Group == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return now(resp)
	}
	mreq := &pb.SyncGroupRequest{Group: req.Group, Generation: req.Generation, MemberId: req.MemberID}
	if req.Version >= 3 {
		mreq.InstanceId = req.InstanceID
	}
	if req.Version >= 5 { // absent or null: not checked
		if req.ProtocolType != nil {
			mreq.ProtocolType = *req.ProtocolType
		}
		if req.Protocol != nil {
			mreq.Protocol = *req.Protocol
		}
	}
	for _, a := range req.GroupAssignment {
		mreq.Assignments = append(mreq.Assignments, &pb.GroupAssignment{MemberId: a.MemberID, Assignment: a.MemberAssignment})
	}
	s := c.s
	return later(func() kmsg.Response {
		ctx, cancel := context.WithTimeout(c.ctx, maxGroupWait+groupWaitSlack)
		defer cancel()
		mresp, err := s.meta.SyncGroup(ctx, mreq)
		if err != nil {
			resp.ErrorCode = coordinatorCode(err)
			return resp
		}
		resp.ErrorCode = int16(mresp.ErrorCode)
		resp.ProtocolType = nonEmpty(mresp.ProtocolType)
		resp.Protocol = nonEmpty(mresp.Protocol)
		resp.MemberAssignment = mresp.Assignment
		return resp
	})
}
