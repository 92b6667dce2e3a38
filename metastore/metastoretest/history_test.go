package metastoretest

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func check(ops ...porcupine.Operation) porcupine.CheckResult {
	res, _ := porcupine.CheckOperationsVerbose(Model.ToModel(), ops, 10*time.Second)
	return res
}

func TestModelAcceptsLinearizableHistories(t *testing.T) {
	c := func(client int, call, ret int64, p string, n, base int64) porcupine.Operation {
		return op(client, call, ret, Input{Partition: p, Count: n}, Output{Base: base})
	}
	r := func(client int, call, ret int64, p string, next int64) porcupine.Operation {
		return op(client, call, ret, Input{Partition: p, Read: true}, Output{Next: next})
	}
	cases := map[string][]porcupine.Operation{
		"sequential":                         {c(0, 0, 1, "a", 3, 0), c(0, 2, 3, "a", 2, 3), r(0, 4, 5, "a", 5)},
		"concurrent commits in either order": {c(0, 0, 10, "a", 3, 2), c(1, 0, 10, "a", 2, 0)},
		"read during a commit sees before":   {c(0, 0, 10, "a", 3, 0), r(1, 1, 2, "a", 0)},
		"read during a commit sees after":    {c(0, 0, 10, "a", 3, 0), r(1, 1, 2, "a", 3)},
		"unknown that happened":              {op(0, 0, math.MaxInt64, Input{Partition: "a", Count: 4}, Output{Unknown: true}), c(1, 5, 6, "a", 1, 4)},
		"unknown that did not happen":        {op(0, 0, math.MaxInt64, Input{Partition: "a", Count: 4}, Output{Unknown: true}), c(1, 5, 6, "a", 1, 0)},
		"partitions are independent":         {c(0, 0, 1, "a", 3, 0), c(0, 2, 3, "b", 3, 0)},
	}
	for name, ops := range cases {
		if res := check(ops...); res != porcupine.Ok {
			t.Errorf("%s: %v", name, res)
		}
	}
}

func TestModelRejectsAnomalies(t *testing.T) {
	c := func(client int, call, ret int64, p string, n, base int64) porcupine.Operation {
		return op(client, call, ret, Input{Partition: p, Count: n}, Output{Base: base})
	}
	r := func(client int, call, ret int64, p string, next int64) porcupine.Operation {
		return op(client, call, ret, Input{Partition: p, Read: true}, Output{Next: next})
	}
	cases := map[string][]porcupine.Operation{
		"offset assigned twice":    {c(0, 0, 1, "a", 3, 0), c(1, 2, 3, "a", 3, 0)},
		"gap":                      {c(0, 0, 1, "a", 3, 0), c(0, 2, 3, "a", 1, 4)},
		"stale read":               {c(0, 0, 1, "a", 3, 0), r(1, 2, 3, "a", 0)},
		"read from the future":     {r(1, 0, 1, "a", 3), c(0, 2, 3, "a", 3, 0)},
		"acknowledged commit lost": {c(0, 0, 1, "a", 3, 0), r(0, 2, 3, "a", 0)},
	}
	for name, ops := range cases {
		if res := check(ops...); res != porcupine.Illegal {
			t.Errorf("%s: %v, want Illegal", name, res)
		}
	}
}

func TestHistoryRecorder(t *testing.T) {
	h := NewHistory()
	h.Commit(0, "a", 2, func() (int64, error) { return 0, nil })
	h.Commit(1, "a", 5, func() (int64, error) { return 0, errors.New("ambiguous") })
	h.Read(0, "a", func() (int64, error) { return 7, nil })
	h.Read(0, "a", func() (int64, error) { return 0, errors.New("unavailable") }) // left out
	if h.Len() != 3 {
		t.Fatalf("%d operations recorded", h.Len())
	}
	h.Check(t, 5*time.Second)
}
