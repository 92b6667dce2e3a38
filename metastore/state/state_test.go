package state

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/topicconfig"
)

func openState(t testing.TB) *State {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// applier feeds commands at increasing Raft indexes.
type applier struct {
	t     testing.TB
	s     *State
	index uint64
	now   int64
}

func newApplier(t testing.TB) *applier {
	return &applier{t: t, s: openState(t), now: 1_700_000_000_000}
}

func (a *applier) apply(cmd *pb.Command) *Result {
	a.t.Helper()
	a.index++
	a.now += 7
	if cmd.Version == 0 {
		cmd.Version = CommandVersion
	}
	if cmd.NowMs == 0 {
		cmd.NowMs = a.now
	}
	r, err := a.s.Apply(a.index, cmd)
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

func id(b byte) []byte { return bytes.Repeat([]byte{b}, 16) }

func createTopic(name string, tid []byte, partitions int32, configs map[string]string) *pb.Command {
	return &pb.Command{Op: &pb.Command_CreateTopics{CreateTopics: &pb.CreateTopicsCommand{Topics: []*pb.TopicSpec{
		{Name: name, TopicId: tid, Partitions: partitions, ReplicationFactor: -1, Configs: configs},
	}}}}
}

func commit(seg []byte, chunks ...*pb.ChunkCommit) *pb.Command {
	size := int64(0)
	for _, c := range chunks {
		size = max(size, c.Position+c.Length)
	}
	return &pb.Command{Op: &pb.Command_CommitSegments{CommitSegments: &pb.CommitSegmentsCommand{Commits: []*pb.CommitSegmentRequest{
		{SegmentId: seg, Size: size, AgentId: "a1", Chunks: chunks},
	}}}}
}

// chunk makes a chunk at position pos with one batch per entry of counts, timestamps
// starting at ts.
func chunk(tid []byte, p int32, pos int64, ts int64, counts ...int32) *pb.ChunkCommit {
	c := &pb.ChunkCommit{TopicId: tid, Partition: p, Position: pos, Length: 100, FirstTimestamp: ts, MaxTimestamp: ts}
	for i, n := range counts {
		c.Batches = append(c.Batches, &pb.BatchInfo{OffsetCount: n, RecordCount: n, ProducerId: -1, MaxTimestamp: ts + int64(i)})
		c.MaxTimestamp = ts + int64(i)
	}
	return c
}

func TestCreateTopicValidation(t *testing.T) {
	a := newApplier(t)
	if r := a.apply(createTopic("orders", id(1), 3, map[string]string{"retention.ms": "1000", "cleanup.policy": "compact,delete"})); r.Topics[0].Error != pb.ErrorCode_NONE {
		t.Fatalf("create: %v", r.Topics[0])
	}
	long := string(bytes.Repeat([]byte("x"), 250))
	cases := []struct {
		name string
		cmd  *pb.Command
		want pb.ErrorCode
	}{
		{"duplicate name", createTopic("orders", id(2), 1, nil), pb.ErrorCode_TOPIC_ALREADY_EXISTS},
		{"empty name", createTopic("", id(2), 1, nil), pb.ErrorCode_INVALID_TOPIC},
		{"dot", createTopic(".", id(2), 1, nil), pb.ErrorCode_INVALID_TOPIC},
		{"dotdot", createTopic("..", id(2), 1, nil), pb.ErrorCode_INVALID_TOPIC},
		{"250 chars", createTopic(long, id(2), 1, nil), pb.ErrorCode_INVALID_TOPIC},
		{"bad char", createTopic("a/b", id(2), 1, nil), pb.ErrorCode_INVALID_TOPIC},
		{"collision", createTopic("ord_ers", id(2), 1, nil), pb.ErrorCode_NONE},
		{"collides with ord_ers", createTopic("ord.ers", id(3), 1, nil), pb.ErrorCode_INVALID_TOPIC},
		{"zero partitions", createTopic("x", id(2), 0, nil), pb.ErrorCode_INVALID_PARTITIONS},
		{"too many partitions", createTopic("x", id(2), topicconfig.MaxPartitions+1, nil), pb.ErrorCode_INVALID_PARTITIONS},
		{"zero id", createTopic("x", make([]byte, 16), 1, nil), pb.ErrorCode_INVALID_REQUEST},
		{"short id", createTopic("x", []byte{1}, 1, nil), pb.ErrorCode_INVALID_REQUEST},
		{"id reused", createTopic("x", id(1), 1, nil), pb.ErrorCode_INVALID_REQUEST},
		{"unknown config", createTopic("x", id(4), 1, map[string]string{"no.such": "1"}), pb.ErrorCode_INVALID_CONFIG},
		{"bad retention", createTopic("x", id(4), 1, map[string]string{"retention.ms": "-5"}), pb.ErrorCode_INVALID_CONFIG},
		{"bad policy", createTopic("x", id(4), 1, map[string]string{"cleanup.policy": "keep"}), pb.ErrorCode_INVALID_CONFIG},
		{"bad codec", createTopic("x", id(4), 1, map[string]string{"compression.type": "brotli"}), pb.ErrorCode_INVALID_CONFIG},
		{"int overflow", createTopic("x", id(4), 1, map[string]string{"max.message.bytes": "3000000000"}), pb.ErrorCode_INVALID_CONFIG},
		{"retry of create", createTopic("orders", id(1), 3, nil), pb.ErrorCode_NONE},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := a.apply(c.cmd)
			if got := r.Topics[0].Error; got != c.want {
				t.Fatalf("got %v (%s), want %v", got, r.Topics[0].Message, c.want)
			}
		})
	}
	rf := a.apply(&pb.Command{Op: &pb.Command_CreateTopics{CreateTopics: &pb.CreateTopicsCommand{Topics: []*pb.TopicSpec{{Name: "rf", TopicId: id(9), Partitions: 1, ReplicationFactor: -2}}}}})
	if rf.Topics[0].Error != pb.ErrorCode_INVALID_REPLICATION_FACTOR {
		t.Fatalf("replication factor -2: %v", rf.Topics[0].Error)
	}
	// validate_only changes nothing.
	vo := a.apply(&pb.Command{Op: &pb.Command_CreateTopics{CreateTopics: &pb.CreateTopicsCommand{ValidateOnly: true, Topics: []*pb.TopicSpec{{Name: "vo", TopicId: id(8), Partitions: 2, ReplicationFactor: 3}}}}})
	if vo.Topics[0].Error != pb.ErrorCode_NONE || vo.Topics[0].Topic.ReplicationFactor != 3 {
		t.Fatalf("validate only: %v", vo.Topics[0])
	}
	res, _, err := a.s.Topics([]*pb.TopicRef{{Name: "vo"}, {Name: "orders"}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION || res[1].Topic.Partitions != 3 || res[1].Topic.Configs["retention.ms"] != "1000" {
		t.Fatalf("describe: %v", res)
	}
}

func TestCommitAssignsContiguousOffsets(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 2, nil))
	r := a.apply(commit(id(0xa1), chunk(id(1), 0, 0, 1000, 3, 2), chunk(id(1), 1, 100, 1000, 5)))
	got := r.Commits[0].Chunks
	if got[0].BaseOffset != 0 || got[0].LastOffset != 4 || got[1].BaseOffset != 0 || got[1].LastOffset != 4 {
		t.Fatalf("first commit: %v", got)
	}
	r2 := a.apply(commit(id(0xa2), chunk(id(1), 0, 0, 2000, 1)))
	if c := r2.Commits[0].Chunks[0]; c.BaseOffset != 5 || c.LastOffset != 5 {
		t.Fatalf("second commit: %v", c)
	}
	// A retried commit (same segment id) gets the first answer and assigns nothing.
	r3 := a.apply(commit(id(0xa1), chunk(id(1), 0, 0, 1000, 3, 2), chunk(id(1), 1, 100, 1000, 5)))
	if c := r3.Commits[0].Chunks[0]; c.BaseOffset != 0 || c.LastOffset != 4 {
		t.Fatalf("retried commit: %v", c)
	}
	lk, err := a.s.Lookup(id(1), 0, 0, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if lk.Error != pb.ErrorCode_NONE || lk.Head.NextOffset != 6 || len(lk.Entries) != 2 {
		t.Fatalf("lookup: %v", lk)
	}
	e := lk.Entries[0]
	if e.BaseOffset != 0 || e.LastOffset != 4 || !bytes.Equal(e.SegmentId, id(0xa1)) || e.BatchCount != 2 || e.RecordCount != 5 || e.MaxTimestamp != 1001 {
		t.Fatalf("entry: %v", e)
	}
	// Offset 3 lies inside the first entry; 5 inside the second; 6 is the end.
	for off, wantEntries := range map[int64]int{3: 2, 5: 1, 6: 0} {
		lk, _ := a.s.Lookup(id(1), 0, off, 10, 0)
		if lk.Error != pb.ErrorCode_NONE || len(lk.Entries) != wantEntries {
			t.Fatalf("lookup %d: %v", off, lk)
		}
	}
	for _, off := range []int64{-1, 7} {
		if lk, _ := a.s.Lookup(id(1), 0, off, 10, 0); lk.Error != pb.ErrorCode_OFFSET_OUT_OF_RANGE {
			t.Fatalf("lookup %d: %v", off, lk.Error)
		}
	}
	if lk, _ := a.s.Lookup(id(1), 2, 0, 10, 0); lk.Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("lookup partition 2: %v", lk.Error)
	}
}

func TestCommitBadInput(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	good := func() *pb.ChunkCommit { return chunk(id(1), 0, 0, 1, 1) }
	cases := map[string]*pb.Command{
		"zero segment id":   commit(make([]byte, 16), good()),
		"no chunks":         {Op: &pb.Command_CommitSegments{CommitSegments: &pb.CommitSegmentsCommand{Commits: []*pb.CommitSegmentRequest{{SegmentId: id(5), Size: 10}}}}},
		"chunk past size":   {Op: &pb.Command_CommitSegments{CommitSegments: &pb.CommitSegmentsCommand{Commits: []*pb.CommitSegmentRequest{{SegmentId: id(5), Size: 10, Chunks: []*pb.ChunkCommit{good()}}}}}},
		"two chunks one tp": commit(id(5), good(), good()),
		"zero offsets":      commit(id(5), chunk(id(1), 0, 0, 1, 0)),
		"no batches":        commit(id(5), &pb.ChunkCommit{TopicId: id(1), Position: 0, Length: 10}),
		"bad flags":         commit(id(5), func() *pb.ChunkCommit { c := good(); c.Flags = 6; return c }()),
	}
	for name, cmd := range cases {
		r := a.apply(cmd)
		if r.Commits[0].Chunks[0].Error != pb.ErrorCode_INVALID_REQUEST {
			t.Errorf("%s: %v", name, r.Commits[0].Chunks)
		}
	}
	// Unknown topic or partition fails that chunk only; the others commit.
	r := a.apply(commit(id(6), chunk(id(7), 0, 0, 1, 1), chunk(id(1), 3, 100, 1, 1), chunk(id(1), 0, 200, 1, 2)))
	cs := r.Commits[0].Chunks
	if cs[0].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION || cs[1].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION || cs[2].Error != pb.ErrorCode_NONE || cs[2].LastOffset != 1 {
		t.Fatalf("mixed commit: %v", cs)
	}
	if lk, _ := a.s.Lookup(id(1), 0, 0, 10, 0); lk.Head.NextOffset != 2 {
		t.Fatalf("bad commits moved the head: %v", lk.Head)
	}
}

func TestListOffsets(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	// Timestamps per chunk: max 1000, 900 (went back), 3000.
	a.apply(commit(id(0xb1), chunk(id(1), 0, 0, 1000, 2))) // offsets 0-1, max ts 1000
	a.apply(commit(id(0xb2), chunk(id(1), 0, 0, 900, 2)))  // offsets 2-3, max ts 900
	a.apply(commit(id(0xb3), chunk(id(1), 0, 0, 3000, 2))) // offsets 4-5, max ts 3000
	cases := []struct{ ts, offset, stamp int64 }{
		{-2, 0, -1},
		{-1, 6, -1},
		{-3, 4, 3000},
		{0, 0, 1000},
		{1000, 0, 1000},
		{1001, 4, 3000},
		{3000, 4, 3000},
		{3001, -1, -1},
	}
	for _, c := range cases {
		r, err := a.s.ListOffsets(id(1), 0, c.ts)
		if err != nil {
			t.Fatal(err)
		}
		if r.Offset != c.offset || r.Timestamp != c.stamp {
			t.Errorf("ts %d: offset %d timestamp %d, want %d %d", c.ts, r.Offset, r.Timestamp, c.offset, c.stamp)
		}
	}
	if r, _ := a.s.ListOffsets(id(1), 0, -4); r.Error != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("ts -4: %v", r.Error)
	}
}

func TestDeleteTopicReleasesSegments(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("a", id(1), 1, nil))
	a.apply(createTopic("b", id(2), 1, nil))
	a.apply(commit(id(0xc1), chunk(id(1), 0, 0, 1, 1), chunk(id(2), 0, 100, 1, 1)))
	a.apply(commit(id(0xc2), chunk(id(1), 0, 0, 1, 1)))
	r := a.apply(&pb.Command{Op: &pb.Command_DeleteTopics{DeleteTopics: &pb.DeleteTopicsCommand{Topics: []*pb.TopicRef{{Name: "a"}, {Name: "zzz"}}}}})
	if r.Topics[0].Error != pb.ErrorCode_NONE || r.Topics[1].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("delete: %v", r.Topics)
	}
	s1, _ := a.s.Segment(id(0xc1))
	s2, _ := a.s.Segment(id(0xc2))
	if s1.References != 1 || s2.References != 0 {
		t.Fatalf("references after delete: %d %d", s1.References, s2.References)
	}
	if lk, _ := a.s.Lookup(id(1), 0, 0, 1, 0); lk.Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("lookup of deleted topic: %v", lk.Error)
	}
	// The name is free again; a commit to the old id now fails.
	if r := a.apply(createTopic("a", id(3), 1, nil)); r.Topics[0].Error != pb.ErrorCode_NONE {
		t.Fatalf("recreate: %v", r.Topics[0])
	}
	if r := a.apply(commit(id(0xc3), chunk(id(1), 0, 0, 1, 1))); r.Commits[0].Chunks[0].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("commit to deleted id: %v", r.Commits[0].Chunks[0])
	}
}

func TestAlterConfigsAndPartitions(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 2, map[string]string{"retention.ms": "10", "segment.ms": "20"}))
	alter := func(incremental bool, ops ...*pb.ConfigOp) *pb.TopicResult {
		return a.apply(&pb.Command{Op: &pb.Command_AlterConfigs{AlterConfigs: &pb.AlterConfigsCommand{Alterations: []*pb.ConfigAlteration{
			{Topic: &pb.TopicRef{Name: "t"}, Incremental: incremental, Ops: ops},
		}}}}).Topics[0]
	}
	r := alter(true, &pb.ConfigOp{Key: "retention.ms", Value: "99"}, &pb.ConfigOp{Kind: pb.ConfigOp_DELETE, Key: "segment.ms"})
	if r.Error != pb.ErrorCode_NONE || len(r.Topic.Configs) != 1 || r.Topic.Configs["retention.ms"] != "99" {
		t.Fatalf("incremental: %v", r)
	}
	if r := alter(true, &pb.ConfigOp{Key: "retention.ms", Value: "soon"}); r.Error != pb.ErrorCode_INVALID_CONFIG {
		t.Fatalf("bad value: %v", r.Error)
	}
	r = alter(false, &pb.ConfigOp{Key: "cleanup.policy", Value: "compact"})
	if r.Error != pb.ErrorCode_NONE || len(r.Topic.Configs) != 1 || r.Topic.Configs["cleanup.policy"] != "compact" {
		t.Fatalf("replace: %v", r)
	}
	grow := func(n int32) *pb.TopicResult {
		return a.apply(&pb.Command{Op: &pb.Command_CreatePartitions{CreatePartitions: &pb.CreatePartitionsCommand{Topics: []*pb.PartitionGrowth{{Topic: &pb.TopicRef{Name: "t"}, Total: n}}}}}).Topics[0]
	}
	if r := grow(2); r.Error != pb.ErrorCode_INVALID_PARTITIONS {
		t.Fatalf("grow to same: %v", r.Error)
	}
	if r := grow(5); r.Error != pb.ErrorCode_NONE || r.Topic.Partitions != 5 {
		t.Fatalf("grow: %v", r)
	}
	if lk, _ := a.s.Lookup(id(1), 4, 0, 1, 0); lk.Error != pb.ErrorCode_NONE {
		t.Fatalf("new partition lookup: %v", lk.Error)
	}
}

func TestAgentsAndIntents(t *testing.T) {
	a := newApplier(t)
	reg := func(id, addr string, lease int64) *Result {
		return a.apply(&pb.Command{Op: &pb.Command_RegisterAgent{RegisterAgent: &pb.RegisterAgentCommand{Agent: &pb.AgentInfo{AgentId: id, Address: addr, LeaseMs: lease}}}})
	}
	if r := reg("a1", "127.0.0.1:9092", 1000); r.Err != nil || r.Agent.LeaseExpiryMs != a.now+1000 {
		t.Fatalf("register: %+v", r)
	}
	reg("a2", "127.0.0.1:9093", 100_000)
	for name, r := range map[string]*Result{"no port": reg("a3", "localhost", 1000), "short lease": reg("a3", "h:1", 5), "empty id": reg("", "h:1", 1000)} {
		if r.Err == nil || r.Err.Code != pb.ErrorCode_INVALID_REQUEST {
			t.Errorf("%s: %+v", name, r.Err)
		}
	}
	a.now += 5000
	a.apply(&pb.Command{Op: &pb.Command_ExpireAgents{ExpireAgents: &pb.ExpireAgentsCommand{}}})
	agents, _ := a.s.Agents()
	if len(agents) != 1 || agents[0].AgentId != "a2" {
		t.Fatalf("after expiry: %v", agents)
	}

	intent := func(seg []byte, ttl int64) *Result {
		now := a.now + 7 // what apply will stamp
		return a.apply(&pb.Command{NowMs: now, Op: &pb.Command_RecordIntent{RecordIntent: &pb.RecordIntentCommand{Intent: &pb.UploadIntent{SegmentId: seg, AgentId: "a2", CreatedMs: now, ExpiresMs: now + ttl}}}})
	}
	if r := intent(id(0xd1), 1000); r.Err != nil {
		t.Fatalf("intent: %v", r.Err)
	}
	intent(id(0xd2), 1000)
	intent(id(0xd3), 1_000_000)
	a.apply(createTopic("t", id(1), 1, nil))
	a.apply(commit(id(0xd2), chunk(id(1), 0, 0, 1, 1))) // committing resolves the intent
	a.apply(&pb.Command{Op: &pb.Command_ResolveIntent{ResolveIntent: &pb.ResolveIntentCommand{SegmentId: id(0xd3)}}})
	if r := intent(id(0xd2), 1000); r.Err == nil || r.Err.Code != pb.ErrorCode_INVALID_SEGMENT {
		t.Fatalf("intent for a committed segment: %+v", r.Err)
	}
	expired, _ := a.s.ExpiredIntents(a.now+2000, 10)
	if len(expired) != 1 || !bytes.Equal(expired[0].SegmentId, id(0xd1)) {
		t.Fatalf("expired intents: %v", expired)
	}
}

// Entries at or below the applied index are skipped: after a restart Raft replays
// from its last snapshot, and the state must not apply those twice.
func TestApplyIsIdempotentAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cmds := []*pb.Command{createTopic("t", id(1), 1, nil), commit(id(0xe1), chunk(id(1), 0, 0, 1, 4))}
	for i, c := range cmds {
		c.Version, c.NowMs = CommandVersion, 1
		if _, err := s.Apply(uint64(i+1), c); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Applied() != 2 {
		t.Fatalf("applied after reopen = %d", s.Applied())
	}
	again := commit(id(0xe2), chunk(id(1), 0, 0, 1, 4))
	again.Version, again.NowMs = CommandVersion, 1
	if r, err := s.Apply(2, again); err != nil || r != nil {
		t.Fatalf("replayed index 2: %v %v", r, err)
	}
	if lk, _ := s.Lookup(id(1), 0, 0, 10, 0); lk.Head.NextOffset != 4 {
		t.Fatalf("replay changed state: next offset %d", lk.Head.NextOffset)
	}
}

func TestUnknownCommandVersionIsRefusedIdentically(t *testing.T) {
	a := newApplier(t)
	r := a.apply(&pb.Command{Version: CommandVersion + 1, Op: &pb.Command_ExpireAgents{ExpireAgents: &pb.ExpireAgentsCommand{}}})
	if r.Err == nil || r.Err.Code != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("future version: %+v", r)
	}
	if a.s.Applied() != a.index {
		t.Fatal("a refused command must still advance the applied index")
	}
}

// --- determinism -------------------------------------------------------------------

// randomLog builds a command log exercising every command, with a seeded generator so
// a failure can be replayed.
func randomLog(seed uint64, n int) []*pb.Command {
	rng := rand.New(rand.NewPCG(seed, seed))
	now := int64(1_700_000_000_000)
	var topics [][]byte
	var segs [][]byte
	var log []*pb.Command
	for i := range n {
		now += rng.Int64N(50)
		var cmd *pb.Command
		switch k := rng.IntN(20); {
		case k < 3 || len(topics) == 0:
			tid := make([]byte, 16)
			for j := range tid {
				tid[j] = byte(rng.IntN(256))
			}
			tid[0] |= 1
			topics = append(topics, tid)
			cmd = createTopic(fmt.Sprintf("topic-%d", i), tid, int32(1+rng.IntN(4)), map[string]string{"retention.ms": fmt.Sprint(rng.IntN(1000)), "segment.ms": "5"})
		case k < 14:
			seg := make([]byte, 16)
			for j := range seg {
				seg[j] = byte(rng.IntN(256))
			}
			seg[0] |= 1
			if len(segs) > 0 && rng.IntN(5) == 0 {
				seg = segs[rng.IntN(len(segs))] // a retry
			}
			segs = append(segs, seg)
			var chunks []*pb.ChunkCommit
			used := map[string]bool{}
			for c := range 1 + rng.IntN(6) {
				tid := topics[rng.IntN(len(topics))]
				p := int32(rng.IntN(5)) // sometimes out of range
				if used[fmt.Sprint(tid, p)] {
					continue
				}
				used[fmt.Sprint(tid, p)] = true
				counts := make([]int32, 1+rng.IntN(3))
				for b := range counts {
					counts[b] = int32(1 + rng.IntN(100))
				}
				chunks = append(chunks, chunk(tid, p, int64(c*100), now-rng.Int64N(10_000), counts...))
			}
			cmd = commit(seg, chunks...)
		case k < 15:
			cmd = &pb.Command{Op: &pb.Command_DeleteTopics{DeleteTopics: &pb.DeleteTopicsCommand{Topics: []*pb.TopicRef{{TopicId: topics[rng.IntN(len(topics))]}}}}}
		case k < 16:
			cmd = &pb.Command{Op: &pb.Command_AlterConfigs{AlterConfigs: &pb.AlterConfigsCommand{Alterations: []*pb.ConfigAlteration{{
				Topic: &pb.TopicRef{TopicId: topics[rng.IntN(len(topics))]}, Incremental: rng.IntN(2) == 0,
				Ops: []*pb.ConfigOp{{Key: "retention.ms", Value: fmt.Sprint(rng.IntN(100))}, {Key: "max.message.bytes", Value: fmt.Sprint(rng.IntN(1 << 20))}},
			}}}}}
		case k < 17:
			cmd = &pb.Command{Op: &pb.Command_CreatePartitions{CreatePartitions: &pb.CreatePartitionsCommand{Topics: []*pb.PartitionGrowth{{
				Topic: &pb.TopicRef{TopicId: topics[rng.IntN(len(topics))]}, Total: int32(1 + rng.IntN(8)),
			}}}}}
		case k < 18:
			cmd = &pb.Command{Op: &pb.Command_RegisterAgent{RegisterAgent: &pb.RegisterAgentCommand{Agent: &pb.AgentInfo{
				AgentId: fmt.Sprintf("agent-%d", rng.IntN(4)), Address: fmt.Sprintf("10.0.0.%d:9092", rng.IntN(4)), LeaseMs: 100 + rng.Int64N(1000),
			}}}}
		case k < 19:
			cmd = &pb.Command{Op: &pb.Command_ExpireAgents{ExpireAgents: &pb.ExpireAgentsCommand{}}}
		default:
			seg := make([]byte, 16)
			for j := range seg {
				seg[j] = byte(rng.IntN(256))
			}
			seg[0] |= 1
			cmd = &pb.Command{Op: &pb.Command_RecordIntent{RecordIntent: &pb.RecordIntentCommand{Intent: &pb.UploadIntent{SegmentId: seg, AgentId: "agent-1", CreatedMs: now, ExpiresMs: now + 1 + rng.Int64N(1000)}}}}
		}
		cmd.Version, cmd.NowMs = CommandVersion, now
		log = append(log, cmd)
	}
	return log
}

func digest(t testing.TB, s *State) string {
	t.Helper()
	if err := s.checkCache(); err != nil {
		t.Fatalf("apply cache: %v", err)
	}
	h := sha256.New()
	if err := s.Dump(h); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestDeterminism applies one command log several ways (one entry at a time, in
// random batches, and through snapshot/restore at random points) and requires
// byte-identical state every time.
func TestDeterminism(t *testing.T) {
	for seed := range uint64(3) {
		log := randomLog(seed, 400)
		ref := openState(t)
		for i, c := range log {
			if _, err := ref.Apply(uint64(i+1), c); err != nil {
				t.Fatal(err)
			}
		}
		want := digest(t, ref)

		rng := rand.New(rand.NewPCG(seed, 99))
		batched := openState(t)
		for i := 0; i < len(log); {
			n := 1 + rng.IntN(30)
			var entries []Entry
			for j := i; j < min(len(log), i+n); j++ {
				entries = append(entries, Entry{Index: uint64(j + 1), Cmd: log[j]})
			}
			if _, err := batched.ApplyBatch(entries); err != nil {
				t.Fatal(err)
			}
			i += n
		}
		if got := digest(t, batched); got != want {
			t.Fatalf("seed %d: batched apply differs from one-by-one", seed)
		}

		// Snapshot at random points, restore into a fresh state, carry on.
		cur := openState(t)
		for i := 0; i < len(log); i++ {
			if _, err := cur.Apply(uint64(i+1), log[i]); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(60) == 0 {
				next := openState(t)
				restoreFrom(t, cur, next)
				if next.Applied() != uint64(i+1) {
					t.Fatalf("restored applied %d, want %d", next.Applied(), i+1)
				}
				cur = next
			}
		}
		if got := digest(t, cur); got != want {
			t.Fatalf("seed %d: state through snapshots differs", seed)
		}
	}
}

func restoreFrom(t testing.TB, from, to *State) {
	t.Helper()
	dir, _, err := from.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var buf bytes.Buffer
	if err := WriteSnapshot(dir, &buf); err != nil {
		t.Fatal(err)
	}
	if err := to.Restore(&buf); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreSurvivesReopenAndRejectsBadArchives(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	restoreFrom(t, a.s, s)
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if res, _, _ := s.Topics(nil); len(res) != 1 || res[0].Name != "t" {
		t.Fatalf("after restore and reopen: %v", res)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 { // ACTIVE and one db directory
		t.Fatalf("leftovers in %s: %v", dir, entries)
	}
	// A garbage archive leaves the state as it was.
	before := digest(t, s)
	if err := s.Restore(bytes.NewReader([]byte("not a tar archive at all, but long enough to try........................................................................................................................................................................................................................................................................................................................................................................................................................................................................................."))); err == nil {
		t.Fatal("garbage restore succeeded")
	}
	if digest(t, s) != before {
		t.Fatal("failed restore changed the state")
	}
	if _, err := os.Stat(filepath.Join(dir, activeFile)); err != nil {
		t.Fatal(err)
	}
}

// TestListOffsetsMatchesBruteForce checks timestamp search against a scan of every
// chunk: with timestamps that wander up and down, closely spaced (many chunks per
// time-index step) and widely spaced, the answer is always the first chunk whose
// max timestamp reaches the target.
func TestListOffsetsMatchesBruteForce(t *testing.T) {
	for _, spread := range []int64{3, 40, 500} {
		a := newApplier(t)
		a.apply(createTopic("t", id(1), 1, nil))
		rng := rand.New(rand.NewPCG(uint64(spread), 1))
		type c struct{ base, maxTs int64 }
		var chunks []c
		ts, next := int64(10_000), int64(0)
		for i := range 400 {
			ts += rng.Int64N(2*spread) - spread/2 // mostly rising, sometimes back
			n := int32(1 + rng.IntN(3))
			a.apply(commit(id(byte(i%250+1)), chunk(id(1), 0, 0, ts, n)))
			if i >= 250 { // segment ids repeat from here: these commits are retries
				continue
			}
			chunks = append(chunks, c{next, ts})
			next += int64(n)
		}
		for range 300 {
			target := 9_000 + rng.Int64N(ts-9_000+200)
			want, wantTs := int64(-1), int64(-1)
			for _, ch := range chunks {
				if ch.maxTs >= target {
					want, wantTs = ch.base, ch.maxTs
					break
				}
			}
			r, err := a.s.ListOffsets(id(1), 0, target)
			if err != nil {
				t.Fatal(err)
			}
			if r.Offset != want || r.Timestamp != wantTs {
				t.Fatalf("spread %d target %d: offset %d ts %d, want %d %d", spread, target, r.Offset, r.Timestamp, want, wantTs)
			}
		}
	}
}
