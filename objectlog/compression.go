package objectlog

// Compression of Kafka v2 record batch bodies.
//
// Decompress runs on bytes from the network (produce) and from storage written by
// other agents, so every codec is driven as if its input were hostile: output is
// bounded by the caller's limit, header fields that announce a size are only hints
// for the first allocation (never above limit, and checked by the decoder before
// success), and every decoder error is reported as ErrCorrupt.
//
// Decoders and encoders are pooled: Decompress and Compress sit on the produce and
// fetch paths, and the codecs' state (a 32 KiB flate window, zstd tables, LZ4 block
// buffers) costs more to build than a batch costs to decode.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Codec is the compression type in bits 0-2 of a batch's attributes.
type Codec int8

// The codecs of Kafka's record batch attributes. Values 5-7 are unassigned.
const (
	CodecNone   Codec = 0
	CodecGzip   Codec = 1
	CodecSnappy Codec = 2
	CodecLZ4    Codec = 3
	CodecZstd   Codec = 4
)

// String returns the codec's Kafka compression.type name, or Codec(n) for an unknown value.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecGzip:
		return "gzip"
	case CodecSnappy:
		return "snappy"
	case CodecLZ4:
		return "lz4"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("Codec(%d)", int8(c))
}

// ParseCodec maps a Kafka compression.type name to its codec. "uncompressed" (the
// topic-level spelling) and "none" (the producer-level spelling) both mean CodecNone.
// Names are case-sensitive, as in Kafka. The topic-level value "producer" is not a
// codec and is rejected: it is the caller's to interpret.
func ParseCodec(name string) (Codec, error) {
	switch name {
	case "none", "uncompressed":
		return CodecNone, nil
	case "gzip":
		return CodecGzip, nil
	case "snappy":
		return CodecSnappy, nil
	case "lz4":
		return CodecLZ4, nil
	case "zstd":
		return CodecZstd, nil
	}
	return CodecNone, fmt.Errorf("objectlog: unknown compression type %q", name)
}

// maxLimit caps Decompress's limit. A batch's length is an int32, and a
// cap well inside it keeps the size arithmetic clear of overflow even with 32-bit ints.
const maxLimit = 1 << 30

// Decompress appends the decompressed form of src to dst. It fails with an error
// wrapping ErrTooLarge as soon as the output would exceed limit bytes, and with one
// wrapping ErrCorrupt for malformed input or an unknown codec. It never allocates
// much more than min(limit, actual output). A negative limit counts as 0, and one
// above 1 GiB as 1 GiB.
//
// On error it returns dst with its original length; bytes in its spare capacity may
// have been overwritten. It is safe for concurrent use.
func Decompress(dst []byte, c Codec, src []byte, limit int) ([]byte, error) {
	limit = min(max(limit, 0), maxLimit)
	if c != CodecNone && len(src) == 0 {
		// No codec encodes anything, not even an empty batch, as zero bytes; some
		// decoders would nevertheless report an empty stream as a clean end.
		return dst, fmt.Errorf("%w: %s: empty input", ErrCorrupt, c)
	}
	var (
		out []byte
		err error
	)
	switch c {
	case CodecNone:
		if len(src) > limit {
			return dst, tooLarge(c, limit)
		}
		return append(dst, src...), nil
	case CodecGzip:
		out, err = decompressGzip(dst, src, limit)
	case CodecSnappy:
		out, err = decompressSnappy(dst, src, limit)
	case CodecLZ4:
		out, err = decompressLZ4(dst, src, limit)
	case CodecZstd:
		out, err = decompressZstd(dst, src, limit)
	default:
		return dst, fmt.Errorf("%w: unknown compression codec %d", ErrCorrupt, int8(c))
	}
	if err != nil {
		return dst, err
	}
	return out, nil
}

// Compress appends the compressed form of src to dst. It is safe for concurrent use.
//
// The formats are the ones every Kafka client reads: a gzip member, snappy in the
// xerial framing with 32 KiB blocks, an LZ4 frame with independent 64 KiB blocks, and
// a single zstd frame at the default level.
func Compress(dst []byte, c Codec, src []byte) ([]byte, error) {
	switch c {
	case CodecNone:
		return append(dst, src...), nil
	case CodecGzip:
		return compressGzip(dst, src)
	case CodecSnappy:
		return compressSnappy(dst, src), nil
	case CodecLZ4:
		return compressLZ4(dst, src)
	case CodecZstd:
		return compressZstd(dst, src)
	}
	return dst, fmt.Errorf("objectlog: compress: unknown compression codec %d", int8(c))
}

func corrupt(c Codec, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, c, err)
}

func tooLarge(c Codec, limit int) error {
	return fmt.Errorf("%w: %s: output exceeds the limit of %d bytes", ErrTooLarge, c, limit)
}

// minGrowth is the smallest step by which readLimited grows its output, so that a
// stream without a size hint does not reallocate for every few bytes.
const minGrowth = 512

// maxEmptyReads bounds how many successive reads may return nothing, as io.Reader
// allows, before a decoder counts as stuck.
const maxEmptyReads = 100

// readLimited appends everything r produces to dst and fails with ErrTooLarge as soon
// as the output passes limit bytes; it never reads more than limit+1 bytes from r.
// hint, when positive, is the size the input claims to decode to: it sizes the first
// allocation (an exact hint costs one allocation and no copy) and nothing else.
// Without a hint the buffer doubles, which keeps the total allocated under about 4x
// the output. probe is a one-byte scratch buffer owned by the pooled decoder, so
// that it does not escape to the heap on every call.
func readLimited(dst []byte, r io.Reader, c Codec, limit, hint int, probe []byte) ([]byte, error) {
	start := len(dst)
	empty := 0
	for {
		n := len(dst) - start
		var (
			k   int
			err error
		)
		if room := min(cap(dst)-len(dst), limit-n); room > 0 {
			k, err = r.Read(dst[len(dst) : len(dst)+room])
			dst = dst[:len(dst)+k]
		} else {
			// Out of room. Read one byte before growing: it tells whether the
			// stream ends exactly here, so an output that fits exactly costs no
			// extra allocation, and it is the limit+1st byte that proves the
			// output too large.
			k, err = r.Read(probe[:1])
			if k > 0 {
				if n >= limit {
					return dst, tooLarge(c, limit)
				}
				next := max(2*n, minGrowth)
				if hint > n {
					next = hint
				}
				dst = slices.Grow(dst, min(next, limit)-n)
				dst = append(dst, probe[0])
			}
		}
		switch {
		case err == io.EOF:
			return dst, nil
		case err != nil:
			return dst, corrupt(c, err)
		case k > 0:
			empty = 0
		default:
			if empty++; empty >= maxEmptyReads {
				return dst, corrupt(c, io.ErrNoProgress)
			}
		}
	}
}

// gzip

// gzipDecoder is the pooled state for one gzip decompression: the flate window lives
// in zr and survives Reset.
type gzipDecoder struct {
	src   bytes.Reader
	zr    gzip.Reader
	probe [1]byte
}

var gzipDecoders sync.Pool // *gzipDecoder

// gzipHintRatio caps the trailer's size hint at a multiple of the input. Real
// batches compress far less than this; beyond it the output buffer doubles as it
// fills, so that a damaged trailer cannot make a small input allocate much.
const gzipHintRatio = 64

func decompressGzip(dst, src []byte, limit int) ([]byte, error) {
	d, _ := gzipDecoders.Get().(*gzipDecoder)
	if d == nil {
		d = new(gzipDecoder)
	}
	defer func() {
		// Drop the reference to the caller's bytes before pooling.
		d.src.Reset(nil)
		gzipDecoders.Put(d)
	}()
	d.src.Reset(src)
	if err := d.zr.Reset(&d.src); err != nil {
		return dst, corrupt(CodecGzip, err)
	}
	// Reset turns multistream on: concatenated members are one valid stream.
	//
	// The trailer's ISIZE is the last member's length mod 2^32. It is only a hint
	// for the first allocation: the reader checks it against the real output
	// before reporting success.
	hint := -1
	if len(src) >= 4 {
		hint = int(min(uint64(binary.LittleEndian.Uint32(src[len(src)-4:])), gzipHintRatio*uint64(len(src))))
	}
	return readLimited(dst, &d.zr, CodecGzip, limit, hint, d.probe[:])
}

// gzipEncoder is the pooled state for one gzip compression.
type gzipEncoder struct {
	out appendWriter
	zw  *gzip.Writer
}

var gzipEncoders sync.Pool // *gzipEncoder

func compressGzip(dst, src []byte) ([]byte, error) {
	e, _ := gzipEncoders.Get().(*gzipEncoder)
	if e == nil {
		// The default level (6) is what Kafka's Java producer uses by default.
		zw, err := gzip.NewWriterLevel(nil, gzip.DefaultCompression)
		if err != nil {
			return dst, fmt.Errorf("objectlog: gzip: %w", err)
		}
		e = &gzipEncoder{zw: zw}
	}
	e.out.b = dst
	e.zw.Reset(&e.out)
	_, err := e.zw.Write(src)
	if err == nil {
		err = e.zw.Close()
	}
	out := e.out.b
	e.out.b = nil
	gzipEncoders.Put(e)
	if err != nil {
		return dst, fmt.Errorf("objectlog: gzip: %w", err)
	}
	return out, nil
}

// appendWriter is an io.Writer that appends to a slice the caller owns, so that
// streaming encoders write straight into Compress's dst.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// snappy
//
// Kafka clients send snappy two ways. franz-go and some others send one raw snappy
// block. The Java client and librdkafka send the xerial framing of snappy-java's
// SnappyOutputStream:
//
//	off  size
//	  0     8  magic "\x82SNAPPY\x00"
//	  8     4  version (big-endian, 1)
//	 12     4  minimum compatible version (big-endian, 1)
//	 16     …  blocks: [4-byte big-endian length][raw snappy block of that length]
//
// A raw block cannot begin with the magic: its varint would announce 10626 bytes and
// be followed by a copy tag ('N') with nothing yet to copy, which is invalid, so the
// magic tells the two apart. snappy-java reads streams that were concatenated, with
// the header repeated where a block length would be; a length starting 0x82 would be
// over 2 GiB, so that is unambiguous too and is accepted.

const (
	xerialMagic      = "\x82SNAPPY\x00"
	xerialHeaderSize = 16
	// xerialBlockSize is the input per block that snappy-java writes by default.
	xerialBlockSize = 32 << 10
)

func decompressSnappy(dst, src []byte, limit int) ([]byte, error) {
	if !bytes.HasPrefix(src, []byte(xerialMagic)) {
		n, err := snappy.DecodedLen(src)
		if err != nil {
			return dst, corrupt(CodecSnappy, err)
		}
		if n > limit {
			return dst, tooLarge(CodecSnappy, limit)
		}
		return decodeSnappyBlock(slices.Grow(dst, n), src, n)
	}

	// First pass: check the framing and add up the blocks' announced lengths, so
	// that an oversize stream fails before anything is decoded and the output is
	// allocated once. Each announced length is checked again by the decoder.
	total := 0
	for block, err := range xerialBlocks(src) {
		if err != nil {
			return dst, err
		}
		n, err := snappy.DecodedLen(block)
		if err != nil {
			return dst, corrupt(CodecSnappy, err)
		}
		if n > limit-total {
			return dst, tooLarge(CodecSnappy, limit)
		}
		total += n
	}
	out := slices.Grow(dst, total)
	for block := range xerialBlocks(src) {
		n, _ := snappy.DecodedLen(block)
		var err error
		if out, err = decodeSnappyBlock(out, block, n); err != nil {
			return dst, err
		}
	}
	return out, nil
}

// xerialBlocks yields the snappy blocks of a xerial-framed stream, or an error
// wrapping ErrCorrupt (and then stops) when the framing is broken.
func xerialBlocks(src []byte) func(yield func([]byte, error) bool) {
	return func(yield func([]byte, error) bool) {
		pos := 0
		for pos < len(src) {
			rest := src[pos:]
			if bytes.HasPrefix(rest, []byte(xerialMagic)) {
				// The stream header, first or of a concatenated stream. The versions
				// are not checked: there has only ever been one framing, and
				// snappy-java's reader does not reject on them either.
				if len(rest) < xerialHeaderSize {
					yield(nil, fmt.Errorf("%w: snappy: xerial header truncated at %d bytes", ErrCorrupt, len(rest)))
					return
				}
				pos += xerialHeaderSize
				continue
			}
			if len(rest) < 4 {
				yield(nil, fmt.Errorf("%w: snappy: xerial block length truncated at offset %d", ErrCorrupt, pos))
				return
			}
			n := binary.BigEndian.Uint32(rest)
			if uint64(n) > uint64(len(rest)-4) {
				yield(nil, fmt.Errorf("%w: snappy: xerial block of %d bytes at offset %d overruns the input", ErrCorrupt, n, pos))
				return
			}
			pos += 4 + int(n)
			if !yield(rest[4:4+n], nil) {
				return
			}
		}
	}
}

// decodeSnappyBlock appends the n-byte decoding of block to dst, which must have room
// for it. DecodeStrict rejects the s2 extensions that klauspost's faster decoder
// accepts: a batch we accept must be readable by every consumer's snappy.
func decodeSnappyBlock(dst, block []byte, n int) ([]byte, error) {
	at := len(dst)
	room := dst[at : at+n]
	out, err := snappy.DecodeStrict(room, block)
	if err != nil {
		return dst, corrupt(CodecSnappy, err)
	}
	if len(out) != n || (n > 0 && &out[0] != &room[0]) {
		// Cannot happen while DecodeStrict honours DecodedLen; checked because
		// silently returning a short or detached block would lose records.
		return dst, fmt.Errorf("%w: snappy: block decoded to %d bytes, announced %d", ErrCorrupt, len(out), n)
	}
	return dst[:at+n], nil
}

func compressSnappy(dst, src []byte) []byte {
	// One allocation for the worst case: header plus, per block, a length and the
	// block's bound.
	need := xerialHeaderSize
	for rest := len(src); rest > 0; rest -= xerialBlockSize {
		need += 4 + s2.MaxEncodedLen(min(rest, xerialBlockSize))
	}
	dst = slices.Grow(dst, need)
	dst = append(dst, xerialMagic...)
	dst = binary.BigEndian.AppendUint32(dst, 1) // version
	dst = binary.BigEndian.AppendUint32(dst, 1) // minimum compatible version
	for len(src) > 0 {
		chunk := src[:min(len(src), xerialBlockSize)]
		src = src[len(chunk):]
		at := len(dst)
		body := dst[at+4 : at+4+s2.MaxEncodedLen(len(chunk))]
		// EncodeSnappy writes plain snappy (no s2 extensions), in place given
		// room for the bound.
		enc := s2.EncodeSnappy(body, chunk)
		n := len(enc)
		if &enc[0] != &body[0] {
			copy(body, enc)
		}
		binary.BigEndian.PutUint32(dst[at:at+4], uint32(n))
		dst = dst[:at+4+n]
	}
	return dst
}

// lz4

// lz4Decoder is the pooled state for one LZ4 decompression.
type lz4Decoder struct {
	src   bytes.Reader
	zr    *lz4.Reader
	probe [1]byte
}

var lz4Decoders sync.Pool // *lz4Decoder

func decompressLZ4(dst, src []byte, limit int) ([]byte, error) {
	d, _ := lz4Decoders.Get().(*lz4Decoder)
	if d == nil {
		// The default concurrency (1) decodes on the caller's goroutine.
		d = &lz4Decoder{zr: lz4.NewReader(nil)}
	}
	defer func() {
		// Reset returns the block buffer to lz4's own pool and drops src.
		d.src.Reset(nil)
		d.zr.Reset(nil)
		lz4Decoders.Put(d)
	}()
	d.src.Reset(src)
	d.zr.Reset(&d.src)
	return readLimited(dst, d.zr, CodecLZ4, limit, lz4Hint(src), d.probe[:])
}

const (
	lz4Magic          = 0x184d2204
	lz4SkippableMagic = 0x184d2a50 // low 4 bits are the user's
	// lz4BlockRatio guesses a compressed block's expansion; full blocks hit the
	// frame's block size first at the ratios LZ4 reaches on real data.
	lz4BlockRatio = 8
)

// lz4Hint walks the frame and block headers of src, without decoding, for the
// decoded size: a frame's declared content size (which Kafka's producers do not
// write), else its stored blocks' sizes plus a guess per compressed block, never
// more than the blocks can hold. It returns 2*len(src) when the headers do not
// parse; the decoder then says what is wrong.
func lz4Hint(src []byte) int {
	fallback := 2 * len(src)
	var total uint64
	for len(src) > 0 {
		if len(src) < 8 {
			return fallback
		}
		magic := binary.LittleEndian.Uint32(src)
		if magic&^0xf == lz4SkippableMagic {
			n := uint64(binary.LittleEndian.Uint32(src[4:]))
			if uint64(len(src)-8) < n {
				return fallback
			}
			src = src[8+n:]
			continue
		}
		flg, bd := src[4], src[5]
		if magic != lz4Magic || bd>>4&7 < 4 {
			return fallback
		}
		blockMax := uint64(1) << (8 + 2*(bd>>4&7)) // 4: 64 KiB … 7: 4 MiB
		pos := uint64(6)
		declared, hasSize := uint64(0), flg&0x08 != 0
		if hasSize {
			if uint64(len(src)) < pos+8 {
				return fallback
			}
			declared = binary.LittleEndian.Uint64(src[pos:])
			pos += 8
		}
		if flg&0x01 != 0 {
			pos += 4 // dictionary id
		}
		pos++ // header checksum
		var guess, bound uint64
		for {
			if uint64(len(src)) < pos+4 {
				return fallback
			}
			bs := binary.LittleEndian.Uint32(src[pos:])
			pos += 4
			if bs == 0 {
				break // end mark
			}
			n := uint64(bs & 0x7fffffff)
			if bs&0x80000000 != 0 { // stored uncompressed
				guess += n
				bound += n
			} else {
				guess += min(blockMax, lz4BlockRatio*n)
				bound += blockMax
			}
			pos += n
			if flg&0x10 != 0 {
				pos += 4 // block checksum
			}
		}
		if flg&0x04 != 0 {
			pos += 4 // content checksum
		}
		if uint64(len(src)) < pos {
			return fallback
		}
		if hasSize {
			guess = min(declared, bound)
		}
		total += guess
		src = src[pos:]
	}
	return int(min(total, math.MaxInt32))
}

// lz4Encoder is the pooled state for one LZ4 compression.
type lz4Encoder struct {
	out appendWriter
	zw  *lz4.Writer
}

var lz4Encoders sync.Pool // *lz4Encoder

func compressLZ4(dst, src []byte) ([]byte, error) {
	e, _ := lz4Encoders.Get().(*lz4Encoder)
	if e == nil {
		e = &lz4Encoder{zw: lz4.NewWriter(nil)}
		// 64 KiB blocks, as Kafka's Java producer writes: every reader accepts them,
		// and batches are rarely large enough to gain from bigger ones, which would
		// cost a 4 MiB block buffer per reader. Blocks are always independent, which
		// the Java consumer requires.
		if err := e.zw.Apply(lz4.BlockSizeOption(lz4.Block64Kb), lz4.ConcurrencyOption(1)); err != nil {
			return dst, fmt.Errorf("objectlog: lz4: %w", err)
		}
	}
	e.out.b = dst
	e.zw.Reset(&e.out)
	_, err := e.zw.Write(src)
	if err == nil {
		err = e.zw.Close()
	}
	out := e.out.b
	e.out.b = nil
	e.zw.Reset(nil)
	lz4Encoders.Put(e)
	if err != nil {
		return dst, fmt.Errorf("objectlog: lz4: %w", err)
	}
	return out, nil
}

// zstd
//
// zstd is decoded with DecodeAll rather than as a stream: a stream decoder allocates
// a ring buffer of the frame's declared window (2 MiB from Kafka's Java producer at
// the default level, up to 128 MiB at level 22, however small the batch) before
// producing a byte, whereas DecodeAll keeps history in the output itself. DecodeAll
// is bounded by the capacity it is handed (WithDecodeAllCapLimit), so the output
// buffer is sized from the headers and grown by retrying.
//
// Running out of capacity inside a compressed block is reported like corruption
// ("output bigger than max block size"), so an error is only taken as corruption
// once the buffer had room for a whole block past everything decoded: a block never
// produces more than 128 KiB.

const (
	// zstdMaxWindow is libzstd's default decoder limit (windowLog 27): a frame
	// needing more would not be readable by consumers using libzstd or zstd-jni.
	zstdMaxWindow = 1 << 27
	// zstdMaxBlock is the most one block decodes to.
	zstdMaxBlock = 128 << 10
	// zstdSlack is spare capacity beyond the target so the decoder's overcopying
	// fast paths stay in use at the end of the output.
	zstdSlack = 64
	// zstdBlockRatio guesses a compressed block's expansion when nothing says how
	// much it decodes to; full blocks hit the 128 KiB cap first at any common ratio.
	zstdBlockRatio = 16
)

var zstdDecoders sync.Pool // *zstd.Decoder

func decompressZstd(dst, src []byte, limit int) ([]byte, error) {
	sizes, err := scanZstd(src)
	if err != nil {
		return dst, err
	}
	if sizes.least > uint64(limit) {
		return dst, tooLarge(CodecZstd, limit)
	}
	want := int(min(sizes.estimate, uint64(limit)+1))
	// bound is the most worth making room for; known says the headers proved it.
	bound, known := limit, false
	if sizes.bound <= uint64(limit) {
		bound, known = int(sizes.bound), true
	}

	d, _ := zstdDecoders.Get().(*zstd.Decoder)
	if d == nil {
		var err error
		d, err = zstd.NewReader(nil,
			// One block decoder, used on the caller's goroutine: the pool
			// provides the parallelism.
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecodeAllCapLimit(true),
			// The output is bounded by the capacity handed to DecodeAll; the
			// default WithDecoderMaxMemory (64 GiB) must stay above the window,
			// which it would otherwise lower.
			zstd.WithDecoderMaxWindow(zstdMaxWindow),
		)
		if err != nil {
			return dst, fmt.Errorf("objectlog: zstd: %w", err)
		}
	}
	defer zstdDecoders.Put(d)

	start := len(dst)
	buf := dst
	room := zstdSlack
	for {
		want = min(want, bound)
		size := want + room
		// Spare capacity the caller provided costs nothing: use it, up to what the
		// limit can need, and forgo the slack if it is all that is missing.
		if spare := min(cap(buf)-start, limit+zstdMaxBlock+zstdSlack); spare >= size || spare >= want && room == zstdSlack {
			size = spare
			want = min(max(want, size-room), bound)
		}
		buf = slices.Grow(buf[:start], size)
		out, err := d.DecodeAll(src, buf[:start:start+size])
		produced := 0
		if len(out) > start {
			produced = len(out) - start
		}
		// Whether the error may only mean that the buffer was full: the headers
		// did not prove the output fits, and the block after what was decoded
		// could have run out of room.
		full := !(known && size >= bound) &&
			(produced+zstdMaxBlock > size || errors.Is(err, zstd.ErrDecoderSizeExceeded))
		switch {
		case err == nil:
			if produced > limit {
				return dst, tooLarge(CodecZstd, limit)
			}
			return out, nil
		case errors.Is(err, zstd.ErrWindowSizeExceeded):
			return dst, fmt.Errorf("%w: zstd: frame window exceeds %d bytes", ErrCorrupt, zstdMaxWindow)
		case !full:
			return dst, corrupt(CodecZstd, err)
		case want < bound:
			want = max(2*want, minGrowth)
			if want > bound/2 {
				// Close enough to the bound not to risk another retry.
				want = bound
			}
			room = zstdMaxBlock + zstdSlack
		case room < zstdMaxBlock+zstdSlack:
			room = zstdMaxBlock + zstdSlack
		default:
			return dst, tooLarge(CodecZstd, limit)
		}
	}
}

// zstdSizes is what the frame and block headers say about the decoded size.
type zstdSizes struct {
	least    uint64 // declared content sizes, else raw and RLE sizes: the output if the input is valid
	estimate uint64 // least plus a guess per compressed block of frames without a content size
	bound    uint64 // the most the blocks can decode to
}

// scanZstd walks the frame and block headers of src without decoding anything. Its
// errors wrap ErrCorrupt: headers that do not parse (truncation, garbage, reserved
// block types, bytes after the last frame) or a declared content size that the
// frame's blocks cannot hold. Rejecting these here spares the decoder, and the
// retries that size its output, from ever seeing them.
func scanZstd(src []byte) (zstdSizes, error) {
	var (
		s zstdSizes
		h zstd.Header
	)
	end := len(src)
	malformed := func(what string) error {
		return fmt.Errorf("%w: zstd: frame at offset %d: %s", ErrCorrupt, end-len(src), what)
	}
	for len(src) > 0 {
		rest, err := h.DecodeAndStrip(src)
		if err != nil {
			return s, malformed("header: " + err.Error())
		}
		if h.Skippable {
			if uint64(len(rest)) < uint64(h.SkippableSize) {
				return s, malformed("skippable frame truncated")
			}
			src = rest[h.SkippableSize:]
			continue
		}
		window := h.WindowSize
		if h.SingleSegment {
			window = h.FrameContentSize
		}
		// klauspost's decoder raises small windows to the 1 KiB minimum; bound
		// as generously, so that no frame it accepts is called a liar.
		blockMax := uint64(min(max(window, zstd.MinWindowSize), zstdMaxBlock))
		var least, bound, estimate uint64
		for last := false; !last; {
			if len(rest) < 3 {
				return s, malformed("block header truncated")
			}
			bh := uint32(rest[0]) | uint32(rest[1])<<8 | uint32(rest[2])<<16
			rest = rest[3:]
			last = bh&1 != 0
			size := uint64(bh >> 3)
			stored := size
			switch bh >> 1 & 3 {
			case 0: // raw
				least += size
				bound += size
				estimate += size
			case 1: // RLE: one byte, repeated size times
				least += size
				bound += size
				estimate += size
				stored = 1
			case 2: // compressed
				bound += blockMax
				estimate += min(blockMax, zstdBlockRatio*size)
			default:
				return s, malformed("reserved block type")
			}
			if uint64(len(rest)) < stored {
				return s, malformed("block truncated")
			}
			rest = rest[stored:]
		}
		if h.HasCheckSum {
			if len(rest) < 4 {
				return s, malformed("checksum truncated")
			}
			rest = rest[4:]
		}
		if h.HasFCS {
			if h.FrameContentSize > bound {
				return s, malformed(fmt.Sprintf("content size %d exceeds the %d bytes its blocks can hold", h.FrameContentSize, bound))
			}
			least = h.FrameContentSize
			estimate = least
		}
		s.least += least
		s.bound += bound
		s.estimate += estimate
		src = rest
	}
	return s, nil
}

var zstdEncoders sync.Pool // *zstd.Encoder

func compressZstd(dst, src []byte) ([]byte, error) {
	e, _ := zstdEncoders.Get().(*zstd.Encoder)
	if e == nil {
		var err error
		e, err = zstd.NewWriter(nil,
			zstd.WithEncoderConcurrency(1),
			// SpeedDefault is about libzstd's level 3, Kafka's default.
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithLowerEncoderMem(true),
			// An empty input still gets a frame: zero bytes are not a valid body.
			zstd.WithZeroFrames(true),
		)
		if err != nil {
			return dst, fmt.Errorf("objectlog: zstd: %w", err)
		}
	}
	dst = e.EncodeAll(src, dst)
	zstdEncoders.Put(e)
	return dst, nil
}
