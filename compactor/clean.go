package compactor

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// Key compaction (cleanup.policy=compact), Kafka's log cleaner over the index.
//
// A pass covers whole entries from the log start to the cleanable end (planClean).
// First it reads the never-cleaned ("dirty") entries and maps each key to its
// latest offset, up to KeyMapBytes; where the map fills, the pass ends (the rest
// waits for the next one). Then it rewrites every entry up to there, keeping a
// record when it is the latest of its key (or its key is not in the map: it was
// cleaned before and nothing newer came), removing records with a null key, records
// of aborted transactions, and tombstones (null values) and transaction markers
// whose delete.retention.ms horizon (from the entry's cleaned_ms) has passed; a
// marker goes only once no data of its transaction is left, and an abort marker's
// aborted-transaction entry goes with it (dropped_aborted). Offsets never move:
// surviving batches keep theirs, rebuilt without the removed records
// (objectlog.FilterBatch), and emptied batches are dropped, leaving gaps.
//
// The output is cut into objects of about segment.bytes, each committed with its
// own index replacement in offset order; the pass stops at the first that loses a
// race, so a later piece (an abort marker's removal, say) never commits without the
// earlier ones it relies on.

// keyMapEntryBytes is what one key costs the map: a 16-byte hash, an 8-byte offset
// and the map's overhead.
const keyMapEntryBytes = 48

// keyMap maps a 128-bit hash of each key to its latest offset. Two independent
// seeded 64-bit hashes make a collision (which would drop a live record) as
// unlikely as Kafka's MD5-keyed map.
type keyMap struct {
	m        map[[2]uint64]int64
	capacity int
	s1, s2   maphash.Seed
}

func newKeyMap(bytes int64) *keyMap {
	return &keyMap{m: map[[2]uint64]int64{}, capacity: int(max(bytes/keyMapEntryBytes, 1)), s1: maphash.MakeSeed(), s2: maphash.MakeSeed()}
}

func (k *keyMap) hash(key []byte) [2]uint64 {
	return [2]uint64{maphash.Bytes(k.s1, key), maphash.Bytes(k.s2, key)}
}

func (k *keyMap) put(key []byte, offset int64) { k.m[k.hash(key)] = offset }

func (k *keyMap) get(key []byte) (int64, bool) {
	off, ok := k.m[k.hash(key)]
	return off, ok
}

// abortedSet is a partition's aborted transactions by producer id, each list in
// offset order.
type abortedSet map[int64][]*pb.AbortedTxn

// has reports whether offset of producer pid's data lies in an aborted transaction.
func (a abortedSet) has(pid, offset int64) bool {
	list := a[pid]
	i, _ := slices.BinarySearchFunc(list, offset, func(t *pb.AbortedTxn, off int64) int {
		// Find the first transaction whose marker is at or after offset.
		switch {
		case t.LastOffset < off:
			return -1
		case t.LastOffset > off:
			return 1
		}
		return 0
	})
	return i < len(list) && list[i].FirstOffset <= offset
}

// aborted reads the aborted transactions overlapping [from, upto).
func (c *Compactor) aborted(ctx context.Context, p partRef, from, upto int64) (abortedSet, error) {
	set := abortedSet{}
	for from < upto {
		resp, err := c.meta.Lookup(ctx, &pb.LookupRequest{TopicId: p.topic[:], Partition: p.partition, Offset: from, MaxEntries: 1, AbortedUpto: upto})
		if err != nil {
			return nil, fmt.Errorf("compactor: aborted transactions of %s: %w", p, err)
		}
		if resp.Error != pb.ErrorCode_NONE {
			if resp.Error == pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION {
				return nil, errGone
			}
			return nil, fmt.Errorf("compactor: aborted transactions of %s: %s", p, resp.Error)
		}
		if len(resp.Aborted) == 0 {
			break
		}
		next := from
		for _, t := range resp.Aborted {
			set[t.ProducerId] = append(set[t.ProducerId], t)
			next = max(next, t.LastOffset+1)
		}
		if next == from {
			break
		}
		from = next
	}
	for pid, list := range set {
		slices.SortFunc(list, func(a, b *pb.AbortedTxn) int { return cmp.Compare(a.LastOffset, b.LastOffset) })
		set[pid] = slices.CompactFunc(list, func(a, b *pb.AbortedTxn) bool { return a.LastOffset == b.LastOffset })
	}
	return set, nil
}

// controlType reads a control batch's record key: 0 abort, 1 commit; ok false for
// anything else (kept as it is).
func controlType(b *objectlog.Batch, limit int) (typ int16, ok bool) {
	recs, err := b.Records(nil, limit)
	if err != nil || len(recs) != 1 || len(recs[0].Key) < 4 || binary.BigEndian.Uint16(recs[0].Key) != 0 {
		return 0, false
	}
	typ = int16(binary.BigEndian.Uint16(recs[0].Key[2:]))
	return typ, typ == 0 || typ == 1
}

var errStop = errors.New("compactor: stop")

// clean runs a key compaction pass on one partition if one is due.
func (c *Compactor) clean(ctx context.Context, p partRef, pol policy, rep *Report) error {
	nowMs := c.cfg.Now().UnixMilli()
	head, err := c.head(ctx, p)
	if err != nil {
		return err
	}
	entries, _, err := c.load(ctx, p, head.LogStartOffset, c.cfg.MaxPlanEntries)
	if err != nil {
		return err
	}
	plan := planClean(entries, head, pol, nowMs)
	if plan.reason == "" || len(plan.entries) == 0 {
		return nil
	}
	aborted, err := c.aborted(ctx, p, head.LogStartOffset, plan.end)
	if err != nil {
		return err
	}
	km := newKeyMap(c.cfg.KeyMapBytes)
	end, err := c.mapKeys(ctx, plan, km, aborted)
	if err != nil {
		return fmt.Errorf("compactor: clean %s: %w", p, err)
	}
	c.log.Debug("compactor: cleaning", "partition", p.String(), "reason", plan.reason, "entries", end, "keys", len(km.m))
	if err := c.rewrite(ctx, p, pol, nowMs, plan.entries[:end], km, aborted, rep); err != nil {
		return fmt.Errorf("compactor: clean %s: %w", p, err)
	}
	return nil
}

// mapKeys fills km from the dirty entries of plan and returns how many of plan's
// entries the pass may clean: all of them, or up to the entry that would not fit.
func (c *Compactor) mapKeys(ctx context.Context, plan cleanPlan, km *keyMap, aborted abortedSet) (int, error) {
	end := len(plan.entries)
	i := plan.firstDirty
	var recs []objectlog.Record
	err := c.readInputs(ctx, plan.entries[plan.firstDirty:], func(e *pb.IndexEntry, data []byte) error {
		if len(km.m) > 0 && len(km.m)+int(e.RecordCount) > km.capacity {
			end = i
			return errStop
		}
		for len(data) > 0 {
			h, err := objectlog.ParseBatchHeader(data)
			if err != nil {
				return err
			}
			b := objectlog.Batch{BatchHeader: h, Raw: data[:h.Size()]}
			data = data[h.Size():]
			if h.Attributes.Control() || (h.Attributes.Transactional() && aborted.has(h.ProducerID, h.BaseOffset)) {
				continue
			}
			if recs, err = b.Records(recs[:0], c.cfg.MaxBatchBytes); err != nil {
				return fmt.Errorf("batch at %d: %w", h.BaseOffset, err)
			}
			for _, r := range recs {
				if r.Key != nil {
					km.put(r.Key, h.BaseOffset+int64(r.OffsetDelta))
				}
			}
		}
		i++
		return nil
	})
	if err != nil && err != errStop {
		return 0, err
	}
	return end, nil
}

// rewrite writes entries cleaned with km, in pieces of about segment.bytes.
func (c *Compactor) rewrite(ctx context.Context, p partRef, pol policy, nowMs int64, entries []*pb.IndexEntry, km *keyMap, aborted abortedSet, rep *Report) error {
	if len(entries) == 0 {
		return nil
	}
	target := pol.l2Target()
	var (
		o         = c.newOutput(p.topic, p.partition, levelTop, !c.cfg.SplitAtGaps, 0)
		dropped   []int64 // abort markers removed in this piece
		start     int     // first entry of this piece
		i         int
		removed   int64
		read      int64
		survivors = map[int64]bool{} // producers whose current transaction kept data
		recs      []objectlog.Record
		kept      []objectlog.Record
		scratch   []byte
	)
	defer func() { o.close() }()
	commitPiece := func() (bool, error) {
		if err := o.finish(true); err != nil {
			return false, err
		}
		req := &pb.ReplaceIndexRequest{TopicId: p.topic[:], Partition: p.partition, Inputs: entries[start : i+1], Outputs: o.blocks, DroppedAborted: dropped}
		ok, err := c.commit(ctx, o, req, rep)
		if err != nil || !ok {
			return false, err
		}
		c.log.Debug("compactor: cleaned", "partition", p.String(), "inputs", i+1-start, "outputs", len(o.blocks), "removed", removed, "object", o.key)
		rep.Cleans++
		rep.RecordsRemoved += removed
		rep.BytesCleaned += read
		rep.BytesWritten += o.size
		rep.EntriesReplaced += i + 1 - start
		rep.EntriesWritten += len(o.blocks)
		o.close()
		o = c.newOutput(p.topic, p.partition, levelTop, !c.cfg.SplitAtGaps, 0)
		dropped, start, removed, read = nil, i+1, 0, 0
		return true, nil
	}
	err := c.readInputs(ctx, entries, func(e *pb.IndexEntry, data []byte) error {
		read += int64(len(data))
		expired := horizonPassed(e, nowMs, pol)
		tag := cleanTag(e, nowMs, pol)
		for len(data) > 0 {
			h, err := objectlog.ParseBatchHeader(data)
			if err != nil {
				return err
			}
			b := objectlog.Batch{BatchHeader: h, Raw: data[:h.Size()]}
			data = data[h.Size():]
			out := b.Raw
			switch {
			case h.Attributes.Control():
				typ, ok := controlType(&b, c.cfg.MaxBatchBytes)
				if !ok {
					break
				}
				if expired && !survivors[h.ProducerID] {
					out = nil
					if typ == 0 {
						dropped = append(dropped, h.BaseOffset)
					}
				}
				delete(survivors, h.ProducerID)
			case h.Attributes.Transactional() && aborted.has(h.ProducerID, h.BaseOffset):
				out = nil
			default:
				if recs, err = b.Records(recs[:0], c.cfg.MaxBatchBytes); err != nil {
					return fmt.Errorf("batch at %d: %w", h.BaseOffset, err)
				}
				kept = kept[:0]
				for _, r := range recs {
					off := h.BaseOffset + int64(r.OffsetDelta)
					keep := r.Key != nil
					if keep {
						if latest, ok := km.get(r.Key); ok && latest != off {
							keep = false
						}
					}
					if keep && r.Value == nil && expired {
						keep = false
					}
					if keep {
						kept = append(kept, r)
					}
				}
				switch {
				case len(kept) == 0:
					out = nil
				case len(kept) < len(recs):
					if scratch, err = objectlog.FilterBatch(scratch[:0], &b, kept); err != nil {
						return err
					}
					out = scratch
				}
				if len(kept) > 0 && h.Attributes.Transactional() {
					survivors[h.ProducerID] = true
				}
			}
			if out == nil {
				removed += int64(h.RecordCount)
				continue
			}
			removed += int64(h.RecordCount)
			nh, err := objectlog.ParseBatchHeader(out)
			if err != nil {
				return err
			}
			removed -= int64(nh.RecordCount)
			if err := o.add(out, &nh, tag); err != nil {
				return err
			}
		}
		if o.pos >= target && i+1 < len(entries) {
			if ok, err := commitPiece(); err != nil {
				return err
			} else if !ok {
				return errStop
			}
		}
		i++
		return nil
	})
	if err == errStop {
		return nil
	}
	if err != nil {
		return err
	}
	i = len(entries) - 1
	_, err = commitPiece()
	return err
}
