package agent

import "slices"

// api is one Kafka API this agent serves: the version range and the handler. The
// handler runs on the connection's reader goroutine, in request order; work that
// waits (segment commits, long polls) goes in the reply's later function.
type api struct {
	min, max int16
	serve    func(c *conn, r *request) reply
}

// apis maps each API key to its handler and versions: the one table of what Strata
// speaks. Minimum versions are as low as Kafka 4.x still answers or lower, so older
// clients (librdkafka 2.0 in kcat) keep their features; maximum versions are Kafka
// 4.x's. Set in init, since ApiVersions reads the table.
var apis map[int16]api

func init() {
	apis = map[int16]api{
		0:  {3, 13, serveProduce},
		1:  {4, 17, serveFetch},
		2:  {0, 10, serveListOffsets},
		3:  {0, 13, serveMetadata},
		8:  {0, 9, serveOffsetCommit},
		9:  {0, 9, serveOffsetFetch},
		10: {0, 6, serveFindCoordinator},
		11: {0, 9, serveJoinGroup},
		12: {0, 4, serveHeartbeat},
		13: {0, 5, serveLeaveGroup},
		14: {0, 5, serveSyncGroup},
		15: {0, 5, serveDescribeGroups},
		16: {0, 5, serveListGroups},
		18: {0, 4, serveAPIVersions},
		19: {0, 7, serveCreateTopics},
		20: {0, 6, serveDeleteTopics},
		21: {0, 2, serveDeleteRecords},
		22: {0, 5, serveInitProducerID},
		23: {0, 4, serveOffsetForLeaderEpoch},
		24: {0, 5, serveAddPartitionsToTxn},
		25: {0, 4, serveAddOffsetsToTxn},
		26: {0, 4, serveEndTxn},
		28: {0, 4, serveTxnOffsetCommit},
		32: {0, 4, serveDescribeConfigs},
		33: {0, 2, serveAlterConfigs},
		35: {0, 4, serveDescribeLogDirs},
		37: {0, 3, serveCreatePartitions},
		42: {0, 2, serveDeleteGroups},
		44: {0, 1, serveIncrementalAlterConfigs},
		47: {0, 0, serveOffsetDelete},
		60: {0, 2, serveDescribeCluster},
		61: {0, 0, serveDescribeProducers},
		65: {0, 0, serveDescribeTransactions},
		66: {0, 1, serveListTransactions},
		68: {0, 1, serveConsumerGroupHeartbeat},
		69: {0, 1, serveConsumerGroupDescribe},
	}
}

// apiKeys returns the served keys in order.
func apiKeys() []int16 {
	keys := make([]int16, 0, len(apis))
	for k := range apis {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
