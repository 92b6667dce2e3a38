package compactor

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// ent builds an index entry for planning tests: n offsets from base, length bytes,
// in a segment written at segMs (distinct per seg number).
func ent(base, n, length int64, level int32, seg byte, segMs int64) *pb.IndexEntry {
	id := make([]byte, 16)
	binary.BigEndian.PutUint64(id, uint64(segMs))
	id[15] = seg
	return &pb.IndexEntry{BaseOffset: base, LastOffset: base + n - 1, Length: length, Level: level, SegmentId: id, BatchCount: 1, RecordCount: int32(n), MaxTimestamp: segMs}
}

// chain makes consecutive entries of the given lengths and levels.
func chain(spec string, segMs int64) []*pb.IndexEntry {
	var out []*pb.IndexEntry
	var off int64
	for i, f := range strings.Fields(spec) {
		var level int32
		var length int64
		fmt.Sscanf(f, "%d:%d", &level, &length)
		out = append(out, ent(off, 10, length, level, byte(i), segMs))
		off += 10
	}
	return out
}

func describe(runs []run) string {
	var parts []string
	for _, r := range runs {
		parts = append(parts, fmt.Sprintf("[%d-%d L%d %s]", r.entries[0].BaseOffset, r.entries[len(r.entries)-1].LastOffset, r.level, r.reason))
	}
	return strings.Join(parts, " ")
}

func TestPlanMerges(t *testing.T) {
	cfg := DefaultConfig()
	cfg.L0MaxEntries = 4
	cfg.L1MaxBytes = 1000
	cfg.L1MaxEntries = 3
	pol := parsePolicy(map[string]string{"segment.bytes": "5000", "segment.ms": "100000"})
	const now = 1_000_000
	young, old := int64(now-1000), int64(now-cfg.L0MaxAge.Milliseconds())
	for _, tc := range []struct {
		name  string
		spec  string
		segMs int64
		want  string
	}{
		{"empty", "", young, ""},
		{"short young run", "0:10 0:10 0:10", young, ""},
		{"count", "0:10 0:10 0:10 0:10", young, "[0-39 L1 level 0 entries]"},
		{"age", "0:10", old, "[0-9 L1 level 0 age]"},
		{"size", "0:600 0:600", young, "[0-9 L1 level 0 full]"},
		{"exact size", "0:1000", young, "[0-9 L1 level 0 full]"},
		{"after a top entry", "2:10 0:10 0:10 0:10 0:10", young, "[10-49 L1 level 0 entries]"},
		{"split by a top entry", "0:10 0:10 2:10 0:10 0:10", young, ""},
		{"level 1 count", "1:10 1:10 1:10", young, "[0-29 L2 level 1 entries]"},
		{"level 1 short", "1:10 1:10", young, ""},
		{"level 1 full", "1:3000 1:2000 1:10", young, "[0-19 L2 level 1 full]"},
		{"level 1 one object per piece", "1:3000 1:3000", young, ""},
		{"levels apart", "1:10 1:10 1:10 0:10 0:10 0:10 0:10", young, "[0-29 L2 level 1 entries] [30-69 L1 level 0 entries]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describe(planMerges(chain(tc.spec, tc.segMs), pol, &cfg, now)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}

	// A level-1 run in one object is left alone however long; a gap ends a run.
	one := chain("1:10 1:10 1:10 1:10", young)
	for _, e := range one {
		e.SegmentId = one[0].SegmentId
	}
	if got := planMerges(one, pol, &cfg, now); len(got) != 0 {
		t.Fatalf("one object merged: %s", describe(got))
	}
	gap := chain("0:10 0:10 0:10 0:10", young)
	gap[2].BaseOffset++
	if got := planMerges(gap, pol, &cfg, now); len(got) != 0 {
		t.Fatalf("run across a gap: %s", describe(got))
	}
	cleaned := chain("0:10 0:10 0:10 0:10", young)
	cleaned[1].CleanedMs = 5
	if got := planMerges(cleaned, pol, &cfg, now); len(got) != 0 {
		t.Fatalf("cleaned entry merged: %s", describe(got))
	}
	// Markers take part in level-0 runs; their age is their timestamp.
	marker := &pb.IndexEntry{BaseOffset: 0, LastOffset: 0, Marker: pb.MarkerCommit, MaxTimestamp: old, BatchCount: 1, RecordCount: 1}
	if got := describe(planMerges([]*pb.IndexEntry{marker}, pol, &cfg, now)); got != "[0-0 L1 level 0 age]" {
		t.Fatalf("marker: %s", got)
	}
	// Segment age for level 1 is segment.ms.
	l1 := chain("1:10 1:10", now-pol.segmentMs)
	if got := describe(planMerges(l1, pol, &cfg, now)); got != "[0-19 L2 level 1 age]" {
		t.Fatalf("level 1 age: %s", got)
	}
	// MaxMergeEntries cuts pieces.
	cfg.MaxMergeEntries = 3
	if got := describe(planMerges(chain("0:1 0:1 0:1 0:1 0:1", young), pol, &cfg, now)); got != "[0-29 L1 level 0 full]" {
		t.Fatalf("max entries: %s", got)
	}
}

func TestPlanRetention(t *testing.T) {
	const now = 10_000_000
	es := []*pb.IndexEntry{
		{BaseOffset: 0, LastOffset: 9, Length: 100, MaxTimestamp: now - 5000},
		{BaseOffset: 10, LastOffset: 19, Length: 100, MaxTimestamp: now - 4000},
		{BaseOffset: 20, LastOffset: 29, Length: 100, MaxTimestamp: now - 1000},
		{BaseOffset: 30, LastOffset: 39, Length: 100, MaxTimestamp: now - 6000}, // older, but after a newer one
	}
	head := &pb.PartitionHead{NextOffset: 40}
	for _, tc := range []struct {
		name    string
		configs map[string]string
		head    *pb.PartitionHead
		want    int64
	}{
		{"defaults keep a week", nil, head, 0},
		{"time", map[string]string{"retention.ms": "3000"}, head, 20},
		{"time: everything", map[string]string{"retention.ms": "500"}, head, 40},
		{"time: infinite", map[string]string{"retention.ms": "-1"}, head, 0},
		{"bytes", map[string]string{"retention.bytes": "250"}, head, 10},
		{"bytes exact", map[string]string{"retention.bytes": "200"}, head, 20},
		{"bytes zero", map[string]string{"retention.bytes": "0"}, head, 40},
		{"both: the further wins", map[string]string{"retention.bytes": "350", "retention.ms": "3000"}, head, 20},
		{"never past the stable offset", map[string]string{"retention.ms": "500"}, &pb.PartitionHead{NextOffset: 40, OpenTxns: 1, FirstUnstable: 15}, 15},
		{"never back", map[string]string{"retention.ms": "3000"}, &pb.PartitionHead{NextOffset: 40, LogStartOffset: 25}, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := es
			if tc.head.LogStartOffset > 0 {
				entries = es[2:]
			}
			if got := planRetention(entries, tc.head, parsePolicy(tc.configs), now); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestPlanClean(t *testing.T) {
	const now = 100_000_000
	pol := parsePolicy(map[string]string{"cleanup.policy": "compact", "delete.retention.ms": "1000", "min.compaction.lag.ms": "500"})
	mk := func(cleaned []int64, ts []int64, lengths []int64) []*pb.IndexEntry {
		var out []*pb.IndexEntry
		for i := range cleaned {
			out = append(out, &pb.IndexEntry{BaseOffset: int64(i * 10), LastOffset: int64(i*10 + 9), CleanedMs: cleaned[i], MaxTimestamp: ts[i], Length: lengths[i], Level: 2})
		}
		return out
	}
	old := int64(now - 10_000)
	head := &pb.PartitionHead{NextOffset: 1000}
	for _, tc := range []struct {
		name    string
		entries []*pb.IndexEntry
		head    *pb.PartitionHead
		pol     policy
		wantN   int
		dirty   int
		reason  string
	}{
		{"empty", nil, head, pol, 0, 0, ""},
		{"the tail alone", mk([]int64{0}, []int64{old}, []int64{10}), head, pol, 0, 0, ""},
		{"all dirty", mk([]int64{0, 0, 0}, []int64{old, old, old}, []int64{10, 10, 10}), head, pol, 2, 0, "dirty ratio"},
		{"mostly clean", mk([]int64{now - 100, 0, 0}, []int64{old, old, old}, []int64{100, 10, 10}), head, pol, 2, 1, ""},
		{"ratio reached", mk([]int64{now - 100, 0, 0}, []int64{old, old, old}, []int64{10, 10, 10}), head, pol, 2, 1, "dirty ratio"},
		{"min lag", mk([]int64{0, 0, 0, 0}, []int64{old, now - 100, old, old}, []int64{10, 10, 10, 10}), head, pol, 1, 0, "dirty ratio"},
		{"stable offset", mk([]int64{0, 0, 0, 0}, []int64{old, old, old, old}, []int64{10, 10, 10, 10}), &pb.PartitionHead{NextOffset: 1000, OpenTxns: 1, FirstUnstable: 15}, pol, 1, 0, "dirty ratio"},
		{"horizon passed", mk([]int64{now - 2000, now - 10, 0}, []int64{old, old, old}, []int64{10, 10, 10}), head, pol, 2, 2, "delete horizon"},
		{"settled", mk([]int64{settledMs, now - 10, 0}, []int64{old, old, old}, []int64{10, 10, 10}), head, pol, 2, 2, ""},
		{"level 0 tail", func() []*pb.IndexEntry {
			es := mk([]int64{0, 0, 0, 0}, []int64{old, old, old, old}, []int64{10, 10, 10, 10})
			es[0].Level, es[1].Level, es[2].Level, es[3].Level = 1, 0, 0, 0 // the level-0 tail waits for its merge
			return es
		}(), head, pol, 1, 0, "dirty ratio"},
		{"max lag", mk([]int64{now - 10, 0, 0}, []int64{old, old, old}, []int64{100, 10, 10}),
			head, parsePolicy(map[string]string{"cleanup.policy": "compact", "max.compaction.lag.ms": "5000"}), 2, 1, "max compaction lag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planClean(tc.entries, tc.head, tc.pol, now)
			if len(p.entries) != tc.wantN || p.reason != tc.reason || (tc.wantN > 0 && p.firstDirty != tc.dirty) {
				t.Fatalf("got %d entries, first dirty %d, reason %q; want %d, %d, %q", len(p.entries), p.firstDirty, p.reason, tc.wantN, tc.dirty, tc.reason)
			}
		})
	}
}

func TestCleanTags(t *testing.T) {
	pol := parsePolicy(map[string]string{"delete.retention.ms": "1000"})
	const now = 50_000
	for _, tc := range []struct {
		cleaned int64
		tag     int64
		expired bool
	}{
		{0, now, false},
		{now - 10, now - 10, false},
		{now - 1000, wildcard, true},
		{settledMs, wildcard, true},
		{now + 5, now + 5, false}, // a clock behind: not expired
	} {
		e := &pb.IndexEntry{CleanedMs: tc.cleaned}
		if got := cleanTag(e, now, pol); got != tc.tag {
			t.Errorf("cleaned %d: tag %d, want %d", tc.cleaned, got, tc.tag)
		}
		if got := horizonPassed(e, now, pol); got != tc.expired {
			t.Errorf("cleaned %d: expired %v", tc.cleaned, got)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	p := parsePolicy(nil)
	if !p.delete || p.compact || p.retentionMs != defaultRetentionMs || p.retentionBytes != -1 || p.segmentBytes != 1<<30 ||
		p.dirtyRatio != 0.5 || p.maxLagMs != math.MaxInt64 || p.deleteRetention != 86_400_000 {
		t.Fatalf("defaults %+v", p)
	}
	p = parsePolicy(map[string]string{"cleanup.policy": "compact", "segment.bytes": "1000", "retention.ms": "-1", "min.cleanable.dirty.ratio": "0.1", "retention.bytes": "junk"})
	if p.delete || !p.compact || p.segmentBytes != 1000 || p.retentionMs != -1 || p.dirtyRatio != 0.1 || p.retentionBytes != -1 {
		t.Fatalf("parsed %+v", p)
	}
	if p := parsePolicy(map[string]string{"cleanup.policy": "compact, delete"}); !p.delete || !p.compact {
		t.Fatalf("both %+v", p)
	}
	cfg := DefaultConfig()
	if got := parsePolicy(nil).l1Target(&cfg); got != 64<<20 {
		t.Fatalf("l1 target %d", got)
	}
}

func TestAbortedSet(t *testing.T) {
	set := abortedSet{7: {{ProducerId: 7, FirstOffset: 10, LastOffset: 20}, {ProducerId: 7, FirstOffset: 30, LastOffset: 35}}}
	for off, want := range map[int64]bool{9: false, 10: true, 19: true, 20: true, 25: false, 30: true, 36: false} {
		if got := set.has(7, off); got != want {
			t.Errorf("offset %d: %v", off, got)
		}
	}
	if set.has(8, 15) {
		t.Error("another producer's offset aborted")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	err := Config{L0MaxEntries: -1, BlockBytes: -5, GCLimit: 1 << 20, MaxMergeEntries: 1 << 20, CommitWait: -time.Second}.Validate()
	for _, want := range []string{"L0MaxEntries", "BlockBytes", "GCLimit", "MaxMergeEntries", "CommitWait"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
