package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/internal/syncbuf"
)

// TestTransactionalPipelineSurvivesKills runs consume-transform-produce with two
// franz-go GroupTransactSessions over two agent processes and three metastore
// processes, moving topic in to topic out, partition for partition. Mid-way one
// agent is SIGKILLed and later restarted, then the metastore leader (the transaction
// and group coordinator) is SIGKILLed. The members handle errors as an application
// would: abort the transaction and go on, or recreate a session that cannot abort.
// At the end the group has committed the end of every input partition, and a
// read_committed consumer of out sees every input value exactly once, in the input's
// partition; a read_uncommitted one sees at least as many records.
// The three tests here are heavy (several processes, kills) and run alone, not in
// parallel with the others: their load made the zombie test's timing flaky.
func TestTransactionalPipelineSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	c := startProcCluster(t, [2]string{"z", "z"}, groupArgs())
	const partitions, perPartition = 4, 750
	const n = partitions * perPartition
	createTopic(t, c.agents[0].addr, "in", partitions, nil)
	createTopic(t, c.agents[0].addr, "out", partitions, nil)
	groupProduceN(t, c.agents[0].addr, "in", partitions, perPartition) // values "p/i"

	p := &pipeline{t: t, seeds: c.addrs(), stop: make(chan struct{}), start: time.Now()}
	var wg sync.WaitGroup
	for _, id := range []string{"pipe-a", "pipe-b"} {
		logBuf := clientLog(t, "franz-go "+id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(id, logBuf)
		}()
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(p.stop)
			wg.Wait()
		}
	}
	defer stop()

	progress := func(atLeast int) func() error {
		return func() error {
			if got := p.committedRecords(); got < atLeast {
				return fmt.Errorf("%d of %d records committed", got, n)
			}
			return nil
		}
	}
	groupWaitFor(t, 30*time.Second, "a fifth of the records through the pipeline", progress(n/5))
	// The agent coordinating the group: the members' heartbeats, TxnOffsetCommits and
	// perhaps their EndTxns go there.
	victim := c.agentAt(groupCoordinator(t, c.agents[0].addr, "pipe"))
	if victim == nil {
		t.Fatal("the group coordinator is neither agent")
	}
	killAgent(t, victim)
	killedAgentAt := p.committedRecords()
	p.logf("SIGKILLed %s, the group's coordinator, after %d records", victim.id, killedAgentAt)
	time.Sleep(2 * time.Second) // the survivor carries on alone for a while
	restartAgent(t, victim)
	p.logf("restarted %s", victim.id)
	groupWaitFor(t, 30*time.Second, "half of the records through the pipeline", progress(max(n/2, killedAgentAt+n/10)))
	killedMetaAt := p.committedRecords()
	p.logf("SIGKILLed metastore leader %s after %d records", killMetastoreLeader(t, c), killedMetaAt)
	if killedMetaAt >= n {
		t.Fatalf("the metastore leader was killed after the pipeline was through (%d of %d records)", killedMetaAt, n)
	}

	admCl := franzClient(t, c.agents[1].addr, kgo.SeedBrokers(c.addrs()...))
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	groupWaitFor(t, 40*time.Second, "the group committing the end of every input partition", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		offs, err := adm.FetchOffsets(ctx, "pipe")
		if err != nil {
			return err
		}
		for part := range int32(partitions) {
			if o, ok := offs.Lookup("in", part); !ok || o.At != perPartition {
				return fmt.Errorf("partition %d committed at %d (%v), want %d; %d records committed by the members", part, o.At, ok, perPartition, p.committedRecords())
			}
		}
		return nil
	})
	stop()
	t.Logf("pipeline: %s", p.summary())

	// An aborted copy has the same value as its committed one: read everything
	// read_committed shows, until nothing more comes, and count.
	committed := readTopic(t, c.addrs(), "out", kgo.ReadCommitted(), n, 3*time.Second, 30*time.Second)
	seen := map[string]int{}
	for _, r := range committed {
		seen[string(r.Value)]++
		var part, i int
		if _, err := fmt.Sscanf(string(r.Value), "x-%d/%d", &part, &i); err != nil || int32(part) != r.Partition || i >= perPartition {
			t.Errorf("out/%d offset %d holds %q, not a transformed input record of that partition", r.Partition, r.Offset, r.Value)
		}
	}
	var missing, dup []string
	for part := range partitions {
		for i := range perPartition {
			switch v := fmt.Sprintf("x-%d/%d", part, i); seen[v] {
			case 1:
			case 0:
				missing = append(missing, v)
			default:
				dup = append(dup, fmt.Sprintf("%s x%d", v, seen[v]))
			}
		}
	}
	if len(missing) > 0 || len(dup) > 0 || len(committed) != n {
		t.Fatalf("read_committed saw %d records, want %d: %d input values missing (first %v), %d more than once (first %v)",
			len(committed), n, len(missing), missing[:min(len(missing), 5)], len(dup), dup[:min(len(dup), 5)])
	}
	uncommitted := readTopic(t, c.addrs(), "out", kgo.ReadUncommitted(), n, 2*time.Second, 30*time.Second)
	if len(uncommitted) < n {
		t.Fatalf("read_uncommitted saw %d records, want at least %d", len(uncommitted), n)
	}
	t.Logf("out: %d records read_committed, %d read_uncommitted", len(committed), len(uncommitted))
}

// groupCoordinator is the address of the agent FindCoordinator names for group.
func groupCoordinator(t *testing.T, seed, group string) string {
	t.Helper()
	cl := franzClient(t, seed)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorKey = group
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || resp.ErrorCode != 0 {
		t.Fatalf("FindCoordinator %s: %v (error code %d)", group, err, resp.ErrorCode)
	}
	return net.JoinHostPort(resp.Host, strconv.Itoa(int(resp.Port)))
}

// pipeline is the members of a consume-transform-produce group: each moves records
// of topic in to topic out ("p/i" becomes "x-p/i" in the same partition), one
// transaction per poll, until stop closes.
type pipeline struct {
	t     *testing.T
	seeds []string
	stop  chan struct{}
	start time.Time

	mu        sync.Mutex
	committed int // records in committed transactions
	commits   int
	aborts    int // transactions ended with an abort, asked for or not
	sessions  int // sessions created
	errs      int
}

func (p *pipeline) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.Logf("%7.3f %s", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

func (p *pipeline) fail(id, what string, err error) {
	p.mu.Lock()
	p.errs++
	p.mu.Unlock()
	p.logf("%s %s: %v", id, what, err)
}

func (p *pipeline) committedRecords() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.committed
}

func (p *pipeline) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%d records in %d committed transactions, %d aborted, %d sessions, %d errors",
		p.committed, p.commits, p.aborts, p.sessions, p.errs)
}

func (p *pipeline) stopping() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// run is one member under the transactional id until stop closes; its clients log
// to logBuf.
func (p *pipeline) run(id string, logBuf *syncbuf.Buffer) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // a member stuck in a request 20s after stop is cut short
		select {
		case <-ctx.Done():
		case <-p.stop:
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Second):
				cancel()
			}
		}
	}()
	var sess *kgo.GroupTransactSession
	defer func() {
		if sess != nil {
			sess.Close()
		}
	}()
	failures := 0 // in a row
	recreate := func(why string) {
		p.logf("%s: recreating its session (%s)", id, why)
		sess.Close()
		sess = nil
		failures = 0
	}
	// abort ends the open transaction after err; a session that cannot abort, or
	// that keeps failing, is replaced, as its producer id may be fenced for good.
	abort := func(what string, err error) {
		p.fail(id, what, err)
		failures++
		if _, aerr := sess.End(ctx, kgo.TryAbort); aerr != nil {
			p.fail(id, "abort", aerr)
			recreate("abort failed")
			return
		}
		p.mu.Lock()
		p.aborts++
		p.mu.Unlock()
		if fenced(err) || failures >= 3 {
			recreate(fmt.Sprintf("%d failures in a row", failures))
		}
	}
	for !p.stopping() {
		if sess == nil {
			var err error
			sess, err = kgo.NewGroupTransactSession(kgo.SeedBrokers(p.seeds...), kgo.ClientID(id),
				kgo.TransactionalID(id), kgo.TransactionTimeout(10*time.Second),
				kgo.ConsumerGroup("pipe"), kgo.ConsumeTopics("in"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()), // RequireStable is franz-go's default
				kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(300*time.Millisecond),
				kgo.FetchMaxWait(200*time.Millisecond), kgo.FetchMaxPartitionBytes(4<<10),
				kgo.DefaultProduceTopic("out"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
				kgo.WithLogger(kgo.BasicLogger(logBuf, kgo.LogLevelInfo, nil)))
			if err != nil {
				p.t.Errorf("%s: new session: %v", id, err)
				return
			}
			p.mu.Lock()
			p.sessions++
			p.mu.Unlock()
		}
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := sess.PollRecords(pctx, 20)
		pcancel()
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.fail(id, fmt.Sprintf("fetch %s/%d", topic, part), err)
			}
		})
		recs := fs.Records()
		if len(recs) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			abort("begin", err)
			continue
		}
		// Processing takes a while, so the kills find transactions open with
		// some of their records produced.
		var perr error
		for chunk := range slices.Chunk(recs, 5) {
			time.Sleep(time.Duration(len(chunk)) * 10 * time.Millisecond)
			var out []*kgo.Record
			for _, r := range chunk {
				out = append(out, &kgo.Record{Partition: r.Partition, Value: append([]byte("x-"), r.Value...)})
			}
			if perr = sess.ProduceSync(ctx, out...).FirstErr(); perr != nil {
				break
			}
		}
		if perr != nil {
			abort("produce", perr)
			continue
		}
		ok, err := sess.End(ctx, kgo.TryCommit)
		if err != nil {
			abort("commit", err)
			continue
		}
		failures = 0
		p.mu.Lock()
		if ok {
			p.commits++
			p.committed += len(recs)
		} else {
			p.aborts++ // a rebalance came between poll and commit
		}
		p.mu.Unlock()
	}
}

// fenced reports whether err means another producer took over the transactional id.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.InvalidProducerIDMapping)
}

// TestIdempotentProducerSurvivesAgentKill: a franz-go idempotent producer sends
// sequential values to every partition through two agents whose object store takes
// 0-700ms per call, with a 500ms request timeout: some produce requests time out
// while their batches are still on the way to the store, and are retried. The agent
// leading partition 0 is SIGKILLed mid-flight. Every record is acknowledged once, at
// the offset of its position in its partition, and each partition holds exactly its
// records, in order: no duplicate, no gap.
func TestIdempotentProducerSurvivesAgentKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	c := startProcCluster(t, [2]string{"z", "z"}, nil, "--linger", "50ms", "--store-latency", "0-700ms")
	const topic, partitions, perPartition = "idem", 4, 400
	createTopic(t, c.agents[0].addr, topic, partitions, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var leader *agentProc
	groupWaitFor(t, 30*time.Second, "a leader for partition 0", func() error {
		addr, err := partitionLeader(ctx, c.agents[0].addr, topic, 0)
		if leader = c.agentAt(addr); leader == nil {
			return fmt.Errorf("leader %q (%v)", addr, err)
		}
		return nil
	})
	timeouts := &timeoutCounter{inner: kgo.BasicLogger(clientLog(t, "franz-go producer"), kgo.LogLevelInfo, nil)}
	cl := franzClient(t, c.agents[0].addr, kgo.SeedBrokers(c.addrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProduceRequestTimeout(500*time.Millisecond), kgo.RequestTimeoutOverhead(500*time.Millisecond),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100), kgo.MetadataMinAge(100*time.Millisecond),
		kgo.WithLogger(timeouts))
	defer cl.Close()

	type ack struct {
		offset int64
		err    error
		n      int // acknowledgements
	}
	var mu sync.Mutex
	acks := map[int32][]ack{}
	for part := range int32(partitions) {
		acks[part] = make([]ack, perPartition)
	}
	acked := 0
	var wg sync.WaitGroup
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			for part := range int32(partitions) {
				wg.Add(1)
				r := &kgo.Record{Topic: topic, Partition: part, Value: fmt.Appendf(nil, "%d/%06d", part, i)}
				cl.Produce(ctx, r, func(r *kgo.Record, err error) { // blocks while 100 records are buffered
					defer wg.Done()
					mu.Lock()
					defer mu.Unlock()
					a := &acks[r.Partition][i]
					a.offset, a.err = r.Offset, err
					a.n++
					acked++
				})
			}
		}
	}
	progress := func() int {
		mu.Lock()
		defer mu.Unlock()
		return acked
	}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		produce(0, perPartition)
		wg.Wait()
	}()
	groupWaitFor(t, 60*time.Second, "a third of the records acknowledged", func() error {
		if a := progress(); a < partitions*perPartition/3 {
			return fmt.Errorf("%d acknowledged", a)
		}
		return nil
	})
	killAgent(t, leader)
	killedAt := progress()
	t.Logf("SIGKILLed %s, the leader of partition 0, %v in, after %d acknowledged records and %d produce timeouts",
		leader.id, time.Since(start).Round(time.Millisecond), killedAt, timeouts.count())
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%d of %d records acknowledged 60s after the kill (%d produce timeouts)", progress(), partitions*perPartition, timeouts.count())
	}
	t.Logf("%d records acknowledged in %v; %d produce requests timed out", progress(), time.Since(start).Round(time.Millisecond), timeouts.count())
	if killedAt >= partitions*perPartition {
		t.Fatalf("the kill came after every record was acknowledged")
	}
	if timeouts.count() == 0 {
		t.Errorf("no produce request timed out: the store latency forced no retry")
	}
	for part := range int32(partitions) {
		for i, a := range acks[part] {
			switch {
			case a.n != 1:
				t.Fatalf("record %d/%06d acknowledged %d times", part, i, a.n)
			case a.err != nil:
				t.Fatalf("record %d/%06d: %v", part, i, a.err)
			case a.offset != int64(i):
				t.Fatalf("record %d/%06d acknowledged at offset %d, want %d", part, i, a.offset, i)
			}
		}
	}

	var survivor string
	for _, addr := range c.addrs() {
		if addr != leader.addr {
			survivor = addr
		}
	}
	got := valuesByPartition(readTopic(t, []string{survivor}, topic, kgo.ReadUncommitted(), partitions*perPartition, 2*time.Second, 30*time.Second))
	for part := range int32(partitions) {
		var want []string
		for i := range perPartition {
			want = append(want, fmt.Sprintf("%d/%06d", part, i))
		}
		if vs := got[part]; !slices.Equal(vs, want) {
			t.Errorf("partition %d holds %d records, want %d in order: %s", part, len(vs), perPartition, firstDifference(vs, want))
		}
	}
	if ps := sortedKeys(got); len(ps) != partitions {
		t.Errorf("records in partitions %v, want %d partitions", ps, partitions)
	}
}

// timeoutCounter is a franz-go logger that counts the partitions a produce response
// answered REQUEST_TIMED_OUT (franz-go retries them), and passes info and more
// important messages on to inner.
type timeoutCounter struct {
	inner kgo.Logger
	n     atomic.Int64
}

func (l *timeoutCounter) Level() kgo.LogLevel { return kgo.LogLevelDebug }

func (l *timeoutCounter) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if msg == "produced" {
		for _, kv := range keyvals {
			l.n.Add(int64(strings.Count(fmt.Sprint(kv), "REQUEST_TIMED_OUT")))
		}
	}
	if level <= l.inner.Level() {
		l.inner.Log(level, msg, keyvals...)
	}
}

func (l *timeoutCounter) count() int64 { return l.n.Load() }

// firstDifference describes where got first departs from want.
func firstDifference(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("offset %d holds %q, want %q (%q before it)", i, got[i], want[i], got[max(0, i-3):i])
		}
	}
	if len(got) > len(want) {
		return fmt.Sprintf("%d extra records from offset %d: %q", len(got)-len(want), len(want), got[len(want):min(len(got), len(want)+5)])
	}
	return fmt.Sprintf("%d records missing from offset %d", len(want)-len(got), len(got))
}

// TestTransactionFencingAcrossAgents: two franz-go transactional producers share a
// transactional id, the first in zone a served by agent x, the second in zone b
// served by agent y (FindCoordinator shows they talk to different coordinators).
// The first commits a transaction, then begins one that the second fences by
// initialising the same id through the other agent and committing. The first
// producer's next produce or its commit fails with PRODUCER_FENCED or
// INVALID_PRODUCER_EPOCH, and read_committed consumers see exactly the committed
// transactions; what the fenced producer wrote is there only uncommitted.
func TestTransactionFencingAcrossAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	c := startProcCluster(t, [2]string{"a", "b"}, nil)
	const topic = "fence"
	createTopic(t, c.agents[0].addr, topic, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	producer := func(zone, seed string) *kgo.Client {
		return franzClient(t, seed, kgo.ClientID("it,strata_zone="+zone), kgo.TransactionalID("shared"),
			kgo.TransactionTimeout(30*time.Second), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.DefaultProduceTopic(topic))
	}
	first := producer("a", c.agents[0].addr)
	defer first.Close()
	second := producer("b", c.agents[1].addr)
	defer second.Close()
	coordinator := func(cl *kgo.Client) int32 {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.CoordinatorType, req.CoordinatorKey = 1, "shared"
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("FindCoordinator: %v (error code %d)", err, resp.ErrorCode)
		}
		return resp.NodeID
	}
	if a, b := coordinator(first), coordinator(second); a == b {
		t.Fatalf("both producers are coordinated by node %d: put the agents in different zones", a)
	}
	txn := func(cl *kgo.Client, values ...string) error {
		if err := cl.BeginTransaction(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		for i, v := range values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: int32(i % 2), Value: []byte(v)}).FirstErr(); err != nil {
				return fmt.Errorf("produce %s: %w", v, err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	}
	if err := txn(first, "first-0", "first-1"); err != nil {
		t.Fatalf("first producer, first transaction: %v", err)
	}
	if err := first.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := first.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte("zombie-0")}).FirstErr(); err != nil {
		t.Fatalf("first producer, open transaction: %v", err)
	}
	// The second producer's InitProducerId bumps the epoch and aborts the open
	// transaction.
	if err := txn(second, "second-0", "second-1"); err != nil {
		t.Fatalf("second producer: %v", err)
	}
	// One record to the partition already in the transaction, one to the other,
	// which needs AddPartitionsToTxn.
	var lateErrs []error
	for part, v := range []string{"zombie-late-0", "zombie-late-1"} {
		if err := first.ProduceSync(ctx, &kgo.Record{Partition: int32(part), Value: []byte(v)}).FirstErr(); err != nil {
			lateErrs = append(lateErrs, fmt.Errorf("produce %s: %w", v, err))
		}
	}
	commitErr := first.EndTransaction(ctx, kgo.TryCommit)
	if commitErr == nil {
		t.Fatalf("the fenced producer committed (late produce errors: %v)", lateErrs)
	}
	if !slices.ContainsFunc(append(lateErrs, commitErr), func(err error) bool {
		return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
	}) {
		t.Fatalf("the fenced producer: produce %v, commit %v; want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", lateErrs, commitErr)
	}
	t.Logf("fenced producer: produce %v, commit %v", lateErrs, commitErr)
	// The second producer goes on.
	if err := txn(second, "second-2", "second-3"); err != nil {
		t.Fatalf("second producer after the fencing: %v", err)
	}

	want := map[int32][]string{0: {"first-0", "second-0", "second-2"}, 1: {"first-1", "second-1", "second-3"}}
	for _, seed := range c.addrs() {
		got := valuesByPartition(readTopic(t, []string{seed}, topic, kgo.ReadCommitted(), 6, 2*time.Second, 20*time.Second))
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("read_committed through %s: %v, want %v", seed, got, want)
		}
	}
	all := valuesByPartition(readTopic(t, c.addrs(), topic, kgo.ReadUncommitted(), 7, 2*time.Second, 20*time.Second))
	if !slices.Contains(all[0], "zombie-0") {
		t.Fatalf("read_uncommitted: %v, want the fenced producer's zombie-0 there (aborted)", all)
	}
	for part, vs := range all {
		for _, v := range vs {
			if v == "zombie-late-0" || v == "zombie-late-1" {
				t.Logf("read_uncommitted: the fenced producer's %s is in partition %d (aborted)", v, part)
			}
		}
	}
}
