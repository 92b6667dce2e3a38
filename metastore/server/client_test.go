package server

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// fakeNode is a scripted metastore API for testing the client's retry rules: each
// call is answered by the script with the call's number (from 1).
type fakeNode struct {
	pb.UnimplementedMetastoreServer
	addr   string
	calls  atomic.Int32
	script func(n int32, req any) (any, error)
}

func startFake(t *testing.T, script func(n int32, req any) (any, error)) *fakeNode {
	t.Helper()
	l := listen(t, "127.0.0.1:0")
	f := &fakeNode{addr: l.Addr().String(), script: script}
	s := grpc.NewServer()
	pb.RegisterMetastoreServer(s, f)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return f
}

func answer[Resp any](f *fakeNode, req any) (*Resp, error) {
	resp, err := f.script(f.calls.Add(1), req)
	if err != nil {
		return nil, err
	}
	return resp.(*Resp), nil
}

func (f *fakeNode) CommitSegment(_ context.Context, req *pb.CommitSegmentRequest) (*pb.CommitSegmentResponse, error) {
	return answer[pb.CommitSegmentResponse](f, req)
}

func (f *fakeNode) CreatePartitions(_ context.Context, req *pb.CreatePartitionsRequest) (*pb.CreatePartitionsResponse, error) {
	return answer[pb.CreatePartitionsResponse](f, req)
}

func (f *fakeNode) CreateTopics(_ context.Context, req *pb.CreateTopicsRequest) (*pb.CreateTopicsResponse, error) {
	return answer[pb.CreateTopicsResponse](f, req)
}

func (f *fakeNode) DeregisterAgent(_ context.Context, req *pb.DeregisterAgentRequest) (*pb.DeregisterAgentResponse, error) {
	return answer[pb.DeregisterAgentResponse](f, req)
}

var commitOK = &pb.CommitSegmentResponse{Chunks: []*pb.ChunkResult{{BaseOffset: 7}}}

func TestClientFollowsNotLeader(t *testing.T) {
	leader := startFake(t, func(int32, any) (any, error) { return commitOK, nil })
	follower := startFake(t, func(int32, any) (any, error) {
		return nil, &metastore.Error{Code: pb.ErrorCode_NOT_LEADER, Leader: leader.addr}
	})
	cl := dial(t, follower.addr)
	resp, err := cl.CommitSegment(ctxT(t, 5*time.Second), &pb.CommitSegmentRequest{})
	if err != nil || resp.Chunks[0].BaseOffset != 7 {
		t.Fatalf("commit: %v, %v", resp, err)
	}
	if cl.Leader() != leader.addr || follower.calls.Load() != 1 || leader.calls.Load() != 1 {
		t.Fatalf("leader %q, calls follower %d leader %d", cl.Leader(), follower.calls.Load(), leader.calls.Load())
	}
}

func TestClientRetriesIdempotentThroughAmbiguity(t *testing.T) {
	f := startFake(t, func(n int32, _ any) (any, error) {
		if n < 3 {
			return nil, metastore.AmbiguousError("leadership lost")
		}
		return commitOK, nil
	})
	cl := dial(t, f.addr)
	if _, err := cl.CommitSegment(ctxT(t, 5*time.Second), &pb.CommitSegmentRequest{}); err != nil || f.calls.Load() != 3 {
		t.Fatalf("commit: %v after %d calls", err, f.calls.Load())
	}
}

func TestClientNeverTurnsAmbiguityIntoCleanFailure(t *testing.T) {
	ambiguous := startFake(t, func(int32, any) (any, error) { return nil, metastore.AmbiguousError("lost") })
	cl := dial(t, ambiguous.addr)
	// Not idempotent: reported at once.
	_, err := cl.CreatePartitions(ctxT(t, 5*time.Second), &pb.CreatePartitionsRequest{})
	if !errors.Is(err, metastore.ErrAmbiguous) || ambiguous.calls.Load() != 1 {
		t.Fatalf("create partitions: %v after %d calls", err, ambiguous.calls.Load())
	}
	// Idempotent: retried until the deadline, then ambiguous.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := cl.CommitSegment(ctx, &pb.CommitSegmentRequest{}); !errors.Is(err, metastore.ErrAmbiguous) {
		t.Fatalf("commit: %v", err)
	}
	// Nothing happened anywhere: unavailable, not ambiguous. Unless the deadline
	// cuts an attempt in flight (a loaded machine): that attempt's outcome is unknown,
	// and ambiguous is then the right answer; another try must come out clean.
	down := startFake(t, func(int32, any) (any, error) { return nil, metastore.UnavailableError("stopping") })
	cl = dial(t, down.addr)
	clean := false
	for try := 0; try < 5 && !clean; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := cl.CommitSegment(ctx, &pb.CommitSegmentRequest{})
		cancel()
		switch {
		case errors.Is(err, metastore.ErrUnavailable) && !errors.Is(err, metastore.ErrAmbiguous):
			clean = true
		case errors.Is(err, metastore.ErrAmbiguous) && strings.Contains(err.Error(), "code = DeadlineExceeded"):
			t.Logf("try %d: the deadline cut an attempt: %v", try, err)
		default:
			t.Fatalf("commit on a stopping node: %v", err)
		}
	}
	if !clean {
		t.Fatal("commit on a stopping node: ambiguous on every try")
	}
	if down.calls.Load() < 2 {
		t.Fatalf("no retry: %d calls", down.calls.Load())
	}
}

func TestClientDeregisterAfterAmbiguity(t *testing.T) {
	f := startFake(t, func(n int32, _ any) (any, error) {
		if n == 1 {
			return nil, metastore.AmbiguousError("lost")
		}
		return nil, &metastore.Error{Code: pb.ErrorCode_UNKNOWN_AGENT, Message: "no agent"}
	})
	cl := dial(t, f.addr)
	if _, err := cl.DeregisterAgent(ctxT(t, 5*time.Second), &pb.DeregisterAgentRequest{AgentId: "a"}); err != nil {
		t.Fatalf("deregister after an ambiguous attempt: %v", err)
	}
	// Without an ambiguous attempt, UNKNOWN_AGENT is the answer.
	if _, err := cl.DeregisterAgent(ctxT(t, 5*time.Second), &pb.DeregisterAgentRequest{AgentId: "a"}); !errors.Is(err, metastore.ErrUnknownAgent) {
		t.Fatalf("deregister: %v", err)
	}
}

func TestClientTypedErrorsAndTopicIDs(t *testing.T) {
	var seen *pb.CreateTopicsRequest
	f := startFake(t, func(n int32, req any) (any, error) {
		if r, ok := req.(*pb.CreateTopicsRequest); ok {
			seen = r
			return &pb.CreateTopicsResponse{}, nil
		}
		return nil, &metastore.Error{Code: pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION, Message: "no such topic"}
	})
	cl := dial(t, f.addr)
	_, err := cl.CommitSegment(ctxT(t, 5*time.Second), &pb.CommitSegmentRequest{})
	if !errors.Is(err, metastore.ErrUnknownTopic) || errors.Is(err, metastore.ErrTopicExists) || f.calls.Load() != 1 {
		t.Fatalf("typed error: %v after %d calls", err, f.calls.Load())
	}
	req := &pb.CreateTopicsRequest{Topics: []*pb.TopicSpec{{Name: "a"}, {Name: "b", TopicId: []byte("0123456789abcdef")}}}
	if _, err := cl.CreateTopics(ctxT(t, 5*time.Second), req); err != nil {
		t.Fatal(err)
	}
	if len(seen.Topics[0].TopicId) != 16 || string(seen.Topics[1].TopicId) != "0123456789abcdef" || req.Topics[0].TopicId != nil {
		t.Fatalf("topic ids sent %x %x; caller's request changed: %x", seen.Topics[0].TopicId, seen.Topics[1].TopicId, req.Topics[0].TopicId)
	}
}

func TestClientSkipsDeadNode(t *testing.T) {
	dead := listen(t, "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	live := startFake(t, func(_ int32, req any) (any, error) {
		if _, ok := req.(*pb.CreatePartitionsRequest); ok {
			return &pb.CreatePartitionsResponse{}, nil
		}
		return commitOK, nil
	})
	cl := dial(t, deadAddr, live.addr)
	for range 3 {
		if _, err := cl.CommitSegment(ctxT(t, 5*time.Second), &pb.CommitSegmentRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// A call that is not idempotent is only sent on a ready connection, so a dead
	// node costs a retry, not an ambiguous outcome.
	for range 3 {
		cl := dial(t, deadAddr, live.addr)
		if _, err := cl.CreatePartitions(ctxT(t, 5*time.Second), &pb.CreatePartitionsRequest{}); err != nil {
			t.Fatal(err)
		}
	}
}
