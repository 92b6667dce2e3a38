package compactor

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// output is one object being written: a segment with a single chunk, flagged
// absolute, for one partition, and the index entries (blocks) that will point into
// it. Blocks are runs of whole batches of at most BlockBytes, cut also at offset
// gaps (unless gaps are allowed) and where the cleaned_ms their data carries
// differs.
type output struct {
	id        objectlog.SegmentID
	key       string
	topic     objectlog.TopicID
	partition int32
	level     int32
	maxBlock  int64
	gaps      bool

	sp      *spool
	bw      *bufio.Writer
	sw      *objectlog.SegmentWriter
	started bool
	pos     int64 // chunk bytes written (the chunk starts at 0)
	size    int64 // the object's size, after finish

	blocks []*pb.IndexEntry
	tag    int64 // the open block's cleaned tag (wildcard: none yet)
}

// newOutput starts an output; hint is about how large it will be (its inputs' size).
func (c *Compactor) newOutput(topic objectlog.TopicID, partition int32, level int32, gaps bool, hint int64) *output {
	var random [8]byte
	crand.Read(random[:])
	id := objectlog.NewSegmentID(c.cfg.Now(), random)
	sp := &spool{limit: c.cfg.SpillBytes, dir: c.cfg.TempDir}
	if hint > 0 {
		sp.buf = make([]byte, 0, min(hint+objectlog.IndexEntrySize+objectlog.FooterSize, c.cfg.SpillBytes))
	}
	bw := bufio.NewWriterSize(sp, 256<<10)
	return &output{
		id: id, key: objectlog.SegmentKey(id), topic: topic, partition: partition, level: level,
		maxBlock: c.cfg.BlockBytes, gaps: gaps,
		sp: sp, bw: bw, sw: objectlog.NewSegmentWriter(bw),
	}
}

// add appends one batch (absolute offsets, already verified) whose data carries the
// cleaned tag tag (0: never cleaned; wildcard: fits anywhere).
func (o *output) add(b []byte, h *objectlog.BatchHeader, tag int64) error {
	if !o.started {
		if err := o.sw.StartChunk(o.topic, o.partition, objectlog.FlagAbsoluteOffsets); err != nil {
			return err
		}
		o.started = true
	}
	if err := o.sw.WriteBatch(b); err != nil {
		return fmt.Errorf("compactor: write %s: %w", o.key, err)
	}
	n := int64(len(b))
	cur := o.open()
	if cur == nil || cur.Length+n > o.maxBlock ||
		(!o.gaps && h.BaseOffset != cur.LastOffset+1) ||
		(tag != wildcard && o.tag != wildcard && tag != o.tag) {
		cur = &pb.IndexEntry{
			BaseOffset: h.BaseOffset, SegmentId: o.id[:], Position: o.pos,
			MaxTimestamp: h.MaxTimestamp, Flags: uint32(objectlog.FlagAbsoluteOffsets), Level: o.level,
		}
		o.blocks = append(o.blocks, cur)
		o.tag = wildcard
	}
	if tag != wildcard {
		o.tag = tag
		cur.CleanedMs = tag
	}
	cur.LastOffset = h.BaseOffset + int64(h.LastOffsetDelta)
	cur.Length += n
	cur.BatchCount++
	cur.RecordCount += h.RecordCount
	cur.MaxTimestamp = max(cur.MaxTimestamp, h.MaxTimestamp)
	o.pos += n
	return nil
}

func (o *output) open() *pb.IndexEntry {
	if len(o.blocks) == 0 {
		return nil
	}
	return o.blocks[len(o.blocks)-1]
}

// empty reports an output with no batch: nothing to store.
func (o *output) empty() bool { return !o.started }

// finish writes the index and footer. Blocks tagged only wildcard get settledMs
// when the output is key compaction's (cleaned), else 0.
func (o *output) finish(cleaned bool) error {
	for _, b := range o.blocks {
		if cleaned && b.CleanedMs <= 0 {
			b.CleanedMs = settledMs
		}
		if !cleaned {
			b.CleanedMs = 0
		}
	}
	if !o.started {
		return nil
	}
	ix, err := o.sw.Close()
	if err != nil {
		return fmt.Errorf("compactor: write %s: %w", o.key, err)
	}
	if err := o.bw.Flush(); err != nil {
		return fmt.Errorf("compactor: write %s: %w", o.key, err)
	}
	o.size = ix.Size
	return nil
}

func (o *output) close() { o.sp.close() }

// commit stores the output (intent, then PUT) and swaps it for inputs. It returns
// false with a nil error when a concurrent change won (the index moved under us:
// STALE_INDEX, or GC claimed our id): the output object is then deleted and its
// intent resolved. An ambiguous failure of the swap leaves the object in place:
// if the swap did happen it is live, if not its intent expires and GC collects it.
func (c *Compactor) commit(ctx context.Context, o *output, req *pb.ReplaceIndexRequest, rep *Report) (bool, error) {
	if !o.empty() {
		if _, err := c.meta.RecordIntent(ctx, &pb.RecordIntentRequest{SegmentId: o.id[:], AgentId: agentID, TtlMs: c.cfg.IntentTTL.Milliseconds()}); err != nil {
			return false, fmt.Errorf("compactor: record intent for %s: %w", o.key, err)
		}
		if err := c.put(ctx, o); err != nil {
			return false, err
		}
		req.SegmentId, req.Size = o.id[:], o.size
	}
	resp, err := c.meta.ReplaceIndex(ctx, req)
	code, msg := pb.ErrorCode_NONE, ""
	var me *metastore.Error
	switch {
	case err == nil:
		code, msg = resp.Error, resp.Message
	case errors.As(err, &me) && me.Code != pb.ErrorCode_NOT_LEADER:
		code, msg = me.Code, me.Message
	default:
		return false, fmt.Errorf("compactor: replace index with %s: %w", o.key, err)
	}
	if code == pb.ErrorCode_NONE {
		return true, nil
	}
	// A definite refusal: the output is referenced by nothing and never will be.
	if !o.empty() {
		if err := c.discard(ctx, o); err != nil {
			return false, err
		}
	}
	switch code {
	case pb.ErrorCode_STALE_INDEX, pb.ErrorCode_INVALID_SEGMENT, pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION:
		c.log.Debug("compactor: lost a race", "object", o.key, "code", code, "message", msg)
		rep.Conflicts++
		return false, nil
	}
	return false, fmt.Errorf("compactor: replace index with %s: %w", o.key, metastore.ErrorOf(code, msg))
}

// put stores the output with If-None-Match, retrying a few times: a precondition
// failure on a retry is our own earlier attempt (ids are random).
func (c *Compactor) put(ctx context.Context, o *output) error {
	var err error
	for attempt := range 3 {
		var body io.Reader
		if body, err = o.sp.reader(); err != nil {
			return fmt.Errorf("compactor: put %s: %w", o.key, err)
		}
		_, err = c.store.Put(ctx, o.key, body, o.size, objstore.PutOptions{IfNoneMatch: true})
		if err == nil || (attempt > 0 && errors.Is(err, objstore.ErrPreconditionFailed)) {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, objstore.ErrPreconditionFailed) || errors.Is(err, objstore.ErrInvalidKey) {
			break
		}
		t := time.NewTimer(time.Duration(50<<attempt) * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return fmt.Errorf("compactor: put %s: %w", o.key, err)
}

// discard deletes an output that will never be referenced, then drops its intent
// (in this order: an intent outliving its object is harmless, an object outliving
// its intent would never be collected).
func (c *Compactor) discard(ctx context.Context, o *output) error {
	if err := c.store.Delete(ctx, o.key); err != nil {
		return fmt.Errorf("compactor: delete unused output %s: %w", o.key, err)
	}
	if _, err := c.meta.ResolveIntent(ctx, &pb.ResolveIntentRequest{SegmentId: o.id[:]}); err != nil {
		return fmt.Errorf("compactor: resolve intent of %s: %w", o.key, err)
	}
	return nil
}

// agentID is the writer name the compactor's upload intents carry.
const agentID = "compactor"

// spool holds an output being written: in memory up to limit bytes, then in a
// temporary file, so a level-2 object of segment.bytes does not need that much RAM.
type spool struct {
	limit int64
	dir   string
	buf   []byte
	f     *os.File
	n     int64
}

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && int64(len(s.buf)+len(p)) > s.limit {
		f, err := os.CreateTemp(s.dir, "strata-compactor-*")
		if err != nil {
			return 0, fmt.Errorf("compactor: spool: %w", err)
		}
		s.f = f
		if _, err := f.Write(s.buf); err != nil {
			return 0, fmt.Errorf("compactor: spool: %w", err)
		}
		s.buf = nil
	}
	s.n += int64(len(p))
	if s.f != nil {
		n, err := s.f.Write(p)
		if err != nil {
			return n, fmt.Errorf("compactor: spool: %w", err)
		}
		return n, nil
	}
	s.buf = append(s.buf, p...)
	return len(p), nil
}

// reader returns the whole content from its start (a ReadSeeker: stores can retry).
func (s *spool) reader() (io.Reader, error) {
	if s.f == nil {
		return bytes.NewReader(s.buf), nil
	}
	return io.NewSectionReader(s.f, 0, s.n), nil
}

func (s *spool) close() {
	s.buf = nil
	if s.f != nil {
		s.f.Close()
		os.Remove(s.f.Name())
		s.f = nil
	}
}
