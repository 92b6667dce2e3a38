package server

import (
	"bytes"
	"context"
	"testing"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// The compactor's calls through the client on a 3-node cluster: ReplaceIndex,
// DeleteRecords, Segment, ClaimGarbage and ForgetGarbage, and the watch events
// that tell agents what changed.
func TestCompactionCalls(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	topic := createTopic(t, cl, "t", 2)
	ctx := ctxT(t, 40*time.Second)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := c.client().Watch(wctx, &pb.WatchRequest{Partitions: []*pb.PartitionRef{{TopicId: topic, Partition: 0}}})
	if ev := <-events; !ev.Resync {
		t.Fatalf("first event %v", ev)
	}
	var segs [][]byte
	for range 3 {
		req := commitReq(topic, []int32{0, 1}, 5)
		if _, err := cl.CommitSegment(ctx, req); err != nil {
			t.Fatal(err)
		}
		segs = append(segs, req.SegmentId)
	}
	info, err := cl.Segment(ctx, &pb.SegmentRequest{SegmentId: segs[0]})
	if err != nil || info.Record == nil || len(info.Record.Result.Chunks) != 2 {
		t.Fatalf("segment info %v %v", info, err)
	}
	look, err := cl.Lookup(ctx, &pb.LookupRequest{TopicId: topic, Partition: 0, Offset: 0, MaxEntries: 100})
	if err != nil || len(look.Entries) != 3 {
		t.Fatalf("lookup %v %v", look, err)
	}
	out := randomID()
	if _, err := cl.RecordIntent(ctx, &pb.RecordIntentRequest{SegmentId: out, AgentId: "compactor", TtlMs: 60_000}); err != nil {
		t.Fatal(err)
	}
	req := &pb.ReplaceIndexRequest{TopicId: topic, Partition: 0, Inputs: look.Entries, SegmentId: out, Size: 1000,
		Outputs: []*pb.IndexEntry{{BaseOffset: 0, LastOffset: 14, SegmentId: out, Length: 900, BatchCount: 3, RecordCount: 15, Flags: 1, Level: 1, MaxTimestamp: 2000}}}
	resp, err := cl.ReplaceIndex(ctx, req)
	if err != nil || resp.Error != pb.ErrorCode_NONE {
		t.Fatalf("replace %v %v", resp, err)
	}
	// A concurrent compactor that read the same run loses cleanly.
	other := randomID()
	req2 := &pb.ReplaceIndexRequest{TopicId: topic, Partition: 0, Inputs: look.Entries, SegmentId: other, Size: 1000,
		Outputs: []*pb.IndexEntry{{BaseOffset: 0, LastOffset: 14, SegmentId: other, Length: 900, BatchCount: 3, RecordCount: 15, Flags: 1, Level: 1}}}
	if resp, err := cl.ReplaceIndex(ctx, req2); err != nil || resp.Error != pb.ErrorCode_STALE_INDEX {
		t.Fatalf("second replace %v %v", resp, err)
	}
	if info, err := cl.Segment(ctx, &pb.SegmentRequest{SegmentId: out}); err != nil || info.Intent != nil || info.Record.GetReferences() != 1 {
		t.Fatalf("output after commit %v %v", info, err)
	}
	dr, err := cl.DeleteRecords(ctx, &pb.DeleteRecordsRequest{Partitions: []*pb.PartitionOffset{{TopicId: topic, Partition: 1, Offset: 10}}})
	if err != nil || dr.Results[0].LogStartOffset != 10 {
		t.Fatalf("delete records %v %v", dr, err)
	}
	// Partition 0's watcher sees the replacement, not partition 1's log start.
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case ev := <-events:
			for _, ch := range ev.Changes {
				if !bytes.Equal(ch.TopicId, topic) || ch.Partition != 0 {
					t.Fatalf("change of an unwatched partition: %v", ch)
				}
				if ch.Replaced && ch.ReplacedFrom == 0 && ch.ReplacedTo == 14 && len(ev.Entries) == 1 && bytes.Equal(ev.Entries[0].SegmentId, out) {
					done = true
				}
			}
		case <-deadline:
			t.Fatal("no replacement event")
		}
	}
	// Segments 0 and 1 lost both references (partition 0 merged, partition 1's
	// first two entries deleted); the third keeps partition 1's. With no grace
	// they are claimed.
	g, err := cl.ClaimGarbage(ctx, &pb.ClaimGarbageRequest{GraceMs: 0, Limit: 10})
	if err != nil || len(g.Garbage) != 2 {
		t.Fatalf("claim %v %v", g, err)
	}
	for _, x := range g.Garbage {
		if !bytes.Equal(x.SegmentId, segs[0]) && !bytes.Equal(x.SegmentId, segs[1]) {
			t.Fatalf("claimed %x, still referenced", x.SegmentId)
		}
	}
	if _, err := cl.ForgetGarbage(ctx, &pb.ForgetGarbageRequest{SegmentIds: [][]byte{segs[0], segs[1]}}); err != nil {
		t.Fatal(err)
	}
	if g, err := cl.ClaimGarbage(ctx, &pb.ClaimGarbageRequest{GraceMs: 0, Limit: 10}); err != nil || len(g.Garbage) != 0 {
		t.Fatalf("claim after forget %v %v", g, err)
	}
}
