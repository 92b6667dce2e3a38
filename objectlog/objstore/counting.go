package objstore

import (
	"context"
	"io"
	"iter"
	"sync/atomic"
)

// Counting is a Store decorator that counts requests and bytes per operation: the raw
// figures behind "object-store requests per GiB". Every call is one request, whatever
// its outcome, as a cloud bill counts them; a List counts one request per 1000 keys
// (S3's page size), at least one.
type Counting struct {
	inner    Store
	requests [numOps]atomic.Int64
	errors   [numOps]atomic.Int64
	bytesIn  atomic.Int64 // bytes written by Put
	bytesOut atomic.Int64 // bytes read by Get and GetRange
}

var _ Store = (*Counting)(nil)

// NewCounting wraps inner.
func NewCounting(inner Store) *Counting { return &Counting{inner: inner} }

// Counts is a snapshot of a Counting store's counters.
type Counts struct {
	Requests [numOps]int64
	Errors   [numOps]int64
	BytesIn  int64
	BytesOut int64
}

// Total is the number of requests of every kind.
func (c Counts) Total() int64 {
	var n int64
	for _, r := range c.Requests {
		n += r
	}
	return n
}

// Counts returns the counters so far.
func (c *Counting) Counts() Counts {
	var s Counts
	for op := range numOps {
		s.Requests[op] = c.requests[op].Load()
		s.Errors[op] = c.errors[op].Load()
	}
	s.BytesIn = c.bytesIn.Load()
	s.BytesOut = c.bytesOut.Load()
	return s
}

func (c *Counting) count(op Op, err error) {
	c.requests[op].Add(1)
	if err != nil {
		c.errors[op].Add(1)
	}
}

// countingReader adds the bytes a caller actually reads to the store's total.
type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// Get implements Store.
func (c *Counting) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	rc, info, err := c.inner.Get(ctx, key)
	c.count(OpGet, err)
	if err != nil {
		return nil, info, err
	}
	return countingReader{rc, &c.bytesOut}, info, nil
}

// GetRange implements Store.
func (c *Counting) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	rc, err := c.inner.GetRange(ctx, key, off, length)
	c.count(OpGetRange, err)
	if err != nil {
		return nil, err
	}
	return countingReader{rc, &c.bytesOut}, nil
}

// Head implements Store.
func (c *Counting) Head(ctx context.Context, key string) (ObjectInfo, error) {
	info, err := c.inner.Head(ctx, key)
	c.count(OpHead, err)
	return info, err
}

// Put implements Store.
func (c *Counting) Put(ctx context.Context, key string, body io.Reader, size int64, opts PutOptions) (ObjectInfo, error) {
	info, err := c.inner.Put(ctx, key, body, size, opts)
	c.count(OpPut, err)
	if err == nil {
		c.bytesIn.Add(size)
	}
	return info, err
}

// Delete implements Store.
func (c *Counting) Delete(ctx context.Context, key string) error {
	err := c.inner.Delete(ctx, key)
	c.count(OpDelete, err)
	return err
}

// List implements Store.
func (c *Counting) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		const page = 1000
		n := 0
		var lastErr error
		defer func() {
			pages := max(1, (n+page-1)/page)
			for i := range pages {
				if i == pages-1 {
					c.count(OpList, lastErr)
				} else {
					c.count(OpList, nil)
				}
			}
		}()
		for info, err := range c.inner.List(ctx, prefix) {
			if err != nil {
				lastErr = err
			} else {
				n++
			}
			if !yield(info, err) {
				return
			}
		}
	}
}
