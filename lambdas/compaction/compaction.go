// Package compaction is the compaction function: compaction, retention and garbage
// collection (the compactor package) run when a segment object arrives, and swept
// on a schedule for the time-based work no arrival triggers.
//
// Handler takes an invocation payload, decoded by lambdas/trigger: an S3 event (one
// compactor.OnSegment per created segment) or a scheduled event (one
// compactor.Sweep). It is the Lambda handler (lambda.Start(h) in bootstrap/), and
// `strata functions` and `strata local` call its Object and Sweep from
// lambdas/runner. It holds no state between invocations: the compactor is
// idempotent, and asks the metastore whether a segment is committed before it acts.
package compaction

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/stratalog/strata/compactor"
	"github.com/stratalog/strata/lambdas/trigger"
	"github.com/stratalog/strata/objectlog"
)

// Compactor is what the handler calls; *compactor.Compactor implements it.
type Compactor interface {
	OnSegment(ctx context.Context, key string) (compactor.Report, error)
	Sweep(ctx context.Context) (compactor.Report, error)
}

// SkipNotSegment is the Report.Skipped of an object that is not a segment, the
// compactor's own reason: the handler skips such keys without calling it.
const SkipNotSegment = compactor.SkipNotSegment

// Handler runs the compaction function. Safe for concurrent use.
type Handler struct {
	c     Compactor
	scope trigger.Scope
	log   *slog.Logger
	close func() error
}

// NewHandler returns a handler over c for the store scope names (the bucket and
// prefix its events come from). A nil log discards.
func NewHandler(c Compactor, scope trigger.Scope, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{c: c, scope: scope, log: log}
}

// Scope is the store scope events are decoded with.
func (h *Handler) Scope() trigger.Scope { return h.scope }

// Close releases what Open opened; a handler from NewHandler has nothing to close.
func (h *Handler) Close() error {
	if h.close == nil {
		return nil
	}
	return h.close()
}

// Invoke is the Lambda entry point (it implements lambda.Handler): the payload is
// decoded by trigger.Decode, the work done by Run, and the Summary returned as JSON.
// An error means some work failed and the invocation should be retried (Lambda
// retries asynchronous invocations); the work that succeeded is not undone, and
// doing it again is harmless.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	inv, err := trigger.Decode(payload, h.scope)
	if err != nil {
		return nil, fmt.Errorf("compaction: %w", err)
	}
	sum, err := h.Run(ctx, inv)
	if err != nil {
		return nil, err
	}
	return json.Marshal(sum)
}

// Run does what an invocation asks: Object for each key, in order, or a Sweep. Every
// key is tried; the errors are returned together.
func (h *Handler) Run(ctx context.Context, inv trigger.Invocation) (Summary, error) {
	sum := Summary{Records: inv.Records}
	for _, s := range inv.Skipped {
		sum.skip(s.Reason)
	}
	var errs []error
	for _, key := range inv.Keys {
		r, err := h.Object(ctx, key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sum.Add(r)
	}
	if inv.Scheduled {
		r, err := h.Sweep(ctx)
		if err != nil {
			errs = append(errs, err)
		} else {
			sum.Swept = true
			sum.Add(r)
		}
	}
	return sum, errors.Join(errs...)
}

// Object handles the arrival of the object at a store key: a segment goes to
// compactor.OnSegment; anything else is skipped (SkipNotSegment).
func (h *Handler) Object(ctx context.Context, key string) (compactor.Report, error) {
	if _, err := objectlog.ParseSegmentKey(key); err != nil {
		h.log.Debug("compaction: skipped", "key", key, "reason", SkipNotSegment)
		return compactor.Report{Skipped: SkipNotSegment}, nil
	}
	r, err := h.c.OnSegment(ctx, key)
	if err != nil {
		return r, fmt.Errorf("compaction: segment %s: %w", key, err)
	}
	h.logReport("compaction: segment", r, "key", key)
	return r, nil
}

// Sweep does the time-based work (compactor.Sweep).
func (h *Handler) Sweep(ctx context.Context) (compactor.Report, error) {
	r, err := h.c.Sweep(ctx)
	if err != nil {
		return r, fmt.Errorf("compaction: sweep: %w", err)
	}
	h.logReport("compaction: sweep", r)
	return r, nil
}

func (h *Handler) logReport(msg string, r compactor.Report, args ...any) {
	level := slog.LevelInfo
	if idle(r) {
		level = slog.LevelDebug
	}
	h.log.Log(context.Background(), level, msg, append(args, "report", r)...)
}

// idle reports whether r did nothing (a skip, or nothing to do).
func idle(r compactor.Report) bool {
	r.Skipped = ""
	return reflect.ValueOf(r).IsZero()
}

// Summary is what an invocation did: its reports added up.
type Summary struct {
	// Records is the number of records in the event (0 for a scheduled event).
	Records int `json:"records"`
	// Handled counts the objects the compactor was called for.
	Handled int `json:"handled"`
	// Swept: the invocation ran a sweep.
	Swept bool `json:"swept,omitempty"`
	// Skipped counts records and objects that asked for no work, by reason: the
	// event's (trigger.Skip*), the handler's (SkipNotSegment) and the compactor's
	// (Report.Skipped).
	Skipped map[string]int `json:"skipped,omitempty"`
	// Total is the sum of the compactor's reports; its Skipped is empty.
	Total compactor.Report `json:"total"`
}

// Add counts one report: its numbers go into Total, its Skipped reason into Skipped.
// Reports of a skipped object still count their numbers (a skip may follow work).
func (s *Summary) Add(r compactor.Report) {
	if r.Skipped == SkipNotSegment {
		s.skip(r.Skipped)
		return
	}
	s.Handled++
	if r.Skipped != "" {
		s.skip(r.Skipped)
		r.Skipped = ""
	}
	s.Total.Add(r)
}

func (s *Summary) skip(reason string) {
	if s.Skipped == nil {
		s.Skipped = map[string]int{}
	}
	s.Skipped[reason]++
}
