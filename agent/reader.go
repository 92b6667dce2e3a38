package agent

import (
	"bytes"
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
// Two things change committed entries, and the watch tells of both (PartitionChange):
// a compaction replaces a run of a partition's entries with entries into its output
// object (absolute offsets, possibly with gaps where key compaction dropped
// everything), and retention or DeleteRecords moves the log start forward, dropping
// the entries below it. The cache drops what they replaced; a Lookup answer read
// before a replacement and arriving after it must not put the old entries back, so
// each partition remembers when it last changed. The objects of replaced entries are
// deleted by GC after a grace period: a read that finds its object gone forgets the
// partition's entries and asks again (01_fetch.go).
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
	// changed is reader.gen when entries were last replaced or forgotten: a Lookup
	// sent before then may hold entries that no longer exist.
	changed uint64
}

type reader struct {
	s *Server

	mu     sync.Mutex
	parts  map[partKey]*partState
	notify chan struct{}
	// gen counts invalidations; a Lookup notes it when sent. resynced is gen at the
	// last one that concerns every partition (a watch resync, an eviction, a topic
	// deletion): an answer sent before it must not mark a head known nor cache
	// entries. A partition's own (a replacement, a vanished object) is its changed.
	gen      uint64
	resynced uint64
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

// resync forgets what the watch may have missed: heads are re-read on next use, and
// entries too, since a compaction it missed may have replaced some.
func (r *reader) resync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.invalidateAllLocked()
	for _, p := range r.parts {
		p.known = false
		p.entries = nil
	}
	r.cached = 0
	r.wakeLocked()
}

// invalidateAllLocked makes every Lookup in flight stale.
func (r *reader) invalidateAllLocked() {
	r.gen++
	r.resynced = r.gen
}

// staleLocked reports whether a Lookup sent at gen may hold entries p no longer has.
func (r *reader) staleLocked(p *partState, gen uint64) bool {
	return r.resynced > gen || p.changed > gen
}

// apply folds in a watch event: its partition changes first (what they replaced
// goes), then its new index entries (appends and replacements alike).
func (r *reader) apply(ev *pb.WatchEvent) {
	if len(ev.Entries) == 0 && len(ev.TopicsDeleted) == 0 && len(ev.Changes) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range ev.Changes {
		var k partKey
		copy(k.topic[:], c.TopicId)
		k.partition = c.Partition
		p := r.parts[k]
		if p == nil {
			continue // nothing cached, and no Lookup in flight (beginLookup adds p)
		}
		r.raiseLogStartLocked(p, c.LogStartOffset)
		if c.Replaced {
			r.gen++
			p.changed = r.gen
			r.dropLocked(p, func(e *pb.IndexEntry) bool {
				return e.BaseOffset <= c.ReplacedTo && e.LastOffset >= c.ReplacedFrom
			})
		}
	}
	for _, e := range ev.Entries {
		r.addLocked(e)
	}
	if len(ev.TopicsDeleted) > 0 {
		r.invalidateAllLocked() // a Lookup in flight must not bring a dropped partition back as known
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

// raiseLogStartLocked moves a partition's log start forward (never back) and drops
// the entries wholly below it.
func (r *reader) raiseLogStartLocked(p *partState, logStart int64) {
	if logStart <= p.logStart {
		return
	}
	p.logStart = logStart
	r.dropLocked(p, func(e *pb.IndexEntry) bool { return e.LastOffset < logStart })
}

// dropLocked removes a partition's cached entries that match.
func (r *reader) dropLocked(p *partState, drop func(*pb.IndexEntry) bool) {
	n := len(p.entries)
	p.entries = slices.DeleteFunc(p.entries, drop)
	r.cached -= n - len(p.entries)
}

// setLogStart records a log start this agent moved itself (DeleteRecords), ahead of
// the watch event that tells the same.
func (r *reader) setLogStart(k partKey, logStart int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.parts[k]; p != nil {
		r.raiseLogStartLocked(p, logStart)
		p.hwm = max(p.hwm, logStart)
	}
	r.wakeLocked()
}

// forget drops a partition's cached entries: one of them named an object that is
// gone (compacted or deleted, and collected), so the others may be as stale. A
// Lookup in flight must not bring them back either.
func (r *reader) forget(k partKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.parts[k]
	if p == nil {
		return
	}
	r.gen++
	p.changed = r.gen
	r.cached -= len(p.entries)
	p.entries = nil
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
	if e.LastOffset < p.logStart {
		return // deleted already: a late answer or event must not cache it again
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
	r.invalidateAllLocked() // a Lookup in flight must not bring a forgotten partition back as known
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
	// The cached entries outlive the segment: their id must not point into it (a
	// slice of seg.id would keep the whole segBuf, with every produce frame its
	// batches came from, alive as long as the index entry).
	segID := bytes.Clone(seg.id[:])
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
			SegmentId:    segID,
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
	r.mu.Unlock()
	gen := r.beginLookup(k)
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

// beginLookup notes that a Lookup of k is about to be sent and returns the gen its
// answer is learnt with. The partition is remembered from now on, so that a change
// the watch brings before the answer marks it.
func (r *reader) beginLookup(k partKey) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.touchLocked(r.partLocked(k))
	return r.gen
}

// partLocked returns k's state, remembering the partition from now on.
func (r *reader) partLocked(k partKey) *partState {
	p := r.parts[k]
	if p == nil {
		p = &partState{}
		r.parts[k] = p
	}
	return p
}

// learn records a Lookup answer's head and entries; gen is beginLookup's.
func (r *reader) learn(k partKey, resp *pb.LookupResponse, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.partLocked(k)
	r.touchLocked(p)
	if h := resp.Head; h != nil {
		// None of these goes back: an answer read before an event already
		// applied here must not undo it.
		p.hwm = max(p.hwm, h.NextOffset)
		p.lso = max(p.lso, h.StableOffset())
		r.raiseLogStartLocked(p, h.LogStartOffset)
		if r.resynced <= gen {
			p.known = true
		}
	}
	if r.staleLocked(p, gen) {
		// Read before a replacement (or a resync) this agent has applied: its
		// entries may be the replaced ones. The caller may use them once; the
		// cache must not keep them.
		return
	}
	for _, e := range resp.Entries {
		r.addLocked(e)
	}
}

// entries returns up to n entries in offset order, the first the one holding offset
// or, when offset lies in a gap compaction left, the first after it. Cached entries
// are returned while contiguous (a hole in the cache may be an entry not cached);
// otherwise the metastore is asked, and its answer is consecutive in the index (a
// hole in it is a gap). A Lookup refused with OFFSET_OUT_OF_RANGE refreshes the head.
func (r *reader) entries(ctx context.Context, k partKey, offset int64, n int) ([]*pb.IndexEntry, error) {
	if out := r.cachedEntries(k, offset, n); len(out) > 0 {
		return out, nil
	}
	gen := r.beginLookup(k)
	resp, err := r.s.meta.Lookup(ctx, &pb.LookupRequest{TopicId: k.topic[:], Partition: k.partition, Offset: offset, MaxEntries: int32(max(n, 8))})
	if err != nil {
		return nil, err
	}
	if resp.Error != pb.ErrorCode_NONE {
		if resp.Error == pb.ErrorCode_OFFSET_OUT_OF_RANGE && resp.Head != nil {
			// The log start passed offset before this agent heard: learn it now.
			r.learn(k, resp, gen)
		}
		return nil, errOf(resp.Error)
	}
	r.learn(k, resp, gen)
	var out []*pb.IndexEntry
	next := offset
	for _, e := range resp.Entries {
		if e.LastOffset < next || len(out) > 0 && e.BaseOffset < next {
			continue // not in offset order: never from a sane metastore
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
	if data := r.s.w.storedChunk(id, e.Position, e.Length); data != nil {
		// This agent's own segment, committed but its commit's answer not back
		// yet (the watch told first): its bytes are here.
		r.s.stats.storedReads.Add(1)
		return patchChunk(e, data)
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
			// Both wrapped: the fetch tells a collected object (ErrNotExist) apart.
			return nil, fmt.Errorf("%w: read %s: %w", errStorage, objectlog.SegmentKey(id), err)
		}
		data, err := objstore.ReadAllN(body, e.Length)
		body.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: read %s: %v", errStorage, objectlog.SegmentKey(id), err)
		}
		if _, err := patchChunk(e, data); err != nil {
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

// patchChunk checks bytes read for an index entry and gives them the entry's
// absolute offsets, in place.
func patchChunk(e *pb.IndexEntry, data []byte) ([]byte, error) {
	if err := checkEntryChunk(e, data); err != nil {
		return nil, err
	}
	c := objectlog.Chunk{Flags: objectlog.ChunkFlags(e.Flags)}
	if err := objectlog.ResolveOffsets(&c, data, e.BaseOffset); err != nil {
		return nil, err
	}
	return data, nil
}

// checkEntryChunk checks bytes read for an index entry: every batch's CRC, and the
// batch and record counts the entry promises. A relative chunk (ingestion) must
// also span exactly the entry's offsets. An absolute one (compaction output) may
// have gaps where key compaction dropped records, before, between and after its
// batches: they must only increase and lie inside [base offset, last offset].
func checkEntryChunk(e *pb.IndexEntry, data []byte) error {
	if int64(len(data)) != e.Length {
		return fmt.Errorf("%w: chunk is %d bytes, index says %d", objectlog.ErrCorrupt, len(data), e.Length)
	}
	absolute := objectlog.ChunkFlags(e.Flags)&objectlog.FlagAbsoluteOffsets != 0
	var batches, records, offsets int64
	next := e.BaseOffset // absolute: the lowest base offset the next batch may have
	for b, err := range objectlog.Batches(data) {
		if err != nil {
			return err
		}
		batches++
		records += int64(b.RecordCount)
		offsets += int64(b.LastOffsetDelta) + 1
		if !absolute {
			continue
		}
		if b.BaseOffset < next || b.BaseOffset > e.LastOffset || b.BaseOffset+int64(b.LastOffsetDelta) > e.LastOffset {
			return fmt.Errorf("%w: batch %d at offsets %d+%d, outside or out of order in entry %d-%d",
				objectlog.ErrCorrupt, batches-1, b.BaseOffset, b.LastOffsetDelta, e.BaseOffset, e.LastOffset)
		}
		next = b.BaseOffset + int64(b.LastOffsetDelta) + 1
	}
	if batches != int64(e.BatchCount) || records != int64(e.RecordCount) || !absolute && offsets != e.LastOffset-e.BaseOffset+1 {
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
