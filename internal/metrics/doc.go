// Package metrics is Strata's operator endpoint: a Prometheus registry per process
// (Go runtime and process figures included), collectors that read the counters the
// components keep (object-store requests, agent segments and bytes), an HTTP server
// for /metrics and /debug/pprof/, and ParseText, which reads a scrape back (strata
// bench compares a process's figures before and after its measured window).
//
// Collectors read their source's counters at scrape time: the components count with
// atomic adds and know nothing of Prometheus. This package must never import agent,
// lambdas or cmd (the components hand it read functions instead), nor register
// anything in Prometheus's global registry or http.DefaultServeMux.
//
// The metrics, all counters:
//
//	strata_objstore_requests_total{op}            requests per Store method: get, get_range, head, put, delete, list
//	strata_objstore_request_errors_total{op}      of those, the ones that returned an error
//	strata_objstore_bytes_total{direction}        object bytes written (by Put) and read (by Get, GetRange)
//	strata_agent_segments_committed_total         segments stored and committed to the metastore
//	strata_agent_segment_commit_errors_total      segments given up on: upload or commit failed
//	strata_agent_produced_batches_total           record batches accepted into segments
//	strata_agent_produced_records_total           their records
//	strata_agent_produced_bytes_total             their bytes as stored
//	strata_agent_fetched_bytes_total              record batch bytes sent to consumers
//
// and one gauge, strata_metastore_leader (1 while the node leads Raft), beside the
// standard go_* and process_* families (process_cpu_seconds_total,
// process_resident_memory_bytes, ...).
package metrics
