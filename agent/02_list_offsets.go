package agent

// ListOffsets (key 2), versions 0-10.
//
// Timestamps: -2 earliest (the log start offset), -1 latest (the high watermark, or
// with isolation level read_committed (v2+) the last stable offset), -3 the record with the
// largest timestamp (v7+), -4 earliest local (v8+, the same as earliest: all data is
// in object storage), >= 0 the first record whose timestamp is at or after it. The
// metastore names the index entry to search; the agent reads that chunk and finds
// the exact record. No record at or after a timestamp answers offset -1 and
// timestamp -1, as Kafka does. -5 (earliest pending upload, tiered storage) answers
// -1: nothing is ever pending. v0 answers OldStyleOffsets with one offset.
//
// Retention and DeleteRecords move the log start: earliest is the metastore's log
// start, and a timestamp search never answers an offset below it. Compacted chunks
// (absolute offsets, gaps) are searched like any other; an entry whose object GC
// collected since the metastore named it is searched once more from a fresh answer.

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

func serveListOffsets(c *conn, r *request) reply {
	req := r.msg.(*kmsg.ListOffsetsRequest)
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	s := c.s
	return later(func() kmsg.Response {
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			ti, terr := s.cat.topic(c.ctx, rt.Topic)
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.Timestamp, sp.Offset, sp.LeaderEpoch = -1, -1, 0
				var err error
				switch {
				case terr != nil:
					err = terr
				case ti == nil || rp.Partition < 0 || rp.Partition >= ti.partitions:
					err = errUnknownTopic
				case rp.CurrentLeaderEpoch > 0:
					sp.ErrorCode = kerr.UnknownLeaderEpoch.Code
				default:
					sp.Offset, sp.Timestamp, err = s.listOffset(c.ctx, partKey{ti.id, rp.Partition}, rp.Timestamp, req.Version >= 2 && req.IsolationLevel == 1)
				}
				if err != nil {
					sp.ErrorCode = kafkaCode(err)
					sp.Offset, sp.Timestamp = -1, -1
				}
				if req.Version == 0 && sp.ErrorCode == 0 && sp.Offset >= 0 {
					sp.OldStyleOffsets = []int64{sp.Offset}
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	})
}

// listOffset answers one partition's query: the offset and timestamp found.
func (s *Server) listOffset(ctx context.Context, k partKey, ts int64, committed bool) (int64, int64, error) {
	off, at, err := s.listOffsetOnce(ctx, k, ts, committed)
	if errors.Is(err, objstore.ErrNotExist) {
		// A chunk searched was compacted away and collected: ask again, without
		// the cached entries that may have led there.
		s.rd.forget(k)
		off, at, err = s.listOffsetOnce(ctx, k, ts, committed)
	}
	return off, at, err
}

func (s *Server) listOffsetOnce(ctx context.Context, k partKey, ts int64, committed bool) (int64, int64, error) {
	switch ts {
	case -4:
		ts = -2
	case -5:
		return -1, -1, nil
	}
	if ts < -3 {
		return -1, -1, errInvalidRequest
	}
	resp, err := s.meta.ListOffsets(ctx, &pb.ListOffsetsRequest{TopicId: k.topic[:], Partition: k.partition, Timestamp: ts})
	if err != nil {
		return -1, -1, err
	}
	if err := errOf(resp.Error); err != nil {
		return -1, -1, err
	}
	switch {
	case ts == -1 && committed && resp.Head != nil:
		return resp.Head.StableOffset(), -1, nil
	case ts == -1 || ts == -2:
		return resp.Offset, -1, nil
	case resp.Entry == nil || resp.Offset < 0:
		return resp.Offset, resp.Timestamp, nil
	}
	// Refine inside the chunk(s): the first record at or after ts, or for -3 the first
	// record carrying the maximum timestamp.
	want := ts
	if ts == -3 {
		want = resp.Timestamp
	}
	e := resp.Entry
	from := resp.Head.GetLogStartOffset()
	for range 64 { // a timestamp search never needs many chunks: each entry's max bounds it
		off, at, found, err := s.searchChunk(e, want, from)
		if err != nil || found {
			return off, at, err
		}
		entries, err := s.rd.entries(ctx, k, e.LastOffset+1, 1)
		if err != nil || len(entries) == 0 {
			return -1, -1, nil
		}
		e = entries[0]
	}
	return -1, -1, nil
}

// searchChunk finds the first record at or after offset from in an entry's chunk
// with timestamp >= want.
func (s *Server) searchChunk(e *pb.IndexEntry, want, from int64) (off, ts int64, found bool, err error) {
	if e.MaxTimestamp < want {
		return -1, -1, false, nil
	}
	data, err := s.rd.chunk(e)
	if err != nil {
		return -1, -1, false, err
	}
	var recs []objectlog.Record
	for b, err := range objectlog.Batches(data) {
		if err != nil {
			return -1, -1, false, err
		}
		if b.MaxTimestamp < want || b.BaseOffset+int64(b.LastOffsetDelta) < from {
			continue
		}
		if b.Attributes.LogAppendTime() {
			return max(b.BaseOffset, from), b.MaxTimestamp, true, nil
		}
		if recs, err = b.Records(recs[:0], maxDecompressed); err != nil {
			return -1, -1, false, err
		}
		for _, rec := range recs {
			off := b.BaseOffset + int64(rec.OffsetDelta)
			if t := b.BaseTimestamp + rec.TimestampDelta; t >= want && off >= from {
				return off, t, true, nil
			}
		}
	}
	return -1, -1, false, nil
}
