package state

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// The apply path reads every chunk's topic and partition head. Both change only
// through Apply, so the State keeps them cached for the apply goroutine: a txn reads
// its own writes first, then the cache, then Pebble; its writes reach the cache only
// after its batch commits. Cached messages are never modified: writers store new ones.
// Reads from other goroutines (Lookup, ...) never use the cache; they use snapshots.

type tpID struct {
	topic     [16]byte
	partition int32
}

func tp(topic []byte, partition int32) tpID {
	var k tpID
	copy(k.topic[:], topic)
	k.partition = partition
	return k
}

type applyCache struct {
	topics map[[16]byte]*pb.Topic
	heads  map[tpID]*pb.PartitionHead
}

func (c *applyCache) reset() {
	c.topics = make(map[[16]byte]*pb.Topic)
	c.heads = make(map[tpID]*pb.PartitionHead)
}

// txnCache is one batch's writes, and the topics it deleted.
type txnCache struct {
	topics  map[[16]byte]*pb.Topic
	heads   map[tpID]*pb.PartitionHead
	deleted map[[16]byte]bool
}

func (t *txn) getTopic(id []byte) (*pb.Topic, error) {
	if len(id) != 16 {
		return nil, nil
	}
	k := [16]byte(id)
	if t.c.deleted[k] {
		if topic, ok := t.c.topics[k]; ok { // recreated in this batch
			return topic, nil
		}
		return nil, nil
	}
	if topic, ok := t.c.topics[k]; ok {
		return topic, nil
	}
	if topic, ok := t.shared.topics[k]; ok {
		return topic, nil
	}
	var topic pb.Topic
	ok, err := t.getProto(topicKey(id), &topic)
	if err != nil || !ok {
		return nil, err
	}
	t.shared.topics[k] = &topic // committed state: nothing in this batch wrote it
	return &topic, nil
}

func (t *txn) putTopic(topic *pb.Topic) error {
	if err := t.setProto(topicKey(topic.TopicId), topic); err != nil {
		return err
	}
	t.c.topics[[16]byte(topic.TopicId)] = topic
	return nil
}

func (t *txn) getHead(id []byte, partition int32) (*pb.PartitionHead, error) {
	k := tp(id, partition)
	if h, ok := t.c.heads[k]; ok {
		return h, nil
	}
	if t.c.deleted[k.topic] {
		return nil, nil
	}
	if h, ok := t.shared.heads[k]; ok {
		return h, nil
	}
	var h pb.PartitionHead
	ok, err := t.getProto(headKey(id, partition), &h)
	if err != nil || !ok {
		return nil, err
	}
	t.shared.heads[k] = &h
	return &h, nil
}

// putHead records a partition's new head. It reaches the batch once, in flushHeads,
// however many commits of the batch moved it: under group commit one Raft entry
// carries many commits to the same partitions.
func (t *txn) putHead(id []byte, partition int32, h *pb.PartitionHead) error {
	t.c.heads[tp(id, partition)] = h
	return nil
}

// flushHeads writes every head the batch changed, in key order so the batch's
// contents never depend on map iteration.
func (t *txn) flushHeads() error {
	keys := make([]tpID, 0, len(t.c.heads))
	for k := range t.c.heads {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b tpID) int {
		if c := bytes.Compare(a.topic[:], b.topic[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.partition, b.partition)
	})
	for _, k := range keys {
		if err := t.setProto(headKey(k.topic[:], k.partition), t.c.heads[k]); err != nil {
			return err
		}
	}
	return nil
}

// markDeleted hides a topic's cached heads and record for the rest of the batch.
func (t *txn) markDeleted(id []byte) {
	k := [16]byte(id)
	t.c.deleted[k] = true
	delete(t.c.topics, k)
	for hk := range t.c.heads {
		if hk.topic == k {
			delete(t.c.heads, hk)
		}
	}
}

// publish moves a committed batch's writes into the shared cache.
func (c *applyCache) publish(tc *txnCache) {
	if len(tc.deleted) > 0 {
		for hk := range c.heads {
			if tc.deleted[hk.topic] {
				delete(c.heads, hk)
			}
		}
		for k := range tc.deleted {
			delete(c.topics, k)
		}
	}
	for k, v := range tc.topics {
		c.topics[k] = v
	}
	for k, v := range tc.heads {
		c.heads[k] = v
	}
}

func newTxnCache() *txnCache {
	return &txnCache{topics: map[[16]byte]*pb.Topic{}, heads: map[tpID]*pb.PartitionHead{}, deleted: map[[16]byte]bool{}}
}

// checkCache compares every cached record with Pebble, for tests.
func (s *State) checkCache() error {
	for k, topic := range s.cache.topics {
		var disk pb.Topic
		ok, err := getProto(s.db, topicKey(k[:]), &disk)
		if err != nil || !ok || !proto.Equal(&disk, topic) {
			return fmt.Errorf("cached topic %x differs from disk (on disk: %v, %v)", k, ok, err)
		}
	}
	for k, h := range s.cache.heads {
		var disk pb.PartitionHead
		ok, err := getProto(s.db, headKey(k.topic[:], k.partition), &disk)
		if err != nil || !ok || !proto.Equal(&disk, h) {
			return fmt.Errorf("cached head %x/%d differs from disk (on disk: %v, %v)", k.topic, k.partition, ok, err)
		}
	}
	return nil
}
