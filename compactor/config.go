package compactor

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Config tunes the compactor. Zero fields take their DefaultConfig values; Validate
// reports every problem at once.
type Config struct {
	// CommitWait is how long OnSegment waits for a segment that is not committed
	// yet (the object-created event can beat the commit).
	CommitWait time.Duration
	// GCGrace is how long an unreferenced object stays readable after compaction or
	// retention stopped referencing it (fetches in flight may still read it).
	GCGrace time.Duration
	// IntentTTL is the upload intent recorded before an output is PUT: an output
	// whose commit does not happen within it is collected by GC (and can no longer
	// be committed). It must cover writing the largest output and committing it.
	IntentTTL time.Duration

	// L0MaxEntries: a run of consecutive ingestion (level 0) entries of a partition
	// is merged into a level-1 object once it has this many entries.
	L0MaxEntries int
	// L0MaxAge: ... or once its oldest entry's segment was written this long ago
	// (the segment id's time, the agent's clock; a marker's own timestamp).
	L0MaxAge time.Duration
	// L1MaxBytes caps the size of a level-1 object: min(segment.bytes, L1MaxBytes).
	// A level-0 run of that many bytes is merged at once.
	L1MaxBytes int64
	// L1MaxEntries: a run of consecutive level-1 entries is merged into a level-2
	// object (sized by segment.bytes) once it has this many entries, or holds
	// segment.bytes, or its oldest object was written segment.ms ago.
	L1MaxEntries int
	// BlockBytes bounds the index entries of an output: each is a run of whole
	// batches of at most this many bytes (a larger batch is a block alone), so a
	// fetch reads one block per GET.
	BlockBytes int64
	// MaxMergeEntries bounds the inputs of one index replacement.
	MaxMergeEntries int
	// SplitAtGaps cuts key compaction's output entries at every offset gap (where
	// emptied batches were dropped), so each entry's batches cover its offsets
	// exactly. Off (the default), an entry may span gaps, as agents read them, and
	// a heavily compacted log needs far fewer entries.
	SplitAtGaps bool

	// KeyMapBytes bounds the memory of key compaction's map of latest offsets per
	// key (about 48 bytes per key); a pass cleans only as far as the map reached.
	KeyMapBytes int64
	// MaxBatchBytes bounds a batch's decompressed records when key compaction reads
	// them; a larger batch stops the pass with an error.
	MaxBatchBytes int

	// ReadConcurrency is how many ranged GETs of inputs run ahead of the merge;
	// ReadBytes bounds one GET (entries adjacent in one object share a GET).
	ReadConcurrency int
	ReadBytes       int64
	// SpillBytes is how much of an output is kept in memory before it is spooled
	// to a temporary file in TempDir ("" is os.TempDir()).
	SpillBytes int64
	TempDir    string
	// SegmentCacheBytes bounds the small ingestion segments a compactor keeps
	// whole in memory (LRU), so the merges of a segment's partitions read it with
	// one GET rather than one each; SegmentCacheMaxObject is the largest segment
	// kept (a call whose triggering segment is larger reads by range). Negative
	// SegmentCacheBytes turns the cache off.
	SegmentCacheBytes     int64
	SegmentCacheMaxObject int64

	// Concurrency is how many partitions one call works on at once.
	Concurrency int
	// MaxPlanEntries bounds the index entries read to plan one partition.
	MaxPlanEntries int
	// GCLimit is how many objects one ClaimGarbage returns; GCRounds bounds the
	// claims of one collection.
	GCLimit  int
	GCRounds int

	// Now is the clock (nil: time.Now). Tests move it.
	Now func() time.Time
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		CommitWait:            10 * time.Second,
		GCGrace:               10 * time.Minute,
		IntentTTL:             30 * time.Minute,
		L0MaxEntries:          32,
		L0MaxAge:              time.Minute,
		L1MaxBytes:            64 << 20,
		L1MaxEntries:          256,
		BlockBytes:            4 << 20,
		MaxMergeEntries:       10_000,
		KeyMapBytes:           64 << 20,
		MaxBatchBytes:         128 << 20,
		ReadConcurrency:       8,
		ReadBytes:             16 << 20,
		SpillBytes:            64 << 20,
		SegmentCacheBytes:     64 << 20,
		SegmentCacheMaxObject: 1 << 20,
		Concurrency:           8,
		MaxPlanEntries:        200_000,
		GCLimit:               1000,
		GCRounds:              100,
		Now:                   time.Now,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	fill := func(v *int64, dv int64) {
		if *v == 0 {
			*v = dv
		}
	}
	fillInt := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	fillDur := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	fillDur(&c.CommitWait, d.CommitWait)
	fillDur(&c.GCGrace, d.GCGrace)
	fillDur(&c.IntentTTL, d.IntentTTL)
	fillInt(&c.L0MaxEntries, d.L0MaxEntries)
	fillDur(&c.L0MaxAge, d.L0MaxAge)
	fill(&c.L1MaxBytes, d.L1MaxBytes)
	fillInt(&c.L1MaxEntries, d.L1MaxEntries)
	fill(&c.BlockBytes, d.BlockBytes)
	fillInt(&c.MaxMergeEntries, d.MaxMergeEntries)
	fill(&c.KeyMapBytes, d.KeyMapBytes)
	fillInt(&c.MaxBatchBytes, d.MaxBatchBytes)
	fillInt(&c.ReadConcurrency, d.ReadConcurrency)
	fill(&c.ReadBytes, d.ReadBytes)
	fill(&c.SpillBytes, d.SpillBytes)
	fill(&c.SegmentCacheBytes, d.SegmentCacheBytes)
	fill(&c.SegmentCacheMaxObject, d.SegmentCacheMaxObject)
	fillInt(&c.Concurrency, d.Concurrency)
	fillInt(&c.MaxPlanEntries, d.MaxPlanEntries)
	fillInt(&c.GCLimit, d.GCLimit)
	fillInt(&c.GCRounds, d.GCRounds)
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Validate reports every problem with c at once (after defaults: zero is fine).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("compactor: "+format, args...)) }
	for name, d := range map[string]time.Duration{"CommitWait": c.CommitWait, "GCGrace": c.GCGrace, "IntentTTL": c.IntentTTL, "L0MaxAge": c.L0MaxAge} {
		if d < 0 {
			bad("%s %v is negative", name, d)
		}
	}
	for name, n := range map[string]int64{
		"L0MaxEntries": int64(c.L0MaxEntries), "L1MaxBytes": c.L1MaxBytes, "L1MaxEntries": int64(c.L1MaxEntries),
		"BlockBytes": c.BlockBytes, "MaxMergeEntries": int64(c.MaxMergeEntries), "KeyMapBytes": c.KeyMapBytes,
		"MaxBatchBytes": int64(c.MaxBatchBytes), "ReadConcurrency": int64(c.ReadConcurrency), "ReadBytes": c.ReadBytes,
		"SpillBytes": c.SpillBytes, "Concurrency": int64(c.Concurrency), "MaxPlanEntries": int64(c.MaxPlanEntries),
		"GCLimit": int64(c.GCLimit), "GCRounds": int64(c.GCRounds), "SegmentCacheMaxObject": c.SegmentCacheMaxObject,
	} {
		if n < 0 {
			bad("%s %d is negative", name, n)
		}
	}
	if c.SegmentCacheBytes > 0 && c.SegmentCacheBytes < c.SegmentCacheMaxObject {
		bad("SegmentCacheBytes %d under SegmentCacheMaxObject %d: the cache could keep nothing", c.SegmentCacheBytes, c.SegmentCacheMaxObject)
	}
	if c.BlockBytes > math.MaxInt32 {
		bad("BlockBytes %d over 2 GiB", c.BlockBytes)
	}
	if c.MaxMergeEntries > maxReplaceEntries {
		bad("MaxMergeEntries %d over the metastore's %d", c.MaxMergeEntries, maxReplaceEntries)
	}
	if c.GCLimit > maxGarbagePerClaim {
		bad("GCLimit %d over the metastore's %d", c.GCLimit, maxGarbagePerClaim)
	}
	if c.KeyMapBytes > 0 && c.KeyMapBytes < keyMapEntryBytes {
		bad("KeyMapBytes %d holds no key", c.KeyMapBytes)
	}
	return errors.Join(errs...)
}

// The metastore's bounds on one command.
const (
	maxReplaceEntries  = 100_000
	maxGarbagePerClaim = 10_000
	maxLookupEntries   = 10_000
)

// Levels: 0 is an ingestion chunk, 1 a merge of level-0 runs, 2 (the top) a merge of
// level-1 runs or a key compaction's output.
const (
	levelIngest = 0
	levelL1     = 1
	levelTop    = 2
)

// policy is what the compactor needs of a topic's configs, with Kafka's defaults
// for what is not set. Durations are in milliseconds as Kafka gives them.
type policy struct {
	compact, delete bool
	retentionMs     int64 // -1: no time limit
	retentionBytes  int64 // -1: no size limit
	segmentBytes    int64
	segmentMs       int64
	dirtyRatio      float64
	minLagMs        int64
	maxLagMs        int64
	deleteRetention int64 // delete.retention.ms
}

// Kafka's topic defaults.
const (
	defaultRetentionMs     = 7 * 24 * 3600 * 1000
	defaultSegmentBytes    = 1 << 30
	defaultSegmentMs       = 7 * 24 * 3600 * 1000
	defaultDirtyRatio      = 0.5
	defaultDeleteRetention = 24 * 3600 * 1000
)

// parsePolicy reads a topic's configs. A value that does not parse (the metastore
// validates them, so only a newer metastore's could) takes the default.
func parsePolicy(configs map[string]string) policy {
	p := policy{
		delete:          true,
		retentionMs:     defaultRetentionMs,
		retentionBytes:  -1,
		segmentBytes:    defaultSegmentBytes,
		segmentMs:       defaultSegmentMs,
		dirtyRatio:      defaultDirtyRatio,
		maxLagMs:        math.MaxInt64,
		deleteRetention: defaultDeleteRetention,
	}
	if v, ok := configs["cleanup.policy"]; ok {
		p.delete, p.compact = false, false
		for item := range strings.SplitSeq(v, ",") {
			switch strings.TrimSpace(item) {
			case "delete":
				p.delete = true
			case "compact":
				p.compact = true
			}
		}
	}
	num := func(key string, dst *int64, lo int64) {
		if v, ok := configs[key]; ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= lo {
				*dst = n
			}
		}
	}
	num("retention.ms", &p.retentionMs, -1)
	num("retention.bytes", &p.retentionBytes, -1)
	num("segment.bytes", &p.segmentBytes, 1)
	num("segment.ms", &p.segmentMs, 1)
	num("min.compaction.lag.ms", &p.minLagMs, 0)
	num("max.compaction.lag.ms", &p.maxLagMs, 1)
	num("delete.retention.ms", &p.deleteRetention, 0)
	if p.retentionMs < -1 {
		p.retentionMs = -1
	}
	if v, ok := configs["min.cleanable.dirty.ratio"]; ok {
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f >= 0 && f <= 1 {
			p.dirtyRatio = f
		}
	}
	return p
}

// l1Target is the size of a level-1 object; l2Target of a level-2 one.
func (p policy) l1Target(cfg *Config) int64 { return min(p.segmentBytes, cfg.L1MaxBytes) }
func (p policy) l2Target() int64            { return p.segmentBytes }
