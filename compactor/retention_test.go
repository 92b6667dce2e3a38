package compactor

import (
	"fmt"
	"testing"
	"time"
)

func noMerges(c *Config) { c.L0MaxEntries = 1000; c.L0MaxAge = 1000 * time.Hour }

func TestRetentionByTime(t *testing.T) {
	h := newHarness(t, withConfig(noMerges))
	topic := h.createTopic("timed", 1, map[string]string{"retention.ms": "3600000"})
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	var oldKeys []string
	for i := range 5 {
		key, _ := h.produce(topic, batch{recs: []rec{kv("k", fmt.Sprint("old", i), old)}})
		oldKeys = append(oldKeys, key)
	}
	for i := range 3 {
		h.produce(topic, batch{recs: []rec{kv("k", fmt.Sprint("new", i), time.Now().UnixMilli())}})
	}
	rep := h.onSegment(h.keys[len(h.keys)-1])
	if rep.LogStartMoves != 1 {
		t.Fatalf("%+v", rep)
	}
	if head := h.head(topic, 0); head.LogStartOffset != 5 {
		t.Fatalf("log start %d, want 5", head.LogStartOffset)
	}
	if es := h.entries(topic, 0); len(es) != 3 || es[0].BaseOffset != 5 {
		t.Fatalf("entries after retention: %v", es)
	}
	_, recs := h.fetch(topic, 0)
	if len(recs) != 3 || string(recs[0].value) != "new0" {
		t.Fatalf("records after retention: %v", recs)
	}
	if rep := h.onSegment(h.keys[len(h.keys)-1]); rep.LogStartMoves != 0 {
		t.Fatalf("second invocation: %+v", rep)
	}
	// The expired segments are garbage now.
	eventually(t, 5*time.Second, func() error {
		h.gc()
		objs := h.objects()
		for _, k := range oldKeys {
			if objs[k] {
				return fmt.Errorf("%s not collected", k)
			}
		}
		return nil
	})
	if len(h.objects()) != 3 {
		t.Fatalf("objects left: %v", h.objects())
	}
	// Time passes: everything expires, the log start reaches the high watermark.
	h.advance(3 * time.Hour)
	h.sweep()
	if head := h.head(topic, 0); head.LogStartOffset != head.NextOffset {
		t.Fatalf("log start %d, high watermark %d", head.LogStartOffset, head.NextOffset)
	}
}

func TestRetentionBySize(t *testing.T) {
	h := newHarness(t, withConfig(noMerges))
	topic := h.createTopic("sized", 2, map[string]string{"retention.bytes": "1000", "retention.ms": "-1"})
	ts := time.Now().Add(-100 * 24 * time.Hour).UnixMilli() // old, but no time limit
	for i := range 12 {
		h.produce(topic, batch{partition: 0, recs: []rec{kv("k", fmt.Sprintf("%0100d", i), ts)}}, batch{partition: 1, recs: []rec{kv("k", "small", ts)}})
	}
	before := h.entries(topic, 0)
	rep := h.sweep()
	if rep.LogStartMoves != 1 {
		t.Fatalf("%+v", rep)
	}
	after := h.entries(topic, 0)
	var size int64
	for _, e := range after {
		size += e.Length
	}
	if size < 1000 || size-after[0].Length >= 1000 {
		t.Fatalf("%d bytes left in %d entries (first %d bytes): retention.bytes 1000 not kept exactly", size, len(after), after[0].Length)
	}
	if len(after) >= len(before) || h.head(topic, 0).LogStartOffset != after[0].BaseOffset {
		t.Fatalf("entries %d -> %d, log start %d", len(before), len(after), h.head(topic, 0).LogStartOffset)
	}
	// Partition 1 holds less than retention.bytes: untouched.
	if h.head(topic, 1).LogStartOffset != 0 {
		t.Fatal("small partition trimmed")
	}
}

func TestRetentionStopsAtOpenTransaction(t *testing.T) {
	h := newHarness(t, withConfig(noMerges))
	topic := h.createTopic("open-txn", 1, map[string]string{"retention.ms": "1000"})
	old := time.Now().Add(-time.Hour).UnixMilli()
	h.produce(topic, batch{recs: []rec{kv("a", "1", old)}})
	x := h.txnProducer("open")
	h.add(x, topic, 0)
	h.produce(topic, batch{recs: []rec{kv("b", "2", old)}, opts: x.opts()})
	h.produce(topic, batch{recs: []rec{kv("c", "3", old)}})
	h.sweep()
	if head := h.head(topic, 0); head.LogStartOffset != 1 {
		t.Fatalf("log start %d, want 1 (the open transaction's first offset)", head.LogStartOffset)
	}
	// Committed: the old data goes, up to the marker (written now, not expired).
	h.end(x, true)
	h.sweep()
	if head := h.head(topic, 0); head.LogStartOffset != 3 || head.NextOffset != 4 {
		t.Fatalf("log start %d, high watermark %d; want 3, 4", head.LogStartOffset, head.NextOffset)
	}
}

func TestRetentionAndCompaction(t *testing.T) {
	// cleanup.policy=compact,delete: old records expire, the rest is compacted.
	h := newHarness(t, withConfig(cleanConfig))
	topic := h.createTopic("both", 1, map[string]string{"cleanup.policy": "compact,delete", "retention.ms": "3600000"})
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	h.produce(topic, batch{recs: []rec{kv("a", "old", old)}})
	now := time.Now().UnixMilli() - 1000
	for i := range 4 {
		h.produce(topic, batch{recs: []rec{kv("b", fmt.Sprint(i), now)}})
	}
	rep, _ := h.seal(topic)
	if rep.LogStartMoves != 1 || rep.Cleans != 1 {
		t.Fatalf("%+v", rep)
	}
	_, recs := h.fetch(topic, 0)
	if len(recs) != 2 || string(recs[0].value) != "3" || string(recs[1].key) != "tail5" {
		t.Fatalf("records %v", recs)
	}
}
