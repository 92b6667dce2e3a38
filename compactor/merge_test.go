package compactor

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"testing"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

var codecs = []objectlog.Codec{objectlog.CodecNone, objectlog.CodecGzip, objectlog.CodecSnappy, objectlog.CodecLZ4, objectlog.CodecZstd}

// produceMixed commits n ingestion segments into partitions 0 and 1 of topic:
// batches of every codec, records with headers and null keys, and in partition 0 a
// committed and an aborted transaction (so markers sit inside the runs).
func produceMixed(h *harness, topic objectlog.TopicID, n int, tag string) {
	h.t.Helper()
	x := h.txnProducer("tx-" + tag)
	ts := time.Now().UnixMilli()
	for i := range n {
		var bs []batch
		for p := range int32(2) {
			var recs []rec
			for j := range 1 + (i+int(p))%4 {
				r := kv(fmt.Sprintf("k%d", (i+j)%7), fmt.Sprintf("%s-v%d-%d-%d", tag, i, p, j), ts+int64(i*10+j))
				if j == 2 {
					r.key = nil
					r.headers = []objectlog.Header{{Key: []byte("h"), Value: []byte("x")}, {Key: []byte("n")}}
				}
				recs = append(recs, r)
			}
			bs = append(bs, batch{partition: p, recs: recs, opts: batchOpts{codec: codecs[(i+int(p))%len(codecs)]}})
		}
		switch i {
		case 3, 9:
			h.add(x, topic, 0)
			bs = append(bs, batch{partition: 0, recs: []rec{kv("t", fmt.Sprintf("%s-txn-%d", tag, i), ts)}, opts: x.opts()})
		}
		h.produce(topic, bs...)
		switch i {
		case 4:
			h.end(x, true)
		case 10:
			h.end(x, false)
		}
	}
}

func TestMergeKeepsEveryBatch(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) { c.L1MaxEntries = 2 }))
	topic := h.createTopic("events", 2, nil)

	produceMixed(h, topic, 16, "a")
	before := map[int32][]byte{}
	var entriesBefore int
	for p := range int32(2) {
		before[p], _ = h.fetch(topic, p)
		entriesBefore += len(h.entries(topic, p))
	}
	check := func(stage string) {
		t.Helper()
		for p := range int32(2) {
			got, _ := h.fetch(topic, p)
			if !bytes.Equal(got, before[p]) {
				t.Fatalf("%s: partition %d: fetched batches differ from before the merge", stage, p)
			}
		}
	}

	rep := h.onSegment(h.keys[len(h.keys)-1])
	if rep.Merges != 2 || rep.Conflicts != 0 || rep.BytesMerged == 0 || rep.EntriesReplaced <= rep.EntriesWritten/4 {
		t.Fatalf("first merge: %+v", rep)
	}
	check("level 1")
	var entriesL1 int
	for p := range int32(2) {
		for _, e := range h.entries(topic, p) {
			entriesL1++
			if e.Level != levelL1 || e.Marker != 0 || e.Flags != 1 || e.CleanedMs != 0 {
				t.Fatalf("partition %d entry after the L0 merge: %v", p, e)
			}
			if e.Length > h.cfg.BlockBytes && e.BatchCount > 1 {
				t.Fatalf("block of %d bytes and %d batches over BlockBytes %d", e.Length, e.BatchCount, h.cfg.BlockBytes)
			}
		}
	}
	if entriesL1 >= entriesBefore {
		t.Fatalf("entries: %d before, %d after", entriesBefore, entriesL1)
	}

	// The same event again finds nothing due.
	if rep := h.onSegment(h.keys[len(h.keys)-1]); rep.Merges != 0 || rep.Conflicts != 0 {
		t.Fatalf("second invocation: %+v", rep)
	}

	// A second level-0 run: its merge makes a level-1 run of two objects, merged
	// into level 2 in the same call.
	produceMixed(h, topic, 16, "b")
	for p := range int32(2) {
		before[p], _ = h.fetch(topic, p)
	}
	rep = h.onSegment(h.keys[len(h.keys)-1])
	if rep.Merges != 4 {
		t.Fatalf("second round: %+v", rep)
	}
	check("level 2")
	for p := range int32(2) {
		objs := map[string]bool{}
		for _, e := range h.entries(topic, p) {
			if e.Level != levelTop {
				t.Fatalf("partition %d: entry at level %d after the L1 merge", p, e.Level)
			}
			objs[string(e.SegmentId)] = true
		}
		if len(objs) != 1 {
			t.Fatalf("partition %d in %d objects, want 1", p, len(objs))
		}
		// The output is a valid segment: one absolute chunk of this partition.
		for id := range objs {
			key := objectlog.SegmentKey(objectlog.SegmentID([]byte(id)))
			rc, _, err := h.store.Get(h.ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			rc.Close()
			ix, err := objectlog.DecodeSegment(data)
			if err != nil {
				t.Fatalf("output %s: %v", key, err)
			}
			if len(ix.Chunks) != 1 || ix.Chunks[0].Partition != p || !ix.Chunks[0].AbsoluteOffsets() {
				t.Fatalf("output %s chunks %+v", key, ix.Chunks)
			}
		}
	}

	// Nothing referenced is collected; everything else is.
	gc := h.gc()
	if gc.ObjectsDeleted == 0 {
		t.Fatal("GC deleted nothing")
	}
	if got, want := h.objects(), h.referenced(topic, 2); !maps.Equal(got, want) {
		t.Fatalf("objects after GC: %v, referenced: %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	check("after GC")
}

func TestMergeByAge(t *testing.T) {
	h := newHarness(t)
	topic := h.createTopic("slow", 1, nil)
	for i := range 3 {
		h.produce(topic, batch{recs: []rec{kv("k", fmt.Sprint(i), time.Now().UnixMilli())}})
	}
	before, _ := h.fetch(topic, 0)
	if rep := h.sweep(); rep.Merges != 0 {
		t.Fatalf("merged young entries: %+v", rep)
	}
	h.advance(h.cfg.L0MaxAge)
	if rep := h.sweep(); rep.Merges != 1 {
		t.Fatalf("aged run not merged: %+v", rep)
	}
	after, _ := h.fetch(topic, 0)
	if !bytes.Equal(before, after) {
		t.Fatal("merge changed the partition's batches")
	}
	if n := len(h.entries(topic, 0)); n != 1 {
		t.Fatalf("%d entries after merging 3 small ones", n)
	}
}

func TestMergeSizeCut(t *testing.T) {
	// Level-0 runs are cut at the level-1 size: of a run of 3 chunks of ~40 KiB
	// with a 100 KiB target, the first two are merged (full); the third waits,
	// as it is due neither by count nor by age.
	h := newHarness(t, withConfig(func(c *Config) { c.L1MaxBytes = 100 << 10; c.BlockBytes = 16 << 10 }))
	topic := h.createTopic("big", 1, nil)
	big := bytes.Repeat([]byte("0123456789abcdef"), 40<<10/16)
	var recs []rec
	for i := range 10 {
		recs = append(recs, rec{key: []byte{byte(i)}, value: big[:4<<10], ts: time.Now().UnixMilli()})
	}
	for range 3 {
		h.produce(topic, batch{recs: recs})
	}
	before, _ := h.fetch(topic, 0)
	rep := h.sweep()
	if rep.Merges != 1 {
		t.Fatalf("want the full piece merged: %+v", rep)
	}
	es := h.entries(topic, 0)
	levels := []int32{}
	for _, e := range es {
		levels = append(levels, e.Level)
	}
	if levels[len(levels)-1] != 0 || levels[0] != 1 {
		t.Fatalf("levels after the size cut: %v", levels)
	}
	after, _ := h.fetch(topic, 0)
	if !bytes.Equal(before, after) {
		t.Fatal("batches changed")
	}
}

func TestMarkersMaterialized(t *testing.T) {
	// A run holding only transaction data and markers: the merged object carries
	// the markers' control batches, read_committed metadata (the aborted list) stays.
	h := newHarness(t, withConfig(func(c *Config) { c.L0MaxEntries = 2 }))
	topic := h.createTopic("tx", 1, nil)
	x := h.txnProducer("tx")
	h.add(x, topic, 0)
	h.produce(topic, batch{recs: []rec{kv("a", "1", time.Now().UnixMilli())}, opts: x.opts()})
	h.end(x, false)
	h.produce(topic, batch{recs: []rec{kv("b", "2", time.Now().UnixMilli())}})
	before, recsBefore := h.fetch(topic, 0)
	if rep := h.sweep(); rep.Merges != 1 {
		t.Fatalf("%+v", rep)
	}
	after, recsAfter := h.fetch(topic, 0)
	if !bytes.Equal(before, after) || len(recsAfter) != len(recsBefore) || !recsAfter[1].control {
		t.Fatalf("records %v -> %v", recsBefore, recsAfter)
	}
	for _, e := range h.entries(topic, 0) {
		if e.Marker != 0 {
			t.Fatalf("marker entry left: %v", e)
		}
	}
	resp := h.lookup(&pb.LookupRequest{TopicId: topic[:], Partition: 0, Offset: 0, AbortedUpto: 3})
	if len(resp.Aborted) != 1 || resp.Aborted[0].FirstOffset != 0 || resp.Aborted[0].LastOffset != 1 {
		t.Fatalf("aborted list after the merge: %v", resp.Aborted)
	}
}
