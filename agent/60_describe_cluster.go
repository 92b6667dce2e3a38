package agent

// DescribeCluster (key 60), versions 0-1.
//
// Brokers are the live agents, as in Metadata (brokers.go): node id, advertised
// host:port, zone as rack. The controller is the agent with the lowest node id; there
// is no controller role, but admin clients send controller-bound requests to it and
// any agent answers them. v1's EndpointType must be 1 (brokers); 2 (controllers)
// is UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker answers, and other values
// INVALID_REQUEST. Authorized operations, when asked for, are every cluster
// operation: Strata has no ACLs yet.

import (
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// allClusterOperations is the bit set of every operation on the CLUSTER resource
// (ALTER, ALTER_CONFIGS, CLUSTER_ACTION, CREATE, DESCRIBE, DESCRIBE_CONFIGS,
// IDEMPOTENT_WRITE), what Kafka reports without an authorizer.
const allClusterOperations = 1<<kmsg.ACLOperationAlter | 1<<kmsg.ACLOperationAlterConfigs |
	1<<kmsg.ACLOperationClusterAction | 1<<kmsg.ACLOperationCreate | 1<<kmsg.ACLOperationDescribe |
	1<<kmsg.ACLOperationDescribeConfigs | 1<<kmsg.ACLOperationIdempotentWrite

func serveDescribeCluster(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DescribeClusterRequest)
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	s := c.s
	resp.ClusterID = s.cfg.ClusterID
	resp.ClusterAuthorizedOperations = math.MinInt32 // Kafka's "not asked for"
	resp.EndpointType = 1
	if req.Version >= 1 {
		resp.EndpointType = req.EndpointType
		switch req.EndpointType {
		case 1:
		case 2:
			resp.ErrorCode = kerr.UnsupportedEndpointType.Code
			resp.ErrorMessage = ptr("agent: Strata has no controllers; describe the brokers (endpoint type 1)")
			return now(resp)
		default:
			resp.ErrorCode = kerr.InvalidRequest.Code
			resp.ErrorMessage = ptr("agent: unknown endpoint type")
			return now(resp)
		}
	}
	brokers := brokersOf(s.cat.liveAgents())
	for _, b := range brokers {
		sb := kmsg.NewDescribeClusterResponseBroker()
		sb.NodeID, sb.Host, sb.Port, sb.Rack = b.nodeID, b.host, b.port, b.rack
		resp.Brokers = append(resp.Brokers, sb)
	}
	resp.ControllerID = controllerOf(brokers)
	if req.IncludeClusterAuthorizedOperations {
		resp.ClusterAuthorizedOperations = allClusterOperations
	}
	return now(resp)
}
