package agent

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// gatedStore blocks or fails PUTs while its gate says so: a storage outage or a slow
// bucket, switched by the test.
type gatedStore struct {
	objstore.Store
	mu   sync.Mutex
	down bool          // PUTs fail at once
	hold chan struct{} // PUTs wait until closed (nil: no wait)
	puts int
}

func (g *gatedStore) set(down bool, hold chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down, g.hold = down, hold
}

func (g *gatedStore) Put(ctx context.Context, key string, body io.Reader, size int64, opts objstore.PutOptions) (objstore.ObjectInfo, error) {
	g.mu.Lock()
	down, hold := g.down, g.hold
	g.puts++
	g.mu.Unlock()
	if down {
		return objstore.ObjectInfo{}, errors.New("injected outage")
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return objstore.ObjectInfo{}, ctx.Err()
		}
	}
	return g.Store.Put(ctx, key, body, size, opts)
}

// A storage outage makes produces fail with a retriable error once their timeout
// passes; nothing is acknowledged that is not stored; when storage returns, the agent
// recovers and the same producer's retries succeed.
func TestProduceDuringStorageOutage(t *testing.T) {
	store := &gatedStore{Store: objstore.NewMemory()}
	s := startAgent(t, withStore(store), withConfig(func(c *Config) { c.UploadTimeout = 2 * time.Second }))
	createTopic(t, s, "outage", 1, nil)
	cl := kafkaClient(t, s)

	store.set(true, nil)
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 500
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = "outage", topicIDOf(s, "outage")
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batchOf(t, objectlog.CodecNone, 1, "lost?")
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testContext(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	code := resp.Topics[0].Partitions[0].ErrorCode
	if e := kerr.ErrorForCode(code); code == 0 || !kerr.IsRetriable(e) {
		t.Fatalf("produce during an outage: %v, want a retriable error", e)
	}

	// A client producing through the outage: its record is acknowledged only after
	// storage is back, and then it is readable at the acknowledged offset.
	producer := kafkaClient(t, s, kgo.DefaultProduceTopic("outage"), kgo.RecordRetries(100),
		kgo.ProduceRequestTimeout(time.Second), kgo.RecordDeliveryTimeout(time.Minute))
	done := make(chan *kgo.Record, 1)
	producer.Produce(testContext(t), &kgo.Record{Value: []byte("kept")}, func(r *kgo.Record, err error) {
		if err != nil {
			t.Errorf("produce across the outage: %v", err)
		}
		done <- r
	})
	select {
	case r := <-done:
		t.Fatalf("acknowledged during the outage at offset %d", r.Offset)
	case <-time.After(1500 * time.Millisecond):
	}
	store.set(false, nil)
	var acked *kgo.Record
	select {
	case acked = <-done:
	case <-time.After(45 * time.Second):
		t.Fatal("the producer never recovered after the outage")
	}
	f := fetchRaw(t, s, cl, "outage", 0, acked.Offset, nil)
	if _, vals, _ := batchesOf(t, f.Topics[0].Partitions[0].RecordBatches); len(vals) == 0 || vals[0] != "kept" {
		t.Fatalf("offset %d holds %v, want [kept ...]", acked.Offset, vals)
	}
}

// When the produce buffer is full, the agent stops reading the producing connection
// (backpressure) instead of growing; other connections are served; everything is
// answered once storage catches up.
func TestProduceBackpressure(t *testing.T) {
	store := &gatedStore{Store: objstore.NewMemory()}
	s := startAgent(t, withStore(store), withConfig(func(c *Config) {
		c.MaxRequestBytes = 64 << 10
		c.MessageMaxBytes = 32 << 10
		c.SegmentBytes = 64 << 10
		c.MaxBufferedBytes = 128 << 10
	}))
	createTopic(t, s, "slow", 1, nil)
	hold := make(chan struct{})
	store.set(false, hold)

	conn := rawConn(t, s)
	value := string(make([]byte, 20<<10))
	// Ten 20 KiB produces: the buffer holds about six; the reader blocks on the rest,
	// so a request pipelined behind them is not even read yet.
	for i := range 10 {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(9)
		req.Acks, req.TimeoutMillis = -1, 60_000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "slow"
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = batchOf(t, objectlog.CodecNone, int64(i), value)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		rawSend(t, conn, sizePrefixed(requestFrame(req, 9, int32(i))))
	}
	rawSend(t, conn, sizePrefixed(requestFrame(kmsg.NewPtrApiVersionsRequest(), 3, 100)))

	// The buffer fills (PUTs are held) and stays at its cap: the remaining requests
	// wait unread in the socket.
	ctx := testContext(t)
	for s.w.buffered() < 100<<10 {
		if ctx.Err() != nil {
			t.Fatalf("buffer never filled: %d bytes", s.w.buffered())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Another connection is served meanwhile.
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(testContext(t), kafkaClient(t, s)); err != nil {
		t.Fatalf("metadata on another connection while one is paused: %v", err)
	}
	if n := s.w.buffered(); n > 128<<10 {
		t.Fatalf("%d bytes buffered, over the 128 KiB cap", n)
	}
	close(hold)
	for i := range 10 {
		id, body := rawResponse(t, conn)
		body = body[1:] // the flexible response header's empty tag section
		if id != int32(i) {
			t.Fatalf("answer %d has correlation id %d", i, id)
		}
		resp := kmsg.NewPtrProduceResponse()
		resp.SetVersion(9)
		if err := resp.ReadFrom(body); err != nil {
			t.Fatal(err)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != 0 || p.BaseOffset != int64(i) {
			t.Fatalf("produce %d: error %v, offset %d; want none, %d", i, kerr.ErrorForCode(p.ErrorCode), p.BaseOffset, i)
		}
	}
	if id, _ := rawResponse(t, conn); id != 100 {
		t.Fatalf("the pipelined ApiVersions came back as %d, want 100", id)
	}
}
