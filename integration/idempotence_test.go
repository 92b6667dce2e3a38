package integration

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stratalog/strata/internal/metrics"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestZombieAgentCannotDuplicate: an idempotent producer's batch is in agent A's
// open segment (a long linger) when A is paused (SIGSTOP). The producer gives up on
// A and retries through agent B, which commits the batch. When A wakes it uploads
// and commits its segment late, as a zombie would: the metastore knows the batch as
// a duplicate, so the partition holds each record once.
func TestZombieAgentCannotDuplicate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	var apis []string
	for _, p := range startMetastoreProcs(t) {
		apis = append(apis, p.api)
	}
	storeDir := t.TempDir()
	xm, ym := freePort(t), freePort(t)
	x := startAgentProc(t, "agent-x", "z", apis, "file://"+storeDir, "--linger", "1500ms", "--metrics-addr", xm)
	y := startAgentProc(t, "agent-y", "z", apis, "file://"+storeDir, "--linger", "1500ms", "--metrics-addr", ym)
	metricsOf := map[*agentProc]string{x: xm, y: ym}
	createTopic(t, y.addr, "zombie", 1, nil)
	a, b := x, y // a: the partition's leader, which will be paused; b: the other
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// leaderAt is the partition's leader as one agent's Metadata names it, and how
	// many agents that agent knows.
	leaderAt := func(seed string) (string, int) {
		// A fresh client: franz-go answers repeated Metadata from its cache.
		fresh, err := kgo.NewClient(kgo.SeedBrokers(seed))
		if err != nil {
			return "", 0
		}
		defer fresh.Close()
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		topic := "zombie"
		rt.Topic = &topic
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, fresh)
		if err != nil || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return "", 0
		}
		id := resp.Topics[0].Partitions[0].Leader
		for _, br := range resp.Brokers {
			if br.NodeID == id {
				return net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port))), len(resp.Brokers)
			}
		}
		return "", len(resp.Brokers)
	}
	// Both agents must know both before the leader is taken: an agent re-reads the
	// registered agents only every third of a lease, and one that does not know the
	// other yet names itself, which changes once it learns (the roles would swap
	// under the test's feet).
	groupWaitFor(t, 30*time.Second, "both agents knowing both and naming one leader", func() error {
		lx, nx := leaderAt(x.addr)
		ly, ny := leaderAt(y.addr)
		if nx != 2 || ny != 2 || lx != ly {
			return fmt.Errorf("agent x knows %d agents and names %q, agent y knows %d and names %q", nx, lx, ny, ly)
		}
		switch lx {
		case x.addr:
		case y.addr:
			a, b = y, x
		default:
			return fmt.Errorf("leader %q", lx)
		}
		return nil
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(a.addr, b.addr), kgo.DefaultProduceTopic("zombie"),
		kgo.ProduceRequestTimeout(500*time.Millisecond), kgo.RequestTimeoutOverhead(500*time.Millisecond),
		kgo.RecordDeliveryTimeout(time.Minute), kgo.ProducerLinger(0), kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// A first record, acknowledged, warms the client up (metadata, producer id,
	// connection to A), so the next batch reaches A at once even on a loaded machine;
	// a cold client could still be initializing when A is paused, and A would then
	// hold nothing to upload late.
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("one")}).FirstErr(); err != nil {
		t.Fatalf("first record: %v", err)
	}
	// Its request timed out once at least (500 ms against a 1.5 s linger); a retry
	// that missed the first segment seals a second one after another linger. Let it
	// land, so every object counted after the pause is the zombie's.
	time.Sleep(2 * time.Second)
	objectsBefore := countFiles(t, storeDir)
	batches := func() float64 {
		resp, err := http.Get("http://" + metricsOf[a] + "/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		m, err := metrics.ParseText(resp.Body)
		if err != nil {
			return -1
		}
		v, _ := m.Value("strata_agent_produced_batches_total")
		return v
	}
	batchesBefore := batches()

	second := make(chan error, 1)
	cl.Produce(ctx, &kgo.Record{Value: []byte("two")}, func(_ *kgo.Record, err error) { second <- err })
	// The batch reaches A's open segment, which waits for its 1.5 s linger (the
	// request times out at 500 ms and is retried into the same segment); A is paused
	// as soon as it holds the batch, before the segment seals. The linger starts when
	// the batch arrives, so the wait for its arrival can be long (a loaded machine, a
	// reconnection after the first record's timed-out request) without A sealing first.
	groupWaitFor(t, 20*time.Second, "the batch in A's open segment", func() error {
		if n := batches(); n <= batchesBefore {
			return fmt.Errorf("A accepted %v batches, %v before", n, batchesBefore)
		}
		return nil
	})
	a.signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			a.signal(syscall.SIGCONT)
		}
	}()
	// A's lease ends, B leads, the producer's retry commits through B.
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("second record: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the second record was never acknowledged")
	}
	afterRetry := countFiles(t, storeDir)

	// A wakes and uploads and commits its segment, with the batch in it.
	a.signal(syscall.SIGCONT)
	stopped = false
	groupWaitFor(t, 30*time.Second, "the zombie's late upload", func() error {
		if n := countFiles(t, storeDir); n <= afterRetry {
			return fmt.Errorf("%d objects (before the pause %d, after the retry %d)", n, objectsBefore, afterRetry)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // its commit follows its upload

	// Every record once.
	consumer, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.ConsumeTopics("zombie"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 3 && time.Now().Before(deadline) {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fs := consumer.PollFetches(pctx)
		pcancel()
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Fatalf("partition holds %q, want [one two]", got)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
