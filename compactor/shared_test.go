package compactor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// sharedRun produces one level-0 run (L0MaxEntries segments, each with a chunk of
// every one of 4 partitions), merges it with one OnSegment and returns the whole
// and ranged GETs the merge made. The fetched bytes of every partition are the same
// before and after.
func sharedRun(t *testing.T, cfg func(*Config)) (gets, ranged int64, h *harness) {
	t.Helper()
	store := objstore.NewCounting(objstore.NewMemory())
	h = newHarness(t, withStore(store), withConfig(cfg))
	const parts = 4
	topic := h.createTopic("shared", parts, nil)
	ts := time.Now().UnixMilli()
	for i := range h.cfg.L0MaxEntries {
		var bs []batch
		for p := range int32(parts) {
			bs = append(bs, batch{partition: p, recs: []rec{kv(fmt.Sprintf("k%d", i), fmt.Sprintf("v%d-%d", i, p), ts)}})
		}
		h.produce(topic, bs...)
	}
	before := map[int32][]byte{}
	for p := range int32(parts) {
		before[p], _ = h.fetch(topic, p)
	}
	n0 := store.Counts()
	rep := h.onSegment(h.keys[len(h.keys)-1])
	n1 := store.Counts()
	if rep.Merges != parts {
		t.Fatalf("merges: %+v, want %d", rep, parts)
	}
	checkMerged(t, h, topic, before)
	return n1.Requests[objstore.OpGet] - n0.Requests[objstore.OpGet], n1.Requests[objstore.OpGetRange] - n0.Requests[objstore.OpGetRange], h
}

// checkMerged: each partition's fetched bytes are before's, from level-1 entries.
func checkMerged(t *testing.T, h *harness, topic objectlog.TopicID, before map[int32][]byte) {
	t.Helper()
	for p, want := range before {
		if got, _ := h.fetch(topic, p); !bytes.Equal(got, want) {
			t.Fatalf("partition %d: fetched batches differ after the merge", p)
		}
		for _, e := range h.entries(topic, p) {
			if e.Level != levelL1 {
				t.Fatalf("partition %d: entry %v after the merge", p, e)
			}
		}
	}
}

// The partitions of small segments share their inputs: each segment is read once,
// whole, instead of once per partition. With the cache off, or segments over its
// largest object, every chunk is its own ranged GET.
func TestSharedReads(t *testing.T) {
	const segments, parts = 8, 4 // testConfig's L0MaxEntries; sharedRun's partitions
	for _, tc := range []struct {
		name               string
		cfg                func(*Config)
		wantGets, wantRngs int64
	}{
		{"default", func(*Config) {}, segments, 0},
		{"off", func(c *Config) { c.SegmentCacheBytes = -1 }, 0, segments * parts},
		{"big segments", func(c *Config) { c.SegmentCacheMaxObject = 64 }, 0, segments * parts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gets, ranged, _ := sharedRun(t, tc.cfg)
			if gets != tc.wantGets || ranged != tc.wantRngs {
				t.Fatalf("GETs %d, ranged GETs %d; want %d and %d", gets, ranged, tc.wantGets, tc.wantRngs)
			}
		})
	}
}

// Merges of one segment's partitions in different calls share it too: the second
// call finds the first call's segments kept.
func TestSharedReadsAcrossCalls(t *testing.T) {
	store := objstore.NewCounting(objstore.NewMemory())
	h := newHarness(t, withStore(store))
	topic := h.createTopic("calls", 2, nil)
	ts := time.Now().UnixMilli()
	both := func(i int) []batch {
		return []batch{{partition: 0, recs: []rec{kv("a", fmt.Sprint(i), ts)}}, {partition: 1, recs: []rec{kv("b", fmt.Sprint(i), ts)}}}
	}
	for i := range h.cfg.L0MaxEntries - 1 {
		h.produce(topic, both(i)...)
	}
	// Partition 0's run comes due first, alone; partition 1's in a later call, over
	// the same segments but its last.
	key0, _ := h.produce(topic, batch{partition: 0, recs: []rec{kv("a", "last", ts)}})
	key1, _ := h.produce(topic, batch{partition: 1, recs: []rec{kv("b", "last", ts)}})
	before := map[int32][]byte{}
	before[0], _ = h.fetch(topic, 0)
	before[1], _ = h.fetch(topic, 1)
	n0 := store.Counts()
	if rep := h.onSegment(key0); rep.Merges != 1 {
		t.Fatalf("first call: %+v", rep)
	}
	if rep := h.onSegment(key1); rep.Merges != 1 {
		t.Fatalf("second call: %+v", rep)
	}
	n1 := store.Counts()
	checkMerged(t, h, topic, before)
	gets, ranged := n1.Requests[objstore.OpGet]-n0.Requests[objstore.OpGet], n1.Requests[objstore.OpGetRange]-n0.Requests[objstore.OpGetRange]
	if want := int64(h.cfg.L0MaxEntries + 1); gets != want || ranged != 0 {
		t.Fatalf("GETs %d, ranged GETs %d; want %d and 0", gets, ranged, want)
	}
}

// A cache smaller than a run evicts as it goes: merges stay right, and it never
// holds more than its budget.
func TestSharedReadsEvict(t *testing.T) {
	gets, ranged, h := sharedRun(t, func(c *Config) { c.SegmentCacheBytes, c.SegmentCacheMaxObject = 4<<10, 2<<10 })
	// Two reads at most fit at once, so the run's 8 segments cannot all be kept:
	// some were evicted (read again whole) or read by range.
	if gets == 0 || gets+ranged <= 8 || h.c.segs.lru.Len() >= 8 {
		t.Fatalf("GETs %d, ranged GETs %d, %d segments kept", gets, ranged, h.c.segs.lru.Len())
	}
	sc := h.c.segs
	sc.mu.Lock()
	defer sc.mu.Unlock()
	var held int64
	for el := sc.lru.Front(); el != nil; el = el.Next() {
		held += el.Value.(*cachedSegment).size
	}
	if held != sc.used || sc.used > sc.budget || sc.lru.Len() != len(sc.objs) {
		t.Fatalf("cache holds %d bytes in %d segments (%d keys), counts %d, budget %d", held, sc.lru.Len(), len(sc.objs), sc.used, sc.budget)
	}
}

// A segment missing under shared reads is an InputError, as with ranged reads, and
// the merges that needed it replace nothing.
func TestSharedReadMissingInput(t *testing.T) {
	h := newHarness(t)
	topic := h.createTopic("missing", 2, nil)
	ts := time.Now().UnixMilli()
	for i := range h.cfg.L0MaxEntries {
		h.produce(topic, batch{partition: 0, recs: []rec{kv("a", fmt.Sprint(i), ts)}}, batch{partition: 1, recs: []rec{kv("b", fmt.Sprint(i), ts)}})
	}
	entries := len(h.entries(topic, 0)) + len(h.entries(topic, 1))
	if err := h.store.Delete(h.ctx, h.keys[2]); err != nil {
		t.Fatal(err)
	}
	_, err := h.c.OnSegment(h.ctx, h.keys[len(h.keys)-1])
	var ie *InputError
	if !errors.As(err, &ie) || !errors.Is(err, objstore.ErrNotExist) || ie.Key != h.keys[2] {
		t.Fatalf("OnSegment with a segment gone: %v", err)
	}
	if n := len(h.entries(topic, 0)) + len(h.entries(topic, 1)); n != entries {
		t.Fatalf("%d entries after the failed merges, %d before", n, entries)
	}
}

// One caller giving up (its context ends) does not fail the read others wait for.
func TestSharedReadOutlivesAWaiter(t *testing.T) {
	store := objstore.NewFaulty(objstore.NewMemory(), 1)
	if _, err := store.Put(context.Background(), "segments/x.seg", bytes.NewReader([]byte("0123456789")), 10, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	store.Set(objstore.OpGet, objstore.OpFaults{Latency: objstore.Fixed(50 * time.Millisecond)})
	sc := newSegmentCache(store, 1<<20, 1<<10)
	quitter, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := sc.object(quitter, "segments/x.seg", true)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("the waiter that gave up: %v", err)
	}
	data, ok, err := sc.object(context.Background(), "segments/x.seg", false)
	if err != nil || !ok || string(data) != "0123456789" {
		t.Fatalf("the other reader: %q %v %v", data, ok, err)
	}
	if g := sc.wholeGets(); g != 1 {
		t.Fatalf("%d whole GETs, want 1", g)
	}
	if sc.used != 10 {
		t.Fatalf("the cache counts %d bytes, holds 10", sc.used)
	}
}

// damageOnce is a store whose first whole read of one key returns damaged bytes: a
// body corrupted in transit.
type damageOnce struct {
	objstore.Store
	key  string
	done atomic.Bool
}

func (d *damageOnce) Get(ctx context.Context, key string) (io.ReadCloser, objstore.ObjectInfo, error) {
	rc, info, err := d.Store.Get(ctx, key)
	if err != nil || key != d.key || d.done.Swap(true) {
		return rc, info, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, info, err
	}
	b[objectlog.BatchHeaderSize+3] ^= 0xff // inside partition 0's first batch's CRC
	return io.NopCloser(bytes.NewReader(b)), info, nil
}

// A kept copy that fails its checks is dropped from the cache: the next attempt
// reads the store again and merges.
func TestSharedReadDropsDamagedCopy(t *testing.T) {
	store := &damageOnce{Store: objstore.NewMemory()}
	h := newHarness(t, withStore(store))
	topic := h.createTopic("recovers", 2, nil)
	ts := time.Now().UnixMilli()
	for i := range h.cfg.L0MaxEntries {
		key, _ := h.produce(topic, batch{partition: 0, recs: []rec{kv("a", fmt.Sprint(i), ts)}}, batch{partition: 1, recs: []rec{kv("b", fmt.Sprint(i), ts)}})
		if i == 2 {
			store.key = key
		}
	}
	_, err := h.c.OnSegment(h.ctx, h.keys[len(h.keys)-1])
	if !errors.Is(err, objectlog.ErrCorrupt) {
		t.Fatalf("merge over a damaged read: %v", err)
	}
	if rep := h.onSegment(h.keys[len(h.keys)-1]); rep.Merges != 1 {
		t.Fatalf("the next attempt: %+v, want partition 0 merged", rep)
	}
}

// A segment found too big to keep is remembered as such: later merges GET their
// ranges without a whole GET first, and it holds no bytes.
func TestSharedReadTooBigRemembered(t *testing.T) {
	store := objstore.NewCounting(objstore.NewMemory())
	if _, err := store.Put(context.Background(), "segments/big.seg", bytes.NewReader([]byte("0123456789")), 10, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	sc := newSegmentCache(store, 1<<10, 5)
	for i := range 3 {
		if data, ok, err := sc.object(context.Background(), "segments/big.seg", true); ok || err != nil || data != nil {
			t.Fatalf("read %d: %q %v %v, want not kept", i, data, ok, err)
		}
	}
	if g := store.Counts().Requests[objstore.OpGet]; g != 1 {
		t.Fatalf("%d whole GETs, want 1", g)
	}
	if sc.used != 0 {
		t.Fatalf("the marker counts %d bytes", sc.used)
	}
}
