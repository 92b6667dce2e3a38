package state

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// benchCommits builds commits of 50 chunks each (one per partition of a 50-partition
// topic), the shape of an agent's segment under a spread workload.
func benchCommit(seq uint64, tid []byte, parts int) *pb.Command {
	// Like objectlog.NewSegmentID: milliseconds, then 8 random bytes.
	seg := binary.BigEndian.AppendUint64(nil, 1_700_000_000_000+seq)
	seg = binary.BigEndian.AppendUint64(seg, rand.New(rand.NewPCG(seq, 7)).Uint64()|1)
	chunks := make([]*pb.ChunkCommit, parts)
	for p := range chunks {
		chunks[p] = chunk(tid, int32(p), int64(p)*16384, 1_700_000_000_000+int64(seq), 16, 16)
		chunks[p].Length = 16384
	}
	c := commit(seg, chunks...)
	c.Version, c.NowMs = CommandVersion, 1_700_000_000_000+int64(seq)
	return c
}

// BenchmarkApplyCommit is the state machine's share of CommitSegment: applying one
// 50-chunk commit (Raft and the network excluded).
func BenchmarkApplyCommit(b *testing.B) {
	a := newApplier(b)
	a.apply(createTopic("bench", id(1), 50, nil))
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		a.apply(benchCommit(seq, id(1), 50))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/50, "ns/chunk")
}

// BenchmarkLookup reads the chunk holding a random offset of a 50-partition topic
// with 200,000 index entries, through Pebble's block cache.
func BenchmarkLookup(b *testing.B) {
	a := newApplier(b)
	a.apply(createTopic("bench", id(1), 50, nil))
	const commits = 4000
	for seq := range uint64(commits) {
		a.apply(benchCommit(seq, id(1), 50))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		p := int32(rng.IntN(50))
		off := rng.Int64N(commits * 32)
		lk, err := a.s.Lookup(id(1), p, off, 1, 0)
		if err != nil || lk.Error != pb.ErrorCode_NONE || len(lk.Entries) != 1 {
			b.Fatalf("lookup %d/%d: %v %v", p, off, lk, err)
		}
	}
}

// TestBytesPerIndexEntry reports (and bounds, as the target) the Pebble bytes
// each index entry costs once flushed and compacted: the metastore's growth rate.
func TestBytesPerIndexEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 index entries")
	}
	a := newApplier(t)
	a.apply(createTopic("bench", id(1), 50, nil))
	const commits = 2000
	for seq := range uint64(commits) {
		a.apply(benchCommit(seq, id(1), 50))
	}
	db := a.s.db
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(t.Context(), []byte{0}, []byte{0xff}, true); err != nil {
		t.Fatal(err)
	}
	m := db.Metrics()
	var tableBytes uint64
	for _, l := range m.Levels {
		tableBytes += uint64(l.TablesSize)
	}
	entries := commits * 50
	// Segment records (one per commit, holding the commit's answer) are counted in
	// the total too: they are per-entry cost as well.
	perEntry := float64(tableBytes) / float64(entries)
	t.Logf("%d index entries: %d bytes of sstables, %.1f bytes per entry (segment records included)", entries, tableBytes, perEntry)
	if perEntry > 100 {
		t.Errorf("%.1f bytes per index entry, target <= 100", perEntry)
	}
}

// BenchmarkApplyGroupCommit applies entries carrying 8 commits each, as the server's
// group commit produces under load; the figure is per commit.
func BenchmarkApplyGroupCommit(b *testing.B) {
	a := newApplier(b)
	a.apply(createTopic("bench", id(1), 50, nil))
	const group = 8
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		cmd := &pb.Command{Version: CommandVersion, NowMs: 1_700_000_000_000 + int64(seq), Op: &pb.Command_CommitSegments{CommitSegments: &pb.CommitSegmentsCommand{}}}
		for range group {
			seq++
			one := benchCommit(seq, id(1), 50)
			cmd.GetCommitSegments().Commits = append(cmd.GetCommitSegments().Commits, one.GetCommitSegments().Commits...)
		}
		a.apply(cmd)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*group), "ns/commit")
}
