package state

import (
	"testing"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func saveGroup(rec *pb.GroupRecord) *pb.Command {
	return &pb.Command{Op: &pb.Command_SaveGroup{SaveGroup: &pb.SaveGroupCommand{Group: rec}}}
}

func commitOffset(group string, topic []byte, offset int64) *pb.Command {
	return &pb.Command{Op: &pb.Command_CommitOffsets{CommitOffsets: &pb.CommitOffsetsCommand{Group: group,
		Offsets: []*pb.CommittedOffset{{TopicId: topic, Partition: 0, Offset: offset}}}}}
}

func TestSaveGroupGenerationsOnlyGrow(t *testing.T) {
	a := newApplier(t)
	member := &pb.GroupMember{MemberId: "m1", Protocols: []*pb.GroupProtocol{{Name: "range", Metadata: []byte{1}}}}
	if r := a.apply(saveGroup(&pb.GroupRecord{Group: "g", ProtocolType: "consumer", Generation: 2, Members: []*pb.GroupMember{member}})); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := a.apply(saveGroup(&pb.GroupRecord{Group: "g", ProtocolType: "consumer", Generation: 1})); r.Err == nil || r.Err.Code != pb.ErrorCode_STALE_GROUP {
		t.Fatalf("older generation: %v, want STALE_GROUP", r.Err)
	}
	// The same generation again (assignments, a replaced static member) is fine.
	if r := a.apply(saveGroup(&pb.GroupRecord{Group: "g", ProtocolType: "consumer", Generation: 2, Assigned: true, Members: []*pb.GroupMember{member}})); r.Err != nil {
		t.Fatal(r.Err)
	}
	rec, err := a.s.Group("g")
	if err != nil || rec == nil || rec.Generation != 2 || !rec.Assigned || rec.Members[0].MemberId != "m1" || rec.EmptySinceMs != 0 {
		t.Fatalf("group: %v %v", rec, err)
	}
	// A coordinator of an older term cannot overwrite a newer one's record, even
	// with a higher generation.
	if r := a.apply(saveGroup(&pb.GroupRecord{Group: "t", Generation: 5, CoordinatorTerm: 7})); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := a.apply(saveGroup(&pb.GroupRecord{Group: "t", Generation: 6, CoordinatorTerm: 6})); r.Err == nil || r.Err.Code != pb.ErrorCode_STALE_GROUP {
		t.Fatalf("older term: %v, want STALE_GROUP", r.Err)
	}
	if r := a.apply(saveGroup(&pb.GroupRecord{Group: ""})); r.Err == nil || r.Err.Code != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("empty group id: %v", r.Err)
	}
	if r := a.apply(saveGroup(nil)); r.Err == nil {
		t.Fatal("nil record accepted")
	}
	big := &pb.GroupMember{MemberId: "m", Assignment: make([]byte, maxGroupRecord)}
	if r := a.apply(saveGroup(&pb.GroupRecord{Group: "g", Generation: 3, Members: []*pb.GroupMember{big}})); r.Err == nil {
		t.Fatal("oversized record accepted")
	}
}

func TestDeleteGroupsRefusesMembers(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	a.apply(saveGroup(&pb.GroupRecord{Group: "live", ProtocolType: "consumer", Generation: 1, Members: []*pb.GroupMember{{MemberId: "m"}}}))
	a.apply(saveGroup(&pb.GroupRecord{Group: "idle", ProtocolType: "consumer", Generation: 4}))
	a.apply(commitOffset("idle", id(1), 5))
	a.apply(commitOffset("live", id(1), 5))
	r := a.apply(&pb.Command{Op: &pb.Command_DeleteGroups{DeleteGroups: &pb.DeleteGroupsCommand{Groups: []string{"live", "idle", "nope"}}}})
	want := []pb.ErrorCode{pb.ErrorCode_NON_EMPTY_GROUP, pb.ErrorCode_NONE, pb.ErrorCode_GROUP_NOT_FOUND}
	for i, w := range want {
		if r.Groups[i].Error != w {
			t.Fatalf("delete %s: %v, want %v", r.Groups[i].Group, r.Groups[i].Error, w)
		}
	}
	if rec, _ := a.s.Group("idle"); rec != nil {
		t.Fatalf("idle's record survived: %v", rec)
	}
	if has, _ := a.s.HasOffsets("idle"); has {
		t.Fatal("idle's offsets survived")
	}
	if has, _ := a.s.HasOffsets("live"); !has {
		t.Fatal("live's offsets were deleted")
	}
	names, recs, err := a.s.Groups()
	if err != nil || len(names) != 1 || names[0] != "live" || recs[0] == nil {
		t.Fatalf("groups: %v %v %v", names, recs, err)
	}
}

func TestExpireOffsets(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	const retention = 60_000
	// A group with members keeps everything; an empty group loses everything
	// retention after it became empty; a simple committer's offsets each expire
	// retention after their commit.
	a.apply(saveGroup(&pb.GroupRecord{Group: "live", ProtocolType: "consumer", Generation: 1, Members: []*pb.GroupMember{{MemberId: "m"}}}))
	a.apply(commitOffset("live", id(1), 1))
	a.apply(saveGroup(&pb.GroupRecord{Group: "empty", ProtocolType: "consumer", Generation: 2}))
	a.apply(commitOffset("empty", id(1), 1))
	a.apply(commitOffset("simple", id(1), 1))
	start := a.now

	expire := func(now int64) {
		t.Helper()
		if r := a.apply(&pb.Command{NowMs: now, Op: &pb.Command_ExpireOffsets{ExpireOffsets: &pb.ExpireOffsetsCommand{RetentionMs: retention}}}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	expire(start + retention/2)
	for _, g := range []string{"live", "empty", "simple"} {
		if has, _ := a.s.HasOffsets(g); !has {
			t.Fatalf("%s lost its offsets before the retention", g)
		}
	}
	expire(start + 2*retention)
	if has, _ := a.s.HasOffsets("live"); !has {
		t.Fatal("a group with members lost its offsets")
	}
	for _, g := range []string{"empty", "simple"} {
		if has, _ := a.s.HasOffsets(g); has {
			t.Fatalf("%s kept its offsets past the retention", g)
		}
	}
	if rec, _ := a.s.Group("empty"); rec != nil {
		t.Fatalf("the empty group's record outlived its offsets: %v", rec)
	}
	if rec, _ := a.s.Group("live"); rec == nil {
		t.Fatal("the live group's record was deleted")
	}
	if r := a.apply(&pb.Command{Op: &pb.Command_ExpireOffsets{ExpireOffsets: &pb.ExpireOffsetsCommand{}}}); r.Err == nil {
		t.Fatal("zero retention accepted")
	}
}

func TestCommitOffsetsBatchAppliesEachAlone(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	r := a.apply(&pb.Command{Op: &pb.Command_CommitOffsetsBatch{CommitOffsetsBatch: &pb.CommitOffsetsBatchCommand{Commits: []*pb.CommitOffsetsCommand{
		{Group: "g1", Offsets: []*pb.CommittedOffset{{TopicId: id(1), Partition: 0, Offset: 4}}},
		{Group: "", Offsets: []*pb.CommittedOffset{{TopicId: id(1), Partition: 0, Offset: 5}}},
		{Group: "g2", Offsets: []*pb.CommittedOffset{{TopicId: id(1), Partition: 0, Offset: 6}, {TopicId: id(2), Partition: 0, Offset: 1}}},
	}}}})
	if r.Err != nil || len(r.Batch) != 3 {
		t.Fatalf("batch: %v", r)
	}
	if r.Batch[0].Err != nil || r.Batch[1].Err == nil || r.Batch[2].Err != nil || r.Batch[2].Offsets[1].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("results: %v / %v / %v", r.Batch[0], r.Batch[1], r.Batch[2])
	}
	for g, want := range map[string]int64{"g1": 4, "g2": 6} {
		if o, _ := a.s.Offsets(g, nil); len(o) != 1 || o[0].Offset != want {
			t.Fatalf("%s: %v, want %d", g, o, want)
		}
	}
}

func TestExpireOffsetsIsBounded(t *testing.T) {
	defer func(n int) { maxExpirePerCommand = n }(maxExpirePerCommand)
	maxExpirePerCommand = 2
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	for _, g := range []string{"a", "b", "c", "d"} {
		a.apply(commitOffset(g, id(1), 1))
	}
	left := func() int {
		n := 0
		for _, g := range []string{"a", "b", "c", "d"} {
			if has, _ := a.s.HasOffsets(g); has {
				n++
			}
		}
		return n
	}
	expire := func() *Result {
		return a.apply(&pb.Command{NowMs: a.now + 10_000, Op: &pb.Command_ExpireOffsets{ExpireOffsets: &pb.ExpireOffsetsCommand{RetentionMs: 1}}})
	}
	if r := expire(); !r.More || left() != 2 {
		t.Fatalf("first pass: more %v, %d groups left, want 2 left and more", r.More, left())
	}
	if r := expire(); left() != 0 {
		t.Fatalf("second pass: more %v, %d groups left", r.More, left())
	}
}
