package metastore

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Error is a typed refusal from the metastore: one pb.ErrorCode, what went wrong, and
// for NOT_LEADER the API address of the leader when the answering node knew it.
// errors.Is matches it against the sentinel of its code:
//
//	errors.Is(err, metastore.ErrUnknownTopic)
type Error struct {
	Code    pb.ErrorCode
	Message string
	Leader  string // API address of the leader (NOT_LEADER only); may be empty
}

func (e *Error) Error() string {
	msg := "metastore: " + e.Code.String()
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Leader != "" {
		msg += " (leader " + e.Leader + ")"
	}
	return msg
}

// Is reports whether target is an *Error with the same code, so every Error matches
// its code's sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// GRPCStatus is the wire form of e: a status whose code suits the refusal and whose
// ErrorInfo detail carries the ErrorCode name as Reason and the leader address.
func (e *Error) GRPCStatus() *status.Status {
	return wireStatus(grpcCode(e.Code), e.Code.String(), e.Message, e.Leader)
}

// Sentinels, one per ErrorCode, for errors.Is.
var (
	ErrUnknownTopic             = &Error{Code: pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION}
	ErrTopicExists              = &Error{Code: pb.ErrorCode_TOPIC_ALREADY_EXISTS}
	ErrInvalidTopic             = &Error{Code: pb.ErrorCode_INVALID_TOPIC}
	ErrInvalidPartitions        = &Error{Code: pb.ErrorCode_INVALID_PARTITIONS}
	ErrInvalidReplicationFactor = &Error{Code: pb.ErrorCode_INVALID_REPLICATION_FACTOR}
	ErrInvalidConfig            = &Error{Code: pb.ErrorCode_INVALID_CONFIG}
	ErrOffsetOutOfRange         = &Error{Code: pb.ErrorCode_OFFSET_OUT_OF_RANGE}
	ErrInvalidRequest           = &Error{Code: pb.ErrorCode_INVALID_REQUEST}
	ErrNotLeader                = &Error{Code: pb.ErrorCode_NOT_LEADER}
	ErrUnknownAgent             = &Error{Code: pb.ErrorCode_UNKNOWN_AGENT}
	ErrInvalidSegment           = &Error{Code: pb.ErrorCode_INVALID_SEGMENT}
	ErrGroupNotFound            = &Error{Code: pb.ErrorCode_GROUP_NOT_FOUND}
	ErrStaleIndex               = &Error{Code: pb.ErrorCode_STALE_INDEX}
)

var (
	// ErrAmbiguous means a write may or may not have been applied and the client
	// could not find out before its deadline (leadership lost mid-apply, a timeout
	// after the request was sent). It is retriable, never a clean failure: retry
	// with the same ids (segment id, topic id, agent id) and the metastore answers
	// as if the first attempt had been the only one.
	ErrAmbiguous = errors.New("metastore: outcome unknown")

	// ErrUnavailable means no node could serve the call before the deadline and no
	// attempt can have taken effect. Retriable.
	ErrUnavailable = errors.New("metastore: unavailable")
)

// ErrorOf turns a per-item code of a response (TopicResult.Error, ChunkResult.Error,
// LookupResponse.Error, ...) into an error: nil for NONE.
func ErrorOf(code pb.ErrorCode, message string) error {
	if code == pb.ErrorCode_NONE {
		return nil
	}
	return &Error{Code: code, Message: message}
}

// Wire encoding of errors: the server and the client agree on these. A status from
// a metastore node carries one errdetails.ErrorInfo with Domain ErrorDomain; its
// Reason is an ErrorCode name, or one of the Reason* values below.
const (
	ErrorDomain = "metastore.strata"
	// ReasonAmbiguous: the node proposed the write but cannot tell whether it was
	// committed (codes.Unavailable).
	ReasonAmbiguous = "AMBIGUOUS"
	// ReasonUnavailable: the node cannot serve now and did nothing (failed storage,
	// shutting down, overloaded) (codes.Unavailable).
	ReasonUnavailable = "UNAVAILABLE"
	// MetadataLeader is the ErrorInfo metadata key holding the leader's API address.
	MetadataLeader = "leader"
	// HeaderLeader is the response header a follower sets on a call it forwarded to
	// the leader: the leader's API address, so the client can go there directly.
	HeaderLeader = "strata-leader"
	// HeaderForwarded marks a call a node forwarded; it is never forwarded again.
	HeaderForwarded = "strata-forwarded"
)

// AmbiguousError is the wire error for an outcome the node cannot resolve.
func AmbiguousError(format string, args ...any) error {
	return wireStatus(codes.Unavailable, ReasonAmbiguous, fmt.Sprintf(format, args...), "").Err()
}

// UnavailableError is the wire error for a node that did nothing and cannot serve.
func UnavailableError(format string, args ...any) error {
	return wireStatus(codes.Unavailable, ReasonUnavailable, fmt.Sprintf(format, args...), "").Err()
}

func wireStatus(code codes.Code, reason, msg, leader string) *status.Status {
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}
	if leader != "" {
		info.Metadata = map[string]string{MetadataLeader: leader}
	}
	if d, err := st.WithDetails(info); err == nil {
		return d
	}
	return st
}

func grpcCode(c pb.ErrorCode) codes.Code {
	switch c {
	case pb.ErrorCode_NOT_LEADER:
		return codes.Unavailable
	case pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION, pb.ErrorCode_UNKNOWN_AGENT, pb.ErrorCode_GROUP_NOT_FOUND:
		return codes.NotFound
	case pb.ErrorCode_TOPIC_ALREADY_EXISTS:
		return codes.AlreadyExists
	case pb.ErrorCode_OFFSET_OUT_OF_RANGE:
		return codes.OutOfRange
	case pb.ErrorCode_INVALID_SEGMENT, pb.ErrorCode_STALE_INDEX:
		return codes.FailedPrecondition
	}
	return codes.InvalidArgument
}

// wireError is what the client makes of an error from one attempt.
type wireError struct {
	typed     *Error // a refusal: return it
	notLeader bool   // try the leader (typed.Leader) or another node
	ambiguous bool   // the attempt may have taken effect
	retry     bool   // worth another attempt
}

// classify reads an error returned by a gRPC call.
func classify(err error) wireError {
	st, ok := status.FromError(err)
	if !ok {
		return wireError{ambiguous: true, retry: true}
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.Domain != ErrorDomain {
			continue
		}
		switch info.Reason {
		case ReasonAmbiguous:
			return wireError{ambiguous: true, retry: true}
		case ReasonUnavailable:
			return wireError{retry: true}
		}
		code, known := pb.ErrorCode_value[info.Reason]
		if !known {
			return wireError{typed: &Error{Code: pb.ErrorCode_INVALID_REQUEST, Message: st.Message()}}
		}
		e := &Error{Code: pb.ErrorCode(code), Message: st.Message(), Leader: info.Metadata[MetadataLeader]}
		if e.Code == pb.ErrorCode_NOT_LEADER {
			return wireError{typed: e, notLeader: true, retry: true}
		}
		return wireError{typed: e}
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.Internal, codes.Unknown, codes.ResourceExhausted:
		// Transport trouble: the request may have reached a node.
		return wireError{ambiguous: true, retry: true}
	}
	return wireError{}
}
