package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stratalog/strata/metastore/groups"
)

// benchGroup is a group of franz-go consumers whose owned partitions are tracked
// through the rebalance callbacks.
type benchGroup struct {
	b        testing.TB
	s        *Server
	balancer func() kgo.GroupBalancer
	hb       time.Duration

	mu      sync.Mutex
	owned   map[string]map[int32]bool
	clients map[string]*kgo.Client
	next    int
}

func (g *benchGroup) add() {
	g.mu.Lock()
	name := fmt.Sprintf("m%d", g.next)
	g.next++
	g.owned[name] = map[int32]bool{}
	g.mu.Unlock()
	update := func(add bool) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			g.mu.Lock()
			defer g.mu.Unlock()
			for _, p := range m["t"] {
				if add {
					g.owned[name][p] = true
				} else {
					delete(g.owned[name], p)
				}
			}
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(g.s.AdvertiseAddr()), kgo.ClientID(name), kgo.ConsumerGroup("g"),
		kgo.ConsumeTopics("t"), kgo.Balancers(g.balancer()), kgo.HeartbeatInterval(g.hb),
		kgo.OnPartitionsAssigned(update(true)), kgo.OnPartitionsRevoked(update(false)), kgo.OnPartitionsLost(update(false)))
	if err != nil {
		g.b.Fatal(err)
	}
	g.mu.Lock()
	g.clients[name] = cl
	g.mu.Unlock()
	go func() {
		for {
			fs := cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
		}
	}()
}

// removeOne closes (LeaveGroup) the oldest member.
func (g *benchGroup) removeOne() {
	g.mu.Lock()
	names := make([]string, 0, len(g.clients))
	for n := range g.clients {
		names = append(names, n)
	}
	slices.Sort(names)
	cl := g.clients[names[0]]
	delete(g.clients, names[0])
	delete(g.owned, names[0])
	g.mu.Unlock()
	cl.Close()
}

// settled reports whether the live members own all partitions, each exactly once,
// and every member owns some.
func (g *benchGroup) settled(partitions int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[int32]bool{}
	for _, ps := range g.owned {
		if len(ps) == 0 {
			return false
		}
		for p := range ps {
			if seen[p] {
				return false
			}
			seen[p] = true
		}
	}
	return len(seen) == partitions
}

func (g *benchGroup) waitSettled(partitions int) time.Duration {
	start := time.Now()
	for !g.settled(partitions) {
		if time.Since(start) > time.Minute {
			g.b.Fatal("the group did not settle in a minute")
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// BenchmarkRebalance measures how long a group of 10 franz-go consumers on a
// 30-partition topic takes, after one member leaves (LeaveGroup on Close), until the
// other 9 own every partition again: the coordinator's join and sync phases plus the
// clients' heartbeat interval (which is when they learn of the rebalance), with the
// eager range and the cooperative-sticky assignors, at franz-go's default 3 s
// heartbeat and at 500 ms. Reports the mean, p50 and max.
func BenchmarkRebalance(b *testing.B) {
	balancers := []struct {
		name string
		new  func() kgo.GroupBalancer
	}{
		{"range", kgo.RangeBalancer},
		{"cooperative-sticky", kgo.CooperativeStickyBalancer},
	}
	for _, bal := range balancers {
		for _, hb := range []time.Duration{3 * time.Second, 500 * time.Millisecond} {
			b.Run(fmt.Sprintf("members=10/%s/heartbeat=%v", bal.name, hb), func(b *testing.B) {
				s := startAgent(b, withGroups(func(c *groups.Config) { c.InitialRebalanceDelay = 0 }))
				const partitions = 30
				createTopic(b, s, "t", partitions, nil)
				g := &benchGroup{b: b, s: s, balancer: bal.new, hb: hb, owned: map[string]map[int32]bool{}, clients: map[string]*kgo.Client{}}
				defer func() {
					for _, cl := range g.clients {
						cl.Close()
					}
				}()
				for range 10 {
					g.add()
				}
				g.waitSettled(partitions)
				var times []time.Duration
				b.ResetTimer()
				for range b.N {
					g.removeOne()
					times = append(times, g.waitSettled(partitions))
					b.StopTimer()
					g.add()
					g.waitSettled(partitions)
					b.StartTimer()
				}
				b.StopTimer()
				slices.Sort(times)
				var sum time.Duration
				for _, d := range times {
					sum += d
				}
				b.ReportMetric(float64(sum.Milliseconds())/float64(len(times)), "ms/rebalance")
				b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "p50-ms")
				b.ReportMetric(float64(times[len(times)-1].Milliseconds()), "max-ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
