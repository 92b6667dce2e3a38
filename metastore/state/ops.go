package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/topicconfig"
)

// TimeIndexGranularityMs spaces the time index's points: at most one per this much
// growth of a partition's maximum timestamp. A timestamp search scans the index
// entries committed within one such step.
const TimeIndexGranularityMs = 100

// Bounds on what one command may ask for, so a request can never make Apply allocate
// or write without limit.
const (
	maxChunksPerCommit   = 100_000
	maxBatchesPerChunk   = 1 << 20
	maxAgentIDLen        = 255
	maxAddressLen        = 1024
	minLeaseMs           = 100
	maxLeaseMs           = 24 * 3600 * 1000
	maxIntentTTLMs       = 7 * 24 * 3600 * 1000
	maxReplicationFactor = 32767
)

func validID(id []byte) bool { return len(id) == 16 && !bytes.Equal(id, make([]byte, 16)) }

// resolveTopic finds a topic by id or, failing that, by name.
func (t *txn) resolveTopic(ref *pb.TopicRef) (*pb.Topic, error) {
	id := ref.GetTopicId()
	if len(id) == 0 && ref.GetName() != "" {
		v, closer, err := t.b.Get(topicNameKey(ref.GetName()))
		if err == pebble.ErrNotFound {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		id = bytes.Clone(v)
		closer.Close()
	}
	return t.getTopic(id)
}

func topicResult(ref *pb.TopicRef, code pb.ErrorCode, msg string) *pb.TopicResult {
	return &pb.TopicResult{Name: ref.GetName(), TopicId: ref.GetTopicId(), Error: code, Message: msg}
}

func (t *txn) createTopics(c *pb.CreateTopicsCommand, now int64) (*Result, error) {
	res := &Result{}
	for _, spec := range c.Topics {
		r, err := t.createTopic(spec, c.ValidateOnly, now)
		if err != nil {
			return nil, err
		}
		res.Topics = append(res.Topics, r)
	}
	return res, nil
}

func (t *txn) createTopic(spec *pb.TopicSpec, validateOnly bool, now int64) (*pb.TopicResult, error) {
	ref := &pb.TopicRef{Name: spec.Name, TopicId: spec.TopicId}
	if err := topicconfig.ValidTopicName(spec.Name); err != nil {
		return topicResult(ref, pb.ErrorCode_INVALID_TOPIC, err.Error()), nil
	}
	if !validID(spec.TopicId) {
		return topicResult(ref, pb.ErrorCode_INVALID_REQUEST, "topic id must be 16 non-zero bytes"), nil
	}
	if spec.Partitions < 1 || spec.Partitions > topicconfig.MaxPartitions {
		return topicResult(ref, pb.ErrorCode_INVALID_PARTITIONS, fmt.Sprintf("partitions must be in [1, %d], got %d", topicconfig.MaxPartitions, spec.Partitions)), nil
	}
	if spec.ReplicationFactor != -1 && (spec.ReplicationFactor < 1 || spec.ReplicationFactor > maxReplicationFactor) {
		return topicResult(ref, pb.ErrorCode_INVALID_REPLICATION_FACTOR, fmt.Sprintf("replication factor must be -1 or in [1, %d], got %d", maxReplicationFactor, spec.ReplicationFactor)), nil
	}
	for _, k := range sortedKeys(spec.Configs) {
		if err := topicconfig.Validate(k, spec.Configs[k]); err != nil {
			return topicResult(ref, pb.ErrorCode_INVALID_CONFIG, err.Error()), nil
		}
	}
	if existing, err := t.resolveTopic(&pb.TopicRef{Name: spec.Name}); err != nil {
		return nil, err
	} else if existing != nil {
		if bytes.Equal(existing.TopicId, spec.TopicId) {
			// A retried create of the same topic: report what exists.
			return &pb.TopicResult{Name: spec.Name, TopicId: existing.TopicId, Topic: existing}, nil
		}
		return topicResult(ref, pb.ErrorCode_TOPIC_ALREADY_EXISTS, fmt.Sprintf("topic %q already exists", spec.Name)), nil
	}
	if v, closer, err := t.b.Get(topicNormKey(spec.Name)); err == nil {
		closer.Close()
		var other pb.Topic
		if _, err := t.getProto(topicKey(v), &other); err != nil {
			return nil, err
		}
		return topicResult(ref, pb.ErrorCode_INVALID_TOPIC, fmt.Sprintf("topic %q collides with existing topic %q ('.' and '_' are the same in metric names)", spec.Name, other.Name)), nil
	} else if err != pebble.ErrNotFound {
		return nil, fmt.Errorf("state: %w", err)
	}
	if other, err := t.getTopic(spec.TopicId); err != nil {
		return nil, err
	} else if other != nil {
		return topicResult(ref, pb.ErrorCode_INVALID_REQUEST, "topic id already in use"), nil
	}
	rf := spec.ReplicationFactor
	if rf == -1 {
		rf = 1
	}
	topic := &pb.Topic{
		TopicId:           spec.TopicId,
		Name:              spec.Name,
		Partitions:        spec.Partitions,
		ReplicationFactor: rf,
		Configs:           spec.Configs,
		CreatedMs:         now,
	}
	if validateOnly {
		return &pb.TopicResult{Name: spec.Name, TopicId: spec.TopicId, Topic: topic}, nil
	}
	if err := t.putTopic(topic); err != nil {
		return nil, err
	}
	if err := t.set(topicNameKey(spec.Name), spec.TopicId); err != nil {
		return nil, err
	}
	if err := t.set(topicNormKey(spec.Name), spec.TopicId); err != nil {
		return nil, err
	}
	for p := range spec.Partitions {
		if err := t.putHead(spec.TopicId, p, &pb.PartitionHead{MaxTimestamp: -1, MaxTimestampOffset: -1}); err != nil {
			return nil, err
		}
	}
	t.topicChanged(topic)
	return &pb.TopicResult{Name: spec.Name, TopicId: spec.TopicId, Topic: topic}, nil
}

func (t *txn) topicChanged(topic *pb.Topic) {
	t.ev.TopicsChanged = append(t.ev.TopicsChanged, topic)
	t.watchable = true
}

func (t *txn) deleteTopics(c *pb.DeleteTopicsCommand, now int64) (*Result, error) {
	res := &Result{}
	for _, ref := range c.Topics {
		topic, err := t.resolveTopic(ref)
		if err != nil {
			return nil, err
		}
		if topic == nil {
			res.Topics = append(res.Topics, topicResult(ref, pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION, "no such topic"))
			continue
		}
		if err := t.deleteTopic(topic, now); err != nil {
			return nil, err
		}
		res.Topics = append(res.Topics, &pb.TopicResult{Name: topic.Name, TopicId: topic.TopicId})
	}
	return res, nil
}

// deleteTopic removes the topic, its heads and index, and releases its segments.
func (t *txn) deleteTopic(topic *pb.Topic, now int64) error {
	id := topic.TopicId
	for _, k := range [][]byte{topicKey(id), topicNameKey(topic.Name), topicNormKey(topic.Name)} {
		if err := t.del(k); err != nil {
			return err
		}
	}
	// Every index entry releases one reference on its segment.
	prefix := append([]byte{prefixIndex}, id...)
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upperBound(prefix)})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	var released [][]byte
	for it.First(); it.Valid(); it.Next() {
		e, err := decodeIndexEntry(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return err
		}
		if e.Marker == 0 {
			released = append(released, e.SegmentId)
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	for _, seg := range released {
		if err := t.releaseSegment(seg, 1, now); err != nil {
			return err
		}
	}
	for _, p := range []byte{prefixHead, prefixIndex, prefixTimeIndex, prefixAborted, prefixOpenTxn} {
		lo := append([]byte{p}, id...)
		if err := t.b.DeleteRange(lo, upperBound(lo), nil); err != nil {
			return fmt.Errorf("state: %w", err)
		}
	}
	lo := producersOf(id, -1)
	if err := t.b.DeleteRange(lo, upperBound(lo), nil); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	t.markDeleted(id)
	t.ev.TopicsDeleted = append(t.ev.TopicsDeleted, id)
	t.watchable = true
	return nil
}

// releaseSegment drops n index references to a segment; at zero the segment waits
// for garbage collection from now on.
func (t *txn) releaseSegment(id []byte, n int32, now int64) error {
	var rec pb.SegmentRecord
	ok, err := t.getProto(segmentKey(id), &rec)
	if err != nil || !ok || rec.References <= 0 {
		return err
	}
	rec.References -= n
	if rec.References <= 0 {
		rec.References = 0
		if err := t.unreferenced(&rec, now); err != nil {
			return err
		}
	}
	return t.setProto(segmentKey(id), &rec)
}

// unreferenced starts a segment's wait for garbage collection.
func (t *txn) unreferenced(rec *pb.SegmentRecord, now int64) error {
	rec.UnreferencedMs = now
	return t.set(unrefAtKey(now, rec.SegmentId), nil)
}

func (t *txn) alterConfigs(c *pb.AlterConfigsCommand) (*Result, error) {
	res := &Result{}
	for _, alt := range c.Alterations {
		topic, err := t.resolveTopic(alt.Topic)
		if err != nil {
			return nil, err
		}
		if topic == nil {
			res.Topics = append(res.Topics, topicResult(alt.Topic, pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION, "no such topic"))
			continue
		}
		configs := map[string]string{}
		if alt.Incremental {
			for k, v := range topic.Configs {
				configs[k] = v
			}
		}
		var bad *pb.TopicResult
		for _, op := range alt.Ops {
			switch op.Kind {
			case pb.ConfigOp_SET:
				if err := topicconfig.Validate(op.Key, op.Value); err != nil {
					bad = topicResult(alt.Topic, pb.ErrorCode_INVALID_CONFIG, err.Error())
				}
				configs[op.Key] = op.Value
			case pb.ConfigOp_DELETE:
				if !topicconfig.Known(op.Key) {
					bad = topicResult(alt.Topic, pb.ErrorCode_INVALID_CONFIG, fmt.Sprintf("unknown topic config %q", op.Key))
				}
				delete(configs, op.Key)
			default:
				bad = topicResult(alt.Topic, pb.ErrorCode_INVALID_REQUEST, fmt.Sprintf("config op %d", op.Kind))
			}
			if bad != nil {
				break
			}
		}
		if bad != nil {
			res.Topics = append(res.Topics, bad)
			continue
		}
		updated := proto.Clone(topic).(*pb.Topic)
		updated.Configs = configs
		if !c.ValidateOnly {
			if err := t.putTopic(updated); err != nil {
				return nil, err
			}
			t.topicChanged(updated)
		}
		res.Topics = append(res.Topics, &pb.TopicResult{Name: topic.Name, TopicId: topic.TopicId, Topic: updated})
	}
	return res, nil
}

func (t *txn) createPartitions(c *pb.CreatePartitionsCommand) (*Result, error) {
	res := &Result{}
	for _, g := range c.Topics {
		topic, err := t.resolveTopic(g.Topic)
		if err != nil {
			return nil, err
		}
		switch {
		case topic == nil:
			res.Topics = append(res.Topics, topicResult(g.Topic, pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION, "no such topic"))
			continue
		case g.Total <= topic.Partitions:
			res.Topics = append(res.Topics, topicResult(g.Topic, pb.ErrorCode_INVALID_PARTITIONS, fmt.Sprintf("topic has %d partitions; the new count %d must be larger", topic.Partitions, g.Total)))
			continue
		case g.Total > topicconfig.MaxPartitions:
			res.Topics = append(res.Topics, topicResult(g.Topic, pb.ErrorCode_INVALID_PARTITIONS, fmt.Sprintf("at most %d partitions", topicconfig.MaxPartitions)))
			continue
		}
		updated := proto.Clone(topic).(*pb.Topic)
		updated.Partitions = g.Total
		if !c.ValidateOnly {
			for p := topic.Partitions; p < g.Total; p++ {
				if err := t.putHead(topic.TopicId, p, &pb.PartitionHead{MaxTimestamp: -1, MaxTimestampOffset: -1}); err != nil {
					return nil, err
				}
			}
			if err := t.putTopic(updated); err != nil {
				return nil, err
			}
			t.topicChanged(updated)
		}
		res.Topics = append(res.Topics, &pb.TopicResult{Name: topic.Name, TopicId: topic.TopicId, Topic: updated})
	}
	return res, nil
}

// --- commits ---------------------------------------------------------------------

func (t *txn) commitSegments(c *pb.CommitSegmentsCommand, now int64) (*Result, error) {
	res := &Result{Commits: make([]*pb.CommitSegmentResponse, len(c.Commits))}
	for i, req := range c.Commits {
		r, err := t.commitSegment(req, now)
		if err != nil {
			return nil, err
		}
		res.Commits[i] = r
	}
	return res, nil
}

// validateCommit checks a commit's shape: ids, sizes, ranges and counts.
func validateCommit(req *pb.CommitSegmentRequest) string {
	if !validID(req.SegmentId) {
		return "segment id must be 16 non-zero bytes"
	}
	if req.Size <= 0 {
		return "segment size must be positive"
	}
	if len(req.Chunks) == 0 || len(req.Chunks) > maxChunksPerCommit {
		return fmt.Sprintf("a commit holds 1 to %d chunks, got %d", maxChunksPerCommit, len(req.Chunks))
	}
	seen := make(map[string]bool, len(req.Chunks))
	for _, ch := range req.Chunks {
		if len(ch.TopicId) != 16 || ch.Partition < 0 {
			return "chunk topic id or partition invalid"
		}
		if ch.Position < 0 || ch.Length <= 0 || ch.Position > req.Size || ch.Length > req.Size-ch.Position {
			return fmt.Sprintf("chunk [%d,+%d) outside a segment of %d bytes", ch.Position, ch.Length, req.Size)
		}
		if len(ch.Batches) == 0 || len(ch.Batches) > maxBatchesPerChunk {
			return fmt.Sprintf("a chunk holds 1 to %d batches, got %d", maxBatchesPerChunk, len(ch.Batches))
		}
		if ch.Flags&^1 != 0 {
			return fmt.Sprintf("chunk flags %#x", ch.Flags)
		}
		for _, b := range ch.Batches {
			if b.OffsetCount < 1 || b.RecordCount < 0 || b.RecordCount > b.OffsetCount {
				return fmt.Sprintf("batch offset count %d record count %d", b.OffsetCount, b.RecordCount)
			}
			if b.Size < 0 || int64(b.Size) > ch.Length {
				return fmt.Sprintf("batch size %d in a chunk of %d bytes", b.Size, ch.Length)
			}
		}
		k := string(ch.TopicId) + strconv.Itoa(int(ch.Partition))
		if seen[k] {
			return "two chunks for one partition"
		}
		seen[k] = true
	}
	return ""
}

// commitSegment assigns offsets to every chunk of one segment. It is idempotent on
// the segment id: a retry gets the first commit's answer.
func (t *txn) commitSegment(req *pb.CommitSegmentRequest, now int64) (*pb.CommitSegmentResponse, error) {
	if msg := validateCommit(req); msg != "" {
		resp := &pb.CommitSegmentResponse{}
		for _, ch := range req.Chunks {
			resp.Chunks = append(resp.Chunks, &pb.ChunkResult{TopicId: ch.TopicId, Partition: ch.Partition, Error: pb.ErrorCode_INVALID_REQUEST})
		}
		if len(resp.Chunks) == 0 {
			resp.Chunks = []*pb.ChunkResult{{Error: pb.ErrorCode_INVALID_REQUEST}}
		}
		return resp, nil
	}
	var prior pb.SegmentRecord
	if ok, err := t.getProto(segmentKey(req.SegmentId), &prior); err != nil {
		return nil, err
	} else if ok && prior.Condemned {
		// GC claimed this id (its upload intent expired, or it was collected):
		// its object is gone or going, so it must never be indexed.
		resp := &pb.CommitSegmentResponse{}
		for _, ch := range req.Chunks {
			resp.Chunks = append(resp.Chunks, &pb.ChunkResult{TopicId: ch.TopicId, Partition: ch.Partition, Error: pb.ErrorCode_INVALID_SEGMENT, BaseOffset: -1, LastOffset: -1})
		}
		return resp, nil
	} else if ok {
		return prior.Result, nil
	}
	resp := &pb.CommitSegmentResponse{Chunks: make([]*pb.ChunkResult, 0, len(req.Chunks))}
	refs := int32(0)
	for _, ch := range req.Chunks {
		r, entries, err := t.commitChunk(req.SegmentId, ch, now)
		if err != nil {
			return nil, err
		}
		refs += entries // each index entry references the segment
		resp.Chunks = append(resp.Chunks, r)
	}
	rec := &pb.SegmentRecord{SegmentId: req.SegmentId, Size: req.Size, CommittedMs: now, References: refs, Result: resp}
	if refs == 0 {
		// Nothing of it was indexed (every chunk refused or a duplicate).
		if err := t.unreferenced(rec, now); err != nil {
			return nil, err
		}
	}
	if err := t.setProto(segmentKey(req.SegmentId), rec); err != nil {
		return nil, err
	}
	// A committed segment is no longer an orphan candidate.
	if err := t.dropIntent(req.SegmentId); err != nil {
		return nil, err
	}
	return resp, nil
}

func (t *txn) commitChunk(segment []byte, ch *pb.ChunkCommit, now int64) (*pb.ChunkResult, int32, error) {
	r := &pb.ChunkResult{TopicId: ch.TopicId, Partition: ch.Partition}
	topic, err := t.getTopic(ch.TopicId)
	if err != nil {
		return nil, 0, err
	}
	if topic == nil || ch.Partition >= topic.Partitions {
		r.Error = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION
		return r, 0, nil
	}
	for _, b := range ch.Batches {
		if b.Transactional && b.ProducerId < 0 {
			// Refused alone: the segment's other chunks are other clients' writes.
			r.Error = pb.ErrorCode_INVALID_REQUEST
			return r, 0, nil
		}
	}
	cur, err := t.getHead(ch.TopicId, ch.Partition)
	if err != nil {
		return nil, 0, err
	}
	if cur == nil {
		return nil, 0, fmt.Errorf("%w: topic %x partition %d has no head", ErrCorrupt, ch.TopicId, ch.Partition)
	}
	head := proto.Clone(cur).(*pb.PartitionHead)
	r.LogStartOffset = head.LogStartOffset
	r.LastStableOffset = head.StableOffset()

	// Every batch of a plain producer goes in; those of idempotent producers are
	// checked first. Accepted batches take offsets in order; each run of them
	// becomes one index entry (a whole chunk is one run when nothing is left out).
	idempotent := false
	for _, b := range ch.Batches {
		if b.ProducerId >= 0 {
			idempotent = true
			break
		}
	}
	var check *producerCheck
	if idempotent {
		total := int64(0)
		for _, b := range ch.Batches {
			if b.Size <= 0 {
				r.Error = pb.ErrorCode_INVALID_REQUEST // cannot leave a batch out without its size
				return r, 0, nil
			}
			total += int64(b.Size)
		}
		if total != ch.Length {
			// Refused before any batch is checked: the checks write (a
			// transaction's open key), and a refused chunk must leave nothing.
			r.Error = pb.ErrorCode_INVALID_REQUEST
			return r, 0, nil
		}
		check = newProducerCheck(t, ch.TopicId, ch.Partition, now)
		r.Batches = make([]*pb.BatchResult, len(ch.Batches))
	}
	type run struct {
		pos, length int64
		base, last  int64
		batches     int32
		records     int64
		maxTs       int64
	}
	var runs []*run
	var open *run
	next := head.NextOffset
	pos := ch.Position
	for i, b := range ch.Batches {
		size := int64(b.Size)
		if !idempotent {
			size = ch.Length // one run: the whole chunk
		}
		keep := true
		if idempotent && b.ProducerId >= 0 {
			br := &pb.BatchResult{}
			r.Batches[i] = br
			switch dupBase, dup, code, err := check.check(b); {
			case err != nil:
				return nil, 0, err
			case dup:
				br.BaseOffset, br.Duplicate, keep = dupBase, true, false
			case code != pb.ErrorCode_NONE:
				br.Error, keep = code, false
			default:
				br.BaseOffset = next
				if check.accepted(b, next, next+int64(b.OffsetCount)-1) {
					// The producer's transaction begins here in this partition.
					if err := t.set(openTxnKey(ch.TopicId, ch.Partition, next, b.ProducerId), nil); err != nil {
						return nil, 0, err
					}
					if head.OpenTxns == 0 {
						head.FirstUnstable = next
					}
					head.OpenTxns++
				}
			}
		} else if idempotent {
			r.Batches[i] = &pb.BatchResult{BaseOffset: next}
		}
		if !keep {
			open = nil
			pos += size
			continue
		}
		if open == nil {
			open = &run{pos: pos, base: next, maxTs: ch.MaxTimestamp}
			runs = append(runs, open)
		}
		open.length += size
		open.batches++
		open.records += int64(b.RecordCount)
		open.maxTs = max(open.maxTs, b.MaxTimestamp)
		next += int64(b.OffsetCount)
		open.last = next - 1
		pos += size
		if !idempotent {
			// One run for the whole chunk: count the remaining batches into it.
			for _, rb := range ch.Batches[i+1:] {
				open.batches++
				open.records += int64(rb.RecordCount)
				open.maxTs = max(open.maxTs, rb.MaxTimestamp)
				next += int64(rb.OffsetCount)
			}
			open.last = next - 1
			break
		}
	}
	if idempotent {
		if err := check.flush(); err != nil {
			return nil, 0, err
		}
	}
	r.BaseOffset, r.LastOffset = -1, -1
	if len(runs) > 0 {
		head.NextOffset = next
	}
	stable := head.StableOffset()
	for k, ru := range runs {
		entry := &pb.IndexEntry{
			BaseOffset:   ru.base,
			LastOffset:   ru.last,
			SegmentId:    segment,
			Position:     ru.pos,
			Length:       ru.length,
			MaxTimestamp: ru.maxTs,
			BatchCount:   ru.batches,
			RecordCount:  int32(min(ru.records, 1<<31-1)),
			Flags:        ch.Flags,
		}
		if err := t.set(indexKey(ch.TopicId, ch.Partition, ru.last), encodeIndexValue(entry)); err != nil {
			return nil, 0, err
		}
		if ru.maxTs > head.MaxTimestamp {
			head.MaxTimestamp, head.MaxTimestampOffset = ru.maxTs, ru.base
			// The running maximum rose. Record where, sparsely: ListOffsets scans
			// index entries from the last point below its target.
			if head.TimeIndexed == 0 || ru.maxTs >= head.TimeIndexed+TimeIndexGranularityMs {
				if err := t.set(timeIndexKey(ch.TopicId, ch.Partition, ru.maxTs), binary.BigEndian.AppendUint64(nil, uint64(ru.base))); err != nil {
					return nil, 0, err
				}
				head.TimeIndexed = ru.maxTs
			}
		}
		entry.TopicId, entry.Partition, entry.LastStableOffset = ch.TopicId, ch.Partition, stable
		t.ev.Entries = append(t.ev.Entries, entry)
		t.watchable = true
		if k == 0 {
			r.BaseOffset = ru.base
		}
		r.LastOffset = ru.last
	}
	if len(runs) > 0 {
		if err := t.putHead(ch.TopicId, ch.Partition, head); err != nil {
			return nil, 0, err
		}
	}
	r.LastStableOffset = stable
	return r, int32(len(runs)), nil
}

// --- agents and intents ----------------------------------------------------------

func (t *txn) registerAgent(a *pb.AgentInfo, now int64) (*Result, error) {
	if a == nil || a.AgentId == "" || len(a.AgentId) > maxAgentIDLen {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "agent id must be 1 to %d bytes", maxAgentIDLen)}, nil
	}
	if _, _, err := net.SplitHostPort(a.Address); err != nil || len(a.Address) > maxAddressLen {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "agent address %q is not host:port", a.Address)}, nil
	}
	if a.LeaseMs < minLeaseMs || a.LeaseMs > maxLeaseMs {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "lease must be %d to %d ms", minLeaseMs, maxLeaseMs)}, nil
	}
	agent := &pb.AgentInfo{AgentId: a.AgentId, Address: a.Address, Zone: a.Zone, LeaseMs: a.LeaseMs, LeaseExpiryMs: now + a.LeaseMs}
	var prior pb.AgentInfo
	existed, err := t.getProto(agentKey(a.AgentId), &prior)
	if err != nil {
		return nil, err
	}
	if err := t.setProto(agentKey(a.AgentId), agent); err != nil {
		return nil, err
	}
	// A renewal that changes nothing but the expiry is not news to watchers.
	if !existed || prior.Address != agent.Address || prior.Zone != agent.Zone {
		t.ev.AgentsChanged = append(t.ev.AgentsChanged, agent)
		t.watchable = true
	}
	return &Result{Agent: agent}, nil
}

func (t *txn) deregisterAgent(id string) (*Result, error) {
	if ok, err := t.has(agentKey(id)); err != nil {
		return nil, err
	} else if !ok {
		return &Result{Err: refuse(pb.ErrorCode_UNKNOWN_AGENT, "no agent %q", id)}, nil
	}
	if err := t.del(agentKey(id)); err != nil {
		return nil, err
	}
	t.ev.AgentsRemoved = append(t.ev.AgentsRemoved, id)
	t.watchable = true
	return &Result{}, nil
}

func (t *txn) expireAgents(now int64) (*Result, error) {
	var expired []string
	err := scanProtos(t.b, prefixAgent, func(a *pb.AgentInfo) error {
		if a.LeaseExpiryMs < now {
			expired = append(expired, a.AgentId)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range expired {
		if err := t.del(agentKey(id)); err != nil {
			return nil, err
		}
		t.ev.AgentsRemoved = append(t.ev.AgentsRemoved, id)
		t.watchable = true
	}
	return &Result{}, nil
}

func (t *txn) recordIntent(in *pb.UploadIntent, now int64) (*Result, error) {
	if in == nil || !validID(in.SegmentId) || in.AgentId == "" || len(in.AgentId) > maxAgentIDLen {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "intent needs a 16-byte segment id and an agent id")}, nil
	}
	ttl := in.ExpiresMs - in.CreatedMs
	if in.CreatedMs != now || ttl <= 0 || ttl > maxIntentTTLMs {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "intent ttl must be 1 to %d ms", maxIntentTTLMs)}, nil
	}
	if ok, err := t.has(segmentKey(in.SegmentId)); err != nil {
		return nil, err
	} else if ok {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_SEGMENT, "segment already committed")}, nil
	}
	var prior pb.UploadIntent
	if ok, err := t.getProto(intentKey(in.SegmentId), &prior); err != nil {
		return nil, err
	} else if ok {
		return &Result{Intent: &prior}, nil // a retried record keeps the first deadline
	}
	if err := t.setProto(intentKey(in.SegmentId), in); err != nil {
		return nil, err
	}
	if err := t.set(intentExpKey(in.ExpiresMs, in.SegmentId), nil); err != nil {
		return nil, err
	}
	return &Result{Intent: in}, nil
}

func (t *txn) resolveIntent(id []byte) (*Result, error) {
	if !validID(id) {
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "segment id must be 16 non-zero bytes")}, nil
	}
	return &Result{}, t.dropIntent(id)
}

func (t *txn) dropIntent(id []byte) error {
	var in pb.UploadIntent
	ok, err := t.getProto(intentKey(id), &in)
	if err != nil || !ok {
		return err
	}
	if err := t.del(intentKey(id)); err != nil {
		return err
	}
	return t.del(intentExpKey(in.ExpiresMs, id))
}
