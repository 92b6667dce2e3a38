package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/state"
)

// propose stamps cmd with the apply-rules version and the leader's clock, appends it
// to the Raft log and waits until this node applied it.
//
// Outcomes: the state's Result; NOT_LEADER when Raft refused the entry before
// appending it (hashicorp/raft answers ErrNotLeader and
// ErrLeadershipTransferInProgress only for entries it never appended); UNAVAILABLE
// when it could not even be queued; AMBIGUOUS for everything after the entry may
// have been appended: leadership lost, shutdown, the deadline, an apply that failed
// on this node's storage. A caller must never report AMBIGUOUS as a clean failure.
func (n *Node) propose(ctx context.Context, cmd *pb.Command) (*state.Result, error) {
	return n.proposeAt(ctx, time.Now().UnixMilli(), cmd)
}

// proposeAt is propose with the leader's clock reading given.
func (n *Node) proposeAt(ctx context.Context, nowMs int64, cmd *pb.Command) (*state.Result, error) {
	if err := n.serving(); err != nil {
		return nil, err
	}
	cmd.Version = state.CommandVersion
	cmd.NowMs = nowMs
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, metastore.ErrorOf(pb.ErrorCode_INVALID_REQUEST, err.Error())
	}
	f := n.raft.Apply(data, n.cfg.ApplyTimeout)
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		if err != nil {
			return nil, n.applyError(err)
		}
	case <-ctx.Done():
		return nil, metastore.AmbiguousError("no outcome before the deadline: %v", ctx.Err())
	case <-n.stopCh:
		return nil, metastore.AmbiguousError("node %s stopped while the entry was in flight", n.cfg.NodeID)
	}
	a, _ := f.Response().(*applied)
	switch {
	case a == nil || (a.err == nil && a.res == nil):
		return nil, metastore.AmbiguousError("entry %d applied without a result", f.Index())
	case a.err != nil:
		return nil, metastore.AmbiguousError("entry %d committed but not applied here: %v", f.Index(), a.err)
	}
	return a.res, nil
}

func (n *Node) applyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return metastore.UnavailableError("raft busy: %v", err)
	}
	return metastore.AmbiguousError("%v", err)
}

// refusal turns a whole-command refusal from the state into the wire error.
func refusal(e *state.Error) error {
	return &metastore.Error{Code: e.Code, Message: e.Message}
}

// --- commit batching ----------------------------------------------------------------

// batcher gathers concurrent CommitSegment calls into CommitSegmentsCommand entries
// (group commit). A batch is proposed as soon as one of CommitInflight slots is free;
// while all are busy, arriving calls join the next batch, so batches grow with load
// and a lone call waits for nothing.
type batcher[Req proto.Message, Resp any] struct {
	n     *Node
	in    chan *commitCall[Req, Resp]
	slots chan struct{}
	wg    sync.WaitGroup
	// apply proposes one batch as one Raft entry and returns one answer per
	// request, in order.
	apply func(ctx context.Context, reqs []Req) ([]Resp, error)
}

type commitCall[Req, Resp any] struct {
	req  Req
	size int
	out  chan commitOutcome[Resp] // capacity 1
}

type commitOutcome[Resp any] struct {
	resp Resp
	err  error
}

func newBatcher[Req proto.Message, Resp any](n *Node, apply func(context.Context, []Req) ([]Resp, error)) *batcher[Req, Resp] {
	return &batcher[Req, Resp]{
		n:     n,
		in:    make(chan *commitCall[Req, Resp], n.cfg.CommitBatchMax),
		slots: make(chan struct{}, n.cfg.CommitInflight),
		apply: apply,
	}
}

// segmentBatcher gathers CommitSegment calls into CommitSegmentsCommands.
func segmentBatcher(n *Node) *batcher[*pb.CommitSegmentRequest, *pb.CommitSegmentResponse] {
	return newBatcher(n, func(ctx context.Context, reqs []*pb.CommitSegmentRequest) ([]*pb.CommitSegmentResponse, error) {
		res, err := n.propose(ctx, &pb.Command{Op: &pb.Command_CommitSegments{CommitSegments: &pb.CommitSegmentsCommand{Commits: reqs}}})
		switch {
		case err != nil:
			return nil, err
		case res.Err != nil:
			return nil, refusal(res.Err)
		}
		return res.Commits, nil
	})
}

// offsetBatcher gathers OffsetCommits (of any groups) into CommitOffsetsBatch
// commands; each answer is that commit's own result.
func offsetBatcher(n *Node) *batcher[*pb.CommitOffsetsCommand, *state.Result] {
	return resultBatcher(n, func(reqs []*pb.CommitOffsetsCommand) *pb.Command {
		return &pb.Command{Op: &pb.Command_CommitOffsetsBatch{CommitOffsetsBatch: &pb.CommitOffsetsBatchCommand{Commits: reqs}}}
	})
}

// txnBatcher gathers transaction coordinator commands into TxnBatch entries.
func txnBatcher(n *Node) *batcher[*pb.Command, *state.Result] {
	return resultBatcher(n, func(reqs []*pb.Command) *pb.Command {
		return &pb.Command{Op: &pb.Command_TxnBatch{TxnBatch: &pb.TxnBatchCommand{Ops: reqs}}}
	})
}

// resultBatcher batches requests into the command wrap makes of them, whose
// Result.Batch has one result per request.
func resultBatcher[Req proto.Message](n *Node, wrap func([]Req) *pb.Command) *batcher[Req, *state.Result] {
	return newBatcher(n, func(ctx context.Context, reqs []Req) ([]*state.Result, error) {
		res, err := n.propose(ctx, wrap(reqs))
		switch {
		case err != nil:
			return nil, err
		case res.Err != nil:
			return nil, refusal(res.Err)
		}
		return res.Batch, nil
	})
}

// submit queues one commit and waits for its own answer.
func (b *batcher[Req, Resp]) submit(ctx context.Context, req Req) (Resp, error) {
	var zero Resp
	c := &commitCall[Req, Resp]{req: req, size: proto.Size(req), out: make(chan commitOutcome[Resp], 1)}
	select {
	case b.in <- c:
	case <-ctx.Done():
		return zero, metastore.UnavailableError("commit queue full: %v", ctx.Err())
	case <-b.n.stopCh:
		return zero, b.n.serving()
	}
	select {
	case o := <-c.out:
		return o.resp, o.err
	case <-ctx.Done():
		return zero, metastore.AmbiguousError("no outcome before the deadline: %v", ctx.Err())
	case <-b.n.stopCh:
		return zero, metastore.AmbiguousError("node %s stopped while the commit was queued or in flight", b.n.cfg.NodeID)
	}
}

func (b *batcher[Req, Resp]) run() {
	defer b.wg.Wait()
	max, maxBytes := b.n.cfg.CommitBatchMax, b.n.cfg.CommitBatchMaxBytes
	for {
		var batch []*commitCall[Req, Resp]
		size := 0
		add := func(c *commitCall[Req, Resp]) { batch = append(batch, c); size += c.size }
		full := func() bool { return len(batch) >= max || size >= maxBytes }
		select {
		case c := <-b.in:
			add(c)
		case <-b.n.stopCh:
			return
		}
		// Wait for a slot; calls arriving meanwhile join this batch.
	gather:
		for {
			if full() {
				select {
				case b.slots <- struct{}{}:
				case <-b.n.stopCh:
					return
				}
				break gather
			}
			select {
			case b.slots <- struct{}{}:
				break gather
			case c := <-b.in:
				add(c)
			case <-b.n.stopCh:
				return
			}
		}
		if w := b.n.cfg.CommitBatchWindow; w > 0 && !full() {
			t := time.NewTimer(w)
		window:
			for !full() {
				select {
				case c := <-b.in:
					add(c)
				case <-t.C:
					break window
				case <-b.n.stopCh:
					t.Stop()
					<-b.slots
					return
				}
			}
			t.Stop()
		}
	drain:
		for !full() {
			select {
			case c := <-b.in:
				add(c)
			default:
				break drain
			}
		}
		b.wg.Add(1)
		go b.commit(batch)
	}
}

// commit proposes one batch and hands each caller its own response.
func (b *batcher[Req, Resp]) commit(batch []*commitCall[Req, Resp]) {
	defer b.wg.Done()
	defer func() { <-b.slots }()
	reqs := make([]Req, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.n.cfg.ApplyTimeout)
	defer cancel()
	resps, err := b.apply(ctx, reqs)
	if err == nil && len(resps) != len(batch) {
		err = metastore.AmbiguousError("batch of %d commits got %d answers", len(batch), len(resps))
	}
	for i, c := range batch {
		if err != nil {
			c.out <- commitOutcome[Resp]{err: err}
		} else {
			c.out <- commitOutcome[Resp]{resp: resps[i]}
		}
	}
}

// --- linearizable reads -------------------------------------------------------------

// linearize returns nil when this node may answer a read linearizably from its
// state: it leads, its FSM applied every entry of earlier terms (a barrier once per
// term), and it still led after the read arrived (VerifyLeader, shared between
// concurrent reads).
//
// Every write acknowledged to a client was applied by the leader's FSM before the
// acknowledgement, so what remains is earlier terms' entries (the barrier) and a
// deposed leader answering from stale state (the verification).
func (n *Node) linearize(ctx context.Context) error {
	if err := n.serving(); err != nil {
		return err
	}
	if !n.IsLeader() {
		return n.notLeader()
	}
	if err := n.barrier(ctx); err != nil {
		return err
	}
	return n.verify.verify(ctx)
}

// barrier makes sure a barrier of the current term has completed.
func (n *Node) barrier(ctx context.Context) error {
	term := n.raft.CurrentTerm()
	if n.barrierTerm.Load() >= term {
		return nil
	}
	n.barrierMu.Lock()
	defer n.barrierMu.Unlock()
	if n.barrierTerm.Load() >= term {
		return nil
	}
	f := n.raft.Barrier(n.cfg.ApplyTimeout)
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		if err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return n.notLeader()
			}
			return metastore.UnavailableError("barrier: %v", err)
		}
	case <-ctx.Done():
		return metastore.UnavailableError("barrier: %v", ctx.Err())
	case <-n.stopCh:
		return n.serving()
	}
	n.barrierTerm.Store(term)
	return nil
}

// verifier shares VerifyLeader round trips between concurrent reads: one round is
// in flight at a time, and a read that arrives while one is in flight waits for the
// next (the one in flight may have started before the read arrived, so it proves
// nothing about it).
type verifier struct {
	n *Node

	mu       sync.Mutex
	inflight bool
	next     *verifyRound
}

type verifyRound struct {
	done chan struct{}
	err  error
}

func (v *verifier) verify(ctx context.Context) error {
	v.mu.Lock()
	if v.next == nil {
		v.next = &verifyRound{done: make(chan struct{})}
	}
	r := v.next
	if !v.inflight {
		v.start()
	}
	v.mu.Unlock()
	select {
	case <-r.done:
		if r.err != nil {
			if errors.Is(r.err, raft.ErrNotLeader) || errors.Is(r.err, raft.ErrLeadershipLost) {
				return v.n.notLeader()
			}
			return metastore.UnavailableError("verify leader: %v", r.err)
		}
		return nil
	case <-ctx.Done():
		return metastore.UnavailableError("verify leader: %v", ctx.Err())
	case <-v.n.stopCh:
		return v.n.serving()
	}
}

// start launches the waiting round. Call with mu held and nothing in flight.
func (v *verifier) start() {
	r := v.next
	v.next = nil
	v.inflight = true
	go func() {
		r.err = v.n.raft.VerifyLeader().Error()
		close(r.done)
		v.mu.Lock()
		v.inflight = false
		if v.next != nil {
			v.start()
		}
		v.mu.Unlock()
	}()
}
