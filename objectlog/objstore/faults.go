package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Op names one Store method, for per-operation fault settings and counters.
type Op int

// The operations of a Store.
const (
	OpGet Op = iota
	OpGetRange
	OpHead
	OpPut
	OpDelete
	OpList
	numOps
)

var opNames = [numOps]string{"get", "get_range", "head", "put", "delete", "list"}

func (o Op) String() string {
	if o >= 0 && o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", int(o))
}

// ErrInjected is the error a Faulty store returns for an injected failure. Like a
// network error, it says nothing about whether a Put or Delete took effect.
var ErrInjected = errors.New("objstore: injected fault")

// Latency is a distribution of delays.
type Latency interface {
	Sample(r *rand.Rand) time.Duration
}

// Fixed is a constant delay.
type Fixed time.Duration

// Sample implements Latency.
func (f Fixed) Sample(*rand.Rand) time.Duration { return time.Duration(f) }

// Uniform is a delay drawn uniformly from [Min, Max].
type Uniform struct{ Min, Max time.Duration }

// Sample implements Latency.
func (u Uniform) Sample(r *rand.Rand) time.Duration {
	if u.Max <= u.Min {
		return u.Min
	}
	return u.Min + time.Duration(r.Int64N(int64(u.Max-u.Min)+1))
}

// LogNormal is a heavy-tailed delay with the given median; Sigma is the standard
// deviation of its logarithm (0.5 gives p99 around 3.2x the median). Object-store
// latencies look like this: a tight body and a long tail.
type LogNormal struct {
	Median time.Duration
	Sigma  float64
}

// Sample implements Latency.
func (l LogNormal) Sample(r *rand.Rand) time.Duration {
	return time.Duration(float64(l.Median) * math.Exp(l.Sigma*r.NormFloat64()))
}

// OpFaults configures the faults injected into one operation.
type OpFaults struct {
	// ErrorRate is the probability in [0,1] that the call fails with ErrInjected
	// before reaching the store.
	ErrorRate float64
	// LostReplyRate (Put and Delete only) is the probability that the call reaches the
	// store and takes effect, but the caller gets ErrInjected: the ambiguous outcome of
	// a timeout after the request was served.
	LostReplyRate float64
	// Latency, if set, delays every call (before it runs) by a sample.
	Latency Latency
}

// Faulty is a Store decorator that injects errors and latency per operation, for tests
// of retry and ambiguity handling. Faults are drawn from a seeded generator, so a test
// with a fixed seed and a single goroutine sees the same faults every run.
type Faulty struct {
	inner Store
	mu    sync.Mutex
	rng   *rand.Rand
	ops   [numOps]OpFaults
}

var _ Store = (*Faulty)(nil)

// NewFaulty wraps inner; no faults are injected until Set is called.
func NewFaulty(inner Store, seed uint64) *Faulty {
	return &Faulty{inner: inner, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Set replaces the faults for op. It may be called while the store is in use.
func (f *Faulty) Set(op Op, faults OpFaults) {
	f.mu.Lock()
	f.ops[op] = faults
	f.mu.Unlock()
}

// SetAll applies the same faults to every operation.
func (f *Faulty) SetAll(faults OpFaults) {
	for op := range numOps {
		f.Set(op, faults)
	}
}

// draw decides, under the lock, this call's delay and fate.
func (f *Faulty) draw(op Op) (delay time.Duration, fail, loseReply bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.ops[op]
	if c.Latency != nil {
		delay = max(0, c.Latency.Sample(f.rng))
	}
	fail = c.ErrorRate > 0 && f.rng.Float64() < c.ErrorRate
	loseReply = !fail && c.LostReplyRate > 0 && f.rng.Float64() < c.LostReplyRate
	return delay, fail, loseReply
}

// before applies the delay and the up-front failure for op; it reports whether the
// reply of a call that goes ahead must be lost.
func (f *Faulty) before(ctx context.Context, op Op, key string) (loseReply bool, err error) {
	delay, fail, lose := f.draw(op)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
	}
	if fail {
		return false, fmt.Errorf("objstore: %s %q: %w", op, key, ErrInjected)
	}
	return lose, nil
}

// Get implements Store.
func (f *Faulty) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if _, err := f.before(ctx, OpGet, key); err != nil {
		return nil, ObjectInfo{}, err
	}
	return f.inner.Get(ctx, key)
}

// GetRange implements Store.
func (f *Faulty) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if _, err := f.before(ctx, OpGetRange, key); err != nil {
		return nil, err
	}
	return f.inner.GetRange(ctx, key, off, length)
}

// Head implements Store.
func (f *Faulty) Head(ctx context.Context, key string) (ObjectInfo, error) {
	if _, err := f.before(ctx, OpHead, key); err != nil {
		return ObjectInfo{}, err
	}
	return f.inner.Head(ctx, key)
}

// Put implements Store.
func (f *Faulty) Put(ctx context.Context, key string, body io.Reader, size int64, opts PutOptions) (ObjectInfo, error) {
	lose, err := f.before(ctx, OpPut, key)
	if err != nil {
		return ObjectInfo{}, err
	}
	info, err := f.inner.Put(ctx, key, body, size, opts)
	if err == nil && lose {
		return ObjectInfo{}, fmt.Errorf("objstore: put %q: reply lost: %w", key, ErrInjected)
	}
	return info, err
}

// Delete implements Store.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	lose, err := f.before(ctx, OpDelete, key)
	if err != nil {
		return err
	}
	err = f.inner.Delete(ctx, key)
	if err == nil && lose {
		return fmt.Errorf("objstore: delete %q: reply lost: %w", key, ErrInjected)
	}
	return err
}

// List implements Store. A fault fails the listing before its first item.
func (f *Faulty) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		if _, err := f.before(ctx, OpList, prefix); err != nil {
			yield(ObjectInfo{}, err)
			return
		}
		for info, err := range f.inner.List(ctx, prefix) {
			if !yield(info, err) {
				return
			}
		}
	}
}
