package objstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"iter"
	"slices"
	"strings"
	"sync"
	"time"
)

// Memory is a Store held in process memory, for unit tests and `mem://`. Objects are
// copied in and out, so callers may reuse their buffers.
type Memory struct {
	mu      sync.RWMutex
	objects map[string]memObject
	now     func() time.Time
}

type memObject struct {
	data []byte
	info ObjectInfo
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{objects: make(map[string]memObject), now: time.Now}
}

var _ Store = (*Memory)(nil)

func (m *Memory) lookup(key string) (memObject, error) {
	if err := ValidateKey(key); err != nil {
		return memObject{}, err
	}
	m.mu.RLock()
	o, ok := m.objects[key]
	m.mu.RUnlock()
	if !ok {
		return memObject{}, fmt.Errorf("objstore: memory: %q: %w", key, ErrNotExist)
	}
	return o, nil
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, ObjectInfo{}, err
	}
	o, err := m.lookup(key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	// Stored slices are never mutated after Put, so sharing them with readers is safe.
	return io.NopCloser(bytes.NewReader(o.data)), o.info, nil
}

// GetRange implements Store.
func (m *Memory) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := CheckRange(off, length); err != nil {
		return nil, fmt.Errorf("objstore: memory: %q [%d,+%d): %w", key, off, length, err)
	}
	o, err := m.lookup(key)
	if err != nil {
		return nil, err
	}
	size := int64(len(o.data))
	if off >= size {
		return nil, fmt.Errorf("objstore: memory: %q offset %d of %d: %w", key, off, size, ErrInvalidRange)
	}
	end := min(size, off+min(length, size))
	return io.NopCloser(bytes.NewReader(o.data[off:end])), nil
}

// Head implements Store.
func (m *Memory) Head(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	o, err := m.lookup(key)
	return o.info, err
}

// Put implements Store.
func (m *Memory) Put(ctx context.Context, key string, body io.Reader, size int64, opts PutOptions) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return ObjectInfo{}, fmt.Errorf("objstore: memory: put %q: both IfNoneMatch and IfMatch set", key)
	}
	data, err := ReadAllN(body, size)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("objstore: memory: put %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	sum := md5.Sum(data)
	info := ObjectInfo{Key: key, Size: size, ETag: hex.EncodeToString(sum[:]), ModTime: m.now()}

	m.mu.Lock()
	defer m.mu.Unlock()
	cur, exists := m.objects[key]
	switch {
	case opts.IfNoneMatch && exists:
		return ObjectInfo{}, fmt.Errorf("objstore: memory: put %q if-none-match: %w", key, ErrPreconditionFailed)
	case opts.IfMatch != "" && (!exists || cur.info.ETag != opts.IfMatch):
		return ObjectInfo{}, fmt.Errorf("objstore: memory: put %q if-match: %w", key, ErrPreconditionFailed)
	}
	m.objects[key] = memObject{data: data, info: info}
	return info, nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.objects, key)
	m.mu.Unlock()
	return nil
}

// List implements Store. It lists a snapshot taken when iteration starts.
func (m *Memory) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		if err := ValidatePrefix(prefix); err != nil {
			yield(ObjectInfo{}, err)
			return
		}
		m.mu.RLock()
		infos := make([]ObjectInfo, 0, len(m.objects))
		for k, o := range m.objects {
			if strings.HasPrefix(k, prefix) {
				infos = append(infos, o.info)
			}
		}
		m.mu.RUnlock()
		slices.SortFunc(infos, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
		for _, info := range infos {
			if err := ctx.Err(); err != nil {
				yield(ObjectInfo{}, err)
				return
			}
			if !yield(info, nil) {
				return
			}
		}
	}
}
