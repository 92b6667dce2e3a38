package agent

// IncrementalAlterConfigs (key 44), versions 0-1.
//
// TOPIC resources take ops one by one: SET (0) and DELETE (1, back to the default)
// go to the metastore as they are; APPEND (2) and SUBTRACT (3) work on list configs
// (cleanup.policy and the throttled-replica lists): the agent reads the topic's
// current value from the metastore (its default when unset), adds or removes the
// comma-separated items, and sends the result as a SET. APPEND or SUBTRACT on a
// config that is not a list, or on an unknown name, is INVALID_CONFIG. A null value
// for anything but DELETE, an unknown op, a config named twice in one resource, or
// a resource named twice in one request is INVALID_REQUEST, as in Kafka. The
// metastore checks names and values (INVALID_CONFIG) and applies all topics in one
// Raft entry; ValidateOnly changes nothing. Altered topics are put in the catalog.
//
// Deviations: an APPEND or SUBTRACT racing another alter of the same config may
// lose one of the two (the read and the write are separate metastore calls). BROKER
// resources are refused with INVALID_REQUEST and a message: broker configs are the
// agent's static flags.

import (
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

func serveIncrementalAlterConfigs(c *conn, r *request) reply {
	req := r.msg.(*kmsg.IncrementalAlterConfigsRequest)
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
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
			var alt *pb.ConfigAlteration
			if alt, errs[i] = s.incrementalOps(c, rr); errs[i] == nil {
				alts = append(alts, alt)
				altIdx = append(altIdx, i)
			}
		}
		for j, err := range s.alterTopicConfigs(c.ctx, alts, req.ValidateOnly) {
			errs[altIdx[j]] = err
		}
		for i, rr := range req.Resources {
			sr := kmsg.NewIncrementalAlterConfigsResponseResource()
			sr.ResourceType, sr.ResourceName = rr.ResourceType, rr.ResourceName
			if errs[i] != nil {
				sr.ErrorCode, sr.ErrorMessage = kafkaCode(errs[i]), errMessage(errs[i])
			}
			resp.Resources = append(resp.Resources, sr)
		}
		return resp
	})
}

// incrementalOps turns one topic resource's ops into the metastore's, resolving
// APPEND and SUBTRACT against the topic's current config.
func (s *Server) incrementalOps(c *conn, rr kmsg.IncrementalAlterConfigsRequestResource) (*pb.ConfigAlteration, error) {
	alt := &pb.ConfigAlteration{Topic: &pb.TopicRef{Name: rr.ResourceName}, Incremental: true}
	seen := map[string]bool{}
	var current *pb.Topic // read once, on the first APPEND or SUBTRACT
	for _, cfg := range rr.Configs {
		if seen[cfg.Name] {
			return nil, fmt.Errorf("%w: config %q given twice", errInvalidRequest, cfg.Name)
		}
		seen[cfg.Name] = true
		if cfg.Value == nil && cfg.Op != kmsg.IncrementalAlterConfigOpDelete {
			return nil, fmt.Errorf("%w: null value for config %q", errInvalidRequest, cfg.Name)
		}
		switch cfg.Op {
		case kmsg.IncrementalAlterConfigOpSet:
			alt.Ops = append(alt.Ops, &pb.ConfigOp{Kind: pb.ConfigOp_SET, Key: cfg.Name, Value: *cfg.Value})
		case kmsg.IncrementalAlterConfigOpDelete:
			alt.Ops = append(alt.Ops, &pb.ConfigOp{Kind: pb.ConfigOp_DELETE, Key: cfg.Name})
		case kmsg.IncrementalAlterConfigOpAppend, kmsg.IncrementalAlterConfigOpSubtract:
			d, ok := topicConfigDef(cfg.Name)
			switch {
			case !ok:
				return nil, fmt.Errorf("%w: unknown topic config %q", metastore.ErrInvalidConfig, cfg.Name)
			case d.typ != kmsg.ConfigTypeList:
				return nil, fmt.Errorf("%w: %s is not a list config: %s needs a list", metastore.ErrInvalidConfig, cfg.Name, cfg.Op)
			}
			if current == nil {
				ti, err := s.cat.fetch(c.ctx, &pb.TopicRef{Name: rr.ResourceName})
				if err != nil {
					return nil, err
				}
				if ti == nil {
					return nil, fmt.Errorf("%w: %q", errUnknownTopic, rr.ResourceName)
				}
				current = ti.pb
			}
			old, _ := s.topicConfigValue(current, cfg.Name)
			v := editList(old, *cfg.Value, cfg.Op == kmsg.IncrementalAlterConfigOpAppend)
			alt.Ops = append(alt.Ops, &pb.ConfigOp{Kind: pb.ConfigOp_SET, Key: cfg.Name, Value: v})
		default:
			return nil, fmt.Errorf("%w: unknown config op %d for %q", errInvalidRequest, cfg.Op, cfg.Name)
		}
	}
	return alt, nil
}

// editList appends the items of a comma-separated list to another (keeping order,
// skipping items already there) or subtracts them, as Kafka does.
func editList(list, items string, add bool) string {
	split := func(v string) []string {
		var out []string
		for it := range strings.SplitSeq(v, ",") {
			if it = strings.TrimSpace(it); it != "" {
				out = append(out, it)
			}
		}
		return out
	}
	cur, edit := split(list), split(items)
	if add {
		for _, it := range edit {
			if !slices.Contains(cur, it) {
				cur = append(cur, it)
			}
		}
	} else {
		cur = slices.DeleteFunc(cur, func(it string) bool { return slices.Contains(edit, it) })
	}
	return strings.Join(cur, ",")
}
