package objstore

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tmpDirName holds Puts in progress. It sits inside the root so that the final rename
// never crosses a filesystem; keys may not start with it.
const tmpDirName = ".strata-tmp"

// Dir is a Store in a local directory: one file per object, the key being its path below
// the root. A Put writes a temporary file, fsyncs it, renames (or, for IfNoneMatch, hard
// links) it into place and fsyncs the directory, so a crash leaves either the old object
// or the new one, and an acknowledged Put survives power loss.
//
// Conditional Puts are atomic within one process. Across processes sharing a directory,
// IfNoneMatch stays atomic (link(2) fails if the name exists) but IfMatch does not: serve
// a directory from one process.
//
// Unlike S3, a key cannot be both an object and a prefix of another key's directory
// ("a" and "a/b"); such a Put fails. Strata's own key layout never does this.
type Dir struct {
	root    string
	tmp     string
	stripes [64]sync.Mutex // serialise mutations per key so IfMatch is a true compare-and-set
	seed    maphash.Seed
}

var _ Store = (*Dir)(nil)

// NewDir opens (creating if needed) a directory store at root. Temporary files older
// than an hour, left by a crash mid-Put, are removed.
func NewDir(root string) (*Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("objstore: dir %q: %w", root, err)
	}
	d := &Dir{root: abs, tmp: filepath.Join(abs, tmpDirName), seed: maphash.MakeSeed()}
	if err := os.MkdirAll(d.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("objstore: dir: %w", err)
	}
	entries, err := os.ReadDir(d.tmp)
	if err != nil {
		return nil, fmt.Errorf("objstore: dir: %w", err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
			_ = os.Remove(filepath.Join(d.tmp, e.Name()))
		}
	}
	return d, nil
}

// Root is the directory the store serves.
func (d *Dir) Root() string { return d.root }

func (d *Dir) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if key == tmpDirName || strings.HasPrefix(key, tmpDirName+"/") {
		return "", errorKey(key)
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

func (d *Dir) lock(key string) *sync.Mutex {
	return &d.stripes[maphash.String(d.seed, key)%uint64(len(d.stripes))]
}

func infoOf(key string, fi fs.FileInfo) ObjectInfo {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	// A replaced object always gets a new inode (rename/link of a fresh file), so
	// inode, size and mtime together identify the version without hashing contents.
	return ObjectInfo{
		Key:     key,
		Size:    fi.Size(),
		ETag:    fmt.Sprintf("%x-%x-%x", ino, fi.Size(), fi.ModTime().UnixNano()),
		ModTime: fi.ModTime(),
	}
}

func notExist(op, key string, err error) error {
	// ENOTDIR: a path component is a file, so the key cannot name an object either.
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("objstore: dir: %s %q: %w", op, key, ErrNotExist)
	}
	return fmt.Errorf("objstore: dir: %s %q: %w", op, key, err)
}

func (d *Dir) open(key string) (*os.File, ObjectInfo, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, ObjectInfo{}, notExist("get", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, ObjectInfo{}, notExist("get", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, ObjectInfo{}, notExist("get", key, fs.ErrNotExist)
	}
	return f, infoOf(key, fi), nil
}

// Get implements Store.
func (d *Dir) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, ObjectInfo{}, err
	}
	return d.open(key)
}

// GetRange implements Store.
func (d *Dir) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := CheckRange(off, length); err != nil {
		return nil, fmt.Errorf("objstore: dir: %q [%d,+%d): %w", key, off, length, err)
	}
	f, info, err := d.open(key)
	if err != nil {
		return nil, err
	}
	if off >= info.Size {
		f.Close()
		return nil, fmt.Errorf("objstore: dir: %q offset %d of %d: %w", key, off, info.Size, ErrInvalidRange)
	}
	n := min(length, info.Size-off)
	return sectionCloser{io.NewSectionReader(f, off, n), f}, nil
}

type sectionCloser struct {
	*io.SectionReader
	io.Closer
}

// Head implements Store.
func (d *Dir) Head(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	p, err := d.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, notExist("head", key, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, notExist("head", key, fs.ErrNotExist)
	}
	return infoOf(key, fi), nil
}

// Put implements Store.
func (d *Dir) Put(ctx context.Context, key string, body io.Reader, size int64, opts PutOptions) (ObjectInfo, error) {
	p, err := d.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return ObjectInfo{}, fmt.Errorf("objstore: dir: put %q: both IfNoneMatch and IfMatch set", key)
	}
	tmpName, fi, err := d.writeTemp(body, size)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("objstore: dir: put %q: %w", key, err)
	}
	defer os.Remove(tmpName) // a no-op after a successful rename
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	parent := filepath.Dir(p)
	if err := d.mkdirAll(parent); err != nil {
		return ObjectInfo{}, fmt.Errorf("objstore: dir: put %q: %w", key, err)
	}

	mu := d.lock(key)
	mu.Lock()
	defer mu.Unlock()
	switch {
	case opts.IfNoneMatch:
		// link(2) refuses an existing name: atomic even against other processes.
		if err := os.Link(tmpName, p); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return ObjectInfo{}, fmt.Errorf("objstore: dir: put %q if-none-match: %w", key, ErrPreconditionFailed)
			}
			return ObjectInfo{}, fmt.Errorf("objstore: dir: put %q: %w", key, err)
		}
	case opts.IfMatch != "":
		cur, err := os.Stat(p)
		if err != nil || !cur.Mode().IsRegular() || infoOf(key, cur).ETag != opts.IfMatch {
			return ObjectInfo{}, fmt.Errorf("objstore: dir: put %q if-match: %w", key, ErrPreconditionFailed)
		}
		fallthrough
	default:
		if err := os.Rename(tmpName, p); err != nil {
			return ObjectInfo{}, fmt.Errorf("objstore: dir: put %q: %w", key, err)
		}
	}
	if err := syncDir(parent); err != nil {
		// The object is in place but perhaps not durable: the outcome is unknown.
		return ObjectInfo{}, fmt.Errorf("objstore: dir: put %q: sync dir: %w", key, err)
	}
	return infoOf(key, fi), nil
}

// sizedWriterTo is a body that knows how much it holds and writes it all at once, such
// as *bytes.Reader and *bytes.Buffer.
type sizedWriterTo interface {
	io.WriterTo
	Len() int
}

// writeTemp copies exactly size bytes of body into a new fsynced temporary file.
func (d *Dir) writeTemp(body io.Reader, size int64) (string, fs.FileInfo, error) {
	if size < 0 {
		return "", nil, errors.New("negative size")
	}
	f, err := os.CreateTemp(d.tmp, "put-*")
	if err != nil {
		return "", nil, err
	}
	name := f.Name()
	fail := func(err error) (string, fs.FileInfo, error) {
		f.Close()
		os.Remove(name)
		return "", nil, err
	}
	var n int64
	if r, ok := body.(sizedWriterTo); ok && int64(r.Len()) == size {
		// All of it in one write (a segment is one buffer), not 32 KiB at a time.
		n, err = r.WriteTo(f)
	} else {
		n, err = io.Copy(f, io.LimitReader(body, size+1))
	}
	switch {
	case err != nil:
		return fail(err)
	case n < size:
		return fail(errors.New("body shorter than declared size"))
	case n > size:
		return fail(errors.New("body longer than declared size"))
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", nil, err
	}
	return name, fi, nil
}

// mkdirAll creates dir and its missing parents, fsyncing each parent that gained an
// entry so the new directories survive a crash along with the object.
func (d *Dir) mkdirAll(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	var missing []string
	for p := dir; p != d.root && len(p) > len(d.root); p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		missing = append(missing, p)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range missing {
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Delete implements Store.
func (d *Dir) Delete(ctx context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	mu := d.lock(key)
	mu.Lock()
	defer mu.Unlock()
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return nil // nothing to delete (a directory is not an object)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("objstore: dir: delete %q: %w", key, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("objstore: dir: delete %q: sync dir: %w", key, err)
	}
	return nil
}

// List implements Store. Keys are gathered and sorted before the first is yielded, so
// the order is byte order even where directory walking order differs.
func (d *Dir) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		if err := ValidatePrefix(prefix); err != nil {
			yield(ObjectInfo{}, err)
			return
		}
		// Walk only the deepest directory the prefix names in full.
		start := d.root
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			start = filepath.Join(d.root, filepath.FromSlash(prefix[:i]))
		}
		var infos []ObjectInfo
		err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
					return nil // vanished under us, or the prefix names no directory
				}
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if e.IsDir() {
				if p == d.tmp {
					return fs.SkipDir
				}
				return nil
			}
			if !e.Type().IsRegular() {
				return nil
			}
			rel, err := filepath.Rel(d.root, p)
			if err != nil {
				return err
			}
			key := filepath.ToSlash(rel)
			if !strings.HasPrefix(key, prefix) {
				return nil
			}
			fi, err := e.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			infos = append(infos, infoOf(key, fi))
			return nil
		})
		if err != nil {
			yield(ObjectInfo{}, fmt.Errorf("objstore: dir: list %q: %w", prefix, err))
			return
		}
		slices.SortFunc(infos, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
		for _, info := range infos {
			if !yield(info, nil) {
				return
			}
		}
	}
}
