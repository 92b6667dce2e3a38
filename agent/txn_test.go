package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore/groups"
	"github.com/stratalog/strata/objectlog"
)

// txnProducer is a franz-go transactional producer of s.
func txnProducer(t testing.TB, s *Server, id string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return kafkaClient(t, s, append([]kgo.Opt{kgo.TransactionalID(id), kgo.TransactionTimeout(10 * time.Second),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
}

// inTxn runs one transaction producing values to topic's partitions (value i to
// partition i % partitions) and commits or aborts it.
func inTxn(t testing.TB, ctx context.Context, cl *kgo.Client, topic string, partitions int32, commit bool, values ...string) {
	t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatalf("begin: %v", err)
	}
	for i, v := range values {
		r := &kgo.Record{Topic: topic, Partition: int32(i) % partitions, Value: []byte(v)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %q: %v", v, err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatalf("end (commit %v): %v", commit, err)
	}
}

// consumeAll reads topic from the start with the isolation level until it has
// seen want records or the context ends, returning values per partition in order.
func consumeAll(t testing.TB, ctx context.Context, s *Server, topic string, committed bool, want int) map[int32][]string {
	t.Helper()
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	cl := kafkaClient(t, s, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(iso), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	got := map[int32][]string{}
	n := 0
	for n < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		for _, e := range fs.Errors() {
			t.Fatalf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], string(r.Value))
			n++
		})
	}
	return got
}

// TestTransactionsCommitAndAbort: committed transactions are seen by read_committed
// consumers, aborted ones only by read_uncommitted ones; markers take offsets.
func TestTransactionsCommitAndAbort(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "tx", 2, nil)
	ctx := testContext(t)
	p := txnProducer(t, s, "tx-1")
	inTxn(t, ctx, p, "tx", 2, true, "a0", "a1", "a2", "a3")
	inTxn(t, ctx, p, "tx", 2, false, "b0", "b1")
	inTxn(t, ctx, p, "tx", 2, true, "c0", "c1")

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	committed := consumeAll(t, cctx, s, "tx", true, 6)
	want := map[int32][]string{0: {"a0", "a2", "c0"}, 1: {"a1", "a3", "c1"}}
	if fmt.Sprint(committed) != fmt.Sprint(want) {
		t.Fatalf("read_committed got %v, want %v", committed, want)
	}
	uctx, ucancel := context.WithTimeout(ctx, 10*time.Second)
	defer ucancel()
	all := consumeAll(t, uctx, s, "tx", false, 8)
	want = map[int32][]string{0: {"a0", "a2", "b0", "c0"}, 1: {"a1", "a3", "b1", "c1"}}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("read_uncommitted got %v, want %v", all, want)
	}
	// Partition 0: a0 a2 | commit | b0 | abort | c0 | commit: 7 offsets.
	adm := adminClient(t, s)
	ends, err := adm.ListEndOffsets(ctx, "tx")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("tx", 0); o.Offset != 7 {
		t.Fatalf("partition 0 ends at %d, want 7 (records and markers)", o.Offset)
	}
}

// TestTransactionFencing: a second producer with the same transactional id fences
// the first: the first's open transaction is aborted and its later requests fail.
func TestTransactionFencing(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "fence", 1, nil)
	ctx := testContext(t)
	old := txnProducer(t, s, "shared")
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := old.ProduceSync(ctx, &kgo.Record{Topic: "fence", Value: []byte("zombie")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	newer := txnProducer(t, s, "shared")
	inTxn(t, ctx, newer, "fence", 1, true, "fresh")
	err := old.ProduceSync(ctx, &kgo.Record{Topic: "fence", Value: []byte("late")}).FirstErr()
	if err == nil {
		err = old.EndTransaction(ctx, kgo.TryCommit)
	}
	if !errors.Is(err, kerr.ProducerFenced) && !errors.Is(err, kerr.InvalidProducerEpoch) {
		t.Fatalf("the fenced producer: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got := consumeAll(t, cctx, s, "fence", true, 1)
	if !slices.Equal(got[0], []string{"fresh"}) {
		t.Fatalf("read_committed: %v", got)
	}
	// What the fenced producer wrote is visible only uncommitted, and aborted.
	uctx, ucancel := context.WithTimeout(ctx, 5*time.Second)
	defer ucancel()
	if all := consumeAll(t, uctx, s, "fence", false, 2); !slices.Equal(all[0], []string{"zombie", "fresh"}) {
		t.Fatalf("read_uncommitted: %v", all)
	}
}

// TestTransactionRaw: Kafka's error codes for bad transactional requests.
func TestTransactionRaw(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "raw", 2, nil)
	cl := kafkaClient(t, s)
	ctx := testContext(t)

	end := kmsg.NewPtrEndTxnRequest()
	end.TransactionalID, end.ProducerID, end.Commit = "nobody", 1, true
	if resp, err := end.RequestWith(ctx, cl); err != nil || resp.ErrorCode != kerr.InvalidProducerIDMapping.Code {
		t.Fatalf("EndTxn of an unknown id: %v %v", resp, err)
	}
	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionalID = kmsg.StringPtr("raw-1")
	init.TransactionTimeoutMillis = 60_000
	iresp, err := init.RequestWith(ctx, cl)
	if err != nil || iresp.ErrorCode != 0 {
		t.Fatalf("init: %v %v", iresp, err)
	}
	pid, epoch := iresp.ProducerID, iresp.ProducerEpoch
	tooLong := kmsg.NewPtrInitProducerIDRequest()
	tooLong.TransactionalID = kmsg.StringPtr("raw-2")
	tooLong.TransactionTimeoutMillis = 1 << 30
	if resp, err := tooLong.RequestWith(ctx, cl); err != nil || resp.ErrorCode != kerr.InvalidTransactionTimeout.Code {
		t.Fatalf("init with a timeout over the max: %v %v", resp, err)
	}

	// A transactional batch without a producer id is refused alone: the plain batch
	// beside it (which may share its segment) is written.
	resp := produceRaw(t, s, cl, -1, "raw", map[int32][]byte{1: batchOf(t, objectlog.CodecNone, 1000, "plain"), 0: txnBatch(t, -1, -1, -1, "no pid")})
	for _, p := range resp.Topics[0].Partitions {
		want := int16(0)
		if p.Partition == 0 {
			want = kerr.InvalidRecord.Code
		}
		if p.ErrorCode != want {
			t.Fatalf("partition %d with a transactional batch without pid beside: code %d, want %d", p.Partition, p.ErrorCode, want)
		}
	}
	// A transactional batch before its partition is added: INVALID_TXN_STATE.
	batch := txnBatch(t, pid, epoch, 0, "early")
	resp = produceRaw(t, s, cl, -1, "raw", map[int32][]byte{0: batch})
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.InvalidTxnState.Code {
		t.Fatalf("transactional batch for a partition not added: code %d", code)
	}
	add := kmsg.NewPtrAddPartitionsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch = "raw-1", pid, epoch
	at := kmsg.NewAddPartitionsToTxnRequestTopic()
	at.Topic, at.Partitions = "raw", []int32{0}
	bad := kmsg.NewAddPartitionsToTxnRequestTopic()
	bad.Topic, bad.Partitions = "missing", []int32{0}
	add.Topics = []kmsg.AddPartitionsToTxnRequestTopic{at, bad}
	aresp, err := add.RequestWith(ctx, cl)
	if err != nil || aresp.Topics[0].Partitions[0].ErrorCode != kerr.OperationNotAttempted.Code ||
		aresp.Topics[1].Partitions[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("add with an unknown topic: %+v %v", aresp, err)
	}
	add.Topics, add.Transactions = add.Topics[:1], nil // the client fills Transactions in
	if aresp, err = add.RequestWith(ctx, cl); err != nil || aresp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("add: %+v %v", aresp, err)
	}
	resp = produceRaw(t, s, cl, -1, "raw", map[int32][]byte{0: batch, 1: txnBatch(t, pid, epoch, 0, "not added")})
	for _, p := range resp.Topics[0].Partitions {
		want := int16(0)
		if p.Partition == 1 {
			want = kerr.InvalidTxnState.Code
		}
		if p.ErrorCode != want {
			t.Fatalf("partition %d: code %d, want %d", p.Partition, p.ErrorCode, want)
		}
	}
	// A stale epoch is fenced; EndTxn then commits.
	add.ProducerEpoch, add.Transactions = epoch-1, nil
	// (franz-go sends the version it negotiated, v5, whatever the request says.)
	if aresp, err = add.RequestWith(ctx, cl); err != nil || aresp.Topics[0].Partitions[0].ErrorCode != kerr.ProducerFenced.Code {
		t.Fatalf("add with an old epoch: %+v %v", aresp, err)
	}
	end.TransactionalID, end.ProducerID, end.ProducerEpoch = "raw-1", pid, epoch
	if resp, err := end.RequestWith(ctx, cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("commit: %v %v", resp, err)
	}
	if resp, err := end.RequestWith(ctx, cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("a retried commit: %v %v", resp, err)
	}
	end.Commit = false
	if resp, err := end.RequestWith(ctx, cl); err != nil || resp.ErrorCode != kerr.InvalidTxnState.Code {
		t.Fatalf("abort after commit: %v %v", resp, err)
	}
	// The committed batch and its marker: offsets 0 and 1; read_committed sees it.
	f := fetchRaw(t, s, cl, "raw", 0, 0, func(r *kmsg.FetchRequest) { r.IsolationLevel = 1 })
	fp := f.Topics[0].Partitions[0]
	if fp.ErrorCode != 0 || fp.HighWatermark != 2 || fp.LastStableOffset != 2 || len(fp.AbortedTransactions) != 0 {
		t.Fatalf("fetch: code %d hwm %d lso %d aborted %v", fp.ErrorCode, fp.HighWatermark, fp.LastStableOffset, fp.AbortedTransactions)
	}
	bases, values, _ := batchesOf(t, fp.RecordBatches)
	if !slices.Equal(bases, []int64{0, 1}) || values[0] != "early" {
		t.Fatalf("batches at %v: %q", bases, values)
	}
}

// txnBatch is a transactional batch of the producer's.
func txnBatch(t testing.TB, pid int64, epoch int16, seq int32, values ...string) []byte {
	t.Helper()
	var recs []byte
	for i, v := range values {
		recs = objectlog.AppendRecord(recs, &objectlog.Record{OffsetDelta: int32(i), Value: []byte(v)})
	}
	b, err := objectlog.AppendBatch(nil, objectlog.BatchHeader{Attributes: objectlog.AttrTransactional,
		LastOffsetDelta: int32(len(values) - 1), BaseTimestamp: 1000, MaxTimestamp: 1000, ProducerID: pid,
		ProducerEpoch: epoch, BaseSequence: seq, RecordCount: int32(len(values))}, objectlog.CodecNone, recs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTransactionTimeout: a producer that begins a transaction and goes silent is
// aborted by the coordinator after its timeout: the last stable offset moves past
// its data, read_committed consumers never see it, and the producer is fenced.
func TestTransactionTimeout(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "timeout", 1, nil)
	ctx := testContext(t)
	p := txnProducer(t, s, "silent", kgo.TransactionTimeout(time.Second))
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: "timeout", Value: []byte("lost")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl := kafkaClient(t, s)
	lso := func() (int64, int64) {
		f := fetchRaw(t, s, cl, "timeout", 0, 0, func(r *kmsg.FetchRequest) { r.IsolationLevel = 1 })
		fp := f.Topics[0].Partitions[0]
		return fp.LastStableOffset, fp.HighWatermark
	}
	if stable, hwm := lso(); stable != 0 || hwm != 1 {
		t.Fatalf("open transaction: lso %d hwm %d, want 0 and 1", stable, hwm)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		stable, hwm := lso()
		if stable == 2 && hwm == 2 {
			break // the data and the abort marker
		}
		if time.Now().After(deadline) {
			t.Fatalf("transaction not aborted on timeout: lso %d hwm %d", stable, hwm)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f := fetchRaw(t, s, cl, "timeout", 0, 0, func(r *kmsg.FetchRequest) { r.IsolationLevel = 1 })
	fp := f.Topics[0].Partitions[0]
	if len(fp.AbortedTransactions) != 1 || fp.AbortedTransactions[0].FirstOffset != 0 {
		t.Fatalf("aborted transactions: %+v", fp.AbortedTransactions)
	}
	if err := p.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatal("the timed-out producer committed")
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if got := consumeAll(t, cctx, s, "timeout", true, 1); len(got) != 0 {
		t.Fatalf("read_committed saw %v", got)
	}
}

// TestTransactionalPipeline: consume-transform-produce with GroupTransactSession:
// two members move topic in to topic out, the first transaction of each of them
// aborted on purpose. out holds every input record exactly once for read_committed
// consumers; the aborted copies are visible only to read_uncommitted ones. franz-go
// fetches group offsets with RequireStable always.
func TestTransactionalPipeline(t *testing.T) {
	s := startAgent(t, withGroups(func(c *groups.Config) { c.InitialRebalanceDelay = 0 }))
	createTopic(t, s, "in", 4, nil)
	createTopic(t, s, "out", 4, nil)
	ctx := testContext(t)
	const n = 400
	src := kafkaClient(t, s, kgo.DefaultProduceTopic("in"))
	for i := range n {
		src.Produce(ctx, kgo.StringRecord(fmt.Sprintf("r%03d", i)), nil)
	}
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	run := func(id string, abortFirst bool, done <-chan struct{}) error {
		sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(s.AdvertiseAddr()), kgo.TransactionalID(id),
			kgo.ConsumerGroup("pipe"), kgo.ConsumeTopics("in"), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.DefaultProduceTopic("out"), kgo.TransactionTimeout(10*time.Second),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			return err
		}
		defer sess.Close()
		first := true
		for {
			select {
			case <-done:
				return nil
			default:
			}
			pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			fs := sess.PollFetches(pctx)
			cancel()
			if fs.NumRecords() == 0 {
				continue
			}
			if err := sess.Begin(); err != nil {
				return err
			}
			var out []*kgo.Record
			fs.EachRecord(func(r *kgo.Record) {
				out = append(out, &kgo.Record{Partition: r.Partition, Value: append([]byte("x-"), r.Value...)})
			})
			if err := sess.ProduceSync(ctx, out...).FirstErr(); err != nil {
				return err
			}
			end := kgo.TryCommit
			if abortFirst && first {
				end = kgo.TryAbort
			}
			first = false
			if _, err := sess.End(ctx, end); err != nil {
				return err
			}
		}
	}
	done := make(chan struct{})
	errs := make(chan error, 2)
	go func() { errs <- run("pipe-a", true, done) }()
	go func() { errs <- run("pipe-b", true, done) }()

	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	consumeAll(t, wctx, s, "out", true, n) // until the pipeline is through
	close(done)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("pipeline member: %v", err)
		}
	}
	// Everything read_committed shows, now that nothing more comes: an aborted copy
	// has the same value as its committed one, so count them all.
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	got := consumeAll(t, cctx, s, "out", true, 2*n)
	seen := map[string]int{}
	for _, vs := range got {
		for _, v := range vs {
			seen[v]++
		}
	}
	for i := range n {
		if v := fmt.Sprintf("x-r%03d", i); seen[v] != 1 {
			t.Fatalf("%s seen %d times in read_committed output", v, seen[v])
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct records, want %d", len(seen), n)
	}
	// The aborted first transaction's copies are there, uncommitted.
	uctx, ucancel := context.WithTimeout(ctx, 5*time.Second)
	defer ucancel()
	total := 0
	for _, vs := range consumeAll(t, uctx, s, "out", false, n+1) {
		total += len(vs)
	}
	if total <= n {
		t.Fatalf("read_uncommitted saw %d records, want the aborted copies too (more than %d)", total, n)
	}
}
