package server

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/state"
)

// api serves pb.MetastoreServer on a Node.
type api struct {
	pb.UnimplementedMetastoreServer
	n *Node
}

type rpc[Req, Resp any] func(pb.MetastoreClient, context.Context, Req, ...grpc.CallOption) (Resp, error)

// onLeader runs local when this node leads; otherwise it forwards the call to the
// leader (once: a forwarded call is never forwarded again) and tells the client
// where the leader is in a response header, or answers NOT_LEADER.
func onLeader[Req, Resp any](ctx context.Context, n *Node, req Req, remote rpc[Req, Resp], local func() (Resp, error)) (Resp, error) {
	var zero Resp
	if err := n.serving(); err != nil {
		return zero, err
	}
	if n.IsLeader() {
		return local()
	}
	_, addr := n.leader()
	if addr == "" || addr == n.apiAdvertise || forwarded(ctx) {
		return zero, n.notLeader()
	}
	stub, err := n.peer(addr)
	if err != nil {
		return zero, n.notLeader()
	}
	grpc.SetHeader(ctx, metadata.Pairs(metastore.HeaderLeader, addr))
	octx := metadata.AppendToOutgoingContext(ctx, metastore.HeaderForwarded, n.cfg.NodeID)
	resp, err := remote(stub, octx, req)
	if err != nil {
		if fromNode(err) {
			return zero, err
		}
		// The leader may have applied it before the connection failed.
		return zero, metastore.AmbiguousError("forwarding to the leader at %s: %v", addr, err)
	}
	return resp, nil
}

func forwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(metastore.HeaderForwarded)) > 0
}

// fromNode reports whether err is a status a metastore node produced (rather than
// the transport), which can be passed back as is.
func fromNode(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == metastore.ErrorDomain {
			return true
		}
	}
	return false
}

// write proposes a command built by the handler and returns the state's result.
func (a *api) write(ctx context.Context, cmd *pb.Command) (*state.Result, error) {
	res, err := a.n.propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, refusal(res.Err)
	}
	return res, nil
}

// --- topics -------------------------------------------------------------------------

func (a *api) CreateTopics(ctx context.Context, req *pb.CreateTopicsRequest) (*pb.CreateTopicsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.CreateTopics, func() (*pb.CreateTopicsResponse, error) {
		for _, t := range req.Topics {
			if len(t.TopicId) == 0 {
				t.TopicId = newTopicID()
			}
		}
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_CreateTopics{CreateTopics: &pb.CreateTopicsCommand{Topics: req.Topics, ValidateOnly: req.ValidateOnly}}})
		if err != nil {
			return nil, err
		}
		return &pb.CreateTopicsResponse{Results: res.Topics}, nil
	})
}

func (a *api) DeleteTopics(ctx context.Context, req *pb.DeleteTopicsRequest) (*pb.DeleteTopicsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DeleteTopics, func() (*pb.DeleteTopicsResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_DeleteTopics{DeleteTopics: &pb.DeleteTopicsCommand{Topics: req.Topics}}})
		if err != nil {
			return nil, err
		}
		return &pb.DeleteTopicsResponse{Results: res.Topics}, nil
	})
}

func (a *api) AlterConfigs(ctx context.Context, req *pb.AlterConfigsRequest) (*pb.AlterConfigsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.AlterConfigs, func() (*pb.AlterConfigsResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_AlterConfigs{AlterConfigs: &pb.AlterConfigsCommand{Alterations: req.Alterations, ValidateOnly: req.ValidateOnly}}})
		if err != nil {
			return nil, err
		}
		return &pb.AlterConfigsResponse{Results: res.Topics}, nil
	})
}

func (a *api) CreatePartitions(ctx context.Context, req *pb.CreatePartitionsRequest) (*pb.CreatePartitionsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.CreatePartitions, func() (*pb.CreatePartitionsResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_CreatePartitions{CreatePartitions: &pb.CreatePartitionsCommand{Topics: req.Topics, ValidateOnly: req.ValidateOnly}}})
		if err != nil {
			return nil, err
		}
		return &pb.CreatePartitionsResponse{Results: res.Topics}, nil
	})
}

func (a *api) DescribeTopics(ctx context.Context, req *pb.DescribeTopicsRequest) (*pb.DescribeTopicsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DescribeTopics, func() (*pb.DescribeTopicsResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		results, applied, err := a.n.st.Topics(req.Topics)
		if err != nil {
			return nil, readError(err)
		}
		return &pb.DescribeTopicsResponse{Results: results, AppliedIndex: applied}, nil
	})
}

// --- the offset index ---------------------------------------------------------------

func (a *api) CommitSegment(ctx context.Context, req *pb.CommitSegmentRequest) (*pb.CommitSegmentResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.CommitSegment, func() (*pb.CommitSegmentResponse, error) {
		return a.n.commits.submit(ctx, req)
	})
}

func (a *api) Lookup(ctx context.Context, req *pb.LookupRequest) (*pb.LookupResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.Lookup, func() (*pb.LookupResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		resp, err := a.n.st.Lookup(req.TopicId, req.Partition, req.Offset, int(req.MaxEntries), req.AbortedUpto)
		if err != nil {
			return nil, readError(err)
		}
		return resp, nil
	})
}

func (a *api) ListOffsets(ctx context.Context, req *pb.ListOffsetsRequest) (*pb.ListOffsetsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ListOffsets, func() (*pb.ListOffsetsResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		resp, err := a.n.st.ListOffsets(req.TopicId, req.Partition, req.Timestamp)
		if err != nil {
			return nil, readError(err)
		}
		return resp, nil
	})
}

// --- agents and intents -------------------------------------------------------------

func (a *api) RegisterAgent(ctx context.Context, req *pb.RegisterAgentRequest) (*pb.RegisterAgentResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.RegisterAgent, func() (*pb.RegisterAgentResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_RegisterAgent{RegisterAgent: &pb.RegisterAgentCommand{Agent: req.Agent}}})
		if err != nil {
			return nil, err
		}
		return &pb.RegisterAgentResponse{Agent: res.Agent}, nil
	})
}

func (a *api) DeregisterAgent(ctx context.Context, req *pb.DeregisterAgentRequest) (*pb.DeregisterAgentResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DeregisterAgent, func() (*pb.DeregisterAgentResponse, error) {
		if _, err := a.write(ctx, &pb.Command{Op: &pb.Command_DeregisterAgent{DeregisterAgent: &pb.DeregisterAgentCommand{AgentId: req.AgentId}}}); err != nil {
			return nil, err
		}
		return &pb.DeregisterAgentResponse{}, nil
	})
}

func (a *api) ListAgents(ctx context.Context, req *pb.ListAgentsRequest) (*pb.ListAgentsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ListAgents, func() (*pb.ListAgentsResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		agents, err := a.n.st.Agents()
		if err != nil {
			return nil, readError(err)
		}
		return &pb.ListAgentsResponse{Agents: agents}, nil
	})
}

func (a *api) RecordIntent(ctx context.Context, req *pb.RecordIntentRequest) (*pb.RecordIntentResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.RecordIntent, func() (*pb.RecordIntentResponse, error) {
		// The state checks the intent against the command's clock; stamp both from
		// one reading, which propose then reuses.
		now := time.Now().UnixMilli()
		in := &pb.UploadIntent{SegmentId: req.SegmentId, AgentId: req.AgentId, CreatedMs: now, ExpiresMs: now + req.TtlMs}
		res, err := a.n.proposeAt(ctx, now, &pb.Command{Op: &pb.Command_RecordIntent{RecordIntent: &pb.RecordIntentCommand{Intent: in}}})
		if err != nil {
			return nil, err
		}
		if res.Err != nil {
			return nil, refusal(res.Err)
		}
		return &pb.RecordIntentResponse{Intent: res.Intent}, nil
	})
}

func (a *api) ResolveIntent(ctx context.Context, req *pb.ResolveIntentRequest) (*pb.ResolveIntentResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ResolveIntent, func() (*pb.ResolveIntentResponse, error) {
		if _, err := a.write(ctx, &pb.Command{Op: &pb.Command_ResolveIntent{ResolveIntent: &pb.ResolveIntentCommand{SegmentId: req.SegmentId}}}); err != nil {
			return nil, err
		}
		return &pb.ResolveIntentResponse{}, nil
	})
}

func (a *api) ListExpiredIntents(ctx context.Context, req *pb.ListExpiredIntentsRequest) (*pb.ListExpiredIntentsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ListExpiredIntents, func() (*pb.ListExpiredIntentsResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		limit := int(req.Limit)
		if limit <= 0 {
			limit = 1000
		}
		intents, err := a.n.st.ExpiredIntents(time.Now().UnixMilli(), limit)
		if err != nil {
			return nil, readError(err)
		}
		return &pb.ListExpiredIntentsResponse{Intents: intents}, nil
	})
}

// --- committed offsets --------------------------------------------------------------

func (a *api) FetchOffsets(ctx context.Context, req *pb.FetchOffsetsRequest) (*pb.FetchOffsetsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.FetchOffsets, func() (*pb.FetchOffsetsResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		offsets, unstable, err := a.n.st.OffsetsStable(req.Group, req.Partitions, req.RequireStable)
		if err != nil {
			return nil, readError(err)
		}
		resp := &pb.FetchOffsetsResponse{Offsets: offsets, Unstable: unstable}
		return resp, nil
	})
}

func (a *api) DeleteOffsets(ctx context.Context, req *pb.DeleteOffsetsRequest) (*pb.DeleteOffsetsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DeleteOffsets, func() (*pb.DeleteOffsetsResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_DeleteOffsets{DeleteOffsets: &pb.DeleteOffsetsCommand{Group: req.Group, Partitions: req.Partitions}}})
		if err != nil {
			return nil, err
		}
		return &pb.DeleteOffsetsResponse{Results: res.Offsets}, nil
	})
}

// --- watch --------------------------------------------------------------------------

// Watch is served by any node from its own applied log. The first event is a Resync
// at the applied index when the watch began: the watcher loads what it caches, then
// follows the events. A watcher that falls behind by more than WatchBuffer events
// gets one Resync in place of the events it missed.
func (a *api) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchEvent]) error {
	if err := a.n.serving(); err != nil {
		return err
	}
	sub, err := a.n.watch.subscribe(req)
	if err != nil {
		return metastore.UnavailableError("%v", err)
	}
	defer a.n.watch.unsubscribe(sub)
	// Subscribed first, so nothing applied after this index is missed.
	start := a.n.st.Applied()
	if err := stream.Send(&pb.WatchEvent{AppliedIndex: start, Resync: true}); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.done:
			return metastore.UnavailableError("node %s is stopping", a.n.cfg.NodeID)
		case <-sub.wake:
		}
		events, resync, index := sub.take()
		if resync {
			events = []*pb.WatchEvent{{AppliedIndex: index, Resync: true}}
		}
		for _, ev := range events {
			if ev.AppliedIndex <= start && !ev.Resync {
				continue // already reflected in the opening Resync
			}
			if ev = sub.filter(ev); ev == nil {
				continue
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// --- cluster membership -------------------------------------------------------------

// Cluster answers from this node's view: any node serves it.
func (a *api) Cluster(ctx context.Context, req *pb.ClusterRequest) (*pb.ClusterResponse, error) {
	if err := a.n.serving(); err != nil {
		return nil, err
	}
	f := a.n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, metastore.UnavailableError("raft configuration: %v", err)
	}
	_, leaderID := a.n.raft.LeaderWithID()
	resp := &pb.ClusterResponse{Term: a.n.raft.CurrentTerm(), AppliedIndex: a.n.st.Applied()}
	for _, s := range f.Configuration().Servers {
		p, _ := a.n.book.get(string(s.ID))
		resp.Members = append(resp.Members, &pb.ClusterResponse_Member{
			Id:          string(s.ID),
			RaftAddress: string(s.Address),
			ApiAddress:  p.APIAddr,
			Voter:       s.Suffrage == raft.Voter,
			Leader:      s.ID == leaderID,
		})
	}
	return resp, nil
}

// Join adds a voter (leader only). It is idempotent: a member already present at the
// same Raft address is left as is.
func (a *api) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	if err := validID(req.Id); err != nil {
		return nil, metastore.ErrorOf(pb.ErrorCode_INVALID_REQUEST, "node id: "+err.Error())
	}
	if err := validHostPort(req.RaftAddress); err != nil {
		return nil, metastore.ErrorOf(pb.ErrorCode_INVALID_REQUEST, "raft address: "+err.Error())
	}
	if req.ApiAddress != "" {
		if err := validHostPort(req.ApiAddress); err != nil {
			return nil, metastore.ErrorOf(pb.ErrorCode_INVALID_REQUEST, "api address: "+err.Error())
		}
	}
	// Every node on the way learns the newcomer's addresses.
	a.n.book.set(req.Id, Peer{RaftAddr: req.RaftAddress, APIAddr: req.ApiAddress})
	return onLeader(ctx, a.n, req, pb.MetastoreClient.Join, func() (*pb.JoinResponse, error) {
		f := a.n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return nil, a.n.applyError(err)
		}
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == req.Id && string(s.Address) == req.RaftAddress && s.Suffrage == raft.Voter {
				return &pb.JoinResponse{}, nil
			}
		}
		if err := a.n.raft.AddVoter(raft.ServerID(req.Id), raft.ServerAddress(req.RaftAddress), 0, a.n.cfg.ApplyTimeout).Error(); err != nil {
			return nil, a.n.applyError(err)
		}
		a.n.log.Info("metastore server: member added", "id", req.Id, "raft", req.RaftAddress, "api", req.ApiAddress)
		return &pb.JoinResponse{}, nil
	})
}

// Leave removes a member (leader only). Removing a node that is not a member
// succeeds. A leader may remove itself; it steps down once that is committed.
func (a *api) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	if err := validID(req.Id); err != nil {
		return nil, metastore.ErrorOf(pb.ErrorCode_INVALID_REQUEST, "node id: "+err.Error())
	}
	return onLeader(ctx, a.n, req, pb.MetastoreClient.Leave, func() (*pb.LeaveResponse, error) {
		if err := a.n.raft.RemoveServer(raft.ServerID(req.Id), 0, a.n.cfg.ApplyTimeout).Error(); err != nil {
			return nil, a.n.applyError(err)
		}
		a.n.book.remove(req.Id)
		a.n.log.Info("metastore server: member removed", "id", req.Id)
		return &pb.LeaveResponse{}, nil
	})
}

// readError is a state read that failed: the node's storage is in trouble, or the
// node is closing. Another node may serve.
func readError(err error) error {
	return metastore.UnavailableError("read: %v", err)
}

// --- compaction, retention, garbage collection ----------------------------------------

func (a *api) Segment(ctx context.Context, req *pb.SegmentRequest) (*pb.SegmentResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.Segment, func() (*pb.SegmentResponse, error) {
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		resp, err := a.n.st.SegmentInfo(req.SegmentId)
		if err != nil {
			return nil, readError(err)
		}
		return resp, nil
	})
}

func (a *api) ReplaceIndex(ctx context.Context, req *pb.ReplaceIndexRequest) (*pb.ReplaceIndexResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ReplaceIndex, func() (*pb.ReplaceIndexResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_ReplaceIndex{ReplaceIndex: &pb.ReplaceIndexCommand{Request: req}}})
		if err != nil {
			return nil, err
		}
		return res.Replace, nil
	})
}

func (a *api) DeleteRecords(ctx context.Context, req *pb.DeleteRecordsRequest) (*pb.DeleteRecordsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DeleteRecords, func() (*pb.DeleteRecordsResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_DeleteRecords{DeleteRecords: &pb.DeleteRecordsCommand{Partitions: req.Partitions}}})
		if err != nil {
			return nil, err
		}
		return &pb.DeleteRecordsResponse{Results: res.LogStarts}, nil
	})
}

func (a *api) ClaimGarbage(ctx context.Context, req *pb.ClaimGarbageRequest) (*pb.ClaimGarbageResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ClaimGarbage, func() (*pb.ClaimGarbageResponse, error) {
		res, err := a.write(ctx, &pb.Command{Op: &pb.Command_ClaimGarbage{ClaimGarbage: &pb.ClaimGarbageCommand{GraceMs: req.GraceMs, Limit: req.Limit}}})
		if err != nil {
			return nil, err
		}
		return &pb.ClaimGarbageResponse{Garbage: res.Garbage}, nil
	})
}

func (a *api) ForgetGarbage(ctx context.Context, req *pb.ForgetGarbageRequest) (*pb.ForgetGarbageResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ForgetGarbage, func() (*pb.ForgetGarbageResponse, error) {
		if _, err := a.write(ctx, &pb.Command{Op: &pb.Command_ForgetGarbage{ForgetGarbage: &pb.ForgetGarbageCommand{SegmentIds: req.SegmentIds}}}); err != nil {
			return nil, err
		}
		return &pb.ForgetGarbageResponse{}, nil
	})
}
