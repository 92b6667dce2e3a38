package raftlog

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

const benchEntrySize = 4 << 10

func benchPayload() []byte {
	b := make([]byte, benchEntrySize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// BenchmarkStoreLogs appends batches of 4 KiB entries, as a leader does, to a
// store in b.TempDir(). With sync on, every batch waits for a real fsync.
func BenchmarkStoreLogs(b *testing.B) {
	data := benchPayload()
	for _, sync := range []bool{true, false} {
		for _, n := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("sync=%v/batch=%d", sync, n), func(b *testing.B) {
				s := openStore(b, b.TempDir(), Options{NoSync: !sync})
				logs := make([]*raft.Log, n)
				for i := range logs {
					logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
				}
				next := uint64(1)
				b.SetBytes(int64(n * benchEntrySize))
				b.ReportAllocs()
				for b.Loop() {
					now := time.Now()
					for _, l := range logs {
						l.Index, l.AppendedAt = next, now
						next++
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkGetLog reads 4 KiB entries from a log of 4096: "recent" reads
// the last 64 written (a follower one batch behind; they are in the memtable),
// "flushed" reads at random after everything is flushed to sstables (a
// follower far behind).
func BenchmarkGetLog(b *testing.B) {
	const n = 4096
	data := benchPayload()
	s := openStore(b, b.TempDir(), Options{NoSync: true})
	logs := make([]*raft.Log, 0, 64)
	fill := func(from uint64) {
		for i := from; i < from+n; i++ {
			logs = append(logs, &raft.Log{Index: i, Term: 1, Data: data, AppendedAt: time.Now()})
			if len(logs) == cap(logs) {
				if err := s.StoreLogs(logs); err != nil {
					b.Fatal(err)
				}
				logs = logs[:0]
			}
		}
	}
	fill(1)
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	b.Run("flushed", func(b *testing.B) {
		r := rand.New(rand.NewPCG(3, 4))
		var l raft.Log
		b.SetBytes(benchEntrySize)
		b.ReportAllocs()
		for b.Loop() {
			if err := s.GetLog(r.Uint64N(n)+1, &l); err != nil {
				b.Fatal(err)
			}
		}
	})
	fill(n + 1)
	b.Run("recent", func(b *testing.B) {
		r := rand.New(rand.NewPCG(5, 6))
		var l raft.Log
		b.SetBytes(benchEntrySize)
		b.ReportAllocs()
		for b.Loop() {
			if err := s.GetLog(2*n-r.Uint64N(64), &l); err != nil {
				b.Fatal(err)
			}
		}
	})
}
