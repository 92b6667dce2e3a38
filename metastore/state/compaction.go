package state

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Compaction, retention and garbage collection: the state changes the compactor
// (compactor/) asks for. Each is one command and deterministic; the compactor does
// the reading and writing of objects and decides what to ask.

// Bounds on one command's work, so that no apply runs without limit.
const (
	maxReplaceEntries = 100_000 // inputs or outputs of one ReplaceIndex

	maxGarbagePerClaim = 10_000
)

// TombstoneKeepMs is how long the record of a collected segment outlives its
// object, refusing a late commit of the same id (an agent's retried commit, a
// compactor's retried replacement). Agents stop retrying a segment after their
// upload timeout (minutes), so a day is ample.
const TombstoneKeepMs = 24 * 3600 * 1000

// maxDropPerCommand bounds the index entries one DeleteRecords drops per partition
// (a variable so tests can reach the bound).
var maxDropPerCommand = 100_000

// replaceIndex atomically swaps a run of a partition's index entries for a
// compaction's outputs, if the run is still exactly what the compactor read.
func (t *txn) replaceIndex(req *pb.ReplaceIndexRequest, now int64) (*Result, error) {
	answer := func(code pb.ErrorCode, format string, args ...any) (*Result, error) {
		return &Result{Replace: &pb.ReplaceIndexResponse{Error: code, Message: fmt.Sprintf(format, args...)}}, nil
	}
	if req == nil || len(req.TopicId) != 16 || req.Partition < 0 {
		return answer(pb.ErrorCode_INVALID_REQUEST, "a replacement needs a topic id and partition")
	}
	if msg := checkReplacement(req); msg != "" {
		return answer(pb.ErrorCode_INVALID_REQUEST, "%s", msg)
	}
	topic, err := t.getTopic(req.TopicId)
	if err != nil {
		return nil, err
	}
	if topic == nil || req.Partition >= topic.Partitions {
		return answer(pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION, "no such partition")
	}
	cur, err := t.getHead(req.TopicId, req.Partition)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, fmt.Errorf("%w: topic %x partition %d has no head", ErrCorrupt, req.TopicId, req.Partition)
	}
	if len(req.SegmentId) > 0 {
		var prior pb.SegmentRecord
		if ok, err := t.getProto(segmentKey(req.SegmentId), &prior); err != nil {
			return nil, err
		} else if ok && prior.Condemned {
			return answer(pb.ErrorCode_INVALID_SEGMENT, "segment %x was claimed by garbage collection (its upload intent expired)", req.SegmentId)
		} else if ok {
			// A retry of a replacement that was applied: its segment is recorded.
			return &Result{Replace: &pb.ReplaceIndexResponse{Head: cur}}, nil
		}
	}
	lo, hi := req.Inputs[0].BaseOffset, req.Inputs[len(req.Inputs)-1].LastOffset

	// Compare and swap: the stored entries of [lo, hi] are exactly the inputs, and
	// no stored entry straddles either end.
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: indexKey(req.TopicId, req.Partition, lo), UpperBound: upperBound(tpKey(prefixIndex, req.TopicId, req.Partition))})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	stale := ""
	i := 0
	followed := false // an entry follows the run
	for it.First(); it.Valid(); it.Next() {
		e, err := decodeIndexEntry(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		if e.BaseOffset > hi {
			followed = true
			break
		}
		if i >= len(req.Inputs) {
			stale = fmt.Sprintf("entry [%d, %d] is not among the inputs", e.BaseOffset, e.LastOffset)
			break
		}
		if !sameEntry(e, req.Inputs[i]) {
			stale = fmt.Sprintf("entry [%d, %d] differs from input [%d, %d]", e.BaseOffset, e.LastOffset, req.Inputs[i].BaseOffset, req.Inputs[i].LastOffset)
			break
		}
		i++
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if stale == "" && i != len(req.Inputs) {
		stale = fmt.Sprintf("input [%d, %d] is no longer in the index", req.Inputs[i].BaseOffset, req.Inputs[i].LastOffset)
	}
	if stale != "" {
		return answer(pb.ErrorCode_STALE_INDEX, "%s", stale)
	}
	if !followed && (len(req.Outputs) == 0 || req.Outputs[len(req.Outputs)-1].LastOffset != hi) {
		// A gap at the end of the index would leave offsets below the high
		// watermark that no Lookup finds an entry for.
		return answer(pb.ErrorCode_INVALID_REQUEST, "a replacement of a partition's last entries must end with an output at %d", hi)
	}

	// Swap. Inputs release their segments; outputs reference the new one.
	released := map[string]int32{}
	var order []string
	for _, e := range req.Inputs {
		if err := t.del(indexKey(req.TopicId, req.Partition, e.LastOffset)); err != nil {
			return nil, err
		}
		if e.Marker == 0 {
			k := string(e.SegmentId)
			if released[k] == 0 {
				order = append(order, k)
			}
			released[k]++
		}
	}
	head := proto.Clone(cur).(*pb.PartitionHead)
	stable := head.StableOffset()
	refs := int32(0)
	level := int32(0)
	for _, o := range req.Outputs {
		e := proto.Clone(o).(*pb.IndexEntry)
		e.TopicId, e.Partition, e.LastStableOffset = nil, 0, 0
		if e.Marker == 0 {
			refs++
			level = max(level, e.Level)
		}
		if err := t.set(indexKey(req.TopicId, req.Partition, e.LastOffset), encodeIndexValue(e)); err != nil {
			return nil, err
		}
		e.TopicId, e.Partition, e.LastStableOffset = req.TopicId, req.Partition, stable
		t.ev.Entries = append(t.ev.Entries, e)
	}
	if refs > 0 {
		rec := &pb.SegmentRecord{SegmentId: req.SegmentId, Size: req.Size, CommittedMs: now, References: refs, Level: level}
		if err := t.setProto(segmentKey(req.SegmentId), rec); err != nil {
			return nil, err
		}
		if err := t.dropIntent(req.SegmentId); err != nil {
			return nil, err
		}
	}
	for _, k := range order {
		if err := t.releaseSegment([]byte(k), released[k], now); err != nil {
			return nil, err
		}
	}
	for _, off := range req.DroppedAborted {
		if err := t.del(abortedKey(req.TopicId, req.Partition, off)); err != nil {
			return nil, err
		}
	}
	t.ev.Changes = append(t.ev.Changes, &pb.PartitionChange{
		TopicId: req.TopicId, Partition: req.Partition,
		Replaced: true, ReplacedFrom: lo, ReplacedTo: hi,
		LogStartOffset: head.LogStartOffset,
	})
	t.watchable = true
	return &Result{Replace: &pb.ReplaceIndexResponse{Head: head}}, nil
}

// checkReplacement checks a replacement's shape: inputs in order, outputs in order
// inside the inputs' range, pointing into the output segment or repeating an input
// marker.
func checkReplacement(req *pb.ReplaceIndexRequest) string {
	if len(req.Inputs) == 0 || len(req.Inputs) > maxReplaceEntries || len(req.Outputs) > maxReplaceEntries {
		return fmt.Sprintf("a replacement has 1 to %d inputs and at most %d outputs", maxReplaceEntries, maxReplaceEntries)
	}
	prev := int64(-1)
	markers := map[int64]*pb.IndexEntry{}
	for _, e := range req.Inputs {
		if e.BaseOffset < 0 || e.LastOffset < e.BaseOffset || e.BaseOffset <= prev {
			return fmt.Sprintf("input [%d, %d] out of order", e.BaseOffset, e.LastOffset)
		}
		prev = e.LastOffset
		if e.Marker != 0 {
			markers[e.LastOffset] = e
		}
	}
	lo, hi := req.Inputs[0].BaseOffset, req.Inputs[len(req.Inputs)-1].LastOffset
	data := false
	prev = lo - 1
	for _, o := range req.Outputs {
		if o.BaseOffset <= prev || o.LastOffset < o.BaseOffset || o.LastOffset > hi {
			return fmt.Sprintf("output [%d, %d] out of order or outside [%d, %d]", o.BaseOffset, o.LastOffset, lo, hi)
		}
		prev = o.LastOffset
		if o.Marker != 0 {
			if m := markers[o.LastOffset]; m == nil || !sameEntry(m, o) || m.ProducerId != o.ProducerId || m.ProducerEpoch != o.ProducerEpoch || m.MaxTimestamp != o.MaxTimestamp {
				return fmt.Sprintf("output marker at %d is not an input marker", o.LastOffset)
			}
			continue
		}
		data = true
		switch {
		case !bytes.Equal(o.SegmentId, req.SegmentId):
			return fmt.Sprintf("output [%d, %d] points outside the output segment", o.BaseOffset, o.LastOffset)
		case o.Flags != 1:
			return fmt.Sprintf("output [%d, %d] must have absolute offsets (flags 1), has %#x", o.BaseOffset, o.LastOffset, o.Flags)
		case o.Position < 0 || o.Length <= 0 || o.Position > req.Size || o.Length > req.Size-o.Position:
			return fmt.Sprintf("output [%d, %d] bytes [%d,+%d) outside a segment of %d bytes", o.BaseOffset, o.LastOffset, o.Position, o.Length, req.Size)
		case o.BatchCount <= 0 || o.RecordCount < 0 || int64(o.RecordCount) > o.LastOffset-o.BaseOffset+1 || o.Level < 0 || o.Level > 1<<15 || o.CleanedMs < 0:
			return fmt.Sprintf("output [%d, %d] counts or level out of range", o.BaseOffset, o.LastOffset)
		}
	}
	if data && (!validID(req.SegmentId) || req.Size <= 0) {
		return "outputs with data need a 16-byte segment id and a size"
	}
	if !data && len(req.SegmentId) > 0 {
		return "a segment id without outputs in it"
	}
	for _, off := range req.DroppedAborted {
		if off < lo || off > hi {
			return fmt.Sprintf("dropped aborted marker %d outside [%d, %d]", off, lo, hi)
		}
	}
	return ""
}

// sameEntry compares what identifies an index entry's data.
func sameEntry(a, b *pb.IndexEntry) bool {
	return a.BaseOffset == b.BaseOffset && a.LastOffset == b.LastOffset && a.Marker == b.Marker &&
		bytes.Equal(a.SegmentId, b.SegmentId) && a.Position == b.Position && a.Length == b.Length
}

// deleteRecords moves log start offsets forward, dropping the index entries wholly
// below them (bounded per command: the answer says how far it got).
func (t *txn) deleteRecords(parts []*pb.PartitionOffset, now int64) (*Result, error) {
	res := &Result{}
	budget := maxDropPerCommand // shared by the command's partitions
	for _, p := range parts {
		r, err := t.deleteRecordsOne(p, now, &budget)
		if err != nil {
			return nil, err
		}
		res.LogStarts = append(res.LogStarts, r)
	}
	return res, nil
}

func (t *txn) deleteRecordsOne(p *pb.PartitionOffset, now int64, budget *int) (*pb.PartitionOffsetResult, error) {
	r := &pb.PartitionOffsetResult{TopicId: p.TopicId, Partition: p.Partition, LogStartOffset: -1}
	topic, err := t.getTopic(p.TopicId)
	if err != nil {
		return nil, err
	}
	if topic == nil || p.Partition < 0 || p.Partition >= topic.Partitions {
		r.Error = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION
		return r, nil
	}
	cur, err := t.getHead(p.TopicId, p.Partition)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, fmt.Errorf("%w: topic %x partition %d has no head", ErrCorrupt, p.TopicId, p.Partition)
	}
	target := p.Offset
	if target == -1 {
		target = cur.NextOffset
	}
	if target < 0 || target > cur.NextOffset {
		r.Error, r.LogStartOffset = pb.ErrorCode_OFFSET_OUT_OF_RANGE, cur.LogStartOffset
		return r, nil
	}
	if target <= cur.LogStartOffset {
		r.LogStartOffset = cur.LogStartOffset
		return r, nil
	}
	// Entries wholly below the target go; one holding it stays (readers skip the
	// records below the log start).
	prefix := tpKey(prefixIndex, p.TopicId, p.Partition)
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: indexKey(p.TopicId, p.Partition, target)})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	released := map[string]int32{}
	var order []string
	var keys [][]byte
	start := target
	for it.First(); it.Valid(); it.Next() {
		if len(keys) == *budget {
			// Stop here; the rest is for the next command.
			e, err := decodeIndexEntry(it.Key(), it.Value())
			if err != nil {
				it.Close()
				return nil, err
			}
			start = e.BaseOffset
			break
		}
		e, err := decodeIndexEntry(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		keys = append(keys, bytes.Clone(it.Key()))
		if e.Marker == 0 {
			k := string(e.SegmentId)
			if released[k] == 0 {
				order = append(order, k)
			}
			released[k]++
		}
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	*budget -= len(keys)
	start = max(start, cur.LogStartOffset)
	if start == cur.LogStartOffset {
		r.LogStartOffset = start
		return r, nil // out of budget before anything moved
	}
	for _, k := range keys {
		if err := t.del(k); err != nil {
			return nil, err
		}
	}
	for _, k := range order {
		if err := t.releaseSegment([]byte(k), released[k], now); err != nil {
			return nil, err
		}
	}
	// Aborted transactions whose marker is below the start are wholly gone.
	lo := tpKey(prefixAborted, p.TopicId, p.Partition)
	if err := t.b.DeleteRange(lo, abortedKey(p.TopicId, p.Partition, start), nil); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := t.dropTimePoints(p.TopicId, p.Partition, start, budget); err != nil {
		return nil, err
	}
	head := proto.Clone(cur).(*pb.PartitionHead)
	head.LogStartOffset = start
	if err := t.putHead(p.TopicId, p.Partition, head); err != nil {
		return nil, err
	}
	t.ev.Changes = append(t.ev.Changes, &pb.PartitionChange{TopicId: p.TopicId, Partition: p.Partition, LogStartOffset: start})
	t.watchable = true
	r.LogStartOffset = start
	return r, nil
}

// dropTimePoints deletes the time index points below a new log start but the
// last one (a search below every remaining point starts at the log start anyway).
// Points rise in both timestamp and offset, so they are dropped from the oldest.
func (t *txn) dropTimePoints(topic []byte, partition int32, start int64, budget *int) error {
	prefix := tpKey(prefixTimeIndex, topic, partition)
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upperBound(prefix)})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	var drop [][]byte
	for it.First(); it.Valid() && len(drop) < max(*budget, 1); it.Next() {
		if len(it.Value()) != 8 || int64(binary.BigEndian.Uint64(it.Value())) >= start {
			break
		}
		drop = append(drop, bytes.Clone(it.Key()))
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	*budget = max(*budget-len(drop), 0)
	for _, k := range drop {
		if err := t.del(k); err != nil {
			return err
		}
	}
	return nil
}

// claimGarbage condemns segments unreferenced since before now - graceMs and
// upload intents past their deadline, then lists every condemned object not yet
// forgotten. A condemned id can never be committed or referenced again.
func (t *txn) claimGarbage(graceMs int64, limit int, now int64) (*Result, error) {
	if graceMs < 0 {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "grace %d ms is negative", graceMs)}, nil
	}
	limit = min(max(limit, 1), maxGarbagePerClaim)
	// Tombstones old enough that no commit of their id can still arrive.
	gone, err := t.keysBelow(prefixGone, now-TombstoneKeepMs, limit)
	if err != nil {
		return nil, err
	}
	for _, k := range gone {
		if err := t.del(segmentKey(k[9:])); err != nil {
			return nil, err
		}
		if err := t.del(k); err != nil {
			return nil, err
		}
	}
	// Unreferenced segments, oldest first.
	unref, err := t.keysBelow(prefixUnrefAt, now-graceMs, limit)
	if err != nil {
		return nil, err
	}
	for _, k := range unref {
		id := k[9:]
		var rec pb.SegmentRecord
		ok, err := t.getProto(segmentKey(id), &rec)
		if err != nil {
			return nil, err
		}
		if err := t.del(k); err != nil {
			return nil, err
		}
		if !ok || rec.References > 0 {
			continue // cannot happen: references never come back
		}
		rec.Condemned = true
		if err := t.condemn(&rec); err != nil {
			return nil, err
		}
	}
	// Expired upload intents: their segment never committed and now never will.
	expired, err := t.keysBelow(prefixIntentExp, now, limit)
	if err != nil {
		return nil, err
	}
	for _, k := range expired {
		id := k[9:]
		if err := t.dropIntent(id); err != nil {
			return nil, err
		}
		if err := t.del(k); err != nil { // in case the intent record itself was missing
			return nil, err
		}
		if ok, err := t.has(segmentKey(id)); err != nil {
			return nil, err
		} else if ok {
			continue // committed after all: not garbage
		}
		if err := t.condemn(&pb.SegmentRecord{SegmentId: bytes.Clone(id), CommittedMs: now, Condemned: true}); err != nil {
			return nil, err
		}
	}
	// Everything condemned and not yet reported deleted.
	res := &Result{}
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixCondemned}, UpperBound: []byte{prefixCondemned + 1}})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	for it.First(); it.Valid() && len(res.Garbage) < limit; it.Next() {
		id := bytes.Clone(it.Key()[1:])
		var rec pb.SegmentRecord
		if _, err := t.getProto(segmentKey(id), &rec); err != nil {
			it.Close()
			return nil, err
		}
		res.Garbage = append(res.Garbage, &pb.Garbage{SegmentId: id, Size: rec.Size, NeverCommitted: rec.Result == nil && rec.Size == 0})
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return res, nil
}

func (t *txn) condemn(rec *pb.SegmentRecord) error {
	if err := t.setProto(segmentKey(rec.SegmentId), rec); err != nil {
		return err
	}
	return t.set(condemnedKey(rec.SegmentId), nil)
}

// keysBelow lists up to limit keys of a time-ordered index (prefix, sign-flipped
// ms, segment id) whose time is at most ms.
func (t *txn) keysBelow(prefix byte, ms int64, limit int) ([][]byte, error) {
	hi := binary.BigEndian.AppendUint64([]byte{prefix}, orderedInt64(ms)+1)
	if ms == 1<<63-1 {
		hi = []byte{prefix + 1}
	}
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var out [][]byte
	for it.First(); it.Valid() && len(out) < limit; it.Next() {
		if len(it.Key()) != 1+8+16 {
			it.Close()
			return nil, fmt.Errorf("%w: key %x", ErrCorrupt, it.Key())
		}
		out = append(out, bytes.Clone(it.Key()))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return out, nil
}

// forgetGarbage records condemned objects as deleted. Their records stay as small
// tombstones for TombstoneKeepMs, so a late commit of the same id is still refused.
func (t *txn) forgetGarbage(ids [][]byte, now int64) (*Result, error) {
	if len(ids) > maxGarbagePerClaim {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "at most %d ids per call", maxGarbagePerClaim)}, nil
	}
	for _, id := range ids {
		if !validID(id) {
			return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "segment id must be 16 non-zero bytes")}, nil
		}
	}
	for _, id := range ids {
		if ok, err := t.has(condemnedKey(id)); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		if err := t.del(condemnedKey(id)); err != nil {
			return nil, err
		}
		var rec pb.SegmentRecord
		if ok, err := t.getProto(segmentKey(id), &rec); err != nil {
			return nil, err
		} else if ok {
			tomb := &pb.SegmentRecord{SegmentId: rec.SegmentId, Size: rec.Size, CommittedMs: rec.CommittedMs, Condemned: true, Deleted: true, Level: rec.Level}
			if err := t.setProto(segmentKey(id), tomb); err != nil {
				return nil, err
			}
			if err := t.set(goneKey(now, id), nil); err != nil {
				return nil, err
			}
		}
	}
	return &Result{}, nil
}

// SegmentInfo reports a segment's record and upload intent (either may be nil).
func (s *State) SegmentInfo(id []byte) (*pb.SegmentResponse, error) {
	resp := &pb.SegmentResponse{}
	err := s.view(func(r pebble.Reader, _ uint64) error {
		var rec pb.SegmentRecord
		ok, err := getProto(r, segmentKey(id), &rec)
		if err != nil {
			return err
		}
		if ok {
			resp.Record = &rec
		}
		var in pb.UploadIntent
		ok, err = getProto(r, intentKey(id), &in)
		if ok {
			resp.Intent = &in
		}
		return err
	})
	return resp, err
}
