package state

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func (a *applier) dump() []byte {
	a.t.Helper()
	var b bytes.Buffer
	if err := a.s.Dump(&b); err != nil {
		a.t.Fatal(err)
	}
	return b.Bytes()
}

func (a *applier) lookup(tid []byte, p int32, off int64) *pb.LookupResponse {
	a.t.Helper()
	r, err := a.s.Lookup(tid, p, off, 1000, 0)
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

func (a *applier) segment(seg []byte) *pb.SegmentRecord {
	a.t.Helper()
	r, err := a.s.Segment(seg)
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

func replaceCmd(req *pb.ReplaceIndexRequest) *pb.Command {
	return &pb.Command{Op: &pb.Command_ReplaceIndex{ReplaceIndex: &pb.ReplaceIndexCommand{Request: req}}}
}

func deleteRecordsCmd(tid []byte, p int32, off int64) *pb.Command {
	return &pb.Command{Op: &pb.Command_DeleteRecords{DeleteRecords: &pb.DeleteRecordsCommand{Partitions: []*pb.PartitionOffset{{TopicId: tid, Partition: p, Offset: off}}}}}
}

func claimCmd(grace int64) *pb.Command {
	return &pb.Command{Op: &pb.Command_ClaimGarbage{ClaimGarbage: &pb.ClaimGarbageCommand{GraceMs: grace, Limit: 100}}}
}

func forgetCmd(ids ...[]byte) *pb.Command {
	return &pb.Command{Op: &pb.Command_ForgetGarbage{ForgetGarbage: &pb.ForgetGarbageCommand{SegmentIds: ids}}}
}

// threeSegments commits segments 0x51, 0x52, 0x53, each with a chunk of 10 offsets
// for partitions 0 and 1 of topic id(1).
func threeSegments(t *testing.T) *applier {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 2, nil))
	for i, seg := range [][]byte{id(0x51), id(0x52), id(0x53)} {
		r := a.apply(commit(seg, chunk(id(1), 0, 0, int64(1000+i), 10), chunk(id(1), 1, 100, int64(1000+i), 10)))
		if r.Commits[0].Chunks[0].Error != pb.ErrorCode_NONE {
			t.Fatal(r.Commits[0].Chunks[0])
		}
	}
	return a
}

// merged is one absolute output covering [base, last] in segment seg.
func merged(seg []byte, base, last int64) *pb.IndexEntry {
	return &pb.IndexEntry{BaseOffset: base, LastOffset: last, SegmentId: seg, Position: 0, Length: 300, MaxTimestamp: 1002,
		BatchCount: 3, RecordCount: int32(last - base + 1), Flags: 1, Level: 1}
}

func TestReplaceIndex(t *testing.T) {
	a := threeSegments(t)
	in := a.lookup(id(1), 0, 0).Entries
	if len(in) != 3 {
		t.Fatalf("entries %v", in)
	}
	out := id(0x61)
	req := &pb.ReplaceIndexRequest{TopicId: id(1), Partition: 0, Inputs: in, Outputs: []*pb.IndexEntry{merged(out, 0, 29)}, SegmentId: out, Size: 400}
	var events []*pb.WatchEvent
	a.s.SetNotifier(func(ev *pb.WatchEvent) { events = append(events, ev) })
	r := a.apply(replaceCmd(req))
	if r.Replace.GetError() != pb.ErrorCode_NONE {
		t.Fatalf("replace: %v", r.Replace)
	}
	got := a.lookup(id(1), 0, 0).Entries
	if len(got) != 1 || got[0].Level != 1 || !bytes.Equal(got[0].SegmentId, out) || got[0].LastOffset != 29 {
		t.Fatalf("after replace: %v", got)
	}
	if len(events) != 1 || len(events[0].Changes) != 1 || !events[0].Changes[0].Replaced ||
		events[0].Changes[0].ReplacedFrom != 0 || events[0].Changes[0].ReplacedTo != 29 || len(events[0].Entries) != 1 {
		t.Fatalf("events %v", events)
	}
	// Partition 1 still references the ingestion segments; the output is referenced.
	for _, seg := range [][]byte{id(0x51), id(0x52), id(0x53)} {
		if rec := a.segment(seg); rec.References != 1 || rec.UnreferencedMs != 0 {
			t.Fatalf("segment %x: %v", seg[0], rec)
		}
	}
	if rec := a.segment(out); rec.References != 1 || rec.Level != 1 {
		t.Fatalf("output: %v", rec)
	}
	// A retry (the first answer was lost) succeeds and changes nothing.
	before := a.dump()
	if r := a.apply(replaceCmd(req)); r.Replace.GetError() != pb.ErrorCode_NONE {
		t.Fatalf("retry: %v", r.Replace)
	}
	if after := a.dump(); !bytes.Equal(before[20:], after[20:]) && !sameButApplied(before, after) {
		t.Fatal("a retried replacement changed the state")
	}
	// Partition 1 merged too: the ingestion segments are unreferenced now.
	in1 := a.lookup(id(1), 1, 0).Entries
	out1 := id(0x62)
	if r := a.apply(replaceCmd(&pb.ReplaceIndexRequest{TopicId: id(1), Partition: 1, Inputs: in1, Outputs: []*pb.IndexEntry{merged(out1, 0, 29)}, SegmentId: out1, Size: 400})); r.Replace.GetError() != pb.ErrorCode_NONE {
		t.Fatalf("replace p1: %v", r.Replace)
	}
	for _, seg := range [][]byte{id(0x51), id(0x52), id(0x53)} {
		if rec := a.segment(seg); rec.References != 0 || rec.UnreferencedMs == 0 {
			t.Fatalf("segment %x after both merges: %v", seg[0], rec)
		}
	}
}

// sameButApplied reports whether two dumps differ only in the applied index.
func sameButApplied(a, b []byte) bool {
	strip := func(d []byte) []byte {
		key := append([]byte{byte(len(keyApplied))}, keyApplied...)
		i := bytes.Index(d, key)
		if i < 0 {
			return d
		}
		end := i + len(key) + 1 + int(d[i+len(key)])
		return append(append([]byte(nil), d[:i]...), d[end:]...)
	}
	return bytes.Equal(strip(a), strip(b))
}

// A replacement whose inputs are not exactly the stored run changes nothing.
func TestReplaceIndexStale(t *testing.T) {
	a := threeSegments(t)
	in := a.lookup(id(1), 0, 0).Entries
	out := id(0x61)
	stale := map[string]*pb.ReplaceIndexRequest{
		"missing middle input": {Inputs: []*pb.IndexEntry{in[0], in[2]}, Outputs: []*pb.IndexEntry{merged(out, 0, 29)}},
		"extra input":          {Inputs: []*pb.IndexEntry{in[0], in[1], in[2], {BaseOffset: 30, LastOffset: 39, SegmentId: id(0x54), Length: 100}}, Outputs: []*pb.IndexEntry{merged(out, 0, 29)}},
		"other position":       {Inputs: []*pb.IndexEntry{in[0], {BaseOffset: 10, LastOffset: 19, SegmentId: id(0x52), Position: 1, Length: 100}}, Outputs: []*pb.IndexEntry{merged(out, 0, 19)}},
		"straddles the start":  {Inputs: []*pb.IndexEntry{{BaseOffset: 5, LastOffset: 9, SegmentId: id(0x51), Length: 100}}, Outputs: []*pb.IndexEntry{merged(out, 5, 9)}},
		"straddles the end":    {Inputs: []*pb.IndexEntry{in[0], {BaseOffset: 10, LastOffset: 14, SegmentId: id(0x52), Length: 100}}, Outputs: []*pb.IndexEntry{merged(out, 0, 14)}},
	}
	before := a.dump()
	for name, req := range stale {
		req.TopicId, req.Partition, req.SegmentId, req.Size = id(1), 0, out, 400
		if r := a.apply(replaceCmd(req)); r.Replace.GetError() != pb.ErrorCode_STALE_INDEX {
			t.Errorf("%s: %v, want STALE_INDEX", name, r.Replace)
		}
	}
	if !sameButApplied(before, a.dump()) {
		t.Fatal("a stale replacement changed the state")
	}
	// After a retention pass dropped the first entry, a replacement read before it
	// is stale too.
	if r := a.apply(deleteRecordsCmd(id(1), 0, 10)); r.LogStarts[0].LogStartOffset != 10 {
		t.Fatalf("delete records: %v", r.LogStarts)
	}
	if r := a.apply(replaceCmd(&pb.ReplaceIndexRequest{TopicId: id(1), Partition: 0, Inputs: in, Outputs: []*pb.IndexEntry{merged(out, 0, 29)}, SegmentId: out, Size: 400})); r.Replace.GetError() != pb.ErrorCode_STALE_INDEX {
		t.Fatalf("after retention: %v", r.Replace)
	}
}

func TestReplaceIndexValidation(t *testing.T) {
	a := threeSegments(t)
	in := a.lookup(id(1), 0, 0).Entries
	out := id(0x61)
	bad := func(mut func(*pb.ReplaceIndexRequest)) *pb.ReplaceIndexRequest {
		req := &pb.ReplaceIndexRequest{TopicId: id(1), Partition: 0, Inputs: in, Outputs: []*pb.IndexEntry{merged(out, 0, 29)}, SegmentId: out, Size: 400}
		req = proto.Clone(req).(*pb.ReplaceIndexRequest)
		mut(req)
		return req
	}
	cases := map[string]struct {
		req  *pb.ReplaceIndexRequest
		want pb.ErrorCode
	}{
		"no inputs":         {bad(func(r *pb.ReplaceIndexRequest) { r.Inputs = nil }), pb.ErrorCode_INVALID_REQUEST},
		"output past range": {bad(func(r *pb.ReplaceIndexRequest) { r.Outputs[0].LastOffset = 30 }), pb.ErrorCode_INVALID_REQUEST},
		"relative output":   {bad(func(r *pb.ReplaceIndexRequest) { r.Outputs[0].Flags = 0 }), pb.ErrorCode_INVALID_REQUEST},
		"other segment":     {bad(func(r *pb.ReplaceIndexRequest) { r.Outputs[0].SegmentId = id(0x51) }), pb.ErrorCode_INVALID_REQUEST},
		"bytes past size":   {bad(func(r *pb.ReplaceIndexRequest) { r.Size = 100 }), pb.ErrorCode_INVALID_REQUEST},
		"overlapping":       {bad(func(r *pb.ReplaceIndexRequest) { r.Outputs = []*pb.IndexEntry{merged(out, 0, 15), merged(out, 15, 29)} }), pb.ErrorCode_INVALID_REQUEST},
		"invented marker": {bad(func(r *pb.ReplaceIndexRequest) {
			r.Outputs = []*pb.IndexEntry{{BaseOffset: 3, LastOffset: 3, Marker: 1}}
		}), pb.ErrorCode_INVALID_REQUEST},
		"inputs out of order": {bad(func(r *pb.ReplaceIndexRequest) { r.Inputs[0], r.Inputs[1] = r.Inputs[1], r.Inputs[0] }), pb.ErrorCode_INVALID_REQUEST},
		"aborted outside":     {bad(func(r *pb.ReplaceIndexRequest) { r.DroppedAborted = []int64{40} }), pb.ErrorCode_INVALID_REQUEST},
		"unknown partition":   {bad(func(r *pb.ReplaceIndexRequest) { r.Partition = 7 }), pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION},
		"segment, no output":  {bad(func(r *pb.ReplaceIndexRequest) { r.Outputs = nil }), pb.ErrorCode_INVALID_REQUEST},
	}
	before := a.dump()
	for name, c := range cases {
		if r := a.apply(replaceCmd(c.req)); r.Replace.GetError() != c.want {
			t.Errorf("%s: %v, want %v", name, r.Replace, c.want)
		}
	}
	if !sameButApplied(before, a.dump()) {
		t.Fatal("a refused replacement changed the state")
	}
	// A gap at the end of the index is refused.
	if r := a.apply(replaceCmd(&pb.ReplaceIndexRequest{TopicId: id(1), Partition: 0, Inputs: in[2:]})); r.Replace.GetError() != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("a tail gap: %v", r.Replace)
	}
	// Everything removed (key compaction found nothing live): a gap, no segment.
	if r := a.apply(replaceCmd(&pb.ReplaceIndexRequest{TopicId: id(1), Partition: 0, Inputs: in[:2]})); r.Replace.GetError() != pb.ErrorCode_NONE {
		t.Fatalf("empty replacement: %v", r.Replace)
	}
	if got := a.lookup(id(1), 0, 0).Entries; len(got) != 1 || got[0].BaseOffset != 20 {
		t.Fatalf("a Lookup in the gap must return the next entry: %v", got)
	}
}

func TestDeleteRecords(t *testing.T) {
	a := threeSegments(t)
	var events []*pb.WatchEvent
	a.s.SetNotifier(func(ev *pb.WatchEvent) { events = append(events, ev) })
	// Inside the second entry: the first goes, the second stays.
	r := a.apply(deleteRecordsCmd(id(1), 0, 15))
	if r.LogStarts[0].Error != pb.ErrorCode_NONE || r.LogStarts[0].LogStartOffset != 15 {
		t.Fatalf("delete records: %v", r.LogStarts)
	}
	if got := a.lookup(id(1), 0, 15); got.Head.LogStartOffset != 15 || len(got.Entries) != 2 || got.Entries[0].BaseOffset != 10 {
		t.Fatalf("after: %v", got)
	}
	if got := a.lookup(id(1), 0, 14); got.Error != pb.ErrorCode_OFFSET_OUT_OF_RANGE {
		t.Fatalf("below log start: %v", got.Error)
	}
	if len(events) != 1 || len(events[0].Changes) != 1 || events[0].Changes[0].LogStartOffset != 15 || events[0].Changes[0].Replaced {
		t.Fatalf("events %v", events)
	}
	if rec := a.segment(id(0x51)); rec.References != 1 {
		t.Fatalf("segment 0x51 after one of its two entries went: %v", rec)
	}
	// Backwards is a no-op; past the watermark is refused; -1 is the watermark.
	if r := a.apply(deleteRecordsCmd(id(1), 0, 3)); r.LogStarts[0].LogStartOffset != 15 || r.LogStarts[0].Error != pb.ErrorCode_NONE {
		t.Fatalf("backwards: %v", r.LogStarts)
	}
	if r := a.apply(deleteRecordsCmd(id(1), 0, 31)); r.LogStarts[0].Error != pb.ErrorCode_OFFSET_OUT_OF_RANGE {
		t.Fatalf("past hwm: %v", r.LogStarts)
	}
	if r := a.apply(deleteRecordsCmd(id(1), 0, -2)); r.LogStarts[0].Error != pb.ErrorCode_OFFSET_OUT_OF_RANGE {
		t.Fatalf("-2: %v", r.LogStarts)
	}
	if r := a.apply(deleteRecordsCmd(id(9), 0, 1)); r.LogStarts[0].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("unknown topic: %v", r.LogStarts)
	}
	if r := a.apply(deleteRecordsCmd(id(1), 0, -1)); r.LogStarts[0].LogStartOffset != 30 {
		t.Fatalf("-1: %v", r.LogStarts)
	}
	if got := a.lookup(id(1), 0, 30); len(got.Entries) != 0 || got.Head.LogStartOffset != 30 {
		t.Fatalf("emptied: %v", got)
	}
	// Partition 1 untouched.
	if got := a.lookup(id(1), 1, 0); len(got.Entries) != 3 || got.Head.LogStartOffset != 0 {
		t.Fatalf("partition 1: %v", got)
	}
}

func TestDeleteRecordsBounded(t *testing.T) {
	defer func(n int) { maxDropPerCommand = n }(maxDropPerCommand)
	maxDropPerCommand = 2
	a := threeSegments(t)
	r := a.apply(deleteRecordsCmd(id(1), 0, 30))
	if got := r.LogStarts[0].LogStartOffset; got != 20 {
		t.Fatalf("first command stopped at %d, want 20 (two entries dropped)", got)
	}
	r = a.apply(deleteRecordsCmd(id(1), 0, 30))
	if got := r.LogStarts[0].LogStartOffset; got != 30 {
		t.Fatalf("second command reached %d, want 30", got)
	}
	// The bound is the command's, over all its partitions.
	both := &pb.Command{Op: &pb.Command_DeleteRecords{DeleteRecords: &pb.DeleteRecordsCommand{Partitions: []*pb.PartitionOffset{
		{TopicId: id(1), Partition: 1, Offset: 20}, {TopicId: id(1), Partition: 1, Offset: 30}}}}}
	r = a.apply(both)
	if r.LogStarts[0].LogStartOffset != 20 || r.LogStarts[1].LogStartOffset != 20 {
		t.Fatalf("a command with two asks for one partition: %v", r.LogStarts)
	}
}

func TestDeleteRecordsDropsAbortedAndTimePoints(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	x := newTx(a, "tx", txnTimeout)
	x.add([]*pb.TxnPartition{{TopicId: id(1), Partition: 0}})
	produce(a, id(1), 0, x.batch(id(1), 0, 3))
	x.end(false)
	produce(a, id(1), 0, plain(2))
	got := a.lookup(id(1), 0, 0)
	if n := len(mustAborted(t, a, 0, got.Head.NextOffset)); n != 1 {
		t.Fatalf("aborted before: %d", n)
	}
	a.apply(deleteRecordsCmd(id(1), 0, 4)) // past the abort marker at 3
	if n := len(mustAborted(t, a, 4, 6)); n != 0 {
		t.Fatalf("aborted entries below the log start remain: %d", n)
	}
	lo, err := a.s.ListOffsets(id(1), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if lo.Offset < 4 {
		t.Fatalf("a timestamp search answers %d, below the log start", lo.Offset)
	}
}

func mustAborted(t *testing.T, a *applier, from, upto int64) []*pb.AbortedTxn {
	t.Helper()
	r, err := a.s.Lookup(id(1), 0, from, 1, upto)
	if err != nil {
		t.Fatal(err)
	}
	return r.Aborted
}

func TestGarbageCollection(t *testing.T) {
	a := threeSegments(t)
	for p := int32(0); p < 2; p++ {
		in := a.lookup(id(1), p, 0).Entries
		out := id(0x61 + byte(p))
		if r := a.apply(replaceCmd(&pb.ReplaceIndexRequest{TopicId: id(1), Partition: p, Inputs: in, Outputs: []*pb.IndexEntry{merged(out, 0, 29)}, SegmentId: out, Size: 400})); r.Replace.GetError() != pb.ErrorCode_NONE {
			t.Fatal(r.Replace)
		}
	}
	// Within the grace period nothing is claimed.
	if r := a.apply(claimCmd(1_000_000)); len(r.Garbage) != 0 {
		t.Fatalf("claimed within grace: %v", r.Garbage)
	}
	a.now += 2_000_000
	r := a.apply(claimCmd(1_000_000))
	if len(r.Garbage) != 3 {
		t.Fatalf("claimed %v, want the three ingestion segments", r.Garbage)
	}
	for _, g := range r.Garbage {
		if g.SegmentId[0] < 0x51 || g.SegmentId[0] > 0x53 || g.NeverCommitted {
			t.Fatalf("claimed %v", g)
		}
	}
	// Listed again until forgotten; a commit of a condemned id is refused.
	if again := a.apply(claimCmd(1_000_000)); len(again.Garbage) != 3 {
		t.Fatalf("condemned not listed again: %v", again.Garbage)
	}
	a.apply(forgetCmd(id(0x51), id(0x52), id(0x53)))
	if again := a.apply(claimCmd(1_000_000)); len(again.Garbage) != 0 {
		t.Fatalf("forgotten still listed: %v", again.Garbage)
	}
	if rec := a.segment(id(0x51)); !rec.Deleted || rec.Result != nil {
		t.Fatalf("tombstone %v", rec)
	}
	c := a.apply(commit(id(0x51), chunk(id(1), 0, 0, 1000, 10)))
	if c.Commits[0].Chunks[0].Error != pb.ErrorCode_INVALID_SEGMENT {
		t.Fatalf("a late commit of a collected segment: %v", c.Commits[0].Chunks[0])
	}
	// The tombstones go a day later.
	a.now += TombstoneKeepMs + 1000
	a.apply(claimCmd(1_000_000))
	if rec := a.segment(id(0x51)); rec != nil {
		t.Fatalf("tombstone kept past its day: %v", rec)
	}
	// The outputs are referenced: never claimed, however late.
	a.now += 1 << 40
	if r := a.apply(claimCmd(0)); len(r.Garbage) != 0 {
		t.Fatalf("referenced segments claimed: %v", r.Garbage)
	}
}

func TestGarbageExpiredIntents(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	intent := func(seg []byte, ttl int64) {
		now := a.now + 7
		if r := a.apply(&pb.Command{NowMs: now, Op: &pb.Command_RecordIntent{RecordIntent: &pb.RecordIntentCommand{Intent: &pb.UploadIntent{SegmentId: seg, AgentId: "a1", CreatedMs: now, ExpiresMs: now + ttl}}}}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	intent(id(0x71), 1000)  // will expire: an orphan
	intent(id(0x72), 1000)  // commits in time
	intent(id(0x73), 1<<28) // still uploading
	a.apply(commit(id(0x72), chunk(id(1), 0, 0, 1000, 5)))
	a.now += 5000
	r := a.apply(claimCmd(0))
	if len(r.Garbage) != 1 || !bytes.Equal(r.Garbage[0].SegmentId, id(0x71)) || !r.Garbage[0].NeverCommitted {
		t.Fatalf("claimed %v, want the expired intent's segment", r.Garbage)
	}
	// The orphan's late commit is refused: its object is being deleted.
	c := a.apply(commit(id(0x71), chunk(id(1), 0, 0, 1000, 5)))
	if c.Commits[0].Chunks[0].Error != pb.ErrorCode_INVALID_SEGMENT {
		t.Fatalf("late commit of a condemned upload: %v", c.Commits[0].Chunks[0])
	}
	if got := a.lookup(id(1), 0, 0); len(got.Entries) != 1 || got.Head.NextOffset != 5 {
		t.Fatalf("index after the refused commit: %v", got)
	}
	// A compaction output whose intent expired cannot be committed either.
	in := a.lookup(id(1), 0, 0).Entries
	out := id(0x74)
	intent(out, 10)
	a.now += 100
	a.apply(claimCmd(0))
	if rr := a.apply(replaceCmd(&pb.ReplaceIndexRequest{TopicId: id(1), Partition: 0, Inputs: in, Outputs: []*pb.IndexEntry{merged(out, 0, 4)}, SegmentId: out, Size: 400})); rr.Replace.GetError() != pb.ErrorCode_INVALID_SEGMENT {
		t.Fatalf("replacement into a condemned output: %v", rr.Replace)
	}
	info, err := a.s.SegmentInfo(id(0x73))
	if err != nil || info.Intent == nil || info.Record != nil {
		t.Fatalf("segment info of an upload in progress: %v %v", info, err)
	}
}

// Index entries of compaction outputs keep their level and cleaning time.
func TestIndexEntryVersion3(t *testing.T) {
	e := &pb.IndexEntry{BaseOffset: 10, LastOffset: 77, SegmentId: id(8), Position: 5, Length: 4 << 20,
		MaxTimestamp: 1_700_000_000_000, BatchCount: 9, RecordCount: 30, Flags: 1, Level: 2, CleanedMs: 1_700_000_000_500}
	val := encodeIndexValue(e)
	if val[0] != compactedValueVersion {
		t.Fatalf("version %d", val[0])
	}
	got, err := decodeIndexEntry(indexKey(id(4), 3, 77), val)
	if err != nil {
		t.Fatal(err)
	}
	e.TopicId, e.Partition = id(4), 3
	if !proto.Equal(got, e) {
		t.Fatalf("round trip %v, want %v", got, e)
	}
	for n := 1; n < len(val); n++ {
		if _, err := decodeIndexEntry(indexKey(id(4), 3, 77), val[:n]); err == nil {
			t.Fatalf("a value cut to %d bytes decoded", n)
		}
	}
}
