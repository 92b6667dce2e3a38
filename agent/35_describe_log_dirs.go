package agent

// DescribeLogDirs (key 35), versions 0-4.
//
// Every agent reports one log dir, "object-storage", holding every partition: all
// data is in the bucket, none on the agent. A partition's Size is the sum of its
// index entries' chunk lengths (the bytes its offsets occupy in storage, including
// data retention has not yet removed), read from the metastore; OffsetLag is 0 and
// IsFuture false, since there are no replicas to catch up. Null topics means every
// topic; unknown topics and partitions are left out, as Kafka does. v4 reports the
// dir's TotalBytes and UsableBytes as -1: object storage has no fixed size.
//
// Deviation: summing is bounded. A partition with more than maxSizeEntries index
// entries reports the size of its first maxSizeEntries (compaction keeps counts far
// lower). If the metastore cannot be read, the dir carries its error code and no
// topics, rather than sizes that are wrong.

import (
	"context"
	"errors"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

const (
	logDirName = "object-storage"
	// maxSizeEntries bounds the index entries summed for one partition's size.
	maxSizeEntries = 100_000
	sizePage       = 5_000
	sizeWorkers    = 8
)

func serveDescribeLogDirs(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DescribeLogDirsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeLogDirsResponse)
	s := c.s
	return later(func() kmsg.Response {
		dir := kmsg.NewDescribeLogDirsResponseDir()
		dir.Dir = logDirName
		dir.TotalBytes, dir.UsableBytes = -1, -1

		type want struct {
			ti    *topicInfo
			parts []int32
		}
		var wants []want
		if req.Topics == nil {
			for _, ti := range s.cat.topics() {
				wants = append(wants, want{ti: ti})
			}
		}
		for _, rt := range req.Topics {
			ti, err := s.cat.topic(c.ctx, rt.Topic)
			if err != nil {
				return logDirsError(resp, dir, err)
			}
			if ti != nil {
				wants = append(wants, want{ti, rt.Partitions})
			}
		}

		g, ctx := errgroup.WithContext(c.ctx)
		g.SetLimit(sizeWorkers)
		for _, w := range wants {
			parts := w.parts
			if parts == nil && req.Topics == nil {
				for p := range w.ti.partitions {
					parts = append(parts, p)
				}
			}
			st := kmsg.NewDescribeLogDirsResponseDirTopic()
			st.Topic = w.ti.name
			seen := map[int32]bool{}
			for _, p := range parts {
				if p < 0 || p >= w.ti.partitions || seen[p] {
					continue
				}
				seen[p] = true
				sp := kmsg.NewDescribeLogDirsResponseDirTopicPartition()
				sp.Partition = p
				st.Partitions = append(st.Partitions, sp)
			}
			if len(st.Partitions) > 0 {
				dir.Topics = append(dir.Topics, st)
			}
		}
		for ti := range dir.Topics {
			st := &dir.Topics[ti]
			id := s.cat.cached(st.Topic)
			for pi := range st.Partitions {
				sp := &st.Partitions[pi]
				if id == nil {
					continue // deleted meanwhile: size 0
				}
				k := partKey{id.id, sp.Partition}
				g.Go(func() error {
					n, err := s.partitionSize(ctx, k)
					sp.Size = n
					return err
				})
			}
		}
		if err := g.Wait(); err != nil {
			return logDirsError(resp, dir, err)
		}
		resp.Dirs = append(resp.Dirs, dir)
		return resp
	})
}

func logDirsError(resp *kmsg.DescribeLogDirsResponse, dir kmsg.DescribeLogDirsResponseDir, err error) kmsg.Response {
	dir.ErrorCode, dir.Topics = kafkaCode(err), nil
	resp.ErrorCode = dir.ErrorCode
	resp.Dirs = append(resp.Dirs, dir)
	return resp
}

// partitionSize sums a partition's index entry lengths from its log start, a page
// at a time, up to maxSizeEntries entries. A partition that disappears (its topic
// deleted) has size 0.
func (s *Server) partitionSize(ctx context.Context, k partKey) (int64, error) {
	_, _, next, err := s.rd.head(ctx, k, true)
	if err != nil {
		if errors.Is(err, metastore.ErrUnknownTopic) {
			return 0, nil
		}
		return 0, err
	}
	var size int64
	for seen := 0; seen < maxSizeEntries; {
		resp, err := s.meta.Lookup(ctx, &pb.LookupRequest{TopicId: k.topic[:], Partition: k.partition, Offset: next, MaxEntries: int32(min(sizePage, maxSizeEntries-seen))})
		if err != nil {
			return 0, err
		}
		switch resp.Error {
		case pb.ErrorCode_NONE:
		case pb.ErrorCode_UNKNOWN_TOPIC_OR_PARTITION:
			return 0, nil
		case pb.ErrorCode_OFFSET_OUT_OF_RANGE:
			// Retention moved the log start past next: go on from the new start.
			if h := resp.Head; h != nil && h.LogStartOffset > next {
				next = h.LogStartOffset
				continue
			}
			return size, nil
		default:
			return 0, errOf(resp.Error)
		}
		entries := slices.DeleteFunc(resp.Entries, func(e *pb.IndexEntry) bool { return e.LastOffset < next })
		if len(entries) == 0 {
			return size, nil
		}
		for _, e := range entries {
			size += e.Length
		}
		seen += len(entries)
		next = entries[len(entries)-1].LastOffset + 1
	}
	return size, nil
}
