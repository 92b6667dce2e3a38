package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// The transaction admin APIs (DescribeProducers, DescribeTransactions,
// ListTransactions) over state made by real franz-go producers: kadm where it
// reaches, raw kmsg requests for unknown names and versions.

const txnTestTimeout = 45 * time.Second

// adminTxnProducer is a transactional franz-go producer of s with id, writing to topic at
// the partitions its records name.
func adminTxnProducer(t *testing.T, s *Server, id, topic string) *kgo.Client {
	t.Helper()
	return kafkaClient(t, s, kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(txnTestTimeout))
}

// produceTo writes one record to each partition, each acknowledged before the next.
func produceTo(t *testing.T, cl *kgo.Client, partitions ...int32) {
	t.Helper()
	for _, p := range partitions {
		r := &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "to %d", p)}
		if err := cl.ProduceSync(testContext(t), r).FirstErr(); err != nil {
			t.Fatalf("produce to %d: %v", p, err)
		}
	}
}

// openTxn begins a transaction and writes one record to each partition in it.
func openTxn(t *testing.T, cl *kgo.Client, partitions ...int32) {
	t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatalf("begin transaction: %v", err)
	}
	produceTo(t, cl, partitions...)
}

func endTxn(t *testing.T, cl *kgo.Client, commit kgo.TransactionEndTry) {
	t.Helper()
	if err := cl.EndTransaction(testContext(t), commit); err != nil {
		t.Fatalf("end transaction (commit %v): %v", commit, err)
	}
}

func producerIDOf(t *testing.T, cl *kgo.Client) (int64, int16) {
	t.Helper()
	id, epoch, err := cl.ProducerID(testContext(t))
	if err != nil {
		t.Fatalf("producer id: %v", err)
	}
	return id, epoch
}

// txnStartOffsets describes a partition's producers: their open transactions' first
// offsets by producer id (-1: none), checking what every producer must show.
func txnStartOffsets(t *testing.T, adm *kadm.Client, topic string, partition int32) map[int64]int64 {
	t.Helper()
	got, err := adm.DescribeProducers(testContext(t), kadm.TopicsSet{topic: {partition: {}}})
	if err != nil {
		t.Fatalf("describe producers: %v", err)
	}
	dp, ok := got[topic].Partitions[partition]
	if !ok || dp.Err != nil {
		t.Fatalf("describe producers of %s/%d: %+v", topic, partition, got)
	}
	out := map[int64]int64{}
	for id, p := range dp.ActiveProducers {
		if p.CoordinatorEpoch != -1 || p.LastTimestamp <= 0 || p.LastSequence < 0 {
			t.Errorf("producer %d of %s/%d: %+v", id, topic, partition, p)
		}
		out[id] = p.CurrentTxnStartOffset
	}
	return out
}

// describedTxn describes one transactional id through kadm.
func describedTxn(t *testing.T, adm *kadm.Client, id string) kadm.DescribedTransaction {
	t.Helper()
	got, err := adm.DescribeTransactions(testContext(t), id)
	if err != nil {
		t.Fatalf("describe transaction %s: %v", id, err)
	}
	d, ok := got[id]
	if !ok {
		t.Fatalf("describe transaction %s: not in %+v", id, got)
	}
	return d
}

// topicsOf is a described transaction's partitions, as "topic/partition" sorted.
func topicsOf(ts kadm.TopicsSet) []string {
	var out []string
	ts.Each(func(t string, p int32) { out = append(out, fmt.Sprintf("%s/%d", t, p)) })
	slices.Sort(out)
	return out
}

// TestDescribeProducersIdempotent: an idempotent producer shows in the partitions it
// wrote, with its id, epoch, last sequence and a timestamp of its writes, and no
// open transaction; a partition only a plain producer wrote has no producers.
func TestDescribeProducersIdempotent(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "dp", 2, nil)
	cl := kafkaClient(t, s, kgo.DefaultProduceTopic("dp"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	before := time.Now().UnixMilli()
	produceTo(t, cl, 0, 0, 0) // three batches: sequences 0, 1, 2
	after := time.Now().UnixMilli()
	produce(t, s, "dp", 1, 2) // not idempotent
	pid, epoch := producerIDOf(t, cl)

	got, err := adminClient(t, s).DescribeProducers(testContext(t), kadm.TopicsSet{"dp": {0: {}, 1: {}}})
	if err != nil {
		t.Fatal(err)
	}
	p0, p1 := got["dp"].Partitions[0], got["dp"].Partitions[1]
	if p0.Err != nil || p1.Err != nil {
		t.Fatalf("errors: %v %v", p0.Err, p1.Err)
	}
	if len(p1.ActiveProducers) != 0 {
		t.Errorf("partition 1 has producers: %+v", p1.ActiveProducers)
	}
	if len(p0.ActiveProducers) != 1 {
		t.Fatalf("partition 0 producers: %+v, want just %d", p0.ActiveProducers, pid)
	}
	p, ok := p0.ActiveProducers[pid]
	if !ok {
		t.Fatalf("partition 0 producers: %+v, want %d", p0.ActiveProducers, pid)
	}
	if p.ProducerEpoch != epoch || p.LastSequence != 2 || p.CurrentTxnStartOffset != -1 || p.CoordinatorEpoch != -1 {
		t.Errorf("producer: %+v, want epoch %d, last sequence 2, no transaction", p, epoch)
	}
	if p.LastTimestamp < before || p.LastTimestamp > after {
		t.Errorf("last timestamp %d outside the writes [%d, %d]", p.LastTimestamp, before, after)
	}
}

// TestDescribeProducersUnknown: an unknown topic and partitions out of range are
// UNKNOWN_TOPIC_OR_PARTITION each, in the order asked, beside a good partition.
func TestDescribeProducersUnknown(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "dp", 1, nil)
	cl := kafkaClient(t, s, kgo.DefaultProduceTopic("dp"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceTo(t, cl, 0)

	req := kmsg.NewPtrDescribeProducersRequest()
	for _, tp := range []struct {
		topic string
		ps    []int32
	}{{"nope", []int32{0}}, {"dp", []int32{3, 0, -1}}} {
		rt := kmsg.NewDescribeProducersRequestTopic()
		rt.Topic, rt.Partitions = tp.topic, tp.ps
		req.Topics = append(req.Topics, rt)
	}
	resp := send[*kmsg.DescribeProducersResponse](t, s, cl, req)
	var got []string
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			got = append(got, fmt.Sprintf("%s/%d code %d producers %d", rt.Topic, rp.Partition, rp.ErrorCode, len(rp.ActiveProducers)))
		}
	}
	unknown := kerr.UnknownTopicOrPartition.Code
	want := []string{
		fmt.Sprintf("nope/0 code %d producers 0", unknown),
		fmt.Sprintf("dp/3 code %d producers 0", unknown),
		"dp/0 code 0 producers 1",
		fmt.Sprintf("dp/-1 code %d producers 0", unknown),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

// TestDescribeTransactionsLifecycle follows one transactional id through two
// transactions, as DescribeTransactions and DescribeProducers show it: open (Ongoing,
// its partitions, each partition's first offset in it), committed (CompleteCommit,
// no partitions, no open transaction), open again after the commit markers, aborted.
func TestDescribeTransactionsLifecycle(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "tx", 2, nil)
	adm := adminClient(t, s)
	idem := kafkaClient(t, s, kgo.DefaultProduceTopic("tx"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceTo(t, idem, 0, 0) // offsets 0 and 1 of partition 0
	idemID, _ := producerIDOf(t, idem)

	cl := adminTxnProducer(t, s, "x", "tx")
	before := time.Now().UnixMilli()
	openTxn(t, cl, 0, 1)
	pid, epoch := producerIDOf(t, cl)

	d := describedTxn(t, adm, "x")
	if d.Err != nil || d.State != "Ongoing" || d.ProducerID != pid || d.ProducerEpoch != epoch ||
		d.TimeoutMillis != int32(txnTestTimeout.Milliseconds()) || d.StartTimestamp < before || d.StartTimestamp > time.Now().UnixMilli() {
		t.Fatalf("open: %+v, want Ongoing, producer %d/%d, started after %d", d, pid, epoch, before)
	}
	if got := topicsOf(d.Topics); !slices.Equal(got, []string{"tx/0", "tx/1"}) {
		t.Fatalf("open: partitions %v", got)
	}
	if got, want := txnStartOffsets(t, adm, "tx", 0), map[int64]int64{idemID: -1, pid: 2}; !maps.Equal(got, want) {
		t.Fatalf("open: partition 0 transaction starts %v, want %v", got, want)
	}
	if got, want := txnStartOffsets(t, adm, "tx", 1), map[int64]int64{pid: 0}; !maps.Equal(got, want) {
		t.Fatalf("open: partition 1 transaction starts %v, want %v", got, want)
	}

	endTxn(t, cl, kgo.TryCommit)
	d = describedTxn(t, adm, "x")
	if d.Err != nil || d.State != "CompleteCommit" || len(d.Topics) != 0 || d.ProducerID != pid {
		t.Fatalf("committed: %+v", d)
	}
	if got, want := txnStartOffsets(t, adm, "tx", 0), map[int64]int64{idemID: -1, pid: -1}; !maps.Equal(got, want) {
		t.Fatalf("committed: partition 0 transaction starts %v, want %v", got, want)
	}

	// The commit marker took offset 3 of partition 0: the next transaction starts at 4.
	openTxn(t, cl, 0)
	d = describedTxn(t, adm, "x")
	if d.State != "Ongoing" || !slices.Equal(topicsOf(d.Topics), []string{"tx/0"}) {
		t.Fatalf("open again: %+v", d)
	}
	if got := txnStartOffsets(t, adm, "tx", 0)[pid]; got != 4 {
		t.Fatalf("open again: partition 0 transaction starts at %d, want 4", got)
	}
	endTxn(t, cl, kgo.TryAbort)
	if d = describedTxn(t, adm, "x"); d.Err != nil || d.State != "CompleteAbort" || len(d.Topics) != 0 {
		t.Fatalf("aborted: %+v", d)
	}
}

// TestDescribeTransactionsEmpty: an id whose producer only initialized is Empty,
// with no start time and no partitions.
func TestDescribeTransactionsEmpty(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "tx", 1, nil)
	cl := adminTxnProducer(t, s, "e", "tx")
	pid, epoch := producerIDOf(t, cl)
	d := describedTxn(t, adminClient(t, s), "e")
	if d.Err != nil || d.State != "Empty" || d.StartTimestamp != -1 || len(d.Topics) != 0 ||
		d.ProducerID != pid || d.ProducerEpoch != epoch || d.TimeoutMillis != int32(txnTestTimeout.Milliseconds()) {
		t.Fatalf("%+v, want Empty, producer %d/%d, never started", d, pid, epoch)
	}
}

// TestDescribeTransactionsUnknown: an unknown id is TRANSACTIONAL_ID_NOT_FOUND and
// an empty one INVALID_REQUEST, each in its place beside a known one.
func TestDescribeTransactionsUnknown(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "tx", 1, nil)
	cl := adminTxnProducer(t, s, "x", "tx")
	producerIDOf(t, cl)

	if d := describedTxn(t, adminClient(t, s), "ghost"); d.Err != kerr.TransactionalIDNotFound {
		t.Fatalf("kadm, unknown id: %+v", d)
	}
	req := kmsg.NewPtrDescribeTransactionsRequest()
	req.TransactionalIDs = []string{"ghost", "x", ""}
	resp := send[*kmsg.DescribeTransactionsResponse](t, s, cl, req)
	var got []string
	for _, ts := range resp.TransactionStates {
		got = append(got, fmt.Sprintf("%q code %d state %q", ts.TransactionalID, ts.ErrorCode, ts.State))
	}
	want := []string{
		fmt.Sprintf(`"ghost" code %d state ""`, kerr.TransactionalIDNotFound.Code),
		`"x" code 0 state "Empty"`,
		fmt.Sprintf(`"" code %d state ""`, kerr.InvalidRequest.Code),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

// listedStates is a ListTransactions answer: states by transactional id, and the unknown
// state filters.
func listedStates(resp *kmsg.ListTransactionsResponse) (map[string]string, []string) {
	out := map[string]string{}
	for _, ts := range resp.TransactionStates {
		out[ts.TransactionalID] = ts.TransactionState
	}
	return out, resp.UnknownStateFilters
}

// TestListTransactions: three ids in three states, listed whole through kadm and
// filtered by state, producer id and (v1) duration through raw requests at v0 and
// v1; a state name Kafka does not know comes back unknown and matches nothing.
func TestListTransactions(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "tx", 2, nil)
	open := adminTxnProducer(t, s, "open", "tx")
	openTxn(t, open, 0, 1)
	done := adminTxnProducer(t, s, "done", "tx")
	openTxn(t, done, 1)
	endTxn(t, done, kgo.TryCommit)
	empty := adminTxnProducer(t, s, "empty", "tx")
	openID, _ := producerIDOf(t, open)
	doneID, _ := producerIDOf(t, done)
	emptyID, _ := producerIDOf(t, empty)

	adm := adminClient(t, s)
	all, err := adm.ListTransactions(testContext(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]kadm.ListedTransaction{
		"open":  {TxnID: "open", ProducerID: openID, State: "Ongoing"},
		"done":  {TxnID: "done", ProducerID: doneID, State: "CompleteCommit"},
		"empty": {TxnID: "empty", ProducerID: emptyID, State: "Empty"},
	}
	for id, l := range all {
		l.Coordinator = 0
		all[id] = l
	}
	if !maps.Equal(all, want) {
		t.Fatalf("kadm, everything: %+v, want %+v", all, want)
	}
	if got, err := adm.ListTransactions(testContext(t), []int64{doneID, emptyID}, []string{"Empty"}); err != nil || len(got) != 1 || got["empty"].State != "Empty" {
		t.Fatalf("kadm, Empty of two producers: %+v %v", got, err)
	}

	// The duration filter keeps transactions running longer than it: wait until the
	// open one has run a millisecond.
	started := describedTxn(t, adm, "open").StartTimestamp
	for time.Now().UnixMilli() <= started {
		time.Sleep(time.Millisecond)
	}

	everything := map[string]string{"open": "Ongoing", "done": "CompleteCommit", "empty": "Empty"}
	for _, tc := range []struct {
		name     string
		version  int16
		states   []string
		pids     []int64
		duration int64
		want     map[string]string
		unknown  []string
	}{
		{name: "no filters", version: 1, duration: -1, want: everything},
		{name: "one state", version: 0, states: []string{"CompleteCommit"}, duration: -1, want: map[string]string{"done": "CompleteCommit"}},
		{name: "two states", version: 1, states: []string{"Ongoing", "Empty"}, duration: -1, want: map[string]string{"open": "Ongoing", "empty": "Empty"}},
		{name: "unknown state only", version: 1, states: []string{"Bogus"}, duration: -1, want: map[string]string{}, unknown: []string{"Bogus"}},
		{name: "names are exact", version: 0, states: []string{"ongoing", "Empty"}, duration: -1, want: map[string]string{"empty": "Empty"}, unknown: []string{"ongoing"}},
		{name: "states Strata never has", version: 1, states: []string{"PrepareCommit", "Dead"}, duration: -1, want: map[string]string{}},
		{name: "producer ids", version: 1, pids: []int64{openID, doneID}, duration: -1, want: map[string]string{"open": "Ongoing", "done": "CompleteCommit"}},
		{name: "producer ids and state", version: 0, states: []string{"Ongoing", "Empty"}, pids: []int64{doneID, emptyID}, duration: -1, want: map[string]string{"empty": "Empty"}},
		{name: "unknown producer id", version: 1, pids: []int64{emptyID + 1000}, duration: -1, want: map[string]string{}},
		{name: "running a while", version: 1, duration: 0, want: map[string]string{"open": "Ongoing"}},
		{name: "running an hour", version: 1, duration: time.Hour.Milliseconds(), want: map[string]string{}},
		// v0 has no duration field: the hour is not sent, nothing is filtered.
		{name: "v0 ignores duration", version: 0, duration: time.Hour.Milliseconds(), want: everything},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := kmsg.NewPtrListTransactionsRequest()
			req.StateFilters, req.ProducerIDFilters, req.DurationFilterMillis = tc.states, tc.pids, tc.duration
			resp := send[*kmsg.ListTransactionsResponse](t, s, pinned(t, s, 66, tc.version), req)
			got, unknown := listedStates(resp)
			if resp.Version != tc.version || resp.ErrorCode != 0 || !maps.Equal(got, tc.want) || !slices.Equal(unknown, tc.unknown) {
				t.Fatalf("v%d code %d: %v unknown %q, want %v unknown %q", resp.Version, resp.ErrorCode, got, unknown, tc.want, tc.unknown)
			}
		})
	}
}

// txnReadsDown is a metastore whose transaction and producer reads fail as an
// unreachable one does, once down is set.
type txnReadsDown struct {
	Metastore
	down *atomic.Bool
}

var errTxnReadsDown = fmt.Errorf("test: %w", metastore.ErrUnavailable)

func (m txnReadsDown) DescribeTransactions(ctx context.Context, req *pb.DescribeTransactionsRequest) (*pb.DescribeTransactionsResponse, error) {
	if m.down.Load() {
		return nil, errTxnReadsDown
	}
	return m.Metastore.DescribeTransactions(ctx, req)
}

func (m txnReadsDown) ListTransactions(ctx context.Context, req *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	if m.down.Load() {
		return nil, errTxnReadsDown
	}
	return m.Metastore.ListTransactions(ctx, req)
}

func (m txnReadsDown) DescribeProducers(ctx context.Context, req *pb.DescribeProducersRequest) (*pb.DescribeProducersResponse, error) {
	if m.down.Load() {
		return nil, errTxnReadsDown
	}
	return m.Metastore.DescribeProducers(ctx, req)
}

// startTxnReadsDown is an agent with topic "tx" whose metastore then stops
// answering transaction and producer reads, and a client of it.
func startTxnReadsDown(t *testing.T) (*Server, *kgo.Client) {
	down := new(atomic.Bool)
	s := startAgent(t, withMetastore(func(m Metastore) Metastore { return txnReadsDown{m, down} }))
	createTopic(t, s, "tx", 1, nil)
	down.Store(true)
	return s, kafkaClient(t, s)
}

// TestDescribeProducersMetastoreDown: a partition whose producers cannot be read is
// a retriable error, not an empty answer.
func TestDescribeProducersMetastoreDown(t *testing.T) {
	s, cl := startTxnReadsDown(t)
	req := kmsg.NewPtrDescribeProducersRequest()
	rt := kmsg.NewDescribeProducersRequestTopic()
	rt.Topic, rt.Partitions = "tx", []int32{0}
	req.Topics = append(req.Topics, rt)
	resp := send[*kmsg.DescribeProducersResponse](t, s, cl, req)
	if code := resp.Topics[0].Partitions[0].ErrorCode; !kerr.IsRetriable(kerr.ErrorForCode(code)) {
		t.Fatalf("code %d, want a retriable one", code)
	}
}

// TestDescribeTransactionsMetastoreDown: COORDINATOR_NOT_AVAILABLE, not
// TRANSACTIONAL_ID_NOT_FOUND.
func TestDescribeTransactionsMetastoreDown(t *testing.T) {
	s, cl := startTxnReadsDown(t)
	req := kmsg.NewPtrDescribeTransactionsRequest()
	req.TransactionalIDs = []string{"x"}
	resp := send[*kmsg.DescribeTransactionsResponse](t, s, cl, req)
	if code := resp.TransactionStates[0].ErrorCode; code != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("code %d, want COORDINATOR_NOT_AVAILABLE", code)
	}
}

// TestListTransactionsMetastoreDown: COORDINATOR_NOT_AVAILABLE, not an empty list.
func TestListTransactionsMetastoreDown(t *testing.T) {
	s, cl := startTxnReadsDown(t)
	resp := send[*kmsg.ListTransactionsResponse](t, s, cl, kmsg.NewPtrListTransactionsRequest())
	if resp.ErrorCode != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("code %d, want COORDINATOR_NOT_AVAILABLE", resp.ErrorCode)
	}
}
