package agent

// JoinGroup (key 11), versions 0-9.
//
// The group coordinator is the metastore's leader, for every group: the agent passes
// the join on and answers what the coordinator decided, with Kafka's error codes. The
// call is held until the join phase completes, for up to the member's rebalance
// timeout (v0 has none: its session timeout, as Kafka uses). v4+ members without an
// id get MEMBER_ID_REQUIRED and an id to rejoin with (KIP-394); v5+ may be static
// (KIP-345); v9+ leaders of a static group may skip the assignment (KIP-814).
// client_host is "/" and the client's IP, as Kafka shows it.
//
// Deviation: when the metastore cannot be reached, or the join's outcome is unknown,
// the answer is NOT_COORDINATOR, as from a Kafka coordinator that moved: the client
// finds the coordinator again and rejoins.

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

const (
	// maxGroupWait bounds how long a JoinGroup or SyncGroup may be held: Kafka's
	// group.max.session.timeout.ms default, above any sensible rebalance timeout.
	maxGroupWait = 30 * time.Minute
	// groupWaitSlack is what a held call gets beyond the rebalance timeout, so the
	// coordinator's own timer answers first.
	groupWaitSlack = 5 * time.Second
)

func serveJoinGroup(c *conn, r *request) reply {
	req := r.msg.(*kmsg.JoinGroupRequest)
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation, resp.MemberID = -1, req.MemberID
	if req.Group == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return now(resp)
	}
	rebalance := req.RebalanceTimeoutMillis
	if req.Version < 1 {
		rebalance = req.SessionTimeoutMillis
	}
	mreq := &pb.JoinGroupRequest{
		Group:              req.Group,
		MemberId:           req.MemberID,
		ProtocolType:       req.ProtocolType,
		SessionTimeoutMs:   req.SessionTimeoutMillis,
		RebalanceTimeoutMs: rebalance,
		ClientId:           r.clientID,
		ClientHost:         clientHost(c.nc),
		RequireMemberId:    req.Version >= 4,
		CanSkipAssignment:  req.Version >= 9,
	}
	if req.Version >= 5 {
		mreq.InstanceId = req.InstanceID
	}
	if req.Version >= 8 && req.Reason != nil {
		mreq.Reason = *req.Reason
	}
	for _, p := range req.Protocols {
		mreq.Protocols = append(mreq.Protocols, &pb.GroupProtocol{Name: p.Name, Metadata: p.Metadata})
	}
	s := c.s
	return later(func() kmsg.Response {
		ctx, cancel := groupWaitContext(c.ctx, rebalance)
		defer cancel()
		mresp, err := s.meta.JoinGroup(ctx, mreq)
		if err != nil {
			resp.ErrorCode = coordinatorCode(err)
			return resp
		}
		resp.ErrorCode = int16(mresp.ErrorCode)
		resp.Generation = mresp.Generation
		resp.ProtocolType = nonEmpty(mresp.ProtocolType)
		resp.Protocol = nonEmpty(mresp.Protocol)
		resp.LeaderID = mresp.Leader
		resp.MemberID = mresp.MemberId
		resp.SkipAssignment = mresp.SkipAssignment
		for _, m := range mresp.Members {
			rm := kmsg.NewJoinGroupResponseMember()
			rm.MemberID, rm.InstanceID = m.MemberId, m.InstanceId
			if len(m.Protocols) > 0 {
				rm.ProtocolMetadata = m.Protocols[0].Metadata
			}
			resp.Members = append(resp.Members, rm)
		}
		return resp
	})
}

// groupWaitContext is the context of a call the coordinator may hold for up to a
// member's rebalance timeout: that long and some slack, within maxGroupWait, ending
// sooner when the connection closes.
func groupWaitContext(ctx context.Context, rebalanceMs int32) (context.Context, context.CancelFunc) {
	d := min(time.Duration(max(rebalanceMs, 0))*time.Millisecond, maxGroupWait)
	return context.WithTimeout(ctx, d+groupWaitSlack)
}

// coordinatorCode is the Kafka code of a group coordinator call (JoinGroup, SyncGroup,
// Heartbeat, LeaveGroup, DescribeGroups, DeleteGroups) that failed as a whole. A
// refusal the metastore typed keeps its code; anything else (no leader, the call
// timed out, its outcome is unknown) is NOT_COORDINATOR: retriable, and it sends the
// client to FindCoordinator, as when a Kafka coordinator moves.
func coordinatorCode(err error) int16 {
	var me *metastore.Error
	if errors.As(err, &me) && me.Code != pb.ErrorCode_NOT_LEADER {
		return kafkaCode(err)
	}
	return kerr.NotCoordinator.Code
}

// clientHost is a connection's client as Kafka's group tools show it: "/" and the IP.
func clientHost(nc net.Conn) string {
	addr := nc.RemoteAddr()
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return "/" + tcp.IP.String()
	}
	if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		return "/" + host
	}
	return "/" + addr.String()
}

// nonEmpty is a nullable string: nil for "".
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
