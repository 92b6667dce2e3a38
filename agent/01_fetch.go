package agent

// Fetch (key 1), versions 4-17 (v13+ name topics by id).
//
// Long poll: a fetch with less than MinBytes available waits up to MaxWaitMs and is
// woken by the metastore's watch (or this agent's own commits), never by a timer.
// MaxBytes and each partition's PartitionMaxBytes are honoured, except that the first
// batch of the first partition with data is returned whole even when larger (KIP-74),
// so a consumer can always make progress. Batches wholly below the fetch offset are
// trimmed; base offsets are patched from the index.
//
// Incremental fetch sessions (KIP-227) are kept per agent (fetchsession.go). Both
// isolation levels are served: read_uncommitted reads to the high watermark;
// read_committed stops at the last stable offset (below which no transaction is
// open) and, when what it returns holds transactional batches, lists the aborted
// transactions of that range (asked of the metastore's aborted-transaction index),
// so the client drops their records. Transaction markers are index entries without
// bytes in storage; their control batches are built as they are served.
// OFFSET_OUT_OF_RANGE is returned for an offset below the log start or above the
// high watermark; an agent that has not yet heard of a log start move learns it from
// the metastore's refusal of the Lookup (only entries it still caches can be served
// below the new log start, until the watch brings the move).
//
// Compacted data: index entries a compaction wrote point into objects whose batches
// carry absolute offsets, with gaps where key compaction dropped records. A fetch at
// an offset in a gap returns the batches after it, as Kafka does for compacted
// topics; a consumer follows the base offsets it gets. An entry's object may have
// been collected after a compaction or retention this agent has not heard of yet:
// the read then forgets the partition's cached entries and asks the index once more.
// Deviations: no preferred read replica (KIP-392) is named; every
// agent serves every partition; the leader epoch is always 0.

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/objectlog"
	"github.com/stratalog/strata/objectlog/objstore"
)

// entriesPerRead is how many index entries one partition's read looks ahead.
const entriesPerRead = 16

func serveFetch(c *conn, r *request) reply {
	req := r.msg.(*kmsg.FetchRequest)
	s := c.s
	sess, parts, full, code := s.sessions.begin(req)
	resp := req.ResponseKind().(*kmsg.FetchResponse)
	if code != 0 {
		resp.ErrorCode = code
		return now(resp)
	}
	if sess != nil {
		resp.SessionID = sess.id
	}
	return later(func() kmsg.Response {
		defer s.sessions.done(sess)
		s.fetch(c.ctx, req, resp, sess, parts, full)
		return resp
	})
}

// partResult is one partition's answer in the making.
type partResult struct {
	sp       *sessPart
	code     int16
	hwm      int64
	lso      int64
	logStart int64
	records  []byte
	aborted  []*pb.AbortedTxn
	// committed: a read_committed fetch (aborted transactions are listed).
	committed bool
}

func (s *Server) fetch(ctx context.Context, req *kmsg.FetchRequest, resp *kmsg.FetchResponse, sess *fetchSession, parts []*sessPart, full bool) {
	deadline := time.Now().Add(time.Duration(max(req.MaxWaitMillis, 0)) * time.Millisecond)
	maxBytes := int(req.MaxBytes)
	if req.Version < 3 || maxBytes <= 0 {
		maxBytes = int(^uint32(0) >> 1)
	}
	var results []partResult
	for {
		wake := s.rd.changed()
		results = s.readParts(ctx, req, parts, maxBytes)
		got, failed := 0, false
		for _, pr := range results {
			got += len(pr.records)
			failed = failed || pr.code != 0
		}
		if got >= int(req.MinBytes) || got > 0 && req.MinBytes <= 0 || failed || !time.Now().Before(deadline) {
			break
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
			t.Stop()
			continue
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		// One last read at the deadline, so data that arrived with it is not missed.
		results = s.readParts(ctx, req, parts, maxBytes)
		break
	}
	s.fillFetch(req, resp, results, full)
	s.stats.fetched(results)
	rotate(sess, results)
}

// readParts reads every partition once, within the byte limits.
func (s *Server) readParts(ctx context.Context, req *kmsg.FetchRequest, parts []*sessPart, maxBytes int) []partResult {
	results := make([]partResult, len(parts))
	total := 0
	committed := req.Version >= 4 && req.IsolationLevel == 1
	for i, sp := range parts {
		pr := s.readPart(ctx, req.Version, committed, sp, maxBytes-total, total == 0)
		total += len(pr.records)
		results[i] = pr
	}
	return results
}

// readPart reads one partition from its fetch offset (to the high watermark, or for
// read_committed the last stable offset): at most limit bytes (and the partition's
// own max), but at least one whole batch when first is set.
func (s *Server) readPart(ctx context.Context, version int16, committed bool, sp *sessPart, limit int, first bool) partResult {
	pr := partResult{sp: sp, hwm: -1, lso: -1, logStart: -1, committed: committed}
	pr.code, pr.hwm, pr.lso, pr.logStart, pr.records = s.readRange(ctx, version, committed, sp, limit, first)
	if !committed || pr.code != 0 || len(pr.records) == 0 {
		return pr
	}
	// Aborted transactions matter only where transactional batches were returned.
	from, end, txnData := int64(-1), int64(-1), false
	for data := pr.records; len(data) > 0; {
		h, err := objectlog.ParseBatchHeader(data)
		if err != nil {
			break
		}
		if from < 0 {
			from = h.BaseOffset
		}
		end = h.BaseOffset + int64(h.LastOffsetDelta) + 1
		txnData = txnData || h.Attributes.Transactional() && !h.Attributes.Control()
		data = data[h.Size():]
	}
	if !txnData {
		return pr
	}
	k, ok := s.partKeyOf(ctx, version, sp)
	if !ok {
		// The topic went away since the read: without its aborted list, no data.
		pr.code, pr.records = kerr.UnknownTopicOrPartition.Code, nil
		return pr
	}
	// Not below the log start: the metastore refuses that, and a transaction whose
	// marker is below it has all its data below it too.
	aborted, err := s.rd.aborted(ctx, k, max(min(sp.fetchOffset, from), pr.logStart), end)
	if err != nil {
		// Without the list the client could keep aborted records: answer no data.
		pr.code, pr.records, pr.aborted = fetchCode(err), nil, nil
		return pr
	}
	pr.aborted = aborted
	return pr
}

// fetchCode is a fetch partition's error code: kafkaCode's, except that a timeout
// becomes NOT_LEADER_OR_FOLLOWER, which consumers retry after refreshing metadata
// (the Java consumer has no case for REQUEST_TIMED_OUT in a fetch partition).
func fetchCode(err error) int16 {
	if code := kafkaCode(err); code != kerr.RequestTimedOut.Code {
		return code
	}
	return kerr.NotLeaderForPartition.Code
}

// partKeyOf resolves a session partition to its topic id.
func (s *Server) partKeyOf(ctx context.Context, version int16, sp *sessPart) (partKey, bool) {
	var ti *topicInfo
	var err error
	if version >= 13 {
		ti, err = s.cat.topicID(ctx, objectlog.TopicID(sp.key.topicID))
	} else {
		ti, err = s.cat.topic(ctx, sp.key.topic)
	}
	if err != nil || ti == nil {
		return partKey{}, false
	}
	return partKey{ti.id, sp.key.partition}, true
}

// readRange reads the records of one partition for readPart.
func (s *Server) readRange(ctx context.Context, version int16, committed bool, sp *sessPart, limit int, first bool) (code int16, hwm, lso, logStart int64, records []byte) {
	var ti *topicInfo
	var err error
	if version >= 13 {
		ti, err = s.cat.topicID(ctx, objectlog.TopicID(sp.key.topicID))
	} else {
		ti, err = s.cat.topic(ctx, sp.key.topic)
	}
	switch {
	case err != nil:
		return fetchCode(err), -1, -1, -1, nil
	case ti == nil && version >= 13:
		return kerr.UnknownTopicID.Code, -1, -1, -1, nil
	case ti == nil || sp.key.partition < 0 || sp.key.partition >= ti.partitions:
		return kerr.UnknownTopicOrPartition.Code, -1, -1, -1, nil
	}
	k := partKey{ti.id, sp.key.partition}
	off := sp.fetchOffset
	hwm, lso, logStart, err = s.rd.head(ctx, k, false)
	if err == nil && off > hwm {
		// The cached watermark may trail the metastore's: ask before refusing.
		hwm, lso, logStart, err = s.rd.head(ctx, k, true)
	}
	if err != nil {
		return fetchCode(err), -1, -1, -1, nil
	}
	if off < logStart || off > hwm {
		return kerr.OffsetOutOfRange.Code, hwm, lso, logStart, nil
	}
	upto := hwm
	if committed {
		upto = lso
	}
	limit = min(limit, int(sp.maxBytes))
	if sp.maxBytes <= 0 {
		limit = 0
	}
	reread := false // the index was read again after an object was found gone
read:
	for off < upto && ctx.Err() == nil {
		entries, err := s.rd.entries(ctx, k, off, entriesPerRead)
		if err != nil {
			if len(records) > 0 {
				break
			}
			if errors.Is(err, metastore.ErrOffsetOutOfRange) {
				// The log start moved past off (retention, DeleteRecords) before the
				// watch told this agent; entries learnt the new head: report it.
				if h, l, ls, herr := s.rd.head(ctx, k, false); herr == nil {
					hwm, lso, logStart = h, l, ls
				}
				return kerr.OffsetOutOfRange.Code, hwm, lso, logStart, nil
			}
			return fetchCode(err), hwm, lso, logStart, nil
		}
		if len(entries) == 0 {
			break
		}
		for _, e := range entries {
			data, err := s.rd.chunk(e)
			if err != nil && errors.Is(err, objstore.ErrNotExist) && !reread {
				// Compaction or retention replaced the entry and GC collected its
				// object: the cached entries are stale. Read the index once more.
				reread = true
				s.rd.forget(k)
				continue read
			}
			if err != nil {
				if len(records) > 0 {
					return 0, hwm, lso, logStart, records
				}
				s.log.Warn("agent: fetch read failed", "topic", ti.name, "partition", k.partition, "offset", off, "err", err)
				return fetchCode(err), hwm, lso, logStart, nil
			}
			for len(data) > 0 {
				h, err := objectlog.ParseBatchHeader(data)
				if err != nil {
					return kerr.CorruptMessage.Code, hwm, lso, logStart, nil
				}
				n := h.Size()
				if h.BaseOffset >= upto {
					return 0, hwm, lso, logStart, records // never past the watermark (or stable offset) the answer reports
				}
				last := h.BaseOffset + int64(h.LastOffsetDelta)
				if last >= off {
					if len(records)+n > limit && !(first && len(records) == 0) {
						return 0, hwm, lso, logStart, records
					}
					records = append(records, data[:n]...)
					off = last + 1
				}
				data = data[n:]
			}
			// An absolute chunk may end in a gap: its offsets are done with too.
			off = max(off, e.LastOffset+1)
		}
	}
	return 0, hwm, lso, logStart, records
}

// fillFetch writes the results into the response: every partition for a full
// answer, only those with news for an incremental one; then the session remembers
// what was said.
func (s *Server) fillFetch(req *kmsg.FetchRequest, resp *kmsg.FetchResponse, results []partResult, full bool) {
	byTopic := map[sessKey]int{} // topic (partition zeroed) -> index in resp.Topics
	for _, pr := range results {
		sp := pr.sp
		lso := pr.lso
		changed := !sp.sent || pr.hwm != sp.hwm || pr.logStart != sp.logStart || lso != sp.lso
		if !full && len(pr.records) == 0 && pr.code == 0 && !changed {
			continue
		}
		tk := sp.key
		tk.partition = 0
		ti, ok := byTopic[tk]
		if !ok {
			t := kmsg.NewFetchResponseTopic()
			t.Topic, t.TopicID = sp.key.topic, sp.key.topicID
			resp.Topics = append(resp.Topics, t)
			ti = len(resp.Topics) - 1
			byTopic[tk] = ti
		}
		p := kmsg.NewFetchResponseTopicPartition()
		p.Partition = sp.key.partition
		p.ErrorCode = pr.code
		p.HighWatermark, p.LastStableOffset, p.LogStartOffset = pr.hwm, lso, pr.logStart
		p.PreferredReadReplica = -1
		p.RecordBatches = pr.records
		if pr.committed {
			p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{}
			for _, a := range pr.aborted {
				at := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
				at.ProducerID, at.FirstOffset = a.ProducerId, a.FirstOffset
				p.AbortedTransactions = append(p.AbortedTransactions, at)
			}
		}
		if p.RecordBatches == nil {
			p.RecordBatches = []byte{} // empty, not null: librdkafka rejects a null record set
		}
		resp.Topics[ti].Partitions = append(resp.Topics[ti].Partitions, p)
		sp.sent, sp.hwm, sp.lso, sp.logStart = true, pr.hwm, lso, pr.logStart
	}
}

// rotate moves the session's partitions that returned records to the back, as Kafka
// does, so that when the byte limits cut a response short the same partitions are
// not always the ones left out.
func rotate(sess *fetchSession, results []partResult) {
	if sess == nil {
		return
	}
	fed := map[*sessPart]bool{}
	for _, pr := range results {
		if len(pr.records) > 0 {
			fed[pr.sp] = true
		}
	}
	if len(fed) == 0 {
		return
	}
	rest := make([]*sessPart, 0, len(sess.parts))
	var back []*sessPart
	for _, sp := range sess.parts {
		if fed[sp] {
			back = append(back, sp)
		} else {
			rest = append(rest, sp)
		}
	}
	sess.parts = append(rest, back...)
}
