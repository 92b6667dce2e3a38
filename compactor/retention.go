package compactor

import (
	"context"
	"fmt"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// retain moves the partition's log start offset as retention.ms and
// retention.bytes ask (planRetention).
func (c *Compactor) retain(ctx context.Context, p partRef, pol policy, rep *Report) error {
	if pol.retentionMs < 0 && pol.retentionBytes < 0 {
		return nil
	}
	nowMs := c.cfg.Now().UnixMilli()
	head, err := c.head(ctx, p)
	if err != nil {
		return err
	}
	var entries []*pb.IndexEntry
	if pol.retentionBytes >= 0 {
		// The size needs every entry.
		entries, _, err = c.load(ctx, p, head.LogStartOffset, c.cfg.MaxPlanEntries)
	} else {
		// Only the expired prefix (and the entry after it) matters.
		_, err = c.scan(ctx, p, head.LogStartOffset, c.cfg.MaxPlanEntries, func(e *pb.IndexEntry) bool {
			entries = append(entries, e)
			return e.MaxTimestamp < nowMs-pol.retentionMs
		})
	}
	if err != nil {
		return err
	}
	target := planRetention(entries, head, pol, nowMs)
	if target <= head.LogStartOffset {
		return nil
	}
	after, err := c.deleteRecords(ctx, p, target)
	if after > head.LogStartOffset {
		rep.LogStartMoves++
	}
	return err
}

// deleteRecords moves the log start to target, calling again while the metastore
// stops short (it bounds the entries one command drops). It returns the log start
// reached (-1 if none was reported).
func (c *Compactor) deleteRecords(ctx context.Context, p partRef, target int64) (int64, error) {
	last := int64(-1)
	for {
		resp, err := c.meta.DeleteRecords(ctx, &pb.DeleteRecordsRequest{Partitions: []*pb.PartitionOffset{{TopicId: p.topic[:], Partition: p.partition, Offset: target}}})
		if err != nil {
			return last, fmt.Errorf("compactor: delete records of %s below %d: %w", p, target, err)
		}
		if len(resp.Results) != 1 {
			return last, fmt.Errorf("compactor: delete records of %s: %d results for 1 partition", p, len(resp.Results))
		}
		r := resp.Results[0]
		switch r.Error {
		case pb.ErrorCode_NONE:
		case pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION:
			return last, errGone
		default:
			return last, fmt.Errorf("compactor: delete records of %s below %d: %w", p, target, metastore.ErrorOf(r.Error, ""))
		}
		if r.LogStartOffset >= target {
			return r.LogStartOffset, nil
		}
		if r.LogStartOffset <= last {
			return last, fmt.Errorf("compactor: delete records of %s: log start stays at %d, below %d", p, r.LogStartOffset, target)
		}
		last = r.LogStartOffset
	}
}
