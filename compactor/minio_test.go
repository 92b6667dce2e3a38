package compactor

import (
	"bytes"
	"context"
	"maps"
	"testing"
	"time"

	"github.com/stratalog/strata/internal/miniotest"
	"github.com/stratalog/strata/objectlog/objstore/s3store"
)

// TestOnMinIO runs merges, key compaction and GC against a real S3 implementation
// (ranged GETs, conditional PUTs, deletes). It skips without the MinIO binary
// unless CI=true.
func TestOnMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	srv.MakeBucket(t, "strata-compactor")
	cfg := s3store.DefaultConfig()
	cfg.Bucket, cfg.Endpoint, cfg.Region, cfg.PathStyle = "strata-compactor", srv.Endpoint, srv.Region, true
	cfg.AccessKeyID, cfg.SecretAccessKey = srv.AccessKey, srv.SecretKey
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := s3store.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, withStore(store), withConfig(cleanConfig))
	events := h.createTopic("events", 2, nil)
	table := h.createTopic("table", 1, map[string]string{"cleanup.policy": "compact"})

	produceMixed(h, events, 16, "a")
	produceMixed(h, events, 16, "b")
	for i := range 6 {
		h.produce(table, batch{recs: []rec{kv("k", string(rune('a'+i)), time.Now().UnixMilli()-1000), kv("", "null key", 0)}})
	}
	before := map[int32][]byte{}
	for p := range int32(2) {
		before[p], _ = h.fetch(events, p)
	}
	rep, _ := h.seal(table, kv("k", "g", time.Now().UnixMilli()-1000))
	// Events: level 0 to 1 per partition; table: its run, then its last segment.
	if rep.Merges != 4 || rep.Cleans != 1 || rep.ObjectsDeleted == 0 {
		t.Fatalf("%+v", rep)
	}
	for p := range int32(2) {
		after, _ := h.fetch(events, p)
		if !bytes.Equal(after, before[p]) {
			t.Fatalf("partition %d changed", p)
		}
	}
	_, recs := h.fetch(table, 0)
	if len(recs) != 2 || string(recs[0].value) != "f" || string(recs[1].value) != "g" {
		t.Fatalf("compacted table: %v", recs)
	}
	eventually(t, 10*time.Second, func() error {
		h.gc()
		want := h.referenced(events, 2)
		maps.Copy(want, h.referenced(table, 1))
		if !maps.Equal(h.objects(), want) {
			return errNotYet
		}
		return nil
	})
}
