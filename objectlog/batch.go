package objectlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"iter"
	"math"
)

// Kafka v2 RecordBatch layout (all integers big-endian). The CRC-32C covers everything
// from Attributes to the end of the batch, so BaseOffset and PartitionLeaderEpoch can be
// patched in place without recomputing it.
//
//	off  size field
//	  0     8 BaseOffset
//	  8     4 BatchLength       bytes after this field: the batch is 12+BatchLength long
//	 12     4 PartitionLeaderEpoch
//	 16     1 Magic             2
//	 17     4 CRC               CRC-32C of bytes [21, 12+BatchLength)
//	 21     2 Attributes        bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control, 6 delete horizon
//	 23     4 LastOffsetDelta
//	 27     8 BaseTimestamp
//	 35     8 MaxTimestamp
//	 43     8 ProducerID
//	 51     2 ProducerEpoch
//	 53     4 BaseSequence
//	 57     4 RecordCount
//	 61     … Records, compressed as a whole when the codec is not none
const (
	BatchHeaderSize = 61
	batchMagic      = 2

	offBatchLength  = 8
	offLeaderEpoch  = 12
	offMagic        = 16
	offCRC          = 17
	offAttributes   = 21
	offMaxTimestamp = 35
	// batchLengthOverhead is the part of the header counted by BatchLength.
	batchLengthOverhead = BatchHeaderSize - 12
	// minRecordSize is the smallest encoded record: a length varint and six one-byte
	// fields (attributes, timestamp delta, offset delta, key length, value length,
	// header count). It bounds how many records a buffer can hold.
	minRecordSize = 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C is the Castagnoli CRC used by batches and segments (hardware-accelerated).
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Attributes are a batch's attribute bits.
type Attributes int16

// Attribute bits.
const (
	AttrCodecMask        Attributes = 0x07
	AttrLogAppendTime    Attributes = 0x08
	AttrTransactional    Attributes = 0x10
	AttrControl          Attributes = 0x20
	AttrHasDeleteHorizon Attributes = 0x40
)

// Codec is the batch's compression codec.
func (a Attributes) Codec() Codec { return Codec(a & AttrCodecMask) }

// LogAppendTime reports timestamp type LogAppendTime (else CreateTime).
func (a Attributes) LogAppendTime() bool { return a&AttrLogAppendTime != 0 }

// Transactional reports whether the batch belongs to a transaction.
func (a Attributes) Transactional() bool { return a&AttrTransactional != 0 }

// Control reports whether the batch holds a control record (transaction marker).
func (a Attributes) Control() bool { return a&AttrControl != 0 }

// BatchHeader is the fixed part of a v2 record batch.
type BatchHeader struct {
	BaseOffset           int64
	BatchLength          int32
	PartitionLeaderEpoch int32
	Magic                int8
	CRC                  uint32
	Attributes           Attributes
	LastOffsetDelta      int32
	BaseTimestamp        int64
	MaxTimestamp         int64
	ProducerID           int64
	ProducerEpoch        int16
	BaseSequence         int32
	RecordCount          int32
}

// Size is the whole batch's length in bytes.
func (h *BatchHeader) Size() int { return 12 + int(h.BatchLength) }

// Batch is one validated record batch: its parsed header and its bytes.
type Batch struct {
	BatchHeader
	// Raw is exactly the batch's bytes, aliasing the buffer it was parsed from.
	Raw []byte
}

// Body is the (possibly compressed) records section.
func (b *Batch) Body() []byte { return b.Raw[BatchHeaderSize:] }

func corruptf(format string, args ...any) error {
	return fmt.Errorf("objectlog: "+format+": %w", append(args, ErrCorrupt)...)
}

// ParseBatchHeader decodes the header of the batch at the start of b and checks that
// its length fits in b and its magic is 2. It does not check the CRC; ParseBatch does.
func ParseBatchHeader(b []byte) (BatchHeader, error) {
	var h BatchHeader
	if len(b) < BatchHeaderSize {
		return h, corruptf("batch header truncated: %d of %d bytes", len(b), BatchHeaderSize)
	}
	h.BaseOffset = int64(binary.BigEndian.Uint64(b[0:]))
	h.BatchLength = int32(binary.BigEndian.Uint32(b[offBatchLength:]))
	h.PartitionLeaderEpoch = int32(binary.BigEndian.Uint32(b[offLeaderEpoch:]))
	h.Magic = int8(b[offMagic])
	h.CRC = binary.BigEndian.Uint32(b[offCRC:])
	h.Attributes = Attributes(binary.BigEndian.Uint16(b[offAttributes:]))
	h.LastOffsetDelta = int32(binary.BigEndian.Uint32(b[23:]))
	h.BaseTimestamp = int64(binary.BigEndian.Uint64(b[27:]))
	h.MaxTimestamp = int64(binary.BigEndian.Uint64(b[35:]))
	h.ProducerID = int64(binary.BigEndian.Uint64(b[43:]))
	h.ProducerEpoch = int16(binary.BigEndian.Uint16(b[51:]))
	h.BaseSequence = int32(binary.BigEndian.Uint32(b[53:]))
	h.RecordCount = int32(binary.BigEndian.Uint32(b[57:]))

	if h.Magic != batchMagic {
		return h, corruptf("batch magic %d, want %d", h.Magic, batchMagic)
	}
	if h.BatchLength < batchLengthOverhead {
		return h, corruptf("batch length %d below header size", h.BatchLength)
	}
	if int64(h.BatchLength)+12 > int64(len(b)) {
		return h, corruptf("batch length %d past the %d bytes present", h.BatchLength, len(b))
	}
	return h, nil
}

// ParseBatch decodes and validates the batch at the start of b: sizes, magic, CRC-32C,
// codec, and counts that the bytes can hold. It does not decompress or walk the records
// (Records does). The returned batch's Raw aliases b; b may hold more after it.
func ParseBatch(b []byte) (Batch, error) {
	h, err := ParseBatchHeader(b)
	if err != nil {
		return Batch{}, err
	}
	raw := b[:h.Size()]
	if got := CRC32C(raw[offAttributes:]); got != h.CRC {
		return Batch{}, corruptf("batch CRC-32C %08x, header says %08x", got, h.CRC)
	}
	if c := h.Attributes.Codec(); c > CodecZstd {
		return Batch{}, corruptf("batch compression codec %d unknown", c)
	}
	if h.RecordCount < 0 || h.LastOffsetDelta < 0 {
		return Batch{}, corruptf("batch record count %d / last offset delta %d negative", h.RecordCount, h.LastOffsetDelta)
	}
	if h.RecordCount > 0 && h.LastOffsetDelta < h.RecordCount-1 {
		return Batch{}, corruptf("batch of %d records spans only %d offsets", h.RecordCount, int64(h.LastOffsetDelta)+1)
	}
	body := len(raw) - BatchHeaderSize
	if h.Attributes.Codec() == CodecNone && int64(h.RecordCount)*minRecordSize > int64(body) {
		return Batch{}, corruptf("batch claims %d records in %d bytes", h.RecordCount, body)
	}
	return Batch{BatchHeader: h, Raw: raw}, nil
}

// Batches iterates over the concatenated batches in b (a produce request's records, a
// fetch response's records, a segment chunk), validating each with ParseBatch. It stops
// after the first error. Trailing bytes too short for a header are an error: the
// sequence must tile b exactly.
func Batches(b []byte) iter.Seq2[Batch, error] {
	return func(yield func(Batch, error) bool) {
		for len(b) > 0 {
			batch, err := ParseBatch(b)
			if err != nil {
				yield(Batch{}, err)
				return
			}
			if !yield(batch, nil) {
				return
			}
			b = b[len(batch.Raw):]
		}
	}
}

// SetBaseOffset overwrites the base offset of the batch at the start of b. The CRC does
// not cover it, so the batch stays valid.
func SetBaseOffset(b []byte, offset int64) error {
	if len(b) < BatchHeaderSize {
		return corruptf("set base offset: batch truncated")
	}
	binary.BigEndian.PutUint64(b[0:], uint64(offset))
	return nil
}

// SetPartitionLeaderEpoch overwrites the partition leader epoch of the batch at the start
// of b, outside the CRC like the base offset.
func SetPartitionLeaderEpoch(b []byte, epoch int32) error {
	if len(b) < BatchHeaderSize {
		return corruptf("set leader epoch: batch truncated")
	}
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], uint32(epoch))
	return nil
}

// SetLogAppendTime stamps the batch at the start of b with the broker's append time, as
// Kafka does for topics with message.timestamp.type=LogAppendTime: the LogAppendTime
// attribute is set and MaxTimestamp becomes ts, which consumers then read as every
// record's timestamp. Both fields are inside the CRC, so it is recomputed; b must hold
// exactly one whole batch.
func SetLogAppendTime(b []byte, ts int64) error {
	h, err := ParseBatchHeader(b)
	if err != nil {
		return err
	}
	if h.Size() != len(b) {
		return corruptf("set log append time: %d bytes for a batch of %d", len(b), h.Size())
	}
	binary.BigEndian.PutUint16(b[offAttributes:], uint16(h.Attributes|AttrLogAppendTime))
	binary.BigEndian.PutUint64(b[offMaxTimestamp:], uint64(ts))
	binary.BigEndian.PutUint32(b[offCRC:], CRC32C(b[offAttributes:]))
	return nil
}

// Header is a record header. Its key is never null; its value may be (nil).
type Header struct {
	Key   []byte
	Value []byte
}

// Record is one record of a batch. Key and Value are nil for null; their bytes alias the
// batch (or its decompressed body).
type Record struct {
	Attributes     int8
	TimestampDelta int64
	OffsetDelta    int32
	Key            []byte
	Value          []byte
	Headers        []Header
}

// Records decompresses the batch body (output bounded by limit bytes, else ErrTooLarge)
// and decodes its records, appending them to dst. It checks that the body holds exactly
// RecordCount records, each well formed, with strictly increasing offset deltas no
// greater than LastOffsetDelta. Records alias the batch or a fresh decompression buffer.
func (b *Batch) Records(dst []Record, limit int) ([]Record, error) {
	body := b.Body()
	if c := b.Attributes.Codec(); c != CodecNone {
		var err error
		body, err = Decompress(nil, c, body, limit)
		if err != nil {
			return dst, fmt.Errorf("objectlog: batch at offset %d: %w", b.BaseOffset, err)
		}
	}
	n := int(b.RecordCount)
	if int64(n)*minRecordSize > int64(len(body)) {
		return dst, corruptf("batch claims %d records in %d bytes", n, len(body))
	}
	dst = growRecords(dst, n)
	prevDelta := int64(-1)
	for i := range n {
		var r Record
		var err error
		r, body, err = decodeRecord(body)
		if err != nil {
			return dst, fmt.Errorf("objectlog: record %d of %d: %w", i, n, err)
		}
		if int64(r.OffsetDelta) <= prevDelta || r.OffsetDelta > b.LastOffsetDelta {
			return dst, corruptf("record %d offset delta %d out of order (previous %d, last %d)", i, r.OffsetDelta, prevDelta, b.LastOffsetDelta)
		}
		prevDelta = int64(r.OffsetDelta)
		dst = append(dst, r)
	}
	if len(body) != 0 {
		return dst, corruptf("%d bytes after the last of %d records", len(body), n)
	}
	return dst, nil
}

func growRecords(dst []Record, n int) []Record {
	if cap(dst)-len(dst) < n {
		grown := make([]Record, len(dst), len(dst)+n)
		copy(grown, dst)
		return grown
	}
	return dst
}

// decodeRecord decodes the record at the start of b:
//
//	length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
//	keyLength varint | key | valueLength varint | value | headerCount varint |
//	[headerKeyLength varint | headerKey | headerValueLength varint | headerValue]...
func decodeRecord(b []byte) (Record, []byte, error) {
	var r Record
	length, n := binary.Varint(b)
	if n <= 0 {
		return r, nil, corruptf("record length varint malformed")
	}
	b = b[n:]
	if length < minRecordSize-1 || length > int64(len(b)) {
		return r, nil, corruptf("record length %d with %d bytes left", length, len(b))
	}
	d := decoder{b: b[:length]}
	r.Attributes = int8(d.byte())
	r.TimestampDelta = d.varlong()
	r.OffsetDelta = d.varint()
	r.Key = d.bytes()
	r.Value = d.bytes()
	count := d.varint()
	if count < 0 || int(count) > len(d.b)/2 { // a header takes at least two bytes
		d.fail("header count %d with %d bytes left", count, len(d.b))
	}
	if d.err == nil && count > 0 {
		r.Headers = make([]Header, count)
		for i := range r.Headers {
			r.Headers[i].Key = d.bytes()
			if r.Headers[i].Key == nil && d.err == nil {
				d.fail("header %d has a null key", i)
			}
			r.Headers[i].Value = d.bytes()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes left inside the record", len(d.b))
	}
	if d.err != nil {
		return Record{}, nil, d.err
	}
	return r, b[length:], nil
}

// decoder reads Kafka's zigzag varints with a sticky error: once a read fails, every
// later read returns zero values and the first error is kept for the caller.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = corruptf(format, args...)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("record truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) varlong() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint malformed")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int32 {
	v := d.varlong()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail("varint %d overflows int32", v)
		return 0
	}
	return int32(v)
}

// bytes reads a length-prefixed byte string; length -1 is null (nil).
func (d *decoder) bytes() []byte {
	n := d.varint()
	switch {
	case d.err != nil:
		return nil
	case n == -1:
		return nil
	case n < -1 || int(n) > len(d.b):
		d.fail("length %d with %d bytes left", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// AppendRecord appends the encoding of r to dst.
func AppendRecord(dst []byte, r *Record) []byte {
	var body [3 * binary.MaxVarintLen64]byte
	n := 1
	body[0] = byte(r.Attributes)
	n += binary.PutVarint(body[n:], r.TimestampDelta)
	n += binary.PutVarint(body[n:], int64(r.OffsetDelta))
	length := n + sizeBytes(r.Key) + sizeBytes(r.Value) + varintLen(int64(len(r.Headers)))
	for i := range r.Headers {
		length += sizeBytes(r.Headers[i].Key) + sizeBytes(r.Headers[i].Value)
	}
	dst = binary.AppendVarint(dst, int64(length))
	dst = append(dst, body[:n]...)
	dst = appendBytes(dst, r.Key)
	dst = appendBytes(dst, r.Value)
	dst = binary.AppendVarint(dst, int64(len(r.Headers)))
	for i := range r.Headers {
		dst = appendBytes(dst, r.Headers[i].Key)
		dst = appendBytes(dst, r.Headers[i].Value)
	}
	return dst
}

func varintLen(v int64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutVarint(b[:], v)
}

func sizeBytes(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(int64(len(b))) + len(b)
}

func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// AppendBatch appends a complete batch to dst: h's fields (BatchLength, Magic and CRC are
// computed; the codec bits of h.Attributes are replaced by codec) followed by the records
// section, which is the concatenation of already-encoded records (see AppendRecord),
// compressed with codec.
func AppendBatch(dst []byte, h BatchHeader, codec Codec, records []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, BatchHeaderSize)...)
	var err error
	if codec == CodecNone {
		dst = append(dst, records...)
	} else if dst, err = Compress(dst, codec, records); err != nil {
		return dst[:start], err
	}
	length := len(dst) - start - 12
	if length > math.MaxInt32 {
		return dst[:start], fmt.Errorf("objectlog: batch of %d bytes too large", length)
	}
	b := dst[start:]
	binary.BigEndian.PutUint64(b[0:], uint64(h.BaseOffset))
	binary.BigEndian.PutUint32(b[offBatchLength:], uint32(length))
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], uint32(h.PartitionLeaderEpoch))
	b[offMagic] = batchMagic
	attrs := h.Attributes&^AttrCodecMask | Attributes(codec)&AttrCodecMask
	binary.BigEndian.PutUint16(b[offAttributes:], uint16(attrs))
	binary.BigEndian.PutUint32(b[23:], uint32(h.LastOffsetDelta))
	binary.BigEndian.PutUint64(b[27:], uint64(h.BaseTimestamp))
	binary.BigEndian.PutUint64(b[35:], uint64(h.MaxTimestamp))
	binary.BigEndian.PutUint64(b[43:], uint64(h.ProducerID))
	binary.BigEndian.PutUint16(b[51:], uint16(h.ProducerEpoch))
	binary.BigEndian.PutUint32(b[53:], uint32(h.BaseSequence))
	binary.BigEndian.PutUint32(b[57:], uint32(h.RecordCount))
	binary.BigEndian.PutUint32(b[offCRC:], CRC32C(b[offAttributes:]))
	return dst, nil
}

// Recompress returns a copy of the batch with its records compressed by codec (the
// topic's compression.type overriding the producer's). Header fields are kept; the CRC
// is recomputed. limit bounds the decompressed size of the original.
func (b *Batch) Recompress(dst []byte, codec Codec, limit int) ([]byte, error) {
	body := b.Body()
	if c := b.Attributes.Codec(); c != CodecNone {
		var err error
		if body, err = Decompress(nil, c, body, limit); err != nil {
			return dst, fmt.Errorf("objectlog: recompress: %w", err)
		}
	}
	return AppendBatch(dst, b.BatchHeader, codec, body)
}
