package objectlog

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"sort"
)

// Segment format constants; doc.go draws the layout.
const (
	// FormatVersion is the segment format this package writes and reads.
	FormatVersion = 1
	// FooterSize is the fixed size of the footer at the end of every segment.
	FooterSize = 40
	// IndexEntrySize is the fixed size of one chunk index entry.
	IndexEntrySize = 80
	// MaxChunkLen bounds one chunk (and so one partition's data in one segment).
	MaxChunkLen = math.MaxInt32
)

// footerMagic ends every segment object.
var footerMagic = [8]byte{'S', 'T', 'R', 'A', 'T', 'A', 'S', 'G'}

// TopicID is a Kafka topic id (a UUID).
type TopicID [16]byte

// Compare orders topic ids bytewise.
func (t TopicID) Compare(o TopicID) int { return bytes.Compare(t[:], o[:]) }

// String formats the id as a UUID.
func (t TopicID) String() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", t[0:4], t[4:6], t[6:8], t[8:10], t[10:16])
}

// ChunkFlags describe how to read a chunk.
type ChunkFlags uint16

const (
	// FlagAbsoluteOffsets: the batches carry their final offsets (compacted segments).
	// Without it, batch base offsets are relative to the chunk start (ingestion segments,
	// written before the metastore assigned offsets) and readers add the chunk's base.
	FlagAbsoluteOffsets ChunkFlags = 1 << 0

	knownChunkFlags = FlagAbsoluteOffsets
)

// Chunk is one index entry: where a partition's batches lie in the segment and what they
// hold.
type Chunk struct {
	TopicID   TopicID
	Partition int32
	Flags     ChunkFlags
	// Position and Length locate the chunk's bytes in the object.
	Position int64
	Length   int64
	// BatchCount and RecordCount count what the chunk holds.
	BatchCount  int32
	RecordCount int32
	// BaseOffset is the first batch's base offset as stored (0 for relative chunks);
	// LastOffsetDelta is the chunk's last offset minus BaseOffset.
	BaseOffset      int64
	LastOffsetDelta int32
	// FirstTimestamp is the first batch's base timestamp; MaxTimestamp the largest
	// MaxTimestamp of any batch.
	FirstTimestamp int64
	MaxTimestamp   int64
	// CRC is the CRC-32C of the chunk's bytes.
	CRC uint32
}

// AbsoluteOffsets reports FlagAbsoluteOffsets.
func (c *Chunk) AbsoluteOffsets() bool { return c.Flags&FlagAbsoluteOffsets != 0 }

// OffsetCount is the number of offsets the chunk spans (more than RecordCount when
// compaction removed records).
func (c *Chunk) OffsetCount() int64 { return int64(c.LastOffsetDelta) + 1 }

func compareChunkKeys(a, b *Chunk) int {
	if c := a.TopicID.Compare(b.TopicID); c != 0 {
		return c
	}
	return cmp.Compare(a.Partition, b.Partition)
}

func (c *Chunk) put(b []byte) {
	_ = b[IndexEntrySize-1]
	copy(b[0:16], c.TopicID[:])
	binary.BigEndian.PutUint32(b[16:], uint32(c.Partition))
	binary.BigEndian.PutUint16(b[20:], uint16(c.Flags))
	binary.BigEndian.PutUint16(b[22:], 0)
	binary.BigEndian.PutUint64(b[24:], uint64(c.Position))
	binary.BigEndian.PutUint32(b[32:], uint32(c.Length))
	binary.BigEndian.PutUint32(b[36:], uint32(c.BatchCount))
	binary.BigEndian.PutUint32(b[40:], uint32(c.RecordCount))
	binary.BigEndian.PutUint32(b[44:], uint32(c.LastOffsetDelta))
	binary.BigEndian.PutUint64(b[48:], uint64(c.BaseOffset))
	binary.BigEndian.PutUint64(b[56:], uint64(c.FirstTimestamp))
	binary.BigEndian.PutUint64(b[64:], uint64(c.MaxTimestamp))
	binary.BigEndian.PutUint32(b[72:], c.CRC)
	binary.BigEndian.PutUint32(b[76:], 0)
}

func parseChunk(b []byte) (Chunk, error) {
	_ = b[IndexEntrySize-1]
	var c Chunk
	copy(c.TopicID[:], b[0:16])
	c.Partition = int32(binary.BigEndian.Uint32(b[16:]))
	c.Flags = ChunkFlags(binary.BigEndian.Uint16(b[20:]))
	reserved := binary.BigEndian.Uint16(b[22:]) | uint16(binary.BigEndian.Uint32(b[76:]))
	c.Position = int64(binary.BigEndian.Uint64(b[24:]))
	c.Length = int64(binary.BigEndian.Uint32(b[32:]))
	c.BatchCount = int32(binary.BigEndian.Uint32(b[36:]))
	c.RecordCount = int32(binary.BigEndian.Uint32(b[40:]))
	c.LastOffsetDelta = int32(binary.BigEndian.Uint32(b[44:]))
	c.BaseOffset = int64(binary.BigEndian.Uint64(b[48:]))
	c.FirstTimestamp = int64(binary.BigEndian.Uint64(b[56:]))
	c.MaxTimestamp = int64(binary.BigEndian.Uint64(b[64:]))
	c.CRC = binary.BigEndian.Uint32(b[72:])
	switch {
	case c.Flags&^knownChunkFlags != 0 || reserved != 0:
		return c, corruptf("chunk flags %#x or reserved bits set", c.Flags)
	case c.Partition < 0:
		return c, corruptf("chunk partition %d negative", c.Partition)
	case c.Position < 0 || c.Length <= 0 || c.Length > MaxChunkLen:
		return c, corruptf("chunk position %d length %d invalid", c.Position, c.Length)
	case c.BatchCount <= 0 || int64(c.BatchCount)*BatchHeaderSize > c.Length:
		return c, corruptf("chunk of %d bytes claims %d batches", c.Length, c.BatchCount)
	case c.RecordCount < 0 || c.LastOffsetDelta < 0 || int64(c.RecordCount) > int64(c.LastOffsetDelta)+1:
		return c, corruptf("chunk records %d / last offset delta %d inconsistent", c.RecordCount, c.LastOffsetDelta)
	case c.BaseOffset < 0 || (!c.AbsoluteOffsets() && c.BaseOffset != 0):
		return c, corruptf("chunk base offset %d invalid for flags %#x", c.BaseOffset, c.Flags)
	}
	return c, nil
}

// Footer is the fixed trailer of a segment.
type Footer struct {
	IndexOffset int64
	IndexLength int64
	IndexCRC    uint32
	ChunkCount  int32
	Version     uint8
}

func (f *Footer) put(b []byte) {
	_ = b[FooterSize-1]
	binary.BigEndian.PutUint64(b[0:], uint64(f.IndexOffset))
	binary.BigEndian.PutUint32(b[8:], uint32(f.IndexLength))
	binary.BigEndian.PutUint32(b[12:], f.IndexCRC)
	binary.BigEndian.PutUint32(b[16:], uint32(f.ChunkCount))
	b[20] = f.Version
	b[21], b[22], b[23] = 0, 0, 0
	binary.BigEndian.PutUint32(b[24:], 0)
	binary.BigEndian.PutUint32(b[28:], CRC32C(b[0:28]))
	copy(b[32:], footerMagic[:])
}

// ParseFooter decodes and checks the footer that ends a segment of objectSize bytes;
// b must be the last FooterSize bytes.
func ParseFooter(b []byte, objectSize int64) (Footer, error) {
	var f Footer
	if len(b) != FooterSize || objectSize < FooterSize {
		return f, corruptf("segment of %d bytes too short for a footer", objectSize)
	}
	if !bytes.Equal(b[32:40], footerMagic[:]) {
		return f, corruptf("segment footer magic %q", b[32:40])
	}
	if got, want := CRC32C(b[0:28]), binary.BigEndian.Uint32(b[28:]); got != want {
		return f, corruptf("segment footer CRC-32C %08x, stored %08x", got, want)
	}
	f.IndexOffset = int64(binary.BigEndian.Uint64(b[0:]))
	f.IndexLength = int64(binary.BigEndian.Uint32(b[8:]))
	f.IndexCRC = binary.BigEndian.Uint32(b[12:])
	f.ChunkCount = int32(binary.BigEndian.Uint32(b[16:]))
	f.Version = b[20]
	if f.Version != FormatVersion {
		return f, corruptf("segment format version %d, this build reads %d", f.Version, FormatVersion)
	}
	if b[21]|b[22]|b[23] != 0 || binary.BigEndian.Uint32(b[24:]) != 0 {
		return f, corruptf("segment footer reserved bytes set")
	}
	if f.ChunkCount < 0 || f.IndexLength != int64(f.ChunkCount)*IndexEntrySize {
		return f, corruptf("segment index of %d bytes for %d chunks", f.IndexLength, f.ChunkCount)
	}
	// The index sits right before the footer; anything else points outside the data.
	if f.IndexOffset < 0 || f.IndexOffset != objectSize-FooterSize-f.IndexLength {
		return f, corruptf("segment index at %d+%d does not end at the footer (object %d bytes)", f.IndexOffset, f.IndexLength, objectSize)
	}
	return f, nil
}

// Index is a segment's decoded chunk index, sorted by (topic id, partition).
type Index struct {
	Footer Footer
	Chunks []Chunk
	// Size is the segment object's size.
	Size int64
}

// Find returns the chunk of (topic, partition), if the segment holds one.
func (ix *Index) Find(topic TopicID, partition int32) (Chunk, bool) {
	key := Chunk{TopicID: topic, Partition: partition}
	i := sort.Search(len(ix.Chunks), func(i int) bool { return compareChunkKeys(&ix.Chunks[i], &key) >= 0 })
	if i == len(ix.Chunks) || compareChunkKeys(&ix.Chunks[i], &key) != 0 {
		return Chunk{}, false
	}
	return ix.Chunks[i], true
}

// ParseIndex decodes and checks a segment's index given its footer: the index CRC, every
// entry, strict (topic, partition) order, and that the chunks exactly tile the data
// region [0, IndexOffset). It allocates only in proportion to len(index).
func ParseIndex(f Footer, index []byte, objectSize int64) (*Index, error) {
	if int64(len(index)) != f.IndexLength {
		return nil, corruptf("segment index is %d bytes, footer says %d", len(index), f.IndexLength)
	}
	if got := CRC32C(index); got != f.IndexCRC {
		return nil, corruptf("segment index CRC-32C %08x, footer says %08x", got, f.IndexCRC)
	}
	ix := &Index{Footer: f, Size: objectSize, Chunks: make([]Chunk, f.ChunkCount)}
	for i := range ix.Chunks {
		c, err := parseChunk(index[i*IndexEntrySize:])
		if err != nil {
			return nil, fmt.Errorf("objectlog: chunk %d: %w", i, err)
		}
		if i > 0 && compareChunkKeys(&ix.Chunks[i-1], &c) >= 0 {
			return nil, corruptf("chunk %d (%s/%d) out of order", i, c.TopicID, c.Partition)
		}
		ix.Chunks[i] = c
	}
	// Chunks must tile [0, IndexOffset): sort positions and walk.
	order := make([]int32, len(ix.Chunks))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return cmp.Compare(ix.Chunks[a].Position, ix.Chunks[b].Position) })
	var next int64
	for _, i := range order {
		c := &ix.Chunks[i]
		if c.Position != next {
			return nil, corruptf("chunk %d at %d, expected %d (gap or overlap)", i, c.Position, next)
		}
		next += c.Length
	}
	if next != f.IndexOffset {
		return nil, corruptf("chunks cover %d bytes, index starts at %d", next, f.IndexOffset)
	}
	return ix, nil
}

// DecodeSegment decodes and checks a whole segment held in memory: footer, index, and
// every chunk's CRC and batches (ParseBatch on each, counts matching the index). It is
// what a reader of a complete object (a compaction function) calls.
func DecodeSegment(seg []byte) (*Index, error) {
	size := int64(len(seg))
	if size < FooterSize {
		return nil, corruptf("segment of %d bytes too short for a footer", size)
	}
	f, err := ParseFooter(seg[size-FooterSize:], size)
	if err != nil {
		return nil, err
	}
	ix, err := ParseIndex(f, seg[f.IndexOffset:f.IndexOffset+f.IndexLength], size)
	if err != nil {
		return nil, err
	}
	for i := range ix.Chunks {
		c := &ix.Chunks[i]
		if err := CheckChunk(c, seg[c.Position:c.Position+c.Length]); err != nil {
			return nil, err
		}
	}
	return ix, nil
}

// CheckChunk verifies chunk bytes against their index entry: the CRC-32C, then every
// batch (ParseBatch), their number, record counts and timestamps, and the offsets they
// carry. A fetch of a chunk range checks this before serving the bytes.
func CheckChunk(c *Chunk, data []byte) error {
	if int64(len(data)) != c.Length {
		return corruptf("chunk %s/%d is %d bytes, index says %d", c.TopicID, c.Partition, len(data), c.Length)
	}
	if got := CRC32C(data); got != c.CRC {
		return corruptf("chunk %s/%d CRC-32C %08x, index says %08x", c.TopicID, c.Partition, got, c.CRC)
	}
	var s chunkStats
	for b, err := range Batches(data) {
		if err != nil {
			return fmt.Errorf("objectlog: chunk %s/%d batch %d: %w", c.TopicID, c.Partition, s.batches, err)
		}
		if err := s.add(&b.BatchHeader, c.AbsoluteOffsets()); err != nil {
			return fmt.Errorf("objectlog: chunk %s/%d batch %d: %w", c.TopicID, c.Partition, s.batches, err)
		}
	}
	if s.batches != int64(c.BatchCount) || s.records != int64(c.RecordCount) ||
		s.firstTimestamp != c.FirstTimestamp || s.maxTimestamp != c.MaxTimestamp ||
		s.baseOffset != c.BaseOffset || s.nextOffset-s.baseOffset != c.OffsetCount() {
		return corruptf("chunk %s/%d contents do not match its index entry", c.TopicID, c.Partition)
	}
	return nil
}

// chunkStats accumulates what an index entry records about a chunk's batches, for the
// writer (which produces the entry) and CheckChunk (which compares against it).
type chunkStats struct {
	batches, records int64
	baseOffset       int64 // first batch's base offset
	nextOffset       int64 // one past the last offset seen
	firstTimestamp   int64
	maxTimestamp     int64
}

// add accounts for one batch. With absolute offsets the batch must start at or after
// nextOffset; with relative ones at exactly nextOffset (which the writer arranges).
func (s *chunkStats) add(h *BatchHeader, absolute bool) error {
	if s.batches == 0 {
		if !absolute && h.BaseOffset != 0 {
			return corruptf("relative chunk starts at offset %d", h.BaseOffset)
		}
		s.baseOffset, s.nextOffset = h.BaseOffset, h.BaseOffset
		s.firstTimestamp, s.maxTimestamp = h.BaseTimestamp, h.MaxTimestamp
	}
	if h.BaseOffset < s.nextOffset || (!absolute && h.BaseOffset != s.nextOffset) {
		return corruptf("batch offset %d, expected %d", h.BaseOffset, s.nextOffset)
	}
	next := h.BaseOffset + int64(h.LastOffsetDelta) + 1
	if next-s.baseOffset > math.MaxInt32 || next < 0 {
		return corruptf("chunk spans more than 2^31 offsets")
	}
	s.batches++
	s.records += int64(h.RecordCount)
	if s.batches > math.MaxInt32 || s.records > math.MaxInt32 {
		return corruptf("chunk holds more than 2^31 batches or records")
	}
	s.nextOffset = next
	s.maxTimestamp = max(s.maxTimestamp, h.MaxTimestamp)
	return nil
}

// SegmentWriter streams a segment to an io.Writer: chunk after chunk, then the index and
// footer on Close. It holds only the index in memory (IndexEntrySize bytes per chunk),
// never the data, so a segment of any size is written in bounded memory.
//
// Batches must be valid (ParseBatch) before they are written; the writer reads their
// headers for the index but does not check CRCs again. A SegmentWriter is not safe for
// concurrent use.
type SegmentWriter struct {
	w      io.Writer
	pos    int64
	chunks []Chunk
	open   bool
	cur    Chunk
	stats  chunkStats
	crc    uint32
	err    error
	seen   map[[20]byte]struct{}
}

// NewSegmentWriter returns a writer of one segment to w. Wrap w in a bufio.Writer if it
// is unbuffered: batches are written with two small writes each.
func NewSegmentWriter(w io.Writer) *SegmentWriter {
	return &SegmentWriter{w: w, seen: make(map[[20]byte]struct{})}
}

// ErrWriterState reports a SegmentWriter used out of order or after an error.
var ErrWriterState = errors.New("objectlog: segment writer misuse")

// StartChunk ends the current chunk, if any, and starts the one for (topic, partition).
// A segment holds at most one chunk per partition. With FlagAbsoluteOffsets the batches
// keep their base offsets (which must increase); without it the writer rewrites each
// batch's base offset to its offset relative to the chunk start.
func (w *SegmentWriter) StartChunk(topic TopicID, partition int32, flags ChunkFlags) error {
	if w.err != nil {
		return w.err
	}
	if err := w.endChunk(); err != nil {
		return err
	}
	if partition < 0 || flags&^knownChunkFlags != 0 {
		return w.fail(fmt.Errorf("%w: chunk %s/%d flags %#x", ErrWriterState, topic, partition, flags))
	}
	var k [20]byte
	copy(k[:16], topic[:])
	binary.BigEndian.PutUint32(k[16:], uint32(partition))
	if _, dup := w.seen[k]; dup {
		return w.fail(fmt.Errorf("%w: second chunk for %s/%d", ErrWriterState, topic, partition))
	}
	w.seen[k] = struct{}{}
	w.open = true
	w.cur = Chunk{TopicID: topic, Partition: partition, Flags: flags, Position: w.pos}
	w.stats = chunkStats{}
	w.crc = 0
	return nil
}

func (w *SegmentWriter) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// WriteBatch appends one batch (exactly its bytes) to the current chunk. b is not
// modified: a relative base offset is written in place of the batch's own.
func (w *SegmentWriter) WriteBatch(b []byte) error {
	if w.err != nil {
		return w.err
	}
	if !w.open {
		return w.fail(fmt.Errorf("%w: WriteBatch before StartChunk", ErrWriterState))
	}
	h, err := ParseBatchHeader(b)
	if err != nil {
		return w.fail(err)
	}
	if len(b) != h.Size() {
		return w.fail(corruptf("batch is %d bytes, its header says %d", len(b), h.Size()))
	}
	absolute := w.cur.AbsoluteOffsets()
	if !absolute {
		h.BaseOffset = w.stats.nextOffset
	}
	if err := w.stats.add(&h, absolute); err != nil {
		return w.fail(err)
	}
	if w.cur.Length+int64(len(b)) > MaxChunkLen {
		return w.fail(fmt.Errorf("%w: chunk %s/%d over %d bytes", ErrWriterState, w.cur.TopicID, w.cur.Partition, MaxChunkLen))
	}
	var off [8]byte
	binary.BigEndian.PutUint64(off[:], uint64(h.BaseOffset))
	if err := w.write(off[:]); err != nil {
		return err
	}
	if err := w.write(b[8:]); err != nil {
		return err
	}
	w.cur.Length += int64(len(b))
	return nil
}

func (w *SegmentWriter) write(p []byte) error {
	w.crc = crc32.Update(w.crc, castagnoli, p)
	n, err := w.w.Write(p)
	w.pos += int64(n)
	if err != nil {
		return w.fail(fmt.Errorf("objectlog: write segment: %w", err))
	}
	return nil
}

func (w *SegmentWriter) endChunk() error {
	if !w.open {
		return nil
	}
	w.open = false
	if w.stats.batches == 0 {
		return w.fail(fmt.Errorf("%w: chunk %s/%d has no batches", ErrWriterState, w.cur.TopicID, w.cur.Partition))
	}
	c := &w.cur
	c.BatchCount = int32(w.stats.batches)
	c.RecordCount = int32(w.stats.records)
	c.BaseOffset = w.stats.baseOffset
	c.LastOffsetDelta = int32(w.stats.nextOffset - w.stats.baseOffset - 1)
	c.FirstTimestamp = w.stats.firstTimestamp
	c.MaxTimestamp = w.stats.maxTimestamp
	c.CRC = w.crc
	w.chunks = append(w.chunks, *c)
	return nil
}

// Close ends the last chunk and writes the index and footer. It returns the segment's
// index (chunks sorted by topic and partition) and does not close the underlying writer.
func (w *SegmentWriter) Close() (*Index, error) {
	if w.err != nil {
		return nil, w.err
	}
	if err := w.endChunk(); err != nil {
		return nil, err
	}
	if len(w.chunks) > math.MaxInt32/IndexEntrySize {
		return nil, w.fail(fmt.Errorf("%w: %d chunks", ErrWriterState, len(w.chunks)))
	}
	slices.SortFunc(w.chunks, func(a, b Chunk) int { return compareChunkKeys(&a, &b) })
	index := make([]byte, len(w.chunks)*IndexEntrySize+FooterSize)
	for i := range w.chunks {
		w.chunks[i].put(index[i*IndexEntrySize:])
	}
	f := Footer{
		IndexOffset: w.pos,
		IndexLength: int64(len(w.chunks) * IndexEntrySize),
		ChunkCount:  int32(len(w.chunks)),
		Version:     FormatVersion,
	}
	f.IndexCRC = CRC32C(index[:f.IndexLength])
	f.put(index[f.IndexLength:])
	if err := w.write(index); err != nil {
		return nil, err
	}
	w.err = fmt.Errorf("%w: segment already closed", ErrWriterState)
	return &Index{Footer: f, Chunks: w.chunks, Size: w.pos}, nil
}
