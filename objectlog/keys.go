package objectlog

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// SegmentID names one segment object. Its first 8 bytes are the creation time in Unix
// milliseconds (big-endian, so ids sort by time) and the other 8 are random: two agents
// never pick the same id, and a retried upload reuses its id (CommitSegment is
// idempotent on it).
type SegmentID [16]byte

// NewSegmentID makes an id from a time and 8 random bytes. Callers pass their own
// randomness so that tests are deterministic.
func NewSegmentID(t time.Time, random [8]byte) SegmentID {
	var id SegmentID
	binary.BigEndian.PutUint64(id[:8], uint64(t.UnixMilli()))
	copy(id[8:], random[:])
	return id
}

// Time is the creation time the id carries.
func (id SegmentID) Time() time.Time {
	return time.UnixMilli(int64(binary.BigEndian.Uint64(id[:8])))
}

// String is the id as 32 lowercase hex digits.
func (id SegmentID) String() string { return hex.EncodeToString(id[:]) }

// ParseSegmentID parses the form String produces.
func ParseSegmentID(s string) (SegmentID, error) {
	var id SegmentID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("objectlog: segment id %q: want %d hex digits", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil || strings.ToLower(s) != s {
		return id, fmt.Errorf("objectlog: segment id %q: not lowercase hex", s)
	}
	return id, nil
}

// SegmentPrefix is the key prefix under which every segment object lives.
const SegmentPrefix = "segments/"

// SegmentKey is the object key of a segment: "segments/<xx>/<id>.seg", where xx is the
// id's last (random) byte in hex. Leading with a random shard spreads writes over 256
// key prefixes, which S3 partitions independently, instead of piling every new segment
// onto the time-ordered tail of one prefix.
func SegmentKey(id SegmentID) string {
	var b strings.Builder
	b.Grow(len(SegmentPrefix) + 3 + 32 + 4)
	b.WriteString(SegmentPrefix)
	b.WriteString(hex.EncodeToString(id[15:]))
	b.WriteByte('/')
	b.WriteString(id.String())
	b.WriteString(".seg")
	return b.String()
}

// ParseSegmentKey returns the id in a key SegmentKey produced, checking the shard.
func ParseSegmentKey(key string) (SegmentID, error) {
	rest, ok := strings.CutPrefix(key, SegmentPrefix)
	if !ok || len(rest) != 3+32+4 || rest[2] != '/' || !strings.HasSuffix(rest, ".seg") {
		return SegmentID{}, fmt.Errorf("objectlog: %q is not a segment key", key)
	}
	id, err := ParseSegmentID(rest[3 : 3+32])
	if err != nil {
		return SegmentID{}, err
	}
	if SegmentKey(id) != key {
		return SegmentID{}, fmt.Errorf("objectlog: segment key %q has the wrong shard", key)
	}
	return id, nil
}
