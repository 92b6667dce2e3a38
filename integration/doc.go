// Package integration holds Strata's cross-process tests: real MinIO, real Kafka clients,
// several agents and metastore nodes, faults. It has no code of its own outside tests.
package integration
