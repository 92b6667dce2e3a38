package compactor

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog"
)

// BenchmarkCompaction measures a level-0 merge (32 ingestion segments of one
// partition, 8 MiB, into a level-1 object: reads, checks, writes, commits) and a
// key compaction pass over the same data merged (the timed call also merges the
// one-record last segment), over an in-memory store (which MD5s every PUT) and a
// real embedded metastore. The bytes are the inputs of the partition.
func BenchmarkCompaction(b *testing.B) {
	for _, codec := range []objectlog.Codec{objectlog.CodecNone, objectlog.CodecZstd} {
		b.Run("merge/"+codec.String(), func(b *testing.B) { benchCompaction(b, codec, false) })
	}
	b.Run("clean/none", func(b *testing.B) { benchCompaction(b, objectlog.CodecNone, true) })
}

func benchCompaction(b *testing.B, codec objectlog.Codec, clean bool) {
	h := newHarness(b, withConfig(func(c *Config) {
		*c = DefaultConfig()
		c.CommitWait = time.Second
		if clean {
			c.BlockBytes = 64 << 20 // the merge before the pass writes one block
		}
	}))
	rng := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, 1024)
	const segments, batches, records = 32, 16, 16
	var input int64
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		configs := map[string]string(nil)
		if clean {
			configs = map[string]string{"cleanup.policy": "compact"}
		}
		topic := h.createTopic(fmt.Sprint("bench-", i), 1, configs)
		for range segments {
			var bs []batch
			for range batches {
				var recs []rec
				for range records {
					for j := range value {
						value[j] = byte('a' + rng.IntN(8)) // compressible, like text
					}
					recs = append(recs, rec{key: fmt.Appendf(nil, "key-%d", rng.IntN(2000)), value: append([]byte(nil), value...), ts: time.Now().UnixMilli() - 1000})
				}
				bs = append(bs, batch{recs: recs, opts: batchOpts{codec: codec}})
			}
			h.produce(topic, bs...)
		}
		if clean {
			// Merge first (key compaction takes what merges left), then a last
			// segment: the pass cleans the merged block.
			if rep := h.onSegment(h.keys[len(h.keys)-1]); rep.Merges != 1 || rep.Cleans != 0 {
				b.Fatalf("%+v", rep)
			}
			h.produce(topic, batch{recs: []rec{kv("tail", "x", time.Now().UnixMilli()-1000)}})
		}
		input = 0
		for _, e := range h.entries(topic, 0) {
			input += e.Length
		}
		b.StartTimer()
		rep := h.onSegment(h.keys[len(h.keys)-1])
		if clean && rep.Cleans != 1 || !clean && rep.Merges != 1 {
			b.Fatalf("%+v", rep)
		}
	}
	b.SetBytes(input)
}
