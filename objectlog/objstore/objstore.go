// Package objstore is Strata's view of a bucket: one small interface, Store, and the
// implementations and decorators that satisfy it. Memory and local-directory stores live
// here; S3 lives in the s3store subpackage so that only it links the AWS SDK.
//
// Every implementation passes the same acceptance suite (storetest). Errors cross the
// boundary as sentinels (ErrNotExist, ErrPreconditionFailed, ErrInvalidRange,
// ErrInvalidKey) so callers never look at provider error types.
//
// A Store never interprets object contents; the segment format is objectlog's business.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Implementations wrap them with context; test with errors.Is.
var (
	// ErrNotExist: the key has no object.
	ErrNotExist = errors.New("objstore: object does not exist")
	// ErrPreconditionFailed: a conditional Put lost (If-None-Match found an object,
	// If-Match found another version or none). It means the Put's bytes were
	// definitely not stored by this call; an implementation that cannot be sure (a
	// retried attempt may have landed first) returns another error instead, and one
	// that finds exactly its own bytes in place reports success.
	ErrPreconditionFailed = errors.New("objstore: precondition failed")
	// ErrInvalidRange: GetRange started at or past the end of the object.
	ErrInvalidRange = errors.New("objstore: invalid range")
	// ErrInvalidKey: the key is not one a Store accepts (see ValidateKey).
	ErrInvalidKey = errors.New("objstore: invalid key")
	// ErrShortBody: ReadAllN got fewer bytes than promised (a truncated object or body).
	ErrShortBody = errors.New("objstore: body shorter than declared size")
)

// ObjectInfo describes one stored object version.
type ObjectInfo struct {
	Key  string
	Size int64
	// ETag identifies the version of the object; it changes whenever the object is
	// replaced. It is opaque: compare it, pass it to PutOptions.IfMatch, nothing else.
	ETag    string
	ModTime time.Time
}

// PutOptions make a Put conditional. At most one of the two may be set.
type PutOptions struct {
	// IfNoneMatch: store only if no object exists under the key (S3 If-None-Match: *).
	IfNoneMatch bool
	// IfMatch: store only if the current object's ETag equals this value.
	IfMatch string
}

// Store is a flat namespace of immutable-once-written objects addressed by key.
//
// Concurrency: every method is safe for concurrent use.
//
// Durability: Put returns nil only once the object is durable in the backing store (for
// the directory store: file and directory fsynced; for S3: the PUT was acknowledged) and
// is visible to every later Get, Head and List (read-after-write).
//
// Atomicity: readers see either the whole old object or the whole new one, never a mix.
// Conditional Puts are atomic compare-and-set operations: of two racing IfNoneMatch Puts
// on one key exactly one succeeds.
//
// Errors: a missing key is ErrNotExist; a lost condition is ErrPreconditionFailed; a bad
// key is ErrInvalidKey. Any other error (network, timeout, context) leaves the outcome of
// a Put or Delete unknown: the caller must treat it as "may have happened" and retry or
// check, never as "did not happen".
type Store interface {
	// Get returns the whole object. The caller must close the reader. The ObjectInfo
	// describes the version being read.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)

	// GetRange returns bytes [off, off+length) of the object, shortened at the object's
	// end. off must be >= 0 and length > 0; off at or past the end is ErrInvalidRange.
	// The caller must close the reader and must check it received the bytes it expected.
	GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error)

	// Head returns the object's metadata without its contents.
	Head(ctx context.Context, key string) (ObjectInfo, error)

	// Put stores size bytes read from body under key, replacing any object there unless
	// opts makes it conditional. A body that is an io.ReadSeeker lets implementations
	// retry without buffering; other readers may be buffered in memory. Reading fewer or
	// more than size bytes from body is an error and stores nothing.
	Put(ctx context.Context, key string, body io.Reader, size int64, opts PutOptions) (ObjectInfo, error)

	// Delete removes the object. Deleting a key that has no object is not an error.
	Delete(ctx context.Context, key string) error

	// List yields the objects whose keys start with prefix, in ascending byte order of
	// key. An error ends the sequence (yielded once, with a zero ObjectInfo).
	List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error]
}

// MaxKeyLen is the longest key a Store accepts (S3's limit).
const MaxKeyLen = 1024

// ValidateKey reports whether key is acceptable to every Store: non-empty, at most
// MaxKeyLen bytes of valid UTF-8 without control characters, made of '/'-separated
// segments that are neither empty, "." nor "..". Keys are thereby also safe file paths.
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKeyLen || !utf8.ValidString(key) {
		return errorKey(key)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return errorKey(key)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errorKey(key)
		}
	}
	return nil
}

// ValidatePrefix is ValidateKey for List prefixes: empty is allowed, and a trailing '/'
// (or a partial last segment) is allowed.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	trimmed := strings.TrimSuffix(prefix, "/")
	if trimmed == "" {
		return errorKey(prefix)
	}
	if err := ValidateKey(trimmed); err != nil {
		// A partial last segment "." is fine as a prefix ("./" is not).
		if strings.HasSuffix(prefix, "/") || !strings.HasSuffix(trimmed, ".") {
			return err
		}
	}
	return nil
}

func errorKey(key string) error {
	if len(key) > 64 {
		key = key[:64] + "..."
	}
	return &keyError{key: key}
}

type keyError struct{ key string }

func (e *keyError) Error() string { return "objstore: invalid key " + quote(e.key) }
func (e *keyError) Unwrap() error { return ErrInvalidKey }

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' {
			b.WriteString("\\x")
			const hex = "0123456789abcdef"
			b.WriteByte(hex[byte(r)>>4])
			b.WriteByte(hex[byte(r)&0xf])
			continue
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// CheckRange validates GetRange arguments the same way for every implementation.
func CheckRange(off, length int64) error {
	if off < 0 || length <= 0 {
		return ErrInvalidRange
	}
	return nil
}

// ReadAllN reads exactly size bytes from r, failing if r holds fewer (ErrShortBody) or
// more. It never trusts size for its allocation: the buffer starts at no more than
// 1 MiB and grows, up to size, only as bytes arrive.
func ReadAllN(r io.Reader, size int64) ([]byte, error) {
	if size < 0 {
		return nil, errors.New("objstore: negative size")
	}
	buf := make([]byte, 0, min(size, 1<<20))
	for int64(len(buf)) < size {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(size, 2*int64(cap(buf))))
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(buf)) < size {
		return nil, fmt.Errorf("%w: %d of %d bytes", ErrShortBody, len(buf), size)
	}
	var extra [1]byte
	switch n, err := io.ReadFull(r, extra[:]); {
	case n > 0:
		return nil, errors.New("objstore: body longer than declared size")
	case err != io.EOF:
		return nil, err
	}
	return buf, nil
}
