package agent

import (
	"container/list"
	"math/rand/v2"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Incremental fetch sessions (KIP-227). A session remembers the partitions a client
// fetches and what it was last told about each, so later requests name only what
// changed and responses carry only partitions with news (records, an error, or a
// moved watermark or log start). Sessions live in this agent's memory; a client that
// reconnects elsewhere gets FETCH_SESSION_ID_NOT_FOUND and starts a new one.

// sessKey names a partition in a session: by topic name before Fetch v13, by id after.
type sessKey struct {
	topic     string
	topicID   [16]byte
	partition int32
}

type sessPart struct {
	key         sessKey
	fetchOffset int64
	maxBytes    int32
	// What the last response said; sent is false until one did.
	sent               bool
	hwm, lso, logStart int64
}

type fetchSession struct {
	mu    sync.Mutex // one fetch at a time per session
	id    int32
	epoch int32 // the epoch the next request must carry
	parts []*sessPart
	index map[sessKey]*sessPart
	el    *list.Element
}

type fetchSessions struct {
	mu   sync.Mutex
	max  int
	byID map[int32]*fetchSession
	lru  *list.List // front: most recently used
}

func newFetchSessions(max int) *fetchSessions {
	return &fetchSessions{max: max, byID: map[int32]*fetchSession{}, lru: list.New()}
}

// begin resolves a request's session: the partitions to fetch, whether the answer
// is full (every partition) or incremental, and the session (nil: sessionless), which
// the caller holds locked until it calls done. A non-zero code refuses the request.
func (fs *fetchSessions) begin(req *kmsg.FetchRequest) (sess *fetchSession, parts []*sessPart, full bool, code int16) {
	fromRequest := func() []*sessPart {
		var out []*sessPart
		for _, t := range req.Topics {
			for _, p := range t.Partitions {
				out = append(out, &sessPart{key: keyFor(req.Version, t.Topic, t.TopicID, p.Partition), fetchOffset: p.FetchOffset, maxBytes: p.PartitionMaxBytes})
			}
		}
		return out
	}
	if req.Version < 7 {
		return nil, fromRequest(), true, 0
	}
	switch {
	case req.SessionEpoch == -1: // sessionless; closes the named session if any
		fs.remove(req.SessionID)
		return nil, fromRequest(), true, 0
	case req.SessionEpoch == 0: // a new session (closing the named one)
		fs.remove(req.SessionID)
		parts = fromRequest()
		sess = fs.create(parts)
		if sess != nil {
			sess.mu.Lock()
		}
		return sess, parts, true, 0
	}
	fs.mu.Lock()
	sess = fs.byID[req.SessionID]
	if sess != nil {
		fs.lru.MoveToFront(sess.el)
	}
	fs.mu.Unlock()
	if sess == nil {
		return nil, nil, false, kerr.FetchSessionIDNotFound.Code
	}
	sess.mu.Lock()
	if sess.epoch != req.SessionEpoch {
		sess.mu.Unlock()
		return nil, nil, false, kerr.InvalidFetchSessionEpoch.Code
	}
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			k := keyFor(req.Version, t.Topic, t.TopicID, p.Partition)
			sp := sess.index[k]
			if sp == nil {
				sp = &sessPart{key: k}
				sess.index[k] = sp
				sess.parts = append(sess.parts, sp)
			}
			sp.fetchOffset, sp.maxBytes = p.FetchOffset, p.PartitionMaxBytes
		}
	}
	for _, t := range req.ForgottenTopics {
		for _, p := range t.Partitions {
			k := keyFor(req.Version, t.Topic, t.TopicID, p)
			if sp := sess.index[k]; sp != nil {
				delete(sess.index, k)
				for i, x := range sess.parts {
					if x == sp {
						sess.parts = append(sess.parts[:i], sess.parts[i+1:]...)
						break
					}
				}
			}
		}
	}
	return sess, sess.parts, false, 0
}

// done advances a session past a response and unlocks it.
func (fs *fetchSessions) done(sess *fetchSession) {
	if sess == nil {
		return
	}
	sess.epoch++
	if sess.epoch < 0 {
		sess.epoch = 1
	}
	sess.mu.Unlock()
}

func keyFor(version int16, topic string, id [16]byte, partition int32) sessKey {
	if version >= 13 {
		return sessKey{topicID: id, partition: partition}
	}
	return sessKey{topic: topic, partition: partition}
}

func (fs *fetchSessions) create(parts []*sessPart) *fetchSession {
	if fs.max == 0 {
		return nil
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for fs.lru.Len() >= fs.max {
		old := fs.lru.Remove(fs.lru.Back()).(*fetchSession)
		delete(fs.byID, old.id)
	}
	id := int32(rand.Uint32() >> 1)
	for id == 0 || fs.byID[id] != nil {
		id = int32(rand.Uint32() >> 1)
	}
	sess := &fetchSession{id: id, epoch: 0, parts: parts, index: make(map[sessKey]*sessPart, len(parts))}
	for _, p := range parts {
		sess.index[p.key] = p
	}
	sess.el = fs.lru.PushFront(sess)
	fs.byID[id] = sess
	return sess
}

func (fs *fetchSessions) remove(id int32) {
	if id == 0 {
		return
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if sess := fs.byID[id]; sess != nil {
		fs.lru.Remove(sess.el)
		delete(fs.byID, id)
	}
}
