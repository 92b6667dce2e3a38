package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog/objstore"
)

// Server is one agent: a Kafka listener over a metastore and an object store.
type Server struct {
	cfg   Config
	meta  Metastore
	store objstore.Store
	log   *slog.Logger

	cat      *catalog
	w        *writer
	rd       *reader
	sessions *fetchSessions
	stats    stats

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	ln     net.Listener
	wg     sync.WaitGroup // accept loop, connections, background loops

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// New returns an agent that is not yet listening; Start starts it.
func New(cfg Config, meta Metastore, store objstore.Store) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:   cfg,
		meta:  meta,
		store: store,
		log:   cfg.Logger,
		conns: map[net.Conn]struct{}{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cat = newCatalog(meta, cfg.MessageMaxBytes)
	s.rd = newReader(s)
	s.w = newWriter(s)
	s.sessions = newFetchSessions(cfg.FetchSessions)
	return s, nil
}

// Start listens on KafkaAddr, registers the agent, loads the catalog and starts
// serving. A KafkaAddr with port 0 picks a free port; Addr tells which.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.KafkaAddr)
	if err != nil {
		return fmt.Errorf("agent: listen: %w", err)
	}
	if _, port, _ := net.SplitHostPort(s.cfg.AdvertiseAddr); port == "0" {
		host, _, _ := net.SplitHostPort(s.cfg.AdvertiseAddr)
		_, realPort, _ := net.SplitHostPort(ln.Addr().String())
		if s.cfg.AgentID == s.cfg.AdvertiseAddr {
			s.cfg.AgentID = net.JoinHostPort(host, realPort)
			s.cfg.NodeID = NodeIDOf(s.cfg.AgentID)
		}
		s.cfg.AdvertiseAddr = net.JoinHostPort(host, realPort)
	}
	s.ln = ln
	if err := s.register(ctx); err != nil {
		ln.Close()
		return err
	}
	if err := s.cat.reload(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("agent: load topics: %w", err)
	}
	s.w.start()
	s.goLoop(s.leaseLoop)
	s.goLoop(s.watchLoop)
	s.goLoop(s.acceptLoop)
	s.log.Info("agent: serving Kafka", "listen", ln.Addr().String(), "advertise", s.cfg.AdvertiseAddr,
		"agent_id", s.cfg.AgentID, "node_id", s.cfg.NodeID, "zone", s.cfg.Zone)
	return nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AdvertiseAddr is the address clients are told to use.
func (s *Server) AdvertiseAddr() string { return s.cfg.AdvertiseAddr }

// NodeID is the Kafka broker id of this agent.
func (s *Server) NodeID() int32 { return s.cfg.NodeID }

func (s *Server) goLoop(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *Server) acceptLoop() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("agent: accept", "err", err)
			select {
			case <-time.After(50 * time.Millisecond):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		s.mu.Lock()
		s.conns[nc] = struct{}{}
		s.mu.Unlock()
		s.goLoop(func() {
			s.serveConn(nc)
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
		})
	}
}

func (s *Server) agentInfo() *pb.AgentInfo {
	return &pb.AgentInfo{
		AgentId: s.cfg.AgentID,
		Address: s.cfg.AdvertiseAddr,
		Zone:    s.cfg.Zone,
		LeaseMs: s.cfg.LeaseTTL.Milliseconds(),
	}
}

func (s *Server) register(ctx context.Context) error {
	resp, err := s.meta.RegisterAgent(ctx, &pb.RegisterAgentRequest{Agent: s.agentInfo()})
	if err != nil {
		return fmt.Errorf("agent: register: %w", err)
	}
	s.cat.mu.Lock()
	s.cat.agents[resp.Agent.AgentId] = resp.Agent
	s.cat.mu.Unlock()
	return nil
}

// leaseLoop renews the registration every third of its lease and re-reads the agents.
func (s *Server) leaseLoop() {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LeaseTTL/3)
		if err := s.register(ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("agent: lease renewal", "err", err)
		}
		// The watch keeps the agent list fresh; re-reading it each lease period bounds
		// how stale Metadata's brokers can be should an event ever go missing.
		if resp, err := s.meta.ListAgents(ctx, &pb.ListAgentsRequest{}); err == nil {
			s.cat.setAgents(resp.Agents)
			s.log.Debug("agent: agents re-read", "count", len(resp.Agents))
		} else if s.ctx.Err() == nil {
			s.log.Debug("agent: list agents", "err", err)
		}
		cancel()
	}
}

// watchLoop follows the metastore: topic and agent changes into the catalog, new
// index entries into the reader (which wakes long-poll fetches).
func (s *Server) watchLoop() {
	for ev := range s.meta.Watch(s.ctx, &pb.WatchRequest{Metadata: true}) {
		if ev.Resync {
			ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
			if err := s.cat.reload(ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("agent: reload after watch resync", "err", err)
			}
			cancel()
			s.rd.resync()
		}
		s.cat.apply(ev)
		s.rd.apply(ev)
	}
}

// Close stops the agent gracefully: no new connections, the open segment is sealed
// and every segment in flight finishes (or fails) so waiting producers get answers,
// then connections close and the agent deregisters. ctx bounds the wait.
func (s *Server) Close(ctx context.Context) error {
	if s.ln == nil {
		s.cancel()
		return nil
	}
	s.ln.Close()
	flushErr := s.w.close(ctx)
	// Stop reading; each connection's writer sends the answers it holds, then closes.
	s.mu.Lock()
	for nc := range s.conns {
		nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	s.cancel() // long polls end early, with what they have
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for nc := range s.conns {
			nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, derr := s.meta.DeregisterAgent(dctx, &pb.DeregisterAgentRequest{AgentId: s.cfg.AgentID})
	if derr != nil && !errors.Is(derr, metastore.ErrUnknownAgent) {
		derr = fmt.Errorf("agent: deregister: %w", derr)
	} else {
		derr = nil
	}
	return errors.Join(flushErr, derr)
}
