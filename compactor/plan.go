package compactor

import (
	"encoding/binary"
	"math"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// Planning: pure functions from a partition's index entries, head, topic policy and
// the time to the work that is due. They read nothing and write nothing, so they
// are table-tested on their own (plan_test.go).

// entryTime is when an entry's data arrived, in Unix ms, as merge ages count it:
// the creation time its segment id carries (the writer's clock, never a producer's
// timestamp), or a marker's own timestamp (markers have no segment).
func entryTime(e *pb.IndexEntry) int64 {
	if e.Marker != 0 || len(e.SegmentId) != 16 {
		return e.MaxTimestamp
	}
	return int64(binary.BigEndian.Uint64(e.SegmentId[:8]))
}

// mergeClass says which merge an entry can be an input of: 0 for ingestion chunks
// and markers (level 0), 1 for level-1 entries, -1 for neither (the top level and
// anything key compaction wrote).
func mergeClass(e *pb.IndexEntry) int {
	switch {
	case e.CleanedMs != 0:
		return -1
	case e.Level == levelIngest:
		return 0
	case e.Level == levelL1:
		return 1
	}
	return -1
}

// run is one planned merge: consecutive entries of one class, replaced by one
// output object.
type run struct {
	entries []*pb.IndexEntry
	level   int32 // of the output
	bytes   int64
	reason  string
}

// planMerges finds the merges due among entries (in offset order, from anywhere in
// the partition): maximal runs of contiguous entries of one merge class, cut into
// pieces no larger than the class's target; a piece is due when full, when it has
// enough entries, or when its oldest entry is old enough. Level-1 pieces must span
// at least two objects (rewriting one object alone gains nothing), and are left to
// key compaction on compacted topics.
func planMerges(entries []*pb.IndexEntry, pol policy, cfg *Config, nowMs int64) []run {
	var out []run
	for i := 0; i < len(entries); {
		class := mergeClass(entries[i])
		if class < 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(entries) && mergeClass(entries[j]) == class && entries[j].BaseOffset == entries[j-1].LastOffset+1 {
			j++
		}
		target := pol.l1Target(cfg)
		if class == 1 {
			if pol.compact {
				// Key compaction takes level 1 to the top; a merge racing it
				// would only make one of them lose.
				i = j
				continue
			}
			target = pol.l2Target()
		}
		for _, p := range pieces(entries[i:j], target, cfg.MaxMergeEntries) {
			if r, ok := duePiece(p, class, pol, cfg, nowMs); ok {
				out = append(out, r)
			}
		}
		i = j
	}
	return out
}

type piece struct {
	entries []*pb.IndexEntry
	bytes   int64
	full    bool // cut because the next entry would not fit
}

// pieces cuts a run greedily into pieces of at most target bytes and maxEntries
// entries (an entry larger than target is a piece alone).
func pieces(run []*pb.IndexEntry, target int64, maxEntries int) []piece {
	var out []piece
	cur := piece{}
	for _, e := range run {
		if len(cur.entries) > 0 && (cur.bytes+e.Length > target || len(cur.entries) >= maxEntries) {
			cur.full = true
			out = append(out, cur)
			cur = piece{}
		}
		cur.entries = append(cur.entries, e)
		cur.bytes += e.Length
	}
	if len(cur.entries) > 0 {
		cur.full = cur.bytes >= target || len(cur.entries) >= maxEntries
		out = append(out, cur)
	}
	return out
}

func duePiece(p piece, class int, pol policy, cfg *Config, nowMs int64) (run, bool) {
	oldest := int64(math.MaxInt64)
	segs := map[string]bool{}
	for _, e := range p.entries {
		oldest = min(oldest, entryTime(e))
		if e.Marker == 0 {
			segs[string(e.SegmentId)] = true
		}
	}
	r := run{entries: p.entries, bytes: p.bytes}
	if class == 0 {
		r.level = levelL1
		switch {
		case p.full:
			r.reason = "level 0 full"
		case len(p.entries) >= cfg.L0MaxEntries:
			r.reason = "level 0 entries"
		case nowMs-oldest >= cfg.L0MaxAge.Milliseconds():
			r.reason = "level 0 age"
		}
		return r, r.reason != ""
	}
	r.level = levelTop
	if len(segs) < 2 {
		return r, false
	}
	switch {
	case p.full:
		r.reason = "level 1 full"
	case len(p.entries) >= cfg.L1MaxEntries:
		r.reason = "level 1 entries"
	case nowMs-oldest >= pol.segmentMs:
		r.reason = "level 1 age"
	}
	return r, r.reason != ""
}

// planRetention returns where the log start offset should move (head's log start
// when nowhere): past the leading entries whose records are all older than
// retention.ms, and past the oldest entries while what remains still holds
// retention.bytes. entries start at the log start; when they do not reach the high
// watermark their sum understates the size, which only deletes less. Never past
// the last stable offset: an open transaction's data stays with its marker.
func planRetention(entries []*pb.IndexEntry, head *pb.PartitionHead, pol policy, nowMs int64) int64 {
	start := head.GetLogStartOffset()
	target := start
	if pol.retentionMs >= 0 {
		for _, e := range entries {
			if e.MaxTimestamp >= nowMs-pol.retentionMs {
				break
			}
			target = max(target, e.LastOffset+1)
		}
	}
	if pol.retentionBytes >= 0 {
		var total int64
		for _, e := range entries {
			total += e.Length
		}
		for _, e := range entries {
			if total-e.Length < pol.retentionBytes {
				break
			}
			total -= e.Length
			target = max(target, e.LastOffset+1)
		}
	}
	return min(target, head.StableOffset(), head.GetNextOffset())
}

// Key compaction's clean bookkeeping. An entry's cleaned_ms is when key compaction
// first covered its data; its tombstones and transaction markers may go once
// delete.retention.ms has passed since. An entry whose horizon passed in a pass
// has had them removed by that pass, so its output carries settledMs: "cleaned
// long enough ago, nothing left waiting".
const (
	settledMs = 1
	// wildcard is the tag of settled data: it fits in any output entry.
	wildcard = -1
)

// cleanTag is the cleaned_ms an input entry's data carries into a pass's output:
// now for never-cleaned data, wildcard for settled data, else its own.
func cleanTag(e *pb.IndexEntry, nowMs int64, pol policy) int64 {
	switch {
	case e.CleanedMs == 0:
		return nowMs
	case horizonPassed(e, nowMs, pol):
		return wildcard
	}
	return e.CleanedMs
}

// horizonPassed reports whether an entry's tombstones and markers may go.
func horizonPassed(e *pb.IndexEntry, nowMs int64, pol policy) bool {
	return e.CleanedMs != 0 && nowMs-e.CleanedMs >= pol.deleteRetention
}

// cleanPlan is a key compaction pass over [log start, cleanable end).
type cleanPlan struct {
	entries    []*pb.IndexEntry // wholly below the cleanable end, from the log start
	firstDirty int              // index of the first never-cleaned entry; len(entries) if none
	end        int64            // the cleanable end
	reason     string           // why it is due; "" when it is not
}

// planClean decides whether a clean pass is due. entries run from the log start.
// The cleanable end is the least of the last stable offset, the base of the first
// entry with records newer than min.compaction.lag.ms, the base of the newest
// entry (the active tail is never cleaned), and the base of the trailing run of
// level-0 entries (merges take those next: a pass covering them would race the
// merge, and lose, or make it lose, every time). It is due when never-cleaned bytes are
// at least min.cleanable.dirty.ratio of the range, when a never-cleaned entry is
// older than max.compaction.lag.ms, or when cleaned entries reached their
// tombstone horizon.
func planClean(entries []*pb.IndexEntry, head *pb.PartitionHead, pol policy, nowMs int64) cleanPlan {
	p := cleanPlan{end: head.StableOffset()}
	if len(entries) == 0 {
		return p
	}
	p.end = min(p.end, entries[len(entries)-1].BaseOffset)
	for i := len(entries) - 1; i >= 0 && mergeClass(entries[i]) == 0; i-- {
		p.end = min(p.end, entries[i].BaseOffset)
	}
	for _, e := range entries {
		if e.MaxTimestamp > nowMs-pol.minLagMs {
			p.end = min(p.end, e.BaseOffset)
			break
		}
	}
	n := 0
	for n < len(entries) && entries[n].LastOffset < p.end {
		n++
	}
	p.entries = entries[:n]
	p.firstDirty = n
	var dirty, total int64
	old, horizon := false, false
	for i, e := range p.entries {
		total += e.Length
		if e.CleanedMs == 0 {
			if p.firstDirty == n {
				p.firstDirty = i
			}
			dirty += e.Length
			if pol.maxLagMs < math.MaxInt64 && e.MaxTimestamp < nowMs-pol.maxLagMs {
				old = true
			}
		} else if e.CleanedMs > settledMs && horizonPassed(e, nowMs, pol) {
			horizon = true
		}
	}
	hasDirty := p.firstDirty < n
	switch {
	case hasDirty && (total == 0 || float64(dirty) >= pol.dirtyRatio*float64(total)):
		p.reason = "dirty ratio"
	case old:
		p.reason = "max compaction lag"
	case horizon:
		p.reason = "delete horizon"
	}
	return p
}
