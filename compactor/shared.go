package compactor

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// Whole reads of small ingestion segments.
//
// An ingestion segment holds a chunk of every partition its agent took produce for
// in one linger, and every partition's level-0 run is merged sooner or later, each
// by its own merge. Read chunk by chunk, a segment of P partitions costs P ranged
// GETs. With a short linger the chunks are tiny (a 5 ms linger at 4 MiB/s: about
// 20 KiB segments, 1 KiB chunks), so merging costs about a GET per KiB, far more
// than the PUTs that wrote the data. So a compactor keeps small segments
// (SegmentCacheMaxObject or less) whole in an LRU cache of SegmentCacheBytes: the
// first merge that needs one GETs it whole, the merges of its other partitions,
// in the same call or a later one, read it from memory.
//
// A call reads segments whole only when the segment that triggered it is small
// (its committed size): its neighbours, written by the same agents at the same
// rate, are alike. A segment found larger is read by range and not kept. Big
// segments have big chunks, for which a ranged GET per chunk costs little, and
// reading them whole for each partition's merge would multiply the bytes read.
// Objects are immutable (segment ids are never reused), so a kept copy is never
// stale, and every entry's bytes are still checked against the entry (checkEntry)
// before use. The cache holds at most SegmentCacheBytes, counting reads in flight
// at SegmentCacheMaxObject each.

// sharedReadTimeout bounds one whole-segment read: its waiters must not wait on a
// hung GET for ever, whatever their own deadlines.
const sharedReadTimeout = 2 * time.Minute

// maxCachedSegments bounds the entries, kept or marked too big (which take no
// bytes), so the markers cannot grow without end.
const maxCachedSegments = 1 << 16

// segmentCache is a compactor's kept segments, most recently used first.
type segmentCache struct {
	store     objstore.Store
	budget    int64 // bytes it may hold
	maxObject int64 // the largest segment it keeps

	mu   sync.Mutex
	used int64 // bytes held, reads in flight counted at maxObject
	lru  *list.List
	objs map[string]*list.Element // of *cachedSegment
	gets int64                    // whole-object GETs issued, for tests
}

// cachedSegment is one segment, being read or read. One read and found over
// maxObject stays as a marker (no data, no bytes), so later merges GET their
// ranges at once instead of a whole object first.
type cachedSegment struct {
	key  string
	done chan struct{}
	data []byte // set before done closes; nil with err or when too big
	err  error
	size int64 // bytes counted against the budget
}

func newSegmentCache(store objstore.Store, budget, maxObject int64) *segmentCache {
	return &segmentCache{store: store, budget: budget, maxObject: maxObject, lru: list.New(), objs: map[string]*list.Element{}}
}

type wholeReadsKey struct{}

// withWholeReads marks ctx's call as one whose segment misses may be read whole.
func withWholeReads(ctx context.Context) context.Context {
	return context.WithValue(ctx, wholeReadsKey{}, true)
}

func wholeReads(ctx context.Context) bool { b, _ := ctx.Value(wholeReadsKey{}).(bool); return b }

// sharable reports whether a group may be served from a whole segment: level-0 data
// (relative offsets: an ingestion segment's chunk).
func sharable(g group) bool {
	e := g.entries[0]
	return g.key != "" && e.Marker == 0 && objectlog.ChunkFlags(e.Flags)&objectlog.FlagAbsoluteOffsets == 0
}

// object returns the segment under key, whole: from the cache, or (when start) read
// once for every caller asking meanwhile. ok is false when it is not kept: the
// caller reads its range itself. A failed read is reported to the callers waiting
// for it and forgotten, so a later caller tries again.
func (sc *segmentCache) object(ctx context.Context, key string, start bool) (data []byte, ok bool, err error) {
	sc.mu.Lock()
	el := sc.objs[key]
	if el != nil {
		sc.lru.MoveToFront(el)
	} else {
		if !start || !sc.makeRoom(sc.maxObject) {
			sc.mu.Unlock()
			return nil, false, nil
		}
		cs := &cachedSegment{key: key, done: make(chan struct{}), size: sc.maxObject}
		sc.used += cs.size
		el = sc.lru.PushFront(cs)
		sc.objs[key] = el
		sc.gets++
		// Under a context of its own: the caller's merge may fail and give up while
		// other merges wait for the same segment.
		go func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedReadTimeout)
			defer cancel()
			sc.read(rctx, cs)
		}()
	}
	cs := el.Value.(*cachedSegment)
	sc.mu.Unlock()
	select {
	case <-cs.done:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	if cs.err != nil {
		return nil, false, cs.err
	}
	return cs.data, cs.data != nil, nil
}

// makeRoom evicts the least recently used segments already read until n more bytes
// fit; false if they cannot (reads in flight hold the rest). sc.mu is held.
func (sc *segmentCache) makeRoom(n int64) bool {
	if n > sc.budget {
		return false
	}
	for el := sc.lru.Back(); el != nil && (sc.used+n > sc.budget || sc.lru.Len() >= maxCachedSegments); {
		prev := el.Prev()
		cs := el.Value.(*cachedSegment)
		select {
		case <-cs.done:
			sc.drop(el)
		default: // in flight
		}
		el = prev
	}
	return sc.used+n <= sc.budget
}

// drop removes a segment from the cache. sc.mu is held.
func (sc *segmentCache) drop(el *list.Element) {
	cs := el.Value.(*cachedSegment)
	sc.lru.Remove(el)
	if sc.objs[cs.key] == el {
		delete(sc.objs, cs.key)
	}
	sc.used -= cs.size
}

// forget drops key's segment if it is kept (and read); safe on a nil cache.
func (sc *segmentCache) forget(key string) {
	if sc == nil {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if el := sc.objs[key]; el != nil {
		select {
		case <-el.Value.(*cachedSegment).done:
			sc.drop(el)
		default: // in flight: its readers get what it reads
		}
	}
}

// read fetches cs's segment whole and closes cs.done: kept if it is small enough,
// forgotten if not or if the read failed.
func (sc *segmentCache) read(ctx context.Context, cs *cachedSegment) {
	defer close(cs.done)
	var data []byte
	rc, info, err := sc.store.Get(ctx, cs.key)
	if err == nil {
		if info.Size >= 0 && info.Size <= sc.maxObject {
			data, err = objstore.ReadAllN(rc, info.Size)
		}
		rc.Close()
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	el := sc.objs[cs.key]
	switch {
	case err != nil:
		cs.err = err
		if el != nil && el.Value == cs {
			sc.drop(el) // a later caller tries again
		}
		return
	case data == nil:
		// Too big to keep: a marker, holding no bytes.
		sc.used -= cs.size
		cs.size = 0
		return
	}
	cs.data = data
	sc.used += int64(len(data)) - cs.size
	cs.size = int64(len(data))
}

// readShared serves a level-0 group from its whole segment when the cache has it
// or the call reads segments whole. ok is false otherwise: the caller GETs the
// range.
func (c *Compactor) readShared(ctx context.Context, g group) (data []byte, ok bool, err error) {
	if c.segs == nil || !sharable(g) {
		return nil, false, nil
	}
	obj, ok, err := c.segs.object(ctx, g.key, wholeReads(ctx))
	wrap := g.inputError
	switch {
	case errors.Is(err, objstore.ErrNotExist):
		return nil, false, wrap(err)
	case errors.Is(err, objstore.ErrShortBody):
		return nil, false, wrap(fmt.Errorf("%w: %v", objectlog.ErrCorrupt, err))
	case err != nil:
		return nil, false, fmt.Errorf("compactor: read %s: %w", g.key, err)
	case !ok:
		return nil, false, nil
	}
	end := g.off + g.n
	if g.off < 0 || end > int64(len(obj)) {
		return nil, false, wrap(fmt.Errorf("%w: range %d+%d past the object's end (%d bytes)", objectlog.ErrCorrupt, g.off, g.n, len(obj)))
	}
	// A copy: the caller changes its bytes (relative offsets made absolute), and
	// other merges read the same segment.
	return append([]byte(nil), obj[g.off:end]...), true, nil
}

// wholeGets is how many whole-segment GETs the cache issued.
func (sc *segmentCache) wholeGets() int64 {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.gets
}
