// Package compactor keeps a Strata log small and readable: it merges ingestion
// chunks into per-partition objects (levels), key-compacts topics with
// cleanup.policy=compact, moves log start offsets for retention, and deletes the
// objects nothing references any more. It is a library: the lambdas and `strata
// functions` call OnSegment on object-created events and Sweep on a timer.
//
// It must never decide anything the metastore has not agreed to: every change of
// the index is one compare-and-swap (ReplaceIndex) of entries it read, every
// object it writes is covered by an upload intent before its PUT, and it deletes
// only objects the metastore condemned (or its own outputs that lost a race). It
// imports no cloud SDK.
//
// # Levels and merges
//
// Level 0 is the chunks of ingestion segments: many partitions per object,
// relative offsets. A partition's run of consecutive level-0 entries (markers
// included) is merged into one object of its own, level 1, of at most
// min(segment.bytes, L1MaxBytes), when the run has L0MaxEntries entries, fills
// that size, or its oldest entry's segment was written L0MaxAge ago (the segment
// id's time: the writer's clock, not a producer's timestamp). A run of level-1
// entries spanning at least two objects is merged into a level-2 object of at most
// segment.bytes when it has L1MaxEntries entries, fills segment.bytes, or its
// oldest object was written segment.ms ago. Level 2 is the top: merges never take
// it again, key compaction rewrites it. Longer runs are cut into pieces of the
// target size, each merged on its own when it is due by itself.
//
// An output is a segment with one chunk flagged absolute. Its index entries are
// blocks of whole batches of at most BlockBytes (a larger batch is a block alone)
// that tile the run they replace, so every offset keeps an entry and a fetch reads
// one block per GET. A merge keeps every batch byte for byte but for its base
// offset, which becomes absolute: a fetch before and after returns the same bytes.
//
// Transaction markers (index entries without bytes) inside a run become, in the
// output, exactly the control batch readers built for them (objectlog.ControlBatch
// with the marker's producer, epoch and timestamp); the aborted-transaction index
// is untouched. So a transactional partition's index shrinks like any other.
//
// Inputs are read with one ranged GET per group of entries adjacent in one object
// (up to ReadBytes), ReadConcurrency GETs ahead; every batch's CRC and the counts
// and offsets the entry promises are checked before a byte is used. A corrupt or
// missing input abandons that merge with an InputError naming the object; nothing
// is replaced or deleted.
//
// # Key compaction
//
// For cleanup.policy=compact (clean.go): a pass covers whole entries from the log
// start to the cleanable end, the least of the last stable offset, the first entry
// with a record newer than min.compaction.lag.ms and the newest entry (never the
// active tail). It is due when never-cleaned bytes are min.cleanable.dirty.ratio
// of that range, when a never-cleaned entry is older than max.compaction.lag.ms, or
// when cleaned entries reached their tombstone horizon. It keeps the latest record
// of each key (a map of 128-bit key hashes bounded by KeyMapBytes; when it fills,
// the pass stops there, as Kafka's does), drops null keys and aborted
// transactions' records, and keeps offsets: a batch that loses records is rebuilt
// in place (objectlog.FilterBatch), an emptied one is dropped, leaving a gap (an
// entry may span gaps unless SplitAtGaps). Outputs are level 2.
//
// Tombstone rule: an output entry's cleaned_ms is when key compaction first
// covered its data: now for data never cleaned, else what its input carried
// (entries are cut where that differs). Tombstones and markers of an input whose
// cleaned_ms is delete.retention.ms old are removed; such an input's data then has
// nothing left waiting and fits any output entry, which carries settledMs (1)
// when it holds only such data. A marker goes only once no record of its
// transaction is left, and an abort marker's aborted-transaction entry goes with
// it (dropped_aborted). Output pieces of about segment.bytes commit in offset
// order, each its own replacement; the pass stops at the first that loses a race.
//
// # Retention
//
// cleanup.policy=delete (the default): the log start moves past the leading
// entries whose records are all older than retention.ms, and past the oldest
// entries while the rest still holds retention.bytes, never past the last stable
// offset (DeleteRecords, called again while it stops short). The metastore drops
// the entries and releases their objects.
//
// # Garbage
//
// CollectGarbage (and Sweep) delete what ClaimGarbage condemns: objects
// unreferenced for GCGrace, and uploads whose intent expired, whose commit the
// metastore refuses from then on. An output whose commit is ambiguous is left in
// place: live if the commit happened, collected when its intent expires if not.
//
// # Costs
//
// OnSegment reads, per partition of the segment, the head, the expired prefix (for
// retention.bytes: every entry), and the tail back to the last top-level entry in
// a few growing Lookups; for a compacted topic, every entry (planning a pass needs
// the dirty ratio). Entries read per partition are bounded by MaxPlanEntries.
package compactor
