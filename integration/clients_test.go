package integration

// The client matrix: real Kafka clients (franz-go, IBM/sarama, segmentio/kafka-go and
// the kcat binary on librdkafka) against a `strata local` process over TCP. Each client
// produces keyed, keyless, tombstone and large records with headers, under every
// compression codec, to a three-partition topic of its own, and reads them back; the
// comparison is of full record content, per partition, at offsets 0, 1, 2, ...
// Admin operations run through kadm, sarama's ClusterAdmin and kafka-go's Client.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/internal/syncbuf"
)

// codecs are the Kafka compression codecs; every client produces under each.
var codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

const (
	matrixPartitions = 3
	matrixRecords    = 12 // per partition and codec
	// produceRounds splits each client's records into this many produce calls, so each
	// partition gets several batches and offsets must continue across them.
	produceRounds = 3
	clientTimeout = 60 * time.Second
	// consumeTimeout bounds waiting for records that should all be there already.
	consumeTimeout = 30 * time.Second
)

// TestClients runs the client matrix against one `strata local` on a directory store.
// Clients and codecs run in parallel, each on its own topic; run one with
// -run 'TestClients$/sarama/zstd'.
func TestClients(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	srv := startLocal(t, localOptions{})
	addr := srv.Addr

	t.Run("franz-go", func(t *testing.T) {
		t.Parallel()
		for _, codec := range codecs {
			t.Run(codec, func(t *testing.T) {
				t.Parallel()
				// Idempotence is franz-go's default: with InitProducerId served the batches
				// carry producer ids and sequences; without it franz-go logs that the
				// broker is too old and produces without one.
				franzRoundTrip(t, addr, "franz-go", codec)
			})
		}
		t.Run("mixed-codecs", func(t *testing.T) {
			t.Parallel()
			franzMixedCodecs(t, addr)
		})
	})
	t.Run("sarama", func(t *testing.T) {
		t.Parallel()
		for _, codec := range codecs {
			t.Run(codec, func(t *testing.T) {
				t.Parallel()
				saramaRoundTrip(t, addr, codec)
			})
		}
	})
	t.Run("kafka-go", func(t *testing.T) {
		t.Parallel()
		for _, codec := range codecs {
			t.Run(codec, func(t *testing.T) {
				t.Parallel()
				kafkaGoRoundTrip(t, addr, codec)
			})
		}
	})
	t.Run("kcat", func(t *testing.T) {
		t.Parallel()
		bin := kcatBinary(t)
		t.Run("metadata", func(t *testing.T) {
			t.Parallel()
			kcatMetadata(t, bin, addr)
		})
		for _, codec := range codecs {
			t.Run(codec, func(t *testing.T) {
				t.Parallel()
				kcatRoundTrip(t, bin, addr, codec)
			})
		}
	})
	t.Run("kadm-admin", func(t *testing.T) {
		t.Parallel()
		kadmAdmin(t, addr)
	})
	t.Run("sarama-admin", func(t *testing.T) {
		t.Parallel()
		saramaAdmin(t, addr)
	})
	t.Run("kafka-go-admin", func(t *testing.T) {
		t.Parallel()
		kafkaGoAdmin(t, addr)
	})
}

// TestClientsOnMinIO runs franz-go's round trip under every codec against a `strata
// local` on MinIO, checks that objects landed in the bucket, restarts the server on the
// same data directory and bucket, and reads everything back again.
func TestClientsOnMinIO(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary and MinIO")
	}
	srv := startLocal(t, localOptions{MinIO: true})
	want := map[string][]testRecord{}
	var mu sync.Mutex
	t.Run("produce", func(t *testing.T) {
		for _, codec := range codecs {
			t.Run(codec, func(t *testing.T) {
				t.Parallel()
				recs := franzRoundTrip(t, srv.Addr, "minio-franz-go", codec)
				mu.Lock()
				want[codec] = recs
				mu.Unlock()
			})
		}
	})
	if t.Failed() {
		return
	}
	if len(want) == 0 {
		t.Skip("no produce subtest ran (filtered by -run)")
	}
	if n := srv.objectCount(t); n == 0 {
		t.Fatalf("no objects under s3://%s/%s after producing: the data is not on MinIO", srv.Bucket, srv.Prefix)
	}
	srv.restart(t)
	for _, codec := range codecs {
		if want[codec] == nil {
			continue
		}
		t.Run("after-restart/"+codec, func(t *testing.T) {
			who := "franz-go after restart, codec " + codec
			topic := "it-minio-franz-go-" + codec
			got := franzConsume(t, who, srv.Addr, topic, countPerPartition(want[codec]))
			checkRecords(t, who, want[codec], got)
		})
	}
}

// --- records and their comparison ---

type testHeader struct {
	Key   string
	Value []byte
}

// testRecord is a record as produced or consumed. Nil Key or Value means null.
type testRecord struct {
	Partition int32
	Offset    int64 // consumed records only
	Key       []byte
	Value     []byte
	Headers   []testHeader
	Timestamp time.Time // zero: not compared
}

// makeRecords returns n records for each of partitions partitions, interleaved so that
// every produce call spans all partitions. Every fifth record has a null key, every
// fourth a null value (a tombstone), record 7 of each partition a 64 KiB value; header
// sets vary between none, one, and three with a repeated key. Values repeat text, so
// every codec actually shrinks them. Label goes into keys and values: a record read
// from the wrong topic is visible.
func makeRecords(label string, partitions int32, n int) []testRecord {
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var recs []testRecord
	for i := range n {
		for p := range partitions {
			r := testRecord{Partition: p, Timestamp: base.Add(time.Duration(i) * time.Millisecond)}
			if i%5 != 3 {
				r.Key = fmt.Appendf(nil, "%s-p%d-k%03d", label, p, i)
			}
			switch {
			case i%4 == 2:
			case i == 7:
				r.Value = bytes.Repeat(fmt.Appendf(nil, "%s/p%d/large-%03d;", label, p, i), 64<<10/(len(label)+16))
			default:
				r.Value = []byte(strings.Repeat(fmt.Sprintf("%s p%d r%03d ünïcødé ✓ ", label, p, i), 6))
			}
			switch i % 3 {
			case 1:
				r.Headers = []testHeader{{"trace", fmt.Appendf(nil, "%s-%d-%d", label, p, i)}}
			case 2:
				r.Headers = []testHeader{{"h", []byte("one")}, {"content-type", []byte("text/plain")}, {"h", []byte("two")}}
			}
			recs = append(recs, r)
		}
	}
	return recs
}

// rounds splits records into k consecutive chunks.
func rounds(recs []testRecord, k int) [][]testRecord {
	var out [][]testRecord
	size := (len(recs) + k - 1) / k
	for len(recs) > 0 {
		n := min(size, len(recs))
		out = append(out, recs[:n])
		recs = recs[n:]
	}
	return out
}

// fromOffset drops each partition's first from records: what a consumer starting at
// offset from reads.
func fromOffset(recs []testRecord, from int64) []testRecord {
	var out []testRecord
	seen := map[int32]int64{}
	for _, r := range recs {
		if seen[r.Partition] >= from {
			out = append(out, r)
		}
		seen[r.Partition]++
	}
	return out
}

func countPerPartition(recs []testRecord) map[int32]int {
	n := map[int32]int{}
	for _, r := range recs {
		n[r.Partition]++
	}
	return n
}

func byPartition(recs []testRecord) map[int32][]testRecord {
	m := map[int32][]testRecord{}
	for _, r := range recs {
		m[r.Partition] = append(m[r.Partition], r)
	}
	return m
}

// checkRecords compares what a consumer read with what was produced: per partition, the
// same records in the same order at offsets 0, 1, 2, ... Who names the client and codec.
func checkRecords(t *testing.T, who string, want, got []testRecord) {
	t.Helper()
	checkRecordsFrom(t, who, 0, want, got)
}

// checkRecordsFrom is checkRecords for a consumer that started at offset from: it must
// read each partition's records from the one at from on.
func checkRecordsFrom(t *testing.T, who string, from int64, want, got []testRecord) {
	t.Helper()
	want = fromOffset(want, from)
	w, g := byPartition(want), byPartition(got)
	parts := slices.Sorted(maps.Keys(w))
	for p := range g {
		if _, ok := w[p]; !ok {
			parts = append(parts, p)
		}
	}
	for _, p := range parts {
		if len(g[p]) != len(w[p]) {
			t.Errorf("%s: partition %d: consumed %d records, produced %d", who, p, len(g[p]), len(w[p]))
		}
		bad := 0
		for i := range min(len(w[p]), len(g[p])) {
			if d := diffRecord(w[p][i], g[p][i], from+int64(i)); d != "" {
				t.Errorf("%s: partition %d, record %d (key %s): %s", who, p, from+int64(i), show(w[p][i].Key), d)
				if bad++; bad == 5 {
					t.Errorf("%s: partition %d: further differences not shown", who, p)
					break
				}
			}
		}
	}
}

func diffRecord(want, got testRecord, offset int64) string {
	var d []string
	if got.Offset != offset {
		d = append(d, fmt.Sprintf("offset %d, want %d (offsets must run 0, 1, 2, ... in produce order)", got.Offset, offset))
	}
	if got.Partition != want.Partition {
		d = append(d, fmt.Sprintf("partition %d, want %d", got.Partition, want.Partition))
	}
	if !sameBytes(got.Key, want.Key) {
		d = append(d, fmt.Sprintf("key %s, want %s", show(got.Key), show(want.Key)))
	}
	if !sameBytes(got.Value, want.Value) {
		d = append(d, fmt.Sprintf("value %s, want %s", show(got.Value), show(want.Value)))
	}
	if !sameHeaders(got.Headers, want.Headers) {
		d = append(d, fmt.Sprintf("headers %s, want %s", showHeaders(got.Headers), showHeaders(want.Headers)))
	}
	if !want.Timestamp.IsZero() && got.Timestamp.UnixMilli() != want.Timestamp.UnixMilli() {
		d = append(d, fmt.Sprintf("timestamp %d ms, want %d ms", got.Timestamp.UnixMilli(), want.Timestamp.UnixMilli()))
	}
	return strings.Join(d, "; ")
}

// sameBytes tells null from present; the records never carry empty keys or values, so
// clients that decode an empty field as nil cannot cause a false failure.
func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// sameHeaders compares header lists in order. Header values are never null here, so
// nil and empty compare equal.
func sameHeaders(a, b []testHeader) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func show(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 48 {
		return fmt.Sprintf("%q...(%d bytes)", b[:48], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func showHeaders(hs []testHeader) string {
	var parts []string
	for _, h := range hs {
		parts = append(parts, fmt.Sprintf("%s=%s", h.Key, show(h.Value)))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// checkProducedOffsets checks the offsets a producer was acknowledged with: per
// partition, in produce order, 0, 1, 2, ...
func checkProducedOffsets(t *testing.T, who string, recs []testRecord, offsets []int64) {
	t.Helper()
	next := map[int32]int64{}
	bad := 0
	for i, r := range recs {
		if offsets[i] != next[r.Partition] {
			t.Errorf("%s: partition %d: record %d (key %s) acknowledged at offset %d, want %d",
				who, r.Partition, next[r.Partition], show(r.Key), offsets[i], next[r.Partition])
			if bad++; bad == 5 {
				return
			}
		}
		next[r.Partition]++
	}
}

// clientLog is a buffer for a client library's log, printed if the test fails.
func clientLog(t *testing.T, name string) *syncbuf.Buffer {
	b := &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() && b.String() != "" {
			t.Logf("%s log:\n%s", name, b.String())
		}
	})
	return b
}

// --- franz-go (kgo, kadm) ---

var franzCodecs = map[string]kgo.CompressionCodec{
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"snappy": kgo.SnappyCompression(),
	"lz4":    kgo.Lz4Compression(),
	"zstd":   kgo.ZstdCompression(),
}

func franzClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	logBuf := clientLog(t, "franz-go")
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.ClientID("strata-it-franz-go"),
		kgo.WithLogger(kgo.BasicLogger(logBuf, kgo.LogLevelInfo, nil)),
	}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("franz-go: new client: %v", err)
	}
	return cl
}

func newKadm(t *testing.T, addr string) *kadm.Client {
	t.Helper()
	cl := franzClient(t, addr)
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// createTopic creates a topic through kadm and waits until metadata shows every
// partition with a leader.
func createTopic(t *testing.T, addr, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	adm := newKadm(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, topic)
	if err != nil {
		t.Fatalf("kadm: create topic %s: %v %s", topic, err, resp.ErrMessage)
	}
	waitPartitions(t, adm, topic, partitions)
}

// waitPartitions polls metadata until topic has exactly n partitions, each with a leader.
func waitPartitions(t *testing.T, adm *kadm.Client, topic string, n int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last string
	for {
		details, err := adm.ListTopics(ctx, topic)
		td := details[topic]
		switch {
		case err != nil:
			last = err.Error()
		case td.Err != nil:
			last = td.Err.Error()
		case int32(len(td.Partitions)) != n:
			last = fmt.Sprintf("%d partitions", len(td.Partitions))
		default:
			last = ""
			for _, p := range td.Partitions {
				if p.Err != nil || p.Leader < 0 {
					last = fmt.Sprintf("partition %d: leader %d, %v", p.Partition, p.Leader, p.Err)
				}
			}
			if last == "" {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s: metadata never showed %d partitions with leaders; last: %s", topic, n, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkListedOffsets checks ListOffsets through kadm: start 0 and end = the record
// count for every partition.
func checkListedOffsets(t *testing.T, who, addr, topic string, want map[int32]int) {
	t.Helper()
	adm := newKadm(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		t.Errorf("%s: list start offsets of %s: %v", who, topic, err)
		return
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Errorf("%s: list end offsets of %s: %v", who, topic, err)
		return
	}
	for p, n := range want {
		if o, ok := starts.Lookup(topic, p); !ok || o.Offset != 0 {
			t.Errorf("%s: partition %d: start offset %d (listed %v), want 0", who, p, o.Offset, ok)
		}
		if o, ok := ends.Lookup(topic, p); !ok || o.Offset != int64(n) {
			t.Errorf("%s: partition %d: end offset %d (listed %v), want %d", who, p, o.Offset, ok, n)
		}
	}
}

// franzRoundTrip creates topic it-<client>-<codec>, produces the matrix records with
// franz-go under codec, consumes them back and compares. It returns the records.
func franzRoundTrip(t *testing.T, addr, client, codec string) []testRecord {
	label := client + "-" + codec
	topic := "it-" + label
	who := fmt.Sprintf("%s, codec %s, topic %s", client, codec, topic)
	createTopic(t, addr, topic, matrixPartitions, nil)
	recs := makeRecords(label, matrixPartitions, matrixRecords)
	cl := franzClient(t, addr, kgo.ProducerBatchCompression(franzCodecs[codec]),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	defer cl.Close()
	franzProduce(t, who, cl, topic, recs)
	if t.Failed() {
		return recs
	}
	got := franzConsume(t, who, addr, topic, countPerPartition(recs))
	checkRecords(t, who, recs, got)
	checkListedOffsets(t, who, addr, topic, countPerPartition(recs))
	// From the middle of a batch: the server returns whole batches, the client skips
	// the records before the offset asked for.
	const mid = 5
	who += fmt.Sprintf(", consuming from offset %d", mid)
	tail := fromOffset(recs, mid)
	checkRecordsFrom(t, who, mid, recs, franzConsumeFrom(t, who, addr, topic, mid, countPerPartition(tail)))
	return recs
}

// franzMixedCodecs produces to one topic with a producer per codec in turn, so each
// partition holds batches of all codecs one after another, and reads them back in one
// pass. Its producers disable idempotence, the other configuration users run.
func franzMixedCodecs(t *testing.T, addr string) {
	topic := "it-franz-go-mixed"
	who := "franz-go, all codecs in turn (idempotence off), topic " + topic
	createTopic(t, addr, topic, matrixPartitions, nil)
	recs := makeRecords("franz-go-mixed", matrixPartitions, 3*len(codecs))
	for i, chunk := range rounds(recs, len(codecs)) {
		cl := franzClient(t, addr, kgo.ProducerBatchCompression(franzCodecs[codecs[i]]),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite())
		franzProduceRound(t, who+", producing "+codecs[i], cl, topic, chunk)
		cl.Close()
	}
	if t.Failed() {
		return
	}
	checkRecords(t, who, recs, franzConsume(t, who, addr, topic, countPerPartition(recs)))
}

func franzProduce(t *testing.T, who string, cl *kgo.Client, topic string, recs []testRecord) {
	t.Helper()
	var offsets []int64
	for _, chunk := range rounds(recs, produceRounds) {
		offsets = append(offsets, franzProduceRound(t, who, cl, topic, chunk)...)
		if t.Failed() {
			return
		}
	}
	checkProducedOffsets(t, who, recs, offsets)
}

// franzProduceRound is one ProduceSync of recs; it returns the acknowledged offsets
// in the order of recs.
func franzProduceRound(t *testing.T, who string, cl *kgo.Client, topic string, recs []testRecord) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	krs := make([]*kgo.Record, len(recs))
	index := map[*kgo.Record]int{}
	for i, r := range recs {
		kr := &kgo.Record{Topic: topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		krs[i] = kr
		index[kr] = i
	}
	offsets := make([]int64, len(recs))
	for _, res := range cl.ProduceSync(ctx, krs...) {
		i := index[res.Record]
		if res.Err != nil {
			t.Errorf("%s: produce to partition %d (key %s): %v", who, recs[i].Partition, show(recs[i].Key), res.Err)
			continue
		}
		offsets[i] = res.Record.Offset
	}
	return offsets
}

// franzConsume reads topic from offset 0 of each partition until want records per
// partition have arrived or the deadline passes.
func franzConsume(t *testing.T, who, addr, topic string, want map[int32]int) []testRecord {
	t.Helper()
	return franzConsumeFrom(t, who, addr, topic, 0, want)
}

// franzConsumeFrom is franzConsume starting at offset from of each partition.
func franzConsumeFrom(t *testing.T, who, addr, topic string, from int64, want map[int32]int) []testRecord {
	t.Helper()
	offsets := map[int32]kgo.Offset{}
	for p := range want {
		offsets[p] = kgo.NewOffset().At(from)
	}
	cl := franzClient(t, addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchMaxWait(250*time.Millisecond))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	var got []testRecord
	have := map[int32]int{}
	for !reached(have, want) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Errorf("%s: consumed %v records per partition before the deadline, want %v", who, have, want)
			break
		}
		for _, e := range fs.Errors() {
			t.Logf("%s: fetch error on partition %d: %v", who, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			tr := testRecord{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
			for _, h := range r.Headers {
				tr.Headers = append(tr.Headers, testHeader{h.Key, h.Value})
			}
			got = append(got, tr)
			have[r.Partition]++
		})
	}
	return got
}

func reached(have, want map[int32]int) bool {
	for p, n := range want {
		if have[p] < n {
			return false
		}
	}
	return true
}

// kadmAdmin runs topic administration through kadm: create with configs (and again,
// which must fail), describe, incremental alter (set and delete), an invalid value,
// create partitions, list offsets by position and by time, delete, and create again.
func kadmAdmin(t *testing.T, addr string) {
	adm := newKadm(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*clientTimeout)
	defer cancel()
	const topic = "it-kadm-admin"
	who := "kadm, topic " + topic

	created, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{
		"retention.ms":   kadm.StringPtr("3600000"),
		"cleanup.policy": kadm.StringPtr("delete"),
	}, topic)
	if err != nil {
		t.Fatalf("%s: create topic: %v %s", who, err, created.ErrMessage)
	}
	if created.NumPartitions != -1 && created.NumPartitions != 2 {
		t.Errorf("%s: CreateTopics answered %d partitions, want 2", who, created.NumPartitions)
	}
	waitPartitions(t, adm, topic, 2)
	if again, err := adm.CreateTopic(ctx, 2, 1, nil, topic); !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Errorf("%s: creating it again: %v %s, want TOPIC_ALREADY_EXISTS", who, err, again.ErrMessage)
	}

	describe := func(step string) map[string]kadm.Config {
		t.Helper()
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			t.Fatalf("%s: describe configs %s: %v", who, step, err)
		}
		rc, err := rcs.On(topic, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			t.Fatalf("%s: describe configs %s: %v %s", who, step, err, rc.ErrMessage)
		}
		m := map[string]kadm.Config{}
		for _, c := range rc.Configs {
			m[c.Key] = c
		}
		return m
	}
	expect := func(step string, cfg map[string]kadm.Config, key, value string, dynamic bool) {
		t.Helper()
		c, ok := cfg[key]
		switch {
		case !ok:
			t.Errorf("%s: %s: %s not described", who, step, key)
		case c.MaybeValue() != value:
			t.Errorf("%s: %s: %s = %q, want %q", who, step, key, c.MaybeValue(), value)
		case dynamic && c.Source != kmsg.ConfigSourceDynamicTopicConfig:
			t.Errorf("%s: %s: %s source %v, want DYNAMIC_TOPIC_CONFIG", who, step, key, c.Source)
		case !dynamic && c.Source == kmsg.ConfigSourceDynamicTopicConfig:
			t.Errorf("%s: %s: %s source DYNAMIC_TOPIC_CONFIG, want a default", who, step, key)
		}
	}
	cfg := describe("after create")
	expect("after create", cfg, "retention.ms", "3600000", true)
	expect("after create", cfg, "cleanup.policy", "delete", true)

	alter := func(step string, acs []kadm.AlterConfig) error {
		t.Helper()
		resps, err := adm.AlterTopicConfigs(ctx, acs, topic)
		if err != nil {
			return err
		}
		r, err := resps.On(topic, nil)
		if err != nil {
			return err
		}
		if r.Err != nil {
			return fmt.Errorf("%w %s", r.Err, r.ErrMessage)
		}
		return nil
	}
	if err := alter("set and delete", []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("7200000")},
		{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadm.StringPtr("2000000")},
		{Op: kadm.DeleteConfig, Name: "cleanup.policy"},
	}); err != nil {
		t.Errorf("%s: incremental alter configs: %v", who, err)
	}
	cfg = describe("after incremental alter")
	expect("after incremental alter", cfg, "retention.ms", "7200000", true)
	expect("after incremental alter", cfg, "max.message.bytes", "2000000", true)
	expect("after incremental alter", cfg, "cleanup.policy", "delete", false)
	if err := alter("invalid value", []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("not-a-number")},
	}); err == nil {
		t.Errorf("%s: setting retention.ms=not-a-number succeeded, want INVALID_CONFIG", who)
	}
	expect("after the invalid alter", describe("after the invalid alter"), "retention.ms", "7200000", true)

	cps, err := adm.CreatePartitions(ctx, 2, topic)
	if err == nil {
		err = cps.Error()
	}
	if err != nil {
		t.Fatalf("%s: create partitions 2 -> 4: %v", who, err)
	}
	waitPartitions(t, adm, topic, 4)

	// Two records per partition, the second 10s after the first: list offsets by time.
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var recs []testRecord
	for p := range int32(4) {
		for i := range 2 {
			recs = append(recs, testRecord{Partition: p, Key: fmt.Appendf(nil, "k%d-%d", p, i),
				Value: []byte("v"), Timestamp: base.Add(time.Duration(i) * 10 * time.Second)})
		}
	}
	cl := franzClient(t, addr, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	franzProduce(t, who, cl, topic, recs)
	checkListedOffsets(t, who, addr, topic, countPerPartition(recs))
	after, err := adm.ListOffsetsAfterMilli(ctx, base.Add(time.Second).UnixMilli(), topic)
	if err == nil {
		err = after.Error()
	}
	if err != nil {
		t.Errorf("%s: list offsets after a time: %v", who, err)
	}
	for p := range int32(4) {
		if o, ok := after.Lookup(topic, p); !ok || o.Offset != 1 {
			t.Errorf("%s: partition %d: first offset with timestamp >= base+1s is %d (listed %v), want 1", who, p, o.Offset, ok)
		}
	}

	// The topic's max.message.bytes bounds a batch: over it is MESSAGE_TOO_LARGE.
	const small = "it-kadm-small-messages"
	if resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": kadm.StringPtr("1024")}, small); err != nil {
		t.Fatalf("%s: create %s: %v %s", who, small, err, resp.ErrMessage)
	}
	waitPartitions(t, adm, small, 1)
	scl := franzClient(t, addr, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.DisableIdempotentWrite())
	defer scl.Close()
	if err := scl.ProduceSync(ctx, &kgo.Record{Topic: small, Value: bytes.Repeat([]byte("s"), 100)}).FirstErr(); err != nil {
		t.Errorf("%s: a 100-byte record to %s (max.message.bytes 1024): %v", who, small, err)
	}
	if err := scl.ProduceSync(ctx, &kgo.Record{Topic: small, Value: bytes.Repeat([]byte("L"), 4096)}).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Errorf("%s: a 4 KiB record to %s (max.message.bytes 1024): %v, want MESSAGE_TOO_LARGE", who, small, err)
	}
	checkListedOffsets(t, who, addr, small, map[int32]int{0: 1})

	const missing = "it-kadm-no-such-topic"
	rcs, err := adm.DescribeTopicConfigs(ctx, missing)
	if err == nil {
		var rc kadm.ResourceConfig
		if rc, err = rcs.On(missing, nil); err == nil {
			err = rc.Err
		}
	}
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("%s: describe configs of a missing topic: %v, want UNKNOWN_TOPIC_OR_PARTITION", who, err)
	}

	dels, err := adm.DeleteTopics(ctx, topic)
	if err == nil {
		err = dels.Error()
	}
	if err != nil {
		t.Fatalf("%s: delete topic: %v", who, err)
	}
	for {
		details, err := adm.ListTopics(ctx)
		if err == nil && !details.Has(topic) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: topic still listed after delete", who)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The name is free again, and the new topic starts empty. The agent that answered
	// the create must not describe the deleted topic under its name afterwards. A fresh
	// client asks: franz-go caches metadata for MetadataMinAge (5s), and only a
	// CreatePartitions through it clears the cache, so adm could answer from before the
	// delete, as it would against Kafka.
	recreated, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
	if err != nil {
		t.Fatalf("%s: re-create after delete: %v %s", who, err, recreated.ErrMessage)
	}
	if details, err := newKadm(t, addr).ListTopics(ctx, topic); err == nil {
		if td := details[topic]; td.Err == nil && (td.ID != recreated.ID || len(td.Partitions) != 1) {
			t.Errorf("%s: metadata right after re-create describes topic id %s with %d partitions, but the create answered id %s with 1 (the deleted topic had id %s and 4)",
				who, td.ID, len(td.Partitions), recreated.ID, created.ID)
		}
	}
	waitPartitions(t, adm, topic, 1)
	checkListedOffsets(t, who+" (re-created)", addr, topic, map[int32]int{0: 0})
}

// --- IBM/sarama ---

var saramaCodecs = map[string]sarama.CompressionCodec{
	"none":   sarama.CompressionNone,
	"gzip":   sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy,
	"lz4":    sarama.CompressionLZ4,
	"zstd":   sarama.CompressionZSTD,
}

var (
	saramaLogOnce sync.Once
	saramaLog     = &syncbuf.Buffer{}
)

// saramaConfig is a sarama configuration at Kafka 2.8: record batches, headers, zstd,
// ApiVersions v3, IncrementalAlterConfigs.
func saramaConfig(t *testing.T, codec string) *sarama.Config {
	t.Helper()
	// sarama logs through one package variable; set it once, print it on failure.
	saramaLogOnce.Do(func() { sarama.Logger = log.New(saramaLog, "[sarama] ", log.Lmicroseconds) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sarama log (all sarama tests):\n%s", saramaLog.String())
		}
	})
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	cfg.ClientID = "strata-it-sarama"
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.Compression = saramaCodecs[codec]
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.MaxWaitTime = 250 * time.Millisecond
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	cfg.Admin.Timeout = 30 * time.Second
	return cfg
}

func saramaRoundTrip(t *testing.T, addr, codec string) {
	label := "sarama-" + codec
	topic := "it-" + label
	who := fmt.Sprintf("sarama, codec %s, topic %s", codec, topic)
	createTopic(t, addr, topic, matrixPartitions, nil)
	recs := makeRecords(label, matrixPartitions, matrixRecords)

	prod, err := sarama.NewSyncProducer([]string{addr}, saramaConfig(t, codec))
	if err != nil {
		t.Fatalf("%s: new producer: %v", who, err)
	}
	defer prod.Close()
	var offsets []int64
	for _, chunk := range rounds(recs, produceRounds) {
		msgs := make([]*sarama.ProducerMessage, len(chunk))
		for i, r := range chunk {
			m := &sarama.ProducerMessage{Topic: topic, Partition: r.Partition, Timestamp: r.Timestamp}
			if r.Key != nil {
				m.Key = sarama.ByteEncoder(r.Key)
			}
			if r.Value != nil {
				m.Value = sarama.ByteEncoder(r.Value)
			}
			for _, h := range r.Headers {
				m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
			}
			msgs[i] = m
		}
		if err := prod.SendMessages(msgs); err != nil {
			var perrs sarama.ProducerErrors
			if errors.As(err, &perrs) {
				for _, pe := range perrs {
					t.Errorf("%s: produce to partition %d: %v", who, pe.Msg.Partition, pe.Err)
				}
			}
			t.Fatalf("%s: send messages: %v", who, err)
		}
		for _, m := range msgs {
			offsets = append(offsets, m.Offset)
		}
	}
	checkProducedOffsets(t, who, recs, offsets)

	cons, err := sarama.NewConsumer([]string{addr}, saramaConfig(t, codec))
	if err != nil {
		t.Fatalf("%s: new consumer: %v", who, err)
	}
	defer cons.Close()
	checkRecords(t, who, recs, saramaConsume(t, who, cons, topic, 0, countPerPartition(recs)))
	const mid = 5
	who += fmt.Sprintf(", consuming from offset %d", mid)
	tail := fromOffset(recs, mid)
	checkRecordsFrom(t, who, mid, recs, saramaConsume(t, who, cons, topic, mid, countPerPartition(tail)))
}

// saramaConsume reads each partition from offset from until want records have arrived
// or the deadline passes.
func saramaConsume(t *testing.T, who string, cons sarama.Consumer, topic string, from int64, want map[int32]int) []testRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	var got []testRecord
	for p, n := range want {
		pc, err := cons.ConsumePartition(topic, p, from)
		if err != nil {
			t.Errorf("%s: consume partition %d from offset %d: %v", who, p, from, err)
			continue
		}
		have := 0
	read:
		for have < n {
			select {
			case m := <-pc.Messages():
				tr := testRecord{Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value, Timestamp: m.Timestamp}
				for _, h := range m.Headers {
					tr.Headers = append(tr.Headers, testHeader{string(h.Key), h.Value})
				}
				got = append(got, tr)
				have++
			case err := <-pc.Errors():
				t.Logf("%s: partition %d: consumer error: %v", who, p, err)
			case <-ctx.Done():
				t.Errorf("%s: partition %d: consumed %d of %d records before the deadline", who, p, have, n)
				break read
			}
		}
		pc.Close()
	}
	return got
}

// saramaAdmin runs sarama's ClusterAdmin: describe cluster, create topic with configs,
// list and describe topics, describe configs, incremental and legacy (whole-set) alter,
// create partitions, list offsets, delete.
func saramaAdmin(t *testing.T, addr string) {
	const topic = "it-sarama-admin"
	who := "sarama ClusterAdmin, topic " + topic
	adm, err := sarama.NewClusterAdmin([]string{addr}, saramaConfig(t, "none"))
	if err != nil {
		t.Fatalf("%s: new cluster admin: %v", who, err)
	}
	defer adm.Close()

	brokers, controller, err := adm.DescribeCluster()
	if err != nil {
		t.Fatalf("%s: describe cluster: %v", who, err)
	}
	if len(brokers) != 1 || brokers[0].Addr() != addr || brokers[0].ID() != controller {
		var got []string
		for _, b := range brokers {
			got = append(got, fmt.Sprintf("%d@%s", b.ID(), b.Addr()))
		}
		t.Errorf("%s: describe cluster: brokers %v, controller %d; want one broker at %s that is the controller", who, got, controller, addr)
	}

	retention := "3600000"
	if err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &retention}}, false); err != nil {
		t.Fatalf("%s: create topic: %v", who, err)
	}
	if err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		t.Errorf("%s: creating it again: %v, want TOPIC_ALREADY_EXISTS", who, err)
	}
	waitSaramaPartitions := func(n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			md, err := adm.DescribeTopics([]string{topic})
			if err == nil && len(md) == 1 && md[0].Err == sarama.ErrNoError && len(md[0].Partitions) == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: describe topics never showed %d partitions: %v %+v", who, n, err, md)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitSaramaPartitions(2)
	topics, err := adm.ListTopics()
	if err != nil {
		t.Fatalf("%s: list topics: %v", who, err)
	}
	if d, ok := topics[topic]; !ok || d.NumPartitions != 2 || d.ConfigEntries["retention.ms"] == nil || *d.ConfigEntries["retention.ms"] != retention {
		t.Errorf("%s: list topics: %+v (listed %v), want 2 partitions and retention.ms=%s", who, d, ok, retention)
	}

	// config returns a topic config's value and whether it is set on the topic itself.
	config := func(step, key string) (string, bool) {
		t.Helper()
		results, err := adm.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: topic}}, sarama.DescribeConfigsOptions{})
		if err == nil && (len(results) != 1 || results[0].ErrorCode != sarama.ErrNoError) {
			err = fmt.Errorf("results %+v", results)
		}
		if err != nil {
			t.Fatalf("%s: describe config %s: %v", who, step, err)
		}
		for _, e := range results[0].Configs {
			if e.Name == key {
				return e.Value, e.Source == sarama.SourceTopic
			}
		}
		t.Errorf("%s: describe config %s: %s not described", who, step, key)
		return "", false
	}
	if v, _ := config("after create", "retention.ms"); v != retention {
		t.Errorf("%s: after create: retention.ms = %q, want %q", who, v, retention)
	}
	longer := "7200000"
	if err := adm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &longer},
	}, false); err != nil {
		t.Errorf("%s: incremental alter config: %v", who, err)
	}
	if v, _ := config("after incremental alter", "retention.ms"); v != longer {
		t.Errorf("%s: after incremental alter: retention.ms = %q, want %q", who, v, longer)
	}
	// Legacy AlterConfigs replaces the whole set: retention.ms returns to its default.
	compact := "compact"
	if err := adm.AlterConfig(sarama.TopicResource, topic, map[string]*string{"cleanup.policy": &compact}, false); err != nil {
		t.Errorf("%s: alter config (legacy): %v", who, err)
	}
	if v, _ := config("after legacy alter", "cleanup.policy"); v != compact {
		t.Errorf("%s: after legacy alter: cleanup.policy = %q, want %q", who, v, compact)
	}
	if v, set := config("after legacy alter", "retention.ms"); v == longer || set {
		t.Errorf("%s: after legacy alter of cleanup.policy only: retention.ms = %q (set on the topic: %v), want the default: AlterConfigs replaces all topic configs", who, v, set)
	}

	if err := adm.CreatePartitions(topic, 3, nil, false); err != nil {
		t.Fatalf("%s: create partitions 2 -> 3: %v", who, err)
	}
	waitSaramaPartitions(3)

	cl, err := sarama.NewClient([]string{addr}, saramaConfig(t, "none"))
	if err != nil {
		t.Fatalf("%s: new client: %v", who, err)
	}
	defer cl.Close()
	if err := cl.RefreshMetadata(topic); err != nil {
		t.Errorf("%s: refresh metadata: %v", who, err)
	}
	for p := range int32(3) {
		for _, at := range []int64{sarama.OffsetOldest, sarama.OffsetNewest} {
			if o, err := cl.GetOffset(topic, p, at); err != nil || o != 0 {
				t.Errorf("%s: partition %d: offset at %d of the empty topic: %d, %v; want 0", who, p, at, o, err)
			}
		}
	}

	if err := adm.DeleteTopic(topic); err != nil {
		t.Fatalf("%s: delete topic: %v", who, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		topics, err := adm.ListTopics()
		if _, ok := topics[topic]; err == nil && !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: topic still listed 30s after delete (%v)", who, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- segmentio/kafka-go ---

var kafkaGoCodecs = map[string]kafka.Compression{
	"none":   0,
	"gzip":   kafka.Gzip,
	"snappy": kafka.Snappy,
	"lz4":    kafka.Lz4,
	"zstd":   kafka.Zstd,
}

func kafkaGoLogger(b *syncbuf.Buffer, prefix string) kafka.LoggerFunc {
	return func(msg string, args ...any) {
		fmt.Fprintf(b, prefix+msg+"\n", args...)
	}
}

func kafkaGoRoundTrip(t *testing.T, addr, codec string) {
	label := "kafka-go-" + codec
	topic := "it-" + label
	who := fmt.Sprintf("kafka-go, codec %s, topic %s", codec, topic)
	createTopic(t, addr, topic, matrixPartitions, nil)
	recs := makeRecords(label, matrixPartitions, matrixRecords)
	logBuf := clientLog(t, "kafka-go")

	// A transport of its own: kafka-go's default transport is shared by the process and
	// caches metadata, so a topic created after its first use stays unknown to it.
	transport := &kafka.Transport{ClientID: "strata-it-kafka-go"}
	defer transport.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:      kafka.TCP(addr),
		Topic:     topic,
		Transport: transport,
		// The record carries its partition; the balancer only reads it back.
		Balancer:     kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition }),
		Compression:  kafkaGoCodecs[codec],
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    1000,
		BatchBytes:   4 << 20,
		RequiredAcks: kafka.RequireAll,
		ErrorLogger:  kafkaGoLogger(logBuf, "writer: "),
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	for _, chunk := range rounds(recs, produceRounds) {
		msgs := make([]kafka.Message, len(chunk))
		for i, r := range chunk {
			m := kafka.Message{Partition: int(r.Partition), Key: r.Key, Value: r.Value, Time: r.Timestamp}
			for _, h := range r.Headers {
				m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
			}
			msgs[i] = m
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			var werrs kafka.WriteErrors
			if errors.As(err, &werrs) {
				for i, e := range werrs {
					if e != nil {
						t.Errorf("%s: produce to partition %d (key %s): %v", who, chunk[i].Partition, show(chunk[i].Key), e)
					}
				}
			}
			t.Fatalf("%s: write messages: %v", who, err)
		}
	}

	rctx, rcancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer rcancel()
	var got []testRecord
	for p, n := range countPerPartition(recs) {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:     []string{addr},
			Topic:       topic,
			Partition:   int(p),
			MinBytes:    1,
			MaxBytes:    10 << 20,
			MaxWait:     250 * time.Millisecond,
			ErrorLogger: kafkaGoLogger(logBuf, fmt.Sprintf("reader p%d: ", p)),
		})
		if err := r.SetOffset(0); err != nil {
			t.Errorf("%s: partition %d: set offset: %v", who, p, err)
		}
		for range n {
			m, err := r.ReadMessage(rctx)
			if err != nil {
				t.Errorf("%s: partition %d: read: %v", who, p, err)
				break
			}
			tr := testRecord{Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key, Value: m.Value, Timestamp: m.Time}
			for _, h := range m.Headers {
				tr.Headers = append(tr.Headers, testHeader{h.Key, h.Value})
			}
			got = append(got, tr)
		}
		r.Close()
	}
	checkRecords(t, who, recs, got)
}

// kafkaGoAdmin runs kafka-go's Client: create topics, metadata, create partitions,
// list offsets, delete topics.
func kafkaGoAdmin(t *testing.T, addr string) {
	const topic = "it-kafka-go-admin"
	who := "kafka-go Client, topic " + topic
	// kafka-go answers Metadata from its transport's cache (6s by default) and does
	// not refresh it after CreatePartitions: a short TTL keeps the polls below honest.
	transport := &kafka.Transport{ClientID: "strata-it-kafka-go", MetadataTTL: 100 * time.Millisecond}
	defer transport.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 30 * time.Second, Transport: transport}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()

	cr, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: 2, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "3600000"}},
	}}})
	if err == nil {
		err = cr.Errors[topic]
	}
	if err != nil {
		t.Fatalf("%s: create topics: %v", who, err)
	}
	partitions := func() (int, error) {
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return 0, err
		}
		if len(md.Topics) != 1 || md.Topics[0].Error != nil {
			return 0, fmt.Errorf("topics %+v", md.Topics)
		}
		for _, p := range md.Topics[0].Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				return 0, fmt.Errorf("partition %d: leader %+v, %v", p.ID, p.Leader, p.Error)
			}
		}
		return len(md.Topics[0].Partitions), nil
	}
	waitN := func(n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := partitions()
			if err == nil && got == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: metadata never showed %d partitions: %d, %v", who, n, got, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitN(2)
	cp, err := cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 3}}})
	if err == nil {
		err = cp.Errors[topic]
	}
	if err != nil {
		t.Fatalf("%s: create partitions 2 -> 3: %v", who, err)
	}
	waitN(3)
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.FirstOffsetOf(0), kafka.LastOffsetOf(0), kafka.FirstOffsetOf(2), kafka.LastOffsetOf(2)},
	}})
	if err != nil {
		t.Errorf("%s: list offsets: %v", who, err)
	} else {
		for _, po := range lo.Topics[topic] {
			if po.Error != nil || po.FirstOffset > 0 || po.LastOffset > 0 {
				t.Errorf("%s: list offsets partition %d: first %d last %d, %v; want 0, 0", who, po.Partition, po.FirstOffset, po.LastOffset, po.Error)
			}
		}
	}
	dr, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err == nil {
		err = dr.Errors[topic]
	}
	if err != nil {
		t.Fatalf("%s: delete topics: %v", who, err)
	}
}

// --- kcat (librdkafka) ---

// kcatBinary finds kcat; without it the kcat tests skip, except under CI=true.
func kcatBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatalf("kcat not found on PATH (%v); CI must run the kcat tests: apt-get install kcat", err)
		}
		t.Skipf("kcat not installed (%v): apt-get install kcat", err)
	}
	return p
}

// runKcat runs kcat with stdin and returns stdout. Any exit status other than 0, or
// an ERROR line on stderr, fails the test.
func runKcat(t *testing.T, who, bin string, stdin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil || strings.Contains(stderr.String(), "ERROR") {
		t.Fatalf("%s: kcat %s: %v\nstderr:\n%s", who, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// kcatRoundTrip produces with kcat under codec, each partition in two invocations with
// different headers (kcat's -H applies to a whole invocation), and consumes with -J,
// whose JSON tells null keys and values from empty ones.
func kcatRoundTrip(t *testing.T, bin, addr, codec string) {
	label := "kcat-" + codec
	topic := "it-" + label
	who := fmt.Sprintf("kcat, codec %s, topic %s", codec, topic)
	createTopic(t, addr, topic, matrixPartitions, nil)
	recs := makeRecords(label, matrixPartitions, matrixRecords)
	parts := byPartition(recs)
	var want []testRecord
	for p := range int32(matrixPartitions) {
		for half, chunk := range rounds(parts[p], 2) {
			var headers []testHeader
			if half == 1 || p != 0 { // the first invocation on partition 0 sends no headers
				headers = []testHeader{{"codec", []byte(codec)}, {"part", fmt.Appendf(nil, "%d/%d", p, half)}}
			}
			args := []string{"-b", addr, "-P", "-t", topic, "-p", strconv.Itoa(int(p)), "-K", ":", "-Z", "-z", codec}
			for _, h := range headers {
				args = append(args, "-H", h.Key+"="+string(h.Value))
			}
			var in strings.Builder
			for i := range chunk {
				r := &chunk[i]
				r.Headers, r.Timestamp = headers, time.Time{}
				// -Z turns an empty key or value into null.
				fmt.Fprintf(&in, "%s:%s\n", r.Key, r.Value)
			}
			runKcat(t, who, bin, in.String(), args...)
			want = append(want, chunk...)
		}
	}

	var got []testRecord
	for p, n := range countPerPartition(want) {
		got = append(got, kcatConsume(t, who, bin, addr, topic, p, n)...)
	}
	checkRecords(t, who, want, got)
}

// kcatConsume reads a partition from the beginning to its end with kcat -e, again
// until n records have arrived or the deadline passes.
func kcatConsume(t *testing.T, who, bin, addr, topic string, p int32, n int) []testRecord {
	t.Helper()
	deadline := time.Now().Add(consumeTimeout)
	for {
		out := runKcat(t, who, bin, "", "-b", addr, "-C", "-t", topic, "-p", strconv.Itoa(int(p)),
			"-o", "beginning", "-e", "-q", "-J")
		var got []testRecord
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			var m struct {
				Partition int32     `json:"partition"`
				Offset    int64     `json:"offset"`
				Headers   []*string `json:"headers"`
				Key       *string   `json:"key"`
				Payload   *string   `json:"payload"`
			}
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: partition %d: kcat -J line %q: %v", who, p, sc.Text(), err)
			}
			r := testRecord{Partition: m.Partition, Offset: m.Offset}
			if m.Key != nil {
				r.Key = []byte(*m.Key)
			}
			if m.Payload != nil {
				r.Value = []byte(*m.Payload)
			}
			for i := 0; i+1 < len(m.Headers); i += 2 {
				h := testHeader{Key: *m.Headers[i]}
				if v := m.Headers[i+1]; v != nil {
					h.Value = []byte(*v)
				}
				r.Headers = append(r.Headers, h)
			}
			got = append(got, r)
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: partition %d: reading kcat output: %v", who, p, err)
		}
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kcatMetadata checks kcat -L -J: one broker at the advertised address leading every
// partition of a three-partition topic.
func kcatMetadata(t *testing.T, bin, addr string) {
	const topic = "it-kcat-metadata"
	who := "kcat -L, topic " + topic
	createTopic(t, addr, topic, matrixPartitions, nil)
	out := runKcat(t, who, bin, "", "-b", addr, "-L", "-J", "-t", topic)
	var md struct {
		Brokers []struct {
			ID   int32  `json:"id"`
			Name string `json:"name"`
		} `json:"brokers"`
		Topics []struct {
			Topic      string `json:"topic"`
			Error      string `json:"error"`
			Partitions []struct {
				Partition int32  `json:"partition"`
				Error     string `json:"error"`
				Leader    int32  `json:"leader"`
			} `json:"partitions"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatalf("%s: %v in %s", who, err, out)
	}
	if len(md.Brokers) != 1 || md.Brokers[0].Name != addr {
		t.Fatalf("%s: brokers %+v, want one at %s", who, md.Brokers, addr)
	}
	if len(md.Topics) != 1 || md.Topics[0].Topic != topic || md.Topics[0].Error != "" || len(md.Topics[0].Partitions) != matrixPartitions {
		t.Fatalf("%s: topics %+v, want %s with %d partitions", who, md.Topics, topic, matrixPartitions)
	}
	for _, p := range md.Topics[0].Partitions {
		if p.Error != "" || p.Leader != md.Brokers[0].ID {
			t.Errorf("%s: partition %d: leader %d, error %q; want leader %d", who, p.Partition, p.Leader, p.Error, md.Brokers[0].ID)
		}
	}
}
