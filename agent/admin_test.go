package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/topicconfig"
)

// The admin APIs, driven by franz-go against a real agent: kadm where it reaches,
// raw kmsg requests for the fields and versions it does not.

// send issues a raw request to s itself (no sharding by the client, so requests
// naming unknown brokers or partitions still reach it) and returns its typed response.
func send[R kmsg.Response](t *testing.T, s *Server, cl *kgo.Client, req kmsg.Request) R {
	t.Helper()
	resp, err := cl.Broker(int(s.NodeID())).Request(testContext(t), req)
	if err != nil {
		t.Fatalf("%s: %v", kmsg.NameForKey(req.Key()), err)
	}
	return resp.(R)
}

// pinned is a client speaking at most version v of API key.
func pinned(t *testing.T, s *Server, key, v int16) *kgo.Client {
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(key, v)
	return kafkaClient(t, s, kgo.MaxVersions(vs))
}

func wantErr(t *testing.T, what string, got error, want *kerr.Error) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Fatalf("%s: %v, want no error", what, got)
		}
		return
	}
	if !errors.Is(got, want) {
		t.Fatalf("%s: %v, want %s", what, got, want.Message)
	}
}

func wantCode(t *testing.T, what string, got int16, want *kerr.Error) {
	t.Helper()
	wantCode := int16(0)
	if want != nil {
		wantCode = want.Code
	}
	if got != wantCode {
		t.Fatalf("%s: error %v, want %v", what, kerr.ErrorForCode(got), kerr.ErrorForCode(wantCode))
	}
}

func configMap(t *testing.T, adm *kadm.Client, topic string) map[string]kadm.Config {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(testContext(t), topic)
	if err != nil {
		t.Fatalf("describe configs of %s: %v", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe configs of %s: %v %v", topic, err, rc.Err)
	}
	out := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		out[c.Key] = c
	}
	return out
}

func configValue(t *testing.T, adm *kadm.Client, topic, key string) string {
	t.Helper()
	c := configMap(t, adm, topic)[key]
	return c.MaybeValue()
}

// topicPartitions asks the agent (not kgo's metadata cache, which kadm.ListTopics
// reads) for a topic's partition count and id; -1 when it does not exist.
func topicPartitions(t *testing.T, s *Server, cl *kgo.Client, topic string) (int, [16]byte) {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp := send[*kmsg.MetadataResponse](t, s, cl, req)
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		return -1, [16]byte{}
	}
	return len(resp.Topics[0].Partitions), resp.Topics[0].TopicID
}

func TestAdminCreateTopics(t *testing.T) {
	s := startAgent(t, withConfig(func(c *Config) { c.DefaultPartitions = 2; c.DefaultReplicationFactor = 3 }))
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)
	ctx := testContext(t)

	rs, err := adm.CreateTopics(ctx, 3, -1, map[string]*string{"retention.ms": kadm.StringPtr("1000"), "cleanup.policy": kadm.StringPtr("compact")}, "orders")
	if err != nil {
		t.Fatal(err)
	}
	r := rs["orders"]
	wantErr(t, "create orders", r.Err, nil)
	if r.NumPartitions != 3 || r.ReplicationFactor != 3 || r.ID == [16]byte{} {
		t.Fatalf("create orders answered %d partitions, rf %d, id %v", r.NumPartitions, r.ReplicationFactor, r.ID)
	}
	if n, id := topicPartitions(t, s, cl, "orders"); n != 3 || id != r.ID {
		t.Fatalf("metadata: %d partitions, id %v; want 3, %v", n, id, r.ID)
	}
	cfgs := configMap(t, adm, "orders")
	if c := cfgs["retention.ms"]; c.MaybeValue() != "1000" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms = %q from %v", c.MaybeValue(), c.Source)
	}

	// Broker defaults for -1, and the topic usable at once.
	rs, err = adm.CreateTopics(ctx, -1, -1, nil, "defaults")
	if err != nil || rs["defaults"].Err != nil {
		t.Fatalf("create with defaults: %v %v", err, rs["defaults"].Err)
	}
	if d := rs["defaults"]; d.NumPartitions != 2 || d.ReplicationFactor != 3 {
		t.Fatalf("defaults: %d partitions rf %d, want 2 and 3", d.NumPartitions, d.ReplicationFactor)
	}

	for _, tc := range []struct {
		name    string
		topic   string
		p       int32
		rf      int16
		configs map[string]*string
		want    *kerr.Error
	}{
		{"exists", "orders", 1, 1, nil, kerr.TopicAlreadyExists},
		{"bad name", "bad/name", 1, 1, nil, kerr.InvalidTopicException},
		{"dot", "..", 1, 1, nil, kerr.InvalidTopicException},
		{"too long", strings.Repeat("x", 250), 1, 1, nil, kerr.InvalidTopicException},
		{"zero partitions", "zero-p", 0, 1, nil, kerr.InvalidPartitions},
		{"negative partitions", "neg-p", -5, 1, nil, kerr.InvalidPartitions},
		{"zero rf", "zero-rf", 1, 0, nil, kerr.InvalidReplicationFactor},
		{"bad config value", "bad-value", 1, 1, map[string]*string{"retention.ms": kadm.StringPtr("soon")}, kerr.InvalidConfig},
		{"unknown config", "bad-key", 1, 1, map[string]*string{"retention.hours": kadm.StringPtr("1")}, kerr.InvalidConfig},
		{"null config", "null-config", 1, 1, map[string]*string{"retention.ms": nil}, kerr.InvalidConfig},
	} {
		rs, err := adm.CreateTopics(ctx, tc.p, tc.rf, tc.configs, tc.topic)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		wantErr(t, tc.name, rs[tc.topic].Err, tc.want)
		if rs[tc.topic].ErrMessage == "" {
			t.Errorf("%s: no error message", tc.name)
		}
		if tc.topic != "orders" {
			if n, _ := topicPartitions(t, s, cl, tc.topic); n >= 0 {
				t.Fatalf("%s: topic %q was created", tc.name, tc.topic)
			}
		}
	}

	// Validate only: a full answer, nothing created.
	rs, err = adm.ValidateCreateTopics(ctx, 4, 1, map[string]*string{"segment.ms": kadm.StringPtr("60000")}, "dry")
	if err != nil || rs["dry"].Err != nil {
		t.Fatalf("validate create: %v %v", err, rs["dry"].Err)
	}
	if rs["dry"].NumPartitions != 4 {
		t.Fatalf("validate create answered %d partitions", rs["dry"].NumPartitions)
	}
	if n, _ := topicPartitions(t, s, cl, "dry"); n >= 0 {
		t.Fatal("validate-only created the topic")
	}
	rs, err = adm.ValidateCreateTopics(ctx, 1, 1, nil, "orders")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "validate create of an existing topic", rs["orders"].Err, kerr.TopicAlreadyExists)

	topic := func(name string, p int32, rf int16) kmsg.CreateTopicsRequestTopic {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, p, rf
		return rt
	}

	t.Run("duplicate names", func(t *testing.T) {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.TimeoutMillis = 5000
		req.Topics = []kmsg.CreateTopicsRequestTopic{topic("twice", 1, 1), topic("once", 1, 1), topic("twice", 2, 1)}
		resp := send[*kmsg.CreateTopicsResponse](t, s, cl, req)
		if len(resp.Topics) != 2 {
			t.Fatalf("%d results, want one per distinct name: %+v", len(resp.Topics), resp.Topics)
		}
		for _, rt := range resp.Topics {
			switch rt.Topic {
			case "twice":
				wantCode(t, "twice", rt.ErrorCode, kerr.InvalidRequest)
			case "once":
				wantCode(t, "once", rt.ErrorCode, nil)
			default:
				t.Fatalf("result for %q", rt.Topic)
			}
		}
		if n, _ := topicPartitions(t, s, cl, "twice"); n >= 0 {
			t.Fatal("a duplicated topic was created")
		}
		if n, _ := topicPartitions(t, s, cl, "once"); n != 1 {
			t.Fatal("the other topic of the request was not created")
		}
	})

	t.Run("v7 answer", func(t *testing.T) {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.TimeoutMillis = 5000
		rt := topic("v7", 2, -1)
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = "retention.ms", kmsg.StringPtr("5000")
		rt.Configs = append(rt.Configs, c)
		req.Topics = append(req.Topics, rt)
		resp := send[*kmsg.CreateTopicsResponse](t, s, cl, req)
		if resp.Version < 7 {
			t.Fatalf("answered in v%d", resp.Version)
		}
		got := resp.Topics[0]
		wantCode(t, "create v7", got.ErrorCode, nil)
		_, id := topicPartitions(t, s, cl, "v7")
		if got.TopicID != id || id == [16]byte{} {
			t.Fatalf("v7 topic id %x, metadata %x", got.TopicID, id)
		}
		if got.NumPartitions != 2 || got.ReplicationFactor != 3 {
			t.Fatalf("v7: %d partitions, rf %d", got.NumPartitions, got.ReplicationFactor)
		}
		configs := map[string]kmsg.CreateTopicsResponseTopicConfig{}
		for _, c := range got.Configs {
			configs[c.Name] = c
		}
		if len(configs) != len(topicConfigs) {
			t.Fatalf("%d configs answered, want %d", len(configs), len(topicConfigs))
		}
		if c := configs["retention.ms"]; *c.Value != "5000" || c.Source != int8(kmsg.ConfigSourceDynamicTopicConfig) {
			t.Fatalf("retention.ms: %v from %d", *c.Value, c.Source)
		}
		if c := configs["segment.ms"]; *c.Value != "604800000" || c.Source != int8(kmsg.ConfigSourceDefaultConfig) {
			t.Fatalf("segment.ms: %v from %d", *c.Value, c.Source)
		}
	})

	t.Run("replica assignment", func(t *testing.T) {
		assign := func(rt *kmsg.CreateTopicsRequestTopic, parts ...[]int32) {
			for p, reps := range parts {
				a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
				a.Partition, a.Replicas = int32(p), reps
				rt.ReplicaAssignment = append(rt.ReplicaAssignment, a)
			}
		}
		ok := topic("assigned", -1, -1)
		assign(&ok, []int32{s.NodeID()}, []int32{s.NodeID()})
		mismatch := topic("mismatch", 3, -1)
		assign(&mismatch, []int32{1}, []int32{1})
		ragged := topic("ragged", -1, -1)
		assign(&ragged, []int32{1, 2}, []int32{1})
		gap := topic("gap", -1, -1)
		assign(&gap, []int32{1}, []int32{1})
		gap.ReplicaAssignment[1].Partition = 5

		req := kmsg.NewPtrCreateTopicsRequest()
		req.TimeoutMillis = 5000
		req.Topics = []kmsg.CreateTopicsRequestTopic{ok, mismatch, ragged, gap}
		resp := send[*kmsg.CreateTopicsResponse](t, s, cl, req)
		want := map[string]*kerr.Error{"assigned": nil, "mismatch": kerr.InvalidRequest, "ragged": kerr.InvalidReplicaAssignment, "gap": kerr.InvalidReplicaAssignment}
		for _, rt := range resp.Topics {
			wantCode(t, rt.Topic, rt.ErrorCode, want[rt.Topic])
		}
		if n, _ := topicPartitions(t, s, cl, "assigned"); n != 2 {
			t.Fatalf("assigned topic has %d partitions, want 2", n)
		}
	})

	t.Run("v0", func(t *testing.T) {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.TimeoutMillis = 5000
		req.Topics = []kmsg.CreateTopicsRequestTopic{topic("old-client", 1, 1), topic("orders", 1, 1)}
		resp := send[*kmsg.CreateTopicsResponse](t, s, pinned(t, s, 19, 0), req)
		if resp.Version != 0 {
			t.Fatalf("answered in v%d", resp.Version)
		}
		wantCode(t, "v0 create", resp.Topics[0].ErrorCode, nil)
		wantCode(t, "v0 create existing", resp.Topics[1].ErrorCode, kerr.TopicAlreadyExists)
		if n, _ := topicPartitions(t, s, cl, "old-client"); n != 1 {
			t.Fatal("v0 create did not create the topic")
		}
	})
}

func TestAdminDeleteTopics(t *testing.T) {
	s := startAgent(t)
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)
	ctx := testContext(t)
	rs, err := adm.CreateTopics(ctx, 2, 1, nil, "a", "b", "c")
	if err != nil || rs.Error() != nil {
		t.Fatalf("create: %v %v", err, rs.Error())
	}

	ds, err := adm.DeleteTopics(ctx, "a", "missing")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete a", ds["a"].Err, nil)
	wantErr(t, "delete missing", ds["missing"].Err, kerr.UnknownTopicOrPartition)
	if n, _ := topicPartitions(t, s, cl, "a"); n >= 0 {
		t.Fatal("a still listed after its deletion")
	}
	if s.cat.cached("a") != nil {
		t.Fatal("a still in the agent's catalog")
	}
	ds, _ = adm.DeleteTopics(ctx, "a")
	wantErr(t, "delete a again", ds["a"].Err, kerr.UnknownTopicOrPartition)

	// v6 by id, and the refusals only ids allow.
	_, bID := topicPartitions(t, s, cl, "b")
	_, cID := topicPartitions(t, s, cl, "c")
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TimeoutMillis = 5000
	byID := kmsg.NewDeleteTopicsRequestTopic()
	byID.TopicID = bID
	unknownID := kmsg.NewDeleteTopicsRequestTopic()
	unknownID.TopicID = [16]byte{1, 2, 3}
	both := kmsg.NewDeleteTopicsRequestTopic()
	both.Topic, both.TopicID = kmsg.StringPtr("c"), cID
	neither := kmsg.NewDeleteTopicsRequestTopic()
	req.Topics = []kmsg.DeleteTopicsRequestTopic{byID, unknownID, both, neither}
	resp := send[*kmsg.DeleteTopicsResponse](t, s, cl, req)
	if resp.Version != 6 || len(resp.Topics) != 4 {
		t.Fatalf("v%d answer with %d topics", resp.Version, len(resp.Topics))
	}
	wantCode(t, "delete by id", resp.Topics[0].ErrorCode, nil)
	if resp.Topics[0].Topic == nil || *resp.Topics[0].Topic != "b" || resp.Topics[0].TopicID != bID {
		t.Fatalf("delete by id answered %v %x", resp.Topics[0].Topic, resp.Topics[0].TopicID)
	}
	wantCode(t, "delete unknown id", resp.Topics[1].ErrorCode, kerr.UnknownTopicID)
	wantCode(t, "delete by name and id", resp.Topics[2].ErrorCode, kerr.InvalidRequest)
	wantCode(t, "delete by nothing", resp.Topics[3].ErrorCode, kerr.InvalidRequest)
	if n, _ := topicPartitions(t, s, cl, "b"); n >= 0 {
		t.Fatal("b still listed after its deletion by id")
	}
	if n, _ := topicPartitions(t, s, cl, "c"); n != 2 {
		t.Fatal("c was deleted by a refused entry")
	}

	// A name twice in one request deletes nothing.
	old := kmsg.NewPtrDeleteTopicsRequest()
	old.TimeoutMillis = 5000
	old.TopicNames = []string{"c", "c"}
	oresp := send[*kmsg.DeleteTopicsResponse](t, s, pinned(t, s, 20, 3), old)
	if len(oresp.Topics) != 1 {
		t.Fatalf("%d answers for a duplicated name", len(oresp.Topics))
	}
	wantCode(t, "duplicate delete", oresp.Topics[0].ErrorCode, kerr.InvalidRequest)
	if n, _ := topicPartitions(t, s, cl, "c"); n != 2 {
		t.Fatal("c was deleted by a refused request")
	}

	// The name is free again, under a new id.
	rs, err = adm.CreateTopics(ctx, 1, 1, nil, "b")
	if err != nil || rs["b"].Err != nil {
		t.Fatalf("recreate: %v %v", err, rs["b"].Err)
	}
	if rs["b"].ID == bID {
		t.Fatal("recreated topic kept its old id")
	}
}

func TestAdminCreatePartitions(t *testing.T) {
	s := startAgent(t)
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)
	ctx := testContext(t)
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "grow"); err != nil {
		t.Fatal(err)
	}

	rs, err := adm.CreatePartitions(ctx, 3, "grow")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "grow by 3", rs["grow"].Err, nil)
	if n, _ := topicPartitions(t, s, cl, "grow"); n != 5 {
		t.Fatalf("%d partitions after growing, want 5", n)
	}
	if ti := s.cat.cached("grow"); ti == nil || ti.partitions != 5 {
		t.Fatal("catalog not updated")
	}

	rs, _ = adm.ValidateUpdatePartitions(ctx, 10, "grow")
	wantErr(t, "validate grow to 10", rs["grow"].Err, nil)
	if n, _ := topicPartitions(t, s, cl, "grow"); n != 5 {
		t.Fatalf("validate-only changed the count to %d", n)
	}
	for _, tc := range []struct {
		set  int
		want *kerr.Error
	}{{5, kerr.InvalidPartitions}, {3, kerr.InvalidPartitions}, {topicconfig.MaxPartitions + 1, kerr.InvalidPartitions}} {
		rs, _ = adm.UpdatePartitions(ctx, tc.set, "grow")
		wantErr(t, fmt.Sprintf("set %d", tc.set), rs["grow"].Err, tc.want)
	}

	// A new partition takes records.
	produce(t, s, "grow", 4, 1)

	// Raw: unknown topic, a duplicate, an assignment of the wrong length.
	part := func(topic string, count int32, assignments int) kmsg.CreatePartitionsRequestTopic {
		rt := kmsg.NewCreatePartitionsRequestTopic()
		rt.Topic, rt.Count = topic, count
		for range assignments {
			a := kmsg.NewCreatePartitionsRequestTopicAssignment()
			a.Replicas = []int32{s.NodeID()}
			rt.Assignment = append(rt.Assignment, a)
		}
		return rt
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "other"); err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrCreatePartitionsRequest()
	req.TimeoutMillis = 5000
	req.Topics = []kmsg.CreatePartitionsRequestTopic{part("nope", 3, 0), part("dup", 3, 0), part("dup", 4, 0), part("grow", 7, 1), part("other", 3, 2)}
	resp := send[*kmsg.CreatePartitionsResponse](t, s, kafkaClient(t, s), req)
	want := map[string]*kerr.Error{"nope": kerr.UnknownTopicOrPartition, "dup": kerr.InvalidRequest, "grow": kerr.InvalidReplicaAssignment, "other": nil}
	if len(resp.Topics) != len(want) {
		t.Fatalf("%d answers: %+v", len(resp.Topics), resp.Topics)
	}
	for _, rt := range resp.Topics {
		wantCode(t, rt.Topic, rt.ErrorCode, want[rt.Topic])
	}
	if n, _ := topicPartitions(t, s, cl, "other"); n != 3 {
		t.Fatalf("other has %d partitions after growth with an assignment, want 3", n)
	}
	if n, _ := topicPartitions(t, s, cl, "grow"); n != 5 {
		t.Fatalf("grow has %d partitions after a refused growth", n)
	}
}

func TestAdminDescribeConfigs(t *testing.T) {
	s := startAgent(t, withConfig(func(c *Config) { c.MessageMaxBytes = 2_000_000; c.DefaultPartitions = 4 }))
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)
	ctx := testContext(t)
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"retention.ms": kadm.StringPtr("3600000")}, "cfg"); err != nil {
		t.Fatal(err)
	}

	cfgs := configMap(t, adm, "cfg")
	if len(cfgs) != len(topicConfigs) {
		t.Fatalf("%d configs, want every topic config (%d)", len(cfgs), len(topicConfigs))
	}
	for _, tc := range []struct {
		key, value string
		source     kmsg.ConfigSource
	}{
		{"retention.ms", "3600000", kmsg.ConfigSourceDynamicTopicConfig},
		{"cleanup.policy", "delete", kmsg.ConfigSourceDefaultConfig},
		{"compression.type", "producer", kmsg.ConfigSourceDefaultConfig},
		{"retention.bytes", "-1", kmsg.ConfigSourceDefaultConfig},
		{"segment.bytes", "1073741824", kmsg.ConfigSourceDefaultConfig},
		{"min.insync.replicas", "1", kmsg.ConfigSourceDefaultConfig},
		{"message.timestamp.type", "CreateTime", kmsg.ConfigSourceDefaultConfig},
		{"max.message.bytes", "2000000", kmsg.ConfigSourceStaticBrokerConfig},
	} {
		c := cfgs[tc.key]
		if c.MaybeValue() != tc.value || c.Source != tc.source || c.Sensitive {
			t.Errorf("%s = %q from %v, want %q from %v", tc.key, c.MaybeValue(), c.Source, tc.value, tc.source)
		}
	}
	// Synonyms (kadm asks for them): the effective value first, then the fallbacks.
	syn := cfgs["retention.ms"].Synonyms
	if len(syn) != 2 || syn[0].Key != "retention.ms" || syn[0].Source != kmsg.ConfigSourceDynamicTopicConfig ||
		syn[1].Key != "log.retention.ms" || *syn[1].Value != "604800000" || syn[1].Source != kmsg.ConfigSourceDefaultConfig {
		t.Errorf("retention.ms synonyms: %+v", syn)
	}
	syn = cfgs["max.message.bytes"].Synonyms
	if len(syn) != 2 || syn[0].Key != "message.max.bytes" || *syn[0].Value != "2000000" || syn[0].Source != kmsg.ConfigSourceStaticBrokerConfig {
		t.Errorf("max.message.bytes synonyms: %+v", syn)
	}

	rcs, _ := adm.DescribeTopicConfigs(ctx, "missing")
	if rc, _ := rcs.On("missing", nil); !errors.Is(rc.Err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("missing topic: %v", rc.Err)
	}

	t.Run("raw", func(t *testing.T) {
		cl := kafkaClient(t, s)
		res := func(typ kmsg.ConfigResourceType, name string, names ...string) kmsg.DescribeConfigsRequestResource {
			r := kmsg.NewDescribeConfigsRequestResource()
			r.ResourceType, r.ResourceName, r.ConfigNames = typ, name, names
			return r
		}
		req := kmsg.NewPtrDescribeConfigsRequest()
		req.IncludeDocumentation = true
		req.Resources = []kmsg.DescribeConfigsRequestResource{
			res(kmsg.ConfigResourceTypeTopic, "cfg", "retention.ms", "cleanup.policy", "no.such.config"),
			res(kmsg.ConfigResourceTypeTopic, ""),
			res(kmsg.ConfigResourceTypeBrokerLogger, strconv.Itoa(int(s.NodeID()))),
			res(kmsg.ConfigResourceType(99), "x"),
		}
		resp := send[*kmsg.DescribeConfigsResponse](t, s, cl, req)
		if resp.Version != 4 || len(resp.Resources) != 4 {
			t.Fatalf("v%d, %d resources", resp.Version, len(resp.Resources))
		}
		r := resp.Resources[0]
		wantCode(t, "filtered", r.ErrorCode, nil)
		if len(r.Configs) != 2 || r.Configs[0].Name != "cleanup.policy" || r.Configs[1].Name != "retention.ms" {
			t.Fatalf("filtered configs: %+v", r.Configs)
		}
		for _, c := range r.Configs {
			if c.Documentation == nil || *c.Documentation == "" || c.ReadOnly || len(c.ConfigSynonyms) != 0 {
				t.Errorf("%s: doc %v, read-only %v, synonyms %d", c.Name, c.Documentation, c.ReadOnly, len(c.ConfigSynonyms))
			}
		}
		if r.Configs[0].ConfigType != kmsg.ConfigTypeList || r.Configs[1].ConfigType != kmsg.ConfigTypeLong {
			t.Errorf("config types %v %v", r.Configs[0].ConfigType, r.Configs[1].ConfigType)
		}
		wantCode(t, "empty topic name", resp.Resources[1].ErrorCode, kerr.InvalidTopicException)
		wantCode(t, "broker logger", resp.Resources[2].ErrorCode, kerr.InvalidRequest)
		if resp.Resources[2].ErrorMessage == nil {
			t.Error("broker logger refusal without a message")
		}
		wantCode(t, "unknown resource type", resp.Resources[3].ErrorCode, kerr.InvalidRequest)

		// v0: no sources, IsDefault instead.
		req = kmsg.NewPtrDescribeConfigsRequest()
		req.Resources = []kmsg.DescribeConfigsRequestResource{res(kmsg.ConfigResourceTypeTopic, "cfg", "retention.ms", "segment.ms")}
		resp = send[*kmsg.DescribeConfigsResponse](t, s, pinned(t, s, 32, 0), req)
		if resp.Version != 0 || len(resp.Resources[0].Configs) != 2 {
			t.Fatalf("v0: version %d, %+v", resp.Version, resp.Resources)
		}
		if c := resp.Resources[0].Configs; c[0].IsDefault || !c[1].IsDefault || *c[1].Value != "604800000" {
			t.Fatalf("v0 IsDefault: %+v", c)
		}
	})

	t.Run("broker", func(t *testing.T) {
		id := s.NodeID()
		rcs, err := adm.DescribeBrokerConfigs(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On(strconv.Itoa(int(id)), nil)
		if err != nil || rc.Err != nil {
			t.Fatalf("broker %d: %v %v", id, err, rc.Err)
		}
		got := map[string]kadm.Config{}
		for _, c := range rc.Configs {
			got[c.Key] = c
		}
		for k, want := range map[string]string{
			"message.max.bytes":          "2000000",
			"num.partitions":             "4",
			"auto.create.topics.enable":  "true",
			"default.replication.factor": "3",
			"socket.request.max.bytes":   strconv.Itoa(100 << 20),
			"connections.max.idle.ms":    "600000",
			"log.retention.ms":           "604800000",
			"log.cleanup.policy":         "delete",
			"node.id":                    strconv.Itoa(int(id)),
		} {
			if c, ok := got[k]; !ok || c.MaybeValue() != want {
				t.Errorf("broker %s = %q, want %q", k, c.MaybeValue(), want)
			}
		}
		if got["message.max.bytes"].Source != kmsg.ConfigSourceStaticBrokerConfig || got["log.retention.ms"].Source != kmsg.ConfigSourceDefaultConfig {
			t.Errorf("sources: %v %v", got["message.max.bytes"].Source, got["log.retention.ms"].Source)
		}

		// Cluster default answers the same; another node id is refused.
		cl := kafkaClient(t, s)
		req := kmsg.NewPtrDescribeConfigsRequest()
		for _, name := range []string{"", strconv.Itoa(int(id) + 1), "not-a-number"} {
			r := kmsg.NewDescribeConfigsRequestResource()
			r.ResourceType, r.ResourceName = kmsg.ConfigResourceTypeBroker, name
			req.Resources = append(req.Resources, r)
		}
		resp := send[*kmsg.DescribeConfigsResponse](t, s, cl, req)
		wantCode(t, "cluster default", resp.Resources[0].ErrorCode, nil)
		if len(resp.Resources[0].Configs) != len(rc.Configs) {
			t.Errorf("cluster default lists %d configs, the broker %d", len(resp.Resources[0].Configs), len(rc.Configs))
		}
		for _, c := range resp.Resources[0].Configs {
			if !c.ReadOnly {
				t.Errorf("broker config %s not read-only", c.Name)
			}
		}
		wantCode(t, "other node", resp.Resources[1].ErrorCode, kerr.InvalidRequest)
		wantCode(t, "bad node", resp.Resources[2].ErrorCode, kerr.InvalidRequest)
	})
}

// The config table is the single source of defaults: every default must be a value
// the metastore accepts, and the table stays sorted for lookups.
func TestAdminConfigTable(t *testing.T) {
	if !slices.IsSortedFunc(topicConfigs, func(a, b topicConfig) int { return strings.Compare(a.name, b.name) }) {
		t.Fatal("topicConfigs is not sorted by name")
	}
	for _, d := range topicConfigs {
		if !topicconfig.Known(d.name) {
			t.Errorf("%s is not a topic config the metastore knows", d.name)
		}
		if err := topicconfig.Validate(d.name, d.def); err != nil {
			t.Errorf("default of %s: %v", d.name, err)
		}
		if got, ok := topicConfigDef(d.name); !ok || got.name != d.name {
			t.Errorf("lookup of %s failed", d.name)
		}
	}
	if _, ok := topicConfigDef("retention.hours"); ok {
		t.Error("lookup of an unknown config succeeded")
	}
	for _, tc := range []struct {
		list, items string
		add         bool
		want        string
	}{
		{"delete", "compact", true, "delete,compact"},
		{"delete", "delete", true, "delete"},
		{"", "compact", true, "compact"},
		{"delete, compact", "delete", false, "compact"},
		{"delete", "compact", false, "delete"},
		{"a,b,c", "c,a", false, "b"},
	} {
		if got := editList(tc.list, tc.items, tc.add); got != tc.want {
			t.Errorf("editList(%q, %q, %v) = %q, want %q", tc.list, tc.items, tc.add, got, tc.want)
		}
	}
}

func TestAdminIncrementalAlterConfigs(t *testing.T) {
	s := startAgent(t)
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)
	ctx := testContext(t)
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"segment.ms": kadm.StringPtr("1000")}, "inc"); err != nil {
		t.Fatal(err)
	}
	alter := func(ops ...kadm.AlterConfig) error {
		t.Helper()
		rs, err := adm.AlterTopicConfigs(ctx, ops, "inc")
		if err != nil {
			t.Fatalf("alter: %v", err)
		}
		r, _ := rs.On("inc", nil)
		return r.Err
	}
	value := func(key string) (string, kmsg.ConfigSource) {
		t.Helper()
		c := configMap(t, adm, "inc")[key]
		return c.MaybeValue(), c.Source
	}

	wantErr(t, "set", alter(kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("7200000")},
		kadm.AlterConfig{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadm.StringPtr("5000")}), nil)
	if v, src := value("retention.ms"); v != "7200000" || src != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms = %q from %v", v, src)
	}
	if v, _ := value("segment.ms"); v != "1000" {
		t.Fatalf("incremental set lost segment.ms: %q", v)
	}
	if ti := s.cat.cached("inc"); ti == nil || ti.maxMessageBytes != 5000 {
		t.Fatal("catalog not refreshed after the alter")
	}

	wantErr(t, "delete", alter(kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "segment.ms"}), nil)
	if v, src := value("segment.ms"); v != "604800000" || src != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("segment.ms after delete = %q from %v", v, src)
	}

	wantErr(t, "append", alter(kadm.AlterConfig{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: kadm.StringPtr("compact")}), nil)
	if v, _ := value("cleanup.policy"); v != "delete,compact" {
		t.Fatalf("cleanup.policy after append = %q", v)
	}
	wantErr(t, "subtract", alter(kadm.AlterConfig{Op: kadm.SubtractConfig, Name: "cleanup.policy", Value: kadm.StringPtr("delete")}), nil)
	if v, _ := value("cleanup.policy"); v != "compact" {
		t.Fatalf("cleanup.policy after subtract = %q", v)
	}

	for _, tc := range []struct {
		name string
		op   kadm.AlterConfig
		want *kerr.Error
	}{
		{"append to a non-list", kadm.AlterConfig{Op: kadm.AppendConfig, Name: "retention.ms", Value: kadm.StringPtr("1")}, kerr.InvalidConfig},
		{"subtract from an unknown", kadm.AlterConfig{Op: kadm.SubtractConfig, Name: "no.such", Value: kadm.StringPtr("1")}, kerr.InvalidConfig},
		{"bad value", kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("forever")}, kerr.InvalidConfig},
		{"unknown key", kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.hours", Value: kadm.StringPtr("1")}, kerr.InvalidConfig},
		{"append a bad item", kadm.AlterConfig{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: kadm.StringPtr("shred")}, kerr.InvalidConfig},
	} {
		wantErr(t, tc.name, alter(tc.op), tc.want)
	}
	if v, _ := value("retention.ms"); v != "7200000" {
		t.Fatalf("a refused alter changed retention.ms to %q", v)
	}

	rs, _ := adm.ValidateAlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("1")}}, "inc")
	wantErr(t, "validate only", rs[0].Err, nil)
	if v, _ := value("retention.ms"); v != "7200000" {
		t.Fatalf("validate-only changed retention.ms to %q", v)
	}
	rs, _ = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("1")}}, "missing")
	wantErr(t, "unknown topic", rs[0].Err, kerr.UnknownTopicOrPartition)

	t.Run("raw", func(t *testing.T) {
		cl := kafkaClient(t, s)
		res := func(typ kmsg.ConfigResourceType, name string, ops ...kmsg.IncrementalAlterConfigsRequestResourceConfig) kmsg.IncrementalAlterConfigsRequestResource {
			r := kmsg.NewIncrementalAlterConfigsRequestResource()
			r.ResourceType, r.ResourceName, r.Configs = typ, name, ops
			return r
		}
		op := func(name string, o kmsg.IncrementalAlterConfigOp, v *string) kmsg.IncrementalAlterConfigsRequestResourceConfig {
			c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
			c.Name, c.Op, c.Value = name, o, v
			return c
		}
		set := kmsg.IncrementalAlterConfigOpSet
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		req.Resources = []kmsg.IncrementalAlterConfigsRequestResource{
			res(kmsg.ConfigResourceTypeTopic, "inc", op("retention.ms", set, kmsg.StringPtr("1")), op("retention.ms", set, kmsg.StringPtr("2"))),
			res(kmsg.ConfigResourceTypeTopic, "inc2", op("retention.ms", set, nil)),
			res(kmsg.ConfigResourceTypeTopic, "inc3", op("retention.ms", 9, kmsg.StringPtr("1"))),
			res(kmsg.ConfigResourceTypeTopic, "twice", op("retention.ms", set, kmsg.StringPtr("1"))),
			res(kmsg.ConfigResourceTypeTopic, "twice", op("segment.ms", set, kmsg.StringPtr("1"))),
			res(kmsg.ConfigResourceTypeBroker, strconv.Itoa(int(s.NodeID())), op("message.max.bytes", set, kmsg.StringPtr("1"))),
			res(kmsg.ConfigResourceTypeBrokerLogger, "1"),
		}
		resp := send[*kmsg.IncrementalAlterConfigsResponse](t, s, cl, req)
		why := []string{"given twice", "null value", "unknown config op", "more than once", "more than once", "static flags", "cannot be altered"}
		if len(resp.Resources) != len(why) {
			t.Fatalf("%d answers", len(resp.Resources))
		}
		for i, r := range resp.Resources {
			wantCode(t, fmt.Sprintf("resource %d (%s %s)", i, r.ResourceType, r.ResourceName), r.ErrorCode, kerr.InvalidRequest)
			if r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, why[i]) {
				t.Errorf("resource %d: message %v, want one saying %q", i, r.ErrorMessage, why[i])
			}
		}
		if v := configValue(t, adm, "inc", "retention.ms"); v != "7200000" {
			t.Fatalf("a refused request changed retention.ms to %q", v)
		}

		// Topics in one request succeed or fail on their own.
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, "inc2"); err != nil {
			t.Fatal(err)
		}
		req = kmsg.NewPtrIncrementalAlterConfigsRequest()
		req.Resources = []kmsg.IncrementalAlterConfigsRequestResource{
			res(kmsg.ConfigResourceTypeTopic, "inc2", op("retention.ms", set, kmsg.StringPtr("123"))),
			res(kmsg.ConfigResourceTypeTopic, "inc", op("retention.ms", set, kmsg.StringPtr("x"))),
		}
		resp = send[*kmsg.IncrementalAlterConfigsResponse](t, s, cl, req)
		wantCode(t, "inc2", resp.Resources[0].ErrorCode, nil)
		wantCode(t, "inc", resp.Resources[1].ErrorCode, kerr.InvalidConfig)
		if v := configValue(t, adm, "inc2", "retention.ms"); v != "123" {
			t.Fatalf("inc2 retention.ms = %q", v)
		}
	})
}

func TestAdminAlterConfigs(t *testing.T) {
	s := startAgent(t)
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)
	ctx := testContext(t)
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"retention.ms": kadm.StringPtr("1000")}, "legacy"); err != nil {
		t.Fatal(err)
	}
	state := func(configs ...kadm.AlterConfig) error {
		t.Helper()
		rs, err := adm.AlterTopicConfigsState(ctx, configs, "legacy")
		if err != nil {
			t.Fatalf("alter: %v", err)
		}
		r, _ := rs.On("legacy", nil)
		return r.Err
	}

	// The whole config is replaced: retention.ms returns to its default.
	wantErr(t, "replace", state(kadm.AlterConfig{Name: "segment.ms", Value: kadm.StringPtr("5000")}, kadm.AlterConfig{Name: "compression.type", Value: kadm.StringPtr("zstd")}), nil)
	cfgs := configMap(t, adm, "legacy")
	if c := cfgs["retention.ms"]; c.MaybeValue() != "604800000" || c.Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("retention.ms after replace = %q from %v", c.MaybeValue(), c.Source)
	}
	if c := cfgs["segment.ms"]; c.MaybeValue() != "5000" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("segment.ms after replace = %q from %v", c.MaybeValue(), c.Source)
	}
	if ti := s.cat.cached("legacy"); ti == nil || ti.keep {
		t.Fatal("catalog not refreshed: compression.type=zstd not applied")
	}

	wantErr(t, "bad value", state(kadm.AlterConfig{Name: "segment.ms", Value: kadm.StringPtr("0")}), kerr.InvalidConfig)
	rs, _ := adm.ValidateAlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "segment.ms", Value: kadm.StringPtr("9")}}, "legacy")
	wantErr(t, "validate only", rs[0].Err, nil)
	if v := configValue(t, adm, "legacy", "segment.ms"); v != "5000" {
		t.Fatalf("refused or validate-only alters changed segment.ms to %q", v)
	}
	wantErr(t, "clear all", state(), nil)
	for k, c := range configMap(t, adm, "legacy") {
		if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			t.Fatalf("%s still set after replacing with nothing", k)
		}
	}

	res := func(typ kmsg.ConfigResourceType, name string, kv ...*string) kmsg.AlterConfigsRequestResource {
		r := kmsg.NewAlterConfigsRequestResource()
		r.ResourceType, r.ResourceName = typ, name
		for i := 0; i+1 < len(kv); i += 2 {
			c := kmsg.NewAlterConfigsRequestResourceConfig()
			c.Name, c.Value = *kv[i], kv[i+1]
			r.Configs = append(r.Configs, c)
		}
		return r
	}
	str := kmsg.StringPtr
	req := kmsg.NewPtrAlterConfigsRequest()
	req.Resources = []kmsg.AlterConfigsRequestResource{
		res(kmsg.ConfigResourceTypeTopic, "legacy", str("retention.ms"), nil),
		res(kmsg.ConfigResourceTypeTopic, "dup-key", str("retention.ms"), str("1"), str("retention.ms"), str("2")),
		res(kmsg.ConfigResourceTypeTopic, "missing", str("retention.ms"), str("1")),
		res(kmsg.ConfigResourceTypeTopic, "bad/name"),
		res(kmsg.ConfigResourceTypeBroker, strconv.Itoa(int(s.NodeID())), str("message.max.bytes"), str("1")),
		res(kmsg.ConfigResourceTypeBroker, ""),
		res(kmsg.ConfigResourceTypeBrokerLogger, "1"),
	}
	resp := send[*kmsg.AlterConfigsResponse](t, s, cl, req)
	want := []*kerr.Error{kerr.InvalidRequest, kerr.InvalidRequest, kerr.UnknownTopicOrPartition, kerr.InvalidTopicException, kerr.InvalidRequest, kerr.InvalidRequest, kerr.InvalidRequest}
	if len(resp.Resources) != len(want) {
		t.Fatalf("%d answers", len(resp.Resources))
	}
	for i, r := range resp.Resources {
		wantCode(t, fmt.Sprintf("resource %d (%s %q)", i, r.ResourceType, r.ResourceName), r.ErrorCode, want[i])
	}
	if m := resp.Resources[4].ErrorMessage; m == nil || !strings.Contains(*m, "static") {
		t.Errorf("broker refusal message: %v", m)
	}

	// v0 speaks the same.
	req = kmsg.NewPtrAlterConfigsRequest()
	req.Resources = []kmsg.AlterConfigsRequestResource{res(kmsg.ConfigResourceTypeTopic, "legacy", str("retention.ms"), str("42"))}
	resp = send[*kmsg.AlterConfigsResponse](t, s, pinned(t, s, 33, 0), req)
	wantCode(t, "v0", resp.Resources[0].ErrorCode, nil)
	if v := configValue(t, adm, "legacy", "retention.ms"); v != "42" {
		t.Fatalf("v0 alter: retention.ms = %q", v)
	}
}

func TestAdminDescribeCluster(t *testing.T) {
	s := startAgent(t, withConfig(func(c *Config) { c.ClusterID = "test-cluster"; c.Zone = "zone-a" }))
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)

	req := kmsg.NewPtrDescribeClusterRequest()
	req.IncludeClusterAuthorizedOperations = true
	resp := send[*kmsg.DescribeClusterResponse](t, s, cl, req)
	wantCode(t, "describe cluster", resp.ErrorCode, nil)
	if resp.ClusterID != "test-cluster" || resp.ControllerID != s.NodeID() || resp.EndpointType != 1 {
		t.Fatalf("cluster %q controller %d endpoint type %d", resp.ClusterID, resp.ControllerID, resp.EndpointType)
	}
	if len(resp.Brokers) != 1 {
		t.Fatalf("%d brokers", len(resp.Brokers))
	}
	b := resp.Brokers[0]
	if b.NodeID != s.NodeID() || fmt.Sprintf("%s:%d", b.Host, b.Port) != s.AdvertiseAddr() || b.Rack == nil || *b.Rack != "zone-a" {
		t.Fatalf("broker %+v, want node %d at %s", b, s.NodeID(), s.AdvertiseAddr())
	}
	if resp.ClusterAuthorizedOperations&(1<<kmsg.ACLOperationDescribe) == 0 {
		t.Fatalf("authorized operations %b", resp.ClusterAuthorizedOperations)
	}

	// The same brokers Metadata lists.
	md, err := adm.BrokerMetadata(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 1 || md.Brokers[0].NodeID != b.NodeID || md.Brokers[0].Host != b.Host || md.Brokers[0].Port != b.Port || md.Controller != resp.ControllerID {
		t.Fatalf("metadata brokers %+v controller %d", md.Brokers, md.Controller)
	}

	req = kmsg.NewPtrDescribeClusterRequest()
	req.EndpointType = 2
	resp = send[*kmsg.DescribeClusterResponse](t, s, cl, req)
	wantCode(t, "controllers", resp.ErrorCode, kerr.UnsupportedEndpointType)

	resp = send[*kmsg.DescribeClusterResponse](t, s, pinned(t, s, 60, 0), kmsg.NewPtrDescribeClusterRequest())
	if resp.Version != 0 || resp.ErrorCode != 0 || len(resp.Brokers) != 1 {
		t.Fatalf("v0: version %d error %d brokers %d", resp.Version, resp.ErrorCode, len(resp.Brokers))
	}
}

func TestAdminBrokersOf(t *testing.T) {
	agents := []*pb.AgentInfo{
		{AgentId: "c", Address: "10.0.0.3:9092", Zone: "z1"},
		{AgentId: "a", Address: "10.0.0.1:9093"},
		{AgentId: "b", Address: "not an address"},
	}
	bs := brokersOf(agents)
	if len(bs) != 3 || !slices.IsSortedFunc(bs, func(x, y broker) int { return int(x.nodeID - y.nodeID) }) {
		t.Fatalf("brokers not sorted by node id: %+v", bs)
	}
	if controllerOf(bs) != bs[0].nodeID || controllerOf(nil) != -1 {
		t.Fatal("controller is not the lowest node id")
	}
	for _, b := range bs {
		switch b.nodeID {
		case NodeIDOf("c"):
			if b.host != "10.0.0.3" || b.port != 9092 || b.rack == nil || *b.rack != "z1" {
				t.Errorf("c: %+v", b)
			}
		case NodeIDOf("a"):
			if b.host != "10.0.0.1" || b.port != 9093 || b.rack != nil {
				t.Errorf("a: %+v", b)
			}
		case NodeIDOf("b"):
			if b.host != "" || b.port != 0 {
				t.Errorf("b: %+v", b)
			}
		}
	}
}

// produce writes n one-record batches to a partition and waits for them.
func produce(t *testing.T, s *Server, topic string, partition int32, n int) {
	t.Helper()
	cl := kafkaClient(t, s, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite())
	for i := range n {
		r := &kgo.Record{Topic: topic, Partition: partition, Value: []byte(fmt.Sprintf("record %d", i))}
		if err := cl.ProduceSync(testContext(t), r).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
}

func TestAdminOffsetForLeaderEpoch(t *testing.T) {
	s := startAgent(t)
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)
	ctx := testContext(t)
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "epochs"); err != nil {
		t.Fatal(err)
	}
	produce(t, s, "epochs", 0, 3)

	var req kadm.OffsetForLeaderEpochRequest
	req.Add("epochs", 0, 0)
	req.Add("epochs", 1, 0)
	got, err := adm.OffsetForLeaderEpoch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[int32]int64{0: 3, 1: 0} {
		r := got["epochs"][p]
		if r.Err != nil || r.LeaderEpoch != 0 || r.EndOffset != want {
			t.Errorf("partition %d: epoch %d end %d err %v; want epoch 0 end %d", p, r.LeaderEpoch, r.EndOffset, r.Err, want)
		}
	}

	part := func(p, current, epoch int32) kmsg.OffsetForLeaderEpochRequestTopicPartition {
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.Partition, rp.CurrentLeaderEpoch, rp.LeaderEpoch = p, current, epoch
		return rp
	}
	rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
	rt.Topic = "epochs"
	rt.Partitions = []kmsg.OffsetForLeaderEpochRequestTopicPartition{
		part(0, -1, 5), // a later epoch than any: undefined, no error
		part(0, 0, 0),
		part(0, 1, 0), // the client knows of an epoch we never had
		part(0, -1, -1),
		part(2, -1, 0),
		part(-1, -1, 0),
	}
	missing := kmsg.NewOffsetForLeaderEpochRequestTopic()
	missing.Topic = "missing"
	missing.Partitions = []kmsg.OffsetForLeaderEpochRequestTopicPartition{part(0, -1, 0)}
	kreq := kmsg.NewPtrOffsetForLeaderEpochRequest()
	kreq.ReplicaID = -1
	kreq.Topics = append(kreq.Topics, rt, missing)
	resp := send[*kmsg.OffsetForLeaderEpochResponse](t, s, cl, kreq)
	wantCode(t, "missing topic", resp.Topics[1].Partitions[0].ErrorCode, kerr.UnknownTopicOrPartition)
	type answer struct {
		code   *kerr.Error
		epoch  int32
		offset int64
	}
	want := []answer{{nil, -1, -1}, {nil, 0, 3}, {kerr.UnknownLeaderEpoch, -1, -1}, {nil, -1, -1}, {kerr.UnknownTopicOrPartition, -1, -1}, {kerr.UnknownTopicOrPartition, -1, -1}}
	ps := resp.Topics[0].Partitions
	if len(ps) != len(want) {
		t.Fatalf("%d answers", len(ps))
	}
	for i, w := range want {
		wantCode(t, fmt.Sprintf("partition entry %d", i), ps[i].ErrorCode, w.code)
		if ps[i].LeaderEpoch != w.epoch || ps[i].EndOffset != w.offset {
			t.Errorf("entry %d: epoch %d end %d, want %d %d", i, ps[i].LeaderEpoch, ps[i].EndOffset, w.epoch, w.offset)
		}
	}

	// v0 has no epoch in the answer, only the end offset.
	rt.Partitions = rt.Partitions[1:2]
	kreq.Topics = []kmsg.OffsetForLeaderEpochRequestTopic{rt}
	resp = send[*kmsg.OffsetForLeaderEpochResponse](t, s, pinned(t, s, 23, 0), kreq)
	if resp.Version != 0 || resp.Topics[0].Partitions[0].EndOffset != 3 {
		t.Fatalf("v0: %+v", resp)
	}
}

// lookupCap is a metastore that answers at most n index entries per Lookup, so the
// log-dir sizes must page.
type lookupCap struct {
	Metastore
	n int32
}

func (l lookupCap) Lookup(ctx context.Context, req *pb.LookupRequest) (*pb.LookupResponse, error) {
	req.MaxEntries = min(max(req.MaxEntries, 1), l.n)
	return l.Metastore.Lookup(ctx, req)
}

func TestAdminDescribeLogDirs(t *testing.T) {
	s := startAgent(t, withMetastore(func(m Metastore) Metastore { return lookupCap{m, 2} }))
	cl := kafkaClient(t, s)
	adm := kadm.NewClient(cl)
	ctx := testContext(t)
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "sized"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "empty"); err != nil {
		t.Fatal(err)
	}
	produce(t, s, "sized", 0, 5) // five separate segments: five index entries
	produce(t, s, "sized", 2, 1)

	// What the index holds, summed independently of the handler.
	ti := s.cat.cached("sized")
	indexBytes := func(p int32) int64 {
		resp, err := s.meta.(lookupCap).Metastore.Lookup(ctx, &pb.LookupRequest{TopicId: ti.id[:], Partition: p, Offset: 0, MaxEntries: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, e := range resp.Entries {
			n += e.Length
		}
		return n
	}

	all, err := adm.DescribeAllLogDirs(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	dirs := all[s.NodeID()]
	dir, ok := dirs[logDirName]
	if len(dirs) != 1 || !ok || dir.Err != nil || dir.TotalBytes != -1 || dir.UsableBytes != -1 {
		t.Fatalf("log dirs: %+v", dirs)
	}
	sized := dir.Topics["sized"]
	if len(sized) != 3 || len(dir.Topics["empty"]) != 1 {
		t.Fatalf("topics: %+v", dir.Topics)
	}
	for p := range int32(3) {
		want := indexBytes(p)
		if got := sized[p].Size; got != want || sized[p].OffsetLag != 0 || sized[p].IsFuture {
			t.Errorf("partition %d: size %d lag %d future %v; want size %d", p, got, sized[p].OffsetLag, sized[p].IsFuture, want)
		}
	}
	if sized[0].Size <= sized[2].Size || sized[2].Size <= 0 || sized[1].Size != 0 {
		t.Errorf("sizes %d %d %d: want p0 > p2 > p1 = 0", sized[0].Size, sized[1].Size, sized[2].Size)
	}

	// A chosen set: unknown topics and partitions are left out.
	var set kadm.TopicsSet
	set.Add("sized", 0, 7)
	set.Add("missing", 0)
	some, err := adm.DescribeBrokerLogDirs(ctx, s.NodeID(), set)
	if err != nil {
		t.Fatal(err)
	}
	d := some[logDirName]
	if len(d.Topics) != 1 || len(d.Topics["sized"]) != 1 || d.Topics["sized"][0].Size != sized[0].Size {
		t.Fatalf("chosen set: %+v", d.Topics)
	}

	// v0 answers the same sizes.
	req := kmsg.NewPtrDescribeLogDirsRequest()
	rt := kmsg.NewDescribeLogDirsRequestTopic()
	rt.Topic, rt.Partitions = "sized", []int32{0}
	req.Topics = append(req.Topics, rt)
	resp := send[*kmsg.DescribeLogDirsResponse](t, s, pinned(t, s, 35, 0), req)
	if resp.Version != 0 || len(resp.Dirs) != 1 || resp.Dirs[0].Topics[0].Partitions[0].Size != sized[0].Size {
		t.Fatalf("v0: %+v", resp)
	}
}
