// Package topicconfig holds Kafka's rules for topics: valid names, partition limits, and
// every topic-level config with its type and range. The metastore's state machine
// enforces them; agents use them to answer early and to describe configs. It imports
// nothing of Strata's and no storage: agents may depend on it.
package topicconfig

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Kafka's limits on topics.
const (
	MaxTopicNameLen = 249
	// MaxPartitions bounds one topic. Kafka has no hard limit; an unbounded count
	// lets one request allocate state without end.
	MaxPartitions = 100_000
)

// ValidTopicName applies Kafka's rule: 1-249 characters of [a-zA-Z0-9._-], and not
// "." or "..".
func ValidTopicName(name string) error {
	if name == "" || len(name) > MaxTopicNameLen {
		return fmt.Errorf("topic name must be 1 to %d characters, got %d", MaxTopicNameLen, len(name))
	}
	if name == "." || name == ".." {
		return fmt.Errorf("topic name %q is not allowed", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q contains a character other than ASCII alphanumerics, '.', '_' and '-'", name)
		}
	}
	return nil
}

type configKind int

const (
	kindLong configKind = iota
	kindInt
	kindBool
	kindDouble
	kindEnum
	kindList
	kindString
)

type configDef struct {
	kind     configKind
	min, max float64
	values   []string // enum values, or allowed list items
}

// defs are the topic-level configs Kafka defines, with their types and ranges.
// Strata acts on a subset (see ARCHITECTURE.md); the rest are accepted and stored so
// tools that set them keep working.
var defs = map[string]configDef{
	"cleanup.policy":                          {kind: kindList, values: []string{"delete", "compact"}},
	"compression.type":                        {kind: kindEnum, values: []string{"uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"}},
	"compression.gzip.level":                  {kind: kindInt, min: -1, max: 9},
	"compression.lz4.level":                   {kind: kindInt, min: 1, max: 17},
	"compression.zstd.level":                  {kind: kindInt, min: -131072, max: 22},
	"delete.retention.ms":                     {kind: kindLong, min: 0, max: math.MaxInt64},
	"file.delete.delay.ms":                    {kind: kindLong, min: 0, max: math.MaxInt64},
	"flush.messages":                          {kind: kindLong, min: 1, max: math.MaxInt64},
	"flush.ms":                                {kind: kindLong, min: 0, max: math.MaxInt64},
	"follower.replication.throttled.replicas": {kind: kindString},
	"index.interval.bytes":                    {kind: kindInt, min: 0, max: math.MaxInt32},
	"leader.replication.throttled.replicas":   {kind: kindString},
	"local.retention.bytes":                   {kind: kindLong, min: -2, max: math.MaxInt64},
	"local.retention.ms":                      {kind: kindLong, min: -2, max: math.MaxInt64},
	"max.compaction.lag.ms":                   {kind: kindLong, min: 1, max: math.MaxInt64},
	"max.message.bytes":                       {kind: kindInt, min: 0, max: math.MaxInt32},
	"message.downconversion.enable":           {kind: kindBool},
	"message.timestamp.after.max.ms":          {kind: kindLong, min: 0, max: math.MaxInt64},
	"message.timestamp.before.max.ms":         {kind: kindLong, min: 0, max: math.MaxInt64},
	"message.timestamp.difference.max.ms":     {kind: kindLong, min: 0, max: math.MaxInt64},
	"message.timestamp.type":                  {kind: kindEnum, values: []string{"CreateTime", "LogAppendTime"}},
	"min.cleanable.dirty.ratio":               {kind: kindDouble, min: 0, max: 1},
	"min.compaction.lag.ms":                   {kind: kindLong, min: 0, max: math.MaxInt64},
	"min.insync.replicas":                     {kind: kindInt, min: 1, max: math.MaxInt32},
	"preallocate":                             {kind: kindBool},
	"remote.storage.enable":                   {kind: kindBool},
	"retention.bytes":                         {kind: kindLong, min: -1, max: math.MaxInt64},
	"retention.ms":                            {kind: kindLong, min: -1, max: math.MaxInt64},
	"segment.bytes":                           {kind: kindInt, min: 14, max: math.MaxInt32},
	"segment.index.bytes":                     {kind: kindInt, min: 4, max: math.MaxInt32},
	"segment.jitter.ms":                       {kind: kindLong, min: 0, max: math.MaxInt64},
	"segment.ms":                              {kind: kindLong, min: 1, max: math.MaxInt64},
	"unclean.leader.election.enable":          {kind: kindBool},
}

// Validate checks one topic config against Kafka's definition.
func Validate(key, value string) error {
	def, ok := defs[key]
	if !ok {
		return fmt.Errorf("unknown topic config %q", key)
	}
	bad := func(want string) error {
		return fmt.Errorf("invalid value %q for %s: %s", value, key, want)
	}
	switch def.kind {
	case kindLong, kindInt:
		bits := 64
		if def.kind == kindInt {
			bits = 32
		}
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, bits)
		if err != nil {
			return bad(fmt.Sprintf("want a %d-bit integer", bits))
		}
		if float64(n) < def.min || float64(n) > def.max {
			return bad(fmt.Sprintf("want a value in [%.0f, %.0f]", def.min, def.max))
		}
	case kindDouble:
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || math.IsNaN(f) || f < def.min || f > def.max {
			return bad(fmt.Sprintf("want a number in [%g, %g]", def.min, def.max))
		}
	case kindBool:
		if v := strings.ToLower(strings.TrimSpace(value)); v != "true" && v != "false" {
			return bad("want true or false")
		}
	case kindEnum:
		for _, v := range def.values {
			if strings.EqualFold(strings.TrimSpace(value), v) {
				return nil
			}
		}
		return bad("want one of " + strings.Join(def.values, ", "))
	case kindList:
		items := strings.Split(value, ",")
		for _, it := range items {
			found := false
			for _, v := range def.values {
				if strings.TrimSpace(it) == v {
					found = true
				}
			}
			if !found {
				return bad("want a comma-separated list of " + strings.Join(def.values, ", "))
			}
		}
	case kindString:
		if len(value) > 1<<16 {
			return bad("too long")
		}
	}
	return nil
}

// Known reports whether key is a topic config Kafka defines.
func Known(key string) bool {
	_, ok := defs[key]
	return ok
}
