package agent

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stratalog/strata/metastore"
	"github.com/stratalog/strata/metastore/groups"
	"github.com/stratalog/strata/metastore/server"
	"github.com/stratalog/strata/objectlog/objstore"
)

// agentOption adjusts how startAgent builds its agent.
type agentOption func(*agentSetup)

type agentSetup struct {
	cfg    Config
	meta   func(Metastore) Metastore
	store  objstore.Store
	groups []func(*groups.Config)
}

// withStore runs the agent over store (a fault-injecting one, say) instead of a fresh
// memory store.
func withStore(store objstore.Store) agentOption { return func(a *agentSetup) { a.store = store } }

// withConfig adjusts the agent's config before it starts.
func withConfig(f func(*Config)) agentOption { return func(a *agentSetup) { f(&a.cfg) } }

// withMetastore wraps the metastore the agent talks to (fault and call-shaping
// decorators).
func withMetastore(wrap func(Metastore) Metastore) agentOption {
	return func(a *agentSetup) { a.meta = wrap }
}

// withGroups adjusts the embedded metastore's group coordinator (no initial
// rebalance delay, say).
func withGroups(f func(*groups.Config)) agentOption {
	return func(a *agentSetup) { a.groups = append(a.groups, f) }
}

// startAgent runs a real agent on 127.0.0.1 over an embedded single-node metastore
// and an in-memory object store, all stopped when the test ends.
func startAgent(t testing.TB, opts ...agentOption) *Server {
	t.Helper()
	setup := agentSetup{cfg: DefaultConfig(), store: objstore.NewMemory()}
	setup.cfg.KafkaAddr = "127.0.0.1:0"
	setup.cfg.Linger = 5 * time.Millisecond
	for _, o := range opts {
		o(&setup)
	}
	mcfg := server.EmbeddedConfig(t.TempDir(), "127.0.0.1:0")
	for _, f := range setup.groups {
		f(&mcfg.Groups)
	}
	node, err := server.Start(mcfg)
	if err != nil {
		t.Fatalf("start metastore: %v", err)
	}
	t.Cleanup(func() { node.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := metastore.Dial(ctx, []string{node.APIAddr()}, metastore.Options{})
	if err != nil {
		t.Fatalf("dial metastore: %v", err)
	}
	t.Cleanup(func() { client.Close() })

	var meta Metastore = client
	if setup.meta != nil {
		meta = setup.meta(client)
	}
	return runAgent(t, setup.cfg, meta, setup.store)
}

// runAgent starts an agent over meta and store, closed when the test ends (before
// its metastore: cleanups run last-in first-out).
func runAgent(t testing.TB, cfg Config, meta Metastore, store objstore.Store) *Server {
	t.Helper()
	s, err := New(cfg, meta, store)
	if err != nil {
		t.Fatalf("new agent: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := s.Close(cctx); err != nil {
			t.Errorf("close agent: %v", err)
		}
	})
	return s
}

// kafkaClient is a franz-go client of s, closed when the test ends.
func kafkaClient(t testing.TB, s *Server, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(s.AdvertiseAddr())}, opts...)...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// adminClient is a kadm client of s over its own connection.
func adminClient(t testing.TB, s *Server, opts ...kgo.Opt) *kadm.Client {
	t.Helper()
	return kadm.NewClient(kafkaClient(t, s, opts...))
}

// testContext is a context that ends with the test or after a minute.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
