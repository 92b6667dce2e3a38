package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stratalog/strata/internal/miniotest"
	"github.com/stratalog/strata/lambdas/runner"
	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// functionsProc is one `strata functions` process.
type functionsProc struct {
	metastoreProc
	addr, token string
}

// startFunctionsProc runs `strata functions` on addr and returns once /health
// answers; it is killed when the test ends.
func startFunctionsProc(t *testing.T, addr, token string, metastores []string, store string, extra ...string) *functionsProc {
	t.Helper()
	f := &functionsProc{addr: addr, token: token}
	f.id = "functions"
	f.args = append([]string{"functions", "--listen", addr, "--metastore", strings.Join(metastores, ","), "--store", store,
		"--auth-token", token, "--log-level", "debug"}, extra...)
	f.start(t)
	t.Cleanup(func() {
		f.signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("strata functions output:\n%s", f.out)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := f.health(); err == nil {
			return f
		}
		select {
		case err := <-f.exited:
			t.Fatalf("strata functions exited: %v\n%s", err, f.out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("strata functions never answered on %s\n%s", addr, f.out)
		}
	}
}

func (f *functionsProc) health() (runner.Stats, error) {
	var s runner.Stats
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + f.addr + "/health")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("health: %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// scheduledEvent is what an EventBridge schedule sends a Lambda.
const scheduledEvent = `{"version":"0","id":"1f9e5c0a-strata","detail-type":"Scheduled Event","source":"aws.events",` +
	`"account":"123456789012","time":"2026-11-25T18:31:00Z","region":"us-east-1","resources":[],"detail":{}}`

// schedule plays EventBridge: it POSTs a scheduled event, which asks for a sweep.
func (f *functionsProc) schedule(t *testing.T) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+f.addr+"/", strings.NewReader(scheduledEvent))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scheduled event: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scheduled event: %s", resp.Status)
	}
}

// produced is a record as acknowledged: nil key or value is null.
type produced struct {
	offset     int64
	key, value []byte
}

func (p produced) String() string {
	return fmt.Sprintf("%d:%s=%s", p.offset, show(p.key), show(p.value))
}

// produceOne writes one record and waits for its acknowledgement: with the agent's
// short linger, every record is a segment (and an event) of its own.
func produceOne(t *testing.T, cl *kgo.Client, topic string, key, value []byte) produced {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := &kgo.Record{Topic: topic, Key: key, Value: value}
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
	return produced{r.Offset, key, value}
}

// latest is what a fully compacted log holds: each key's last record, unless it is a
// tombstone; no null-key record. In offset order.
func latest(recs []produced) []produced {
	last := map[string]produced{}
	for _, r := range recs {
		if r.key != nil {
			last[string(r.key)] = r
		}
	}
	var out []produced
	for _, r := range last {
		if r.value != nil {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b produced) int { return int(a.offset - b.offset) })
	return out
}

// consumeAll reads partition 0 of topic from its log start up to and including
// offset last.
func consumeAll(ctx context.Context, addr, topic string, last int64) ([]produced, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []produced
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("read %d records, none at offset %d yet: %w", len(out), last, err)
		}
		if err := fs.Err(); err != nil {
			return out, err
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, produced{r.Offset, r.Key, r.Value})
			done = done || r.Offset >= last
		})
		if done {
			return out, nil
		}
	}
}

// topicID asks the metastore for a topic's id.
func topicID(t *testing.T, meta *metastore.Client, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := meta.DescribeTopics(ctx, &pb.DescribeTopicsRequest{Topics: []*pb.TopicRef{{Name: name}}})
	if err != nil || len(resp.Results) != 1 || resp.Results[0].Error != pb.ErrorCode_NONE {
		t.Fatalf("describe %s: %v %v", name, err, resp)
	}
	return resp.Results[0].TopicId
}

// indexEntries returns partition 0's index entries from its log start.
func indexEntries(ctx context.Context, meta *metastore.Client, topic []byte) ([]*pb.IndexEntry, *pb.PartitionHead, error) {
	head, err := meta.Lookup(ctx, &pb.LookupRequest{TopicId: topic, Partition: 0, Offset: -1})
	if err != nil {
		return nil, nil, err
	}
	start, end := head.Head.GetLogStartOffset(), head.Head.GetNextOffset()
	if start >= end {
		return nil, head.Head, nil
	}
	resp, err := meta.Lookup(ctx, &pb.LookupRequest{TopicId: topic, Partition: 0, Offset: start, MaxEntries: 10_000})
	if err != nil {
		return nil, nil, err
	}
	if resp.Error != pb.ErrorCode_NONE {
		return nil, nil, fmt.Errorf("lookup from %d: %v", start, resp.Error)
	}
	return resp.Entries, resp.Head, nil
}

// waitMerged polls until no ingestion (level 0) entry is left in partition 0 of
// topic, calling nudge between polls (to ask for a sweep).
func waitMerged(t *testing.T, meta *metastore.Client, topic []byte, nudge func()) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		entries, _, err := indexEntries(ctx, meta, topic)
		cancel()
		left := 0
		for _, e := range entries {
			if e.Level == 0 && e.Marker == 0 {
				left++
			}
		}
		if err == nil && left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ingestion entries never merged (%v)", left, err)
		}
		nudge()
		time.Sleep(100 * time.Millisecond)
	}
}

// segmentObjects lists the segment objects under prefix, by store key.
func segmentObjects(ctx context.Context, mc *minio.Client, bucket, prefix string) (map[string]bool, error) {
	out := map[string]bool{}
	for obj := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix + "/" + objectlog.SegmentPrefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		out[strings.TrimPrefix(obj.Key, prefix+"/")] = true
	}
	return out, nil
}

// TestFunctionsOnMinIO runs the functions the way a MinIO deployment does: MinIO
// (started with a webhook target, the bucket's segment notifications configured by
// the test) POSTs an event per segment to `strata functions`, beside three `strata
// metastore` processes and a `strata agent` on the bucket. A scheduled event POSTed
// now and then plays the EventBridge schedule (the process's own sweeps are off, so
// every sweep is one of those).
//
// A key-compacted topic gets updates, tombstones and null-key records, one segment
// each: consumers from the beginning end up seeing only each key's latest value at
// its original offset; the index shrinks to a few entries and the bucket to the
// objects they reference. A topic with a short retention.ms loses its records
// (OFFSET_OUT_OF_RANGE below the new log start, ListOffsets earliest moved) and
// then its objects.
func TestFunctionsOnMinIO(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary and MinIO")
	}
	const (
		bucket, prefix = "strata-fn", "cluster"
		target, token  = "STRATA", "fn-token-7c1d"
	)
	metas := startMetastoreCluster(t)
	fnAddr := freePort(t)
	mio, s3, store := webhookMinIO(t, bucket, prefix, target, token, "http://"+fnAddr+"/minio/events")
	fn := startFunctionsProc(t, fnAddr, token, metas, store, append([]string{"--sweep-interval", "0", "--gc-grace", "1s",
		"--commit-wait", "5s", "--retry-backoff", "50ms", "--retry-backoff-max", "1s", "--l0-max-age", "500ms"}, s3...)...)
	ag := startAgentProc(t, "agent-fn", "a", metas, store, s3...)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	meta, err := metastore.Dial(ctx, metas, metastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	mc := mio.Client(t)

	const retentionMs = 2000
	str := func(s string) *string { return &s }
	createTopic(t, ag.addr, "fn-expiring", 1, map[string]*string{"cleanup.policy": str("delete"), "retention.ms": str(fmt.Sprint(retentionMs))})
	createTopic(t, ag.addr, "fn-compacted", 1, map[string]*string{"cleanup.policy": str("compact"), "delete.retention.ms": str("1000"),
		"min.cleanable.dirty.ratio": str("0.01"), "min.compaction.lag.ms": str("0"), "segment.ms": str("1000")})
	producer := franzClient(t, ag.addr, kgo.ProducerLinger(0), kgo.DisableIdempotentWrite())
	defer producer.Close()

	// The expiring topic first, so that its segments hold nothing of the other.
	var expiring []produced
	for i := range 12 {
		expiring = append(expiring, produceOne(t, producer, "fn-expiring", nil, fmt.Appendf(nil, "old-%02d", i)))
	}
	expID := topicID(t, meta, "fn-expiring")
	expEntries, _, err := indexEntries(ctx, meta, expID)
	if err != nil {
		t.Fatal(err)
	}
	expiredObjects := map[string]bool{}
	for _, e := range expEntries {
		if len(e.SegmentId) == 16 {
			expiredObjects[objectlog.SegmentKey(objectlog.SegmentID(e.SegmentId))] = true
		}
	}

	// Three rounds of every key, null-key records between, tombstones for three
	// keys, the others once more, and a last record that stays the active tail.
	var recs []produced
	put := func(key, value []byte) { recs = append(recs, produceOne(t, producer, "fn-compacted", key, value)) }
	for round := range 3 {
		for k := range 8 {
			put(fmt.Appendf(nil, "k%d", k), fmt.Appendf(nil, "k%d-v%d", k, round))
			if k%3 == 0 {
				put(nil, fmt.Appendf(nil, "no key %d/%d", round, k))
			}
		}
	}
	for k := 5; k < 8; k++ {
		put(fmt.Appendf(nil, "k%d", k), nil)
	}
	for k := range 5 {
		put(fmt.Appendf(nil, "k%d", k), fmt.Appendf(nil, "k%d-final", k))
	}

	// First the events alone: MinIO delivers one per segment (0.1-3 s late, from its
	// queue directory), and each is handled on arrival.
	segments := int64(len(recs) + len(expiring))
	deadline := time.Now().Add(30 * time.Second)
	for st, err := fn.health(); err != nil || st.Done < segments; st, err = fn.health() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d segment events handled (%v)", st.Done, segments, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Key compaction works on merged objects, never on the newest entry (Kafka's
	// active segment): once the ingestion chunks are merged (--l0-max-age), one more
	// record lets everything before it be cleaned.
	cmpID := topicID(t, meta, "fn-compacted")
	waitMerged(t, meta, cmpID, func() { fn.schedule(t) })
	put([]byte("end"), []byte("end"))
	want := latest(recs)
	last := recs[len(recs)-1].offset
	ingested := len(recs)
	t.Logf("produced %d records to fn-compacted, %d to fn-expiring; want %v", ingested, len(expiring), want)

	adm := kadm.NewClient(producer)
	var got []produced
	var why string
	deadline = time.Now().Add(45 * time.Second)
	for {
		why = func() string {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			got, err = consumeAll(pctx, ag.addr, "fn-compacted", last)
			if err != nil {
				return "consume: " + err.Error()
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Sprintf("consumed %v", got)
			}
			entries, _, err := indexEntries(pctx, meta, cmpID)
			if err != nil {
				return "index: " + err.Error()
			}
			if len(entries)*4 > ingested {
				return fmt.Sprintf("%d index entries for %d ingested records", len(entries), ingested)
			}
			starts, err := adm.ListStartOffsets(pctx, "fn-expiring")
			if err != nil {
				return "list start offsets: " + err.Error()
			}
			if s, _ := starts.Lookup("fn-expiring", 0); s.Err != nil || s.Offset != int64(len(expiring)) {
				return fmt.Sprintf("fn-expiring starts at %d (%v), want %d", s.Offset, s.Err, len(expiring))
			}
			objects, err := segmentObjects(pctx, mc, bucket, prefix)
			if err != nil {
				return "list objects: " + err.Error()
			}
			if why := sameObjects(objects, referencedObjects(entries)); why != "" {
				return why
			}
			return ""
		}()
		if why == "" {
			break
		}
		if time.Now().After(deadline) {
			st, _ := fn.health()
			t.Fatalf("the functions never finished: %s\nrunner: %+v", why, st)
		}
		fn.schedule(t) // EventBridge's turn: retention and GC are time-based
		time.Sleep(300 * time.Millisecond)
	}

	// Below the new log start the records are gone, and their objects with them.
	for k := range expiredObjects {
		if ok, _ := segmentObjects(ctx, mc, bucket, prefix); ok[k] {
			t.Fatalf("object %s of expired records still in the bucket", k)
		}
	}
	cl := franzClient(t, ag.addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"fn-expiring": {0: kgo.NewOffset().At(0)}}),
		kgo.ConsumeResetOffset(kgo.NoResetOffset()))
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no OFFSET_OUT_OF_RANGE for offset 0 of fn-expiring")
		}
		if err := fs.Err(); err != nil {
			if !errors.Is(err, kerr.OffsetOutOfRange) {
				t.Fatalf("fetch offset 0 of fn-expiring: %v, want OFFSET_OUT_OF_RANGE", err)
			}
			break
		}
		if fs.NumRecords() > 0 {
			t.Fatalf("fetched %d expired records", fs.NumRecords())
		}
	}

	st, err := fn.health()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("runner: %+v", st)
	// Every segment was announced by MinIO (outputs of compaction too): the work was
	// done on arrival, not only by the sweeps.
	if st.Done < int64(ingested+len(expiring)) || st.Failed != 0 || st.Sweeps == 0 {
		t.Fatalf("runner %+v: want at least %d objects handled, none failed, sweeps run", st, ingested+len(expiring))
	}
}

// TestLocalFunctions: `strata local` runs the functions in-process, fed by its own
// store's writes and its sweeps. A key-compacted topic's consumers see the latest
// value per key, and the data directory keeps fewer objects than segments written.
func TestLocalFunctions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	metaAddr := freePort(t)
	srv := startLocal(t, localOptions{Args: []string{"--sweep-interval", "200ms", "--gc-grace", "200ms", "--l0-max-age", "300ms",
		"--metastore-addr", metaAddr}})
	mctx, mcancel := context.WithTimeout(context.Background(), 10*time.Second)
	meta, err := metastore.Dial(mctx, []string{metaAddr}, metastore.Options{})
	mcancel()
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	str := func(s string) *string { return &s }
	createTopic(t, srv.Addr, "local-compacted", 1, map[string]*string{"cleanup.policy": str("compact"), "delete.retention.ms": str("500"),
		"min.cleanable.dirty.ratio": str("0.01")})
	producer := franzClient(t, srv.Addr, kgo.ProducerLinger(0))
	defer producer.Close()
	var recs []produced
	for round := range 4 {
		for k := range 5 {
			var v []byte
			if round < 3 || k > 1 {
				v = fmt.Appendf(nil, "v%d", round)
			}
			recs = append(recs, produceOne(t, producer, "local-compacted", fmt.Appendf(nil, "k%d", k), v))
		}
		recs = append(recs, produceOne(t, producer, "local-compacted", nil, []byte("no key")))
	}
	waitMerged(t, meta, topicID(t, meta, "local-compacted"), func() {}) // the sweeps merge
	recs = append(recs, produceOne(t, producer, "local-compacted", []byte("end"), []byte("end")))
	want := latest(recs)
	last := recs[len(recs)-1].offset
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deadline := time.Now().Add(45 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := consumeAll(pctx, srv.Addr, "local-compacted", last)
		pcancel()
		objects := countFiles(t, filepath.Join(srv.Data, "objects", objectlog.SegmentPrefix))
		if err == nil && fmt.Sprint(got) == fmt.Sprint(want) && objects*2 < len(recs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumed %v (%v)\nwant %v\n%d objects for %d segments written", got, err, want, objects, len(recs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkCompactionSafe checks a consumer's view of a partition that compaction may
// be halfway through: every record read is the one produced at its offset, offsets
// only grow, and each key's latest record (tombstones aside) is there. What
// compaction may drop (older values, null keys, tombstones) may be there or not.
func checkCompactionSafe(got, all []produced) string {
	byOffset := map[int64]produced{}
	for _, p := range all {
		byOffset[p.offset] = p
	}
	prev := int64(-1)
	seen := map[int64]bool{}
	for _, g := range got {
		if g.offset <= prev {
			return fmt.Sprintf("offset %d after %d", g.offset, prev)
		}
		prev = g.offset
		if p, ok := byOffset[g.offset]; !ok || p.String() != g.String() {
			return fmt.Sprintf("read %v, produced %v there", g, p)
		}
		seen[g.offset] = true
	}
	for _, l := range latest(all) {
		if !seen[l.offset] {
			return fmt.Sprintf("the latest record of key %s (%v) is missing", show(l.key), l)
		}
	}
	return ""
}

// TestFunctionsCrashMidCompaction SIGKILLs `strata functions` while it compacts
// (every store call made slow, so merges and cleans are long), three times, and
// restarts it on the same address. Between crashes consumers read a log that may be
// partly compacted but never wrong; MinIO redelivers the events the dead process
// did not take; in the end the log is fully compacted and the bucket holds exactly
// the objects the index references: the outputs of the killed compactions, never
// committed, were collected once their upload intents expired.
func TestFunctionsCrashMidCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary and MinIO")
	}
	const (
		bucket, prefix = "strata-crash", "c"
		target, token  = "STRATA", "crash-token"
	)
	metas := startMetastoreCluster(t)
	fnAddr := freePort(t)
	mio, s3, store := webhookMinIO(t, bucket, prefix, target, token, "http://"+fnAddr+"/")
	fnArgs := append([]string{"--sweep-interval", "0", "--gc-grace", "500ms", "--intent-ttl", "3s", "--commit-wait", "2s",
		"--retry-backoff", "50ms", "--retry-backoff-max", "500ms", "--l0-max-age", "500ms"}, s3...)
	// Slow store calls, and a Put that returns 2 s after the object is in place: the
	// compactor's commit of an output waits for its Put.
	slow := append([]string{"--store-latency", "50ms-150ms", "--store-put-hold", "2s"}, fnArgs...)
	fn := startFunctionsProc(t, fnAddr, token, metas, store, slow...)
	var earlier []string // output of the killed processes
	t.Cleanup(func() {
		if t.Failed() {
			for i, out := range earlier {
				t.Logf("strata functions output before crash %d:\n%s", i, out)
			}
		}
	})
	ag := startAgentProc(t, "agent-crash", "a", metas, store, s3...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	meta, err := metastore.Dial(ctx, metas, metastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()

	str := func(s string) *string { return &s }
	createTopic(t, ag.addr, "crash-compacted", 1, map[string]*string{"cleanup.policy": str("compact"), "delete.retention.ms": str("500"),
		"min.cleanable.dirty.ratio": str("0.01")})
	producer := franzClient(t, ag.addr, kgo.ProducerLinger(0), kgo.DisableIdempotentWrite())
	defer producer.Close()
	var recs []produced
	put := func(key, value []byte) { recs = append(recs, produceOne(t, producer, "crash-compacted", key, value)) }
	mc := mio.Client(t)
	totalUncommitted := 0
	round := 0
	produceRound := func() {
		for k := range 6 {
			var v []byte
			if k != 5 || round%2 == 0 {
				v = fmt.Appendf(nil, "k%d-v%d", k, round)
			}
			put(fmt.Appendf(nil, "k%d", k), v)
		}
		put(nil, fmt.Appendf(nil, "no key %d", round))
		round++
	}

	for crash := range 3 {
		produceRound()
		produceRound()
		// Kill it while it compacts: the first time a quarter second after a
		// function started (reading), then the moment an output object appears in
		// the bucket (uploaded, its commit held back by --store-put-hold).
		before, err := segmentObjects(ctx, mc, bucket, prefix)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for st, err := fn.health(); err != nil || st.Running == 0; st, err = fn.health() {
			if time.Now().After(deadline) {
				t.Fatalf("crash %d: no function ever ran (%+v, %v)", crash, st, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if crash == 0 {
			time.Sleep(250 * time.Millisecond)
		}
		for crash > 0 {
			now, err := segmentObjects(ctx, mc, bucket, prefix)
			if err != nil {
				t.Fatal(err)
			}
			if len(now) > len(before) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("crash %d: no output object ever appeared", crash)
			}
			time.Sleep(5 * time.Millisecond)
		}
		fn.signal(syscall.SIGKILL)
		<-fn.exited
		t.Logf("crash %d: killed strata functions mid-compaction", crash)

		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		objects, unreferenced, uncommitted := residue(pctx, t, meta, mc, bucket, prefix, topicID(t, meta, "crash-compacted"))
		t.Logf("crash %d left %d objects: %d unreferenced, of which %d uploads never committed", crash, objects, unreferenced, uncommitted)
		totalUncommitted += uncommitted
		if crash > 0 && uncommitted == 0 {
			t.Fatalf("crash %d left no uncommitted output: the kill missed the window between upload and commit", crash)
		}
		got, err := consumeAll(pctx, ag.addr, "crash-compacted", recs[len(recs)-1].offset)
		pcancel()
		if err != nil {
			t.Fatalf("crash %d: consume: %v", crash, err)
		}
		if why := checkCompactionSafe(got, recs); why != "" {
			t.Fatalf("crash %d: %s\nconsumed %v", crash, why, got)
		}
		earlier = append(earlier, fn.out.String())
		if crash == 2 {
			// The last restart runs at full speed, with the events MinIO kept for it.
			fn.args = append([]string{"functions", "--listen", fnAddr, "--metastore", strings.Join(metas, ","), "--store", store,
				"--auth-token", token, "--log-level", "debug"}, fnArgs...)
		}
		fn.start(t)
		for _, err := fn.health(); err != nil; _, err = fn.health() {
			select {
			case err := <-fn.exited:
				t.Fatalf("strata functions exited on restart: %v\n%s", err, fn.out)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	// The events the killed processes had taken (answered 200, queued in memory) died
	// with them: sweeps (EventBridge's turn) find the work. Once everything is
	// merged, a last record lets all before it be cleaned (the newest entry never is).
	cmpID := topicID(t, meta, "crash-compacted")
	waitMerged(t, meta, cmpID, func() {
		if _, err := fn.health(); err == nil {
			fn.schedule(t)
		}
	})
	put([]byte("end"), []byte("end"))
	want := latest(recs)
	last := recs[len(recs)-1].offset

	var why string
	deadline := time.Now().Add(45 * time.Second)
	for {
		why = func() string {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			got, err := consumeAll(pctx, ag.addr, "crash-compacted", last)
			if err != nil {
				return "consume: " + err.Error()
			}
			if why := checkCompactionSafe(got, recs); why != "" {
				return "UNSAFE: " + why
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Sprintf("consumed %v", got)
			}
			entries, _, err := indexEntries(pctx, meta, cmpID)
			if err != nil {
				return "index: " + err.Error()
			}
			objects, err := segmentObjects(pctx, mc, bucket, prefix)
			if err != nil {
				return "list objects: " + err.Error()
			}
			if why := sameObjects(objects, referencedObjects(entries)); why != "" {
				return why
			}
			return ""
		}()
		if why == "" {
			break
		}
		if strings.HasPrefix(why, "UNSAFE") || time.Now().After(deadline) {
			st, _ := fn.health()
			t.Fatalf("after the crashes: %s\nrunner: %+v", why, st)
		}
		if _, err := fn.health(); err == nil {
			fn.schedule(t)
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("converged; the crashes had left %d uncommitted uploads, all collected", totalUncommitted)
}

// referencedObjects is the set of object keys index entries point into (markers
// point nowhere).
func referencedObjects(entries []*pb.IndexEntry) map[string]bool {
	referenced := map[string]bool{}
	for _, e := range entries {
		if len(e.SegmentId) == 16 {
			referenced[objectlog.SegmentKey(objectlog.SegmentID(e.SegmentId))] = true
		}
	}
	return referenced
}

// sameObjects says how the bucket's objects differ from the referenced ones, or "".
func sameObjects(objects, referenced map[string]bool) string {
	for k := range referenced {
		if !objects[k] {
			return "a referenced object is missing: " + k
		}
	}
	for k := range objects {
		if !referenced[k] {
			return fmt.Sprintf("%d objects in the bucket, %d referenced: %s is not", len(objects), len(referenced), k)
		}
	}
	return ""
}

// residue counts the segment objects in the bucket, those no index entry of the
// partition references, and among them the uploads the metastore knows only by an
// intent: a compaction output whose commit never came.
func residue(ctx context.Context, t *testing.T, meta *metastore.Client, mc *minio.Client, bucket, prefix string, topic []byte) (objects, unreferenced, uncommitted int) {
	t.Helper()
	entries, _, err := indexEntries(ctx, meta, topic)
	if err != nil {
		t.Fatal(err)
	}
	referenced := referencedObjects(entries)
	keys, err := segmentObjects(ctx, mc, bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		objects++
		if referenced[k] {
			continue
		}
		unreferenced++
		id, err := objectlog.ParseSegmentKey(k)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := meta.Segment(ctx, &pb.SegmentRequest{SegmentId: id[:]})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Record == nil && resp.Intent != nil {
			uncommitted++
		}
	}
	return objects, unreferenced, uncommitted
}

// webhookMinIO starts MinIO with a webhook target (endpoint, token) notified of every
// segment created under prefix in bucket, and returns it with the S3 flags and the
// store URL a strata process needs.
func webhookMinIO(t *testing.T, bucket, prefix, target, token, endpoint string) (*miniotest.Server, []string, string) {
	t.Helper()
	mio := miniotest.StartWith(t, miniotest.Options{Env: miniotest.WebhookEnv(target, endpoint, token, t.TempDir())})
	mio.MakeBucket(t, bucket)
	mio.NotifyWebhook(t, bucket, target, prefix+"/"+objectlog.SegmentPrefix, ".seg")
	s3 := []string{"--s3-endpoint", mio.Endpoint, "--s3-region", mio.Region, "--s3-access-key", mio.AccessKey, "--s3-secret-key", mio.SecretKey}
	return mio, s3, fmt.Sprintf("s3://%s/%s", bucket, prefix)
}
