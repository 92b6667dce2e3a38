package compactor

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// BenchmarkHourOfProduce reports the figures for one partition: index
// entries after an hour of steady produce (one ingestion chunk per agent linger of
// 250 ms: 14,400 segments) without and with compaction, and ranged GETs per GiB
// read by a consumer of the whole partition before and after merging.
//
//	go test -run '^$' -bench HourOfProduce -benchtime 1x ./compactor/
//
// STRATA_BENCH_SEGMENTS shortens the hour; each chunk holds 4 records of 1 KiB.
func BenchmarkHourOfProduce(b *testing.B) {
	segments := 14_400
	if v, err := strconv.Atoi(os.Getenv("STRATA_BENCH_SEGMENTS")); err == nil && v > 0 {
		segments = v
	}
	counting := objstore.NewCounting(objstore.NewMemory())
	h := newHarness(b, withStore(counting), withConfig(func(c *Config) {
		*c = DefaultConfig()
		c.CommitWait = time.Second
	}))
	value := make([]byte, 1024)
	for i := 0; b.Loop(); i++ {
		plain := h.createTopic(fmt.Sprint("hour-plain-", i), 1, nil)
		topic := h.createTopic(fmt.Sprint("hour-", i), 1, nil)
		merges := 0
		for s := range segments {
			var recs []rec
			for r := range 4 {
				recs = append(recs, rec{key: fmt.Appendf(nil, "k%d", (s*4+r)%5000), value: value, ts: time.Now().UnixMilli()})
			}
			h.produce(plain, batch{recs: recs})
			// The compacted partition's segment event runs as it arrives.
			key, _ := h.produce(topic, batch{recs: recs})
			merges += h.onSegment(key).Merges
		}
		readAll := func(topic objectlog.TopicID) (entries int, gets, bytes int64) {
			es := h.entries(topic, 0)
			before := counting.Counts()
			for _, e := range es {
				bytes += int64(len(h.entryBytes(e)))
			}
			after := counting.Counts()
			return len(es), after.Requests[objstore.OpGetRange] - before.Requests[objstore.OpGetRange], bytes
		}
		e0, g0, n0 := readAll(plain)
		e1, g1, n1 := readAll(topic)
		gib := func(n int64) float64 { return float64(n) / (1 << 30) }
		b.ReportMetric(float64(e0), "entries-uncompacted")
		b.ReportMetric(float64(e1), "entries-compacted")
		b.ReportMetric(float64(g0)/gib(n0), "GETs/GiB-before")
		b.ReportMetric(float64(g1)/gib(n1), "GETs/GiB-after")
		b.ReportMetric(float64(merges), "merges")
		if n0 != n1 {
			b.Fatalf("read %d bytes before compaction, %d after", n0, n1)
		}
	}
}
