package agent

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// Errors the agent's own checks produce, before anything reaches the metastore or
// storage. kafkaCode maps each to its Kafka error code.
var (
	errCorruptBatch   = errors.New("agent: corrupt record batch")
	errBatchTooLarge  = errors.New("agent: record batch larger than max.message.bytes")
	errInvalidRecord  = errors.New("agent: invalid record")
	errTimedOut       = errors.New("agent: request timed out before its segment committed")
	errShuttingDown   = errors.New("agent: shutting down")
	errStorage        = errors.New("agent: object storage unavailable")
	errUnknownTopic   = errors.New("agent: unknown topic or partition")
	errInvalidRequest = errors.New("agent: invalid request")
	errInvalidTopic   = errors.New("agent: invalid topic")
	// errInvalidAssignment: a replica assignment that does not fit the partitions.
	errInvalidAssignment = errors.New("agent: invalid replica assignment")
	errUnsupportedComp   = errors.New("agent: unsupported compression")
)

// kafkaCode is the one place an internal error becomes a Kafka error code. Anything
// whose outcome is unknown maps to a retriable code, never to a clean failure.
func kafkaCode(err error) int16 {
	if err == nil {
		return 0
	}
	var me *metastore.Error
	if errors.As(err, &me) {
		switch me.Code {
		case pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION:
			return kerr.UnknownTopicOrPartition.Code
		case pb.ErrorCode_TOPIC_ALREADY_EXISTS:
			return kerr.TopicAlreadyExists.Code
		case pb.ErrorCode_INVALID_TOPIC:
			return kerr.InvalidTopicException.Code
		case pb.ErrorCode_INVALID_PARTITIONS:
			return kerr.InvalidPartitions.Code
		case pb.ErrorCode_INVALID_REPLICATION_FACTOR:
			return kerr.InvalidReplicationFactor.Code
		case pb.ErrorCode_INVALID_CONFIG:
			return kerr.InvalidConfig.Code
		case pb.ErrorCode_OFFSET_OUT_OF_RANGE:
			return kerr.OffsetOutOfRange.Code
		case pb.ErrorCode_INVALID_REQUEST:
			return kerr.InvalidRequest.Code
		case pb.ErrorCode_NOT_LEADER:
			return kerr.NotLeaderForPartition.Code
		case pb.ErrorCode_NON_EMPTY_GROUP:
			return kerr.NonEmptyGroup.Code
		case pb.ErrorCode_STALE_GROUP:
			return kerr.CoordinatorNotAvailable.Code // a coordinator change raced: retriable
		case pb.ErrorCode_OUT_OF_ORDER_SEQUENCE_NUMBER:
			return kerr.OutOfOrderSequenceNumber.Code
		case pb.ErrorCode_INVALID_PRODUCER_EPOCH:
			return kerr.InvalidProducerEpoch.Code
		case pb.ErrorCode_UNKNOWN_PRODUCER_ID:
			return kerr.UnknownProducerID.Code
		case pb.ErrorCode_INVALID_TXN_STATE:
			return kerr.InvalidTxnState.Code
		case pb.ErrorCode_PRODUCER_FENCED:
			return kerr.ProducerFenced.Code
		case pb.ErrorCode_INVALID_PRODUCER_ID_MAPPING:
			return kerr.InvalidProducerIDMapping.Code
		case pb.ErrorCode_INVALID_TRANSACTION_TIMEOUT:
			return kerr.InvalidTransactionTimeout.Code
		case pb.ErrorCode_CONCURRENT_TRANSACTIONS:
			return kerr.ConcurrentTransactions.Code
		case pb.ErrorCode_TRANSACTIONAL_ID_NOT_FOUND:
			return kerr.TransactionalIDNotFound.Code
		case pb.ErrorCode_OPERATION_NOT_ATTEMPTED:
			return kerr.OperationNotAttempted.Code
		case pb.ErrorCode_INVALID_SEGMENT:
			// The segment's upload outlived its intent and GC claimed it: nothing was
			// written, and a retry goes into a new segment.
			return kerr.KafkaStorageError.Code
		}
		return kerr.UnknownServerError.Code
	}
	switch {
	case errors.Is(err, errCorruptBatch), errors.Is(err, objectlog.ErrCorrupt):
		return kerr.CorruptMessage.Code
	case errors.Is(err, errBatchTooLarge), errors.Is(err, objectlog.ErrTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, errInvalidRecord):
		return kerr.InvalidRecord.Code
	case errors.Is(err, errUnsupportedComp):
		return kerr.UnsupportedCompressionType.Code
	case errors.Is(err, errUnknownTopic):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, errInvalidAssignment):
		return kerr.InvalidReplicaAssignment.Code
	case errors.Is(err, errInvalidTopic):
		return kerr.InvalidTopicException.Code
	case errors.Is(err, errInvalidRequest):
		return kerr.InvalidRequest.Code
	case errors.Is(err, errTimedOut), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, metastore.ErrAmbiguous), errors.Is(err, metastore.ErrUnavailable):
		return kerr.RequestTimedOut.Code
	case errors.Is(err, errShuttingDown), errors.Is(err, context.Canceled):
		return kerr.NotLeaderForPartition.Code // retriable: the client refreshes metadata and goes elsewhere
	case errors.Is(err, errStorage), errors.Is(err, objstore.ErrNotExist), errors.Is(err, objstore.ErrShortBody):
		return kerr.KafkaStorageError.Code
	}
	return kerr.UnknownServerError.Code
}

// errMessage is the error text a response carries, where the version has a field.
func errMessage(err error) *string {
	if err == nil {
		return nil
	}
	s := err.Error()
	return &s
}

// errOf is the error of a metastore per-item code (nil for NONE).
func errOf(code pb.ErrorCode) error { return metastore.ErrorOf(code, "") }
