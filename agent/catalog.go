package agent

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// topicInfo is one topic as the agent caches it, with the configs the produce and
// fetch paths act on already parsed. Immutable: a change replaces the whole value.
type topicInfo struct {
	id         objectlog.TopicID
	name       string
	partitions int32
	pb         *pb.Topic

	maxMessageBytes int32
	// codec is the topic's compression.type; keep means "producer" (store as sent).
	codec objectlog.Codec
	keep  bool
	// logAppendTime: message.timestamp.type=LogAppendTime, batches are stamped with
	// the agent's clock as they are accepted.
	logAppendTime bool
}

// compactOnly reports cleanup.policy=compact without delete.
func (ti *topicInfo) compactOnly() bool {
	compact, del := false, false
	for _, p := range strings.Split(ti.pb.GetConfigs()["cleanup.policy"], ",") {
		switch strings.TrimSpace(p) {
		case "compact":
			compact = true
		case "delete":
			del = true
		}
	}
	return compact && !del
}

func newTopicInfo(t *pb.Topic, brokerMaxMessage int32) *topicInfo {
	ti := &topicInfo{name: t.Name, partitions: t.Partitions, pb: t, maxMessageBytes: brokerMaxMessage, keep: true}
	copy(ti.id[:], t.TopicId)
	if v, ok := t.Configs["max.message.bytes"]; ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32); err == nil {
			ti.maxMessageBytes = int32(n)
		}
	}
	ti.logAppendTime = strings.EqualFold(strings.TrimSpace(t.Configs["message.timestamp.type"]), "LogAppendTime")
	switch strings.ToLower(strings.TrimSpace(t.Configs["compression.type"])) {
	case "", "producer":
	case "uncompressed":
		ti.keep, ti.codec = false, objectlog.CodecNone
	default:
		if c, err := objectlog.ParseCodec(strings.ToLower(t.Configs["compression.type"])); err == nil {
			ti.keep, ti.codec = false, c
		}
	}
	return ti
}

// catalog caches topics and live agents. The metastore's watch keeps it fresh; a
// miss asks the metastore before declaring a topic unknown, so a topic created
// through another agent is visible here before the watch delivers it.
type catalog struct {
	meta       Metastore
	maxMessage int32

	mu     sync.RWMutex
	byName map[string]*topicInfo
	byID   map[objectlog.TopicID]*topicInfo
	agents map[string]*pb.AgentInfo
	// deleted remembers ids of deleted topics (never reused), so a watch event about
	// one that arrives after this agent learned of the deletion cannot bring it back.
	deleted map[objectlog.TopicID]struct{}
}

// maxTombstones bounds the deleted-topic memory; past it the oldest knowledge is
// dropped wholesale (a stale event then lives until the next watch event about it).
const maxTombstones = 100_000

func newCatalog(meta Metastore, maxMessage int32) *catalog {
	return &catalog{
		meta:       meta,
		maxMessage: maxMessage,
		byName:     map[string]*topicInfo{},
		byID:       map[objectlog.TopicID]*topicInfo{},
		agents:     map[string]*pb.AgentInfo{},
		deleted:    map[objectlog.TopicID]struct{}{},
	}
}

// reload re-reads every topic and agent (at start and on a watch resync).
func (c *catalog) reload(ctx context.Context) error {
	topics, err := c.meta.DescribeTopics(ctx, &pb.DescribeTopicsRequest{})
	if err != nil {
		return err
	}
	agents, err := c.meta.ListAgents(ctx, &pb.ListAgentsRequest{})
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.byName)
	clear(c.byID)
	for _, r := range topics.Results {
		if r.Topic != nil && r.Error == pb.ErrorCode_NONE {
			c.putLocked(r.Topic)
		}
	}
	c.setAgentsLocked(agents.Agents)
	return nil
}

// setAgents replaces the agent list with a fresh read.
func (c *catalog) setAgents(agents []*pb.AgentInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setAgentsLocked(agents)
}

func (c *catalog) setAgentsLocked(agents []*pb.AgentInfo) {
	clear(c.agents)
	for _, a := range agents {
		c.agents[a.AgentId] = a
	}
}

// putLocked caches t unless it is known to be stale: a deleted id, or an older topic
// than the one cached under its name (watch events may trail the agent's own
// creates). It returns what the cache holds for the name afterwards.
func (c *catalog) putLocked(t *pb.Topic) *topicInfo {
	ti := newTopicInfo(t, c.maxMessage)
	if _, gone := c.deleted[ti.id]; gone {
		return nil
	}
	if old, ok := c.byName[ti.name]; ok && old.id != ti.id {
		if old.pb.CreatedMs > t.CreatedMs {
			return old
		}
		delete(c.byID, old.id)
	}
	if old, ok := c.byID[ti.id]; ok && old.name != ti.name {
		delete(c.byName, old.name)
	}
	c.byName[ti.name] = ti
	c.byID[ti.id] = ti
	return ti
}

// put caches a topic the agent just learned of (a create or alter it made).
func (c *catalog) put(t *pb.Topic) *topicInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.putLocked(t)
}

func (c *catalog) drop(id objectlog.TopicID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(id)
}

func (c *catalog) dropLocked(id objectlog.TopicID) {
	if len(c.deleted) >= maxTombstones {
		clear(c.deleted)
	}
	c.deleted[id] = struct{}{}
	if ti, ok := c.byID[id]; ok {
		delete(c.byID, id)
		if c.byName[ti.name] == ti {
			delete(c.byName, ti.name)
		}
	}
}

// apply folds a watch event's metadata changes in.
func (c *catalog) apply(ev *pb.WatchEvent) {
	if len(ev.TopicsChanged) == 0 && len(ev.TopicsDeleted) == 0 && len(ev.AgentsChanged) == 0 && len(ev.AgentsRemoved) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range ev.TopicsChanged {
		c.putLocked(t)
	}
	for _, id := range ev.TopicsDeleted {
		var tid objectlog.TopicID
		copy(tid[:], id)
		c.dropLocked(tid)
	}
	for _, a := range ev.AgentsChanged {
		c.agents[a.AgentId] = a
	}
	for _, id := range ev.AgentsRemoved {
		delete(c.agents, id)
	}
}

// cached returns a topic by name from the cache only.
func (c *catalog) cached(name string) *topicInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byName[name]
}

// cachedID returns a topic by id from the cache only.
func (c *catalog) cachedID(id objectlog.TopicID) *topicInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byID[id]
}

// topic returns a topic by name, asking the metastore on a miss. nil, nil: no such
// topic.
func (c *catalog) topic(ctx context.Context, name string) (*topicInfo, error) {
	if ti := c.cached(name); ti != nil {
		return ti, nil
	}
	return c.fetch(ctx, &pb.TopicRef{Name: name})
}

// topicID returns a topic by id, asking the metastore on a miss.
func (c *catalog) topicID(ctx context.Context, id objectlog.TopicID) (*topicInfo, error) {
	if ti := c.cachedID(id); ti != nil {
		return ti, nil
	}
	return c.fetch(ctx, &pb.TopicRef{TopicId: id[:]})
}

func (c *catalog) fetch(ctx context.Context, ref *pb.TopicRef) (*topicInfo, error) {
	resp, err := c.meta.DescribeTopics(ctx, &pb.DescribeTopicsRequest{Topics: []*pb.TopicRef{ref}})
	if err != nil {
		return nil, err
	}
	for _, r := range resp.Results {
		if r.Error == pb.ErrorCode_NONE && r.Topic != nil {
			return c.put(r.Topic), nil
		}
	}
	return nil, nil
}

// topics returns every cached topic sorted by name.
func (c *catalog) topics() []*topicInfo {
	c.mu.RLock()
	out := make([]*topicInfo, 0, len(c.byName))
	for _, ti := range c.byName {
		out = append(out, ti)
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b *topicInfo) int { return strings.Compare(a.name, b.name) })
	return out
}

// liveAgents returns the registered agents sorted by id.
func (c *catalog) liveAgents() []*pb.AgentInfo {
	c.mu.RLock()
	out := make([]*pb.AgentInfo, 0, len(c.agents))
	for _, a := range c.agents {
		out = append(out, a)
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b *pb.AgentInfo) int { return strings.Compare(a.AgentId, b.AgentId) })
	return out
}
