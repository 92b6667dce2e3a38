package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Errors of the request frame decoder. Every one of them closes the connection: the
// stream can no longer be trusted to be aligned on a request.
var (
	// ErrFrameTooLarge: the size prefix exceeds socket.request.max.bytes.
	ErrFrameTooLarge = errors.New("agent: request frame too large")
	// ErrBadFrame: the frame is not a Kafka request (short header, negative size,
	// bad client id or tagged fields, a body that does not decode).
	ErrBadFrame = errors.New("agent: malformed request frame")
	// ErrUnknownAPI: the API key is not one this agent serves.
	ErrUnknownAPI = errors.New("agent: unknown API key")
)

// request is one decoded request frame.
type request struct {
	key           int16
	version       int16
	correlationID int32
	clientID      string
	// msg is the decoded body; nil when the version is unsupported (ApiVersions is
	// then answered with UNSUPPORTED_VERSION, anything else closes the connection).
	msg  kmsg.Request
	size int // frame bytes, for logs and limits
}

// readFrame reads one size-prefixed frame. It never allocates more than the bytes
// that actually arrived (at most doubling what arrived): a size prefix promising 100 MiB and
// delivering 10 bytes costs 10 bytes, not 100 MiB.
func readFrame(r io.Reader, limit int32) ([]byte, error) {
	var szb [4]byte
	if _, err := io.ReadFull(r, szb[:]); err != nil {
		return nil, err
	}
	size := int32(binary.BigEndian.Uint32(szb[:]))
	switch {
	case size < 0:
		return nil, fmt.Errorf("%w: negative size %d", ErrBadFrame, size)
	case size > limit:
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, size, limit)
	case size < 8: // key, version, correlation id
		return nil, fmt.Errorf("%w: %d bytes is shorter than a request header", ErrBadFrame, size)
	}
	const step = 1 << 20
	n := int(size)
	if n <= step {
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, unexpected(err)
		}
		return buf, nil
	}
	// Large frame: grow with what arrives.
	var buf []byte
	for len(buf) < n {
		want := min(n-len(buf), max(len(buf), step))
		if cap(buf)-len(buf) < want {
			nb := make([]byte, len(buf), len(buf)+want)
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):len(buf)+want])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, unexpected(err)
		}
	}
	return buf, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseRequest decodes a frame (without its size prefix): the request header, then
// the body as the kmsg request of that key and version. The body's strings and
// byte slices may alias frame, which must not be reused while the request lives.
func parseRequest(frame []byte) (*request, error) {
	if len(frame) < 8 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than a request header", ErrBadFrame, len(frame))
	}
	r := &request{
		key:           int16(binary.BigEndian.Uint16(frame[0:])),
		version:       int16(binary.BigEndian.Uint16(frame[2:])),
		correlationID: int32(binary.BigEndian.Uint32(frame[4:])),
		size:          len(frame),
	}
	rest := frame[8:]
	// Client id: a nullable int16-length string, in every header version.
	if len(rest) < 2 {
		return nil, fmt.Errorf("%w: no client id", ErrBadFrame)
	}
	idLen := int16(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if idLen > 0 {
		if int(idLen) > len(rest) {
			return nil, fmt.Errorf("%w: client id of %d bytes, %d left", ErrBadFrame, idLen, len(rest))
		}
		r.clientID = string(rest[:idLen])
		rest = rest[idLen:]
	} else if idLen < -1 {
		return nil, fmt.Errorf("%w: client id length %d", ErrBadFrame, idLen)
	}
	a, ok := apis[r.key]
	if !ok {
		return r, fmt.Errorf("%w %d", ErrUnknownAPI, r.key)
	}
	if r.version < a.min || r.version > a.max {
		return r, nil // the handler table decides: UNSUPPORTED_VERSION or close
	}
	// kmsg's decoding allocates up to ~100x the frame for adversarial input (a Go
	// struct and a tag map per array element of a few bytes). Only Produce may be
	// large, and its shape is checked first; everything else is capped.
	if r.key != 0 && len(frame) > MaxNonProduceFrame {
		return nil, fmt.Errorf("%w: %s request of %d bytes; only Produce may exceed %d",
			ErrFrameTooLarge, kmsg.NameForKey(r.key), len(frame), MaxNonProduceFrame)
	}
	msg := kmsg.RequestForKey(r.key)
	msg.SetVersion(r.version)
	if msg.IsFlexible() {
		var err error
		if rest, err = skipTags(rest); err != nil {
			return nil, err
		}
		if r.key == 0 {
			if err := checkProduceShape(rest, r.version); err != nil {
				return nil, err
			}
		}
	}
	if err := msg.ReadFrom(rest); err != nil {
		return nil, fmt.Errorf("%w: %s v%d body: %v", ErrBadFrame, kmsg.NameForKey(r.key), r.version, err)
	}
	r.msg = msg
	return r, nil
}

// MaxNonProduceFrame caps every request but Produce, whatever socket.request.max.bytes
// says: no other request needs more, and decoding one costs up to ~100x its size.
const MaxNonProduceFrame = 1 << 20

// checkProduceShape walks a flexible Produce body (v9+) before kmsg decodes it and
// refuses tagged fields inside topics and partitions: Kafka defines none there, and
// each one would cost a map allocation of hundreds of bytes for three bytes of frame.
// Without them a Produce decodes into a few dozen bytes per partition at most.
func checkProduceShape(b []byte, version int16) error {
	bad := func(what string) error { return fmt.Errorf("%w: produce: %s", ErrBadFrame, what) }
	var err error
	var n uint64
	skip := func(k uint64) bool {
		if k > uint64(len(b)) {
			return false
		}
		b = b[k:]
		return true
	}
	if n, b, err = uvarint(b); err != nil || n > 0 && !skip(n-1) { // transactional id
		return bad("transactional id")
	}
	if !skip(6) { // acks, timeout
		return bad("truncated")
	}
	var topics uint64
	if topics, b, err = uvarint(b); err != nil || topics > uint64(len(b))+1 {
		return bad("topic count")
	}
	for range int(topics) - 1 {
		if version >= 13 {
			if !skip(16) {
				return bad("topic id")
			}
		} else if n, b, err = uvarint(b); err != nil || n == 0 || !skip(n-1) {
			return bad("topic name")
		}
		var parts uint64
		if parts, b, err = uvarint(b); err != nil || parts > uint64(len(b))+1 {
			return bad("partition count")
		}
		for range int(parts) - 1 {
			if !skip(4) {
				return bad("partition")
			}
			if n, b, err = uvarint(b); err != nil || n > 0 && !skip(n-1) {
				return bad("records")
			}
			if n, b, err = uvarint(b); err != nil || n != 0 {
				return bad("tagged fields in a partition")
			}
		}
		if n, b, err = uvarint(b); err != nil || n != 0 {
			return bad("tagged fields in a topic")
		}
	}
	return nil
}

// skipTags skips a flexible header's tagged fields (Strata defines none).
func skipTags(b []byte) ([]byte, error) {
	n, b, err := uvarint(b)
	if err != nil {
		return nil, err
	}
	if n > uint64(len(b)) { // each field takes at least two bytes
		return nil, fmt.Errorf("%w: %d tagged fields in %d bytes", ErrBadFrame, n, len(b))
	}
	for range n {
		if _, b, err = uvarint(b); err != nil { // tag
			return nil, err
		}
		var size uint64
		if size, b, err = uvarint(b); err != nil {
			return nil, err
		}
		if size > uint64(len(b)) {
			return nil, fmt.Errorf("%w: tagged field of %d bytes, %d left", ErrBadFrame, size, len(b))
		}
		b = b[size:]
	}
	return b, nil
}

func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || v > 1<<31 {
		return 0, nil, fmt.Errorf("%w: bad varint in header", ErrBadFrame)
	}
	return v, b[n:], nil
}

// appendResponse appends one response frame: size, correlation id, the flexible
// header's empty tag section (never for ApiVersions, whose response header is always
// v0 so that a client can read it before it knows our versions), then the body.
func appendResponse(dst []byte, key int16, correlationID int32, resp kmsg.Response) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(correlationID))
	if resp.IsFlexible() && key != 18 {
		dst = append(dst, 0)
	}
	dst = resp.AppendTo(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}
