package integration

// KIP-848 consumer groups with a real client: franz-go's server-side balancer
// (ServerSideBalancer over its range balancer), which speaks ConsumerGroupHeartbeat
// when the broker offers v1, against `strata local`. The coordinator assigns the
// partitions; the tests check what ConsumerGroupDescribe shows against what the
// members report, with the fleet, members and child processes of
// groups_helper_test.go.

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	// consumerSession is the coordinator's KIP-848 session timeout in these tests
	// (the client does not choose it).
	consumerSession = 2 * time.Second
	// consumerHeartbeat is the heartbeat interval the coordinator gives members.
	consumerHeartbeat = 200 * time.Millisecond
)

// consumerGroupArgs are groupArgs with a short KIP-848 session and heartbeat.
func consumerGroupArgs() []string {
	return groupArgs(
		"--group-consumer-session-timeout", consumerSession.String(),
		"--group-consumer-heartbeat-interval", consumerHeartbeat.String())
}

// consumerProtocol makes a franz-go group consumer use KIP-848.
var consumerProtocol = []kgo.Opt{kgo.Balancers(kgo.RangeBalancer()), kgo.ServerSideBalancer()}

// describeConsumerView is a KIP-848 group as kadm's DescribeConsumerGroups
// (ConsumerGroupDescribe) shows it, in the shape of a classic group's view: the
// protocol is the assignor, each member's topics its subscription and its partitions
// what it owns now.
func describeConsumerView(ctx context.Context, adm *kadm.Client, group, topic string) (groupView, kadm.DescribedConsumerGroup, error) {
	gs, err := adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		return groupView{}, kadm.DescribedConsumerGroup{}, err
	}
	g, ok := gs[group]
	switch {
	case !ok:
		return groupView{}, g, fmt.Errorf("ConsumerGroupDescribe answered nothing for group %s", group)
	case g.Err != nil:
		return groupView{}, g, fmt.Errorf("ConsumerGroupDescribe: %w", g.Err)
	}
	v := groupView{State: g.State, ProtocolType: "consumer", Protocol: g.AssignorName}
	for _, m := range g.Members {
		mv := memberView{ClientID: m.ClientID, MemberID: m.MemberID, Topics: m.SubscribedTopics}
		if m.InstanceID != nil {
			mv.InstanceID = *m.InstanceID
		}
		for p := range m.Assignment[topic] {
			mv.Parts = append(mv.Parts, p)
		}
		slices.Sort(mv.Parts)
		v.Members = append(v.Members, mv)
	}
	slices.SortFunc(v.Members, func(a, b memberView) int {
		if c := strings.Compare(a.ClientID, b.ClientID); c != 0 {
			return c
		}
		return strings.Compare(a.MemberID, b.MemberID)
	})
	return v, g, nil
}

// waitConsumerShares is waitShares for a KIP-848 group: it also wants every member
// a consumer-protocol member at the group's epoch.
func waitConsumerShares(t *testing.T, who string, adm *kadm.Client, f *groupFleet, group, topic string, clients, reporters []string, timeout time.Duration) groupView {
	t.Helper()
	var v groupView
	groupWaitFor(t, timeout, who+": group "+group+" settles on members "+strings.Join(clients, ", "), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var g kadm.DescribedConsumerGroup
		var err error
		if v, g, err = describeConsumerView(ctx, adm, group, topic); err != nil {
			return err
		}
		if err := v.checkShares(topic, groupPartitions, clients); err != nil {
			return err
		}
		for _, m := range g.Members {
			if m.MemberType != 1 || m.MemberEpoch != g.Epoch || g.AssignmentEpoch != g.Epoch {
				return fmt.Errorf("member %s (%s): type %d, epoch %d; group epoch %d, assignment epoch %d",
					m.ClientID, m.MemberID, m.MemberType, m.MemberEpoch, g.Epoch, g.AssignmentEpoch)
			}
		}
		for _, c := range reporters {
			m, _ := v.byClient(c)
			if own := f.ownedBy(c); !slices.Equal(own, m.Parts) {
				return fmt.Errorf("%s says it owns %v, ConsumerGroupDescribe shows %v", c, own, m.Parts)
			}
		}
		return nil
	})
	return v
}

// TestConsumerGroupShares runs three franz-go KIP-848 members on a six-partition
// topic: ConsumerGroupDescribe must show the group Stable with the range assignor
// and exactly the three, each subscribed to the topic and owning two partitions,
// disjoint and covering all six, as each member's callbacks report; each must then
// consume exactly its partitions, with no partition ever owned by two members at once
// and no change to the group meanwhile.
func TestConsumerGroupShares(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	const topic, group = "cg-shares", "cg-shares"
	const who = "consumer group " + group
	srv := startLocal(t, localOptions{Args: consumerGroupArgs()})
	createTopic(t, srv.Addr, topic, groupPartitions, nil)
	adm := newKadm(t, srv.Addr)
	f := newGroupFleet(t, true)
	names := groupMemberNames("cg-shares", 3)
	for _, n := range names {
		startFranzMember(t, f, srv.Addr, group, topic, n, consumerProtocol...)
	}
	v := waitConsumerShares(t, who, adm, f, group, topic, names, names, groupWait)
	if v.Protocol != "range" {
		t.Errorf("%s: assignor %q, want range (franz-go's range balancer asks for it)", who, v.Protocol)
	}
	for _, m := range v.Members {
		if len(m.Parts) != 2 {
			t.Errorf("%s: %s owns %v, want two of the six partitions", who, m.ClientID, m.Parts)
		}
	}
	checkConsumesShares(t, who, srv.Addr, f, topic, v)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	after, _, err := describeConsumerView(ctx, adm, group, topic)
	if err == nil {
		err = sameGroupAssignment(v, after)
	}
	if err != nil {
		t.Errorf("%s: while the members consumed: %v", who, err)
	}
	f.checkNoOverlap(t, who)
}

// TestConsumerGroupMemberCrash SIGKILLs one of three KIP-848 members (a franz-go
// consumer in a child process, so it sends no leave heartbeat): the coordinator must
// remove it when its session (--group-consumer-session-timeout 2s) runs out and give
// its partitions to the two survivors, which then consume them. Before the kill,
// heartbeats must keep all three sessions alive: the group does not change for twice
// the session timeout.
func TestConsumerGroupMemberCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	t.Parallel()
	const topic, group = "cg-crash", "cg-crash"
	const who = "consumer group " + group
	srv := startLocal(t, localOptions{Args: consumerGroupArgs()})
	createTopic(t, srv.Addr, topic, groupPartitions, nil)
	adm := newKadm(t, srv.Addr)
	f := newGroupFleet(t, false)
	startFranzMember(t, f, srv.Addr, group, topic, "cg-crash-0", consumerProtocol...)
	startFranzMember(t, f, srv.Addr, group, topic, "cg-crash-1", consumerProtocol...)
	child := startConsumerChild(t, f, childSpec{Addr: srv.Addr, Group: group, Topic: topic, ClientID: "cg-crash-child"})
	all := []string{"cg-crash-0", "cg-crash-1", "cg-crash-child"}
	v := waitConsumerShares(t, who, adm, f, group, topic, all, all, groupWait)

	groupHoldsFor(t, 2*consumerSession, who+": with every member heartbeating", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		now, _, err := describeConsumerView(ctx, adm, group, topic)
		if err == nil {
			err = sameGroupAssignment(v, now)
		}
		return err
	})

	killed, _ := v.byClient("cg-crash-child")
	start := time.Now()
	child.kill(t)
	survivors := all[:2]
	after := waitConsumerShares(t, who+", after SIGKILL of cg-crash-child", adm, f, group, topic, survivors, survivors, consumerSession+20*time.Second)
	t.Logf("%s: cg-crash-child's partitions %v moved to the survivors %v after its SIGKILL (session timeout %v)",
		who, killed.Parts, time.Since(start).Round(time.Millisecond), consumerSession)
	checkConsumesShares(t, who, srv.Addr, f, topic, after)
}

// consumerMemberEnv carries a childSpec, as JSON, to TestConsumerGroupMemberProcess
// in a child process.
const consumerMemberEnv = "STRATA_IT_CONSUMER_GROUP_MEMBER"

// TestConsumerGroupMemberProcess is not a test of its own: it is the body of a
// KIP-848 member that startConsumerChild runs in a child process, as
// TestGroupMemberProcess is for classic members. Without consumerMemberEnv it returns
// at once.
func TestConsumerGroupMemberProcess(t *testing.T) {
	runChildFromEnv(t, consumerMemberEnv, runConsumerChild)
}

// runConsumerChild is a franz-go KIP-848 member of spec.Group consuming spec.Topic
// from its start, reporting on stdout as runChildMember does ("assigned", "revoked",
// "lost", "processed"), until stdin reaches EOF; then it closes the client, which
// leaves the group. It commits nothing.
func runConsumerChild(spec childSpec, stdin io.Reader, stdout io.Writer) error {
	say := childReporter(stdout)
	ctx, cancel := childContext(stdin)
	defer cancel()
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(spec.Addr),
		kgo.ClientID(spec.ClientID),
		kgo.ConsumerGroup(spec.Group),
		kgo.ConsumeTopics(spec.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			say("assigned %s", joinPartitions(a[spec.Topic]))
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			say("revoked %s", joinPartitions(r[spec.Topic]))
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
			say("lost %s", joinPartitions(l[spec.Topic]))
		}),
	}, consumerProtocol...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachError(func(_ string, p int32, err error) { say("error partition %d: %v", p, err) })
		fs.EachRecord(func(r *kgo.Record) { say("processed %d %d", r.Partition, r.Offset) })
	}
	return nil
}

// startConsumerChild runs TestConsumerGroupMemberProcess in a child process with
// spec and feeds its reports to f under the name spec.ClientID, as startChildMember
// does for classic members. The child is stopped when the test ends.
func startConsumerChild(t *testing.T, f *groupFleet, spec childSpec) *childMember {
	t.Helper()
	return startChildProcess(t, f, spec, "TestConsumerGroupMemberProcess", consumerMemberEnv)
}
