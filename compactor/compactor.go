package compactor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// Metastore is what the compactor needs of the metastore; *metastore.Client
// implements it. Calls must be safe for concurrent use; ReplaceIndex,
// DeleteRecords, ClaimGarbage and ForgetGarbage are idempotent on retry.
type Metastore interface {
	DescribeTopics(context.Context, *pb.DescribeTopicsRequest) (*pb.DescribeTopicsResponse, error)
	Lookup(context.Context, *pb.LookupRequest) (*pb.LookupResponse, error)
	Segment(context.Context, *pb.SegmentRequest) (*pb.SegmentResponse, error)
	RecordIntent(context.Context, *pb.RecordIntentRequest) (*pb.RecordIntentResponse, error)
	ResolveIntent(context.Context, *pb.ResolveIntentRequest) (*pb.ResolveIntentResponse, error)
	ReplaceIndex(context.Context, *pb.ReplaceIndexRequest) (*pb.ReplaceIndexResponse, error)
	DeleteRecords(context.Context, *pb.DeleteRecordsRequest) (*pb.DeleteRecordsResponse, error)
	ClaimGarbage(context.Context, *pb.ClaimGarbageRequest) (*pb.ClaimGarbageResponse, error)
	ForgetGarbage(context.Context, *pb.ForgetGarbageRequest) (*pb.ForgetGarbageResponse, error)
}

// Report says what one invocation did. Two invocations for the same event give
// reports whose sum is what one would have done (handlers are idempotent).
type Report struct {
	Skipped         string // why nothing was done ("not a segment key", "not committed", ...)
	Merges          int    // index replacements committed by merges
	BytesMerged     int64  // input bytes read by committed merges
	Cleans          int    // index replacements committed by key compaction
	BytesCleaned    int64  // input bytes read by committed key compaction
	RecordsRemoved  int64  // records key compaction removed
	BytesWritten    int64  // bytes of committed output objects
	EntriesReplaced int    // index entries replaced
	EntriesWritten  int    // index entries written
	LogStartMoves   int    // partitions whose log start offset moved
	ObjectsDeleted  int    // objects deleted by GC
	Conflicts       int    // replacements (merges, clean pieces) that lost to a concurrent change
}

// Add sums o into r (Skipped is kept if set).
func (r *Report) Add(o Report) {
	if r.Skipped == "" {
		r.Skipped = o.Skipped
	}
	r.Merges += o.Merges
	r.BytesMerged += o.BytesMerged
	r.Cleans += o.Cleans
	r.BytesCleaned += o.BytesCleaned
	r.RecordsRemoved += o.RecordsRemoved
	r.BytesWritten += o.BytesWritten
	r.EntriesReplaced += o.EntriesReplaced
	r.EntriesWritten += o.EntriesWritten
	r.LogStartMoves += o.LogStartMoves
	r.ObjectsDeleted += o.ObjectsDeleted
	r.Conflicts += o.Conflicts
}

// Compactor plans and runs merges, key compaction, retention and garbage
// collection. Safe for concurrent use; every method is idempotent.
type Compactor struct {
	meta  Metastore
	store objstore.Store
	cfg   Config
	log   *slog.Logger
	segs  *segmentCache // nil: off
}

// New returns a compactor over a metastore and the bucket segments live in. Zero
// Config fields take their defaults; log may be nil.
func New(meta Metastore, store objstore.Store, cfg Config, log *slog.Logger) (*Compactor, error) {
	if meta == nil || store == nil {
		return nil, errors.New("compactor: a metastore and a store are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Compactor{meta: meta, store: store, cfg: cfg.withDefaults(), log: log}
	if c.cfg.SegmentCacheBytes > 0 {
		c.segs = newSegmentCache(store, c.cfg.SegmentCacheBytes, c.cfg.SegmentCacheMaxObject)
	}
	return c, nil
}

// Skip reasons of OnSegment.
const (
	SkipNotSegment   = "not a segment key"
	SkipNotCommitted = "not committed"
	SkipCondemned    = "condemned by garbage collection"
)

// OnSegment handles the arrival of one object (its key, already URL-unescaped):
// keys that are not segments are skipped; a segment not committed within
// CommitWait is skipped (an orphan never commits; GC collects it); otherwise the
// partitions with chunks in it get their merges, key compaction and retention.
func (c *Compactor) OnSegment(ctx context.Context, key string) (Report, error) {
	id, err := objectlog.ParseSegmentKey(key)
	if err != nil {
		return Report{Skipped: SkipNotSegment}, nil
	}
	rec, err := c.waitCommitted(ctx, id)
	if err != nil {
		return Report{}, err
	}
	switch {
	case rec == nil:
		return Report{Skipped: SkipNotCommitted}, nil
	case rec.Condemned || rec.Deleted:
		return Report{Skipped: SkipCondemned}, nil
	}
	if rec.Size <= c.cfg.SegmentCacheMaxObject {
		// Small segments, small chunks: read the inputs whole (shared.go).
		ctx = withWholeReads(ctx)
	}
	parts, err := c.partitionsOf(ctx, key, rec)
	if err != nil {
		return Report{}, err
	}
	topics, err := c.topics(ctx, parts)
	if err != nil {
		return Report{}, err
	}
	var jobs []job
	for _, p := range parts {
		if t, ok := topics[p.topic]; ok && p.partition < t.partitions {
			p.name = t.name
			jobs = append(jobs, job{p, t.pol})
		}
	}
	return c.run(ctx, jobs)
}

// waitCommitted returns the segment's record once committed, polling while an
// upload intent says a commit may still come, for at most CommitWait. nil: it is
// not committed (and, with no intent, never will be).
func (c *Compactor) waitCommitted(ctx context.Context, id objectlog.SegmentID) (*pb.SegmentRecord, error) {
	deadline := time.Now().Add(c.cfg.CommitWait)
	pause := 20 * time.Millisecond
	for {
		resp, err := c.meta.Segment(ctx, &pb.SegmentRequest{SegmentId: id[:]})
		if err != nil {
			return nil, fmt.Errorf("compactor: segment %s: %w", id, err)
		}
		if resp.Record != nil || resp.Intent == nil || time.Now().Add(pause).After(deadline) {
			return resp.Record, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		pause = min(2*pause, time.Second)
	}
}

// partitionsOf lists the partitions a committed segment holds data of: an
// ingestion segment's chunks that were indexed, or a compaction output's one
// partition (read from its own index: its record carries no chunk list).
func (c *Compactor) partitionsOf(ctx context.Context, key string, rec *pb.SegmentRecord) ([]partRef, error) {
	var out []partRef
	seen := map[partRef]bool{}
	add := func(topic []byte, partition int32) {
		var p partRef
		if len(topic) != len(p.topic) {
			return
		}
		copy(p.topic[:], topic)
		p.partition = partition
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if rec.Result != nil {
		for _, ch := range rec.Result.Chunks {
			if ch.Error == pb.ErrorCode_NONE {
				add(ch.TopicId, ch.Partition)
			}
		}
		return out, nil
	}
	if rec.Level == 0 || rec.Size <= 0 || rec.References == 0 {
		return nil, nil
	}
	ix, err := objectlog.ReadIndex(ctx, c.store, key, rec.Size)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("compactor: read index of %s: %w", key, err)
	}
	for _, ch := range ix.Chunks {
		add(ch.TopicID[:], ch.Partition)
	}
	return out, nil
}

// topicInfo is what the compactor needs of a topic.
type topicInfo struct {
	name       string
	partitions int32
	pol        policy
}

// topics describes the topics of parts (nil parts: every topic).
func (c *Compactor) topics(ctx context.Context, parts []partRef) (map[objectlog.TopicID]topicInfo, error) {
	req := &pb.DescribeTopicsRequest{}
	seen := map[objectlog.TopicID]bool{}
	for _, p := range parts {
		if !seen[p.topic] {
			seen[p.topic] = true
			req.Topics = append(req.Topics, &pb.TopicRef{TopicId: p.topic[:]})
		}
	}
	out := map[objectlog.TopicID]topicInfo{}
	if parts != nil && len(req.Topics) == 0 {
		return out, nil
	}
	resp, err := c.meta.DescribeTopics(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("compactor: describe topics: %w", err)
	}
	for _, r := range resp.Results {
		t := r.Topic
		if r.Error != pb.ErrorCode_NONE || t == nil || len(t.TopicId) != 16 {
			continue // deleted meanwhile
		}
		out[objectlog.TopicID(t.TopicId)] = topicInfo{name: t.Name, partitions: t.Partitions, pol: parsePolicy(t.Configs)}
	}
	return out, nil
}

// Sweep does the time-based work for every partition (retention, merges that are
// due by age, key compaction) and collects garbage.
func (c *Compactor) Sweep(ctx context.Context) (Report, error) {
	topics, err := c.topics(ctx, nil)
	if err != nil {
		return Report{}, err
	}
	var jobs []job
	for id, t := range topics {
		for i := range t.partitions {
			jobs = append(jobs, job{partRef{topic: id, name: t.name, partition: i}, t.pol})
		}
	}
	rep, err := c.run(ctx, jobs)
	gc, gcErr := c.CollectGarbage(ctx)
	rep.Add(gc)
	return rep, errors.Join(err, gcErr)
}

type job struct {
	p   partRef
	pol policy
}

// run works on partitions, Concurrency at once; every partition is tried and the
// errors are joined.
func (c *Compactor) run(ctx context.Context, jobs []job) (Report, error) {
	var (
		mu   sync.Mutex
		rep  Report
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, c.cfg.Concurrency)
	for _, j := range jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return rep, errors.Join(append(errs, ctx.Err())...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var r Report
			err := c.partition(ctx, j.p, j.pol, &r)
			mu.Lock()
			defer mu.Unlock()
			rep.Add(r)
			if err != nil && !errors.Is(err, errGone) {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	return rep, errors.Join(errs...)
}

// maxMergeRounds bounds how often one call replans a partition's merges (a level-0
// merge can make a level-1 run due).
const maxMergeRounds = 4

// partition does what is due in one partition: retention, merges, key compaction.
func (c *Compactor) partition(ctx context.Context, p partRef, pol policy, rep *Report) error {
	if pol.delete {
		if err := c.retain(ctx, p, pol, rep); err != nil {
			return err
		}
	}
	for range maxMergeRounds {
		head, err := c.head(ctx, p)
		if err != nil {
			return err
		}
		tail, err := c.loadTail(ctx, p, head)
		if err != nil {
			return err
		}
		runs := planMerges(tail, pol, &c.cfg, c.cfg.Now().UnixMilli())
		if len(runs) == 0 {
			break
		}
		before := rep.Merges
		for _, r := range runs {
			if err := c.merge(ctx, p, r, rep); err != nil {
				return err
			}
		}
		if rep.Merges == before {
			break // every one lost a race: the winner does the rest
		}
	}
	if pol.compact {
		return c.clean(ctx, p, pol, rep)
	}
	return nil
}
