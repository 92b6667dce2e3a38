package agent

import (
	"net"
	"slices"
	"strconv"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// broker is a live agent as Kafka clients see it: Metadata and DescribeCluster list
// the same ones.
type broker struct {
	nodeID int32
	host   string
	port   int32
	rack   *string // the agent's zone, if any
}

// brokersOf lists agents as brokers sorted by node id. An agent whose address does
// not parse keeps its node id with an empty host and port 0, as Metadata has always
// answered it.
func brokersOf(agents []*pb.AgentInfo) []broker {
	out := make([]broker, 0, len(agents))
	for _, a := range agents {
		b := broker{nodeID: NodeIDOf(a.AgentId)}
		host, port, _ := net.SplitHostPort(a.Address)
		p, _ := strconv.Atoi(port)
		b.host, b.port = host, int32(p)
		if a.Zone != "" {
			b.rack = &a.Zone
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(x, y broker) int { return cmpInt64(int64(x.nodeID), int64(y.nodeID)) })
	return out
}

// controllerOf is the node Strata names as controller: the lowest node id, or -1
// when no agent is live. There is no controller role; clients only need a broker.
func controllerOf(brokers []broker) int32 {
	if len(brokers) == 0 {
		return -1
	}
	return brokers[0].nodeID
}
