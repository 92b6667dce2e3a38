package compactor

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// InputError is an input the compactor could not use: an object missing, or bytes
// that do not match their index entry (errors.Is(err, objectlog.ErrCorrupt)). The
// work that needed it is abandoned and nothing is replaced or deleted.
type InputError struct {
	Key        string // the object's key
	BaseOffset int64  // the index entry's offsets
	LastOffset int64
	Err        error
}

func (e *InputError) Error() string {
	return fmt.Sprintf("compactor: input %s [%d, %d]: %v", e.Key, e.BaseOffset, e.LastOffset, e.Err)
}

func (e *InputError) Unwrap() error { return e.Err }

// group is a run of entries read with one GET: adjacent in one object.
type group struct {
	entries []*pb.IndexEntry
	key     string
	off, n  int64
}

// inputError is err about reading g's object, naming it and g's offsets.
func (g group) inputError(err error) error {
	return &InputError{Key: g.key, BaseOffset: g.entries[0].BaseOffset, LastOffset: g.entries[len(g.entries)-1].LastOffset, Err: err}
}

// groupEntries gathers consecutive entries adjacent in one object into groups of at
// most maxBytes (an entry larger is a group alone). A marker is a group alone with
// nothing to read.
func groupEntries(entries []*pb.IndexEntry, maxBytes int64) []group {
	var out []group
	for _, e := range entries {
		if e.Marker == 0 && len(out) > 0 {
			g := &out[len(out)-1]
			last := g.entries[len(g.entries)-1]
			if last.Marker == 0 && bytes.Equal(last.SegmentId, e.SegmentId) && last.Position+last.Length == e.Position && g.n+e.Length <= maxBytes {
				g.entries = append(g.entries, e)
				g.n += e.Length
				continue
			}
		}
		g := group{entries: []*pb.IndexEntry{e}}
		if e.Marker == 0 {
			var id objectlog.SegmentID
			copy(id[:], e.SegmentId)
			g.key, g.off, g.n = objectlog.SegmentKey(id), e.Position, e.Length
		}
		out = append(out, g)
	}
	return out
}

// fetched is one group's bytes, filled by a reader goroutine.
type fetched struct {
	g    group
	data []byte
	err  error
	done chan struct{}
}

// readInputs calls fn for each entry, in order, with its batches: verified against
// the entry and carrying absolute offsets; a marker's are its control batch. GETs run
// up to ReadConcurrency ahead of fn. fn owns nothing past its return (the bytes may
// be reused); an error from fn stops the reading and is returned.
func (c *Compactor) readInputs(ctx context.Context, entries []*pb.IndexEntry, fn func(e *pb.IndexEntry, data []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan *fetched, c.cfg.ReadConcurrency)
	go func() {
		defer close(queue)
		for _, g := range groupEntries(entries, c.cfg.ReadBytes) {
			f := &fetched{g: g, done: make(chan struct{})}
			select {
			case queue <- f:
			case <-ctx.Done():
				return
			}
			go func() {
				defer close(f.done)
				f.data, f.err = c.readGroup(ctx, g)
			}()
		}
	}()
	var err error
	for f := range queue {
		<-f.done
		if err != nil {
			continue // drain: every started read ends before we return
		}
		if err = f.err; err != nil {
			cancel()
			continue
		}
		off := int64(0)
		for _, e := range f.g.entries {
			var data []byte
			if e.Marker != 0 {
				data = markerBatch(e)
			} else {
				data = f.data[off : off+e.Length : off+e.Length]
				off += e.Length
				if err = checkEntry(e, data); err != nil {
					// A kept copy may be what is bad (a body damaged in transit): the
					// next attempt reads the store again.
					c.segs.forget(f.g.key)
					err = &InputError{Key: f.g.key, BaseOffset: e.BaseOffset, LastOffset: e.LastOffset, Err: err}
					break
				}
			}
			if err = fn(e, data); err != nil {
				break
			}
		}
		if err != nil {
			cancel()
		}
	}
	return err
}

// readGroup GETs one group's bytes.
func (c *Compactor) readGroup(ctx context.Context, g group) ([]byte, error) {
	if g.key == "" {
		return nil, nil
	}
	if data, ok, err := c.readShared(ctx, g); ok || err != nil {
		return data, err
	}
	wrap := g.inputError
	rc, err := c.store.GetRange(ctx, g.key, g.off, g.n)
	if errors.Is(err, objstore.ErrInvalidRange) {
		return nil, wrap(fmt.Errorf("%w: range %d+%d past the object's end", objectlog.ErrCorrupt, g.off, g.n))
	}
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, wrap(err)
	}
	if err != nil {
		return nil, fmt.Errorf("compactor: read %s: %w", g.key, err)
	}
	defer rc.Close()
	data, err := objstore.ReadAllN(rc, g.n)
	if errors.Is(err, objstore.ErrShortBody) {
		return nil, wrap(fmt.Errorf("%w: %v", objectlog.ErrCorrupt, err))
	}
	if err != nil {
		return nil, fmt.Errorf("compactor: read %s: %w", g.key, err)
	}
	return data, nil
}

// markerBatch is the control batch a marker entry stands for, as readers serve it.
func markerBatch(e *pb.IndexEntry) []byte {
	return objectlog.ControlBatch(e.BaseOffset, e.ProducerId, int16(e.ProducerEpoch), e.Marker == pb.MarkerCommit, e.MaxTimestamp)
}

// checkEntry verifies an entry's bytes before they are trusted (every batch's CRC,
// and the batch, record and offset counts the entry promises) and gives relative
// batches their absolute offsets. Absolute batches must lie in the entry's offsets,
// in order; they may leave gaps (key compaction's outputs with AllowEntryGaps).
func checkEntry(e *pb.IndexEntry, data []byte) error {
	if int64(len(data)) != e.Length {
		return fmt.Errorf("%w: %d bytes, index says %d", objectlog.ErrCorrupt, len(data), e.Length)
	}
	absolute := objectlog.ChunkFlags(e.Flags)&objectlog.FlagAbsoluteOffsets != 0
	var batches, records, offsets int64
	next := e.BaseOffset
	for b, err := range objectlog.Batches(data) {
		if err != nil {
			return err
		}
		// Base offsets are outside the batch CRC: check them against each other.
		switch {
		case absolute && (b.BaseOffset < next || (batches == 0 && b.BaseOffset != e.BaseOffset)):
			return fmt.Errorf("%w: batch at offset %d, expected %d or later", objectlog.ErrCorrupt, b.BaseOffset, next)
		case !absolute && batches == 0:
			next = b.BaseOffset
		case !absolute && b.BaseOffset != next:
			return fmt.Errorf("%w: relative batch at offset %d, expected %d", objectlog.ErrCorrupt, b.BaseOffset, next)
		}
		next = b.BaseOffset + int64(b.LastOffsetDelta) + 1
		batches++
		records += int64(b.RecordCount)
		offsets += int64(b.LastOffsetDelta) + 1
	}
	span := e.LastOffset - e.BaseOffset + 1
	if batches != int64(e.BatchCount) || records != int64(e.RecordCount) || offsets > span || (!absolute && offsets != span) || (absolute && next != e.LastOffset+1) {
		return fmt.Errorf("%w: %d batches, %d records, %d offsets; index says %d, %d, %d",
			objectlog.ErrCorrupt, batches, records, offsets, e.BatchCount, e.RecordCount, span)
	}
	if !absolute {
		return objectlog.ResolveOffsets(&objectlog.Chunk{}, data, e.BaseOffset)
	}
	return nil
}
