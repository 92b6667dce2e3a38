package compactor

import (
	"context"
	"errors"
	"fmt"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// Reading a partition's offset index from the metastore, a page of Lookup at a time.

// partRef names one partition.
type partRef struct {
	topic     objectlog.TopicID
	name      string
	partition int32
}

func (p partRef) String() string {
	if p.name != "" {
		return fmt.Sprintf("%s/%d", p.name, p.partition)
	}
	return fmt.Sprintf("%s/%d", p.topic, p.partition)
}

// errGone reports a partition that no longer exists (its topic was deleted).
var errGone = errors.New("compactor: partition gone")

// head returns a partition's head.
func (c *Compactor) head(ctx context.Context, p partRef) (*pb.PartitionHead, error) {
	resp, err := c.meta.Lookup(ctx, &pb.LookupRequest{TopicId: p.topic[:], Partition: p.partition, Offset: -1, MaxEntries: 1})
	if err != nil {
		if errors.Is(err, metastore.ErrUnknownTopic) {
			return nil, errGone
		}
		return nil, fmt.Errorf("compactor: lookup %s: %w", p, err)
	}
	switch {
	case resp.Error == pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION:
		return nil, errGone
	case resp.Head == nil:
		return nil, fmt.Errorf("compactor: lookup %s: %w", p, metastore.ErrorOf(resp.Error, "no head"))
	}
	return resp.Head, nil
}

// scan calls fn with the partition's entries from the one holding offset from, in
// offset order, until fn returns false, the high watermark, or max entries. It
// returns whether it reached the high watermark. A log start that moves past from
// meanwhile restarts the scan there.
func (c *Compactor) scan(ctx context.Context, p partRef, from int64, maxEntries int, fn func(*pb.IndexEntry) bool) (bool, error) {
	n := 0
	for tries := 0; n < maxEntries; {
		resp, err := c.meta.Lookup(ctx, &pb.LookupRequest{TopicId: p.topic[:], Partition: p.partition, Offset: from, MaxEntries: int32(min(maxLookupEntries, maxEntries-n))})
		if err != nil {
			if errors.Is(err, metastore.ErrUnknownTopic) {
				return false, errGone
			}
			return false, fmt.Errorf("compactor: lookup %s at %d: %w", p, from, err)
		}
		switch resp.Error {
		case pb.ErrorCode_NONE:
		case pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION:
			return false, errGone
		case pb.ErrorCode_OFFSET_OUT_OF_RANGE:
			h := resp.Head
			if h != nil && from < h.LogStartOffset && tries < 10 {
				from, tries = h.LogStartOffset, tries+1
				continue
			}
			return true, nil // past the high watermark: nothing more
		default:
			return false, fmt.Errorf("compactor: lookup %s at %d: %w", p, from, metastore.ErrorOf(resp.Error, ""))
		}
		if len(resp.Entries) == 0 {
			return true, nil
		}
		for _, e := range resp.Entries {
			if !fn(e) {
				return false, nil
			}
			from = e.LastOffset + 1
			n++
		}
		if from >= resp.Head.GetNextOffset() {
			return true, nil
		}
	}
	return false, nil
}

// load returns the entries from the one holding offset from to the high watermark,
// at most max, and whether they reach it.
func (c *Compactor) load(ctx context.Context, p partRef, from int64, maxEntries int) ([]*pb.IndexEntry, bool, error) {
	var out []*pb.IndexEntry
	complete, err := c.scan(ctx, p, from, maxEntries, func(e *pb.IndexEntry) bool {
		out = append(out, e)
		return true
	})
	return out, complete, err
}

// loadTail returns the partition's newest entries back to the last one no merge
// takes (a top-level or cleaned entry) or to the log start: where merges are
// planned. It reads backwards by offsets in growing steps, since the index is only
// read forwards, so a partition whose history is long and compacted costs a few
// small reads rather than a scan of it all.
func (c *Compactor) loadTail(ctx context.Context, p partRef, head *pb.PartitionHead) ([]*pb.IndexEntry, error) {
	span := int64(1024)
	for {
		from := max(head.LogStartOffset, head.NextOffset-span)
		entries, complete, err := c.load(ctx, p, from, c.cfg.MaxPlanEntries)
		if err != nil {
			return nil, err
		}
		last := -1
		for i, e := range entries {
			if mergeClass(e) < 0 {
				last = i
			}
		}
		// Done when the run before the tail is known to end: at a barrier, at the
		// log start, or (too many entries to see it all) with what fits.
		if last >= 0 || from == head.LogStartOffset || !complete || span > head.NextOffset {
			return entries[last+1:], nil
		}
		span *= 16
	}
}
