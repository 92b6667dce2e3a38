package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// The offset index holds one entry per committed chunk, the state's largest table, so
// its values are a compact binary form rather than protobuf. The key carries topic,
// partition and last offset; the value, version 1:
//
//	byte    version (1)
//	uvarint last offset - base offset
//	16      segment id
//	uvarint chunk position
//	uvarint chunk length
//	varint  max timestamp
//	uvarint batch count
//	uvarint record count
//	uvarint flags (objectlog.ChunkFlags)
//
// A typical entry is ~35 bytes of value and 29 of key.
//
// A compaction output (level > 0 or cleaned) is version 3: version 1's fields, then
//
//	uvarint level
//	varint  cleaned ms (0: never key-compacted)
//
// A transaction marker (a control record with no segment behind it; readers build
// its batch) is version 2:
//
//	byte    version (2)
//	byte    marker (1 abort, 2 commit)
//	varint  producer id
//	uvarint producer epoch
//	varint  timestamp
const (
	indexValueVersion     = 1
	markerValueVersion    = 2
	compactedValueVersion = 3
)

// ErrCorrupt marks state that does not decode: a bug or a damaged disk, never input.
var ErrCorrupt = errors.New("state: corrupt state")

func encodeIndexValue(e *pb.IndexEntry) []byte {
	if e.Marker != 0 {
		b := make([]byte, 0, 24)
		b = append(b, markerValueVersion, byte(e.Marker))
		b = binary.AppendVarint(b, e.ProducerId)
		b = binary.AppendUvarint(b, uint64(e.ProducerEpoch))
		return binary.AppendVarint(b, e.MaxTimestamp)
	}
	b := make([]byte, 0, 56)
	version := byte(indexValueVersion)
	if e.Level != 0 || e.CleanedMs != 0 {
		version = compactedValueVersion
	}
	b = append(b, version)
	b = binary.AppendUvarint(b, uint64(e.LastOffset-e.BaseOffset))
	b = append(b, e.SegmentId...)
	b = binary.AppendUvarint(b, uint64(e.Position))
	b = binary.AppendUvarint(b, uint64(e.Length))
	b = binary.AppendVarint(b, e.MaxTimestamp)
	b = binary.AppendUvarint(b, uint64(e.BatchCount))
	b = binary.AppendUvarint(b, uint64(e.RecordCount))
	b = binary.AppendUvarint(b, uint64(e.Flags))
	if version == compactedValueVersion {
		b = binary.AppendUvarint(b, uint64(e.Level))
		b = binary.AppendVarint(b, e.CleanedMs)
	}
	return b
}

// decodeIndexEntry rebuilds an entry from its key (after the prefix byte) and value.
func decodeIndexEntry(key, val []byte) (*pb.IndexEntry, error) {
	if len(key) == 1+16+4+8 && len(val) > 2 && val[0] == markerValueVersion {
		return decodeMarker(key, val)
	}
	if len(key) != 1+16+4+8 || len(val) < 1+1+16 || (val[0] != indexValueVersion && val[0] != compactedValueVersion) {
		return nil, fmt.Errorf("%w: index entry key %x value %x", ErrCorrupt, key, val)
	}
	e := &pb.IndexEntry{
		TopicId:    append([]byte(nil), key[1:17]...),
		Partition:  int32(binary.BigEndian.Uint32(key[17:21])),
		LastOffset: int64(binary.BigEndian.Uint64(key[21:29])),
	}
	v := val[1:]
	uv := func() uint64 {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			v = nil
			return 0
		}
		v = v[n:]
		return x
	}
	span := uv()
	if len(v) < 16 {
		return nil, fmt.Errorf("%w: index entry value %x", ErrCorrupt, val)
	}
	e.SegmentId = append([]byte(nil), v[:16]...)
	v = v[16:]
	e.Position = int64(uv())
	e.Length = int64(uv())
	ts, n := binary.Varint(v)
	if n <= 0 {
		return nil, fmt.Errorf("%w: index entry value %x", ErrCorrupt, val)
	}
	v = v[n:]
	e.MaxTimestamp = ts
	e.BatchCount = int32(uv())
	e.RecordCount = int32(uv())
	flags := uv()
	if v != nil && val[0] == compactedValueVersion {
		level := uv()
		if v != nil && level <= math.MaxInt16 {
			e.Level = int32(level)
			cleaned, n := binary.Varint(v)
			if n <= 0 {
				v = nil
			} else {
				e.CleanedMs, v = cleaned, v[n:]
			}
		} else {
			v = nil
		}
	}
	if v == nil || len(v) != 0 || flags > math.MaxUint32 {
		return nil, fmt.Errorf("%w: index entry value %x", ErrCorrupt, val)
	}
	e.Flags = uint32(flags)
	e.BaseOffset = e.LastOffset - int64(span)
	return e, nil
}

func decodeMarker(key, val []byte) (*pb.IndexEntry, error) {
	e := &pb.IndexEntry{
		TopicId:     append([]byte(nil), key[1:17]...),
		Partition:   int32(binary.BigEndian.Uint32(key[17:21])),
		LastOffset:  int64(binary.BigEndian.Uint64(key[21:29])),
		Marker:      int32(val[1]),
		BatchCount:  1,
		RecordCount: 1,
	}
	e.BaseOffset = e.LastOffset
	v := val[2:]
	pid, n := binary.Varint(v)
	if n <= 0 {
		return nil, fmt.Errorf("%w: marker value %x", ErrCorrupt, val)
	}
	v = v[n:]
	epoch, n := binary.Uvarint(v)
	if n <= 0 || epoch > math.MaxInt16 {
		return nil, fmt.Errorf("%w: marker value %x", ErrCorrupt, val)
	}
	v = v[n:]
	ts, n := binary.Varint(v)
	if n <= 0 || n != len(v) || (e.Marker != pb.MarkerAbort && e.Marker != pb.MarkerCommit) {
		return nil, fmt.Errorf("%w: marker value %x", ErrCorrupt, val)
	}
	e.ProducerId, e.ProducerEpoch, e.MaxTimestamp = pid, int32(epoch), ts
	return e, nil
}
