package bench

import (
	"time"
)

// GiB is 2^30 bytes; every "per GiB" figure is per GiB of record values produced.
const GiB = 1 << 30

// Workload is what the producers and consumers do. The same Workload runs against
// every target of one invocation.
type Workload struct {
	RecordBytes int           // value size of each record (at least 16: it carries the send time)
	Partitions  int           // partitions of the bench topic
	Producers   int           // producer clients
	Consumers   int           // consumer clients, each reading its share of the partitions
	Acks        string        // "all", "1" or "0"
	Linger      time.Duration // client-side linger (franz-go ProducerLinger)
	Compression string        // none, gzip, snappy, lz4, zstd
	Idempotent  bool          // idempotent producers (needs acks=all)
	Duration    time.Duration // measured time, after the warm-up
	Warmup      time.Duration // time run first and discarded
	RateMiBps   float64       // produce rate limit over all producers; 0: as fast as it goes
	// MaxBufferedRecords bounds each producer's records in flight (franz-go
	// MaxBufferedRecords); a producer blocks when it is full.
	MaxBufferedRecords int
	// MaxInflight is the produce requests each producer keeps in flight per broker
	// (franz-go MaxProduceRequestsInflightPerBroker), for producers that are not
	// idempotent; 0 is the client's default of 1. Idempotent producers always have
	// 5, the most the protocol's sequence checks allow.
	MaxInflight int
}

// Latencies are percentiles of one latency distribution.
type Latencies struct {
	Count          int64
	P50, P99, P999 time.Duration
	Max            time.Duration
}

// Second is one second of a run, for the throughput and latency plots. Seconds of the
// warm-up are kept (Warmup is set) so the plot shows them; totals leave them out.
type Second struct {
	At              time.Duration // end of this second, from the start of the run
	Warmup          bool
	ProducedBytes   int64 // record values acknowledged in this second
	ProducedRecords int64
	Produce         Latencies // produce latency of records acknowledged in this second
	EndToEnd        Latencies // end-to-end latency of records consumed in this second
}

// ServerStats are the system under test's own figures over the measured window,
// summed over its processes (agents, or the one `strata local` process).
type ServerStats struct {
	// Processes is how many server processes were measured (0: none could be).
	Processes int
	// CPUSeconds is user+system CPU time of the server processes in the window.
	CPUSeconds float64
	// PeakRSSBytes is the highest resident set of any one server process over its
	// life (VmHWM), or the highest sampled when only metrics could be read.
	PeakRSSBytes int64
	// HasStore is set when the object-store counters below were read (Strata
	// targets; kfake has no object store).
	HasStore bool
	Puts     int64 // object-store PUTs in the window
	Gets     int64 // object-store GETs (whole and ranged) in the window
	Commits  int64 // segment commits to the metastore in the window
}

// Result is one target's run of the workload.
type Result struct {
	Target      string // a short name: "local", "minio", "cluster", "kfake", "external"
	Description string // what it was: "strata local, file store, 5 ms linger"
	Workload    Workload
	// Interrupted is set when the run was stopped early (Ctrl-C or an error); the
	// figures cover what was measured until then.
	Interrupted bool
	Err         string        // why the run stopped early, if it did for an error
	Measured    time.Duration // length of the measured window actually run
	Records     int64         // records acknowledged in the window
	Bytes       int64         // record value bytes acknowledged in the window
	Errors      int64         // produce errors in the window
	Consumed    int64         // records consumed in the window
	Produce     Latencies     // produce latency: Produce call to acknowledgement
	EndToEnd    Latencies     // send time in the record to receipt by a consumer
	Server      ServerStats
	Series      []Second
}

// Prices are AWS request prices in dollars per 1000 requests.
type Prices struct {
	PutPer1000 float64 // S3 Standard PUT, COPY, POST, LIST
	GetPer1000 float64 // S3 Standard GET and all other requests
}

// DefaultPrices are S3 Standard's in us-east-1: $0.005 per 1000 PUTs and $0.0004 per
// 1000 GETs.
var DefaultPrices = Prices{PutPer1000: 0.005, GetPer1000: 0.0004}

func (r *Result) seconds() float64 { return r.Measured.Seconds() }

func (r *Result) gib() float64 { return float64(r.Bytes) / GiB }

// MiBps is the produce throughput in MiB of record values per second.
func (r *Result) MiBps() float64 {
	if r.seconds() <= 0 {
		return 0
	}
	return float64(r.Bytes) / (1 << 20) / r.seconds()
}

// RecordsPerSec is the produce throughput in records per second.
func (r *Result) RecordsPerSec() float64 {
	if r.seconds() <= 0 {
		return 0
	}
	return float64(r.Records) / r.seconds()
}

// perGiB divides n by the GiB produced; 0 when nothing was.
func (r *Result) perGiB(n float64) float64 {
	if r.gib() <= 0 {
		return 0
	}
	return n / r.gib()
}

func (r *Result) perSec(n float64) float64 {
	if r.seconds() <= 0 {
		return 0
	}
	return n / r.seconds()
}

// CPUPerGiB is server CPU seconds per GiB produced.
func (r *Result) CPUPerGiB() float64 { return r.perGiB(r.Server.CPUSeconds) }

// PutsPerGiB, GetsPerGiB, PutsPerSec, GetsPerSec and CommitsPerSec are the request
// figures over the measured window.
func (r *Result) PutsPerGiB() float64    { return r.perGiB(float64(r.Server.Puts)) }
func (r *Result) GetsPerGiB() float64    { return r.perGiB(float64(r.Server.Gets)) }
func (r *Result) PutsPerSec() float64    { return r.perSec(float64(r.Server.Puts)) }
func (r *Result) GetsPerSec() float64    { return r.perSec(float64(r.Server.Gets)) }
func (r *Result) CommitsPerSec() float64 { return r.perSec(float64(r.Server.Commits)) }

// CostPerGiB is the estimated object-store request cost of one GiB produced (and
// consumed once), in dollars; storage and transfer are not included.
func (r *Result) CostPerGiB(p Prices) float64 {
	return r.PutsPerGiB()*p.PutPer1000/1000 + r.GetsPerGiB()*p.GetPer1000/1000
}
