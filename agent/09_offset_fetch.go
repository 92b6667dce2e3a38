package agent

// OffsetFetch (key 9), versions 0-9 (v8+ several groups per request).
//
// Reads a group's committed offsets from the metastore (linearizably, so a commit
// acknowledged through any agent is seen). Null topics (v2+) list every partition the
// group has an offset for; a requested partition without one answers offset -1 and
// no error, as Kafka does; a topic deleted since the commit is left out of "all".
// RequireStable (v7+): a partition with offsets pending in an open transaction
// answers UNSTABLE_OFFSET_COMMIT (retriable; offset -1) until the transaction ends,
// so a new owner does not resume from an offset about to change (KIP-447). The
// KIP-848 member id and epoch (v9) are not checked yet.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
)

// fetchedTopic is one topic's answer for a group, in the shape both response
// layouts (single group before v8, groups after) are filled from.
type fetchedTopic struct {
	name  string
	parts []fetchedPartition
}

type fetchedPartition struct {
	partition   int32
	offset      int64
	leaderEpoch int32
	metadata    *string
	code        int16
}

func serveOffsetFetch(c *conn, r *request) reply {
	req := r.msg.(*kmsg.OffsetFetchRequest)
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	s := c.s
	return later(func() kmsg.Response {
		if req.Version < 8 {
			var topics map[string][]int32
			if req.Topics != nil || req.Version < 2 {
				topics = map[string][]int32{}
				for _, t := range req.Topics {
					topics[t.Topic] = append(topics[t.Topic], t.Partitions...)
				}
			}
			fts, code := s.groupOffsets(c.ctx, req.Group, topics, topicOrder(req.Topics), req.Version >= 7 && req.RequireStable)
			resp.ErrorCode = code
			for _, ft := range fts {
				rt := kmsg.NewOffsetFetchResponseTopic()
				rt.Topic = ft.name
				for _, fp := range ft.parts {
					rp := kmsg.NewOffsetFetchResponseTopicPartition()
					rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata, rp.ErrorCode = fp.partition, fp.offset, fp.leaderEpoch, fp.metadata, fp.code
					if req.Version < 2 && code != 0 {
						rp.ErrorCode = code // no group-level error field before v2
					}
					rt.Partitions = append(rt.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rt)
			}
			return resp
		}
		for _, g := range req.Groups {
			var topics map[string][]int32
			var order []string
			if g.Topics != nil {
				topics = map[string][]int32{}
				for _, t := range g.Topics {
					if _, seen := topics[t.Topic]; !seen {
						order = append(order, t.Topic)
					}
					topics[t.Topic] = append(topics[t.Topic], t.Partitions...)
				}
			}
			fts, code := s.groupOffsets(c.ctx, g.Group, topics, order, req.RequireStable)
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, code
			for _, ft := range fts {
				rt := kmsg.NewOffsetFetchResponseGroupTopic()
				rt.Topic = ft.name
				for _, fp := range ft.parts {
					rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
					rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata, rp.ErrorCode = fp.partition, fp.offset, fp.leaderEpoch, fp.metadata, fp.code
					rt.Partitions = append(rt.Partitions, rp)
				}
				rg.Topics = append(rg.Topics, rt)
			}
			resp.Groups = append(resp.Groups, rg)
		}
		return resp
	})
}

func topicOrder(ts []kmsg.OffsetFetchRequestTopic) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range ts {
		if !seen[t.Topic] {
			seen[t.Topic] = true
			out = append(out, t.Topic)
		}
	}
	return out
}

// groupOffsets reads a group's offsets: for the topics and partitions asked (in
// order), or all of them when topics is nil. The code is a group-level error.
func (s *Server) groupOffsets(ctx context.Context, group string, topics map[string][]int32, order []string, requireStable bool) ([]fetchedTopic, int16) {
	if group == "" {
		return nil, kerr.InvalidGroupID.Code
	}
	req := &pb.FetchOffsetsRequest{Group: group, RequireStable: requireStable}
	infos := map[string]*topicInfo{}
	for _, name := range order {
		ti, err := s.cat.topic(ctx, name)
		if err != nil {
			return nil, kafkaCode(err)
		}
		infos[name] = ti
		if ti == nil {
			continue
		}
		for _, p := range topics[name] {
			req.Partitions = append(req.Partitions, &pb.PartitionRef{TopicId: ti.id[:], Partition: p})
		}
	}
	if topics != nil && len(req.Partitions) == 0 {
		// Nothing known to look up: every partition answers "no offset".
		return unknownOffsets(topics, order), 0
	}
	mresp, err := s.meta.FetchOffsets(ctx, req)
	if err != nil {
		return nil, kafkaCode(err)
	}
	type pk struct {
		id objectlog.TopicID
		p  int32
	}
	got := map[pk]*pb.CommittedOffset{}
	for _, o := range mresp.Offsets {
		var id objectlog.TopicID
		copy(id[:], o.TopicId)
		got[pk{id, o.Partition}] = o
	}
	unstable := map[pk]bool{}
	for _, u := range mresp.Unstable {
		var id objectlog.TopicID
		copy(id[:], u.TopicId)
		unstable[pk{id, u.Partition}] = true
	}
	fetchedOf := func(id objectlog.TopicID, o *pb.CommittedOffset) fetchedPartition {
		if unstable[pk{id, o.Partition}] {
			return fetchedPartition{partition: o.Partition, offset: -1, leaderEpoch: -1, metadata: new(string), code: kerr.UnstableOffsetCommit.Code}
		}
		return fetched(o)
	}
	if topics == nil {
		// Everything the group has, grouped by topic, topics known to the catalog.
		at := map[string]int{} // topic name -> index in out
		var out []fetchedTopic
		for _, o := range mresp.Offsets {
			var id objectlog.TopicID
			copy(id[:], o.TopicId)
			ti, _ := s.cat.topicID(ctx, id)
			if ti == nil {
				continue
			}
			i, ok := at[ti.name]
			if !ok {
				i = len(out)
				at[ti.name] = i
				out = append(out, fetchedTopic{name: ti.name})
			}
			out[i].parts = append(out[i].parts, fetchedOf(id, o))
		}
		return out, 0
	}
	out := unknownOffsets(topics, order)
	for i := range out {
		ti := infos[out[i].name]
		if ti == nil {
			continue
		}
		for j := range out[i].parts {
			p := out[i].parts[j].partition
			if o := got[pk{ti.id, p}]; o != nil {
				out[i].parts[j] = fetchedOf(ti.id, o)
			} else if unstable[pk{ti.id, p}] {
				out[i].parts[j] = fetchedOf(ti.id, &pb.CommittedOffset{Partition: p})
			}
		}
	}
	return out, 0
}

// unknownOffsets answers every asked partition with "no offset" (-1, no error; Kafka
// does not check that the topic exists either).
func unknownOffsets(topics map[string][]int32, order []string) []fetchedTopic {
	var out []fetchedTopic
	for _, name := range order {
		ft := fetchedTopic{name: name}
		for _, p := range topics[name] {
			ft.parts = append(ft.parts, fetchedPartition{partition: p, offset: -1, leaderEpoch: -1, metadata: new(string)})
		}
		out = append(out, ft)
	}
	return out
}

func fetched(o *pb.CommittedOffset) fetchedPartition {
	md := o.Metadata
	return fetchedPartition{partition: o.Partition, offset: o.Offset, leaderEpoch: o.LeaderEpoch, metadata: &md}
}
