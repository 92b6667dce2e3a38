// Package metastoretest checks histories of metastore calls for linearizability with
// porcupine: a sequential model of the commit and read operations, and a recorder
// that test clients log their calls into, from any goroutine.
package metastoretest

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Input is one operation on one partition: a commit of Count offsets, or a read of
// the partition's next offset (ListOffsets latest, or Lookup's head).
type Input struct {
	Partition string
	Count     int64
	Read      bool
}

// Output is what the operation returned. Unknown marks a call whose outcome the
// client never learned (an ambiguous error, a timeout): it may or may not have taken
// effect, at any point after its call.
type Output struct {
	Base    int64 // commit: first offset assigned
	Next    int64 // read: the partition's next offset
	Unknown bool
}

// Model is the sequential specification: per partition, commits take the next Count
// offsets in order and reads see exactly the offsets committed before them.
var Model = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byPartition := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			p := op.Input.(Input).Partition
			if _, ok := byPartition[p]; !ok {
				order = append(order, p)
			}
			byPartition[p] = append(byPartition[p], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, p := range order {
			out = append(out, byPartition[p])
		}
		return out
	},
	Init: func() []any { return []any{int64(0)} },
	Step: func(state, input, output any) []any {
		next := state.(int64)
		in, out := input.(Input), output.(Output)
		switch {
		case in.Read:
			if out.Unknown || out.Next == next {
				return []any{next}
			}
			return nil
		case out.Unknown:
			return []any{next, next + in.Count} // did not happen, or did
		case out.Base == next:
			return []any{next + in.Count}
		}
		return nil
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		switch {
		case out.Unknown:
			return fmt.Sprintf("%s: commit %d -> ?", in.Partition, in.Count)
		case in.Read:
			return fmt.Sprintf("%s: read -> next %d", in.Partition, out.Next)
		}
		return fmt.Sprintf("%s: commit %d -> base %d", in.Partition, in.Count, out.Base)
	},
}

// History records operations from concurrent clients.
type History struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

// NewHistory starts an empty history.
func NewHistory() *History { return &History{start: time.Now()} }

func (h *History) now() int64 { return int64(time.Since(h.start)) }

// Commit records a commit of count offsets made by client; call performs it and
// returns the first offset assigned, or an error (taken as an unknown outcome).
func (h *History) Commit(client int, partition string, count int64, call func() (int64, error)) (int64, error) {
	begin := h.now()
	base, err := call()
	h.add(client, begin, Input{Partition: partition, Count: count}, base, 0, err)
	return base, err
}

// Read records a read of a partition's next offset.
func (h *History) Read(client int, partition string, call func() (int64, error)) (int64, error) {
	begin := h.now()
	next, err := call()
	if err == nil {
		h.add(client, begin, Input{Partition: partition, Read: true}, 0, next, nil)
	}
	// A failed read constrains nothing: it is left out.
	return next, err
}

func (h *History) add(client int, begin int64, in Input, base, next int64, err error) {
	end := h.now()
	out := Output{Base: base, Next: next}
	if err != nil {
		// An unknown outcome may take effect at any later time.
		out, end = Output{Unknown: true}, math.MaxInt64
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: begin, Output: out, Return: end})
	h.mu.Unlock()
}

// Len is the number of operations recorded.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Check fails t unless the history is linearizable. A check that cannot finish in
// timeout fails too: an unverified history is not a pass.
func (h *History) Check(t testing.TB, timeout time.Duration) {
	t.Helper()
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	model := Model.ToModel()
	res, _ := porcupine.CheckOperationsVerbose(model, ops, timeout)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		t.Fatalf("history of %d operations is not linearizable", len(ops))
	default:
		t.Fatalf("linearizability check of %d operations did not finish in %v", len(ops), timeout)
	}
}
