package state

import (
	"github.com/cockroachdb/pebble/v2"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Committed offsets of consumer groups: one record per (group, topic, partition),
// written by OffsetCommit and read by OffsetFetch. Generations and membership are the
// group coordinator's to check before it proposes a commit; the state machine checks
// only what every replica can: the group name and that the partition exists.

const (
	// maxGroupLen bounds a group id (Kafka has no limit; the key holds the length in
	// two bytes).
	maxGroupLen = 1 << 10
	// maxOffsetMetadata bounds a commit's metadata string (Kafka's
	// offset.metadata.max.bytes default is 4096).
	maxOffsetMetadata = 4096
	// maxOffsetsPerCommit bounds one command.
	maxOffsetsPerCommit = 100_000
)

func validGroup(group string) *Error {
	if group == "" || len(group) > maxGroupLen {
		return refuse(pb.ErrorCode_INVALID_REQUEST, "group id must be 1 to %d bytes, got %d", maxGroupLen, len(group))
	}
	return nil
}

func (t *txn) commitOffsets(cmd *pb.CommitOffsetsCommand, now int64) (*Result, error) {
	if e := validGroup(cmd.GetGroup()); e != nil {
		return &Result{Err: e}, nil
	}
	if len(cmd.Offsets) > maxOffsetsPerCommit {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d offsets per commit", maxOffsetsPerCommit)}, nil
	}
	res := &Result{Offsets: make([]*pb.OffsetResult, 0, len(cmd.Offsets))}
	for _, o := range cmd.Offsets {
		r := &pb.OffsetResult{TopicId: o.TopicId, Partition: o.Partition}
		res.Offsets = append(res.Offsets, r)
		switch h, err := t.partitionHead(o.TopicId, o.Partition); {
		case err != nil:
			return nil, err
		case h == nil:
			r.Error = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION
			continue
		}
		if len(o.Metadata) > maxOffsetMetadata {
			r.Error = pb.ErrorCode_INVALID_REQUEST // Kafka: OFFSET_METADATA_TOO_LARGE
			continue
		}
		rec := &pb.CommittedOffset{TopicId: o.TopicId, Partition: o.Partition, Offset: o.Offset,
			LeaderEpoch: o.LeaderEpoch, Metadata: o.Metadata, CommitMs: now}
		if err := t.setProto(groupOffsetKey(cmd.Group, o.TopicId, o.Partition), rec); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// commitOffsetsBatch applies each commit on its own: one refused commit does not
// refuse the others.
func (t *txn) commitOffsetsBatch(cmds []*pb.CommitOffsetsCommand, now int64) (*Result, error) {
	if len(cmds) > maxOffsetsPerCommit {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d commits per batch", maxOffsetsPerCommit)}, nil
	}
	res := &Result{Batch: make([]*Result, 0, len(cmds))}
	for _, c := range cmds {
		r, err := t.commitOffsets(c, now)
		if err != nil {
			return nil, err
		}
		res.Batch = append(res.Batch, r)
	}
	return res, nil
}

func (t *txn) deleteOffsets(cmd *pb.DeleteOffsetsCommand) (*Result, error) {
	if e := validGroup(cmd.GetGroup()); e != nil {
		return &Result{Err: e}, nil
	}
	if len(cmd.Partitions) > maxOffsetsPerCommit {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d partitions per delete", maxOffsetsPerCommit)}, nil
	}
	res := &Result{}
	for _, p := range cmd.Partitions {
		r := &pb.OffsetResult{TopicId: p.TopicId, Partition: p.Partition}
		res.Offsets = append(res.Offsets, r)
		if h, err := t.partitionHead(p.TopicId, p.Partition); err != nil {
			return nil, err
		} else if h == nil {
			r.Error = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION
			continue
		}
		if err := t.del(groupOffsetKey(cmd.Group, p.TopicId, p.Partition)); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Offsets returns a group's committed offsets: for the given partitions (those without
// one are left out), or every one it has when partitions is empty.
func (s *State) Offsets(group string, partitions []*pb.PartitionRef) ([]*pb.CommittedOffset, error) {
	out, _, err := s.OffsetsStable(group, partitions, false)
	return out, err
}

// OffsetsStable is Offsets and, with requireStable, the partitions (of those asked,
// or of those answered when none were asked) with offsets pending in an open
// transaction, read from one snapshot: a transaction ending between two reads
// would pair its old offset with "stable".
func (s *State) OffsetsStable(group string, partitions []*pb.PartitionRef, requireStable bool) (out []*pb.CommittedOffset, unstable []*pb.PartitionRef, err error) {
	if validGroup(group) != nil {
		return nil, nil, nil
	}
	err = s.view(func(r pebble.Reader, _ uint64) error {
		if err := offsetsIn(r, group, partitions, &out); err != nil || !requireStable {
			return err
		}
		parts := partitions
		if len(parts) == 0 {
			for _, o := range out {
				parts = append(parts, &pb.PartitionRef{TopicId: o.TopicId, Partition: o.Partition})
			}
		}
		flags, err := unstableIn(r, group, parts)
		for i, u := range flags {
			if u {
				unstable = append(unstable, parts[i])
			}
		}
		return err
	})
	return out, unstable, err
}

func offsetsIn(r pebble.Reader, group string, partitions []*pb.PartitionRef, out *[]*pb.CommittedOffset) error {
	if len(partitions) == 0 {
		return scanProtosUnder(r, groupOffsetsKey(group), func(o *pb.CommittedOffset) error {
			*out = append(*out, o)
			return nil
		})
	}
	for _, p := range partitions {
		var o pb.CommittedOffset
		ok, err := getProto(r, groupOffsetKey(group, p.TopicId, p.Partition), &o)
		if err != nil {
			return err
		}
		if ok {
			*out = append(*out, &o)
		}
	}
	return nil
}
