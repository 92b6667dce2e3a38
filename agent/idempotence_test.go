package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// idemBatch is a batch of the producer's records with sequences from seq.
func idemBatch(t testing.TB, pid int64, epoch int16, seq int32, values ...string) []byte {
	t.Helper()
	var recs []byte
	for i, v := range values {
		recs = objectlog.AppendRecord(recs, &objectlog.Record{OffsetDelta: int32(i), Value: []byte(v)})
	}
	b, err := objectlog.AppendBatch(nil, objectlog.BatchHeader{LastOffsetDelta: int32(len(values) - 1),
		BaseTimestamp: 1000, MaxTimestamp: 1000, ProducerID: pid, ProducerEpoch: epoch, BaseSequence: seq,
		RecordCount: int32(len(values))}, objectlog.CodecNone, recs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIdempotentProduceRaw: a retried batch is acknowledged at its first offset and
// stored once; a gap and a producer id never issued are refused; the fetched log is
// contiguous, each record once.
func TestIdempotentProduceRaw(t *testing.T) {
	// A linger long enough for two concurrent requests to share a segment.
	s := startAgent(t, withConfig(func(c *Config) { c.Linger = 100 * time.Millisecond }))
	createTopic(t, s, "idem", 1, nil)
	cl := kafkaClient(t, s)
	ctx := testContext(t)
	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionTimeoutMillis = 60_000
	iresp, err := init.RequestWith(ctx, cl)
	if err != nil || iresp.ErrorCode != 0 {
		t.Fatalf("init producer id: %v %v", iresp, err)
	}
	pid, epoch := iresp.ProducerID, iresp.ProducerEpoch

	produce := func(batch []byte) (int64, int16) {
		t.Helper()
		resp := produceRaw(t, s, cl, -1, "idem", map[int32][]byte{0: batch})
		p := resp.Topics[0].Partitions[0]
		return p.BaseOffset, p.ErrorCode
	}
	first := idemBatch(t, pid, epoch, 0, "a", "b")
	if off, code := produce(first); code != 0 || off != 0 {
		t.Fatalf("first batch: offset %d code %d", off, code)
	}
	if off, code := produce(first); code != 0 || off != 0 {
		t.Fatalf("its retry: offset %d code %d, want the original offset 0", off, code)
	}
	if off, code := produce(idemBatch(t, pid, epoch, 2, "c")); code != 0 || off != 2 {
		t.Fatalf("next batch: offset %d code %d", off, code)
	}
	if _, code := produce(idemBatch(t, pid, epoch, 9, "gap")); code != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("a gap: code %d", code)
	}
	if _, code := produce(idemBatch(t, pid+100, 0, 0, "stranger")); code != kerr.UnknownProducerID.Code {
		t.Fatalf("an unknown producer id: code %d", code)
	}
	if _, code := produce(idemBatch(t, pid, epoch+1, 0, "future")); code != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("an epoch never issued: code %d", code)
	}
	// A plain batch after all that lands right after the accepted ones.
	if off, code := produce(batchOf(t, objectlog.CodecNone, 1000, "plain")); code != 0 || off != 3 {
		t.Fatalf("plain batch: offset %d code %d", off, code)
	}
	// A retry and a new batch in one segment: the chunk is indexed without the
	// retry, and what is fetched (from storage: such chunks skip the agent's own
	// cache) resolves to contiguous offsets.
	type res struct {
		off  int64
		code int16
	}
	dup, next := make(chan res, 1), make(chan res, 1)
	go func() { o, c := produce(first); dup <- res{o, c} }()
	time.Sleep(30 * time.Millisecond) // the retry first in the chunk, well within the linger
	go func() { o, c := produce(idemBatch(t, pid, epoch, 3, "d", "e")); next <- res{o, c} }()
	if r := <-dup; r.code != 0 || r.off != 0 {
		t.Fatalf("concurrent retry: %v", r)
	}
	if r := <-next; r.code != 0 || r.off != 4 {
		t.Fatalf("concurrent next batch: %v", r)
	}
	fr := fetchRaw(t, s, cl, "idem", 0, 0, nil)
	bases, values, _ := batchesOf(t, fr.Topics[0].Partitions[0].RecordBatches)
	if fmt.Sprint(values) != "[a b c plain d e]" || fmt.Sprint(bases) != "[0 2 3 4]" {
		t.Fatalf("log: values %v bases %v", values, bases)
	}
	// The last entry starts after the retry's bytes: fetching it resolved offsets
	// from inside a chunk.
	tid := topicIDOf(s, "idem")
	lk, err := s.meta.Lookup(ctx, &pb.LookupRequest{TopicId: tid[:], MaxEntries: 100})
	if err != nil || len(lk.Entries) != 4 || lk.Entries[3].BaseOffset != 4 || lk.Entries[3].Position == 0 {
		t.Fatalf("index: %v %v, want the last entry (4-5) to start inside its chunk", lk, err)
	}
	if fr := fetchRaw(t, s, cl, "idem", 0, 5, nil); fr.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("fetch from inside the last batch: %v", fr.Topics[0].Partitions[0].ErrorCode)
	}
	// A transactional id needs a timeout in (0, transaction.max.timeout.ms], and
	// cannot be empty.
	txn := kmsg.NewPtrInitProducerIDRequest()
	txn.TransactionalID = kmsg.StringPtr("tx")
	if r, err := txn.RequestWith(ctx, cl); err != nil || r.ErrorCode != kerr.InvalidTransactionTimeout.Code {
		t.Fatalf("transactional init without a timeout: %v %v", r, err)
	}
	txn.TransactionalID, txn.TransactionTimeoutMillis = kmsg.StringPtr(""), 1000
	if r, err := txn.RequestWith(ctx, cl); err != nil || r.ErrorCode != kerr.InvalidRequest.Code {
		t.Fatalf("transactional init with an empty id: %v %v", r, err)
	}
}

// TestIdempotentProducerRetriesWriteOnce: storage turns slow for a second, longer
// than franz-go's produce request timeout, so its idempotent producer retries
// batches whose first attempts are still on their way to commit. Every record is
// stored exactly once, in order.
func TestIdempotentProducerRetriesWriteOnce(t *testing.T) {
	faulty := objstore.NewFaulty(objstore.NewMemory(), 1)
	s := startAgent(t, withStore(faulty))
	createTopic(t, s, "retried", 2, nil)
	cl := kafkaClient(t, s, kgo.ProduceRequestTimeout(150*time.Millisecond), kgo.RecordDeliveryTimeout(30*time.Second),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	ctx := testContext(t)
	faulty.Set(objstore.OpPut, objstore.OpFaults{Latency: objstore.Fixed(400 * time.Millisecond)})
	go func() {
		time.Sleep(time.Second)
		faulty.Set(objstore.OpPut, objstore.OpFaults{})
	}()
	const n = 60
	results := make(chan error, n)
	for i := range n {
		cl.Produce(ctx, &kgo.Record{Topic: "retried", Partition: int32(i % 2), Value: fmt.Appendf(nil, "%d", i)},
			func(_ *kgo.Record, err error) { results <- err })
		time.Sleep(20 * time.Millisecond) // spread over the slow second and after it
	}
	for range n {
		if err := <-results; err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	for p := range int32(2) {
		fr := fetchRaw(t, s, cl, "retried", p, 0, nil)
		_, values, _ := batchesOf(t, fr.Topics[0].Partitions[0].RecordBatches)
		var want []string
		for i := int(p); i < n; i += 2 {
			want = append(want, fmt.Sprint(i))
		}
		if fmt.Sprint(values) != fmt.Sprint(want) {
			t.Fatalf("partition %d holds %v, want each record once in order: %v", p, values, want)
		}
	}
}

// TestIdempotentChunksServedHot: chunks of idempotent producers that went into the
// index whole are served from the agent's own cache, as plain ones are: a consumer
// at the tail costs no GET.
func TestIdempotentChunksServedHot(t *testing.T) {
	counting := objstore.NewCounting(objstore.NewMemory())
	s := startAgent(t, withStore(counting))
	createTopic(t, s, "hot", 1, nil)
	cl := kafkaClient(t, s)
	ctx := testContext(t)
	for i := range 5 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "hot", Value: fmt.Appendf(nil, "%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	fr := fetchRaw(t, s, cl, "hot", 0, 0, nil)
	if _, values, _ := batchesOf(t, fr.Topics[0].Partitions[0].RecordBatches); len(values) != 5 {
		t.Fatalf("fetched %v", values)
	}
	if c := counting.Counts(); c.Requests[objstore.OpGetRange] != 0 || c.Requests[objstore.OpGet] != 0 {
		t.Fatalf("fetching just-produced idempotent data cost %d GETs and %d ranged GETs", c.Requests[objstore.OpGet], c.Requests[objstore.OpGetRange])
	}
}
