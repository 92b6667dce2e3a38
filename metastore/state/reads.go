package state

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// view runs f on a consistent snapshot of the state; applied is the index it reflects.
func (s *State) view(f func(r pebble.Reader, applied uint64) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return fmt.Errorf("state: closed")
	}
	// The applied index is read inside the snapshot, so it matches what f sees.
	snap := s.db.NewSnapshot()
	defer snap.Close()
	applied, err := getUint64(snap, keyApplied)
	if err != nil {
		return err
	}
	return f(snap, applied)
}

// Topics describes the given topics, or all of them when refs is empty, in the order
// asked (all: by topic id).
func (s *State) Topics(refs []*pb.TopicRef) (results []*pb.TopicResult, applied uint64, err error) {
	err = s.view(func(r pebble.Reader, idx uint64) error {
		applied = idx
		if len(refs) == 0 {
			return scanProtos(r, prefixTopic, func(t *pb.Topic) error {
				results = append(results, &pb.TopicResult{Name: t.Name, TopicId: t.TopicId, Topic: t})
				return nil
			})
		}
		for _, ref := range refs {
			t, err := readTopic(r, ref)
			if err != nil {
				return err
			}
			if t == nil {
				results = append(results, topicResult(ref, pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION, "no such topic"))
				continue
			}
			results = append(results, &pb.TopicResult{Name: t.Name, TopicId: t.TopicId, Topic: t})
		}
		return nil
	})
	return results, applied, err
}

func readTopic(r pebble.Reader, ref *pb.TopicRef) (*pb.Topic, error) {
	id := ref.GetTopicId()
	if len(id) == 0 {
		v, closer, err := r.Get(topicNameKey(ref.GetName()))
		if err == pebble.ErrNotFound {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		id = append([]byte(nil), v...)
		closer.Close()
	}
	if len(id) != 16 {
		return nil, nil
	}
	var t pb.Topic
	ok, err := getProto(r, topicKey(id), &t)
	if !ok || err != nil {
		return nil, err
	}
	return &t, nil
}

// headOf reads a partition's head; nil when the topic or partition does not exist.
func headOf(r pebble.Reader, topic []byte, partition int32) (*pb.PartitionHead, error) {
	if len(topic) != 16 || partition < 0 {
		return nil, nil
	}
	var h pb.PartitionHead
	ok, err := getProto(r, headKey(topic, partition), &h)
	if !ok || err != nil {
		return nil, err
	}
	return &h, nil
}

// Lookup returns up to max index entries starting with the one holding offset, and
// the partition head. An offset equal to the head's next offset is valid and yields
// no entries (the reader is caught up).
//
// With abortedUpto > 0 it also returns the aborted transactions overlapping
// [offset, abortedUpto) (for a read_committed fetch).
func (s *State) Lookup(topic []byte, partition int32, offset int64, maxEntries int, abortedUpto int64) (*pb.LookupResponse, error) {
	maxEntries = min(max(maxEntries, 1), 10_000)
	resp := &pb.LookupResponse{}
	err := s.view(func(r pebble.Reader, _ uint64) error {
		h, err := headOf(r, topic, partition)
		if err != nil {
			return err
		}
		if h == nil {
			resp.Error = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION
			return nil
		}
		resp.Head = h
		if offset < h.LogStartOffset || offset > h.NextOffset {
			resp.Error = pb.ErrorCode_OFFSET_OUT_OF_RANGE
			return nil
		}
		lo := indexKey(topic, partition, offset)
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(tpKey(prefixIndex, topic, partition))})
		if err != nil {
			return err
		}
		defer it.Close()
		for it.First(); it.Valid() && len(resp.Entries) < maxEntries; it.Next() {
			e, err := decodeIndexEntry(it.Key(), it.Value())
			if err != nil {
				return err
			}
			resp.Entries = append(resp.Entries, e)
		}
		if err := it.Error(); err != nil {
			return err
		}
		if abortedUpto > 0 {
			resp.Aborted, err = abortedIn(r, topic, partition, offset, abortedUpto, maxAbortedPerLookup)
		}
		return err
	})
	return resp, err
}

// maxAbortedPerLookup bounds a Lookup's aborted transactions: a fetch range holds
// at most one per batch, and the agent asks for ranges of at most a few MiB.
const maxAbortedPerLookup = 100_000

// ListOffsets answers Kafka's ListOffsets for one partition: timestamp -2 earliest,
// -1 latest, -3 the max-timestamp chunk, >= 0 the first chunk that can hold a record
// at or after that timestamp (the agent refines the exact offset inside it).
func (s *State) ListOffsets(topic []byte, partition int32, timestamp int64) (*pb.ListOffsetsResponse, error) {
	resp := &pb.ListOffsetsResponse{Offset: -1, Timestamp: -1}
	err := s.view(func(r pebble.Reader, _ uint64) error {
		h, err := headOf(r, topic, partition)
		if err != nil {
			return err
		}
		if h == nil {
			resp.Error = pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION
			return nil
		}
		resp.Head = h
		var base int64 = -1
		switch {
		case timestamp == -2:
			resp.Offset = h.LogStartOffset
			return nil
		case timestamp == -1:
			resp.Offset = h.NextOffset
			return nil
		case timestamp == -3:
			if h.MaxTimestampOffset < h.LogStartOffset {
				return nil
			}
			base, resp.Timestamp = h.MaxTimestampOffset, h.MaxTimestamp
		case timestamp >= 0:
			return firstAtOrAfter(r, topic, partition, timestamp, h, resp)
		default:
			resp.Error = pb.ErrorCode_INVALID_REQUEST
			return nil
		}
		if base >= h.NextOffset {
			return nil
		}
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: indexKey(topic, partition, base), UpperBound: upperBound(tpKey(prefixIndex, topic, partition))})
		if err != nil {
			return err
		}
		defer it.Close()
		if it.First() {
			e, err := decodeIndexEntry(it.Key(), it.Value())
			if err != nil {
				return err
			}
			resp.Entry = e
			resp.Offset = max(e.BaseOffset, base)
		}
		return it.Error()
	})
	return resp, err
}

// Agents lists the registered agents by id.
func (s *State) Agents() ([]*pb.AgentInfo, error) {
	var out []*pb.AgentInfo
	err := s.view(func(r pebble.Reader, _ uint64) error {
		return scanProtos(r, prefixAgent, func(a *pb.AgentInfo) error {
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

// ExpiredIntents lists up to limit upload intents whose deadline is before now,
// oldest first.
func (s *State) ExpiredIntents(now int64, limit int) ([]*pb.UploadIntent, error) {
	limit = min(max(limit, 1), 10_000)
	var out []*pb.UploadIntent
	err := s.view(func(r pebble.Reader, _ uint64) error {
		lo := []byte{prefixIntentExp}
		hi := binary.BigEndian.AppendUint64([]byte{prefixIntentExp}, orderedInt64(now))
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return err
		}
		defer it.Close()
		for it.First(); it.Valid() && len(out) < limit; it.Next() {
			k := it.Key()
			if len(k) != 1+8+16 {
				return fmt.Errorf("%w: intent expiry key %x", ErrCorrupt, k)
			}
			var in pb.UploadIntent
			ok, err := getProto(r, intentKey(k[9:]), &in)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, &in)
			}
		}
		return it.Error()
	})
	return out, err
}

// Segment returns a committed segment's record.
func (s *State) Segment(id []byte) (*pb.SegmentRecord, error) {
	var rec *pb.SegmentRecord
	err := s.view(func(r pebble.Reader, _ uint64) error {
		var sr pb.SegmentRecord
		ok, err := getProto(r, segmentKey(id), &sr)
		if ok {
			rec = &sr
		}
		return err
	})
	return rec, err
}

// maxTimeScan bounds how many index entries one timestamp search reads. The sparse
// time index keeps scans far shorter; the bound only guards against a partition
// whose timestamps barely move while it commits millions of chunks.
const maxTimeScan = 100_000

// firstAtOrAfter finds the first index entry whose max timestamp reaches ts: the
// chunk holding the first record at or after ts. Every entry before the last
// time-index point below ts has a smaller maximum (the point is where the running
// maximum, still below ts, was last recorded), so the scan starts there.
func firstAtOrAfter(r pebble.Reader, topic []byte, partition int32, ts int64, h *pb.PartitionHead, resp *pb.ListOffsetsResponse) error {
	if ts > h.MaxTimestamp {
		return nil
	}
	start := h.LogStartOffset
	lo := tpKey(prefixTimeIndex, topic, partition)
	pt, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: timeIndexKey(topic, partition, ts)})
	if err != nil {
		return err
	}
	if pt.Last() {
		if len(pt.Value()) != 8 {
			pt.Close()
			return fmt.Errorf("%w: time index value", ErrCorrupt)
		}
		start = max(start, int64(binary.BigEndian.Uint64(pt.Value())))
	}
	if err := pt.Close(); err != nil {
		return err
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: indexKey(topic, partition, start), UpperBound: upperBound(tpKey(prefixIndex, topic, partition))})
	if err != nil {
		return err
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid() && n < maxTimeScan; it.Next() {
		n++
		e, err := decodeIndexEntry(it.Key(), it.Value())
		if err != nil {
			return err
		}
		if e.MaxTimestamp >= ts {
			resp.Entry = e
			resp.Offset = max(e.BaseOffset, h.LogStartOffset)
			resp.Timestamp = e.MaxTimestamp
			return nil
		}
	}
	return it.Error()
}
