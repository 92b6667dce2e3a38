package state

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Classic consumer groups as their coordinator saved them (GroupRecord under
// prefixGroup), next to their committed offsets (offsets.go). The coordinator on the
// leader decides membership; the state machine keeps what every replica can check:
// generations never go back, a group with members is not deleted, and offsets
// expire by the command's clock.

// maxGroupRecord bounds a saved group (members' metadata and assignments), well
// under the API's message size.
const maxGroupRecord = 3 << 20

// hasMembers reports whether a saved group has members, classic or KIP-848.
func hasMembers(rec *pb.GroupRecord) bool {
	return len(rec.Members) > 0 || len(rec.GetConsumer().GetMembers()) > 0
}

// HasMembers is hasMembers for callers outside the state machine.
func HasMembers(rec *pb.GroupRecord) bool { return rec != nil && hasMembers(rec) }

func groupKey(group string) []byte {
	k := make([]byte, 0, 3+len(group))
	k = append(k, prefixGroup)
	k = binary.BigEndian.AppendUint16(k, uint16(len(group)))
	return append(k, group...)
}

// groupOfKey returns the group named by a key under prefixGroup or prefixGroupOff.
func groupOfKey(k []byte) (string, error) {
	if len(k) < 3 || len(k) < 3+int(binary.BigEndian.Uint16(k[1:])) {
		return "", fmt.Errorf("%w: group key %x", ErrCorrupt, k)
	}
	return string(k[3 : 3+binary.BigEndian.Uint16(k[1:])]), nil
}

func (t *txn) saveGroup(rec *pb.GroupRecord, now int64) (*Result, error) {
	if e := validGroup(rec.GetGroup()); e != nil {
		return &Result{Err: e}, nil
	}
	if n := proto.Size(rec); n > maxGroupRecord {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "group record of %d bytes exceeds %d", n, maxGroupRecord)}, nil
	}
	var old pb.GroupRecord
	found, err := t.getProto(groupKey(rec.Group), &old)
	if err != nil {
		return nil, err
	}
	if found && rec.Generation < old.Generation {
		return &Result{Err: refuse(pb.ErrorCode_STALE_GROUP, "group %q is at generation %d, not %d", rec.Group, old.Generation, rec.Generation)}, nil
	}
	if found && rec.CoordinatorTerm < old.CoordinatorTerm {
		return &Result{Err: refuse(pb.ErrorCode_STALE_GROUP, "group %q was saved by the coordinator of term %d, not %d", rec.Group, old.CoordinatorTerm, rec.CoordinatorTerm)}, nil
	}
	rec = proto.CloneOf(rec)
	switch {
	case hasMembers(rec):
		rec.EmptySinceMs = 0
	case found && !hasMembers(&old) && old.EmptySinceMs != 0:
		rec.EmptySinceMs = old.EmptySinceMs
	default:
		rec.EmptySinceMs = now
	}
	if err := t.setProto(groupKey(rec.Group), rec); err != nil {
		return nil, err
	}
	return &Result{}, nil
}

// deleteGroups removes each group's record and committed offsets. A group with
// members is NON_EMPTY_GROUP; one with neither record nor offsets GROUP_NOT_FOUND.
func (t *txn) deleteGroups(groups []string) (*Result, error) {
	if len(groups) > maxOffsetsPerCommit {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d groups per delete", maxOffsetsPerCommit)}, nil
	}
	res := &Result{}
	for _, g := range groups {
		r := &pb.GroupResult{Group: g}
		res.Groups = append(res.Groups, r)
		if validGroup(g) != nil {
			r.Error = pb.ErrorCode_GROUP_NOT_FOUND
			continue
		}
		var rec pb.GroupRecord
		hasRecord, err := t.getProto(groupKey(g), &rec)
		if err != nil {
			return nil, err
		}
		if hasMembers(&rec) {
			r.Error = pb.ErrorCode_NON_EMPTY_GROUP
			continue
		}
		lo := groupOffsetsKey(g)
		hasOffsets, err := anyUnder(t.b, lo)
		if err != nil {
			return nil, err
		}
		if !hasRecord && !hasOffsets {
			r.Error = pb.ErrorCode_GROUP_NOT_FOUND
			continue
		}
		if err := t.b.DeleteRange(lo, upperBound(lo), nil); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		if err := t.del(groupKey(g)); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func anyUnder(r pebble.Reader, lo []byte) (bool, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return false, fmt.Errorf("state: %w", err)
	}
	found := it.First()
	if err := it.Close(); err != nil {
		return false, fmt.Errorf("state: %w", err)
	}
	return found, nil
}

// maxExpirePerCommand bounds the keys one ExpireOffsets deletes, so one apply stays
// short; Result.More asks the leader to propose another at once.
var maxExpirePerCommand = 50_000 // a variable for tests

// expireOffsets applies offsets.retention.minutes at time now (see
// ExpireOffsetsCommand).
func (t *txn) expireOffsets(retentionMs, now int64) (*Result, error) {
	if retentionMs <= 0 {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "retention must be positive, got %d ms", retentionMs)}, nil
	}
	cutoff := now - retentionMs
	groups := map[string]bool{}
	var names []string
	add := func(k []byte) error {
		g, err := groupOfKey(k)
		if err != nil {
			return err
		}
		if !groups[g] {
			groups[g] = true
			names = append(names, g)
		}
		return nil
	}
	for _, p := range []byte{prefixGroup, prefixGroupOff} {
		if err := eachGroupKey(t.b, p, add); err != nil {
			return nil, err
		}
	}
	var drop [][]byte
	more := false
	for _, g := range names {
		if len(drop) >= maxExpirePerCommand {
			more = true
			break
		}
		var rec pb.GroupRecord
		hasRecord, err := t.getProto(groupKey(g), &rec)
		if err != nil {
			return nil, err
		}
		if hasMembers(&rec) {
			continue
		}
		wholeGroup := hasRecord && rec.ProtocolType != ""
		if wholeGroup && rec.EmptySinceMs > cutoff {
			continue
		}
		kept := 0
		err = scanProtosUnder(t.b, groupOffsetsKey(g), func(o *pb.CommittedOffset) error {
			if wholeGroup || o.CommitMs <= cutoff {
				drop = append(drop, groupOffsetKey(g, o.TopicId, o.Partition))
			} else {
				kept++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if kept == 0 && hasRecord && rec.EmptySinceMs <= cutoff {
			drop = append(drop, groupKey(g))
		}
	}
	for _, k := range drop {
		if err := t.del(k); err != nil {
			return nil, err
		}
	}
	return &Result{More: more}, nil
}

// eachGroupKey calls fn with the first key of every group under prefix (a group
// record, or a group's first committed offset).
func eachGroupKey(r pebble.Reader, prefix byte, fn func(k []byte) error) error {
	lo := []byte{prefix}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer it.Close()
	for valid := it.First(); valid; {
		k := it.Key()
		g, err := groupOfKey(k)
		if err != nil {
			return err
		}
		if err := fn(k); err != nil {
			return err
		}
		valid = it.SeekGE(upperBound(k[:3+len(g)]))
	}
	return it.Error()
}

// Group returns a group's saved record, or nil.
func (s *State) Group(group string) (*pb.GroupRecord, error) {
	if validGroup(group) != nil {
		return nil, nil
	}
	var rec *pb.GroupRecord
	err := s.view(func(r pebble.Reader, _ uint64) error {
		var m pb.GroupRecord
		ok, err := getProto(r, groupKey(group), &m)
		if ok {
			rec = &m
		}
		return err
	})
	return rec, err
}

// Groups lists every group with a record or committed offsets, each once, with its
// record (nil for a group that has only offsets). Order: records first, by key.
func (s *State) Groups() ([]string, []*pb.GroupRecord, error) {
	var names []string
	var recs []*pb.GroupRecord
	err := s.view(func(r pebble.Reader, _ uint64) error {
		seen := map[string]bool{}
		if err := scanProtos(r, prefixGroup, func(m *pb.GroupRecord) error {
			seen[m.Group] = true
			names = append(names, m.Group)
			recs = append(recs, m)
			return nil
		}); err != nil {
			return err
		}
		return eachGroupKey(r, prefixGroupOff, func(k []byte) error {
			g, _ := groupOfKey(k)
			if !seen[g] {
				names = append(names, g)
				recs = append(recs, nil)
			}
			return nil
		})
	})
	return names, recs, err
}

// HasOffsets reports whether a group has any committed offset.
func (s *State) HasOffsets(group string) (bool, error) {
	if validGroup(group) != nil {
		return false, nil
	}
	var found bool
	err := s.view(func(r pebble.Reader, _ uint64) error {
		var err error
		found, err = anyUnder(r, groupOffsetsKey(group))
		return err
	})
	return found, err
}
