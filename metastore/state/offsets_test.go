package state

import (
	"testing"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func TestCommittedOffsets(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 2, nil))
	commitOffsets := func(group string, offs ...*pb.CommittedOffset) *Result {
		return a.apply(&pb.Command{Op: &pb.Command_CommitOffsets{CommitOffsets: &pb.CommitOffsetsCommand{Group: group, Offsets: offs}}})
	}
	r := commitOffsets("g", &pb.CommittedOffset{TopicId: id(1), Partition: 0, Offset: 10, LeaderEpoch: -1, Metadata: "m"},
		&pb.CommittedOffset{TopicId: id(1), Partition: 5, Offset: 3},
		&pb.CommittedOffset{TopicId: id(9), Partition: 0, Offset: 3})
	if r.Err != nil || len(r.Offsets) != 3 || r.Offsets[0].Error != pb.ErrorCode_NONE ||
		r.Offsets[1].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION || r.Offsets[2].Error != pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
		t.Fatalf("commit: %v", r)
	}
	commitOffsets("g", &pb.CommittedOffset{TopicId: id(1), Partition: 1, Offset: 20})
	commitOffsets("g2", &pb.CommittedOffset{TopicId: id(1), Partition: 0, Offset: 99})
	// "g" must not see "g2"'s offsets, nor a group whose name extends it.
	commitOffsets("gx", &pb.CommittedOffset{TopicId: id(1), Partition: 0, Offset: 77})

	all, err := a.s.Offsets("g", nil)
	if err != nil || len(all) != 2 || all[0].Offset != 10 || all[0].Metadata != "m" || all[0].CommitMs == 0 || all[1].Offset != 20 {
		t.Fatalf("all offsets of g: %v %v", all, err)
	}
	some, err := a.s.Offsets("g", []*pb.PartitionRef{{TopicId: id(1), Partition: 1}, {TopicId: id(1), Partition: 4}})
	if err != nil || len(some) != 1 || some[0].Offset != 20 {
		t.Fatalf("chosen offsets of g: %v %v", some, err)
	}
	a.apply(&pb.Command{Op: &pb.Command_DeleteOffsets{DeleteOffsets: &pb.DeleteOffsetsCommand{Group: "g", Partitions: []*pb.PartitionRef{{TopicId: id(1), Partition: 0}}}}})
	if left, _ := a.s.Offsets("g", nil); len(left) != 1 || left[0].Partition != 1 {
		t.Fatalf("after delete: %v", left)
	}
	if other, _ := a.s.Offsets("g2", nil); len(other) != 1 || other[0].Offset != 99 {
		t.Fatalf("g2 after deleting g's offset: %v", other)
	}
	if r := commitOffsets("", &pb.CommittedOffset{TopicId: id(1)}); r.Err == nil || r.Err.Code != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("empty group: %v", r.Err)
	}
}

func TestGroupsListAndDelete(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	for _, g := range []string{"b", "a", "ab", "a"} {
		a.apply(&pb.Command{Op: &pb.Command_CommitOffsets{CommitOffsets: &pb.CommitOffsetsCommand{Group: g,
			Offsets: []*pb.CommittedOffset{{TopicId: id(1), Partition: 0, Offset: 1}}}}})
	}
	groups, _, err := a.s.Groups()
	if err != nil || len(groups) != 3 {
		t.Fatalf("groups: %v %v, want a, ab, b", groups, err)
	}
	r := a.apply(&pb.Command{Op: &pb.Command_DeleteGroups{DeleteGroups: &pb.DeleteGroupsCommand{Groups: []string{"a", "zz"}}}})
	if len(r.Groups) != 2 || r.Groups[0].Error != pb.ErrorCode_NONE || r.Groups[1].Error != pb.ErrorCode_GROUP_NOT_FOUND {
		t.Fatalf("delete groups: %v", r.Groups)
	}
	if left, _ := a.s.Offsets("ab", nil); len(left) != 1 {
		t.Fatalf("deleting group a touched group ab: %v", left)
	}
	if groups, _, _ := a.s.Groups(); len(groups) != 2 {
		t.Fatalf("groups after delete: %v, want ab, b", groups)
	}
}

// An offset commit applied in the same batch as its topic's creation sees the topic
// (heads are read through the batch's cache), as it would applied alone.
func TestCommitOffsetsInTopicsBatch(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmds := []*pb.Command{
		createTopic("t", id(1), 1, nil),
		{Op: &pb.Command_CommitOffsets{CommitOffsets: &pb.CommitOffsetsCommand{Group: "g",
			Offsets: []*pb.CommittedOffset{{TopicId: id(1), Partition: 0, Offset: 3}}}}},
		{Op: &pb.Command_DeleteOffsets{DeleteOffsets: &pb.DeleteOffsetsCommand{Group: "g",
			Partitions: []*pb.PartitionRef{{TopicId: id(1), Partition: 0}}}}},
	}
	var entries []Entry
	for i, c := range cmds {
		c.Version, c.NowMs = CommandVersion, 1000
		entries = append(entries, Entry{Index: uint64(i + 1), Cmd: c})
	}
	rs, err := s.ApplyBatch(entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if r := rs[i]; r.Err != nil || len(r.Offsets) != 1 || r.Offsets[0].Error != 0 {
			t.Fatalf("command %d in the topic's batch: %+v", i, r)
		}
	}
}
