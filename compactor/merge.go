package compactor

import (
	"context"
	"fmt"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// merge runs one planned merge: the run's batches, byte for byte but for their
// base offsets (now absolute), go into one new object, whose blocks then replace
// the run in the index. Markers become their control batches, exactly the bytes
// readers served for them, so a fetch before and after returns the same batches.
func (c *Compactor) merge(ctx context.Context, p partRef, r run, rep *Report) error {
	o := c.newOutput(p.topic, p.partition, r.level, false, r.bytes)
	defer o.close()
	var read int64
	err := c.readInputs(ctx, r.entries, func(e *pb.IndexEntry, data []byte) error {
		read += int64(len(data))
		for len(data) > 0 {
			h, err := objectlog.ParseBatchHeader(data)
			if err != nil {
				return err // checked already: cannot happen
			}
			if err := o.add(data[:h.Size()], &h, 0); err != nil {
				return err
			}
			data = data[h.Size():]
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("compactor: merge %s [%d, %d]: %w", p, r.entries[0].BaseOffset, r.entries[len(r.entries)-1].LastOffset, err)
	}
	if err := o.finish(false); err != nil {
		return err
	}
	// The blocks must tile the run exactly, so every offset still has its entry.
	next := r.entries[0].BaseOffset
	for _, b := range o.blocks {
		if b.BaseOffset != next {
			return fmt.Errorf("compactor: merge %s: block at %d, expected %d (inputs do not tile)", p, b.BaseOffset, next)
		}
		next = b.LastOffset + 1
	}
	if last := r.entries[len(r.entries)-1].LastOffset; next != last+1 {
		return fmt.Errorf("compactor: merge %s: blocks end at %d, inputs at %d", p, next-1, last)
	}
	req := &pb.ReplaceIndexRequest{TopicId: p.topic[:], Partition: p.partition, Inputs: r.entries, Outputs: o.blocks}
	ok, err := c.commit(ctx, o, req, rep)
	if err != nil || !ok {
		return err
	}
	c.log.Debug("compactor: merged", "partition", p.String(), "reason", r.reason, "inputs", len(r.entries), "outputs", len(o.blocks), "bytes", read, "object", o.key)
	rep.Merges++
	rep.BytesMerged += read
	rep.BytesWritten += o.size
	rep.EntriesReplaced += len(r.entries)
	rep.EntriesWritten += len(o.blocks)
	return nil
}
