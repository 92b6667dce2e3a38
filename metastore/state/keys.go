package state

import (
	"encoding/binary"
)

// Every key in the state store starts with one of these prefixes. The numbers are
// stable: they are on disk and in snapshots. Add new ones, never renumber; a retired
// prefix stays listed, commented out, so its number is never reused.
const (
	prefixMeta      byte = 0x01 // metaKey: applied index, format version
	prefixTopic     byte = 0x10 // topic id(16) -> pb.Topic
	prefixTopicName byte = 0x11 // name -> topic id(16)
	prefixTopicNorm byte = 0x12 // name with '.' as '_' -> topic id(16): Kafka's collision rule
	prefixHead      byte = 0x13 // topic id(16) partition(4) -> pb.PartitionHead
	prefixIndex     byte = 0x14 // topic id(16) partition(4) last offset(8) -> index entry (binary, see index.go)
	prefixTimeIndex byte = 0x15 // topic id(16) partition(4) max timestamp(8, sign-flipped) -> base offset(8)
	prefixSegment   byte = 0x16 // segment id(16) -> pb.SegmentRecord
	// prefixUnrefSeg 0x17: retired (an unordered set of unreferenced segments).
	prefixIntent     byte = 0x18 // segment id(16) -> pb.UploadIntent
	prefixIntentExp  byte = 0x19 // expires ms(8, sign-flipped) segment id(16) -> empty
	prefixAgent      byte = 0x1a // agent id -> pb.AgentInfo
	prefixProducer   byte = 0x20 // idempotent and transactional producers (producers.go)
	prefixTxn        byte = 0x21 // transactions (txn.go)
	prefixGroup      byte = 0x22 // reserved: consumer groups (issue 5)
	prefixGroupOff   byte = 0x23 // committed offsets: group length (2) | group | topic id | partition
	prefixACL        byte = 0x24 // reserved: ACLs and SCRAM credentials
	prefixSchema     byte = 0x25 // reserved: schema registry
	prefixAborted    byte = 0x26 // topic id(16) partition(4) marker offset(8) -> pb.AbortedTxn
	prefixOpenTxn    byte = 0x27 // topic id(16) partition(4) first offset(8) producer id(8) -> empty
	prefixCondemned  byte = 0x28 // segment id(16) -> empty: objects GC claimed and has not reported deleted
	prefixUnrefAt    byte = 0x29 // unreferenced ms(8, sign-flipped) segment id(16) -> empty: committed segments no index entry references
	prefixGone       byte = 0x2a // deleted ms(8, sign-flipped) segment id(16) -> empty: tombstones of collected segments, purged later
	prefixEndOfState byte = 0xff // never a key: the upper bound of every scan
)

// Meta keys under prefixMeta.
var (
	keyApplied = []byte{prefixMeta, 0x01} // uint64 BE: the last Raft index applied
	keyFormat  = []byte{prefixMeta, 0x02} // uint32 BE: stateFormat
)

// stateFormat is the layout version of the keys and values in this file and
// index.go. A store written by a newer format is refused, not misread.
const stateFormat = 1

func topicKey(id []byte) []byte { return append([]byte{prefixTopic}, id...) }

func topicNameKey(name string) []byte { return append([]byte{prefixTopicName}, name...) }

func topicNormKey(name string) []byte {
	k := append([]byte{prefixTopicNorm}, name...)
	for i := 1; i < len(k); i++ {
		if k[i] == '.' {
			k[i] = '_'
		}
	}
	return k
}

// tpKey is prefix + topic id + partition: the common start of per-partition keys.
func tpKey(prefix byte, id []byte, partition int32) []byte {
	k := make([]byte, 0, 1+16+4+8+16)
	k = append(k, prefix)
	k = append(k, id...)
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

func headKey(id []byte, partition int32) []byte { return tpKey(prefixHead, id, partition) }

func indexKey(id []byte, partition int32, lastOffset int64) []byte {
	return binary.BigEndian.AppendUint64(tpKey(prefixIndex, id, partition), uint64(lastOffset))
}

func timeIndexKey(id []byte, partition int32, ts int64) []byte {
	return binary.BigEndian.AppendUint64(tpKey(prefixTimeIndex, id, partition), orderedInt64(ts))
}

func segmentKey(id []byte) []byte   { return append([]byte{prefixSegment}, id...) }
func condemnedKey(id []byte) []byte { return append([]byte{prefixCondemned}, id...) }

func goneKey(ms int64, id []byte) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{prefixGone}, orderedInt64(ms)), id...)
}

func unrefAtKey(ms int64, id []byte) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{prefixUnrefAt}, orderedInt64(ms)), id...)
}
func intentKey(id []byte) []byte { return append([]byte{prefixIntent}, id...) }

// groupOffsetsKey is the prefix of one group's committed offsets; the group's length
// comes first so that no group's keys are a prefix of another's.
func groupOffsetsKey(group string) []byte {
	k := make([]byte, 0, 3+len(group)+20)
	k = append(k, prefixGroupOff)
	k = binary.BigEndian.AppendUint16(k, uint16(len(group)))
	return append(k, group...)
}

func groupOffsetKey(group string, topic []byte, partition int32) []byte {
	k := append(groupOffsetsKey(group), topic...)
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}
func agentKey(id string) []byte { return append([]byte{prefixAgent}, id...) }
func intentExpKey(expires int64, id []byte) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixIntentExp}, orderedInt64(expires))
	return append(k, id...)
}

// orderedInt64 maps int64 to uint64 so that byte order equals numeric order.
func orderedInt64(v int64) uint64 { return uint64(v) ^ (1 << 63) }

// upperBound is the smallest key greater than every key starting with prefix.
func upperBound(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{prefixEndOfState}
}
