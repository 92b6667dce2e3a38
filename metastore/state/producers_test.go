package state

import (
	"testing"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func initProducer(a *applier, pid int64, epoch int32) *pb.ProducerRecord {
	a.t.Helper()
	r := a.apply(&pb.Command{Op: &pb.Command_InitProducer{InitProducer: &pb.InitProducerCommand{ProducerId: pid, ProducerEpoch: epoch}}})
	if r.Err != nil {
		a.t.Fatalf("init producer: %v", r.Err)
	}
	return r.Producer
}

// pbatch is a 10-byte batch of n records from producer pid at epoch and sequence seq
// (pid -1: a plain producer).
type pbatch struct {
	pid   int64
	epoch int32
	seq   int32
	n     int32
}

// idemChunk is a chunk of partition 0 of topic 1 at pos holding the batches back
// to back, 10 bytes each.
func idemChunk(pos int64, batches ...pbatch) *pb.ChunkCommit {
	c := &pb.ChunkCommit{TopicId: id(1), Partition: 0, Position: pos, Length: 10 * int64(len(batches))}
	for _, b := range batches {
		c.Batches = append(c.Batches, &pb.BatchInfo{OffsetCount: b.n, RecordCount: b.n, ProducerId: b.pid,
			ProducerEpoch: b.epoch, BaseSequence: b.seq, Size: 10})
	}
	return c
}

func commitChunkOf(a *applier, seg byte, c *pb.ChunkCommit) *pb.ChunkResult {
	a.t.Helper()
	r := a.apply(commit(id(seg), c))
	if r.Err != nil || len(r.Commits) != 1 || len(r.Commits[0].Chunks) != 1 {
		a.t.Fatalf("commit: %v", r)
	}
	return r.Commits[0].Chunks[0]
}

func TestIdempotentProducerDuplicatesAndGaps(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	p := initProducer(a, -1, 0)
	if p.ProducerId != 0 || p.Epoch != 0 {
		t.Fatalf("first producer: %v", p)
	}
	if q := initProducer(a, -1, 0); q.ProducerId != 1 {
		t.Fatalf("second producer id %d", q.ProducerId)
	}

	// Segment 1: a plain batch, then the producer's batches 0-2 and 3-4.
	r := commitChunkOf(a, 1, idemChunk(0, pbatch{-1, -1, -1, 2}, pbatch{0, 0, 0, 3}, pbatch{0, 0, 3, 2}))
	if r.Error != 0 || r.BaseOffset != 0 || r.LastOffset != 6 || len(r.Batches) != 3 || r.Batches[1].BaseOffset != 2 || r.Batches[2].BaseOffset != 5 {
		t.Fatalf("first chunk: %v", r)
	}
	// Segment 2, through another agent after a lost answer: the retry of 3-4 (a
	// duplicate), a plain batch, and the next batch 5.
	r = commitChunkOf(a, 2, idemChunk(0, pbatch{0, 0, 3, 2}, pbatch{-1, -1, -1, 1}, pbatch{0, 0, 5, 1}))
	if r.Error != 0 || !r.Batches[0].Duplicate || r.Batches[0].BaseOffset != 5 || r.Batches[1].BaseOffset != 7 || r.Batches[2].BaseOffset != 8 {
		t.Fatalf("chunk with a duplicate: %v", r)
	}
	lk, err := a.s.Lookup(id(1), 0, 0, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The duplicate is left out: segment 2 has one entry for bytes [10,30), offsets 7-8.
	if len(lk.Entries) != 2 || lk.Entries[1].Position != 10 || lk.Entries[1].Length != 20 || lk.Entries[1].BaseOffset != 7 || lk.Entries[1].LastOffset != 8 || lk.Head.NextOffset != 9 {
		t.Fatalf("index: %v", lk)
	}
	// A gap, a sequence that is not 0 in a new partition state, an unknown
	// producer, a stale epoch, an epoch never issued: each left out with its code,
	// the plain batch between them still appended.
	cases := []struct {
		b    pbatch
		want pb.ErrorCode
	}{
		{pbatch{0, 0, 9, 1}, pb.ErrorCode_OUT_OF_ORDER_SEQUENCE_NUMBER},
		{pbatch{1, 0, 4, 1}, pb.ErrorCode_OUT_OF_ORDER_SEQUENCE_NUMBER},
		{pbatch{77, 0, 0, 1}, pb.ErrorCode_UNKNOWN_PRODUCER_ID},
		{pbatch{0, 3, 0, 1}, pb.ErrorCode_INVALID_PRODUCER_EPOCH},
	}
	for i, c := range cases {
		r = commitChunkOf(a, byte(10+i), idemChunk(0, c.b, pbatch{-1, -1, -1, 1}))
		if r.Batches[0].Error != c.want || r.Batches[1].Error != 0 || r.Batches[1].BaseOffset != int64(9+i) {
			t.Fatalf("case %d (%v): %v, want %v", i, c.b, r.Batches, c.want)
		}
	}
	// A new epoch (KIP-360 bump) starts at sequence 0; the old epoch is fenced.
	p2 := initProducer(a, 0, 0)
	if p2.ProducerId != 0 || p2.Epoch != 1 {
		t.Fatalf("bump: %v", p2)
	}
	r = commitChunkOf(a, 20, idemChunk(0, pbatch{0, 1, 0, 1}, pbatch{0, 0, 6, 1}))
	if r.Batches[0].Error != 0 || r.Batches[1].Error != pb.ErrorCode_INVALID_PRODUCER_EPOCH {
		t.Fatalf("after the bump: %v", r.Batches)
	}
	if r := a.apply(&pb.Command{Op: &pb.Command_InitProducer{InitProducer: &pb.InitProducerCommand{ProducerId: 0, ProducerEpoch: 0}}}); r.Err == nil || r.Err.Code != pb.ErrorCode_INVALID_PRODUCER_EPOCH {
		t.Fatalf("bump from a stale epoch: %v", r.Err)
	}
	// A chunk whose batches are all duplicates commits nothing and moves nothing.
	before, _ := a.s.Lookup(id(1), 0, 0, 100, 0)
	r = commitChunkOf(a, 21, idemChunk(0, pbatch{0, 1, 0, 1}))
	after, _ := a.s.Lookup(id(1), 0, 0, 100, 0)
	if !r.Batches[0].Duplicate || len(after.Entries) != len(before.Entries) || after.Head.NextOffset != before.Head.NextOffset {
		t.Fatalf("all-duplicate chunk: %v, entries %d -> %d", r, len(before.Entries), len(after.Entries))
	}
	// Batches without sizes cannot be left out: refused.
	bad := idemChunk(0, pbatch{0, 1, 1, 1})
	bad.Batches[0].Size = 0
	if r := commitChunkOf(a, 22, bad); r.Error != pb.ErrorCode_INVALID_REQUEST {
		t.Fatalf("sizeless idempotent batch: %v", r)
	}
}

func TestProducerRemembersFiveBatches(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	initProducer(a, -1, 0)
	for i := range int32(7) {
		commitChunkOf(a, byte(1+i), idemChunk(0, pbatch{0, 0, i, 1}))
	}
	// Batches 2-6 are remembered; batch 1 is too old to be known as a duplicate.
	if r := commitChunkOf(a, 30, idemChunk(0, pbatch{0, 0, 2, 1})); !r.Batches[0].Duplicate || r.Batches[0].BaseOffset != 2 {
		t.Fatalf("retry of batch 2: %v", r.Batches[0])
	}
	if r := commitChunkOf(a, 31, idemChunk(0, pbatch{0, 0, 1, 1})); r.Batches[0].Error != pb.ErrorCode_OUT_OF_ORDER_SEQUENCE_NUMBER {
		t.Fatalf("retry of batch 1: %v", r.Batches[0])
	}
}

func TestExpireProducers(t *testing.T) {
	a := newApplier(t)
	a.apply(createTopic("t", id(1), 1, nil))
	idle := initProducer(a, -1, 0)   // writes once, then nothing
	active := initProducer(a, -1, 0) // keeps writing
	unused := initProducer(a, -1, 0) // never writes
	commitChunkOf(a, 1, idemChunk(0, pbatch{idle.ProducerId, 0, 0, 1}))
	commitChunkOf(a, 2, idemChunk(0, pbatch{active.ProducerId, 0, 0, 1}))
	const hour = int64(3_600_000)
	a.now += 2 * hour
	commitChunkOf(a, 3, idemChunk(0, pbatch{active.ProducerId, 0, 1, 1}))
	r := a.apply(&pb.Command{NowMs: a.now + 1, Op: &pb.Command_ExpireProducers{ExpireProducers: &pb.ExpireProducersCommand{ExpirationMs: hour}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	// The idle and the unused producer are forgotten; the active one goes on.
	for _, c := range []struct {
		b    pbatch
		want pb.ErrorCode
	}{
		{pbatch{idle.ProducerId, 0, 1, 1}, pb.ErrorCode_UNKNOWN_PRODUCER_ID},
		{pbatch{unused.ProducerId, 0, 0, 1}, pb.ErrorCode_UNKNOWN_PRODUCER_ID},
		{pbatch{active.ProducerId, 0, 2, 1}, pb.ErrorCode_NONE},
	} {
		if res := commitChunkOf(a, byte(10+c.b.pid), idemChunk(0, c.b)); res.Batches[0].Error != c.want {
			t.Fatalf("producer %d after expiry: %v, want %v", c.b.pid, res.Batches[0], c.want)
		}
	}
	if p := initProducer(a, -1, 0); p.ProducerId != 3 {
		t.Fatalf("ids are never reused: got %d", p.ProducerId)
	}
}
