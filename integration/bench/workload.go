package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultWorkload is the suite's base: 1 KiB records on 16 partitions, acks=all.
func DefaultWorkload() Workload {
	return Workload{
		RecordBytes:        1024,
		Partitions:         16,
		Producers:          4,
		Consumers:          1,
		Acks:               "all",
		Linger:             0,
		Compression:        "none",
		Idempotent:         true,
		Duration:           30 * time.Second,
		Warmup:             5 * time.Second,
		MaxBufferedRecords: 8192,
	}
}

// minRecordBytes is the smallest record: its first 8 bytes are the send time.
const minRecordBytes = 16

// Validate reports every problem with w at once.
func (w Workload) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if w.RecordBytes < minRecordBytes || w.RecordBytes > 16<<20 {
		bad("record size %d: want %d bytes to 16 MiB", w.RecordBytes, minRecordBytes)
	}
	if w.Partitions < 1 || w.Partitions > 10000 {
		bad("partitions %d: want 1 to 10000", w.Partitions)
	}
	if w.Producers < 1 || w.Producers > 1000 {
		bad("producers %d: want 1 to 1000", w.Producers)
	}
	if w.Consumers < 0 || w.Consumers > w.Partitions {
		bad("consumers %d: want 0 to the partition count (%d)", w.Consumers, w.Partitions)
	}
	if _, err := ackOpt(w.Acks); err != nil {
		errs = append(errs, err)
	}
	if w.Idempotent && w.Acks != "all" {
		bad("idempotence needs acks=all (acks=%s)", w.Acks)
	}
	if w.Linger < 0 || w.Linger > time.Minute {
		bad("linger %v: want 0 to 1m", w.Linger)
	}
	if _, err := compressionOpt(w.Compression); err != nil {
		errs = append(errs, err)
	}
	if w.Duration < time.Second {
		bad("duration %v: want at least 1s", w.Duration)
	}
	if w.Warmup < 0 {
		bad("warm-up %v: want 0 or more", w.Warmup)
	}
	if w.RateMiBps < 0 {
		bad("rate %v MiB/s: want 0 (unlimited) or more", w.RateMiBps)
	}
	if w.MaxBufferedRecords < 1 {
		bad("max buffered records %d: want at least 1", w.MaxBufferedRecords)
	}
	switch {
	case w.MaxInflight < 0 || w.MaxInflight > 1000:
		bad("max in-flight %d: want 0 (the client's default) to 1000", w.MaxInflight)
	case w.MaxInflight > 0 && w.Idempotent:
		bad("max in-flight %d: only for producers that are not idempotent (idempotent ones keep 5)", w.MaxInflight)
	}
	return errors.Join(errs...)
}

func ackOpt(acks string) (kgo.Acks, error) {
	switch acks {
	case "all", "-1":
		return kgo.AllISRAcks(), nil
	case "1":
		return kgo.LeaderAck(), nil
	case "0":
		return kgo.NoAck(), nil
	}
	return kgo.Acks{}, fmt.Errorf("acks %q: want all, 1 or 0", acks)
}

func compressionOpt(c string) (kgo.CompressionCodec, error) {
	switch c {
	case "none", "":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("compression %q: want none, gzip, snappy, lz4 or zstd", c)
}

// Progress is the state of a run, once a second.
type Progress struct {
	Target   string
	Elapsed  time.Duration // since the start, warm-up included
	Total    time.Duration // warm-up + duration
	Warmup   bool
	Last     Second // the second just ended
	Consumed int64  // records consumed so far
}

// Probe reads a system under test's cumulative figures; the runner subtracts a
// snapshot at the start of the measured window from one at its end.
type Probe interface {
	Snapshot(ctx context.Context) (ServerStats, error)
}

// histogram bounds: 1 µs to 5 minutes, 3 significant digits.
const (
	histMin = 1
	histMax = int64(5 * time.Minute / time.Microsecond)
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, 3) }

func latencies(h *hdrhistogram.Histogram) Latencies {
	if h.TotalCount() == 0 {
		return Latencies{}
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Latencies{
		Count: h.TotalCount(),
		P50:   us(h.ValueAtQuantile(50)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
	}
}

// recorder collects one client's latencies: the current second's and the measured
// window's. Each client has its own, so promises of different clients never contend.
type recorder struct {
	measuring *atomic.Bool
	mu        sync.Mutex
	cur       *hdrhistogram.Histogram
	curBytes  int64
	total     *hdrhistogram.Histogram
	bytes     int64
	errors    int64
}

func newRecorder(measuring *atomic.Bool) *recorder {
	return &recorder{measuring: measuring, cur: newHist(), total: newHist()}
}

func (r *recorder) add(lat time.Duration, n int) {
	us := max(int64(lat/time.Microsecond), histMin)
	us = min(us, histMax)
	in := r.measuring.Load()
	r.mu.Lock()
	_ = r.cur.RecordValue(us)
	r.curBytes += int64(n)
	if in {
		_ = r.total.RecordValue(us)
		r.bytes += int64(n)
	}
	r.mu.Unlock()
}

func (r *recorder) fail() {
	if r.measuring.Load() {
		r.mu.Lock()
		r.errors++
		r.mu.Unlock()
	}
}

// takeSecond merges this second's values into h and starts the next second.
func (r *recorder) takeSecond(h *hdrhistogram.Histogram) (bytes int64) {
	r.mu.Lock()
	h.Merge(r.cur)
	r.cur.Reset()
	bytes, r.curBytes = r.curBytes, 0
	r.mu.Unlock()
	return bytes
}

// Run drives w against the Kafka cluster at bootstrap: it creates a topic, starts the
// consumers and producers, discards the warm-up and measures for w.Duration. probe
// (nil: none) gives the server's own figures over the measured window; progress (nil:
// none) is called once a second. When ctx ends early the result covers what was
// measured, with Interrupted set; Run returns an error only when nothing could run.
func Run(ctx context.Context, target string, bootstrap []string, w Workload, probe Probe, progress func(Progress)) (*Result, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	res := &Result{Target: target, Workload: w}
	topic := fmt.Sprintf("strata-bench-%d", time.Now().UnixNano())
	if err := createTopic(ctx, bootstrap, topic, w.Partitions); err != nil {
		return nil, err
	}

	var measuring atomic.Bool
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var consumed, consumedTotal atomic.Int64
	var clientErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { clientErr = err })
		stop()
	}

	// Consumers first, so they are waiting when the first record lands.
	consumers := make([]*recorder, w.Consumers)
	for i := range consumers {
		rec := newRecorder(&measuring)
		consumers[i] = rec
		parts := map[int32]kgo.Offset{}
		for p := i; p < w.Partitions; p += w.Consumers {
			parts[int32(p)] = kgo.NewOffset().AtStart()
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
			kgo.FetchMaxWait(time.Second))
		if err != nil {
			return nil, fmt.Errorf("consumer: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for runCtx.Err() == nil {
				fs := cl.PollFetches(runCtx)
				now := time.Now().UnixNano()
				fs.EachError(func(_ string, _ int32, err error) {
					// franz-go retries retriable errors itself; what reaches here is
					// final, except the end of the run.
					if !errors.Is(err, context.Canceled) && !kerr.IsRetriable(err) {
						fail(fmt.Errorf("consume: %w", err))
					}
				})
				fs.EachRecord(func(r *kgo.Record) {
					if len(r.Value) < 8 {
						fail(fmt.Errorf("consume: a record of %d bytes is not the bench's", len(r.Value)))
						return
					}
					sent := int64(binary.LittleEndian.Uint64(r.Value))
					rec.add(time.Duration(now-sent), len(r.Value))
					consumedTotal.Add(1)
					if measuring.Load() {
						consumed.Add(1)
					}
				})
			}
		}()
	}

	acks, _ := ackOpt(w.Acks)
	codec, _ := compressionOpt(w.Compression)
	payload := make([]byte, w.RecordBytes)
	_, _ = rand.Read(payload)
	pool := sync.Pool{New: func() any { b := make([]byte, w.RecordBytes); return &b }}
	var pace *pacer
	if w.RateMiBps > 0 {
		pace = newPacer(w.RateMiBps * (1 << 20) / float64(w.RecordBytes))
	}
	producers := make([]*recorder, w.Producers)
	var acked atomic.Int64 // records acknowledged in the window
	for i := range producers {
		rec := newRecorder(&measuring)
		producers[i] = rec
		opts := []kgo.Opt{kgo.SeedBrokers(bootstrap...), kgo.DefaultProduceTopic(topic),
			kgo.RequiredAcks(acks), kgo.ProducerLinger(w.Linger), kgo.ProducerBatchCompression(codec),
			kgo.MaxBufferedRecords(w.MaxBufferedRecords), kgo.RecordPartitioner(kgo.RoundRobinPartitioner())}
		if !w.Idempotent {
			opts = append(opts, kgo.DisableIdempotentWrite())
		}
		if w.MaxInflight > 0 {
			opts = append(opts, kgo.MaxProduceRequestsInflightPerBroker(w.MaxInflight))
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			stop()
			wg.Wait()
			return nil, fmt.Errorf("producer: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for runCtx.Err() == nil {
				if pace != nil && !pace.wait(runCtx) {
					break
				}
				bp := pool.Get().(*[]byte)
				v := *bp
				copy(v[8:], payload[8:])
				sent := time.Now()
				binary.LittleEndian.PutUint64(v, uint64(sent.UnixNano()))
				cl.Produce(runCtx, &kgo.Record{Value: v}, func(r *kgo.Record, err error) {
					lat := time.Since(sent)
					pool.Put(bp)
					switch {
					case err == nil:
						rec.add(lat, len(v))
						if measuring.Load() {
							acked.Add(1)
						}
					case errors.Is(err, context.Canceled):
					default:
						rec.fail()
					}
				})
			}
			// Records still buffered when the run ends are abandoned, not waited for:
			// they were produced after the window.
		}()
	}

	// The clock: once a second, one point of the series and a progress call.
	start := time.Now()
	warmEnd := start.Add(w.Warmup)
	end := warmEnd.Add(w.Duration)
	var before ServerStats
	snapshot := func() (ServerStats, error) {
		if probe == nil {
			return ServerStats{}, nil
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return probe.Snapshot(sctx)
	}
	var probeErr error
	if w.Warmup == 0 {
		before, probeErr = snapshot()
		measuring.Store(true)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var measuredFrom time.Time
	if measuring.Load() {
		measuredFrom = time.Now()
	}
	for done := false; !done; {
		var now time.Time
		select {
		case now = <-tick.C:
		case <-runCtx.Done():
			now, done = time.Now(), true
			res.Interrupted = true
		}
		sec := Second{At: now.Sub(start).Round(time.Millisecond), Warmup: !measuring.Load()}
		ph, eh := newHist(), newHist()
		for _, r := range producers {
			sec.ProducedBytes += r.takeSecond(ph)
		}
		for _, r := range consumers {
			r.takeSecond(eh)
		}
		sec.Produce, sec.EndToEnd = latencies(ph), latencies(eh)
		sec.ProducedRecords = sec.Produce.Count
		res.Series = append(res.Series, sec)
		if progress != nil {
			progress(Progress{Target: target, Elapsed: now.Sub(start), Total: w.Warmup + w.Duration,
				Warmup: sec.Warmup, Last: sec, Consumed: consumedTotal.Load()})
		}
		switch {
		case !measuring.Load() && !now.Before(warmEnd) && !done:
			before, probeErr = snapshot()
			measuredFrom = time.Now()
			measuring.Store(true)
		case measuring.Load() && !now.Before(end):
			done = true
		}
	}
	measuring.Store(false)
	if !measuredFrom.IsZero() {
		res.Measured = time.Since(measuredFrom)
	}
	after, err := snapshot()
	if probeErr == nil {
		probeErr = err
	}
	stop()
	wg.Wait()

	ptotal, etotal := newHist(), newHist()
	for _, r := range producers {
		ptotal.Merge(r.total)
		res.Bytes += r.bytes
		res.Errors += r.errors
	}
	for _, r := range consumers {
		etotal.Merge(r.total)
	}
	res.Records = acked.Load()
	res.Consumed = consumed.Load()
	res.Produce, res.EndToEnd = latencies(ptotal), latencies(etotal)
	if probe != nil && probeErr == nil && !measuredFrom.IsZero() {
		res.Server = after.Sub(before)
	}
	switch {
	case clientErr != nil:
		res.Interrupted = true
		res.Err = clientErr.Error()
	case probeErr != nil:
		res.Err = "server figures: " + probeErr.Error()
	case res.Interrupted && ctx.Err() != nil:
		res.Err = "interrupted"
	}
	return res, nil
}

// Sub is the change from before to s; the peak RSS and process count are s's.
func (s ServerStats) Sub(before ServerStats) ServerStats {
	s.CPUSeconds -= before.CPUSeconds
	s.Puts -= before.Puts
	s.Gets -= before.Gets
	s.Commits -= before.Commits
	return s
}

func createTopic(ctx context.Context, bootstrap []string, topic string, partitions int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...))
	if err != nil {
		return err
	}
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(cctx, int32(partitions), -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// pacer spaces records evenly at a rate shared by all producers.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newPacer(perSec float64) *pacer {
	return &pacer{interval: time.Duration(float64(time.Second) / perSec), next: time.Now()}
}

// wait blocks until the caller's slot; false if ctx ended first.
func (p *pacer) wait(ctx context.Context) bool {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now.Add(-100 * time.Millisecond)) {
		p.next = now // behind: do not burst to catch up more than 100 ms
	}
	slot := p.next
	p.next = p.next.Add(p.interval)
	p.mu.Unlock()
	d := time.Until(slot)
	if d < time.Millisecond {
		return ctx.Err() == nil // sleeping less than a timer's resolution costs more than it paces
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
