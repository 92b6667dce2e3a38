package server

import (
	"errors"
	"sync"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// hub fans the state's watch events out to subscribers. publish runs on the apply
// goroutine and never blocks: each subscriber has a bounded queue, and one that
// falls behind loses its queue and gets a single Resync event instead. Events are
// shared read-only between subscribers.
type hub struct {
	buffer int

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

var errHubClosed = errors.New("metastore server: node stopping")

func newHub(buffer int) *hub {
	return &hub{buffer: buffer, subs: map[*subscriber]struct{}{}}
}

type partKey struct {
	topic     string
	partition int32
}

type subscriber struct {
	parts    map[partKey]bool // nil: every partition
	metadata bool
	buffer   int

	wake chan struct{} // capacity 1: something to take
	done chan struct{} // closed when the hub closes

	mu        sync.Mutex
	queue     []*pb.WatchEvent
	overflow  bool   // queue dropped; send a Resync at lastIndex
	lastIndex uint64 // applied index of the last event dropped
}

func (h *hub) subscribe(req *pb.WatchRequest) (*subscriber, error) {
	s := &subscriber{
		metadata: req.Metadata,
		buffer:   h.buffer,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if len(req.Partitions) > 0 {
		s.parts = make(map[partKey]bool, len(req.Partitions))
		for _, p := range req.Partitions {
			s.parts[partKey{string(p.TopicId), p.Partition}] = true
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errHubClosed
	}
	h.subs[s] = struct{}{}
	return s, nil
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
}

// publish is the state's notifier.
func (h *hub) publish(ev *pb.WatchEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.offer(ev)
	}
}

// close ends every subscription; later subscribes fail.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for s := range h.subs {
		close(s.done)
	}
	clear(h.subs)
}

// offer queues ev; filtering is left to the subscriber's own goroutine (take's
// caller), so the apply goroutine pays O(1) per subscriber.
func (s *subscriber) offer(ev *pb.WatchEvent) {
	s.mu.Lock()
	switch {
	case s.overflow:
		s.lastIndex = ev.AppliedIndex
	case len(s.queue) >= s.buffer:
		s.queue = nil
		s.overflow = true
		s.lastIndex = ev.AppliedIndex
	default:
		s.queue = append(s.queue, ev)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// filter keeps what the subscriber asked for; nil when nothing is left. The event
// is shared read-only between subscribers.
func (s *subscriber) filter(ev *pb.WatchEvent) *pb.WatchEvent {
	if ev.Resync || (s.parts == nil && s.metadata) {
		return ev
	}
	out := &pb.WatchEvent{AppliedIndex: ev.AppliedIndex}
	if s.parts == nil {
		out.Entries, out.Changes = ev.Entries, ev.Changes
	} else {
		for _, e := range ev.Entries {
			if s.parts[partKey{string(e.TopicId), e.Partition}] {
				out.Entries = append(out.Entries, e)
			}
		}
		for _, c := range ev.Changes {
			if s.parts[partKey{string(c.TopicId), c.Partition}] {
				out.Changes = append(out.Changes, c)
			}
		}
	}
	if s.metadata {
		out.TopicsChanged = ev.TopicsChanged
		out.TopicsDeleted = ev.TopicsDeleted
		out.AgentsChanged = ev.AgentsChanged
		out.AgentsRemoved = ev.AgentsRemoved
	}
	if len(out.Entries) == 0 && len(out.Changes) == 0 && len(out.TopicsChanged) == 0 && len(out.TopicsDeleted) == 0 &&
		len(out.AgentsChanged) == 0 && len(out.AgentsRemoved) == 0 {
		return nil
	}
	return out
}

// take returns what is queued (unfiltered), or (nil, true, index) after an overflow.
func (s *subscriber) take() (events []*pb.WatchEvent, resync bool, index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overflow {
		s.overflow = false
		return nil, true, s.lastIndex
	}
	events, s.queue = s.queue, nil
	return events, false, 0
}
