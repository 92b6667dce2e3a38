package server

import (
	"context"
	"slices"
	"time"

	"github.com/stratalog/strata/metastore"
	"github.com/stratalog/strata/metastore/groups"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/state"
)

// groupTick is how often the leader enforces group deadlines (sessions, join
// phases); it is the precision of every group timeout.
const groupTick = 100 * time.Millisecond

// groupStore keeps the coordinator's groups in the replicated state.
type groupStore struct{ n *Node }

func (s groupStore) Load(ctx context.Context, group string) (*pb.GroupRecord, bool, error) {
	if err := s.n.linearize(ctx); err != nil {
		return nil, false, err
	}
	rec, err := s.n.st.Group(group)
	if err != nil {
		return nil, false, readError(err)
	}
	if rec != nil {
		return rec, true, nil
	}
	has, err := s.n.st.HasOffsets(group)
	if err != nil {
		return nil, false, readError(err)
	}
	return nil, has, nil
}

func (s groupStore) Save(ctx context.Context, rec *pb.GroupRecord) error {
	res, err := s.n.propose(ctx, &pb.Command{Op: &pb.Command_SaveGroup{SaveGroup: &pb.SaveGroupCommand{Group: rec}}})
	if err != nil {
		return err
	}
	if res.Err != nil {
		return refusal(res.Err)
	}
	return nil
}

func (s groupStore) Topics(ctx context.Context) ([]groups.TopicMeta, error) {
	ts, _, err := s.n.st.Topics(nil)
	if err != nil {
		return nil, readError(err)
	}
	out := make([]groups.TopicMeta, 0, len(ts))
	for _, t := range ts {
		out = append(out, groups.TopicMeta{Name: t.Name, ID: string(t.TopicId), Partitions: t.GetTopic().GetPartitions()})
	}
	return out, nil
}

func (s groupStore) Delete(ctx context.Context, group string) (pb.ErrorCode, error) {
	res, err := s.n.propose(ctx, &pb.Command{Op: &pb.Command_DeleteGroups{DeleteGroups: &pb.DeleteGroupsCommand{Groups: []string{group}}}})
	if err != nil {
		return 0, err
	}
	if res.Err != nil {
		return 0, refusal(res.Err)
	}
	return res.Groups[0].Error, nil
}

// groupLoop runs the coordinator's deadlines while this node leads, forgets its
// groups when it stops leading, and proposes the expiry of old offsets.
func (n *Node) groupLoop() {
	t := time.NewTicker(groupTick)
	defer t.Stop()
	cfg := n.cfg.Groups
	lastExpiry := time.Now() // the first check one interval after start, as Kafka
	lastProducerExpiry := time.Now()
	lastTxnIDExpiry := time.Now()
	var loadedTerm uint64
	for {
		select {
		case <-n.stopCh:
			n.groups.Reset()
			return
		case <-t.C:
		}
		if !n.IsLeader() || n.serving() != nil {
			n.groups.Reset()
			continue
		}
		term := n.raft.CurrentTerm()
		n.groups.Term(term)
		if term != loadedTerm {
			// A new term: load every group with members now, so sessions of members
			// that never come back end here as they would have at the old leader.
			if n.preloadGroups() {
				loadedTerm = term
			}
		}
		n.groups.Tick()
		if cfg.OffsetsRetention > 0 && time.Since(lastExpiry) >= cfg.OffsetsRetentionCheck {
			lastExpiry = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			res, err := n.propose(ctx, &pb.Command{Op: &pb.Command_ExpireOffsets{ExpireOffsets: &pb.ExpireOffsetsCommand{RetentionMs: cfg.OffsetsRetention.Milliseconds()}}})
			cancel()
			switch {
			case err != nil:
				n.log.Debug("metastore server: expire offsets", "err", err)
			case res.More:
				lastExpiry = time.Time{} // the next tick goes on
			}
		}
		if n.cfg.ProducerExpiration > 0 && time.Since(lastProducerExpiry) >= n.cfg.ProducerExpiryInterval {
			lastProducerExpiry = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			res, err := n.propose(ctx, &pb.Command{Op: &pb.Command_ExpireProducers{ExpireProducers: &pb.ExpireProducersCommand{ExpirationMs: n.cfg.ProducerExpiration.Milliseconds()}}})
			cancel()
			switch {
			case err != nil:
				n.log.Debug("metastore server: expire producers", "err", err)
			case res.More:
				lastProducerExpiry = time.Time{}
			}
		}
		n.expireTxns(false)
		if n.cfg.TransactionalIDExpiration > 0 && time.Since(lastTxnIDExpiry) >= n.cfg.ProducerExpiryInterval {
			lastTxnIDExpiry = time.Now()
			if n.expireTxns(true) {
				lastTxnIDExpiry = time.Time{}
			}
		}
	}
}

// preloadGroups loads the groups the state holds with members into the
// coordinator; false if the state could not be read (tried again next tick).
func (n *Node) preloadGroups() bool {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	if err := n.barrier(ctx); err != nil {
		return false
	}
	names, recs, err := n.st.Groups()
	if err != nil {
		return false
	}
	var live []string
	for i, r := range recs {
		if state.HasMembers(r) {
			live = append(live, names[i])
		}
	}
	n.groups.Preload(ctx, live)
	return true
}

// coordinator returns the group coordinator of this leader's current term.
func (a *api) coordinator(ctx context.Context) (*groups.Coordinator, error) {
	if err := a.n.barrier(ctx); err != nil {
		return nil, err
	}
	a.n.groups.Term(a.n.raft.CurrentTerm())
	return a.n.groups, nil
}

func (a *api) JoinGroup(ctx context.Context, req *pb.JoinGroupRequest) (*pb.JoinGroupResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.JoinGroup, func() (*pb.JoinGroupResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		return c.Join(ctx, req), nil
	})
}

func (a *api) SyncGroup(ctx context.Context, req *pb.SyncGroupRequest) (*pb.SyncGroupResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.SyncGroup, func() (*pb.SyncGroupResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		return c.Sync(ctx, req), nil
	})
}

func (a *api) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.Heartbeat, func() (*pb.HeartbeatResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		return c.Heartbeat(ctx, req), nil
	})
}

func (a *api) LeaveGroup(ctx context.Context, req *pb.LeaveGroupRequest) (*pb.LeaveGroupResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.LeaveGroup, func() (*pb.LeaveGroupResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		return c.Leave(ctx, req), nil
	})
}

func (a *api) DescribeGroups(ctx context.Context, req *pb.DescribeGroupsRequest) (*pb.DescribeGroupsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DescribeGroups, func() (*pb.DescribeGroupsResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		return &pb.DescribeGroupsResponse{Groups: c.Describe(ctx, req.Groups)}, nil
	})
}

// ListGroups lists every group the state knows, with the coordinator's live state
// for the groups it has loaded, and groups still in their first join phase.
func (a *api) ListGroups(ctx context.Context, req *pb.ListGroupsRequest) (*pb.ListGroupsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ListGroups, func() (*pb.ListGroupsResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		if err := a.n.linearize(ctx); err != nil {
			return nil, err
		}
		names, recs, err := a.n.st.Groups()
		if err != nil {
			return nil, readError(err)
		}
		live := c.Loaded()
		listed := map[string]*pb.GroupDescription{}
		for i, name := range names {
			if d, ok := live[name]; ok {
				listed[name] = d
				continue
			}
			d := &pb.GroupDescription{Group: name, State: "Empty", GroupType: "classic"}
			if r := recs[i]; r != nil {
				d.ProtocolType, d.Protocol, d.Generation = r.ProtocolType, r.Protocol, r.Generation
				switch {
				case r.Consumer != nil:
					d.GroupType, d.Generation = "consumer", r.Consumer.GroupEpoch
					if len(r.Consumer.Members) > 0 {
						d.State = "Reconciling" // what a new coordinator reports until members heartbeat
					}
				case len(r.Members) > 0 && r.Assigned:
					d.State = "Stable"
				case len(r.Members) > 0:
					d.State = "PreparingRebalance" // what loading it will make it
				}
			}
			listed[name] = d
		}
		for name, d := range live {
			listed[name] = d
		}
		resp := &pb.ListGroupsResponse{}
		for name := range listed {
			resp.Groups = append(resp.Groups, name)
		}
		slices.Sort(resp.Groups)
		for _, name := range resp.Groups {
			resp.Listed = append(resp.Listed, listed[name])
		}
		return resp, nil
	})
}

func (a *api) DeleteGroups(ctx context.Context, req *pb.DeleteGroupsRequest) (*pb.DeleteGroupsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.DeleteGroups, func() (*pb.DeleteGroupsResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		results := c.Delete(ctx, req.Groups)
		for _, r := range results {
			if r.Error == pb.ErrorCode_NOT_LEADER {
				// The coordinator could not reach the state: fail the call so the
				// client retries, rather than answer a per-group NOT_LEADER.
				return nil, metastore.UnavailableError("deleting group %q", r.Group)
			}
		}
		return &pb.DeleteGroupsResponse{Results: results}, nil
	})
}

func (a *api) CommitOffsets(ctx context.Context, req *pb.CommitOffsetsRequest) (*pb.CommitOffsetsResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.CommitOffsets, func() (*pb.CommitOffsetsResponse, error) {
		if req.Generation != nil {
			c, err := a.coordinator(ctx)
			if err != nil {
				return nil, err
			}
			if code := c.CheckCommit(ctx, req.Group, *req.Generation, req.MemberId, req.InstanceId); code != 0 {
				return &pb.CommitOffsetsResponse{GroupError: code}, nil
			}
		}
		// Concurrent commits share Raft entries (the CommitSegment batching).
		res, err := a.n.offsets.submit(ctx, &pb.CommitOffsetsCommand{Group: req.Group, Offsets: req.Offsets})
		if err != nil {
			return nil, err
		}
		if res.Err != nil {
			return nil, refusal(res.Err)
		}
		a.n.groups.Committed(req.Group)
		return &pb.CommitOffsetsResponse{Results: res.Offsets}, nil
	})
}

func (a *api) ConsumerHeartbeat(ctx context.Context, req *pb.ConsumerHeartbeatRequest) (*pb.ConsumerHeartbeatResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ConsumerHeartbeat, func() (*pb.ConsumerHeartbeatResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		return c.ConsumerHeartbeat(ctx, req), nil
	})
}

func (a *api) ConsumerGroupDescribe(ctx context.Context, req *pb.ConsumerGroupDescribeRequest) (*pb.ConsumerGroupDescribeResponse, error) {
	return onLeader(ctx, a.n, req, pb.MetastoreClient.ConsumerGroupDescribe, func() (*pb.ConsumerGroupDescribeResponse, error) {
		c, err := a.coordinator(ctx)
		if err != nil {
			return nil, err
		}
		return &pb.ConsumerGroupDescribeResponse{Groups: c.ConsumerDescribe(ctx, req.Groups)}, nil
	})
}
