package server

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/metastoretest"
	"github.com/stratalog/strata/metastore/raftlog"
)

// ackedCommit is one CommitSegment a writer saw acknowledged, with when it was
// called and answered.
type ackedCommit struct {
	req        *pb.CommitSegmentRequest
	resp       *pb.CommitSegmentResponse
	start, end time.Time
}

// TestCommitsSurviveLeaderKills streams commits from several writers while the
// leader is killed (and later restarted) three times. Afterwards: every node holds
// the same index; per partition the entries tile the offsets from 0 to the head
// with no gap and no overlap; every acknowledged commit is there with the offsets it
// was given, once; and acknowledgements respect real time (a commit called after
// another was acknowledged got higher offsets on every partition they share).
func TestCommitsSurviveLeaderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	c := newCluster(t, 3)
	cl := c.client()
	const partitions = 4
	topic := createTopic(t, cl, "stream", partitions)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var (
		mu        sync.Mutex
		acked     []ackedCommit
		ambiguous int
		cancelled int
		wg        sync.WaitGroup
	)
	ackCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil {
				var parts []int32
				for p := range int32(partitions) {
					if rng.IntN(2) == 0 {
						parts = append(parts, p)
					}
				}
				if len(parts) == 0 {
					parts = []int32{rng.Int32N(partitions)}
				}
				req := commitReq(topic, parts, 1+rng.Int32N(5))
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				start := time.Now()
				resp, err := cl.CommitSegment(cctx, req)
				end := time.Now()
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					acked = append(acked, ackedCommit{req: req, resp: resp, start: start, end: end})
				case ctx.Err() != nil:
					cancelled++ // the test is over; may or may not be in the log
				case errors.Is(err, metastore.ErrAmbiguous):
					ambiguous++ // may or may not be in the log: both are fine
				default:
					mu.Unlock()
					t.Errorf("commit failed cleanly: %v", err)
					return
				}
				mu.Unlock()
			}
		}()
	}

	for kill := range 3 {
		target := ackCount() + 40
		waitFor(t, 30*time.Second, "commits before a kill", func() bool { return ackCount() >= target })
		l := c.waitLeader()
		t.Logf("kill %d: node %s leads, %d commits acknowledged", kill+1, c.nodes[l].id, ackCount())
		c.kill(l)
		c.waitLeader()
		target = ackCount() + 20
		waitFor(t, 30*time.Second, "commits under the new leader", func() bool { return ackCount() >= target })
		c.restart(l)
	}
	stop()
	wg.Wait()
	t.Logf("%d commits acknowledged, %d ambiguous, %d cut short at the end", len(acked), ambiguous, cancelled)

	// Commits cut short at the end may still be applied after stop: wait until the
	// leader's applied index holds still, then for every node to reach it.
	l := c.waitLeader()
	var settled uint64
	waitFor(t, 20*time.Second, "the leader to stop applying", func() bool {
		a := c.nodes[l].n.st.Applied()
		if a != settled {
			settled = a
			time.Sleep(200 * time.Millisecond)
			return false
		}
		return true
	})
	c.waitApplied(settled)
	assertSameIndex(t, c, topic, partitions)

	// The index tiles every partition's offsets exactly.
	type loc struct {
		partition int32
		base      int64
	}
	entries := map[loc]*pb.IndexEntry{}
	for p := range int32(partitions) {
		lk, err := c.nodes[l].n.st.Lookup(topic, p, 0, 10_000, 0)
		if err != nil {
			t.Fatal(err)
		}
		next := int64(0)
		segs := map[string]bool{}
		for _, e := range lk.Entries {
			if e.BaseOffset != next || e.LastOffset < e.BaseOffset {
				t.Fatalf("partition %d: entry [%d, %d] after offset %d: gap or overlap", p, e.BaseOffset, e.LastOffset, next-1)
			}
			if segs[string(e.SegmentId)] {
				t.Fatalf("partition %d: segment %x indexed twice", p, e.SegmentId)
			}
			segs[string(e.SegmentId)] = true
			entries[loc{p, e.BaseOffset}] = e
			next = e.LastOffset + 1
		}
		if next != lk.Head.NextOffset {
			t.Fatalf("partition %d: entries end at %d, head says next %d", p, next, lk.Head.NextOffset)
		}
	}

	// Every acknowledged commit is there with its offsets.
	for _, a := range acked {
		for i, ch := range a.resp.Chunks {
			if ch.Error != pb.ErrorCode_NONE {
				t.Fatalf("acknowledged chunk refused: %v", ch)
			}
			e := entries[loc{ch.Partition, ch.BaseOffset}]
			want := a.req.Chunks[i]
			if e == nil || !bytes.Equal(e.SegmentId, a.req.SegmentId) || e.LastOffset != ch.LastOffset ||
				e.LastOffset-e.BaseOffset+1 != int64(want.Batches[0].OffsetCount) {
				t.Fatalf("acknowledged commit of %x partition %d at [%d, %d] not in the index (found %v)", a.req.SegmentId, ch.Partition, ch.BaseOffset, ch.LastOffset, e)
			}
		}
	}

	// Real-time order: if a was acknowledged before b was called, b's offsets are
	// above a's on every partition both touched.
	for _, a := range acked {
		for _, b := range acked {
			if !a.end.Before(b.start) {
				continue
			}
			for _, ca := range a.resp.Chunks {
				for _, cb := range b.resp.Chunks {
					if ca.Partition == cb.Partition && cb.BaseOffset <= ca.LastOffset {
						t.Fatalf("partition %d: commit called after another was acknowledged got offset %d <= %d", ca.Partition, cb.BaseOffset, ca.LastOffset)
					}
				}
			}
		}
	}

	// And a linearizable read through the client agrees with the state.
	lk, err := cl.Lookup(ctxT(t, 10*time.Second), &pb.LookupRequest{TopicId: topic, Partition: 0, MaxEntries: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := c.nodes[l].n.st.Lookup(topic, 0, 0, 10_000, 0)
	if !equalEntries(lk.Entries, want.Entries) {
		t.Fatalf("client lookup: %d entries, state %d", len(lk.Entries), len(want.Entries))
	}
}

// TestStateBehindSnapshotCatchesUpFromLog: a state that lost its last writes (no
// fsync) is behind the latest snapshot while the Raft log still holds the gap: the
// node applies the gap from the log at start.
func TestStateBehindSnapshotCatchesUpFromLog(t *testing.T) {
	dir := t.TempDir()
	cfg := EmbeddedConfig(dir, "127.0.0.1:0")
	cfg.Logger = testLogger(t)
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := dial(t, n.APIAddr())
	topic := createTopic(t, cl, "t", 1)
	ctx := ctxT(t, 20*time.Second)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	stale := t.TempDir()
	copyDir(t, dir+"/state", stale)
	cfg.APIAddr = n.APIAddr()
	if n, err = Start(cfg); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0}, 3)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	applied := n.State().Applied()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := removeAll(dir + "/state"); err != nil {
		t.Fatal(err)
	}
	copyDir(t, stale, dir+"/state")
	if n, err = Start(cfg); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got := n.State().Applied(); got < applied {
		t.Fatalf("applied %d at start, snapshot holds %d", got, applied)
	}
	lk, err := cl.Lookup(ctx, &pb.LookupRequest{TopicId: topic, MaxEntries: 100})
	if err != nil || len(lk.Entries) != 10 || lk.Head.NextOffset != 30 {
		t.Fatalf("lookup: %v, %v", lk, err)
	}
}

// TestFsyncFailureStopsNode: the leader's Raft log fails to fsync. The leader must
// stop (not serve from a log it cannot trust), the others elect a leader, and the
// client carries on there with nothing acknowledged lost.
func TestFsyncFailureStopsNode(t *testing.T) {
	faults := make([]*metastoretest.SyncFaults, 3)
	c := newCluster(t, 3, func(cfg *Config) {
		i := int(cfg.NodeID[0] - '1')
		if faults[i] == nil {
			faults[i] = &metastoretest.SyncFaults{}
		}
		cfg.raftFS = errorfs.Wrap(vfs.Default, faults[i])
	})
	cl := c.client()
	topic := createTopic(t, cl, "t", 1)
	ctx := ctxT(t, 30*time.Second)
	var acked []*pb.CommitSegmentResponse
	commit := func() {
		t.Helper()
		r, err := cl.CommitSegment(ctx, commitReq(topic, []int32{0}, 1))
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, r)
	}
	commit()
	l := c.waitLeader()
	faults[l].On.Store(true)
	failed := c.nodes[l].n
	commit() // lands on the new leader after the old one stops
	select {
	case <-failed.Done():
	case <-ctx.Done():
		t.Fatal("the node whose disk failed did not stop")
	}
	if !errors.Is(failed.Err(), raftlog.ErrFailed) {
		t.Fatalf("stopped with %v, want a raft log failure", failed.Err())
	}
	c.nodes[l].n = nil
	for range 5 {
		commit()
	}
	// Its disk recovers; the node restarts from what was synced and catches up.
	faults[l].On.Store(false)
	c.restart(l)
	nl := c.waitLeader()
	c.waitApplied(c.nodes[nl].n.st.Applied())
	assertSameIndex(t, c, topic, 1)
	lk, err := cl.Lookup(ctx, &pb.LookupRequest{TopicId: topic, MaxEntries: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acked {
		found := false
		for _, e := range lk.Entries {
			found = found || e.BaseOffset == a.Chunks[0].BaseOffset
		}
		if !found {
			t.Fatalf("acknowledged offset %d lost", a.Chunks[0].BaseOffset)
		}
	}
}
