package agent

// FindCoordinator (key 10), versions 0-6 (v4+ batched).
//
// Any agent can act for any group or transactional id, since the coordinator state lives
// in the metastore; the agent named is chosen by rendezvous hashing of the key over the
// live agents of the client's zone, so one group's requests gather on one agent.
// Key types: 0 group, 1 transaction; others are INVALID_REQUEST. No live agent:
// COORDINATOR_NOT_AVAILABLE.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func serveFindCoordinator(c *conn, r *request) reply {
	req := r.msg.(*kmsg.FindCoordinatorRequest)
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	keys := req.CoordinatorKeys
	if req.Version < 4 {
		keys = []string{req.CoordinatorKey}
	}
	agents := agentsInZone(c.s.cat.liveAgents(), c.zone)
	for _, key := range keys {
		co := kmsg.NewFindCoordinatorResponseCoordinator()
		co.Key, co.NodeID, co.Port = key, -1, -1
		switch {
		case req.CoordinatorType != 0 && req.CoordinatorType != 1:
			co.ErrorCode = kerr.InvalidRequest.Code
		case key == "" && req.CoordinatorType == 0:
			co.ErrorCode = kerr.InvalidGroupID.Code
		case len(agents) == 0:
			co.ErrorCode = kerr.CoordinatorNotAvailable.Code
		default:
			b := brokersOf(rendezvousKey(agents, []byte(key))[:1])[0]
			co.NodeID, co.Host, co.Port = b.nodeID, b.host, b.port
		}
		resp.Coordinators = append(resp.Coordinators, co)
	}
	if req.Version < 4 && len(resp.Coordinators) == 1 {
		co := resp.Coordinators[0]
		resp.ErrorCode, resp.NodeID, resp.Host, resp.Port = co.ErrorCode, co.NodeID, co.Host, co.Port
		resp.Coordinators = nil
	}
	return now(resp)
}
