package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// A long poll is woken by the commit it waits for, not by its MaxWait: with a wait
// far longer than the test's deadline, the fetch must still come back with the data.
func TestFetchLongPollWakesOnCommit(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "poll", 1, nil)
	cl := kafkaClient(t, s)
	got := make(chan *kmsg.FetchResponse, 1)
	go func() {
		got <- fetchRaw(t, s, cl, "poll", 0, 0, func(r *kmsg.FetchRequest) {
			r.MaxWaitMillis = 600_000
			r.MinBytes = 1
		})
	}()
	// Let the fetch start waiting; whether it did or not, the answer must carry the data.
	time.Sleep(50 * time.Millisecond)
	produceRaw(t, s, kafkaClient(t, s), -1, "poll", map[int32][]byte{0: batchOf(t, 0, 5, "late")})
	select {
	case f := <-got:
		if _, vals, _ := batchesOf(t, f.Topics[0].Partitions[0].RecordBatches); fmt.Sprint(vals) != "[late]" {
			t.Fatalf("long poll returned %v, want [late]", vals)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long poll was not woken by the commit")
	}
}

// PartitionMaxBytes and MaxBytes bound the answer, but the first batch always comes
// whole (KIP-74); batches wholly below the fetch offset are trimmed.
func TestFetchByteLimits(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "limits", 2, nil)
	cl := kafkaClient(t, s)
	value := string(make([]byte, 1000))
	var size int
	for i := range 6 { // six batches, each committed by itself: six index entries
		b := batchOf(t, 0, int64(i), value)
		size = len(b)
		if code := produceRaw(t, s, cl, -1, "limits", map[int32][]byte{0: b, 1: b}).Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatal(kerr.ErrorForCode(code))
		}
	}
	count := func(f *kmsg.FetchResponse) (n []int) {
		for _, p := range f.Topics[0].Partitions {
			bases, _, _ := batchesOf(t, p.RecordBatches)
			n = append(n, len(bases))
		}
		return n
	}
	both := func(r *kmsg.FetchRequest) {
		rp := r.Topics[0].Partitions[0]
		rp.Partition = 1
		r.Topics[0].Partitions = append(r.Topics[0].Partitions, rp)
	}
	cases := []struct {
		name   string
		offset int64
		mutate func(*kmsg.FetchRequest)
		want   string
	}{
		{"partition max 2.5 batches", 0, func(r *kmsg.FetchRequest) { r.Topics[0].Partitions[0].PartitionMaxBytes = int32(size * 5 / 2) }, "[2]"},
		{"partition max below one batch", 0, func(r *kmsg.FetchRequest) { r.Topics[0].Partitions[0].PartitionMaxBytes = 10 }, "[1]"},
		{"from the middle", 4, nil, "[2]"},
		{"total max over two partitions", 0, func(r *kmsg.FetchRequest) { both(r); r.MaxBytes = int32(size * 4) }, "[4 0]"},
		{"total max below one batch", 0, func(r *kmsg.FetchRequest) { both(r); r.MaxBytes = 1 }, "[1 0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := fetchRaw(t, s, cl, "limits", 0, tc.offset, tc.mutate)
			if got := fmt.Sprint(count(f)); got != tc.want {
				t.Fatalf("batches per partition %s, want %s", got, tc.want)
			}
			if bases, _, _ := batchesOf(t, f.Topics[0].Partitions[0].RecordBatches); len(bases) > 0 && bases[0] != tc.offset {
				t.Fatalf("first batch at offset %d, want %d", bases[0], tc.offset)
			}
		})
	}
}

func TestFetchOffsetOutOfRange(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "range", 1, nil)
	cl := kafkaClient(t, s)
	produceRaw(t, s, cl, -1, "range", map[int32][]byte{0: batchOf(t, 0, 1, "a", "b", "c")})
	for _, tc := range []struct {
		offset int64
		code   int16
		hwm    int64
	}{
		{3, 0, 3}, // the high watermark itself: nothing yet, no error
		{4, kerr.OffsetOutOfRange.Code, 3},
		{-1, kerr.OffsetOutOfRange.Code, 3},
		{1, 0, 3},
	} {
		p := fetchRaw(t, s, cl, "range", 0, tc.offset, nil).Topics[0].Partitions[0]
		if p.ErrorCode != tc.code || p.HighWatermark != tc.hwm {
			t.Errorf("offset %d: error %v, high watermark %d; want %v, %d", tc.offset,
				kerr.ErrorForCode(p.ErrorCode), p.HighWatermark, kerr.ErrorForCode(tc.code), tc.hwm)
		}
	}
	// A partition that does not exist.
	if p := fetchRaw(t, s, cl, "range", 7, 0, nil).Topics[0].Partitions[0]; p.ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("partition 7: %v, want UNKNOWN_TOPIC_OR_PARTITION", kerr.ErrorForCode(p.ErrorCode))
	}
}

// KIP-227: a session answers incremental fetches with only the partitions that have
// news, and refuses a wrong epoch or an unknown session.
func TestFetchSessions(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "sess", 2, nil)
	cl := kafkaClient(t, s)
	produceRaw(t, s, cl, -1, "sess", map[int32][]byte{0: batchOf(t, 0, 1, "a"), 1: batchOf(t, 0, 1, "b")})
	id := topicIDOf(s, "sess")
	fetch := func(sessionID, epoch int32, offsets map[int32]int64) *kmsg.FetchResponse {
		req := kmsg.NewPtrFetchRequest()
		req.MaxBytes, req.SessionID, req.SessionEpoch = 1<<20, sessionID, epoch
		if len(offsets) > 0 {
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic, rt.TopicID = "sess", id
			for p := range int32(2) {
				if off, ok := offsets[p]; ok {
					rp := kmsg.NewFetchRequestTopicPartition()
					rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, off, 1<<20
					rt.Partitions = append(rt.Partitions, rp)
				}
			}
			req.Topics = append(req.Topics, rt)
		}
		resp, err := req.RequestWith(testContext(t), cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	parts := func(f *kmsg.FetchResponse) (ps []int32) {
		for _, rt := range f.Topics {
			for _, p := range rt.Partitions {
				ps = append(ps, p.Partition)
			}
		}
		return ps
	}
	full := fetch(0, 0, map[int32]int64{0: 0, 1: 0})
	if full.SessionID == 0 || fmt.Sprint(parts(full)) != "[0 1]" {
		t.Fatalf("new session: id %d, partitions %v; want an id and [0 1]", full.SessionID, parts(full))
	}
	sid := full.SessionID
	// Both partitions move to their high watermark: nothing new, so nothing listed.
	inc := fetch(sid, 1, map[int32]int64{0: 1, 1: 1})
	if inc.ErrorCode != 0 || len(parts(inc)) != 0 {
		t.Fatalf("incremental with no news: error %v, partitions %v; want none", kerr.ErrorForCode(inc.ErrorCode), parts(inc))
	}
	produceRaw(t, s, cl, -1, "sess", map[int32][]byte{1: batchOf(t, 0, 2, "c")})
	inc = fetch(sid, 2, nil) // offsets unchanged: the session remembers them
	if fmt.Sprint(parts(inc)) != "[1]" {
		t.Fatalf("incremental after a produce to partition 1: partitions %v, want [1]", parts(inc))
	}
	if _, vals, _ := batchesOf(t, inc.Topics[0].Partitions[0].RecordBatches); fmt.Sprint(vals) != "[c]" {
		t.Fatalf("incremental records %v, want [c]", vals)
	}
	if bad := fetch(sid, 7, nil); bad.ErrorCode != kerr.InvalidFetchSessionEpoch.Code {
		t.Fatalf("wrong epoch: %v, want INVALID_FETCH_SESSION_EPOCH", kerr.ErrorForCode(bad.ErrorCode))
	}
	if bad := fetch(sid+1, 1, nil); bad.ErrorCode != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("unknown session: %v, want FETCH_SESSION_ID_NOT_FOUND", kerr.ErrorForCode(bad.ErrorCode))
	}
}

func TestListOffsets(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "times", 1, nil)
	cl := kafkaClient(t, s)
	// Offsets 0-1 at 1000-1001, 2-4 at 5000-5002 (the maximum: 5002 at offset 4), 5 at 3000.
	for _, b := range [][]byte{
		batchOf(t, objectlog.CodecNone, 1000, "a", "b"),
		batchOf(t, objectlog.CodecLZ4, 5000, "c", "d", "e"),
		batchOf(t, objectlog.CodecNone, 3000, "f"),
	} {
		if code := produceRaw(t, s, cl, -1, "times", map[int32][]byte{0: b}).Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatal(kerr.ErrorForCode(code))
		}
	}
	adm := kadm.NewClient(cl)
	ctx := testContext(t)
	check := func(what string, got kadm.ListedOffsets, err error, offset, ts int64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		o, ok := got.Lookup("times", 0)
		if !ok || o.Err != nil || o.Offset != offset || (ts != -2 && o.Timestamp != ts) {
			t.Errorf("%s: offset %d timestamp %d err %v; want %d, %d", what, o.Offset, o.Timestamp, o.Err, offset, ts)
		}
	}
	got, err := adm.ListStartOffsets(ctx, "times")
	check("earliest", got, err, 0, -2)
	got, err = adm.ListEndOffsets(ctx, "times")
	check("latest", got, err, 6, -2)
	got, err = adm.ListOffsetsAfterMilli(ctx, 1001, "times")
	check("at 1001", got, err, 1, 1001)
	got, err = adm.ListOffsetsAfterMilli(ctx, 1500, "times")
	check("after 1500", got, err, 2, 5000)
	got, err = adm.ListOffsetsAfterMilli(ctx, 5001, "times")
	check("at 5001 (inside an lz4 batch)", got, err, 3, 5001)
	got, err = adm.ListOffsetsAfterMilli(ctx, 9999, "times")
	// Past every record: Kafka answers the end offset through kadm's fallback.
	if o, _ := got.Lookup("times", 0); err != nil || o.Offset != 6 && o.Offset != -1 {
		t.Errorf("after 9999: offset %d err %v, want 6 or -1", o.Offset, err)
	}
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = "times"
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Timestamp = -3
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.Offset != 4 || p.Timestamp != 5002 {
		t.Errorf("max timestamp: offset %d timestamp %d err %v; want 4, 5002", p.Offset, p.Timestamp, kerr.ErrorForCode(p.ErrorCode))
	}
}

// A session rotates the partitions that returned records to the back, so a byte limit
// that fits one partition per answer serves them in turn instead of starving one.
func TestFetchSessionRotates(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "rot", 2, nil)
	cl := kafkaClient(t, s)
	value := string(make([]byte, 1000))
	for range 3 {
		produceRaw(t, s, cl, -1, "rot", map[int32][]byte{0: batchOf(t, 0, 1, value), 1: batchOf(t, 0, 1, value)})
	}
	id := topicIDOf(s, "rot")
	var sid int32
	fetch := func(sessionID, epoch int32, offsets map[int32]int64) []int32 {
		req := kmsg.NewPtrFetchRequest()
		req.MaxBytes, req.SessionID, req.SessionEpoch = 1, sessionID, epoch // one batch per answer
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = "rot", id
		for p, off := range offsets {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, off, 1<<20
			rt.Partitions = append(rt.Partitions, rp)
		}
		if len(rt.Partitions) > 0 {
			req.Topics = append(req.Topics, rt)
		}
		resp, err := req.RequestWith(testContext(t), cl)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("fetch: %v %v", err, kerr.ErrorForCode(resp.ErrorCode))
		}
		if sessionID == 0 {
			sid = resp.SessionID
		}
		var fed []int32
		for _, rt := range resp.Topics {
			for _, p := range rt.Partitions {
				if len(p.RecordBatches) > 0 {
					fed = append(fed, p.Partition)
				}
			}
		}
		return fed
	}
	first := fetch(0, 0, map[int32]int64{0: 0, 1: 0})
	if len(first) != 1 {
		t.Fatalf("first answer fed partitions %v, want one", first)
	}
	// The fed partition moves on one batch; the other must be fed next.
	second := fetch(sid, 1, map[int32]int64{first[0]: 1})
	if len(second) != 1 || second[0] == first[0] {
		t.Fatalf("second answer fed %v after %v, want the other partition", second, first)
	}
}

// The index cache is bounded across partitions: past the bound, the partitions used
// least recently are forgotten (and read again from the metastore when fetched).
func TestReaderIndexCacheBound(t *testing.T) {
	r := &reader{parts: map[partKey]*partState{}, notify: make(chan struct{})}
	per := maxCachedEntries
	parts := maxTotalEntries/per + 2
	for p := range parts {
		k := partKey{partition: int32(p)}
		r.mu.Lock()
		r.parts[k] = &partState{known: true}
		r.touchLocked(r.parts[k])
		for i := range per {
			r.addLocked(&pb.IndexEntry{Partition: int32(p), BaseOffset: int64(i), LastOffset: int64(i)})
		}
		r.mu.Unlock()
	}
	total := 0
	for _, p := range r.parts {
		total += len(p.entries)
	}
	if total != r.cached || total > maxTotalEntries {
		t.Fatalf("%d entries cached (counted %d), bound %d", total, r.cached, maxTotalEntries)
	}
	if _, ok := r.parts[partKey{partition: int32(parts - 1)}]; !ok {
		t.Fatal("the partition used last was evicted")
	}
	if _, ok := r.parts[partKey{partition: 0}]; ok {
		t.Fatal("the partition used first survived eviction")
	}
}
