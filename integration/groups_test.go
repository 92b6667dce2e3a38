package integration

// Consumer groups with real clients: the classic group protocol (JoinGroup, SyncGroup,
// Heartbeat, LeaveGroup), static membership (KIP-345) and generation checks on
// OffsetCommit, as franz-go, sarama and kafka-go use them against `strata local`. Each
// test starts its own server with the coordinator flags of groupArgs and runs in
// parallel with the others; most of their time is spent waiting on heartbeats and
// session timeouts, not on CPU, so `go test -parallel 8` runs them all at once. The
// members, the fleet that follows what they report, and the child-process members
// are in groups_helper_test.go.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// TestGroupShares runs a group of three members on a six-partition topic with each
// client library's group consumer: franz-go (cooperative-sticky), sarama (range) and
// kafka-go's Reader (range). DescribeGroups must show the group Stable with exactly the
// three members, each joined for the topic, with disjoint assignments of two
// partitions covering all six; franz-go and sarama must report through their callbacks
// the assignment DescribeGroups shows; every member must then receive records from
// exactly its partitions; and the group must not change meanwhile.
func TestGroupShares(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	srv := startLocal(t, localOptions{Args: groupArgs()})
	for _, gc := range groupClients {
		t.Run(gc.name, func(t *testing.T) {
			t.Parallel()
			topic, group := "shares-"+gc.name, "shares-"+gc.name
			who := gc.name + " group " + group
			createTopic(t, srv.Addr, topic, groupPartitions, nil)
			adm := newKadm(t, srv.Addr)
			f := newGroupFleet(t, true)
			names := groupMemberNames(gc.name, 3)
			for _, n := range names {
				gc.start(t, f, srv.Addr, group, topic, n, 10*time.Second)
			}
			var reporters []string
			if gc.reports {
				reporters = names
			}
			v := waitShares(t, who, adm, f, group, topic, names, reporters, groupWait)
			for _, m := range v.Members {
				if len(m.Parts) != 2 {
					t.Errorf("%s: %s is assigned %v, want two of the six partitions", who, m.ClientID, m.Parts)
				}
			}
			if v.ProtocolType != "consumer" {
				t.Errorf("%s: protocol type %q, want consumer", who, v.ProtocolType)
			}
			checkConsumesShares(t, who, srv.Addr, f, topic, v)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			after, err := describeGroupView(ctx, adm, group, topic)
			if err == nil {
				err = sameGroupAssignment(v, after)
			}
			if err != nil {
				t.Errorf("%s: while the members consumed: %v", who, err)
			}
			f.checkNoOverlap(t, who)
		})
	}
}

// TestGroupMemberLeave closes one of three members, on each client library: its
// LeaveGroup must rebalance the group at once, so the two survivors hold all six
// partitions (and consume them) well before the 30-second session timeout that would
// remove a member that just went away.
func TestGroupMemberLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	const session = 30 * time.Second
	srv := startLocal(t, localOptions{Args: groupArgs()})
	for _, gc := range groupClients {
		t.Run(gc.name, func(t *testing.T) {
			t.Parallel()
			topic, group := "leave-"+gc.name, "leave-"+gc.name
			who := gc.name + " group " + group
			createTopic(t, srv.Addr, topic, groupPartitions, nil)
			adm := newKadm(t, srv.Addr)
			f := newGroupFleet(t, true)
			names := groupMemberNames("leave-"+gc.name, 3)
			var members []groupMember
			for _, n := range names {
				members = append(members, gc.start(t, f, srv.Addr, group, topic, n, session))
			}
			var reporters []string
			if gc.reports {
				reporters = names
			}
			waitShares(t, who, adm, f, group, topic, names, reporters, groupWait)

			survivors := []string{names[0], names[2]}
			if gc.reports {
				reporters = survivors
			}
			start := time.Now()
			members[1].Close()
			v := waitShares(t, who+", after "+names[1]+" left", adm, f, group, topic, survivors, reporters, session/2)
			t.Logf("%s: the survivors held every partition %v after the LeaveGroup", who, time.Since(start).Round(time.Millisecond))
			checkConsumesShares(t, who, srv.Addr, f, topic, v)
			f.checkNoOverlap(t, who)
		})
	}
}

// TestGroupMemberCrash SIGKILLs one of three members (a franz-go consumer in a child
// process, so it sends no LeaveGroup): the coordinator must remove it when its
// two-second session times out and give its partitions to the two survivors, which
// then consume them. Before the kill, heartbeats must keep all three sessions alive:
// the group does not change for twice the session timeout.
func TestGroupMemberCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	const session = 2 * time.Second
	const topic, group = "crash", "crash"
	const who = "group " + group
	srv := startLocal(t, localOptions{Args: groupArgs()})
	createTopic(t, srv.Addr, topic, groupPartitions, nil)
	adm := newKadm(t, srv.Addr)
	f := newGroupFleet(t, false)
	startFranzMember(t, f, srv.Addr, group, topic, "crash-0", kgo.SessionTimeout(session))
	startFranzMember(t, f, srv.Addr, group, topic, "crash-1", kgo.SessionTimeout(session))
	child := startChildMember(t, f, childSpec{Addr: srv.Addr, Group: group, Topic: topic, ClientID: "crash-child", SessionTimeout: session})
	all := []string{"crash-0", "crash-1", "crash-child"}
	v := waitShares(t, who, adm, f, group, topic, all, all, groupWait)

	groupHoldsFor(t, 2*session, who+": with every member heartbeating", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		now, err := describeGroupView(ctx, adm, group, topic)
		if err == nil {
			err = sameGroupAssignment(v, now)
		}
		return err
	})

	killed, _ := v.byClient("crash-child")
	start := time.Now()
	child.kill(t)
	survivors := all[:2]
	after := waitShares(t, who+", after SIGKILL of crash-child", adm, f, group, topic, survivors, survivors, session+20*time.Second)
	t.Logf("%s: crash-child's partitions %v moved to the survivors %v after its SIGKILL (session timeout %v)",
		who, killed.Parts, time.Since(start).Round(time.Millisecond), session)
	checkConsumesShares(t, who, srv.Addr, f, topic, after)
}

// TestGroupOffsetsResume commits offsets through a group (a member with a real
// generation) with each client library, restarts strata local, produces more, and
// starts a new member of the same group: it must start exactly at each committed
// offset (at the start where nothing was committed), re-reading nothing committed and
// skipping nothing.
func TestGroupOffsetsResume(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	// Ten records per partition before the restart, five after. Partition 0 commits
	// nothing, partition 5 everything it read.
	const before, after = 10, 5
	commits := map[int32]int64{1: 3, 2: 4, 3: 5, 4: 6, 5: before}
	clients := []struct {
		name    string
		consume resumeConsumeFunc
	}{
		{"franz-go", franzResumeConsume},
		{"sarama", saramaResumeConsume},
		{"kafka-go", kafkaGoResumeConsume},
	}
	srv := startLocal(t, localOptions{Args: groupArgs()})
	t.Run("commit", func(t *testing.T) {
		for _, c := range clients {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				topic, group := "resume-"+c.name, "resume-"+c.name
				who := c.name + " group " + group
				createTopic(t, srv.Addr, topic, groupPartitions, nil)
				groupProduce(t, srv.Addr, topic, 0, before)
				checkResumed(t, who, c.consume(t, srv.Addr, group, topic, before, commits), nil, before)
				checkGroupOffsets(t, who, srv.Addr, group, topic, commits)
			})
		}
	})
	if t.Failed() {
		return
	}
	srv.restart(t)
	t.Run("resume-after-restart", func(t *testing.T) {
		for _, c := range clients {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				topic, group := "resume-"+c.name, "resume-"+c.name
				who := c.name + " group " + group + " after a restart"
				checkGroupOffsets(t, who, srv.Addr, group, topic, commits)
				groupProduce(t, srv.Addr, topic, before, after)
				checkResumed(t, who, c.consume(t, srv.Addr, group, topic, before+after, nil), commits, before+after)
			})
		}
	})
}

// resumeConsumeFunc runs one member of group on a client library, consuming topic
// from the group's committed offsets (from the start of partitions without one) until
// it has read every partition up to end; then it commits commit (partition -> next
// offset) as a member of the group, if commit is not empty, and leaves. It returns
// the offsets read, per partition, in order.
type resumeConsumeFunc func(t *testing.T, addr, group, topic string, end int64, commit map[int32]int64) map[int32][]int64

// resumeReadUpTo says whether every partition has been read up to end.
func resumeReadUpTo(got map[int32][]int64, end int64) bool {
	for p := range int32(groupPartitions) {
		if n := len(got[p]); n == 0 || got[p][n-1] < end-1 {
			return false
		}
	}
	return true
}

// checkResumed checks that each partition was read from its committed offset (0
// without one) to end, each offset once and in order.
func checkResumed(t *testing.T, who string, got map[int32][]int64, committed map[int32]int64, end int64) {
	t.Helper()
	for p := range int32(groupPartitions) {
		var want []int64
		for o := committed[p]; o < end; o++ {
			want = append(want, o)
		}
		if !slices.Equal(got[p], want) {
			t.Errorf("%s: partition %d: read offsets %v, want %d through %d (committed %d)", who, p, got[p], committed[p], end-1, committed[p])
		}
	}
}

// checkGroupOffsets checks through kadm that the group has exactly want committed on
// topic.
func checkGroupOffsets(t *testing.T, who, addr, group, topic string, want map[int32]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := newKadm(t, addr).FetchOffsets(ctx, group)
	if err == nil {
		err = got.Error()
	}
	if err != nil {
		t.Fatalf("%s: fetch committed offsets: %v", who, err)
	}
	for p := range int32(groupPartitions) {
		o, ok := got.Lookup(topic, p)
		w, committed := want[p]
		switch {
		case committed && (!ok || o.At != w):
			t.Errorf("%s: partition %d: committed offset %d (listed %v), want %d", who, p, o.At, ok, w)
		case !committed && ok && o.At >= 0:
			t.Errorf("%s: partition %d: committed offset %d, want none", who, p, o.At)
		}
	}
}

func franzResumeConsume(t *testing.T, addr, group, topic string, end int64, commit map[int32]int64) map[int32][]int64 {
	t.Helper()
	who := "franz-go group " + group
	cl := franzClient(t, addr, kgo.ClientID("resume-franz-go"), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(250*time.Millisecond), kgo.HeartbeatInterval(groupHeartbeat))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	got := map[int32][]int64{}
	for !resumeReadUpTo(got, end) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: read %v before the deadline, want every partition up to offset %d", who, got, end-1)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Logf("%s: partition %d: %v", who, p, err) })
		fs.EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], r.Offset) })
	}
	if len(commit) == 0 {
		return got
	}
	offsets := map[string]map[int32]kgo.EpochOffset{topic: {}}
	for p, o := range commit {
		offsets[topic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	var cerr error
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		if req.Generation < 0 || req.MemberID == "" {
			cerr = fmt.Errorf("the commit went out as generation %d, member %q: not as a group member", req.Generation, req.MemberID)
			return
		}
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					cerr = fmt.Errorf("partition %d: %w", rp.Partition, err)
				}
			}
		}
	})
	if cerr != nil {
		t.Fatalf("%s: commit %v: %v", who, commit, cerr)
	}
	return got
}

func saramaResumeConsume(t *testing.T, addr, group, topic string, end int64, commit map[int32]int64) map[int32][]int64 {
	t.Helper()
	who := "sarama group " + group
	cfg := saramaConfig(t, "none")
	cfg.ClientID = "resume-sarama"
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Group.Heartbeat.Interval = groupHeartbeat
	cg, err := sarama.NewConsumerGroup([]string{addr}, group, cfg)
	if err != nil {
		t.Fatalf("%s: new consumer group: %v", who, err)
	}
	f := newGroupFleet(t, false)
	go func() {
		for err := range cg.Errors() {
			f.fail("resume-sarama", err)
		}
	}()
	sessions := make(chan sarama.ConsumerGroupSession, 1)
	h := saramaHandler{f: f, name: "resume-sarama", topic: topic, onMessage: func(s sarama.ConsumerGroupSession, _ *sarama.ConsumerMessage) {
		select {
		case sessions <- s:
		default:
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
				f.fail(h.name, err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	defer func() {
		cancel()
		<-done
		if err := cg.Close(); err != nil {
			t.Errorf("%s: close: %v", who, err)
		}
	}()
	got := map[int32][]int64{}
	var sess sarama.ConsumerGroupSession
	groupWaitFor(t, consumeTimeout, who+": read every partition up to offset "+fmt.Sprint(end-1), func() error {
		select {
		case sess = <-sessions:
		default:
		}
		all := f.receivedAll()
		got = map[int32][]int64{}
		for p, offs := range all {
			for o := range offs {
				got[p] = append(got[p], o)
			}
			slices.Sort(got[p])
		}
		if !resumeReadUpTo(got, end) {
			return fmt.Errorf("read %v", got)
		}
		return nil
	})
	// Duplicates would not show in the sets above: count deliveries.
	for p, offs := range f.receivedAll() {
		for o, names := range offs {
			if len(names) > 1 {
				t.Errorf("%s: partition %d offset %d delivered %d times", who, p, o, len(names))
			}
		}
	}
	if len(commit) > 0 {
		if sess == nil {
			t.Fatalf("%s: no session to commit through", who)
		}
		for p, o := range commit {
			sess.MarkOffset(topic, p, o, "")
		}
		// Errors go to cg.Errors (into the fleet's history); checkGroupOffsets checks
		// what was committed.
		sess.Commit()
	}
	return got
}

func kafkaGoResumeConsume(t *testing.T, addr, group, topic string, end int64, commit map[int32]int64) map[int32][]int64 {
	t.Helper()
	who := "kafka-go group " + group
	r := newKafkaGoGroupReader(t, addr, group, topic, "resume-kafka-go", 10*time.Second)
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	got := map[int32][]int64{}
	for !resumeReadUpTo(got, end) {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("%s: read %v, want every partition up to offset %d: %v", who, got, end-1, err)
		}
		got[int32(m.Partition)] = append(got[int32(m.Partition)], m.Offset)
	}
	if len(commit) == 0 {
		return got
	}
	var msgs []kafka.Message
	for p, o := range commit {
		// kafka-go commits a message's offset plus one.
		msgs = append(msgs, kafka.Message{Topic: topic, Partition: int(p), Offset: o - 1})
	}
	if err := r.CommitMessages(ctx, msgs...); err != nil {
		t.Fatalf("%s: commit %v: %v", who, commit, err)
	}
	return got
}

// TestGroupAssignors checks that the coordinator carries each assignor's protocol and
// metadata through: franz-go's cooperative-sticky as members join one by one and one
// leaves (partitions never owned twice, a member gives up only the partitions that
// move and keeps the rest), and sarama's range and round-robin, including the
// coordinator's choice of the one protocol every member supports.
func TestGroupAssignors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	srv := startLocal(t, localOptions{Args: groupArgs()})

	t.Run("franz-go-cooperative-sticky", func(t *testing.T) {
		t.Parallel()
		const topic, group = "assign-coop", "assign-coop"
		const who = "franz-go cooperative-sticky group " + group
		createTopic(t, srv.Addr, topic, groupPartitions, nil)
		adm := newKadm(t, srv.Addr)
		f := newGroupFleet(t, true)
		names := groupMemberNames("coop", 3)
		members := map[string]*franzMember{}
		start := func(name string) func() {
			return func() {
				members[name] = startFranzMember(t, f, srv.Addr, group, topic, name, kgo.Balancers(kgo.CooperativeStickyBalancer()))
			}
		}
		var prev groupView
		step := func(label string, change func(), present []string) {
			t.Helper()
			revokedBefore := map[string]int{}
			for _, n := range present {
				revokedBefore[n] = len(f.revokedList(n))
			}
			joining := len(present) > len(prev.Members)
			change()
			v := waitShares(t, who+", "+label, adm, f, group, topic, present, present, groupWait)
			if v.Protocol != "cooperative-sticky" {
				t.Errorf("%s, %s: protocol %q, want cooperative-sticky", who, label, v.Protocol)
			}
			for _, n := range present {
				old, ok := prev.byClient(n)
				if !ok {
					continue
				}
				now, _ := v.byClient(n)
				var moved []int32
				for _, p := range old.Parts {
					if !slices.Contains(now.Parts, p) {
						moved = append(moved, p)
					}
				}
				revoked := slices.Clone(f.revokedList(n)[revokedBefore[n]:])
				slices.Sort(revoked)
				if !slices.Equal(revoked, moved) {
					t.Errorf("%s, %s: %s went from %v to %v but had %v revoked; a cooperative member gives up exactly what moves",
						who, label, n, old.Parts, now.Parts, revoked)
				}
				gained := slices.ContainsFunc(now.Parts, func(p int32) bool { return !slices.Contains(old.Parts, p) })
				if joining && gained || !joining && len(moved) > 0 {
					t.Errorf("%s, %s: %s went from %v to %v; sticky assignment keeps what a member has and moves only what must",
						who, label, n, old.Parts, now.Parts)
				}
			}
			prev = v
		}
		step("first member", start(names[0]), names[:1])
		step("second member joins", start(names[1]), names[:2])
		step("third member joins", start(names[2]), names)
		step(names[1]+" leaves", func() { members[names[1]].Close() }, []string{names[0], names[2]})
		f.checkNoOverlap(t, who)
		for _, n := range names {
			if l := f.lostCount(n); l != 0 {
				t.Errorf("%s: %s lost its partitions %d times (a failed session), want never", who, n, l)
			}
		}
	})

	rangeStrategy, roundRobin := sarama.NewBalanceStrategyRange, sarama.NewBalanceStrategyRoundRobin
	for _, tc := range []struct {
		name, protocol string
		strategies     [3][]func() sarama.BalanceStrategy
		// want is the three members' shares, in any order: range gives consecutive
		// partitions, round-robin every third.
		want [][]int32
	}{
		{"sarama-range", "range",
			[3][]func() sarama.BalanceStrategy{{rangeStrategy}, {rangeStrategy}, {rangeStrategy}},
			[][]int32{{0, 1}, {2, 3}, {4, 5}}},
		{"sarama-roundrobin", "roundrobin",
			[3][]func() sarama.BalanceStrategy{{roundRobin}, {roundRobin}, {roundRobin}},
			[][]int32{{0, 3}, {1, 4}, {2, 5}}},
		// Two members prefer range but also speak round-robin; the third speaks only
		// round-robin, so round-robin is the only protocol the group can use.
		{"sarama-common-protocol", "roundrobin",
			[3][]func() sarama.BalanceStrategy{{rangeStrategy, roundRobin}, {rangeStrategy, roundRobin}, {roundRobin}},
			[][]int32{{0, 3}, {1, 4}, {2, 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic, group := "assign-"+tc.name, "assign-"+tc.name
			who := tc.name + " group " + group
			createTopic(t, srv.Addr, topic, groupPartitions, nil)
			adm := newKadm(t, srv.Addr)
			f := newGroupFleet(t, true)
			names := groupMemberNames(tc.name, 3)
			for i, n := range names {
				startSaramaMember(t, f, srv.Addr, group, topic, n, func(c *sarama.Config) {
					c.Consumer.Group.Rebalance.GroupStrategies = nil
					for _, s := range tc.strategies[i] {
						c.Consumer.Group.Rebalance.GroupStrategies = append(c.Consumer.Group.Rebalance.GroupStrategies, s())
					}
				})
			}
			v := waitShares(t, who, adm, f, group, topic, names, names, groupWait)
			if v.Protocol != tc.protocol {
				t.Errorf("%s: the group chose protocol %q, want %q", who, v.Protocol, tc.protocol)
			}
			var got [][]int32
			for _, m := range v.Members {
				got = append(got, m.Parts)
			}
			slices.SortFunc(got, slices.Compare)
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("%s: shares %v, want %v", who, got, tc.want)
			}
			f.checkNoOverlap(t, who)
		})
	}
}

// TestGroupStaticMembership covers KIP-345 with franz-go and kgo.InstanceID.
//
// restart: of two static members (eager range assignor, so any rebalance revokes
// everything), the one that has been through a rebalance closes (a static member sends
// no LeaveGroup) and a new client with the same instance id joins within the session
// timeout. The group must not
// rebalance: the new client gets the old assignment in the same generation with a new
// member id, the other member keeps its partitions without a revoke for longer than
// the session timeout, and the old member id is fenced (FENCED_INSTANCE_ID).
//
// duplicate: a second live client with the same instance id takes the member over;
// the first learns it is fenced (franz-go surfaces FENCED_INSTANCE_ID as a group
// session error from PollFetches, and calls OnPartitionsLost), keeps being fenced when
// it tries to rejoin, and the second is not disturbed.
func TestGroupStaticMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	const session = 4 * time.Second
	srv := startLocal(t, localOptions{Args: groupArgs()})
	static := func(instance string) []kgo.Opt {
		return []kgo.Opt{kgo.InstanceID(instance), kgo.SessionTimeout(session), kgo.Balancers(kgo.RangeBalancer()), kgo.DisableAutoCommit()}
	}
	raw := franzClient(t, srv.Addr, kgo.MaxVersions(kversion.V3_9_0()), kgo.ClientID("static-raw"))
	t.Cleanup(raw.Close)
	heartbeat := func(group, memberID, instance string, gen int32) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.InstanceID, req.Generation = group, memberID, kmsg.StringPtr(instance), gen
		resp, err := req.RequestWith(ctx, raw)
		if err != nil {
			return err
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}

	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		const topic, group = "static-restart", "static-restart"
		const who = "static group " + group
		createTopic(t, srv.Addr, topic, groupPartitions, nil)
		adm := newKadm(t, srv.Addr)
		f := newGroupFleet(t, true)
		// static-a forms the group alone and rejoins when static-b comes, as a member
		// that has lived through a rebalance: its last JoinGroup metadata then carries
		// its generation (franz-go's, KIP-792), which the restarted client's does not.
		// Kafka rebalances a static rejoin only if the group's protocol would change,
		// whatever the metadata bytes.
		a := startFranzMember(t, f, srv.Addr, group, topic, "static-a", static("a")...)
		waitShares(t, who, adm, f, group, topic, []string{"static-a"}, []string{"static-a"}, groupWait)
		b := startFranzMember(t, f, srv.Addr, group, topic, "static-b", static("b")...)
		names := []string{"static-a", "static-b"}
		v := waitShares(t, who, adm, f, group, topic, names, names, groupWait)
		oldA, _ := v.byInstance("a")
		oldB, _ := v.byInstance("b")
		if oldA.ClientID != "static-a" || oldB.ClientID != "static-b" {
			t.Fatalf("%s: DescribeGroups does not show the instance ids: %s", who, v)
		}
		gen, revokesB := b.generation(), f.revokeCount("static-b")
		if a.generation() != gen {
			t.Fatalf("%s: the members are in generations %d and %d", who, a.generation(), gen)
		}

		a.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if now, err := describeGroupView(ctx, adm, group, topic); err != nil {
			t.Errorf("%s: describe right after static-a closed: %v", who, err)
		} else if m, ok := now.byInstance("a"); !ok || m.MemberID != oldA.MemberID {
			t.Errorf("%s: right after static-a closed (no LeaveGroup: it is static) instance a is not its old member %s any more: %s",
				who, oldA.MemberID, now)
		}

		a2 := startFranzMember(t, f, srv.Addr, group, topic, "static-a", static("a")...)
		groupWaitFor(t, groupWait, who+": the restarted static-a gets its old partitions back", func() error {
			if own := f.ownedBy("static-a"); !slices.Equal(own, oldA.Parts) {
				return fmt.Errorf("it owns %v, it had %v", own, oldA.Parts)
			}
			return nil
		})
		if g := a2.generation(); g != gen {
			t.Errorf("%s: the restarted static-a is in generation %d, the group was in %d: the restart rebalanced", who, g, gen)
		}
		var v2 groupView
		groupWaitFor(t, 10*time.Second, who+": describe after the restart", func() error {
			var err error
			v2, err = describeGroupView(ctx, adm, group, topic)
			if err == nil {
				err = v2.checkShares(topic, groupPartitions, names)
			}
			return err
		})
		newA, _ := v2.byInstance("a")
		newB, _ := v2.byInstance("b")
		if newA.MemberID == oldA.MemberID || newA.MemberID != a2.memberID() {
			t.Errorf("%s: instance a has member id %s (before the restart %s, the new client holds %s), want the new client's, a new one",
				who, newA.MemberID, oldA.MemberID, a2.memberID())
		}
		if newB.MemberID != oldB.MemberID || !slices.Equal(newB.Parts, oldB.Parts) || !slices.Equal(newA.Parts, oldA.Parts) {
			t.Errorf("%s: the group changed across the restart of a static member: from %s to %s", who, v, v2)
		}
		// The old member must not come back to expire: watch past its session timeout.
		groupHoldsFor(t, session+time.Second, who+": after static-a restarted", func() error {
			if r := f.revokeCount("static-b"); r != revokesB {
				return fmt.Errorf("static-b had its partitions revoked (%d times): the group rebalanced", r-revokesB)
			}
			if g := b.generation(); g != gen {
				return fmt.Errorf("static-b moved from generation %d to %d", gen, g)
			}
			now, err := describeGroupView(ctx, adm, group, topic)
			if err == nil {
				err = sameGroupAssignment(v2, now)
			}
			return err
		})
		if err := heartbeat(group, oldA.MemberID, "a", gen); !errors.Is(err, kerr.FencedInstanceID) {
			t.Errorf("%s: heartbeat with static-a's old member id: %v, want FENCED_INSTANCE_ID", who, err)
		}
		f.checkNoOverlap(t, who)
	})

	t.Run("duplicate", func(t *testing.T) {
		t.Parallel()
		const topic, group = "static-duplicate", "static-duplicate"
		const who = "static group " + group
		createTopic(t, srv.Addr, topic, groupPartitions, nil)
		adm := newKadm(t, srv.Addr)
		// Not strict: the fenced client owns its partitions until it learns it was fenced.
		f := newGroupFleet(t, false)
		d1 := startFranzMember(t, f, srv.Addr, group, topic, "dup-1", static("dup")...)
		v := waitShares(t, who, adm, f, group, topic, []string{"dup-1"}, []string{"dup-1"}, groupWait)
		oldID, gen := d1.memberID(), d1.generation()
		all := v.Members[0].Parts

		d2 := startFranzMember(t, f, srv.Addr, group, topic, "dup-2", static("dup")...)
		groupWaitFor(t, groupWait, who+": dup-2 takes over instance dup", func() error {
			if own := f.ownedBy("dup-2"); !slices.Equal(own, all) {
				return fmt.Errorf("dup-2 owns %v", own)
			}
			return nil
		})
		// The first fence comes from dup-1's next heartbeat, the second from its rejoin
		// with its old member id.
		fenced := func() int {
			n := 0
			for _, err := range f.errorsOf("dup-1") {
				if errors.Is(err, kerr.FencedInstanceID) {
					n++
				}
			}
			return n
		}
		groupWaitFor(t, groupWait, who+": dup-1 is told it is fenced, twice", func() error {
			if n := fenced(); n < 2 {
				return fmt.Errorf("dup-1 saw FENCED_INSTANCE_ID %d times; its errors: %v", n, f.errorsOf("dup-1"))
			}
			return nil
		})
		if f.lostCount("dup-1") == 0 {
			t.Errorf("%s: dup-1 was fenced but franz-go never called OnPartitionsLost", who)
		}
		if r, l := f.revokeCount("dup-2"), f.lostCount("dup-2"); r != 0 || l != 0 {
			t.Errorf("%s: dup-2 had its partitions revoked %d and lost %d times while dup-1 tried to rejoin", who, r, l)
		}
		if g := d2.generation(); g != gen {
			t.Errorf("%s: dup-2 is in generation %d, dup-1 was in %d: taking over a static member rebalanced", who, g, gen)
		}
		if err := heartbeat(group, oldID, "dup", gen); !errors.Is(err, kerr.FencedInstanceID) {
			t.Errorf("%s: heartbeat with dup-1's member id: %v, want FENCED_INSTANCE_ID", who, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		commit := kmsg.NewPtrOffsetCommitRequest()
		commit.Group, commit.MemberID, commit.InstanceID, commit.Generation = group, oldID, kmsg.StringPtr("dup"), gen
		ct := kmsg.NewOffsetCommitRequestTopic()
		ct.Topic = topic
		cp := kmsg.NewOffsetCommitRequestTopicPartition()
		cp.Partition, cp.Offset = 0, 1
		ct.Partitions = append(ct.Partitions, cp)
		commit.Topics = append(commit.Topics, ct)
		if resp, err := commit.RequestWith(ctx, raw); err != nil {
			t.Errorf("%s: offset commit as dup-1: %v", who, err)
		} else if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.FencedInstanceID.Code {
			t.Errorf("%s: offset commit as dup-1: %v, want FENCED_INSTANCE_ID", who, kerr.ErrorForCode(code))
		}
		now, err := describeGroupView(ctx, adm, group, topic)
		if err != nil {
			t.Fatalf("%s: describe: %v", who, err)
		}
		if m, ok := now.byInstance("dup"); len(now.Members) != 1 || !ok || m.MemberID != d2.memberID() || m.MemberID == oldID {
			t.Errorf("%s: want one member, dup-2's (%s), for instance dup: %s", who, d2.memberID(), now)
		}
	})
}

// TestGroupQueueSemantics consumes 3000 records on six partitions with a group of
// three members in child processes that process each record, commit after each batch
// and block rebalances between poll and commit; one is SIGKILLed midway. Every record
// must be processed; a record processed twice must have been processed by the killed
// member after its last commit on that partition (and by one survivor); and at the end
// the group has committed the end of every partition.
func TestGroupQueueSemantics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	const perPartition = 500
	const topic, group = "queue", "queue"
	const who = "queue group " + group
	srv := startLocal(t, localOptions{Args: groupArgs()})
	createTopic(t, srv.Addr, topic, groupPartitions, nil)
	groupProduce(t, srv.Addr, topic, 0, perPartition)
	f := newGroupFleet(t, false)
	var children []*childMember
	for _, name := range groupMemberNames("queue", 3) {
		children = append(children, startChildMember(t, f, childSpec{
			Addr: srv.Addr, Group: group, Topic: topic, ClientID: name,
			SessionTimeout: 2 * time.Second, RecordDelay: 2 * time.Millisecond, Commit: true,
		}))
	}
	groupWaitFor(t, groupWait, who+": every member processes records", func() error {
		for _, c := range children {
			if n := f.receivedCount(c.name); n < 30 {
				return fmt.Errorf("%s processed %d records", c.name, n)
			}
		}
		return nil
	})
	victim := children[0]
	processed := func() int {
		n := 0
		for _, offs := range f.receivedAll() {
			n += len(offs)
		}
		return n
	}
	if n := processed(); n >= groupPartitions*perPartition {
		t.Fatalf("%s: all %d records were processed before the kill; process more slowly", who, n)
	}
	owned := f.ownedBy(victim.name)
	victim.kill(t)
	t.Logf("%s: killed %s, which owned %v, after %d of %d records were processed", who, victim.name, owned, processed(), groupPartitions*perPartition)
	groupWaitFor(t, time.Minute, who+": every record processed", func() error {
		if n := processed(); n < groupPartitions*perPartition {
			return fmt.Errorf("%d of %d records processed", n, groupPartitions*perPartition)
		}
		return nil
	})
	for _, c := range children[1:] {
		c.stop(t)
	}

	received := f.receivedAll()
	lastCommit := f.committedBy(victim.name)
	dups, bad := 0, 0
	for p := range int32(groupPartitions) {
		for o := range int64(perPartition) {
			names := received[p][o]
			if len(names) <= 1 {
				continue
			}
			dups += len(names) - 1
			byVictim := 0
			for _, n := range names {
				if n == victim.name {
					byVictim++
				}
			}
			if len(names) != 2 || byVictim != 1 || o < lastCommit[p] {
				if bad++; bad <= 10 {
					t.Errorf("%s: partition %d offset %d processed by %v; the killed %s had committed partition %d up to %d",
						who, p, o, names, victim.name, p, lastCommit[p])
				}
			}
		}
	}
	if bad > 10 {
		t.Errorf("%s: %d records processed more than once outside the crash window in all", who, bad)
	}
	t.Logf("%s: %d records processed twice, by %s after its last commit and by a survivor", who, dups, victim.name)
	want := map[int32]int64{}
	for p := range int32(groupPartitions) {
		want[p] = perPartition
	}
	checkGroupOffsets(t, who, srv.Addr, group, topic, want)
}

// TestGroupProtocolErrors sends raw group requests, as an old client (Kafka 0.11
// versions: JoinGroup v2, OffsetCommit v3) and a new one (Kafka 3.9: JoinGroup v9,
// OffsetCommit v9), to a group with one franz-go member and then two under
// --group-max-size 2: a JoinGroup with another protocol type, or no protocol in common,
// is INCONSISTENT_GROUP_PROTOCOL; one with a member id the group never gave is
// UNKNOWN_MEMBER_ID (also for a group that does not exist); Heartbeat, SyncGroup and
// OffsetCommit check member and generation (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION; an
// OffsetCommit without a member is refused while the group has members); a third
// member is GROUP_MAX_SIZE_REACHED (raw, and as franz-go reports it); a LeaveGroup
// for an unknown member is UNKNOWN_MEMBER_ID. None of it disturbs the members. Last,
// a LeaveGroup for a live member sent from another connection must rebalance the group
// at once (franz-go's session timeout is 45s): the coordinator acts on the request,
// not on a connection closing.
func TestGroupProtocolErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	const topic, group = "raw", "raw"
	const who = "group " + group
	srv := startLocal(t, localOptions{Args: groupArgs("--group-max-size", "2")})
	createTopic(t, srv.Addr, topic, groupPartitions, nil)
	adm := newKadm(t, srv.Addr)
	f := newGroupFleet(t, true)
	m0 := startFranzMember(t, f, srv.Addr, group, topic, "raw-0", kgo.DisableAutoCommit())
	v := waitShares(t, who, adm, f, group, topic, []string{"raw-0"}, []string{"raw-0"}, groupWait)
	memberID, gen := m0.memberID(), m0.generation()
	meta := (&kmsg.ConsumerMemberMetadata{Topics: []string{topic}}).AppendTo(nil)

	type rawClient struct {
		name string
		cl   *kgo.Client
	}
	var raws []rawClient
	for _, rc := range []struct {
		name     string
		versions *kversion.Versions
	}{{"kafka-0.11", kversion.V0_11_0()}, {"kafka-3.9", kversion.V3_9_0()}} {
		cl := franzClient(t, srv.Addr, kgo.MaxVersions(rc.versions), kgo.ClientID("raw-"+rc.name))
		t.Cleanup(cl.Close)
		raws = append(raws, rawClient{rc.name, cl})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// expect fails the test unless err is want (nil: success).
	expect := func(rc rawClient, what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("%s, as %s: %s: %v, want %v", who, rc.name, what, err, want)
		}
	}
	join := func(rc rawClient, group, memberID, protocolType, protocol string) error {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.MemberID, req.ProtocolType = group, memberID, protocolType
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 10000, 10000
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = protocol, meta
		req.Protocols = append(req.Protocols, p)
		// A JoinGroup that is not refused waits for the rebalance; the bound makes a
		// wrongly accepted join fail this test instead of hanging it.
		jctx, jcancel := context.WithTimeout(ctx, 10*time.Second)
		defer jcancel()
		resp, err := req.RequestWith(jctx, rc.cl)
		if err != nil {
			return err
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}
	heartbeat := func(rc rawClient, memberID string, gen int32) error {
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = group, memberID, gen
		resp, err := req.RequestWith(ctx, rc.cl)
		if err != nil {
			return err
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}
	syncGroup := func(rc rawClient, memberID string, gen int32) error {
		req := kmsg.NewPtrSyncGroupRequest()
		req.Group, req.MemberID, req.Generation = group, memberID, gen
		resp, err := req.RequestWith(ctx, rc.cl)
		if err != nil {
			return err
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}
	leave := func(rc rawClient, memberID string) error {
		req := kmsg.NewPtrLeaveGroupRequest()
		req.Group, req.MemberID = group, memberID // v0-v2
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = memberID // v3+
		req.Members = append(req.Members, m)
		resp, err := req.RequestWith(ctx, rc.cl)
		if err != nil {
			return err
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err
		}
		for _, rm := range resp.Members {
			if err := kerr.ErrorForCode(rm.ErrorCode); err != nil {
				return err
			}
		}
		return nil
	}
	commit := func(rc rawClient, memberID string, gen int32) error {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.MemberID, req.Generation = group, memberID, gen
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = 0, 1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, rc.cl)
		if err != nil {
			return err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return fmt.Errorf("response for %d topics", len(resp.Topics))
		}
		return kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode)
	}

	for _, rc := range raws {
		expect(rc, "JoinGroup with protocol type connect", join(rc, group, "", "connect", "cooperative-sticky"), kerr.InconsistentGroupProtocol)
		expect(rc, "JoinGroup with only an assignor no member has", join(rc, group, "", "consumer", "no-such-assignor"), kerr.InconsistentGroupProtocol)
		expect(rc, "JoinGroup with a member id never given", join(rc, group, "no-such-member", "consumer", "cooperative-sticky"), kerr.UnknownMemberID)
		expect(rc, "JoinGroup with a member id, to a group that does not exist", join(rc, "raw-no-such-group", "no-such-member", "consumer", "range"), kerr.UnknownMemberID)

		expect(rc, "Heartbeat of the member", heartbeat(rc, memberID, gen), nil)
		expect(rc, "Heartbeat with the next generation", heartbeat(rc, memberID, gen+1), kerr.IllegalGeneration)
		expect(rc, "Heartbeat of an unknown member", heartbeat(rc, "no-such-member", gen), kerr.UnknownMemberID)
		expect(rc, "SyncGroup with the next generation", syncGroup(rc, memberID, gen+1), kerr.IllegalGeneration)
		expect(rc, "SyncGroup of an unknown member", syncGroup(rc, "no-such-member", gen), kerr.UnknownMemberID)

		expect(rc, "OffsetCommit of the member", commit(rc, memberID, gen), nil)
		expect(rc, "OffsetCommit with the next generation", commit(rc, memberID, gen+1), kerr.IllegalGeneration)
		expect(rc, "OffsetCommit of an unknown member", commit(rc, "no-such-member", gen), kerr.UnknownMemberID)
		expect(rc, "OffsetCommit without a member (generation -1) to a group with members", commit(rc, "", -1), kerr.UnknownMemberID)
		expect(rc, "LeaveGroup of an unknown member", leave(rc, "no-such-member"), kerr.UnknownMemberID)
	}
	now, err := describeGroupView(ctx, adm, group, topic)
	if err == nil {
		err = sameGroupAssignment(v, now)
	}
	if err != nil || m0.generation() != gen || f.revokeCount("raw-0") != 0 {
		t.Errorf("%s: after the refused requests: member raw-0 in generation %d (was %d), revoked %d times; group: %v",
			who, m0.generation(), gen, f.revokeCount("raw-0"), err)
	}

	m1 := startFranzMember(t, f, srv.Addr, group, topic, "raw-1", kgo.DisableAutoCommit())
	full := []string{"raw-0", "raw-1"}
	v = waitShares(t, who+" with two members", adm, f, group, topic, full, full, groupWait)
	gen = m0.generation()
	for _, rc := range raws {
		expect(rc, "JoinGroup of a third member (--group-max-size 2)", join(rc, group, "", "consumer", "cooperative-sticky"), kerr.GroupMaxSizeReached)
	}
	m2 := startFranzMember(t, f, srv.Addr, group, topic, "raw-2", kgo.DisableAutoCommit())
	groupWaitFor(t, groupWait, who+": franz-go as a third member is told the group is full", func() error {
		for _, err := range f.errorsOf("raw-2") {
			if errors.Is(err, kerr.GroupMaxSizeReached) {
				return nil
			}
		}
		return fmt.Errorf("raw-2's errors: %v", f.errorsOf("raw-2"))
	})
	now, err = describeGroupView(ctx, adm, group, topic)
	if err == nil {
		err = sameGroupAssignment(v, now)
	}
	if err != nil || m0.generation() != gen || m1.generation() != gen {
		t.Errorf("%s: after the third member was refused: generations %d and %d (were %d); group: %v",
			who, m0.generation(), m1.generation(), gen, err)
	}
	f.checkNoOverlap(t, who)

	m2.Close()
	expect(raws[1], "LeaveGroup of raw-1, from another connection", leave(raws[1], m1.memberID()), nil)
	groupWaitFor(t, 15*time.Second, who+": raw-0 moves to a new generation after raw-1 was made to leave", func() error {
		if g := m0.generation(); g <= gen {
			return fmt.Errorf("raw-0 is still in generation %d", g)
		}
		return nil
	})
}

// TestGroupKcat: librdkafka's classic group consumer (kcat -G) joins, consumes,
// commits on close, and a second run of the same group resumes exactly after what
// the first consumed; a third finds nothing new.
func TestGroupKcat(t *testing.T) {
	t.Parallel()
	bin := kcatBinary(t)
	s := startLocal(t, localOptions{Args: groupArgs()})
	createTopic(t, s.Addr, "kc", groupPartitions, nil)
	groupProduce(t, s.Addr, "kc", 0, 20)
	consume := func() []string {
		out := runKcat(t, "kcat -G", bin, "", "-b", s.Addr, "-G", "kc-group", "-X", "auto.offset.reset=earliest",
			"-e", "-f", "%p:%o\n", "kc")
		return strings.Fields(string(out))
	}
	first := consume()
	if len(first) != 20*groupPartitions {
		t.Fatalf("first run consumed %d records, want %d: %v", len(first), 20*groupPartitions, first)
	}
	groupProduce(t, s.Addr, "kc", 20, 10)
	second := consume()
	if len(second) != 10*groupPartitions {
		t.Fatalf("second run consumed %d records, want the %d new ones: %v", len(second), 10*groupPartitions, second)
	}
	for _, r := range second {
		if slices.Contains(first, r) {
			t.Fatalf("second run consumed %s again", r)
		}
	}
	if third := consume(); len(third) != 0 {
		t.Fatalf("third run consumed %v, want nothing", third)
	}
}
