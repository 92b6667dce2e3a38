package agent

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"testing"
	"time"
	"weak"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// batchOf encodes one v2 record batch holding values (keys k0, k1, ...), each record
// at baseTs + its index milliseconds.
func batchOf(t testing.TB, codec objectlog.Codec, baseTs int64, values ...string) []byte {
	t.Helper()
	var recs []byte
	for i, v := range values {
		recs = objectlog.AppendRecord(recs, &objectlog.Record{
			TimestampDelta: int64(i),
			OffsetDelta:    int32(i),
			Key:            fmt.Appendf(nil, "k%d", i),
			Value:          []byte(v),
		})
	}
	b, err := objectlog.AppendBatch(nil, objectlog.BatchHeader{
		LastOffsetDelta: int32(len(values) - 1),
		BaseTimestamp:   baseTs,
		MaxTimestamp:    baseTs + int64(len(values)-1),
		ProducerID:      -1,
		ProducerEpoch:   -1,
		BaseSequence:    -1,
		RecordCount:     int32(len(values)),
	}, codec, recs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func createTopic(t testing.TB, s *Server, name string, partitions int32, configs map[string]*string) {
	t.Helper()
	resp, err := adminClient(t, s).CreateTopic(testContext(t), partitions, 1, configs, name)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", name, err, resp.Err)
	}
}

// topicIDOf is a topic's id as the agent knows it (zero when unknown): franz-go sends
// the newest versions, which name topics by id.
func topicIDOf(s *Server, topic string) [16]byte {
	if ti, err := s.cat.topic(context.Background(), topic); err == nil && ti != nil {
		return ti.id
	}
	return [16]byte{}
}

func produceRaw(t testing.TB, s *Server, cl *kgo.Client, acks int16, topic string, parts map[int32][]byte) *kmsg.ProduceResponse {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Acks = acks
	req.TimeoutMillis = 10_000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, topicIDOf(s, topic)
	for _, p := range slices.Sorted(maps.Keys(parts)) {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = p
		rp.Records = parts[p]
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testContext(t), cl)
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	return resp
}

func fetchRaw(t testing.TB, s *Server, cl *kgo.Client, topic string, partition int32, offset int64, mutate func(*kmsg.FetchRequest)) *kmsg.FetchResponse {
	t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = 0
	req.MaxBytes = 50 << 20
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, topicIDOf(s, topic)
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = partition
	rp.FetchOffset = offset
	rp.PartitionMaxBytes = 10 << 20
	rp.CurrentLeaderEpoch = -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	if mutate != nil {
		mutate(req)
	}
	resp, err := req.RequestWith(testContext(t), cl)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	return resp
}

// batchesOf decodes a fetch's records: each batch's base offset and values.
func batchesOf(t testing.TB, records []byte) (bases []int64, values []string, codecs []objectlog.Codec) {
	t.Helper()
	for b, err := range objectlog.Batches(records) {
		if err != nil {
			t.Fatalf("fetched batch: %v", err)
		}
		recs, err := b.Records(nil, 1<<20)
		if err != nil {
			t.Fatalf("fetched records: %v", err)
		}
		bases = append(bases, b.BaseOffset)
		codecs = append(codecs, b.Attributes.Codec())
		for _, r := range recs {
			values = append(values, string(r.Value))
		}
	}
	return bases, values, codecs
}

// A bad CRC fails its own partition with CORRUPT_MESSAGE; the other partition in the
// same request is written.
func TestProduceCorruptBatchFailsOnlyItsPartition(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "crc", 2, nil)
	cl := kafkaClient(t, s)
	good := batchOf(t, objectlog.CodecNone, 1000, "a", "b")
	bad := batchOf(t, objectlog.CodecNone, 1000, "c")
	bad[len(bad)-1] ^= 0xff // inside the records: the CRC no longer matches
	resp := produceRaw(t, s, cl, -1, "crc", map[int32][]byte{0: good, 1: bad})
	p0, p1 := resp.Topics[0].Partitions[0], resp.Topics[0].Partitions[1]
	if p0.ErrorCode != 0 || p0.BaseOffset != 0 {
		t.Fatalf("good partition: error %v, base offset %d; want none, 0", kerr.ErrorForCode(p0.ErrorCode), p0.BaseOffset)
	}
	if p1.ErrorCode != kerr.CorruptMessage.Code {
		t.Fatalf("bad partition: error %v, want CORRUPT_MESSAGE", kerr.ErrorForCode(p1.ErrorCode))
	}
	f := fetchRaw(t, s, cl, "crc", 0, 0, nil)
	if _, vals, _ := batchesOf(t, f.Topics[0].Partitions[0].RecordBatches); fmt.Sprint(vals) != "[a b]" {
		t.Fatalf("partition 0 holds %v, want [a b]", vals)
	}
	if hw := fetchRaw(t, s, cl, "crc", 1, 0, nil).Topics[0].Partitions[0].HighWatermark; hw != 0 {
		t.Fatalf("partition 1 high watermark %d after a refused batch, want 0", hw)
	}
}

func TestProduceRefusals(t *testing.T) {
	s := startAgent(t, withConfig(func(c *Config) { c.AutoCreateTopics = false }))
	limit := "2048"
	createTopic(t, s, "small", 1, map[string]*string{"max.message.bytes": &limit})
	cl := kafkaClient(t, s)
	big := batchOf(t, objectlog.CodecNone, 1, string(bytes.Repeat([]byte("x"), 4096)))
	cases := []struct {
		name  string
		topic string
		acks  int16
		batch []byte
		want  int16
	}{
		{"over max.message.bytes", "small", -1, big, kerr.MessageTooLarge.Code},
		{"missing topic, auto-create off", "missing", -1, batchOf(t, 0, 1, "v"), kerr.UnknownTopicOrPartition.Code},
		{"empty records", "small", -1, []byte{}, kerr.InvalidRecord.Code},
		{"truncated batch", "small", -1, batchOf(t, 0, 1, "v")[:40], kerr.CorruptMessage.Code},
		{"control batch from a client", "small", -1, controlBatch(t), kerr.InvalidRecord.Code},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := produceRaw(t, s, cl, tc.acks, tc.topic, map[int32][]byte{0: tc.batch})
			if got := resp.Topics[0].Partitions[0].ErrorCode; got != tc.want {
				t.Fatalf("error %v, want %v", kerr.ErrorForCode(got), kerr.ErrorForCode(tc.want))
			}
		})
	}
	// Metadata for a missing topic with auto-create off: UNKNOWN_TOPIC_OR_PARTITION.
	mreq := kmsg.NewPtrMetadataRequest()
	name := "missing"
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = &name
	mreq.Topics = append(mreq.Topics, mt)
	mreq.AllowAutoTopicCreation = true
	mresp, err := mreq.RequestWith(testContext(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if got := mresp.Topics[0].ErrorCode; got != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("metadata of a missing topic: %v, want UNKNOWN_TOPIC_OR_PARTITION", kerr.ErrorForCode(got))
	}
}

// acks=0 gets no answer, and the data is written all the same.
func TestProduceAcksZero(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "fire", 1, nil)
	// franz-go sends the acks of its configuration, whatever the request says.
	cl := kafkaClient(t, s, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	req := kmsg.NewPtrProduceRequest()
	req.Acks = 0
	req.TimeoutMillis = 10_000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = "fire", topicIDOf(s, "fire")
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batchOf(t, objectlog.CodecNone, 1, "x", "y", "z")
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	// franz-go does not wait for an acks=0 answer; the request returns once sent.
	if _, err := req.RequestWith(testContext(t), cl); err != nil {
		t.Fatalf("acks=0 produce: %v", err)
	}
	ctx := testContext(t)
	for {
		f := fetchRaw(t, s, cl, "fire", 0, 0, func(r *kmsg.FetchRequest) { r.MaxWaitMillis = 1000; r.MinBytes = 1 })
		if _, vals, _ := batchesOf(t, f.Topics[0].Partitions[0].RecordBatches); len(vals) > 0 {
			if fmt.Sprint(vals) != "[x y z]" {
				t.Fatalf("fetched %v, want [x y z]", vals)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatal("acks=0 records never became visible")
		}
	}
}

// A topic whose compression.type is not "producer" stores its batches recompressed.
func TestProduceRecompressesToTopicCodec(t *testing.T) {
	s := startAgent(t)
	zstd := "zstd"
	createTopic(t, s, "zst", 1, map[string]*string{"compression.type": &zstd})
	cl := kafkaClient(t, s)
	resp := produceRaw(t, s, cl, -1, "zst", map[int32][]byte{0: batchOf(t, objectlog.CodecGzip, 7, "one", "two")})
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatalf("produce: %v", kerr.ErrorForCode(code))
	}
	f := fetchRaw(t, s, cl, "zst", 0, 0, nil)
	_, vals, codecs := batchesOf(t, f.Topics[0].Partitions[0].RecordBatches)
	if fmt.Sprint(vals) != "[one two]" || len(codecs) != 1 || codecs[0] != objectlog.CodecZstd {
		t.Fatalf("fetched %v with codecs %v, want [one two] in one zstd batch", vals, codecs)
	}
}

// Offsets are contiguous across many concurrent producers and partitions, and every
// acknowledged record reads back at its acknowledged offset.
func TestProduceConcurrentOffsets(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "many", 4, nil)
	const producers, perProducer = 4, 50
	type acked struct {
		partition int32
		offset    int64
		value     string
	}
	results := make(chan acked, producers*perProducer)
	errs := make(chan error, producers)
	for p := range producers {
		cl := kafkaClient(t, s, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		go func() {
			ctx := testContext(t)
			for i := range perProducer {
				r := &kgo.Record{Topic: "many", Partition: int32(i % 4), Value: fmt.Appendf(nil, "p%d-%d", p, i)}
				res := cl.ProduceSync(ctx, r)
				if err := res.FirstErr(); err != nil {
					errs <- err
					return
				}
				results <- acked{r.Partition, r.Offset, string(r.Value)}
			}
			errs <- nil
		}()
	}
	for range producers {
		if err := <-errs; err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	close(results)
	want := map[int32]map[int64]string{}
	for a := range results {
		if want[a.partition] == nil {
			want[a.partition] = map[int64]string{}
		}
		if prev, dup := want[a.partition][a.offset]; dup {
			t.Fatalf("offset %d of partition %d acknowledged twice: %q and %q", a.offset, a.partition, prev, a.value)
		}
		want[a.partition][a.offset] = a.value
	}
	cl := kafkaClient(t, s)
	for p, offs := range want {
		f := fetchRaw(t, s, cl, "many", p, 0, nil)
		bases, vals, _ := batchesOf(t, f.Topics[0].Partitions[0].RecordBatches)
		if len(vals) != len(offs) {
			t.Fatalf("partition %d: fetched %d records, %d acknowledged (batches at %v)", p, len(vals), len(offs), bases)
		}
		for off, v := range vals {
			if offs[int64(off)] != v {
				t.Fatalf("partition %d offset %d: fetched %q, acknowledged %q", p, off, v, offs[int64(off)])
			}
		}
	}
}

// controlBatch is a commit marker batch, which only the broker may write.
func controlBatch(t testing.TB) []byte {
	rec := objectlog.AppendRecord(nil, &objectlog.Record{Key: []byte{0, 0, 0, 1}, Value: []byte{0, 0, 0, 0, 0, 0}})
	b, err := objectlog.AppendBatch(nil, objectlog.BatchHeader{
		Attributes: objectlog.AttrControl | objectlog.AttrTransactional, BaseTimestamp: 1, MaxTimestamp: 1,
		ProducerID: 5, ProducerEpoch: 0, BaseSequence: -1, RecordCount: 1,
	}, objectlog.CodecNone, rec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// message.timestamp.type=LogAppendTime: batches are stamped on arrival and the
// response carries the stamp.
func TestProduceLogAppendTime(t *testing.T) {
	s := startAgent(t)
	typ := "LogAppendTime"
	createTopic(t, s, "stamped", 1, map[string]*string{"message.timestamp.type": &typ})
	cl := kafkaClient(t, s)
	before := time.Now().UnixMilli()
	resp := produceRaw(t, s, cl, -1, "stamped", map[int32][]byte{0: batchOf(t, objectlog.CodecNone, 42, "a", "b")})
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || p.LogAppendTime < before || p.LogAppendTime > time.Now().UnixMilli() {
		t.Fatalf("produce: error %v, log append time %d; want a time after %d", kerr.ErrorForCode(p.ErrorCode), p.LogAppendTime, before)
	}
	f := fetchRaw(t, s, cl, "stamped", 0, 0, nil)
	for b, err := range objectlog.Batches(f.Topics[0].Partitions[0].RecordBatches) {
		if err != nil {
			t.Fatal(err)
		}
		if !b.Attributes.LogAppendTime() || b.MaxTimestamp != p.LogAppendTime {
			t.Fatalf("stored batch: log append time %v, max timestamp %d; want true, %d", b.Attributes.LogAppendTime(), b.MaxTimestamp, p.LogAppendTime)
		}
	}
}

// A segment that committed is never reported as timed out, even when the request's
// deadline passes at the same moment (select would otherwise pick either).
func TestTicketOutcomeBeatsSimultaneousTimeout(t *testing.T) {
	seg := &segBuf{done: make(chan struct{}), results: map[partKey]*pb.ChunkResult{{}: {BaseOffset: 40}}}
	close(seg.done)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 200 {
		base, _, err := (&ticket{seg: seg, relative: 2}).wait(ctx)
		if err != nil || base != 42 {
			t.Fatalf("committed ticket: base %d, err %v; want 42, nil", base, err)
		}
	}
}

// Recompression cannot smuggle a batch past max.message.bytes: the limit applies to
// what is stored.
func TestProduceRecompressedBatchTooLarge(t *testing.T) {
	s := startAgent(t)
	none, limit := "uncompressed", "4096"
	createTopic(t, s, "inflate", 1, map[string]*string{"compression.type": &none, "max.message.bytes": &limit})
	cl := kafkaClient(t, s)
	zeros := string(make([]byte, 64<<10)) // compresses to a few hundred bytes
	resp := produceRaw(t, s, cl, -1, "inflate", map[int32][]byte{0: batchOf(t, objectlog.CodecZstd, 1, zeros)})
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.MessageTooLarge.Code {
		t.Fatalf("a batch inflating past max.message.bytes: %v, want MESSAGE_TOO_LARGE", kerr.ErrorForCode(code))
	}
}

// TestCommittedSegmentIsReleased: once a segment is committed and its producers
// answered, nothing keeps it (and with it every produce frame its batches are slices
// of) alive. The cached index entries of a segment the agent wrote once pointed into
// it, and the agent's heap grew with everything ever produced.
func TestCommittedSegmentIsReleased(t *testing.T) {
	s := startAgent(t, withConfig(func(c *Config) { c.Linger = 50 * time.Millisecond }))
	createTopic(t, s, "released", 1, nil)
	cl := kafkaClient(t, s)
	ctx := testContext(t)
	// A fetch first: the agent caches index entries of partitions it serves.
	fetchRaw(t, s, cl, "released", 0, 0, nil)
	// Several segments: whether the agent's own entry or the watch's copy of it is
	// cached last is a race, and only the last is kept.
	var segs []weak.Pointer[segBuf]
	for i := range 20 {
		acked := make(chan error, 1)
		cl.Produce(ctx, &kgo.Record{Topic: "released", Value: []byte("v")}, func(_ *kgo.Record, err error) { acked <- err })
		var seg weak.Pointer[segBuf]
		for seg.Value() == nil {
			s.w.mu.Lock()
			if s.w.open != nil {
				seg = weak.Make(s.w.open)
			}
			s.w.mu.Unlock()
			if ctx.Err() != nil {
				t.Fatalf("record %d never reached an open segment", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
		if err := <-acked; err != nil {
			t.Fatal(err)
		}
		segs = append(segs, seg)
	}
	// The records are served from the agent's cache, through the entries it indexed.
	if f := fetchRaw(t, s, cl, "released", 0, 0, nil); len(f.Topics[0].Partitions[0].RecordBatches) == 0 {
		t.Fatal("the records are not fetched")
	}
	for i := 0; ; i++ {
		alive := 0
		for _, seg := range segs {
			if seg.Value() != nil {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if i == 100 {
			t.Fatalf("%d of %d committed segments still reachable after 100 collections", alive, len(segs))
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// The produce path's stage histograms: with a 40 ms linger and PUTs delayed 30 ms,
// every committed segment has one observation per segment stage, its linger at least
// the configured one and its upload at least the PUT's delay; every acknowledged
// request has one produce observation at least as long as both.
func TestStageLatencies(t *testing.T) {
	const linger, put = 40 * time.Millisecond, 30 * time.Millisecond
	store := objstore.NewFaulty(objstore.NewMemory(), 1)
	store.Set(objstore.OpPut, objstore.OpFaults{Latency: objstore.Fixed(put)})
	s := startAgent(t, withStore(store), withConfig(func(c *Config) { c.Linger = linger }))
	createTopic(t, s, "stages", 2, nil)
	cl := kafkaClient(t, s, kgo.ProducerLinger(0))
	ctx := testContext(t)
	const requests = 5
	for i := range requests {
		r := &kgo.Record{Topic: "stages", Partition: int32(i % 2), Value: []byte("v")}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	segs := uint64(st.SegmentsCommitted)
	if segs < requests {
		t.Fatalf("%d segments committed for %d requests one after another", segs, requests)
	}
	for stage, h := range st.Stages {
		if len(h.Counts) != len(StageBuckets)+1 {
			t.Fatalf("%v: %d counts for %d buckets", Stage(stage), len(h.Counts), len(StageBuckets))
		}
		var n uint64
		for _, c := range h.Counts {
			n += c
		}
		if n != h.Count {
			t.Fatalf("%v: counts add up to %d, Count %d", Stage(stage), n, h.Count)
		}
	}
	least := func(stage Stage, count uint64, min time.Duration) {
		t.Helper()
		h := st.Stages[stage]
		if h.Count != count {
			t.Fatalf("%v: %d observations, want %d", stage, h.Count, count)
		}
		var below uint64
		for i, b := range StageBuckets {
			if b < min {
				below += h.Counts[i]
			}
		}
		if below > 0 || h.Sum < time.Duration(count)*min {
			t.Fatalf("%v: %d observations under %v (sum %v of %d)", stage, below, min, h.Sum, count)
		}
	}
	least(StageLinger, segs, linger)
	least(StageUpload, segs, put)
	least(StageCommitQueue, segs, 0)
	least(StageCommit, segs, 0)
	if h := st.Stages[StageProduce]; h.Count < requests || h.Sum < time.Duration(requests)*(linger+put) {
		t.Fatalf("produce: %d observations, sum %v, want at least %d and %v", h.Count, h.Sum, requests, time.Duration(requests)*(linger+put))
	}
}

// heldCommitAnswer holds every CommitSegment answer back after the commit happened,
// until release closes (or 10 s pass), so the watch announces a segment's entries
// before its writer hears back.
type heldCommitAnswer struct {
	Metastore
	release <-chan struct{}
}

func (h heldCommitAnswer) CommitSegment(ctx context.Context, req *pb.CommitSegmentRequest) (*pb.CommitSegmentResponse, error) {
	resp, err := h.Metastore.CommitSegment(ctx, req)
	select {
	case <-h.release:
	case <-time.After(10 * time.Second):
	}
	return resp, err
}

// A consumer woken by the watch before the agent's own commit returns reads the
// new records from the agent's memory, not with a GET of what it just stored.
func TestFetchOwnSegmentWhileCommitting(t *testing.T) {
	store := objstore.NewCounting(objstore.NewMemory())
	release := make(chan struct{})
	s := startAgent(t, withStore(store), withMetastore(func(m Metastore) Metastore { return heldCommitAnswer{m, release} }))
	createTopic(t, s, "own", 1, nil)
	ctx := testContext(t)
	consumer := kafkaClient(t, s, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"own": {0: kgo.NewOffset().At(0)}}))
	producer := kafkaClient(t, s, kgo.DefaultProduceTopic("own"))
	got := make(chan string, 1)
	go func() {
		for ctx.Err() == nil {
			fs := consumer.PollFetches(ctx)
			if r := fs.Records(); len(r) > 0 {
				got <- string(r[0].Value)
				return
			}
		}
	}()
	acked := make(chan error, 1)
	producer.Produce(ctx, &kgo.Record{Value: []byte("fresh")}, func(_ *kgo.Record, err error) { acked <- err })
	select {
	case v := <-got:
		if v != "fresh" {
			t.Fatalf("consumed %q", v)
		}
	case <-ctx.Done():
		t.Fatal("nothing consumed")
	}
	select {
	case err := <-acked:
		t.Fatalf("the produce was answered (%v) before the record was consumed: the commit's answer was not held back", err)
	default:
	}
	if n := store.Counts().Requests[objstore.OpGetRange]; n != 0 || s.stats.storedReads.Load() == 0 {
		t.Fatalf("%d ranged GETs, %d reads from the committing segment", n, s.stats.storedReads.Load())
	}
	close(release)
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
}
