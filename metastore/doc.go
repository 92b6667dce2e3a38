// Package metastore is the client side of Strata's metadata service: the Go client
// agents, functions and admin tools use to talk to a metastore cluster over gRPC, and
// the typed errors it returns.
//
// The service itself lives below: metastore/state is the deterministic state machine
// over Pebble, metastore/raftlog the Raft log store, metastore/server a node (Raft,
// gRPC API, watch fan-out), metastore/metastorepb the wire and log formats. This
// package must never import any of them but metastorepb, nor Raft or Pebble: every
// agent links it, and agents stay free of the storage engine.
//
// # Guarantees
//
// Writes go to the Raft leader; a follower forwards them, or answers NOT_LEADER with
// the leader's address and the client goes there. Reads (DescribeTopics, Lookup,
// ListOffsets, ListAgents, ListExpiredIntents) are linearizable: the leader serves them
// after a barrier in its term and a check that it still leads. Watch is served by any
// node from its own applied log.
//
// The client retries what is retriable (no leader yet, a node down, a leader change)
// with exponential backoff and jitter until the call's deadline. An outcome it cannot
// resolve is reported as ErrAmbiguous, never as a clean failure. Operations that are
// idempotent are retried through ambiguity, so they return ErrAmbiguous only when the
// deadline passes first:
//
//   - CommitSegment: on the segment id (a retry gets the first commit's offsets);
//   - CreateTopics: on the topic id, which the client always chooses itself;
//   - RegisterAgent, RecordIntent, ResolveIntent, AlterConfigs, DeleteTopics (by
//     id: a topic gone after an ambiguous attempt is reported UNKNOWN_TOPIC),
//     DeregisterAgent (UNKNOWN_AGENT after an ambiguous attempt counts as done),
//     Join and Leave.
//
// CreatePartitions is not idempotent (a retry of an applied growth is refused as not
// growing), so an ambiguous attempt ends the call with ErrAmbiguous at once.
package metastore
