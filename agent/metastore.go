package agent

import (
	"context"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Metastore is what the agent needs of the metastore; *metastore.Client implements it.
// Calls are safe for concurrent use and retry internally until their context ends. A
// write whose outcome is unknown returns an error matching metastore.ErrAmbiguous:
// retrying it with the same ids (segment id, topic id) is safe.
type Metastore interface {
	CreateTopics(context.Context, *pb.CreateTopicsRequest) (*pb.CreateTopicsResponse, error)
	DeleteTopics(context.Context, *pb.DeleteTopicsRequest) (*pb.DeleteTopicsResponse, error)
	AlterConfigs(context.Context, *pb.AlterConfigsRequest) (*pb.AlterConfigsResponse, error)
	CreatePartitions(context.Context, *pb.CreatePartitionsRequest) (*pb.CreatePartitionsResponse, error)
	DescribeTopics(context.Context, *pb.DescribeTopicsRequest) (*pb.DescribeTopicsResponse, error)

	CommitSegment(context.Context, *pb.CommitSegmentRequest) (*pb.CommitSegmentResponse, error)
	Lookup(context.Context, *pb.LookupRequest) (*pb.LookupResponse, error)
	ListOffsets(context.Context, *pb.ListOffsetsRequest) (*pb.ListOffsetsResponse, error)
	// DeleteRecords moves log start offsets forward, never back, so a retry is
	// harmless. One call may stop short of an offset (its log_start_offset says
	// where): calling again goes on.
	DeleteRecords(context.Context, *pb.DeleteRecordsRequest) (*pb.DeleteRecordsResponse, error)

	RegisterAgent(context.Context, *pb.RegisterAgentRequest) (*pb.RegisterAgentResponse, error)
	DeregisterAgent(context.Context, *pb.DeregisterAgentRequest) (*pb.DeregisterAgentResponse, error)
	ListAgents(context.Context, *pb.ListAgentsRequest) (*pb.ListAgentsResponse, error)
	RecordIntent(context.Context, *pb.RecordIntentRequest) (*pb.RecordIntentResponse, error)
	InitProducer(context.Context, *pb.InitProducerRequest) (*pb.InitProducerResponse, error)

	// The transaction coordinator, on the metastore's leader. Adds, ends and
	// transactional offset commits are safe to retry (ambiguity included); the rest
	// are reads.
	AddToTxn(context.Context, *pb.AddToTxnRequest) (*pb.AddToTxnResponse, error)
	EndTxn(context.Context, *pb.EndTxnRequest) (*pb.EndTxnResponse, error)
	TxnOffsetCommit(context.Context, *pb.TxnOffsetCommitRequest) (*pb.TxnOffsetCommitResponse, error)
	DescribeTransactions(context.Context, *pb.DescribeTransactionsRequest) (*pb.DescribeTransactionsResponse, error)
	ListTransactions(context.Context, *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error)
	DescribeProducers(context.Context, *pb.DescribeProducersRequest) (*pb.DescribeProducersResponse, error)

	CommitOffsets(context.Context, *pb.CommitOffsetsRequest) (*pb.CommitOffsetsResponse, error)
	FetchOffsets(context.Context, *pb.FetchOffsetsRequest) (*pb.FetchOffsetsResponse, error)
	DeleteOffsets(context.Context, *pb.DeleteOffsetsRequest) (*pb.DeleteOffsetsResponse, error)
	ListGroups(context.Context, *pb.ListGroupsRequest) (*pb.ListGroupsResponse, error)
	DeleteGroups(context.Context, *pb.DeleteGroupsRequest) (*pb.DeleteGroupsResponse, error)

	// The group coordinator (classic protocol), run by the metastore's leader; its
	// refusals are Kafka error codes in the responses. JoinGroup and SyncGroup are
	// held until the rebalance completes, so their contexts must allow the member's
	// rebalance timeout; they, and LeaveGroup, are never retried after the request
	// may have been sent (ErrAmbiguous).
	JoinGroup(context.Context, *pb.JoinGroupRequest) (*pb.JoinGroupResponse, error)
	SyncGroup(context.Context, *pb.SyncGroupRequest) (*pb.SyncGroupResponse, error)
	Heartbeat(context.Context, *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error)
	LeaveGroup(context.Context, *pb.LeaveGroupRequest) (*pb.LeaveGroupResponse, error)
	DescribeGroups(context.Context, *pb.DescribeGroupsRequest) (*pb.DescribeGroupsResponse, error)

	// The KIP-848 consumer group coordinator, on the same leader. ConsumerHeartbeat
	// is never retried after the request may have been sent (ErrAmbiguous): the
	// Kafka client retries with a full heartbeat. ConsumerGroupDescribe is a read.
	ConsumerHeartbeat(context.Context, *pb.ConsumerHeartbeatRequest) (*pb.ConsumerHeartbeatResponse, error)
	ConsumerGroupDescribe(context.Context, *pb.ConsumerGroupDescribeRequest) (*pb.ConsumerGroupDescribeResponse, error)

	// Watch streams changes until ctx ends; the first event after every
	// (re)connection has Resync set.
	Watch(context.Context, *pb.WatchRequest) <-chan *pb.WatchEvent
}
