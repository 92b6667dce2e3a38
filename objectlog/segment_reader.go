package objectlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/stratalog/strata/objectlog/objstore"
)

// TailRead is how many bytes ReadIndex asks for from the end of a segment. One read of
// this size returns the footer and the index of segments with up to ~800 chunks; larger
// indexes cost a second read of exactly the missing part.
const TailRead = 64 << 10

// ReadIndex reads and checks the footer and index of the segment stored under key, whose
// size the caller knows (from the metastore or a List). It makes one ranged read, or two
// when the index is larger than TailRead. Corrupt or truncated objects yield errors
// wrapping ErrCorrupt; allocations never exceed the bytes received.
func ReadIndex(ctx context.Context, store objstore.Store, key string, size int64) (*Index, error) {
	if size < FooterSize {
		return nil, corruptf("segment %s of %d bytes too short for a footer", key, size)
	}
	tailLen := min(size, TailRead)
	tailOff := size - tailLen
	tail, err := readRange(ctx, store, key, tailOff, tailLen)
	if err != nil {
		return nil, err
	}
	f, err := ParseFooter(tail[len(tail)-FooterSize:], size)
	if err != nil {
		return nil, fmt.Errorf("objectlog: segment %s: %w", key, err)
	}
	index := tail[:len(tail)-FooterSize]
	if f.IndexOffset >= tailOff {
		index = index[f.IndexOffset-tailOff:]
	} else {
		head, err := readRange(ctx, store, key, f.IndexOffset, tailOff-f.IndexOffset)
		if err != nil {
			return nil, err
		}
		index = append(head, index...)
	}
	ix, err := ParseIndex(f, index, size)
	if err != nil {
		return nil, fmt.Errorf("objectlog: segment %s: %w", key, err)
	}
	return ix, nil
}

// ReadChunk reads one chunk of the segment under key and checks it against its index
// entry (CheckChunk). The bytes are returned as stored: relative base offsets are not
// yet resolved (see ResolveOffsets).
func ReadChunk(ctx context.Context, store objstore.Store, key string, c *Chunk) ([]byte, error) {
	data, err := readRange(ctx, store, key, c.Position, c.Length)
	if err != nil {
		return nil, err
	}
	if err := CheckChunk(c, data); err != nil {
		return nil, fmt.Errorf("objectlog: segment %s: %w", key, err)
	}
	return data, nil
}

// readRange reads exactly [off, off+n) of an object. An object shorter than that is
// corrupt (its index promised the bytes), not a storage error.
func readRange(ctx context.Context, store objstore.Store, key string, off, n int64) ([]byte, error) {
	rc, err := store.GetRange(ctx, key, off, n)
	if errors.Is(err, objstore.ErrInvalidRange) {
		return nil, corruptf("segment %s: range %d+%d past the object's end", key, off, n)
	}
	if err != nil {
		return nil, fmt.Errorf("objectlog: segment %s: %w", key, err)
	}
	defer rc.Close()
	data, err := objstore.ReadAllN(rc, n)
	if err != nil {
		// A short body means the object is shorter than promised; a long one cannot
		// happen with a correct store. Read errors stay what they are (retriable).
		if errors.Is(err, objstore.ErrShortBody) {
			return nil, corruptf("segment %s: range %d+%d: %v", key, off, n, err)
		}
		return nil, fmt.Errorf("objectlog: segment %s: range %d+%d: %w", key, off, n, err)
	}
	return data, nil
}

// ResolveOffsets rewrites the base offsets of a relative chunk's batches (already checked
// by CheckChunk), or of a run of them, to absolute ones: base for the first batch in
// data, and base plus the distance from it for the others. Chunks with absolute
// offsets are left alone. The batch CRCs stay valid: they do not cover offsets.
func ResolveOffsets(c *Chunk, data []byte, base int64) error {
	if c.AbsoluteOffsets() {
		return nil
	}
	if base < 0 {
		return fmt.Errorf("objectlog: resolve offsets: negative base %d", base)
	}
	// Offsets are relative to the range's first batch, so that a range starting
	// inside a chunk (an index entry that leaves a duplicate batch out) resolves
	// from its own base; a whole chunk's first batch is at relative 0.
	first := int64(-1)
	for len(data) > 0 {
		h, err := ParseBatchHeader(data)
		if err != nil {
			return err
		}
		if first < 0 {
			first = h.BaseOffset
		}
		if err := SetBaseOffset(data, base+h.BaseOffset-first); err != nil {
			return err
		}
		data = data[h.Size():]
	}
	return nil
}
