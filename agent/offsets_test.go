package agent

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore/groups"
)

// Committed offsets of a simple consumer (generation -1): commit, fetch (asked and
// all), delete, through kadm; the refusals Kafka gives.
func TestOffsetsCommitFetchDelete(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "o1", 3, nil)
	createTopic(t, s, "o2", 1, nil)
	adm := adminClient(t, s)
	ctx := testContext(t)

	coords := adm.FindGroupCoordinators(ctx, "g1", "g2")
	for _, g := range []string{"g1", "g2"} {
		if co := coords[g]; co.Err != nil || co.NodeID != s.NodeID() {
			t.Fatalf("coordinator of %s: node %d err %v, want node %d", g, co.NodeID, co.Err, s.NodeID())
		}
	}

	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: "o1", Partition: 0, At: 10, LeaderEpoch: -1, Metadata: "m0"})
	offs.Add(kadm.Offset{Topic: "o1", Partition: 2, At: 30, LeaderEpoch: 0})
	offs.Add(kadm.Offset{Topic: "o2", Partition: 0, At: 5, LeaderEpoch: -1})
	offs.Add(kadm.Offset{Topic: "o1", Partition: 9, At: 1, LeaderEpoch: -1})
	resps, err := adm.CommitOffsets(ctx, "g1", offs)
	if err != nil {
		t.Fatal(err)
	}
	for topic, ps := range resps {
		for p, r := range ps {
			want := error(nil)
			if p == 9 {
				want = kerr.UnknownTopicOrPartition
			}
			if r.Err != want {
				t.Errorf("commit %s/%d: %v, want %v", topic, p, r.Err, want)
			}
		}
	}

	fetched, err := adm.FetchOffsets(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	check := func(what, topic string, p int32, at int64, meta string) {
		t.Helper()
		o, ok := fetched.Lookup(topic, p)
		if !ok || o.Err != nil || o.At != at || o.Metadata != meta {
			t.Errorf("%s %s/%d: at %d metadata %q err %v (listed %v); want %d, %q", what, topic, p, o.At, o.Metadata, o.Err, ok, at, meta)
		}
	}
	check("all", "o1", 0, 10, "m0")
	check("all", "o1", 2, 30, "")
	check("all", "o2", 0, 5, "")
	if _, ok := fetched.Lookup("o1", 1); ok {
		t.Error("all: o1/1 listed without a commit")
	}

	// Asked partitions: one without a commit answers -1 with no error.
	req := kmsg.NewPtrOffsetFetchRequest()
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = "g1"
	gt := kmsg.NewOffsetFetchRequestGroupTopic()
	gt.Topic, gt.Partitions = "o1", []int32{1, 2}
	g.Topics = append(g.Topics, gt)
	req.Groups = append(req.Groups, g)
	raw, err := req.RequestWith(ctx, kafkaClient(t, s))
	if err != nil {
		t.Fatal(err)
	}
	ps := raw.Groups[0].Topics[0].Partitions
	if len(ps) != 2 || ps[0].Offset != -1 || ps[0].ErrorCode != 0 || ps[1].Offset != 30 || ps[1].LeaderEpoch != 0 {
		t.Fatalf("asked partitions: %+v", ps)
	}

	// Another group sees nothing of g1's.
	if other, err := adm.FetchOffsets(ctx, "g2"); err != nil || len(other) != 0 {
		t.Fatalf("g2: %v %v, want no offsets", other, err)
	}

	// Delete one partition's offset; the group's others stay.
	ts := kadm.TopicsSet{}
	ts.Add("o1", 0)
	dresp, err := adm.DeleteOffsets(ctx, "g1", ts)
	if err != nil || dresp.Error() != nil {
		t.Fatalf("delete offsets: %v %v", err, dresp.Error())
	}
	if fetched, err = adm.FetchOffsets(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := fetched.Lookup("o1", 0); ok {
		t.Error("o1/0 still committed after delete")
	}
	check("after delete", "o1", 2, 30, "")
	if _, err := adm.DeleteOffsets(ctx, "nobody", ts); err != kerr.GroupIDNotFound {
		t.Errorf("delete offsets of a group without offsets: %v, want GROUP_ID_NOT_FOUND", err)
	}

	// A commit naming a member the group does not have (it has none).
	creq := kmsg.NewPtrOffsetCommitRequest()
	creq.Group, creq.Generation, creq.MemberID = "g1", 3, "m-1"
	ct := kmsg.NewOffsetCommitRequestTopic()
	ct.Topic = "o1"
	cp := kmsg.NewOffsetCommitRequestTopicPartition()
	cp.Offset = 1
	ct.Partitions = append(ct.Partitions, cp)
	creq.Topics = append(creq.Topics, ct)
	cresp, err := creq.RequestWith(ctx, kafkaClient(t, s))
	if err != nil {
		t.Fatal(err)
	}
	if code := cresp.Topics[0].Partitions[0].ErrorCode; code != kerr.UnknownMemberID.Code {
		t.Errorf("commit as an unknown member: %v, want UNKNOWN_MEMBER_ID", kerr.ErrorForCode(code))
	}
}

// Groups that only commit offsets are listed and described as Empty, lag is visible
// through kadm, and deleting a group removes its offsets.
func TestGroupsListDescribeLagDelete(t *testing.T) {
	s := startAgent(t)
	createTopic(t, s, "lagged", 2, nil)
	adm := adminClient(t, s)
	ctx := testContext(t)
	cl := kafkaClient(t, s)
	for p := range int32(2) {
		produceRaw(t, s, cl, -1, "lagged", map[int32][]byte{p: batchOf(t, 0, 1, "a", "b", "c", "d")})
	}
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: "lagged", Partition: 0, At: 1, LeaderEpoch: -1})
	offs.Add(kadm.Offset{Topic: "lagged", Partition: 1, At: 4, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "lag-group", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit: %v %v", err, resp.Error())
	}

	listed, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := listed["lag-group"]; !ok || g.State != "Empty" {
		t.Fatalf("list groups: %v, want lag-group in state Empty", listed)
	}
	if empty, err := adm.ListGroups(ctx, "Stable"); err != nil || len(empty) != 0 {
		t.Fatalf("list groups in state Stable: %v %v, want none", empty, err)
	}
	described, err := adm.DescribeGroups(ctx, "lag-group", "never-seen")
	if err != nil {
		t.Fatal(err)
	}
	if described["lag-group"].State != "Empty" || described["never-seen"].State != "Dead" {
		t.Fatalf("describe: %q and %q, want Empty and Dead", described["lag-group"].State, described["never-seen"].State)
	}

	lags, err := adm.Lag(ctx, "lag-group")
	if err != nil {
		t.Fatal(err)
	}
	gl := lags["lag-group"]
	if err := gl.Error(); err != nil {
		t.Fatalf("lag: %v", err)
	}
	if l := gl.Lag["lagged"][0].Lag; l != 3 {
		t.Errorf("lag of partition 0: %d, want 3", l)
	}
	if l := gl.Lag["lagged"][1].Lag; l != 0 {
		t.Errorf("lag of partition 1: %d, want 0", l)
	}

	dresp, err := adm.DeleteGroups(ctx, "lag-group", "never-seen")
	if err != nil {
		t.Fatal(err)
	}
	if dresp["lag-group"].Err != nil || dresp["never-seen"].Err != kerr.GroupIDNotFound {
		t.Fatalf("delete groups: %v / %v, want nil / GROUP_ID_NOT_FOUND", dresp["lag-group"].Err, dresp["never-seen"].Err)
	}
	if fetched, err := adm.FetchOffsets(ctx, "lag-group"); err != nil || len(fetched) != 0 {
		t.Fatalf("offsets after deleting the group: %v %v", fetched, err)
	}
}

// TestOffsetsRetention: offsets of a group without members expire after
// offsets.retention.minutes, checked by the metastore leader's periodic expiry; a
// group with members keeps its offsets however old they are.
func TestOffsetsRetention(t *testing.T) {
	s := startAgent(t, withGroups(func(c *groups.Config) {
		c.OffsetsRetention = 500 * time.Millisecond
		c.OffsetsRetentionCheck = 100 * time.Millisecond
		c.InitialRebalanceDelay = 0
	}))
	createTopic(t, s, "kept", 1, nil)
	adm := adminClient(t, s)
	ctx := testContext(t)
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: "kept", Partition: 0, At: 3, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "simple", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit: %v %v", err, resp.Error())
	}
	// A live group member commits too, then keeps heartbeating.
	assigned := make(chan struct{}, 1)
	cl := kafkaClient(t, s, kgo.ConsumerGroup("live"), kgo.ConsumeTopics("kept"), kgo.HeartbeatInterval(100*time.Millisecond),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			select {
			case assigned <- struct{}{}:
			default:
			}
		}))
	go func() {
		for !cl.PollFetches(ctx).IsClientClosed() && ctx.Err() == nil {
		}
	}()
	select {
	case <-assigned:
	case <-ctx.Done():
		t.Fatal("the member was never assigned")
	}
	if err := cl.CommitRecords(ctx, &kgo.Record{Topic: "kept", Partition: 0, Offset: 6}); err != nil {
		t.Fatalf("member commit: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		simple, err := adm.FetchOffsets(ctx, "simple")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := simple.Lookup("kept", 0); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the simple group's offset outlived the retention")
		}
		time.Sleep(50 * time.Millisecond)
	}
	live, err := adm.FetchOffsets(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := live.Lookup("kept", 0); !ok || o.At != 7 {
		t.Fatalf("the live group's offset: %v %v, want 7 kept", o, ok)
	}
}
