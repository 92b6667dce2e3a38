package compactor

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// expectCleaned is what a clean pass over [.., end) leaves of recs: below end the
// latest record of each non-null key (and nothing of aborted transactions, which
// the caller leaves out of recs), at and past end everything.
func expectCleaned(recs []logRec, end int64, dropTombstones bool) []logRec {
	latest := map[string]int64{}
	for _, r := range recs {
		if r.offset < end && r.key != nil && !r.control {
			latest[string(r.key)] = r.offset
		}
	}
	var out []logRec
	for _, r := range recs {
		switch {
		case r.offset >= end || r.control:
			out = append(out, r)
		case r.key == nil || latest[string(r.key)] != r.offset:
		case r.value == nil && dropTombstones:
		default:
			out = append(out, r)
		}
	}
	return out
}

// from returns the records of recs at or past offset.
func from(recs []logRec, offset int64) []logRec {
	var out []logRec
	for _, r := range recs {
		if r.offset >= offset {
			out = append(out, r)
		}
	}
	return out
}

func sameRecs(t *testing.T, what string, got, want []logRec) {
	t.Helper()
	str := func(rs []logRec) string {
		var b strings.Builder
		for _, r := range rs {
			fmt.Fprintf(&b, "%s ", r)
		}
		return b.String()
	}
	if str(got) != str(want) {
		t.Fatalf("%s:\n got %s\nwant %s", what, str(got), str(want))
	}
}

// cleanConfig: every level-0 run is merged at once (key compaction takes only
// what merges left behind), into one block, so that the newest entry, which no
// pass cleans, is exactly the last segment produced.
func cleanConfig(c *Config) {
	c.L0MaxEntries = 1
	c.BlockBytes = 64 << 10
}

// seal produces a last segment after what a test produced and sweeps twice: the
// first sweep merges the test's segments, the second merges the last one, after
// which they are the newest entry no longer, and cleans them. It returns the two
// sweeps' reports added up and the last segment's first offset (the cleanable end).
func (h *harness) seal(topic objectlog.TopicID, recs ...rec) (Report, int64) {
	h.t.Helper()
	rep := h.sweep()
	if len(recs) == 0 {
		recs = []rec{kv(fmt.Sprint("tail", len(h.keys)), "x", time.Now().UnixMilli()-1000)}
	}
	_, resp := h.produce(topic, batch{recs: recs})
	rep.Add(h.sweep())
	return rep, resp.Chunks[0].BaseOffset
}

func TestKeyCompaction(t *testing.T) {
	h := newHarness(t, withConfig(cleanConfig))
	topic := h.createTopic("kv", 1, map[string]string{"cleanup.policy": "compact", "delete.retention.ms": "3600000"})
	ts := time.Now().UnixMilli() - 1000
	for i := range 10 {
		var recs []rec
		for k := range 5 {
			switch {
			case k == 3 && i == 6:
				recs = append(recs, kv("k3", "", ts)) // the last word on k3: a tombstone
			case k == 3 && i > 6:
			case k == 4 && i == 2:
				recs = append(recs, kv("k4", "", ts)) // a tombstone overwritten later
			default:
				recs = append(recs, kv(fmt.Sprintf("k%d", k), fmt.Sprintf("v%d", i), ts+int64(i)))
			}
		}
		recs = append(recs, kv("", "no key", ts))
		h.produce(topic, batch{recs: recs[:3], opts: batchOpts{codec: codecs[i%len(codecs)]}}, batch{recs: recs[3:], opts: batchOpts{codec: objectlog.CodecZstd}})
	}
	_, before := h.fetch(topic, 0)

	rep, end := h.seal(topic)
	if rep.Cleans != 1 || rep.RecordsRemoved == 0 || rep.Merges != 2 {
		t.Fatalf("first pass: %+v", rep)
	}
	_, after := h.fetch(topic, 0)
	before = append(before, from(after, end)...) // the last segment's records
	sameRecs(t, "after the first pass", after, expectCleaned(before, end, false))
	nowMs := h.now().UnixMilli()
	for _, e := range h.entries(topic, 0) {
		if e.BaseOffset >= end {
			continue
		}
		if e.Level != levelTop || e.CleanedMs < nowMs-60_000 || e.CleanedMs > nowMs {
			t.Fatalf("cleaned entry %v", e)
		}
	}
	if rep := h.onSegment(h.keys[len(h.keys)-1]); rep.Cleans != 0 || rep.Merges != 0 {
		t.Fatalf("second invocation: %+v", rep)
	}

	// Before delete.retention.ms nothing more happens; after it the tombstone goes.
	h.advance(59 * time.Minute)
	if rep := h.sweep(); rep.Cleans != 0 {
		t.Fatalf("pass before the horizon: %+v", rep)
	}
	h.advance(time.Minute)
	if rep := h.sweep(); rep.Cleans != 1 || rep.RecordsRemoved != 1 {
		t.Fatalf("pass at the horizon: %+v", rep)
	}
	_, final := h.fetch(topic, 0)
	sameRecs(t, "after the horizon", final, expectCleaned(before, end, true))
	for _, e := range h.entries(topic, 0) {
		if e.BaseOffset < end && e.CleanedMs != settledMs {
			t.Fatalf("entry after the horizon pass: %v", e)
		}
	}
	if rep := h.sweep(); rep.Cleans != 0 || rep.Merges != 0 {
		t.Fatalf("pass after the horizon pass: %+v", rep)
	}
}

func TestKeyCompactionLags(t *testing.T) {
	h := newHarness(t, withConfig(cleanConfig))
	t.Run("min", func(t *testing.T) {
		topic := h.createTopic("min-lag", 1, map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"})
		now := time.Now().UnixMilli()
		old := now - 3*3600_000 // older than min.compaction.lag
		for i := range 3 {
			h.produce(topic, batch{recs: []rec{kv("a", fmt.Sprint(i), old), kv("b", fmt.Sprint(i), old)}})
		}
		h.sweep() // one level-1 block of old records
		for i := 3; i < 6; i++ {
			h.produce(topic, batch{recs: []rec{kv("a", fmt.Sprint(i), now), kv("b", fmt.Sprint(i), now)}})
		}
		_, before := h.fetch(topic, 0)
		recent := h.entries(topic, 0)[1].BaseOffset
		// A block of recent records (within min.compaction.lag), then the tail: the
		// old block is cleaned, the recent one, mostly dirty, is not.
		if rep, _ := h.seal(topic); rep.Cleans != 1 {
			t.Fatalf("%+v", rep)
		}
		_, after := h.fetch(topic, 0)
		sameRecs(t, "min.compaction.lag", after, expectCleaned(append(before, from(after, before[len(before)-1].offset+1)...), recent, false))
		h.advance(time.Hour)
		if rep := h.sweep(); rep.Cleans != 1 {
			t.Fatalf("recent block past min.compaction.lag not cleaned: %+v", rep)
		}
	})
	t.Run("max", func(t *testing.T) {
		topic := h.createTopic("max-lag", 1, map[string]string{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "1", "max.compaction.lag.ms": "7200000"})
		now := h.now().UnixMilli()
		for i := range 3 {
			h.produce(topic, batch{recs: []rec{kv("a", fmt.Sprint(i), now)}})
		}
		h.sweep()
		for i := 3; i < 6; i++ {
			h.produce(topic, batch{recs: []rec{kv("a", fmt.Sprint(i), now)}})
		}
		// The first block is cleaned while all the range is dirty; then the second is
		// dirty, the range not wholly: with a ratio of 1 it waits for max.compaction.lag.
		if rep, _ := h.seal(topic); rep.Cleans != 1 {
			t.Fatalf("%+v", rep)
		}
		h.advance(90 * time.Minute)
		if rep := h.sweep(); rep.Cleans != 0 {
			t.Fatalf("due with the dirty ratio unmet and max lag not reached: %+v", rep)
		}
		h.advance(time.Hour)
		if rep := h.sweep(); rep.Cleans != 1 {
			t.Fatalf("max.compaction.lag did not trigger: %+v", rep)
		}
	})
}

func TestKeyCompactionTransactions(t *testing.T) {
	h := newHarness(t, withConfig(cleanConfig))
	topic := h.createTopic("txkv", 1, map[string]string{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "60000"})
	ts := time.Now().UnixMilli() - 1000
	h.produce(topic, batch{recs: []rec{kv("k1", "v1", ts), kv("k2", "v1", ts)}})
	a := h.txnProducer("a")
	h.add(a, topic, 0)
	h.produce(topic, batch{recs: []rec{kv("k1", "A", ts)}, opts: a.opts()})
	h.end(a, true)
	b := h.txnProducer("b")
	h.add(b, topic, 0)
	h.produce(topic, batch{recs: []rec{kv("k2", "B", ts), kv("k3", "B", ts)}, opts: b.opts()})
	h.end(b, false)
	h.produce(topic, batch{recs: []rec{kv("k9", "x", ts)}})
	hwm := h.head(topic, 0).NextOffset
	aborted := func() []*pb.AbortedTxn {
		return h.lookup(&pb.LookupRequest{TopicId: topic[:], Offset: 0, AbortedUpto: hwm}).Aborted
	}
	if ab := aborted(); len(ab) != 1 {
		t.Fatalf("aborted before: %v", ab)
	}

	summary := func() string {
		_, recs := h.fetch(topic, 0)
		var parts []string
		for _, r := range recs {
			if r.control {
				parts = append(parts, fmt.Sprintf("%d:marker", r.offset))
				continue
			}
			parts = append(parts, fmt.Sprintf("%d:%s=%s", r.offset, r.key, r.value))
		}
		return strings.Join(parts, " ")
	}
	// Offsets: 0 k1=v1, 1 k2=v1, 2 k1=A, 3 commit, 4 k2=B, 5 k3=B, 6 abort, 7 k9.
	if got, want := summary(), "0:k1=v1 1:k2=v1 2:k1=A 3:marker 4:k2=B 5:k3=B 6:marker 7:k9=x"; got != want {
		t.Fatalf("before:\n got %s\nwant %s", got, want)
	}
	if rep, _ := h.seal(topic, kv("tail", "x", ts)); rep.Cleans != 1 {
		t.Fatalf("%+v", rep)
	}
	// The aborted records go; the committed one wins k1; markers stay (first pass).
	if got, want := summary(), "1:k2=v1 2:k1=A 3:marker 6:marker 7:k9=x 8:tail=x"; got != want {
		t.Fatalf("after the first pass:\n got %s\nwant %s", got, want)
	}
	// The aborted transaction is still listed while its marker is there.
	if ab := aborted(); len(ab) != 1 {
		t.Fatalf("aborted after the first pass: %v", ab)
	}

	// Past delete.retention.ms: the abort marker (its data all gone) goes, and its
	// aborted-transaction entry with it; the commit marker stays while k1=A lives.
	h.advance(time.Minute)
	if rep := h.sweep(); rep.Cleans != 1 {
		t.Fatalf("%+v", rep)
	}
	if got, want := summary(), "1:k2=v1 2:k1=A 3:marker 7:k9=x 8:tail=x"; got != want {
		t.Fatalf("after the horizon:\n got %s\nwant %s", got, want)
	}
	if ab := aborted(); len(ab) != 0 {
		t.Fatalf("aborted after the abort marker went: %v", ab)
	}

	// k1 overwritten: the committed transaction has no data left, so its marker
	// may go. Its entry was rewritten together with newly cleaned data (the first
	// tail) meanwhile, which conservatively restarted its horizon: it goes one
	// delete.retention.ms later.
	h.produce(topic, batch{recs: []rec{kv("k1", "new", ts)}})
	h.seal(topic, kv("tail2", "x", ts))
	if got, want := summary(), "1:k2=v1 3:marker 7:k9=x 8:tail=x 9:k1=new 10:tail2=x"; got != want {
		t.Fatalf("after k1 was overwritten:\n got %s\nwant %s", got, want)
	}
	h.advance(time.Minute)
	if rep := h.sweep(); rep.Cleans != 1 {
		t.Fatalf("%+v", rep)
	}
	if got, want := summary(), "1:k2=v1 7:k9=x 8:tail=x 9:k1=new 10:tail2=x"; got != want {
		t.Fatalf("after the marker's horizon:\n got %s\nwant %s", got, want)
	}
}

func TestKeyMapFull(t *testing.T) {
	// A map of 5 keys: each pass cleans only as far as the map reached, and the
	// passes that follow finish the job.
	h := newHarness(t, withConfig(func(c *Config) {
		c.KeyMapBytes = 5 * keyMapEntryBytes
		c.L0MaxEntries = 1
		c.BlockBytes = 1 // a block per batch: per segment here
	}))
	topic := h.createTopic("small-map", 1, map[string]string{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})
	ts := time.Now().UnixMilli() - 1000
	for i := range 6 {
		h.produce(topic, batch{recs: []rec{kv(fmt.Sprint("a", i%3), fmt.Sprint(i), ts), kv(fmt.Sprint("b", i), "x", ts), kv(fmt.Sprint("c", i), "y", ts)}})
	}
	_, before := h.fetch(topic, 0)
	es := h.entries(topic, 0)
	end := es[len(es)-1].BaseOffset
	passes := 0
	for ; passes < 10; passes++ {
		if rep := h.sweep(); rep.Cleans == 0 {
			break
		}
	}
	// Pass n maps block n-1 alone (a second would not fit) and cleans up to it:
	// a0 and a1 are overwritten in blocks 3 and 4, so it takes five passes.
	if passes != 5 {
		t.Fatalf("%d passes, want 5", passes)
	}
	_, after := h.fetch(topic, 0)
	sameRecs(t, "after the passes", after, expectCleaned(before, end, false))
}

func TestKeyCompactionGaps(t *testing.T) {
	// Many batches emptied in the middle. By default an output entry spans the
	// gaps; with SplitAtGaps it is cut at each, so every entry's batches cover its
	// offsets exactly. Either way fetch applies the agent's check to every entry.
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprint("split=", split), func(t *testing.T) {
			h := newHarness(t, withConfig(cleanConfig), withConfig(func(c *Config) { c.SplitAtGaps = split }))
			topic := h.createTopic("gaps", 1, map[string]string{"cleanup.policy": "compact"})
			ts := time.Now().UnixMilli() - 1000
			var bs []batch
			for i := range 30 {
				key := fmt.Sprint("k", i%3)
				if i == 5 || i == 15 {
					key = fmt.Sprint("u", i)
				}
				bs = append(bs, batch{recs: []rec{kv(key, fmt.Sprint(i), ts)}})
			}
			h.produce(topic, bs...)
			h.seal(topic)
			es := h.entries(topic, 0)
			want := 2 // [5, 29] with gaps, the tail
			if split {
				want = 4 // 5, 15, 27-29, the tail
			}
			if len(es) != want {
				t.Fatalf("want %d entries, got %v", want, es)
			}
			offsets := []int64{}
			_, recs := h.fetch(topic, 0) // fails on an entry the agent would refuse
			for _, r := range recs {
				offsets = append(offsets, r.offset)
			}
			if !slices.Equal(offsets, []int64{5, 15, 27, 28, 29, 30}) {
				t.Fatalf("offsets %v", offsets)
			}
			// The clean output is read again by the next pass (with its own check).
			h.advance(48 * time.Hour)
			if rep, _ := h.seal(topic); rep.Cleans != 1 {
				t.Fatalf("%+v", rep)
			}
			h.fetch(topic, 0)
		})
	}
}

func TestCompactedLevelOneNotMerged(t *testing.T) {
	// On a compacted topic level-1 runs are key compaction's: no merge races it.
	h := newHarness(t, withConfig(func(c *Config) { c.L0MaxEntries = 2; c.L1MaxEntries = 2 }))
	topic := h.createTopic("compacted", 1, map[string]string{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "1"})
	ts := time.Now().UnixMilli() - 1000
	for i := range 6 {
		h.produce(topic, batch{recs: []rec{kv("k", fmt.Sprint(i), ts)}})
		if i%2 == 0 {
			continue
		}
		if rep := h.sweep(); rep.Merges != 1 {
			t.Fatalf("sweep %d: %+v", i/2, rep)
		}
		for _, e := range h.entries(topic, 0) {
			if e.Level > levelL1 && e.CleanedMs == 0 {
				t.Fatalf("a level-1 run of a compacted topic was merged: %v", e)
			}
		}
	}
}
