package agent

// DescribeConfigs (key 32), versions 0-4.
//
// TOPIC resources list every topic config Kafka defines (topicConfigs below, the one
// table of topic config defaults and types that CreateTopics and the alter handlers
// also use): a value the topic sets is DYNAMIC_TOPIC_CONFIG, anything else its
// default. The defaults are what Strata does, which is Kafka's default except where
// a broker flag decides it (max.message.bytes follows the agent's message.max.bytes,
// reported as STATIC_BROKER_CONFIG when it differs from Kafka's). ConfigNames
// filters (null: all; unknown names are left out), v1+ synonyms list the effective
// value first, then the broker flag and the default under the broker-level name;
// v3+ carries config types and, when asked, a line of documentation.
//
// BROKER resources list the agent's own settings (its flags) and the broker-level
// defaults of the topic configs, all read-only: broker configs are static flags in
// Strata. The name is this agent's node id, or "" for the cluster default, which
// answers the same list (every agent of a cluster runs with the same flags).
// Another node id gets INVALID_REQUEST: only that agent knows its flags, and Kafka
// clients send broker resources to the broker they name.
//
// Other resource types (BROKER_LOGGER, CLIENT_METRICS, GROUP) get INVALID_REQUEST
// with a message. A topic that does not exist is UNKNOWN_TOPIC_OR_PARTITION; a
// malformed topic name INVALID_TOPIC_EXCEPTION.

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/topicconfig"
)

// topicConfig is one topic-level config Kafka defines.
type topicConfig struct {
	name   string
	def    string // Strata's default ("" for Kafka's empty lists)
	typ    kmsg.ConfigType
	broker string // the broker-level config that sets the default in Kafka
	doc    string
}

// kafkaMessageMaxBytes is Kafka's default message.max.bytes.
const kafkaMessageMaxBytes = 1048588

var maxLong = strconv.FormatInt(math.MaxInt64, 10)

// topicConfigs is the one table of topic configs: Kafka's names, types and broker
// synonyms, with the defaults Strata applies. Sorted by name. The metastore's
// topicconfig.Validate accepts exactly these names; a test keeps the two in step.
var topicConfigs = []topicConfig{
	{"cleanup.policy", "delete", kmsg.ConfigTypeList, "log.cleanup.policy",
		"delete: retention removes old data; compact: key compaction keeps the latest record per key; both may be listed."},
	{"compression.gzip.level", "-1", kmsg.ConfigTypeInt, "compression.gzip.level",
		"Level used when compression.type is gzip."},
	{"compression.lz4.level", "9", kmsg.ConfigTypeInt, "compression.lz4.level",
		"Level used when compression.type is lz4."},
	{"compression.type", "producer", kmsg.ConfigTypeString, "compression.type",
		"producer keeps batches as sent; uncompressed, gzip, snappy, lz4 or zstd recompresses them before they are stored."},
	{"compression.zstd.level", "3", kmsg.ConfigTypeInt, "compression.zstd.level",
		"Level used when compression.type is zstd."},
	{"delete.retention.ms", "86400000", kmsg.ConfigTypeLong, "log.cleaner.delete.retention.ms",
		"How long key compaction keeps tombstones."},
	{"file.delete.delay.ms", "60000", kmsg.ConfigTypeLong, "log.segment.delete.delay.ms",
		"Accepted for compatibility; unreferenced objects are removed by garbage collection."},
	{"flush.messages", maxLong, kmsg.ConfigTypeLong, "log.flush.interval.messages",
		"Accepted for compatibility; every acknowledged write is already durable in object storage."},
	{"flush.ms", maxLong, kmsg.ConfigTypeLong, "log.flush.interval.ms",
		"Accepted for compatibility; every acknowledged write is already durable in object storage."},
	{"follower.replication.throttled.replicas", "", kmsg.ConfigTypeList, "",
		"Accepted for compatibility; there is no broker replication."},
	{"index.interval.bytes", "4096", kmsg.ConfigTypeInt, "log.index.interval.bytes",
		"Accepted for compatibility; the offset index has one entry per stored chunk."},
	{"leader.replication.throttled.replicas", "", kmsg.ConfigTypeList, "",
		"Accepted for compatibility; there is no broker replication."},
	{"local.retention.bytes", "-2", kmsg.ConfigTypeLong, "log.local.retention.bytes",
		"Accepted for compatibility; all data is in object storage."},
	{"local.retention.ms", "-2", kmsg.ConfigTypeLong, "log.local.retention.ms",
		"Accepted for compatibility; all data is in object storage."},
	{"max.compaction.lag.ms", maxLong, kmsg.ConfigTypeLong, "log.cleaner.max.compaction.lag.ms",
		"The longest a record may stay uncompacted."},
	{"max.message.bytes", strconv.Itoa(kafkaMessageMaxBytes), kmsg.ConfigTypeInt, "message.max.bytes",
		"The largest record batch accepted for the topic."},
	{"message.downconversion.enable", "true", kmsg.ConfigTypeBoolean, "log.message.downconversion.enable",
		"Accepted for compatibility; batches are never down-converted."},
	{"message.timestamp.after.max.ms", maxLong, kmsg.ConfigTypeLong, "log.message.timestamp.after.max.ms",
		"Accepted for compatibility; timestamps in the future are not refused."},
	{"message.timestamp.before.max.ms", maxLong, kmsg.ConfigTypeLong, "log.message.timestamp.before.max.ms",
		"Accepted for compatibility; timestamps in the past are not refused."},
	{"message.timestamp.difference.max.ms", maxLong, kmsg.ConfigTypeLong, "log.message.timestamp.difference.max.ms",
		"Accepted for compatibility; timestamps are not refused."},
	{"message.timestamp.type", "CreateTime", kmsg.ConfigTypeString, "log.message.timestamp.type",
		"CreateTime or LogAppendTime."},
	{"min.cleanable.dirty.ratio", "0.5", kmsg.ConfigTypeDouble, "log.cleaner.min.cleanable.ratio",
		"Share of uncompacted data that makes a partition eligible for key compaction."},
	{"min.compaction.lag.ms", "0", kmsg.ConfigTypeLong, "log.cleaner.min.compaction.lag.ms",
		"The shortest a record stays uncompacted."},
	{"min.insync.replicas", "1", kmsg.ConfigTypeInt, "min.insync.replicas",
		"Accepted for compatibility; durability comes from object storage."},
	{"preallocate", "false", kmsg.ConfigTypeBoolean, "log.preallocate",
		"Accepted for compatibility."},
	{"remote.storage.enable", "false", kmsg.ConfigTypeBoolean, "",
		"Accepted for compatibility; all data is in object storage."},
	{"retention.bytes", "-1", kmsg.ConfigTypeLong, "log.retention.bytes",
		"Bytes kept per partition before retention deletes the oldest data; -1: no limit."},
	{"retention.ms", "604800000", kmsg.ConfigTypeLong, "log.retention.ms",
		"How long data is kept before retention deletes it; -1: forever."},
	{"segment.bytes", "1073741824", kmsg.ConfigTypeInt, "log.segment.bytes",
		"Size of compacted segments."},
	{"segment.index.bytes", "10485760", kmsg.ConfigTypeInt, "log.index.size.max.bytes",
		"Accepted for compatibility."},
	{"segment.jitter.ms", "0", kmsg.ConfigTypeLong, "log.roll.jitter.ms",
		"Accepted for compatibility."},
	{"segment.ms", "604800000", kmsg.ConfigTypeLong, "log.roll.ms",
		"Age after which compaction closes a compacted segment."},
	{"unclean.leader.election.enable", "false", kmsg.ConfigTypeBoolean, "unclean.leader.election.enable",
		"Accepted for compatibility; there are no replicas to elect from."},
}

// topicConfigDef returns the table entry of a topic config.
func topicConfigDef(name string) (topicConfig, bool) {
	i, ok := slices.BinarySearchFunc(topicConfigs, name, func(c topicConfig, n string) int { return strings.Compare(c.name, n) })
	if !ok {
		return topicConfig{}, false
	}
	return topicConfigs[i], true
}

// topicDefault is the value a topic has for a config it does not set, and where that
// value comes from.
func (s *Server) topicDefault(d topicConfig) (string, kmsg.ConfigSource) {
	if d.name == "max.message.bytes" && s.cfg.MessageMaxBytes != kafkaMessageMaxBytes {
		return strconv.Itoa(int(s.cfg.MessageMaxBytes)), kmsg.ConfigSourceStaticBrokerConfig
	}
	return d.def, kmsg.ConfigSourceDefaultConfig
}

// topicConfigValue is a topic's effective value for a config: its own, else the
// default.
func (s *Server) topicConfigValue(t *pb.Topic, name string) (string, bool) {
	if v, ok := t.GetConfigs()[name]; ok {
		return v, true
	}
	d, ok := topicConfigDef(name)
	if !ok {
		return "", false
	}
	v, _ := s.topicDefault(d)
	return v, true
}

// topicConfigEntries lists every config of a topic, sorted by name. names, when not
// nil, keeps only those.
func (s *Server) topicConfigEntries(t *pb.Topic, names []string, synonyms, docs bool) []kmsg.DescribeConfigsResponseResourceConfig {
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, d := range topicConfigs {
		if names != nil && !slices.Contains(names, d.name) {
			continue
		}
		rc := kmsg.NewDescribeConfigsResponseResourceConfig()
		rc.Name = d.name
		rc.ConfigType = d.typ
		def, defSource := s.topicDefault(d)
		defName := cmp.Or(d.broker, d.name)
		if v, ok := t.GetConfigs()[d.name]; ok {
			rc.Value, rc.Source = ptr(v), kmsg.ConfigSourceDynamicTopicConfig
		} else {
			rc.Value, rc.Source, rc.IsDefault = ptr(def), defSource, defSource == kmsg.ConfigSourceDefaultConfig
		}
		if synonyms {
			if rc.Source == kmsg.ConfigSourceDynamicTopicConfig {
				rc.ConfigSynonyms = append(rc.ConfigSynonyms, synonym(d.name, *rc.Value, rc.Source))
			}
			if defSource == kmsg.ConfigSourceStaticBrokerConfig {
				rc.ConfigSynonyms = append(rc.ConfigSynonyms, synonym(defName, def, defSource))
			}
			rc.ConfigSynonyms = append(rc.ConfigSynonyms, synonym(defName, d.def, kmsg.ConfigSourceDefaultConfig))
		}
		if docs {
			rc.Documentation = ptr(d.doc)
		}
		out = append(out, rc)
	}
	return out
}

func synonym(name, value string, src kmsg.ConfigSource) kmsg.DescribeConfigsResponseResourceConfigConfigSynonym {
	sy := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
	sy.Name, sy.Value, sy.Source = name, ptr(value), src
	return sy
}

func ptr[T any](v T) *T { return &v }

// brokerConfig is one broker-level config the agent reports.
type brokerConfig struct {
	name  string
	value *string
	typ   kmsg.ConfigType
	flag  bool // set by the agent's configuration, not Kafka's default
	doc   string
}

// brokerConfigs lists the agent's broker-level configs, sorted by name.
func (s *Server) brokerConfigs() []brokerConfig {
	cfg := &s.cfg
	out := []brokerConfig{
		{"advertised.listeners", ptr("PLAINTEXT://" + cfg.AdvertiseAddr), kmsg.ConfigTypeList, true, "Where clients connect to this agent."},
		{"auto.create.topics.enable", ptr(strconv.FormatBool(cfg.AutoCreateTopics)), kmsg.ConfigTypeBoolean, true, "Metadata requests create missing topics."},
		{"broker.id", ptr(strconv.Itoa(int(cfg.NodeID))), kmsg.ConfigTypeInt, true, "This agent's node id, a hash of its agent id."},
		{"broker.rack", nil, kmsg.ConfigTypeString, cfg.Zone != "", "This agent's zone."},
		{"connections.max.idle.ms", ptr(strconv.FormatInt(cfg.IdleTimeout.Milliseconds(), 10)), kmsg.ConfigTypeLong, true, "Idle connections are closed after this long."},
		{"default.replication.factor", ptr(strconv.Itoa(int(cfg.DefaultReplicationFactor))), kmsg.ConfigTypeInt, true, "Replication factor of topics created without one; reported only, durability comes from object storage."},
		{"delete.topic.enable", ptr("true"), kmsg.ConfigTypeBoolean, false, "Topics can be deleted."},
		{"listeners", ptr("PLAINTEXT://" + cfg.KafkaAddr), kmsg.ConfigTypeList, true, "The address the Kafka listener binds."},
		{"message.max.bytes", ptr(strconv.Itoa(int(cfg.MessageMaxBytes))), kmsg.ConfigTypeInt, cfg.MessageMaxBytes != kafkaMessageMaxBytes, "The largest record batch accepted where a topic does not set max.message.bytes."},
		{"node.id", ptr(strconv.Itoa(int(cfg.NodeID))), kmsg.ConfigTypeInt, true, "This agent's node id, a hash of its agent id."},
		{"num.partitions", ptr(strconv.Itoa(int(cfg.DefaultPartitions))), kmsg.ConfigTypeInt, true, "Partitions of topics created without a count."},
		{"socket.request.max.bytes", ptr(strconv.Itoa(int(cfg.MaxRequestBytes))), kmsg.ConfigTypeInt, true, "Larger requests close the connection."},
	}
	if cfg.Zone != "" {
		out[3].value = ptr(cfg.Zone)
	}
	have := map[string]bool{}
	for _, b := range out {
		have[b.name] = true
	}
	for _, d := range topicConfigs {
		if d.broker == "" || have[d.broker] {
			continue
		}
		have[d.broker] = true
		out = append(out, brokerConfig{d.broker, ptr(d.def), d.typ, false, "Default of the topic config " + d.name + "."})
	}
	slices.SortFunc(out, func(a, b brokerConfig) int { return strings.Compare(a.name, b.name) })
	return out
}

func serveDescribeConfigs(c *conn, r *request) reply {
	req := r.msg.(*kmsg.DescribeConfigsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	s := c.s
	synonyms := req.Version >= 1 && req.IncludeSynonyms
	docs := req.Version >= 3 && req.IncludeDocumentation
	return later(func() kmsg.Response {
		for _, rr := range req.Resources {
			sr := kmsg.NewDescribeConfigsResponseResource()
			sr.ResourceType, sr.ResourceName = rr.ResourceType, rr.ResourceName
			var err error
			switch rr.ResourceType {
			case kmsg.ConfigResourceTypeTopic:
				sr.Configs, err = s.describeTopicConfigs(c, rr, synonyms, docs)
			case kmsg.ConfigResourceTypeBroker:
				sr.Configs, err = s.describeBrokerConfigs(rr, synonyms, docs)
			default:
				err = fmt.Errorf("%w: resource type %s is not supported", errInvalidRequest, rr.ResourceType)
			}
			if err != nil {
				sr.ErrorCode, sr.ErrorMessage, sr.Configs = kafkaCode(err), errMessage(err), nil
			}
			resp.Resources = append(resp.Resources, sr)
		}
		return resp
	})
}

func (s *Server) describeTopicConfigs(c *conn, rr kmsg.DescribeConfigsRequestResource, synonyms, docs bool) ([]kmsg.DescribeConfigsResponseResourceConfig, error) {
	if err := topicconfig.ValidTopicName(rr.ResourceName); err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalidTopic, err)
	}
	ti, err := s.cat.topic(c.ctx, rr.ResourceName)
	if err != nil {
		return nil, err
	}
	if ti == nil {
		return nil, fmt.Errorf("%w: %q", errUnknownTopic, rr.ResourceName)
	}
	return s.topicConfigEntries(ti.pb, rr.ConfigNames, synonyms, docs), nil
}

func (s *Server) describeBrokerConfigs(rr kmsg.DescribeConfigsRequestResource, synonyms, docs bool) ([]kmsg.DescribeConfigsResponseResourceConfig, error) {
	if err := s.checkBrokerResource(rr.ResourceName); err != nil {
		return nil, err
	}
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, b := range s.brokerConfigs() {
		if rr.ConfigNames != nil && !slices.Contains(rr.ConfigNames, b.name) {
			continue
		}
		rc := kmsg.NewDescribeConfigsResponseResourceConfig()
		rc.Name, rc.Value, rc.ConfigType, rc.ReadOnly = b.name, b.value, b.typ, true
		rc.Source, rc.IsDefault = kmsg.ConfigSourceDefaultConfig, true
		if b.flag {
			rc.Source, rc.IsDefault = kmsg.ConfigSourceStaticBrokerConfig, false
		}
		if synonyms {
			sy := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
			sy.Name, sy.Value, sy.Source = b.name, b.value, rc.Source
			rc.ConfigSynonyms = append(rc.ConfigSynonyms, sy)
		}
		if docs {
			rc.Documentation = ptr(b.doc)
		}
		out = append(out, rc)
	}
	return out, nil
}

// checkBrokerResource accepts a BROKER resource name this agent can answer for: its
// own node id or "" (the cluster default).
func (s *Server) checkBrokerResource(name string) error {
	if name == "" {
		return nil
	}
	id, err := strconv.ParseInt(name, 10, 32)
	if err != nil {
		return fmt.Errorf("%w: broker resource name %q is not a node id", errInvalidRequest, name)
	}
	if int32(id) != s.cfg.NodeID {
		return fmt.Errorf("%w: this agent is node %d, not %d: ask that agent for its configs", errInvalidRequest, s.cfg.NodeID, id)
	}
	return nil
}
