package agent

// AlterConfigs (key 33), versions 0-2.
//
// Kafka's legacy alter: a TOPIC resource's configs replace the topic's whole config
// (anything not listed returns to its default). The metastore checks every name and
// value (INVALID_CONFIG) and applies all topics of a request in one Raft entry; an
// unknown topic is UNKNOWN_TOPIC_OR_PARTITION, a malformed name
// INVALID_TOPIC_EXCEPTION. A null value, a name given twice in one resource, or a
// resource given twice in one request is INVALID_REQUEST, as in Kafka. ValidateOnly
// checks and changes nothing. Altered topics are put in the catalog at once.
//
// Deviation: BROKER resources are refused with INVALID_REQUEST and a message, since
// an agent's settings are static flags (Kafka refuses the static ones the same way);
// BROKER_LOGGER and other types get INVALID_REQUEST too.

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/topicconfig"
)

func serveAlterConfigs(c *conn, r *request) reply {
	req := r.msg.(*kmsg.AlterConfigsRequest)
	resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
	s := c.s
	return later(func() kmsg.Response {
		dup := duplicateResources(len(req.Resources), func(i int) (kmsg.ConfigResourceType, string) {
			return req.Resources[i].ResourceType, req.Resources[i].ResourceName
		})
		errs := make([]error, len(req.Resources))
		var alts []*pb.ConfigAlteration
		var altIdx []int
		for i, rr := range req.Resources {
			if errs[i] = checkAlterResource(s, rr.ResourceType, rr.ResourceName, dup[i]); errs[i] != nil {
				continue
			}
			alt := &pb.ConfigAlteration{Topic: &pb.TopicRef{Name: rr.ResourceName}}
			seen := map[string]bool{}
			for _, cfg := range rr.Configs {
				switch {
				case cfg.Value == nil:
					errs[i] = fmt.Errorf("%w: null value for config %q", errInvalidRequest, cfg.Name)
				case seen[cfg.Name]:
					errs[i] = fmt.Errorf("%w: config %q given twice", errInvalidRequest, cfg.Name)
				default:
					seen[cfg.Name] = true
					alt.Ops = append(alt.Ops, &pb.ConfigOp{Kind: pb.ConfigOp_SET, Key: cfg.Name, Value: *cfg.Value})
					continue
				}
				break
			}
			if errs[i] == nil {
				alts = append(alts, alt)
				altIdx = append(altIdx, i)
			}
		}
		for j, err := range s.alterTopicConfigs(c.ctx, alts, req.ValidateOnly) {
			errs[altIdx[j]] = err
		}
		for i, rr := range req.Resources {
			sr := kmsg.NewAlterConfigsResponseResource()
			sr.ResourceType, sr.ResourceName = rr.ResourceType, rr.ResourceName
			if errs[i] != nil {
				sr.ErrorCode, sr.ErrorMessage = kafkaCode(errs[i]), errMessage(errs[i])
			}
			resp.Resources = append(resp.Resources, sr)
		}
		return resp
	})
}

// duplicateResources marks the resources of a request that appear more than once.
func duplicateResources(n int, at func(int) (kmsg.ConfigResourceType, string)) []bool {
	type key struct {
		t    kmsg.ConfigResourceType
		name string
	}
	count := map[key]int{}
	for i := range n {
		t, name := at(i)
		count[key{t, name}]++
	}
	dup := make([]bool, n)
	for i := range n {
		t, name := at(i)
		dup[i] = count[key{t, name}] > 1
	}
	return dup
}

// checkAlterResource refuses what an alter request cannot change: anything but a
// topic with a well-formed name, named once.
func checkAlterResource(s *Server, t kmsg.ConfigResourceType, name string, dup bool) error {
	switch {
	case dup:
		return fmt.Errorf("%w: resource %s %q appears more than once in the request", errInvalidRequest, t, name)
	case t == kmsg.ConfigResourceTypeBroker:
		if err := s.checkBrokerResource(name); err != nil {
			return err
		}
		return fmt.Errorf("%w: broker configs are the agent's static flags; restart the agent with new flags to change them", errInvalidRequest)
	case t != kmsg.ConfigResourceTypeTopic:
		return fmt.Errorf("%w: resource type %s cannot be altered", errInvalidRequest, t)
	}
	if err := topicconfig.ValidTopicName(name); err != nil {
		return fmt.Errorf("%w: %v", errInvalidTopic, err)
	}
	return nil
}

// alterTopicConfigs applies alterations in one metastore call and returns each one's
// error. Altered topics go into the catalog unless validating only.
func (s *Server) alterTopicConfigs(ctx context.Context, alts []*pb.ConfigAlteration, validateOnly bool) []error {
	errs := make([]error, len(alts))
	if len(alts) == 0 {
		return errs
	}
	resp, err := s.meta.AlterConfigs(ctx, &pb.AlterConfigsRequest{Alterations: alts, ValidateOnly: validateOnly})
	for i := range alts {
		switch {
		case err != nil:
			errs[i] = err
		case i >= len(resp.Results):
			errs[i] = fmt.Errorf("agent: metastore answered %d of %d alterations", len(resp.Results), len(alts))
		case resp.Results[i].Error != pb.ErrorCode_NONE:
			errs[i] = metastore.ErrorOf(resp.Results[i].Error, resp.Results[i].Message)
		case !validateOnly && resp.Results[i].Topic != nil:
			s.cat.put(resp.Results[i].Topic)
			s.log.Info("agent: altered topic configs", "topic", resp.Results[i].Name, "configs", resp.Results[i].Topic.Configs)
		}
	}
	return errs
}
