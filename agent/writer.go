package agent

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// The produce pipeline.
//
// Validated batches from every connection go into the one open segment, grouped by
// partition. The segment is sealed when it has lingered long enough or grown to the
// segment size. A sealed segment is written to object storage with one conditional
// PUT under a fresh id (an upload intent, recorded while the segment was filling,
// lets GC find it if the agent dies before committing), then committed to the
// metastore, which assigns offsets. Only then are its producers answered.
//
// PUTs of several sealed segments run at once; commits go one at a time in seal
// order, so two batches for one partition always get offsets in the order they
// arrived. A PUT or commit whose outcome is unknown is retried with the same segment
// id (both are idempotent on it) until the upload timeout; producers whose own
// timeout passes first get REQUEST_TIMED_OUT, a retriable error, never a clean one.
//
// Memory is bounded by MaxBufferedBytes over the open and in-flight segments:
// appending waits for room, which stops the connection's reader, so a client that
// produces faster than storage accepts is slowed down instead of growing the heap.

// maxSegmentBatches bounds the batches in one segment, so its CommitSegment stays far
// below gRPC's 4 MiB message limit (about 46 bytes per batch) and the metastore's
// per-commit limits; a segment that would pass it is sealed first.
const maxSegmentBatches = 50_000

type partKey struct {
	topic     objectlog.TopicID
	partition int32
}

// pendingBatch is one validated batch waiting in the open segment.
type pendingBatch struct {
	raw  []byte
	info *pb.BatchInfo
}

type partBuf struct {
	batches []pendingBatch
	offsets int64 // offsets taken so far: the next batch's relative offset
	firstTs int64
	maxTs   int64
}

// segBuf is one segment: open while it fills, then sealed, uploaded, committed.
type segBuf struct {
	id      objectlog.SegmentID
	parts   map[partKey]*partBuf
	bytes   int64
	batches int
	seq     uint64
	opened  time.Time // when its upload intent was requested
	sealed  time.Time
	stored  time.Time // when its PUT's fate was known
	timer   *time.Timer
	intent  chan error // receives the RecordIntent outcome once

	// Set before done is closed.
	done    chan struct{}
	err     error // the whole segment failed (nothing of it is committed)
	results map[partKey]*pb.ChunkResult

	uploaded chan struct{} // closed when the PUT's fate is known
	putErr   error
	data     []byte
	index    *objectlog.Index
}

// ticket is one partition's share of a produce request in a segment.
type ticket struct {
	seg      *segBuf
	key      partKey
	relative int64 // offset of the first batch relative to the chunk
	first, n int   // its batches' indexes in the chunk: [first, first+n)
}

// wait returns the base offset and log start offset of the ticket's batches once the
// segment committed, or the error that decided it. ctx is the request's timeout.
func (t *ticket) wait(ctx context.Context) (base, logStart int64, err error) {
	select {
	case <-t.seg.done:
	case <-ctx.Done():
		select {
		case <-t.seg.done: // decided at the same moment: the outcome wins
		default:
			return -1, -1, errTimedOut
		}
	}
	if t.seg.err != nil {
		return -1, -1, t.seg.err
	}
	r := t.seg.results[t.key]
	if r == nil {
		return -1, -1, fmt.Errorf("%w: commit result has no chunk for the partition", errInvalidRequest)
	}
	if err := metastore.ErrorOf(r.Error, ""); err != nil {
		return -1, -1, err
	}
	if len(r.Batches) > 0 {
		// The chunk held idempotent batches, each with its own outcome: a
		// duplicate answers its original offset, a refused batch its error.
		if t.first+t.n > len(r.Batches) {
			return -1, -1, fmt.Errorf("%w: commit result has %d batch results, the chunk %d batches", errInvalidRequest, len(r.Batches), t.first+t.n)
		}
		for _, br := range r.Batches[t.first : t.first+t.n] {
			if err := metastore.ErrorOf(br.Error, ""); err != nil {
				return -1, -1, err
			}
		}
		return r.Batches[t.first].BaseOffset, r.LogStartOffset, nil
	}
	return r.BaseOffset + t.relative, r.LogStartOffset, nil
}

type writer struct {
	s        *Server
	budget   *semaphore.Weighted
	reserved atomic.Int64 // bytes held against the budget, for tests and metrics

	mu     sync.Mutex
	open   *segBuf
	seq    uint64
	closed bool

	// queue holds sealed segments in seal order for the committer; appending never
	// blocks (the producers' byte budget bounds it), so w.mu is never held waiting.
	queue    []*segBuf
	queued   chan struct{} // a token when queue gained a segment or the writer closed
	inflight *semaphore.Weighted
	wg       sync.WaitGroup

	// stored holds the bytes of segments in storage whose commit has not returned:
	// the watch can announce their entries first, and a fetch then reads them here
	// rather than GET what this agent has in memory.
	storedMu sync.Mutex
	stored   map[objectlog.SegmentID][]byte
}

func newWriter(s *Server) *writer {
	return &writer{
		s:        s,
		budget:   semaphore.NewWeighted(s.cfg.MaxBufferedBytes),
		queued:   make(chan struct{}, 1),
		inflight: semaphore.NewWeighted(int64(s.cfg.MaxInflightSegments)),
		stored:   map[objectlog.SegmentID][]byte{},
	}
}

func (w *writer) start() {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.commitLoop()
	}()
}

// reserve waits for room for n buffered bytes; the caller passes them to append or
// gives them back with release.
func (w *writer) reserve(ctx context.Context, n int64) error {
	if n > w.s.cfg.MaxBufferedBytes {
		return fmt.Errorf("%w: %d bytes in one request, the agent buffers at most %d", errBatchTooLarge, n, w.s.cfg.MaxBufferedBytes)
	}
	if err := w.budget.Acquire(ctx, n); err != nil {
		return errShuttingDown
	}
	w.reserved.Add(n)
	return nil
}

func (w *writer) release(n int64) {
	w.reserved.Add(-n)
	w.budget.Release(n)
}

// buffered is how many produce bytes are held now (open and in-flight segments).
func (w *writer) buffered() int64 { return w.reserved.Load() }

// append adds one partition's batches (already validated and reserved) to the open
// segment and returns the ticket to wait on.
func (w *writer) append(key partKey, batches []pendingBatch, size int64) (*ticket, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.release(size)
		return nil, errShuttingDown
	}
	if len(batches) > maxSegmentBatches {
		w.release(size)
		return nil, fmt.Errorf("%w: %d batches for one partition in one request, at most %d", errInvalidRequest, len(batches), maxSegmentBatches)
	}
	seg := w.open
	if seg != nil && seg.batches+len(batches) > maxSegmentBatches {
		w.sealLocked(seg) // one commit must stay well under the metastore's message limits
		seg = nil
	}
	if seg == nil {
		seg = w.openLocked()
	}
	pb, ok := seg.parts[key]
	if !ok {
		pb = &partBuf{firstTs: -1, maxTs: -1}
		seg.parts[key] = pb
	}
	t := &ticket{seg: seg, key: key, relative: pb.offsets, first: len(pb.batches), n: len(batches)}
	var records int64
	for _, b := range batches {
		records += int64(b.info.RecordCount)
		pb.batches = append(pb.batches, b)
		pb.offsets += int64(b.info.OffsetCount)
		if pb.firstTs < 0 {
			pb.firstTs = b.info.MaxTimestamp
		}
		pb.maxTs = max(pb.maxTs, b.info.MaxTimestamp)
	}
	seg.bytes += size
	seg.batches += len(batches)
	w.s.stats.producedBatches.Add(int64(len(batches)))
	w.s.stats.producedRecords.Add(records)
	w.s.stats.producedBytes.Add(size)
	if seg.bytes >= int64(w.s.cfg.SegmentBytes) {
		w.sealLocked(seg)
	}
	return t, nil
}

func (w *writer) openLocked() *segBuf {
	var rnd [8]byte
	crand.Read(rnd[:])
	w.seq++
	seg := &segBuf{
		id:       objectlog.NewSegmentID(time.Now(), rnd),
		parts:    map[partKey]*partBuf{},
		seq:      w.seq,
		opened:   time.Now(),
		intent:   make(chan error, 1),
		done:     make(chan struct{}),
		uploaded: make(chan struct{}),
	}
	w.open = seg
	seg.timer = time.AfterFunc(w.s.cfg.Linger, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.open == seg {
			w.sealLocked(seg)
		}
	})
	// Record the upload intent while the segment fills, so the PUT does not wait on
	// a metastore round trip.
	go func() { seg.intent <- w.recordIntent(seg) }()
	return seg
}

// sealLocked closes the open segment to appends and starts its upload.
func (w *writer) sealLocked(seg *segBuf) {
	seg.timer.Stop()
	seg.sealed = time.Now()
	w.s.stats.since(StageLinger, seg.opened)
	w.open = nil
	w.queue = append(w.queue, seg)
	w.signal()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.upload(seg)
	}()
}

func (w *writer) recordIntent(seg *segBuf) error {
	ctx, cancel := context.WithTimeout(w.s.ctx, w.s.cfg.UploadTimeout)
	defer cancel()
	_, err := w.s.meta.RecordIntent(ctx, &pb.RecordIntentRequest{
		SegmentId: seg.id[:],
		AgentId:   w.s.cfg.AgentID,
		TtlMs:     w.s.cfg.IntentTTL.Milliseconds(),
	})
	return err
}

// build writes the segment's bytes: one chunk per partition, batches in arrival order.
func (seg *segBuf) build() error {
	keys := make([]partKey, 0, len(seg.parts))
	for k := range seg.parts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b partKey) int {
		if c := a.topic.Compare(b.topic); c != 0 {
			return c
		}
		return int(a.partition) - int(b.partition)
	})
	var buf bytes.Buffer
	buf.Grow(int(seg.bytes) + len(keys)*objectlog.IndexEntrySize + objectlog.FooterSize)
	sw := objectlog.NewSegmentWriter(&buf)
	for _, k := range keys {
		if err := sw.StartChunk(k.topic, k.partition, 0); err != nil {
			return err
		}
		for _, b := range seg.parts[k].batches {
			if err := sw.WriteBatch(b.raw); err != nil {
				return err
			}
		}
	}
	ix, err := sw.Close()
	if err != nil {
		return err
	}
	seg.data, seg.index = buf.Bytes(), ix
	return nil
}

// upload builds and PUTs the segment, retrying until the upload timeout.
func (w *writer) upload(seg *segBuf) {
	defer func() {
		seg.stored = time.Now()
		w.s.stats.since(StageUpload, seg.sealed)
		close(seg.uploaded)
	}()
	if err := w.inflight.Acquire(w.s.ctx, 1); err != nil {
		seg.putErr = errShuttingDown
		return
	}
	defer w.inflight.Release(1)
	if err := seg.build(); err != nil {
		seg.putErr = fmt.Errorf("agent: build segment: %w", err)
		return
	}
	deadline := time.Now().Add(w.s.cfg.UploadTimeout)
	// The intent must be recorded before the object exists.
	for attempt := 0; ; attempt++ {
		err := <-seg.intent
		if err == nil {
			break
		}
		if !w.retry(deadline, attempt, "record intent", seg, err) {
			seg.putErr = fmt.Errorf("%w: record upload intent: %v", errStorage, err)
			return
		}
		go func() { seg.intent <- w.recordIntent(seg) }()
	}
	key := objectlog.SegmentKey(seg.id)
	// The intent protects the object from GC for IntentTTL from when it was recorded;
	// a PUT that late could be collected before its commit.
	if time.Since(seg.opened) > w.s.cfg.IntentTTL/2 {
		seg.putErr = fmt.Errorf("%w: segment %s waited %v to upload, past half its intent", errStorage, seg.id, time.Since(seg.opened))
		return
	}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithDeadline(w.s.ctx, deadline)
		_, err := w.s.store.Put(ctx, key, bytes.NewReader(seg.data), int64(len(seg.data)), objstore.PutOptions{IfNoneMatch: true})
		cancel()
		if err == nil || (attempt > 0 && errors.Is(err, objstore.ErrPreconditionFailed)) {
			// A precondition failure on a retry is our own earlier attempt landing:
			// segment ids are random and never reused.
			w.storedMu.Lock()
			w.stored[seg.id] = seg.data
			w.storedMu.Unlock()
			return
		}
		if !w.retry(deadline, attempt, "put segment", seg, err) {
			seg.putErr = fmt.Errorf("%w: put %s: %v", errStorage, key, err)
			return
		}
	}
}

// retry logs a failed attempt and sleeps before the next; false when the deadline
// or shutdown leaves no time for another.
func (w *writer) retry(deadline time.Time, attempt int, what string, seg *segBuf, err error) bool {
	pause := min(time.Duration(10<<min(attempt, 7))*time.Millisecond, time.Second)
	pause = pause/2 + rand.N(pause/2+1)
	if time.Until(deadline) < pause || w.s.ctx.Err() != nil {
		return false
	}
	w.s.log.Warn("agent: segment "+what+" failed, retrying", "segment", seg.id.String(), "attempt", attempt+1, "err", err)
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.s.ctx.Done():
		return false
	}
}

func (w *writer) signal() {
	select {
	case w.queued <- struct{}{}:
	default:
	}
}

// next returns the oldest sealed segment, waiting for one; nil once the writer is
// closed and drained.
func (w *writer) next() *segBuf {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			seg := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return seg
		}
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return nil
		}
		<-w.queued
	}
}

// commitLoop commits sealed segments one at a time in seal order.
func (w *writer) commitLoop() {
	for seg := w.next(); seg != nil; seg = w.next() {
		<-seg.uploaded
		if seg.putErr != nil {
			w.finish(seg, seg.putErr)
			continue
		}
		w.s.stats.since(StageCommitQueue, seg.stored)
		start := time.Now()
		err := w.commit(seg)
		w.s.stats.since(StageCommit, start)
		w.finish(seg, err)
	}
}

func (w *writer) commit(seg *segBuf) error {
	req := &pb.CommitSegmentRequest{
		SegmentId: seg.id[:],
		Size:      int64(len(seg.data)),
		AgentId:   w.s.cfg.AgentID,
	}
	for _, c := range seg.index.Chunks {
		k := partKey{c.TopicID, c.Partition}
		p := seg.parts[k]
		cc := &pb.ChunkCommit{
			TopicId:        c.TopicID[:],
			Partition:      c.Partition,
			Position:       c.Position,
			Length:         c.Length,
			FirstTimestamp: p.firstTs,
			MaxTimestamp:   p.maxTs,
			Flags:          uint32(c.Flags),
		}
		for _, b := range p.batches {
			cc.Batches = append(cc.Batches, b.info)
		}
		req.Chunks = append(req.Chunks, cc)
	}
	deadline := time.Now().Add(w.s.cfg.UploadTimeout)
	if limit := seg.opened.Add(w.s.cfg.IntentTTL - w.s.cfg.UploadTimeout); deadline.After(limit) {
		// Past this GC may collect the object: committing it then could index a
		// missing object. The producers get a retriable error instead.
		deadline = limit
	}
	for attempt := 0; ; attempt++ {
		// After shutdown begins, a commit in progress still gets its chance: the
		// segment is stored and its producers are waiting.
		ctx, cancel := context.WithDeadline(context.WithoutCancel(w.s.ctx), deadline)
		resp, err := w.s.meta.CommitSegment(ctx, req)
		cancel()
		if err == nil {
			w.unstore(seg) // before hot patches its bytes in place
			seg.results = make(map[partKey]*pb.ChunkResult, len(resp.Chunks))
			for _, r := range resp.Chunks {
				var k partKey
				copy(k.topic[:], r.TopicId)
				k.partition = r.Partition
				seg.results[k] = r
			}
			w.s.rd.hot(seg)
			return nil
		}
		var me *metastore.Error
		if errors.As(err, &me) && me.Code != pb.ErrorCode_NOT_LEADER {
			return err // refused: nothing was committed
		}
		if time.Until(deadline) <= 0 {
			return fmt.Errorf("%w: commit segment %s: %v", metastore.ErrAmbiguous, seg.id, err)
		}
		w.s.log.Warn("agent: segment commit failed, retrying", "segment", seg.id.String(), "attempt", attempt+1, "err", err)
		time.Sleep(min(time.Duration(10<<min(attempt, 7))*time.Millisecond, time.Second))
	}
}

// unstore forgets a segment's stored bytes; it waits for copies being taken.
func (w *writer) unstore(seg *segBuf) {
	w.storedMu.Lock()
	delete(w.stored, seg.id)
	w.storedMu.Unlock()
}

// storedChunk returns a copy of length bytes at pos of a segment this agent stored
// and is committing, or nil.
func (w *writer) storedChunk(id objectlog.SegmentID, pos, length int64) []byte {
	w.storedMu.Lock()
	defer w.storedMu.Unlock()
	data, ok := w.stored[id]
	if !ok || pos < 0 || length < 0 || pos+length > int64(len(data)) {
		return nil
	}
	return append([]byte(nil), data[pos:pos+length]...)
}

func (w *writer) finish(seg *segBuf, err error) {
	w.unstore(seg)
	seg.err = err
	if err != nil {
		w.s.stats.segmentsFailed.Add(1)
		w.s.log.Warn("agent: segment not committed", "segment", seg.id.String(), "err", err)
	} else {
		w.s.stats.segmentsCommitted.Add(1)
	}
	// Its batches (slices of the produce frames they came in) are in storage now or
	// failed: drop them, so nothing that still holds the segment holds the frames.
	seg.parts = nil
	close(seg.done)
	seg.data = nil
	w.release(seg.bytes)
}

// close seals the open segment and waits (within ctx) for every segment in flight,
// so producers get their answers before the agent goes.
func (w *writer) close(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	if w.open != nil {
		w.sealLocked(w.open)
	}
	w.mu.Unlock()
	w.signal()
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("agent: segments still in flight at shutdown: %w", ctx.Err())
	}
}
