// Package objectlog owns the bytes Strata keeps in object storage: the segment object
// format, Kafka v2 record batches inside it (parsing, validation, compression), and the
// naming of objects. The objstore subpackage is the bucket they live in.
//
// It must never depend on the metastore, the agent, or any network other than through
// objstore; every decoder here treats its input as hostile: errors wrap ErrCorrupt (or
// ErrTooLarge for decompression past a caller's limit), nothing panics, and no
// allocation exceeds the bytes present (or, for decompression, the caller's limit).
//
// # Segment objects
//
// A segment is immutable and holds record batches for many (topic, partition) pairs, one
// chunk per pair. Chunks come first, in the order they were written; then a fixed-size
// index entry per chunk, sorted by (topic id, partition); then a fixed 40-byte footer.
// Integers are big-endian. Format version 1:
//
//	+------------------------------+ 0
//	| chunk 0: v2 RecordBatch ...  |  batches exactly as produced (producer compression
//	+------------------------------+  kept), base offsets relative to the chunk start
//	| chunk 1: v2 RecordBatch ...  |  unless the chunk is flagged absolute
//	+------------------------------+
//	| ...                          |
//	+------------------------------+ IndexOffset
//	| index entry (80 bytes) x N   |  sorted by (topic id, partition), unique
//	+------------------------------+ IndexOffset + IndexLength = size - 40
//	| footer (40 bytes)            |
//	+------------------------------+ size
//
// Index entry, 80 bytes:
//
//	off size field
//	  0   16 topic id (UUID)
//	 16    4 partition (int32, >= 0)
//	 20    2 flags: bit 0 = absolute offsets; other bits zero
//	 22    2 reserved, zero
//	 24    8 position of the chunk in the object
//	 32    4 length of the chunk (> 0)
//	 36    4 batch count (> 0)
//	 40    4 record count
//	 44    4 last offset delta: last offset in the chunk minus base offset
//	 48    8 base offset: first batch's base offset (0 for relative chunks)
//	 56    8 first timestamp: the first batch's base timestamp
//	 64    8 max timestamp: the largest batch max timestamp
//	 72    4 CRC-32C (Castagnoli) of the chunk's bytes
//	 76    4 reserved, zero
//
// Footer, 40 bytes, the last bytes of the object:
//
//	off size field
//	  0    8 index offset
//	  8    4 index length (= chunk count x 80)
//	 12    4 CRC-32C of the index
//	 16    4 chunk count
//	 20    1 format version (1)
//	 21    7 reserved, zero
//	 28    4 CRC-32C of footer bytes [0, 28)
//	 32    8 magic "STRATASG"
//
// The index sits immediately before the footer and the chunks tile [0, index offset)
// exactly; a reader rejects anything else. Knowing the object's size, a reader fetches
// footer and index with one ranged read of the tail (ReadIndex) and any chunk with one
// more (ReadChunk), verifying CRCs before it trusts a byte.
//
// # Offsets
//
// Ingestion segments are written before the metastore assigns offsets, so their chunks
// are relative: the first batch has base offset 0 and each next batch starts where the
// previous one's offsets end (base + last offset delta + 1). The metastore records the
// chunk's absolute base offset; a fetch adds it to every batch (ResolveOffsets). The
// batch CRC does not cover the base offset, so this patch keeps batches valid.
// Compacted segments are written once offsets are known and flag their chunks absolute.
//
// # Example
//
// A segment with one chunk holding one uncompressed batch of one record for topic
// 0x11..11 partition 3: the batch (say 80 bytes) at [0, 80), one index entry at
// [80, 160) {topic 11..11, partition 3, flags 0, position 0, length 80, batches 1,
// records 1, last offset delta 0, base offset 0, timestamps, CRC}, and the footer at
// [160, 200) {index offset 80, index length 80, index CRC, chunk count 1, version 1,
// footer CRC, "STRATASG"}: 200 bytes in all.
//
// # Record batches
//
// batch.go draws the v2 RecordBatch layout. Records are kept as produced; the agent
// validates every batch (ParseBatch: sizes, magic 2, CRC-32C, codec, counts) before it
// enters a segment, and Records decodes and checks the records themselves when needed.
//
// # Transaction markers
//
// Commit and abort markers are never in a segment. Ending a transaction gives each of
// its partitions one offset holding a marker in the metastore's index (producer id,
// epoch, commit or abort, timestamp), and readers serve it as the control batch
// ControlBatch builds: attributes transactional|control, base sequence -1, one record
// with key {version 0, type 0 abort | 1 commit} and value {version 0, coordinator
// epoch 0}, as Kafka writes it. A client may not produce a control batch (the agent
// refuses it as INVALID_RECORD).
package objectlog
