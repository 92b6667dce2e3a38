// Package agent is Strata's Kafka-protocol server: it accepts client connections,
// answers every request with franz-go's kmsg types, buffers produced batches from all
// partitions into shared segment objects, and serves fetches from the offset index and
// object storage.
//
// An agent is stateless. It holds nothing that is not also in object storage or the
// metastore, so it may be killed at any moment: a produce is answered only after its
// segment is stored and the metastore committed its offsets.
//
// Layout: one file per Kafka API key (00_produce.go, 01_fetch.go, ...), each opening
// with the versions served, the behaviour and the deviations from Kafka; apis.go is
// the one table from key to handler and version range; errors.go is the one place
// internal errors become Kafka error codes. conn.go is the connection loop and the
// request frame decoder; writer.go the produce pipeline; reader.go the fetch side's
// index and chunk caches; catalog.go the cached topics and agents.
//
// The agent must never import Raft or Pebble (it talks to the metastore through the
// Metastore interface) nor the AWS SDK (it talks to storage through objstore.Store).
package agent
