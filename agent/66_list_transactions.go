package agent

// ListTransactions (key 66), versions 0-1.
//
// Every transactional id the transaction coordinator (the metastore's leader)
// holds, with its producer id and state by Kafka's name (see DescribeTransactions).
// The filters are Kafka's: states by exact name, producer ids, and (v1+, KIP-994)
// a duration, which keeps transactions running longer than it. A state name Kafka
// does not know goes back in UnknownStateFilters and matches nothing; a Kafka state
// Strata never has (PrepareCommit, say) matches nothing either. A metastore that
// cannot be reached is COORDINATOR_NOT_AVAILABLE.
//
// Deviations: every agent lists every transaction (in Kafka each broker lists those
// it coordinates), so a client that merges the brokers' answers sees each id from
// each agent. Only an open (Ongoing) transaction is running for the duration filter;
// Kafka measures from the last start whatever the state.

import (
	"math"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// kafkaOnlyTxnStates are the Kafka transaction states Strata never has: filtering on
// them is valid and matches nothing.
var kafkaOnlyTxnStates = []string{"PrepareCommit", "PrepareAbort", "Dead", "PrepareEpochFence"}

func serveListTransactions(c *conn, r *request) reply {
	req := r.msg.(*kmsg.ListTransactionsRequest)
	resp := req.ResponseKind().(*kmsg.ListTransactionsResponse)
	mreq := &pb.ListTransactionsRequest{ProducerIds: req.ProducerIDFilters}
	for _, f := range req.StateFilters {
		known := slices.Contains(kafkaOnlyTxnStates, f)
		for st, name := range txnStates {
			if f == name {
				known = true
				mreq.States = append(mreq.States, st)
			}
		}
		if !known {
			resp.UnknownStateFilters = append(resp.UnknownStateFilters, f)
		}
	}
	if len(req.StateFilters) > 0 && len(mreq.States) == 0 || req.DurationFilterMillis == math.MaxInt64 {
		return now(resp) // nothing can match (the metastore reads no states as any)
	}
	if req.DurationFilterMillis >= 0 {
		// Kafka's "running longer than": at least one millisecond more.
		mreq.MinDurationMs = req.DurationFilterMillis + 1
	}
	s := c.s
	return later(func() kmsg.Response {
		mresp, err := s.meta.ListTransactions(c.ctx, mreq)
		if err != nil {
			resp.ErrorCode = txnCallCode(err)
			return resp
		}
		for _, rec := range mresp.Transactions {
			lt := kmsg.NewListTransactionsResponseTransactionState()
			lt.TransactionalID, lt.ProducerID = rec.TransactionalId, rec.ProducerId
			lt.TransactionState = txnStateName(rec.State)
			resp.TransactionStates = append(resp.TransactionStates, lt)
		}
		return resp
	})
}
