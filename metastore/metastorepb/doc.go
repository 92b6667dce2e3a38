// Package metastorepb holds the metastore's formats, generated from metastore.proto:
// the Command envelope written to the Raft log (and so read back by every future
// version: fields are only ever added), the state records kept in Pebble, and the
// gRPC API. Regenerate with `make generate`; the generated files are committed.
package metastorepb
