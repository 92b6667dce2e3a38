package integration

// Helpers for the consumer-group tests in groups_test.go: a fleet that follows what
// the members of a group report, members on franz-go, sarama and kafka-go, members in
// child processes that a test can SIGKILL, and the group as DescribeGroups shows it.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stratalog/strata/internal/syncbuf"
)

const (
	// groupPartitions is the partition count of every group test topic.
	groupPartitions = 6
	// groupWait bounds waiting for a group to settle after a change.
	groupWait = 30 * time.Second
	// groupHeartbeat is the heartbeat interval of every member. Clients learn of a
	// rebalance from a heartbeat answer, so a short interval keeps the tests short.
	groupHeartbeat = 250 * time.Millisecond
)

// groupArgs are the coordinator flags of the group tests: a short initial rebalance
// delay, so a group forms in a tenth of a second instead of Kafka's three, and a
// one-second minimum session timeout, so members may ask for two-second sessions and a
// crashed member is noticed quickly.
func groupArgs(extra ...string) []string {
	return append([]string{"--group-initial-rebalance-delay", "100ms", "--group-min-session-timeout", "1s"}, extra...)
}

// --- the fleet: what the members of one group report ---

// groupFleet follows the members of one group as their clients report them: what each
// owns now (assigned minus revoked or lost), every record each received, the offsets
// each committed, and the errors each saw. With strict set it records an overlap when a
// partition is assigned to a member while another live member still owns it; only
// in-process members report in a reliable order, so fleets with child processes are
// not strict. Every event goes to a history that is logged if the test fails.
type groupFleet struct {
	strict bool
	start  time.Time

	mu        sync.Mutex
	owned     map[string]map[int32]bool
	gone      map[string]bool
	gen       map[string]int32 // generation at the member's last assignment, if it reports one
	revokes   map[string]int
	revoked   map[string][]int32 // every partition each member had revoked, in order
	losts     map[string]int
	received  map[int32]map[int64][]string // partition -> offset -> receivers, in order
	committed map[string]map[int32]int64   // member -> partition -> highest committed next offset
	errs      map[string][]error
	overlaps  []string
	history   []string
}

func newGroupFleet(t *testing.T, strict bool) *groupFleet {
	f := &groupFleet{
		strict: strict, start: time.Now(),
		owned: map[string]map[int32]bool{}, gone: map[string]bool{}, gen: map[string]int32{},
		revokes: map[string]int{}, revoked: map[string][]int32{}, losts: map[string]int{},
		received: map[int32]map[int64][]string{}, committed: map[string]map[int32]int64{},
		errs: map[string][]error{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			f.mu.Lock()
			defer f.mu.Unlock()
			t.Logf("group events (seconds since the fleet started):\n%s", strings.Join(f.history, "\n"))
		}
	})
	return f
}

// logf adds an event to the history; f.mu must be held.
func (f *groupFleet) logf(format string, args ...any) {
	f.history = append(f.history, fmt.Sprintf("%7.3f ", time.Since(f.start).Seconds())+fmt.Sprintf(format, args...))
}

func (f *groupFleet) assign(name string, ps []int32, gen int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logf("%s assigned %v (generation %d)", name, ps, gen)
	delete(f.gone, name) // a new client under the name of one that left (a static member's restart)
	if f.owned[name] == nil {
		f.owned[name] = map[int32]bool{}
	}
	for _, p := range ps {
		for other, set := range f.owned {
			if other != name && set[p] && !f.gone[other] && f.strict {
				f.overlaps = append(f.overlaps, fmt.Sprintf("partition %d assigned to %s while %s still owned it", p, name, other))
			}
		}
		f.owned[name][p] = true
	}
	f.gen[name] = gen
}

func (f *groupFleet) revoke(name string, ps []int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logf("%s revoked %v", name, ps)
	f.revokes[name]++
	f.revoked[name] = append(f.revoked[name], ps...)
	for _, p := range ps {
		delete(f.owned[name], p)
	}
}

func (f *groupFleet) lost(name string, ps []int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logf("%s lost %v", name, ps)
	f.losts[name]++
	for _, p := range ps {
		delete(f.owned[name], p)
	}
}

// leave marks a member that was closed or killed: it owns nothing any more.
func (f *groupFleet) leave(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logf("%s is gone", name)
	f.gone[name] = true
	f.owned[name] = nil
}

func (f *groupFleet) receive(name string, p int32, o int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.received[p] == nil {
		f.received[p] = map[int64][]string{}
	}
	f.received[p][o] = append(f.received[p][o], name)
}

func (f *groupFleet) commit(name string, p int32, next int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.committed[name] == nil {
		f.committed[name] = map[int32]int64{}
	}
	if next > f.committed[name][p] {
		f.committed[name][p] = next
	}
}

func (f *groupFleet) fail(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logf("%s error: %v", name, err)
	f.errs[name] = append(f.errs[name], err)
}

// ownedBy is what the member owns now, sorted.
func (f *groupFleet) ownedBy(name string) []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ps []int32
	for p := range f.owned[name] {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// receivedBy is every partition the member received a record from, sorted.
func (f *groupFleet) receivedBy(name string) []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ps []int32
	for p, offs := range f.received {
		for _, names := range offs {
			if slices.Contains(names, name) {
				ps = append(ps, p)
				break
			}
		}
	}
	slices.Sort(ps)
	return ps
}

func (f *groupFleet) receivedCount(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, offs := range f.received {
		for _, names := range offs {
			for _, r := range names {
				if r == name {
					n++
				}
			}
		}
	}
	return n
}

func (f *groupFleet) revokeCount(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.revokes[name]
}

// revokedList is every partition the member had revoked so far, in order.
func (f *groupFleet) revokedList(name string) []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.revoked[name])
}

func (f *groupFleet) lostCount(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.losts[name]
}

func (f *groupFleet) errorsOf(name string) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.errs[name])
}

// receivedAll is a copy of every record received: partition -> offset -> receivers.
func (f *groupFleet) receivedAll() map[int32]map[int64][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int32]map[int64][]string{}
	for p, offs := range f.received {
		out[p] = map[int64][]string{}
		for o, names := range offs {
			out[p][o] = slices.Clone(names)
		}
	}
	return out
}

// committedBy is the highest next offset the member reported committing, per
// partition.
func (f *groupFleet) committedBy(name string) map[int32]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int32]int64{}
	for p, o := range f.committed[name] {
		out[p] = o
	}
	return out
}

// checkNoOverlap fails the test if a partition was ever owned by two live members.
func (f *groupFleet) checkNoOverlap(t *testing.T, who string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.overlaps {
		t.Errorf("%s: %s", who, o)
	}
}

// --- the group as DescribeGroups shows it ---

// groupView is a group as kadm's DescribeGroups shows it, with each member's
// assignment of one topic.
type groupView struct {
	State, ProtocolType, Protocol string
	Members                       []memberView // sorted by client id, then member id
}

type memberView struct {
	ClientID, MemberID, InstanceID string
	Topics                         []string // from its JoinGroup metadata
	Parts                          []int32  // its assigned partitions of the topic, sorted
}

func describeGroupView(ctx context.Context, adm *kadm.Client, group, topic string) (groupView, error) {
	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return groupView{}, err
	}
	g, ok := gs[group]
	if !ok {
		return groupView{}, fmt.Errorf("DescribeGroups answered nothing for group %s", group)
	}
	if g.Err != nil {
		return groupView{}, fmt.Errorf("DescribeGroups: %w %s", g.Err, g.ErrMessage)
	}
	v := groupView{State: g.State, ProtocolType: g.ProtocolType, Protocol: g.Protocol}
	for _, m := range g.Members {
		mv := memberView{ClientID: m.ClientID, MemberID: m.MemberID}
		if m.InstanceID != nil {
			mv.InstanceID = *m.InstanceID
		}
		if md, ok := m.Join.AsConsumer(); ok {
			mv.Topics = md.Topics
		}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, at := range a.Topics {
				if at.Topic == topic {
					mv.Parts = append(mv.Parts, at.Partitions...)
				}
			}
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
	return v, nil
}

func (v groupView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, protocol %q/%q, members:", v.State, v.ProtocolType, v.Protocol)
	for _, m := range v.Members {
		fmt.Fprintf(&b, " [%s id=%s", m.ClientID, m.MemberID)
		if m.InstanceID != "" {
			fmt.Fprintf(&b, " instance=%s", m.InstanceID)
		}
		fmt.Fprintf(&b, " topics=%v partitions=%v]", m.Topics, m.Parts)
	}
	return b.String()
}

// byClient is the member with the client id; ok is false if there is not exactly one.
func (v groupView) byClient(clientID string) (memberView, bool) {
	var found []memberView
	for _, m := range v.Members {
		if m.ClientID == clientID {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		return memberView{}, false
	}
	return found[0], true
}

// byInstance is the member with the instance id; ok is false if there is not exactly
// one.
func (v groupView) byInstance(instanceID string) (memberView, bool) {
	var found []memberView
	for _, m := range v.Members {
		if m.InstanceID == instanceID {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		return memberView{}, false
	}
	return found[0], true
}

// checkShares returns nil if the group is Stable with exactly clients as its members
// (by client id), each member's JoinGroup metadata names topic, and their assignments
// of topic are disjoint, cover partitions 0..n-1 and differ in size by at most one
// (every assignor the tests use balances).
func (v groupView) checkShares(topic string, n int32, clients []string) error {
	if v.State != "Stable" {
		return fmt.Errorf("state %s, want Stable: %s", v.State, v)
	}
	if len(v.Members) != len(clients) {
		return fmt.Errorf("%d members, want %d (%v): %s", len(v.Members), len(clients), clients, v)
	}
	owner := map[int32]string{}
	minSize, maxSize := int(n), 0
	for _, c := range clients {
		m, ok := v.byClient(c)
		if !ok {
			return fmt.Errorf("no single member with client id %s: %s", c, v)
		}
		if !slices.Contains(m.Topics, topic) {
			return fmt.Errorf("member %s joined with metadata for topics %v, not %s: %s", c, m.Topics, topic, v)
		}
		for _, p := range m.Parts {
			if prev, dup := owner[p]; dup {
				return fmt.Errorf("partition %d assigned to both %s and %s: %s", p, prev, c, v)
			}
			if p < 0 || p >= n {
				return fmt.Errorf("member %s assigned partition %d of a %d-partition topic: %s", c, p, n, v)
			}
			owner[p] = c
		}
		minSize, maxSize = min(minSize, len(m.Parts)), max(maxSize, len(m.Parts))
	}
	if len(owner) != int(n) {
		return fmt.Errorf("assignments cover %d of %d partitions: %s", len(owner), n, v)
	}
	if maxSize-minSize > 1 {
		return fmt.Errorf("unbalanced assignment (sizes %d to %d): %s", minSize, maxSize, v)
	}
	return nil
}

// sameGroupAssignment returns nil if b has the same members (by member id) with the same
// partitions as a.
func sameGroupAssignment(a, b groupView) error {
	key := func(v groupView) string {
		var parts []string
		for _, m := range v.Members {
			parts = append(parts, fmt.Sprintf("%s=%v", m.MemberID, m.Parts))
		}
		slices.Sort(parts)
		return strings.Join(parts, " ")
	}
	if key(a) != key(b) {
		return fmt.Errorf("the group changed from %s to %s", a, b)
	}
	return nil
}

// groupWaitFor calls cond every 50ms until it returns nil; after timeout it fails the test
// with what and cond's last error.
func groupWaitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// groupHoldsFor checks cond every 100ms for d and fails the test at its first error. It is
// for properties that must stay true over a window (nothing rebalances), never for
// waiting until something happens.
func groupHoldsFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := cond(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitShares waits until checkShares holds for clients and every client in reporters
// says it owns what DescribeGroups shows it was assigned; it returns that view.
func waitShares(t *testing.T, who string, adm *kadm.Client, f *groupFleet, group, topic string, clients, reporters []string, timeout time.Duration) groupView {
	t.Helper()
	var v groupView
	groupWaitFor(t, timeout, who+": group "+group+" settles on members "+strings.Join(clients, ", "), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if v, err = describeGroupView(ctx, adm, group, topic); err != nil {
			return err
		}
		if err := v.checkShares(topic, groupPartitions, clients); err != nil {
			return err
		}
		for _, c := range reporters {
			m, _ := v.byClient(c)
			if own := f.ownedBy(c); !slices.Equal(own, m.Parts) {
				return fmt.Errorf("%s says it owns %v, DescribeGroups shows %v", c, own, m.Parts)
			}
		}
		return nil
	})
	return v
}

// checkConsumesShares produces one record to every partition and waits until each
// member of v has received records from exactly the partitions it is assigned:
// members must actually consume what the group gave them, and nothing else. No
// record may have been produced to the topic before.
func checkConsumesShares(t *testing.T, who, addr string, f *groupFleet, topic string, v groupView) {
	t.Helper()
	groupProduce(t, addr, topic, 0, 1)
	groupWaitFor(t, consumeTimeout, who+": every member consumes exactly its partitions", func() error {
		for _, m := range v.Members {
			if got := f.receivedBy(m.ClientID); !slices.Equal(got, m.Parts) {
				return fmt.Errorf("%s received records from partitions %v, it is assigned %v", m.ClientID, got, m.Parts)
			}
		}
		return nil
	})
}

// groupProduce produces n records to each partition of topic, the i-th of a partition
// with value "<topic>/p<partition>/<from+i>", and checks they land at offsets from,
// from+1, ...
func groupProduce(t *testing.T, addr, topic string, from, n int) {
	t.Helper()
	cl := franzClient(t, addr, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		for p := range int32(groupPartitions) {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(groupValue(topic, p, int64(i)))})
		}
	}
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			t.Fatalf("produce to %s partition %d: %v", topic, r.Record.Partition, r.Err)
		}
		if want := groupOffsetOf(r.Record.Value); r.Record.Offset != want {
			t.Fatalf("produce to %s partition %d: %q acknowledged at offset %d, want %d", topic, r.Record.Partition, r.Record.Value, r.Record.Offset, want)
		}
	}
}

func groupValue(topic string, p int32, o int64) string { return fmt.Sprintf("%s/p%d/%d", topic, p, o) }

func groupOffsetOf(value []byte) int64 {
	s := string(value)
	o, _ := strconv.ParseInt(s[strings.LastIndexByte(s, '/')+1:], 10, 64)
	return o
}

// --- members ---

// groupMember is one consumer in a group, on any client library. Its client id is its
// name, which is how DescribeGroups tells members apart for the tests.
type groupMember interface {
	Name() string
	// Close leaves the group the client's ordinary way (a LeaveGroup unless the member
	// is static) and stops consuming.
	Close()
}

// groupClient starts members on one client library.
type groupClient struct {
	name string
	// reports is whether the client tells what it was assigned (franz-go and sarama
	// through callbacks; kafka-go's Reader does not say).
	reports bool
	start   func(t *testing.T, f *groupFleet, addr, group, topic, name string, session time.Duration) groupMember
}

var groupClients = []groupClient{
	{"franz-go", true, func(t *testing.T, f *groupFleet, addr, group, topic, name string, session time.Duration) groupMember {
		return startFranzMember(t, f, addr, group, topic, name, kgo.SessionTimeout(session))
	}},
	{"sarama", true, func(t *testing.T, f *groupFleet, addr, group, topic, name string, session time.Duration) groupMember {
		return startSaramaMember(t, f, addr, group, topic, name, func(c *sarama.Config) { c.Consumer.Group.Session.Timeout = session })
	}},
	{"kafka-go", false, func(t *testing.T, f *groupFleet, addr, group, topic, name string, session time.Duration) groupMember {
		return startKafkaGoMember(t, f, addr, group, topic, name, session)
	}},
}

func groupMemberNames(prefix string, n int) []string {
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("%s-%d", prefix, i))
	}
	return names
}

// franzMember is a franz-go group consumer reporting to a fleet.
type franzMember struct {
	name   string
	cl     *kgo.Client
	f      *groupFleet
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startFranzMember starts a franz-go group consumer of topic from its start, with a
// short heartbeat; opts come last and override. It is closed when the test ends.
func startFranzMember(t *testing.T, f *groupFleet, addr, group, topic, name string, opts ...kgo.Opt) *franzMember {
	t.Helper()
	m := &franzMember{name: name, f: f, done: make(chan struct{})}
	base := []kgo.Opt{
		kgo.ClientID(name),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.HeartbeatInterval(groupHeartbeat),
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, a map[string][]int32) {
			_, gen := cl.GroupMetadata()
			f.assign(name, a[topic], gen)
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) { f.revoke(name, r[topic]) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) { f.lost(name, l[topic]) }),
	}
	m.cl = franzClient(t, addr, append(base, opts...)...)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		for {
			fs := m.cl.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			fs.EachError(func(_ string, _ int32, err error) { f.fail(name, err) })
			fs.EachRecord(func(r *kgo.Record) { f.receive(name, r.Partition, r.Offset) })
		}
	}()
	t.Cleanup(m.Close)
	return m
}

func (m *franzMember) Name() string { return m.name }

func (m *franzMember) Close() {
	m.once.Do(func() {
		m.cancel()
		<-m.done
		m.cl.Close()
		m.f.leave(m.name)
	})
}

// generation is the generation the client holds now.
func (m *franzMember) generation() int32 {
	_, gen := m.cl.GroupMetadata()
	return gen
}

func (m *franzMember) memberID() string {
	id, _ := m.cl.GroupMetadata()
	return id
}

// saramaMember is a sarama ConsumerGroup reporting to a fleet.
type saramaMember struct {
	name   string
	cg     sarama.ConsumerGroup
	f      *groupFleet
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startSaramaMember starts a sarama group consumer of topic from its start (range
// assignor unless configure says otherwise). It is closed when the test ends.
func startSaramaMember(t *testing.T, f *groupFleet, addr, group, topic, name string, configure ...func(*sarama.Config)) *saramaMember {
	t.Helper()
	cfg := saramaConfig(t, "none")
	cfg.ClientID = name
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Group.Heartbeat.Interval = groupHeartbeat
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	for _, c := range configure {
		c(cfg)
	}
	cg, err := sarama.NewConsumerGroup([]string{addr}, group, cfg)
	if err != nil {
		t.Fatalf("sarama: new consumer group %s: %v", name, err)
	}
	m := &saramaMember{name: name, cg: cg, f: f, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		for err := range cg.Errors() {
			f.fail(name, err)
		}
	}()
	go func() {
		defer close(m.done)
		h := saramaHandler{f: f, name: name, topic: topic}
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, h); err != nil {
				if errors.Is(err, sarama.ErrClosedConsumerGroup) {
					return
				}
				f.fail(name, err)
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}()
	t.Cleanup(m.Close)
	return m
}

func (m *saramaMember) Name() string { return m.name }

func (m *saramaMember) Close() {
	m.once.Do(func() {
		m.cancel()
		<-m.done
		m.cg.Close() // sends the LeaveGroup
		m.f.leave(m.name)
	})
}

// saramaHandler reports a sarama session's claims as its assignment: sarama is eager,
// claims are granted in Setup and all given up in Cleanup.
type saramaHandler struct {
	f           *groupFleet
	name, topic string
	// onMessage, if set, is called for every message after it is recorded.
	onMessage func(sarama.ConsumerGroupSession, *sarama.ConsumerMessage)
}

func (h saramaHandler) Setup(s sarama.ConsumerGroupSession) error {
	h.f.assign(h.name, s.Claims()[h.topic], s.GenerationID())
	return nil
}

func (h saramaHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	h.f.revoke(h.name, s.Claims()[h.topic])
	return nil
}

func (h saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return nil
			}
			h.f.receive(h.name, m.Partition, m.Offset)
			if h.onMessage != nil {
				h.onMessage(s, m)
			}
		case <-s.Context().Done():
			return nil
		}
	}
}

// kafkaGoMember is a kafka-go Reader with a GroupID reporting the records it fetches
// to a fleet. It commits nothing.
type kafkaGoMember struct {
	name   string
	r      *kafka.Reader
	f      *groupFleet
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func newKafkaGoGroupReader(t *testing.T, addr, group, topic, name string, session time.Duration) *kafka.Reader {
	logBuf := clientLog(t, "kafka-go "+name)
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers: []string{addr},
		GroupID: group,
		Topic:   topic,
		// The dialer carries the client id, which DescribeGroups reports per member.
		Dialer:            &kafka.Dialer{ClientID: name, Timeout: 10 * time.Second},
		HeartbeatInterval: groupHeartbeat,
		SessionTimeout:    session,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  250 * time.Millisecond,
		StartOffset:       kafka.FirstOffset,
		MaxWait:           250 * time.Millisecond,
		Logger:            kafkaGoLogger(logBuf, ""),
		ErrorLogger:       kafkaGoLogger(logBuf, "error: "),
	})
}

func startKafkaGoMember(t *testing.T, f *groupFleet, addr, group, topic, name string, session time.Duration) *kafkaGoMember {
	t.Helper()
	m := &kafkaGoMember{name: name, f: f, done: make(chan struct{}), r: newKafkaGoGroupReader(t, addr, group, topic, name, session)}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		for {
			msg, err := m.r.FetchMessage(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				f.fail(name, err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			f.receive(name, int32(msg.Partition), msg.Offset)
		}
	}()
	t.Cleanup(m.Close)
	return m
}

func (m *kafkaGoMember) Name() string { return m.name }

func (m *kafkaGoMember) Close() {
	m.once.Do(func() {
		m.cancel()
		<-m.done
		m.r.Close() // sends the LeaveGroup
		m.f.leave(m.name)
	})
}

// --- members in child processes ---

// groupMemberEnv carries a childSpec, as JSON, to TestGroupMemberProcess in a child
// process.
const groupMemberEnv = "STRATA_IT_GROUP_MEMBER"

// childSpec is what a member in a child process does: a franz-go group consumer
// (cooperative-sticky) of Topic from its start that reports on stdout, one line each,
// "group-member: assigned|revoked|lost <partitions>", "processed <p> <offset>" and,
// with Commit, "committed <p> <next offset>" after each synchronous commit.
type childSpec struct {
	Addr, Group, Topic, ClientID string
	InstanceID                   string
	SessionTimeout               time.Duration
	// RecordDelay is how long processing one record takes.
	RecordDelay time.Duration
	// Commit commits every polled batch after processing it, blocking rebalances
	// from poll to commit (BlockRebalanceOnPoll), so that a clean rebalance
	// re-delivers nothing.
	Commit bool
}

const childLinePrefix = "group-member: "

// TestGroupMemberProcess is not a test of its own: it is the body of a group member
// that other tests run in a child process (startChildMember re-executes the test
// binary with -test.run=^TestGroupMemberProcess$ and the member's spec in
// groupMemberEnv), so that they can SIGKILL it and it stops without a LeaveGroup, as a
// crashed consumer does. Without groupMemberEnv it returns at once. It does not call
// t.Skip: a skip would be reported on every ordinary run for something never meant to
// run there, and a passing no-op asserts nothing, so it hides no failure either.
func TestGroupMemberProcess(t *testing.T) { runChildFromEnv(t, groupMemberEnv, runChildMember) }

// runChildFromEnv runs a child member whose spec is in the environment variable env,
// if it is set (in a child process); otherwise it does nothing.
func runChildFromEnv(t *testing.T, env string, run func(childSpec, io.Reader, io.Writer) error) {
	raw := os.Getenv(env)
	if raw == "" {
		return
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	if err := run(spec, os.Stdin, os.Stdout); err != nil {
		t.Fatal(err)
	}
}

// childReporter is how a child member reports to its parent: a line each, safe
// for concurrent use.
func childReporter(stdout io.Writer) func(format string, args ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, childLinePrefix+format+"\n", args...)
	}
}

// childContext ends when stdin does (the parent closed it or died) or after
// childLifetime.
func childContext(stdin io.Reader) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), childLifetime)
	go func() {
		io.Copy(io.Discard, stdin)
		cancel()
	}()
	return ctx, cancel
}

// joinPartitions is partitions as a child reports them: "0,3,5".
func joinPartitions(ps []int32) string {
	var s []string
	for _, p := range ps {
		s = append(s, strconv.Itoa(int(p)))
	}
	return strings.Join(s, ",")
}

// childLifetime bounds a child member's life if its parent never stops it.
const childLifetime = 3 * time.Minute

// runChildMember consumes as spec says until stdin reaches EOF (the parent closed it
// or died), then closes the client, which leaves the group.
func runChildMember(spec childSpec, stdin io.Reader, stdout io.Writer) error {
	say := childReporter(stdout)
	ctx, cancel := childContext(stdin)
	defer cancel()
	opts := []kgo.Opt{
		kgo.SeedBrokers(spec.Addr),
		kgo.ClientID(spec.ClientID),
		kgo.ConsumerGroup(spec.Group),
		kgo.ConsumeTopics(spec.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(spec.SessionTimeout),
		kgo.HeartbeatInterval(groupHeartbeat),
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
	}
	if spec.Commit {
		opts = append(opts, kgo.BlockRebalanceOnPoll())
	}
	if spec.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(spec.InstanceID))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollRecords(ctx, 50)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			break
		}
		fs.EachError(func(_ string, p int32, err error) { say("error partition %d: %v", p, err) })
		recs := fs.Records()
		next := map[int32]int64{}
		for _, r := range recs {
			time.Sleep(spec.RecordDelay)
			say("processed %d %d", r.Partition, r.Offset)
			next[r.Partition] = r.Offset + 1
		}
		if spec.Commit && len(recs) > 0 {
			if err := cl.CommitRecords(ctx, recs...); err != nil {
				say("error commit: %v", err)
			} else {
				for p, o := range next {
					say("committed %d %d", p, o)
				}
			}
		}
		cl.AllowRebalance()
	}
	return nil
}

// childMember is a group member running in a child process.
type childMember struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *syncbuf.Buffer // the child's other output, for the failure report
	f      *groupFleet
	exited chan struct{}
	err    error
}

// startChildMember runs TestGroupMemberProcess in a child process with spec and
// feeds its reports to f under the name spec.ClientID. The child is stopped when the
// test ends.
func startChildMember(t *testing.T, f *groupFleet, spec childSpec) *childMember {
	t.Helper()
	return startChildProcess(t, f, spec, "TestGroupMemberProcess", groupMemberEnv)
}

// startChildProcess runs the test named run in a child process with spec in the
// environment variable env, and feeds its reports to f under spec.ClientID.
func startChildProcess(t *testing.T, f *groupFleet, spec childSpec, run, env string) *childMember {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := &childMember{name: spec.ClientID, out: &syncbuf.Buffer{}, f: f, exited: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^"+run+"$", "-test.timeout="+(childLifetime+time.Minute).String())
	c.cmd.Env = append(os.Environ(), env+"="+string(raw))
	c.cmd.Stderr = c.out
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start group member %s: %v", c.name, err)
	}
	go func() {
		c.read(stdout)
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			c.stdin.Close()
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				c.cmd.Process.Kill()
				<-c.exited
			}
		}
		if t.Failed() {
			t.Logf("group member %s (child process, %v) other output:\n%s", c.name, c.err, c.out.String())
		}
	})
	return c
}

// read turns the child's report lines into fleet events until EOF.
func (c *childMember) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, childLinePrefix)
		if !ok {
			fmt.Fprintln(c.out, line)
			continue
		}
		verb, args, _ := strings.Cut(rest, " ")
		switch verb {
		case "assigned", "revoked", "lost":
			var ps []int32
			for _, s := range strings.Split(args, ",") {
				if p, err := strconv.Atoi(s); err == nil {
					ps = append(ps, int32(p))
				}
			}
			switch verb {
			case "assigned":
				c.f.assign(c.name, ps, -1)
			case "revoked":
				c.f.revoke(c.name, ps)
			default:
				c.f.lost(c.name, ps)
			}
		case "processed", "committed":
			var p int32
			var o int64
			if _, err := fmt.Sscanf(args, "%d %d", &p, &o); err != nil {
				c.f.fail(c.name, fmt.Errorf("unreadable report %q", line))
				continue
			}
			if verb == "processed" {
				c.f.receive(c.name, p, o)
			} else {
				c.f.commit(c.name, p, o)
			}
		default:
			c.f.fail(c.name, errors.New(rest))
		}
	}
}

// kill SIGKILLs the child: it stops without a LeaveGroup or a last commit. Its reports
// up to then have all reached the fleet when kill returns.
func (c *childMember) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill group member %s: %v", c.name, err)
	}
	<-c.exited
	c.f.leave(c.name)
}

// stop closes the child's stdin, on which it closes its client (leaving the group)
// and exits; it must exit 0.
func (c *childMember) stop(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	select {
	case <-c.exited:
		if c.err != nil {
			t.Errorf("group member %s exited with %v, want 0", c.name, c.err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("group member %s did not exit within 20s of being told to stop", c.name)
	}
	c.f.leave(c.name)
}
