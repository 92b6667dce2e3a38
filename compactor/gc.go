package compactor

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// CollectGarbage deletes the objects the metastore condemns: segments unreferenced
// for GCGrace and uploads whose intent expired. Each round claims up to GCLimit,
// deletes them (a missing object is fine: a retry after a crash) and tells the
// metastore they are gone; rounds go on until none is left or GCRounds. An object
// whose delete fails stays condemned and is tried again by the next collection.
func (c *Compactor) CollectGarbage(ctx context.Context) (Report, error) {
	var rep Report
	for range c.cfg.GCRounds {
		resp, err := c.meta.ClaimGarbage(ctx, &pb.ClaimGarbageRequest{GraceMs: c.cfg.GCGrace.Milliseconds(), Limit: int32(c.cfg.GCLimit)})
		if err != nil {
			return rep, fmt.Errorf("compactor: claim garbage: %w", err)
		}
		if len(resp.Garbage) == 0 {
			return rep, nil
		}
		var (
			mu      sync.Mutex
			deleted [][]byte
			errs    []error
			wg      sync.WaitGroup
		)
		sem := make(chan struct{}, c.cfg.ReadConcurrency)
		for _, g := range resp.Garbage {
			if len(g.SegmentId) != len(objectlog.SegmentID{}) {
				continue
			}
			key := objectlog.SegmentKey(objectlog.SegmentID(g.SegmentId))
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				err := c.store.Delete(ctx, key)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("compactor: delete %s: %w", key, err))
					return
				}
				deleted = append(deleted, g.SegmentId)
			}()
		}
		wg.Wait()
		if len(deleted) > 0 {
			if _, err := c.meta.ForgetGarbage(ctx, &pb.ForgetGarbageRequest{SegmentIds: deleted}); err != nil {
				return rep, fmt.Errorf("compactor: forget garbage: %w", err)
			}
			rep.ObjectsDeleted += len(deleted)
			c.log.Debug("compactor: garbage deleted", "objects", len(deleted))
		}
		if len(errs) > 0 {
			return rep, errors.Join(errs...)
		}
		if len(resp.Garbage) < c.cfg.GCLimit {
			return rep, nil
		}
	}
	return rep, nil
}
