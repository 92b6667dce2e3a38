package integration

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestLocalSIGTERMFlushes starts `strata local` with a linger far longer than the test,
// so nothing it buffers is uploaded on its own; SIGTERM must upload and commit the open
// segment, answer the waiting producers, and exit 0. After a restart on the same data
// directory every acknowledged record is read back at its acknowledged offset.
func TestLocalSIGTERMFlushes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	srv := startLocal(t, localOptions{Linger: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	producer, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr), kgo.DefaultProduceTopic("flush"),
		kgo.AllowAutoTopicCreation(), kgo.ProducerLinger(0), kgo.RecordRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	closeProducer := sync.OnceFunc(producer.Close)
	defer closeProducer()
	var mu sync.Mutex
	acked := map[int64]string{}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		producer.Produce(ctx, &kgo.Record{Value: fmt.Appendf(nil, "v%03d", i)}, func(r *kgo.Record, err error) {
			defer wg.Done()
			if err == nil {
				mu.Lock()
				acked[r.Offset] = string(r.Value)
				mu.Unlock()
			}
		})
	}
	// Give the requests time to reach the agent's buffer (loopback: microseconds);
	// records that do not make it simply fail, which the checks below allow.
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	early := len(acked)
	mu.Unlock()
	if early != 0 {
		t.Fatalf("%d records acknowledged before SIGTERM with a one-minute linger", early)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	<-srv.exited
	// The flush's answers are on their way to the client. Records it had not sent
	// yet, or sent as the agent closed (an idempotent producer retries those for ever,
	// whatever RecordRetries says), are failed by closing the client once the answers
	// had time to arrive.
	allAnswered := make(chan struct{})
	go func() { wg.Wait(); close(allAnswered) }()
	select {
	case <-allAnswered:
	case <-time.After(10 * time.Second):
		closeProducer()
		<-allAnswered
	}
	if srv.err != nil {
		t.Fatalf("strata local exited with %v after SIGTERM, want 0", srv.err)
	}
	if len(acked) == 0 {
		t.Fatal("SIGTERM answered no waiting producer: the open segment was not flushed")
	}
	t.Logf("%d records acknowledged by the shutdown flush", len(acked))

	srv.earlier = append(srv.earlier, srv.out.String())
	srv.start(t, strataBinary(t))
	consumer, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr), kgo.ConsumeTopics("flush"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	found := 0
	for found < len(acked) {
		fs := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read back %d of %d acknowledged records", found, len(acked))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if want, ok := acked[r.Offset]; ok {
				if want != string(r.Value) {
					t.Fatalf("offset %d holds %q, %q was acknowledged", r.Offset, r.Value, want)
				}
				found++
			}
		})
	}
}

// Offsets a group commits are in the metastore: a restart of strata local keeps them,
// and sarama's offset manager (a simple consumer, generation -1) reads them back.
func TestLocalCommittedOffsetsSurviveRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	srv := startLocal(t, localOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	if r, err := adm.CreateTopic(ctx, 2, 1, nil, "offsets"); err != nil || r.Err != nil {
		t.Fatalf("create topic: %v %v", err, r.Err)
	}
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: "offsets", Partition: 0, At: 7, LeaderEpoch: -1, Metadata: "kept"})
	offs.Add(kadm.Offset{Topic: "offsets", Partition: 1, At: 11, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "durable", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit offsets: %v %v", err, resp.Error())
	}
	cl.Close()
	srv.restart(t)

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	client, err := sarama.NewClient([]string{srv.Addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	om, err := sarama.NewOffsetManagerFromClient("durable", client)
	if err != nil {
		t.Fatal(err)
	}
	defer om.Close()
	for p, want := range map[int32]int64{0: 7, 1: 11} {
		pom, err := om.ManagePartition("offsets", p)
		if err != nil {
			t.Fatal(err)
		}
		if got, meta := pom.NextOffset(); got != want || (p == 0 && meta != "kept") {
			t.Errorf("partition %d after restart: offset %d metadata %q, want %d", p, got, meta, want)
		}
		pom.AsyncClose()
	}
}
