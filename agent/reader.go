package agent

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sync/singleflight"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// The fetch side: what the agent knows of each partition's offset index, and the
// chunks it has read, ready to serve.
//
// Index entries are immutable once committed, so they are cached without expiry
// (bounded per partition). The high watermark and new entries arrive on the
// metastore's watch stream and from this agent's own commits; every change closes
// the notify channel, which wakes long-poll fetches. A miss asks the metastore.
//
// Chunks are cached with their base offsets already patched, keyed by segment and
// position, in an LRU bounded by bytes. The agent that wrote a segment puts its
// chunks in the cache as it commits them, so the freshest data is served from memory;
// concurrent misses for one chunk share one ranged GET.

const (
	maxCachedEntries = 4096 // per partition; the newest are kept
	// maxTotalEntries bounds the index cache across partitions (~200 bytes each);
	// past it the partitions fetched least recently are forgotten.
	maxTotalEntries = 256 << 10
)

type partState struct {
	known    bool  // hwm and logStart are from the metastore or the watch
	hwm      int64 // next offset (every offset below is committed)
	lso      int64 // last stable offset: no open transaction below it
	logStart int64
	entries  []*pb.IndexEntry // sorted by base offset, not necessarily contiguous
	used     uint64           // reader.clock at the last fetch
}

type reader struct {
	s *Server

	mu     sync.Mutex
	parts  map[partKey]*partState
	notify chan struct{}
	// gen counts resyncs: a Lookup answer that started before one may miss what the
	// resync stands for, so it must not mark a head known.
	gen uint64
	// cached is the number of entries over all partitions; clock orders their use.
	cached int
	clock  uint64

	cache  *chunkCache
	flight singleflight.Group
}

func newReader(s *Server) *reader {
	return &reader{
		s:      s,
		parts:  map[partKey]*partState{},
		notify: make(chan struct{}),
		cache:  newChunkCache(s.cfg.CacheBytes),
	}
}

// changed returns a channel closed at the next index change.
func (r *reader) changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notify
}

func (r *reader) wakeLocked() {
	close(r.notify)
	r.notify = make(chan struct{})
}

// resync forgets what the watch may have missed: heads are re-read on next use.
func (r *reader) resync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	for _, p := range r.parts {
		p.known = false
	}
	r.wakeLocked()
}

// apply folds in a watch event's new index entries.
func (r *reader) apply(ev *pb.WatchEvent) {
	if len(ev.Entries) == 0 && len(ev.TopicsDeleted) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range ev.Entries {
		r.addLocked(e)
	}
	if len(ev.TopicsDeleted) > 0 {
		r.gen++ // a Lookup in flight must not bring a dropped partition back as known
	}
	for _, id := range ev.TopicsDeleted {
		for k, p := range r.parts {
			if string(k.topic[:]) == string(id) {
				r.cached -= len(p.entries)
				delete(r.parts, k)
			}
		}
	}
	r.wakeLocked()
}

func keyOf(e *pb.IndexEntry) partKey {
	var k partKey
	copy(k.topic[:], e.TopicId)
	k.partition = e.Partition
	return k
}

// addLocked caches one entry and raises the partition's watermark past it.
func (r *reader) addLocked(e *pb.IndexEntry) {
	k := keyOf(e)
	p := r.parts[k]
	if p == nil {
		// Unknown partition: remember only when someone fetches it (a Lookup then
		// fills the head), so a busy cluster does not fill every agent's memory.
		return
	}
	if e.LastOffset+1 > p.hwm {
		p.hwm = e.LastOffset + 1
	}
	// The last stable offset never goes back, so the highest one heard is right
	// whichever source (watch, own commit, Lookup) said it first.
	if e.LastStableOffset > p.lso {
		p.lso = e.LastStableOffset
	}
	i, found := slices.BinarySearchFunc(p.entries, e.BaseOffset, func(x *pb.IndexEntry, off int64) int {
		return cmpInt64(x.BaseOffset, off)
	})
	if found {
		p.entries[i] = e
		return
	}
	p.entries = slices.Insert(p.entries, i, e)
	r.cached++
	if len(p.entries) > maxCachedEntries {
		n := len(p.entries) - maxCachedEntries
		p.entries = slices.Delete(p.entries, 0, n)
		r.cached -= n
	}
	if r.cached > maxTotalEntries {
		r.evictLocked()
	}
}

// evictLocked forgets the partitions used least recently until the cache is at three
// quarters of its bound; they are read from the metastore again when fetched.
func (r *reader) evictLocked() {
	r.gen++ // a Lookup in flight must not bring a forgotten partition back as known
	keys := make([]partKey, 0, len(r.parts))
	for k := range r.parts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b partKey) int { return cmpInt64(int64(r.parts[a].used), int64(r.parts[b].used)) })
	for _, k := range keys {
		if r.cached <= maxTotalEntries*3/4 {
			return
		}
		r.cached -= len(r.parts[k].entries)
		delete(r.parts, k)
	}
}

// touchLocked marks a partition used now.
func (r *reader) touchLocked(p *partState) {
	r.clock++
	p.used = r.clock
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// wholeChunk reports whether a committed chunk went into the index whole: every
// batch appended (none a duplicate or refused).
func wholeChunk(res *pb.ChunkResult) bool {
	for _, b := range res.Batches {
		if b.Duplicate || b.Error != pb.ErrorCode_NONE {
			return false
		}
	}
	return res.BaseOffset >= 0
}

// hot puts a just-committed segment's chunks in the cache and its entries in the
// index: the writer's own data is readable at once, without a GET.
func (r *reader) hot(seg *segBuf) {
	// Patch and cache outside r.mu: fetches keep reading the index meanwhile.
	entries := make([]*pb.IndexEntry, 0, len(seg.index.Chunks))
	for _, c := range seg.index.Chunks {
		res := seg.results[partKey{c.TopicID, c.Partition}]
		if res == nil || res.Error != pb.ErrorCode_NONE || !wholeChunk(res) {
			// A chunk indexed in parts (a duplicate or refused batch left out):
			// its entries come with the watch, its bytes from storage.
			continue
		}
		data := seg.data[c.Position : c.Position+c.Length : c.Position+c.Length]
		if err := objectlog.ResolveOffsets(&c, data, res.BaseOffset); err != nil {
			continue
		}
		r.cache.put(chunkKey{seg.id, c.Position}, data)
		entries = append(entries, &pb.IndexEntry{
			TopicId:      res.TopicId,
			Partition:    res.Partition,
			BaseOffset:   res.BaseOffset,
			LastOffset:   res.LastOffset,
			SegmentId:    seg.id[:],
			Position:     c.Position,
			Length:       c.Length,
			MaxTimestamp: c.MaxTimestamp,
			BatchCount:   c.BatchCount,
			RecordCount:  c.RecordCount,
			Flags:        uint32(c.Flags),

			LastStableOffset: res.LastStableOffset,
		})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range entries {
		if p := r.parts[keyOf(e)]; p != nil && p.known && e.BaseOffset > p.hwm {
			// An entry past a gap the watch has not filled yet: the head is stale.
			p.known = false
		}
		r.addLocked(e)
	}
	r.wakeLocked()
}

// head returns a partition's watermark, last stable offset and log start, asking
// the metastore when the agent does not know them.
// With fresh set it always asks (a fetch beyond the cached watermark may be right).
func (r *reader) head(ctx context.Context, k partKey, fresh bool) (hwm, lso, logStart int64, err error) {
	r.mu.Lock()
	p := r.parts[k]
	if p != nil && p.known && !fresh {
		r.touchLocked(p)
		hwm, lso, logStart = p.hwm, min(p.lso, p.hwm), p.logStart
		r.mu.Unlock()
		return hwm, lso, logStart, nil
	}
	gen := r.gen
	r.mu.Unlock()
	resp, err := r.s.meta.Lookup(ctx, &pb.LookupRequest{TopicId: k.topic[:], Partition: k.partition, Offset: -1, MaxEntries: 1})
	if err != nil {
		return 0, 0, 0, err
	}
	if resp.Error != pb.ErrorCode_NONE && resp.Error != pb.ErrorCode_OFFSET_OUT_OF_RANGE {
		return 0, 0, 0, errOf(resp.Error)
	}
	r.learn(k, resp, gen)
	return resp.Head.GetNextOffset(), resp.Head.StableOffset(), resp.Head.GetLogStartOffset(), nil
}

// aborted returns the aborted transactions overlapping [from, upto) of a partition
// (for a read_committed fetch that returns transactional batches in that range).
func (r *reader) aborted(ctx context.Context, k partKey, from, upto int64) ([]*pb.AbortedTxn, error) {
	resp, err := r.s.meta.Lookup(ctx, &pb.LookupRequest{TopicId: k.topic[:], Partition: k.partition, Offset: from, MaxEntries: 1, AbortedUpto: upto})
	if err != nil {
		return nil, err
	}
	if resp.Error != pb.ErrorCode_NONE {
		return nil, errOf(resp.Error)
	}
	return resp.Aborted, nil
}

// learn records a Lookup answer's head and entries; gen is the resync generation
// when the Lookup was sent.
func (r *reader) learn(k partKey, resp *pb.LookupResponse, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.parts[k]
	if p == nil {
		p = &partState{}
		r.parts[k] = p
	}
	r.touchLocked(p)
	if h := resp.Head; h != nil {
		// None of these goes back: an answer read before an event already
		// applied here must not undo it.
		p.hwm = max(p.hwm, h.NextOffset)
		p.lso = max(p.lso, h.StableOffset())
		p.logStart = max(p.logStart, h.LogStartOffset)
		p.known = gen == r.gen
	}
	for _, e := range resp.Entries {
		r.addLocked(e)
	}
}

// entries returns cached entries covering offset onward, contiguous, up to n; it
// asks the metastore when the entry holding offset is not cached.
func (r *reader) entries(ctx context.Context, k partKey, offset int64, n int) ([]*pb.IndexEntry, error) {
	if out := r.cachedEntries(k, offset, n); len(out) > 0 {
		return out, nil
	}
	r.mu.Lock()
	gen := r.gen
	r.mu.Unlock()
	resp, err := r.s.meta.Lookup(ctx, &pb.LookupRequest{TopicId: k.topic[:], Partition: k.partition, Offset: offset, MaxEntries: int32(max(n, 8))})
	if err != nil {
		return nil, err
	}
	if resp.Error != pb.ErrorCode_NONE {
		return nil, errOf(resp.Error)
	}
	r.learn(k, resp, gen)
	var out []*pb.IndexEntry
	next := offset
	for _, e := range resp.Entries {
		if e.LastOffset < next {
			continue
		}
		if len(out) > 0 && e.BaseOffset != next {
			break
		}
		out = append(out, e)
		next = e.LastOffset + 1
		if len(out) == n {
			break
		}
	}
	return out, nil
}

func (r *reader) cachedEntries(k partKey, offset int64, n int) []*pb.IndexEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.parts[k]
	if p == nil {
		return nil
	}
	i, found := slices.BinarySearchFunc(p.entries, offset, func(x *pb.IndexEntry, off int64) int {
		return cmpInt64(x.BaseOffset, off)
	})
	if !found {
		i--
	}
	if i < 0 || p.entries[i].LastOffset < offset {
		return nil
	}
	out := []*pb.IndexEntry{p.entries[i]}
	for j := i + 1; j < len(p.entries) && len(out) < n; j++ {
		if p.entries[j].BaseOffset != out[len(out)-1].LastOffset+1 {
			break
		}
		out = append(out, p.entries[j])
	}
	return out
}

// chunk returns an entry's batches with absolute offsets, from cache or storage.
// The slice is shared: callers must not modify it.
func (r *reader) chunk(e *pb.IndexEntry) ([]byte, error) {
	if e.Marker != 0 {
		// A transaction marker: its control batch is built, never stored.
		return objectlog.ControlBatch(e.BaseOffset, e.ProducerId, int16(e.ProducerEpoch), e.Marker == pb.MarkerCommit, e.MaxTimestamp), nil
	}
	var id objectlog.SegmentID
	copy(id[:], e.SegmentId)
	ck := chunkKey{id, e.Position}
	if b, ok := r.cache.get(ck); ok {
		return b, nil
	}
	// Concurrent misses share one GET, which must not end with whichever caller
	// started it: it runs on the agent's context.
	v, err, _ := r.flight.Do(id.String()+"/"+strconv.FormatInt(e.Position, 10), func() (any, error) {
		if b, ok := r.cache.get(ck); ok {
			return b, nil
		}
		gctx, cancel := context.WithTimeout(r.s.ctx, r.s.cfg.UploadTimeout)
		defer cancel()
		body, err := r.s.store.GetRange(gctx, objectlog.SegmentKey(id), e.Position, e.Length)
		if err != nil {
			return nil, fmt.Errorf("%w: read %s: %v", errStorage, objectlog.SegmentKey(id), err)
		}
		data, err := objstore.ReadAllN(body, e.Length)
		body.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: read %s: %v", errStorage, objectlog.SegmentKey(id), err)
		}
		if err := checkEntryChunk(e, data); err != nil {
			return nil, err
		}
		c := objectlog.Chunk{Flags: objectlog.ChunkFlags(e.Flags)}
		if err := objectlog.ResolveOffsets(&c, data, e.BaseOffset); err != nil {
			return nil, err
		}
		r.cache.put(ck, data)
		return data, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// checkEntryChunk checks bytes read for an index entry: every batch's CRC, and the
// batch, record and offset counts the entry promises.
func checkEntryChunk(e *pb.IndexEntry, data []byte) error {
	if int64(len(data)) != e.Length {
		return fmt.Errorf("%w: chunk is %d bytes, index says %d", objectlog.ErrCorrupt, len(data), e.Length)
	}
	var batches, records, offsets int64
	for b, err := range objectlog.Batches(data) {
		if err != nil {
			return err
		}
		batches++
		records += int64(b.RecordCount)
		offsets += int64(b.LastOffsetDelta) + 1
	}
	if batches != int64(e.BatchCount) || records != int64(e.RecordCount) || offsets != e.LastOffset-e.BaseOffset+1 {
		return fmt.Errorf("%w: chunk holds %d batches, %d records, %d offsets; index says %d, %d, %d",
			objectlog.ErrCorrupt, batches, records, offsets, e.BatchCount, e.RecordCount, e.LastOffset-e.BaseOffset+1)
	}
	return nil
}

// chunkKey names a chunk: its segment and position.
type chunkKey struct {
	seg objectlog.SegmentID
	pos int64
}

// chunkCache is an LRU of patched chunks bounded by bytes.
type chunkCache struct {
	mu    sync.Mutex
	limit int64
	size  int64
	ll    *list.List
	items map[chunkKey]*list.Element
}

type cacheItem struct {
	key  chunkKey
	data []byte
}

func newChunkCache(limit int64) *chunkCache {
	return &chunkCache{limit: limit, ll: list.New(), items: map[chunkKey]*list.Element{}}
}

func (c *chunkCache) get(k chunkKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*cacheItem).data, true
	}
	return nil, false
}

func (c *chunkCache) put(k chunkKey, data []byte) {
	if int64(len(data)) > c.limit {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&cacheItem{k, data})
	c.size += int64(len(data))
	for c.size > c.limit {
		el := c.ll.Back()
		it := el.Value.(*cacheItem)
		c.ll.Remove(el)
		delete(c.items, it.key)
		c.size -= int64(len(it.data))
	}
}
