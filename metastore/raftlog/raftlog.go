// Package raftlog is the metastore's Raft log store and stable store: it
// implements hashicorp/raft's LogStore and StableStore on a Pebble database of
// its own.
//
// The Raft log lives in a Pebble DB separate from the FSM state, so truncating
// the log after a snapshot never competes with compaction of the state, and
// the two can sit on different disks.
//
// It owns only the bytes of the log and of raft's few stable keys (current
// term, last vote). It must never interpret commands, and it must never report
// a write as durable that Pebble did not fsync: once a commit fails the store
// is failed for good (see "Durability and failure" below).
//
// # Keys
//
// Every key starts with a one-byte prefix; the prefixes are the constants
// prefixLog and prefixStable below and are never reused.
//
//	0x01 | index (uint64, big-endian)   a log entry; byte order = index order
//	0x02 | key bytes                    a StableStore key, e.g. 0x02 "CurrentTerm"
//
// A SetUint64 value is 8 bytes, big-endian. A Set value is stored as given.
//
// # Log entry value, format version 1
//
//	offset  field           encoding
//	0       version         1 byte, = 1
//	1       index           uvarint, equal to the index in the key
//	        term            uvarint
//	        type            1 byte, raft.LogType
//	        flags           1 byte; bit 0: AppendedAt present; other bits 0
//	        data length     uvarint, then that many bytes of Data
//	        ext length      uvarint, then that many bytes of Extensions
//	        [flags bit 0]   AppendedAt: Unix seconds (zig-zag varint), then
//	                        nanoseconds (uvarint, < 1e9)
//
// Every varint is minimal and the value ends exactly after the last field, so
// each entry has exactly one encoding. Example: Index 7, Term 2, LogCommand,
// Data "hi", no extensions, no AppendedAt:
//
//	01 07 02 00 00 02 68 69 00
//
// The decoder treats a value as hostile: any deviation is an error marked
// ErrCorrupt (a *CorruptError), and it allocates nothing, since Data and
// Extensions alias the bytes it was given.
//
// # Durability and failure
//
// Every write is one Pebble batch committed with fsync (unless Options.NoSync,
// for tests and benchmarks). Pebble applies a batch to its memtable before
// the WAL sync completes, and on a failed WAL write or sync it calls its
// logger's Fatalf (the default logger exits the process) and, if Fatalf
// returns, reports success to the committer. The store's logger does return:
// it turns that Fatalf (as the store turns any commit error) into a sticky
// failure. Every later call, reads included, returns an error marked
// ErrFailed, since the memtable may hold writes the disk does not. A disk that fails fsync cannot be trusted to
// report what it kept, so the node must stop rather than serve; the way back
// is a restart, which replays only what the WAL holds.
package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// Key prefixes. Stable ids: never renumber or reuse one.
const (
	prefixLog    byte = 0x01 // + big-endian uint64 index: a raft.Log
	prefixStable byte = 0x02 // + key bytes: a StableStore value
)

const logKeyLen = 1 + 8

// Log value encoding.
const (
	logFormatV1    byte = 1
	flagAppendedAt byte = 1 << 0
)

var (
	// ErrCorrupt marks stored bytes that do not decode. Errors carrying it are
	// *CorruptError values.
	ErrCorrupt = errors.New("raftlog: corrupt data")

	// ErrFailed marks every error returned after a commit failed. The store
	// stays failed until it is closed and reopened.
	ErrFailed = errors.New("raftlog: store failed")

	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("raftlog: store closed")

	// ErrKeyNotFound is returned, unwrapped, by Get and GetUint64 for a key
	// that was never set. Its message is fixed: hashicorp/raft (NewRaft,
	// HasExistingState, vote handling) tells a missing key from a failure by
	// comparing err.Error() with "not found", so it carries no package prefix
	// and must never be wrapped.
	ErrKeyNotFound = errors.New("not found")
)

// CorruptError reports stored bytes that do not decode. It matches ErrCorrupt
// with errors.Is.
type CorruptError struct {
	Index  uint64 // log index of the entry; 0 for stable-store values and bare decodes
	Offset int    // byte offset in the value where decoding stopped
	Reason string
}

func (e *CorruptError) Error() string {
	if e.Index != 0 {
		return fmt.Sprintf("raftlog: corrupt log entry %d at byte %d: %s", e.Index, e.Offset, e.Reason)
	}
	return fmt.Sprintf("raftlog: corrupt value at byte %d: %s", e.Offset, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Options configures Open. The zero value is the production setting.
type Options struct {
	// NoSync commits without fsync. Only for tests and benchmarks: a crash
	// loses acknowledged writes, which breaks Raft's safety.
	NoSync bool

	// Logger receives Pebble's messages. Nil means slog.Default().
	Logger *slog.Logger

	// CacheSize is Pebble's block cache in bytes. 0 means Pebble's default
	// (8 MiB); recent entries are read from the memtable anyway.
	CacheSize int64

	// FS is the file system Pebble uses. Nil means the operating system's.
	// Tests pass vfs.NewMem() or an errorfs wrapper to inject faults.
	FS vfs.FS
}

// Store is a raft.LogStore and raft.StableStore on Pebble.
//
// All methods are safe for concurrent use (raft reads the log from its
// replication goroutines while its main loop appends and its snapshot loop
// truncates). Writes are serialized inside the store. A method that returns
// nil for a write has fsynced it, unless Options.NoSync.
type Store struct {
	db        *pebble.DB
	writeOpts *pebble.WriteOptions

	// closeMu guards db against use after Close: methods hold it shared,
	// Close holds it exclusively. Pebble panics on a closed DB.
	closeMu sync.RWMutex
	closed  bool

	// writeMu serializes writes so that first and last follow commit order.
	writeMu sync.Mutex
	first   atomic.Uint64 // 0 when the log is empty
	last    atomic.Uint64 // 0 when the log is empty

	failure atomic.Pointer[error] // sticky; set once
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// Open opens or creates the store in dir, which must not be shared with
// another Pebble DB.
func Open(dir string, opts Options) (*Store, error) {
	if opts.CacheSize < 0 {
		return nil, fmt.Errorf("raftlog: negative cache size %d", opts.CacheSize)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s := &Store{writeOpts: pebble.Sync}
	if opts.NoSync {
		s.writeOpts = pebble.NoSync
	}
	popts := &pebble.Options{
		FS:        opts.FS,
		CacheSize: opts.CacheSize,
		// Pinned so that upgrading Pebble never ratchets the on-disk format
		// silently; this is the newest format of pebble/v2 v2.1.7.
		FormatMajorVersion: pebble.FormatValueSeparation,
		Logger:             &pebbleLogger{log: logger, store: s},
		EventListener: &pebble.EventListener{
			DiskSlow: func(info pebble.DiskSlowInfo) {
				logger.Warn("raftlog: disk slow", "detail", info.String())
			},
		},
	}
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	s.db = db
	if err := errors.Join(s.failed(), s.loadBounds()); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return s, nil
}

// Close closes the database. Later calls return ErrClosed. Closing a failed
// store may return Pebble's error again.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("raftlog: close: %w", err)
	}
	return nil
}

// FirstIndex returns the lowest stored log index, or 0 if the log is empty.
func (s *Store) FirstIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.closeMu.RUnlock()
	return s.first.Load(), nil
}

// LastIndex returns the highest stored log index, or 0 if the log is empty.
func (s *Store) LastIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.closeMu.RUnlock()
	return s.last.Load(), nil
}

// GetLog reads the entry at index into l. A missing index returns
// raft.ErrLogNotFound unwrapped (raft compares it with ==). Undecodable bytes
// return a *CorruptError.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	key := logKey(index)
	v, closer, err := s.db.Get(key[:])
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return readError(fmt.Sprintf("get log %d", index), err)
	}
	// One copy that Data and Extensions then alias.
	buf := bytes.Clone(v)
	if err := closer.Close(); err != nil {
		return readError(fmt.Sprintf("get log %d", index), err)
	}
	var e raft.Log
	if err := decodeLog(buf, &e); err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Index = index
		}
		return err
	}
	if e.Index != index {
		return &CorruptError{Index: index, Offset: 1, Reason: fmt.Sprintf("entry holds index %d", e.Index)}
	}
	*l = e
	return nil
}

// StoreLog appends or overwrites one entry.
func (s *Store) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

// StoreLogs writes the entries in one atomic batch. Indexes need not be
// contiguous with what is stored; index 0 is rejected, since 0 means "empty"
// to FirstIndex and LastIndex.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	if len(logs) == 0 {
		return nil
	}
	size := 0
	lo, hi := logs[0].Index, logs[0].Index
	for _, l := range logs {
		if l.Index == 0 {
			return errors.New("raftlog: log index 0 is reserved")
		}
		lo, hi = min(lo, l.Index), max(hi, l.Index)
		// Kind byte and two length varints of at most 5 bytes each.
		size += 1 + 5 + logKeyLen + 5 + encodedLogLen(l)
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	b := s.db.NewBatchWithSize(size)
	defer b.Close()
	for _, l := range logs {
		n := encodedLogLen(l)
		op := b.SetDeferred(logKeyLen, n)
		key := logKey(l.Index)
		copy(op.Key, key[:])
		if out := appendLog(op.Value[:0], l); len(out) != n {
			return fmt.Errorf("raftlog: encoded log %d is %d bytes, sized %d", l.Index, len(out), n)
		}
		if err := op.Finish(); err != nil {
			return fmt.Errorf("raftlog: store logs: %w", err)
		}
	}
	if err := s.commit(b); err != nil {
		return err
	}
	if f := s.first.Load(); f == 0 || lo < f {
		s.first.Store(lo)
	}
	if hi > s.last.Load() {
		s.last.Store(hi)
	}
	return nil
}

// DeleteRange deletes the entries with lo <= index <= hi in one batch.
// Raft uses it for the front of the log after a snapshot and for the tail on
// a conflict.
func (s *Store) DeleteRange(lo, hi uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	if lo > hi {
		return nil
	}
	start := logKey(lo)
	end := []byte{prefixLog + 1}
	if hi < ^uint64(0) {
		k := logKey(hi + 1)
		end = k[:]
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if first, last := s.first.Load(), s.last.Load(); last == 0 || hi < first || lo > last {
		return nil // nothing stored in the range; spare the fsync
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(start[:], end, nil); err != nil {
		return fmt.Errorf("raftlog: delete range [%d, %d]: %w", lo, hi, err)
	}
	if err := s.commit(b); err != nil {
		return err
	}
	// Indexes may have gaps (raft leaves one after installing a snapshot), so
	// look the bounds up rather than compute them; range tombstones make the
	// seeks cheap. If that fails the cached bounds are stale, and serving
	// them would lie, so the store fails.
	if err := s.loadBounds(); err != nil {
		s.fail(&failure{msg: "reload log bounds: " + err.Error(), cause: err})
		return s.failed()
	}
	return nil
}

// Set stores val under key.
func (s *Store) Set(key, val []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(stableKey(key), val, nil); err != nil {
		return fmt.Errorf("raftlog: set %q: %w", key, err)
	}
	return s.commit(b)
}

// Get returns the value stored under key. A key never set returns nil and
// ErrKeyNotFound; a key set to an empty value returns an empty, non-nil slice.
func (s *Store) Get(key []byte) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.closeMu.RUnlock()
	v, closer, err := s.db.Get(stableKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, readError(fmt.Sprintf("get %q", key), err)
	}
	out := make([]byte, len(v))
	copy(out, v)
	if err := closer.Close(); err != nil {
		return nil, readError(fmt.Sprintf("get %q", key), err)
	}
	return out, nil
}

// SetUint64 stores val under key as 8 big-endian bytes.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the number stored under key by SetUint64. A key never set
// returns 0 and ErrKeyNotFound.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, &CorruptError{Reason: fmt.Sprintf("stable key %q holds %d bytes, want 8", key, len(v))}
	}
	return binary.BigEndian.Uint64(v), nil
}

// enter takes closeMu shared and reports whether the store may be used. On
// nil the caller must release closeMu.
func (s *Store) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	if err := s.failed(); err != nil {
		s.closeMu.RUnlock()
		return err
	}
	return nil
}

// commit commits b and fails the store if the commit did not happen, whether
// Pebble says so by returning an error or only by calling Fatalf.
func (s *Store) commit(b *pebble.Batch) error {
	if err := b.Commit(s.writeOpts); err != nil {
		s.fail(&failure{msg: "commit: " + err.Error(), cause: err})
	}
	return s.failed()
}

func (s *Store) failed() error {
	if p := s.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// fail makes err the store's sticky error unless one is already set.
func (s *Store) fail(err error) {
	s.failure.CompareAndSwap(nil, &err)
}

// readError wraps a Pebble read error, marking Pebble's corruption errors
// with ErrCorrupt.
func readError(op string, err error) error {
	if pebble.IsCorruptionError(err) {
		return fmt.Errorf("raftlog: %s: %w: %w", op, ErrCorrupt, err)
	}
	return fmt.Errorf("raftlog: %s: %w", op, err)
}

// loadBounds sets first and last from the keys on disk.
func (s *Store) loadBounds() error {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixLog},
		UpperBound: []byte{prefixLog + 1},
	})
	if err != nil {
		return fmt.Errorf("raftlog: scan log bounds: %w", err)
	}
	var first, last uint64
	if it.First() {
		first, err = indexOfKey(it.Key())
		if err == nil && it.Last() {
			last, err = indexOfKey(it.Key())
		}
	}
	err = errors.Join(err, it.Error(), it.Close())
	if err != nil {
		return readError("scan log bounds", err)
	}
	s.first.Store(first)
	s.last.Store(last)
	return nil
}

func logKey(index uint64) [logKeyLen]byte {
	var k [logKeyLen]byte
	k[0] = prefixLog
	binary.BigEndian.PutUint64(k[1:], index)
	return k
}

func indexOfKey(k []byte) (uint64, error) {
	if len(k) != logKeyLen || k[0] != prefixLog {
		return 0, &CorruptError{Reason: fmt.Sprintf("log key %x is not %d bytes", k, logKeyLen)}
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

func stableKey(key []byte) []byte {
	k := make([]byte, 1+len(key))
	k[0] = prefixStable
	copy(k[1:], key)
	return k
}

// failure is the sticky error: it matches ErrFailed and, when known, the
// error that caused it.
type failure struct {
	msg   string
	cause error
}

func (f *failure) Error() string { return "raftlog: store failed: " + f.msg }

func (f *failure) Unwrap() []error {
	if f.cause == nil {
		return []error{ErrFailed}
	}
	return []error{ErrFailed, f.cause}
}

// pebbleLogger routes Pebble's messages to slog and turns Fatalf into the
// store's sticky failure. Pebble's own logger exits the process on Fatalf;
// this one returns, and the store refuses all further work instead.
type pebbleLogger struct {
	log   *slog.Logger
	store *Store
}

func (p *pebbleLogger) Infof(format string, args ...any) {
	p.log.Info("pebble: " + fmt.Sprintf(format, args...))
}

func (p *pebbleLogger) Errorf(format string, args ...any) {
	p.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (p *pebbleLogger) Fatalf(format string, args ...any) {
	f := &failure{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			f.cause = err
			break
		}
	}
	p.store.fail(f)
	p.log.Error("raftlog: pebble fatal error; store failed", "error", f.msg)
}

// encodedLogLen returns the length of appendLog's output for l.
func encodedLogLen(l *raft.Log) int {
	n := 1 + uvarintLen(l.Index) + uvarintLen(l.Term) + 1 + 1 +
		uvarintLen(uint64(len(l.Data))) + len(l.Data) +
		uvarintLen(uint64(len(l.Extensions))) + len(l.Extensions)
	if !l.AppendedAt.IsZero() {
		n += uvarintLen(zigzag(l.AppendedAt.Unix())) + uvarintLen(uint64(l.AppendedAt.Nanosecond()))
	}
	return n
}

// appendLog appends the version 1 encoding of l to dst.
func appendLog(dst []byte, l *raft.Log) []byte {
	var flags byte
	if !l.AppendedAt.IsZero() {
		flags |= flagAppendedAt
	}
	dst = append(dst, logFormatV1)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = append(dst, byte(l.Type), flags)
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	if flags&flagAppendedAt != 0 {
		dst = binary.AppendVarint(dst, l.AppendedAt.Unix())
		dst = binary.AppendUvarint(dst, uint64(l.AppendedAt.Nanosecond()))
	}
	return dst
}

// decodeLog decodes b into l. l.Data and l.Extensions alias b. On error l is
// unchanged and the error is a *CorruptError.
func decodeLog(b []byte, l *raft.Log) error {
	d := decoder{buf: b}
	if v := d.u8("version"); d.err == nil && v != logFormatV1 {
		return &CorruptError{Reason: fmt.Sprintf("unknown format version %d", v)}
	}
	var e raft.Log
	e.Index = d.uvarint("index")
	e.Term = d.uvarint("term")
	e.Type = raft.LogType(d.u8("type"))
	flags := d.u8("flags")
	if d.err == nil && flags&^flagAppendedAt != 0 {
		d.fail(fmt.Sprintf("unknown flags %#02x", flags))
	}
	e.Data = d.blob("data")
	e.Extensions = d.blob("extensions")
	if flags&flagAppendedAt != 0 {
		sec := d.varint("appended_at seconds")
		nsec := d.uvarint("appended_at nanoseconds")
		if d.err == nil && nsec >= uint64(time.Second) {
			d.fail(fmt.Sprintf("appended_at nanoseconds %d out of range", nsec))
		}
		e.AppendedAt = time.Unix(sec, int64(nsec)).UTC()
		if d.err == nil && e.AppendedAt.IsZero() {
			d.fail("appended_at flagged but zero")
		}
	}
	if d.err == nil && d.off != len(b) {
		d.fail(fmt.Sprintf("%d trailing bytes", len(b)-d.off))
	}
	if d.err != nil {
		return d.err
	}
	*l = e
	return nil
}

// decoder reads fields from buf, keeping the first error: after a failure
// every read returns a zero value, so callers check err once at the end.
type decoder struct {
	buf []byte
	off int
	err *CorruptError
}

func (d *decoder) fail(reason string) {
	if d.err == nil {
		d.err = &CorruptError{Offset: d.off, Reason: reason}
	}
}

func (d *decoder) u8(field string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.buf) {
		d.fail(field + ": truncated")
		return 0
	}
	c := d.buf[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf[d.off:])
	switch {
	case n == 0:
		d.fail(field + ": truncated varint")
		return 0
	case n < 0:
		d.fail(field + ": varint overflows 64 bits")
		return 0
	case n != uvarintLen(v):
		d.fail(field + ": varint not minimal")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(field string) int64 {
	u := d.uvarint(field)
	// Zig-zag, as binary.AppendVarint writes it.
	return int64(u>>1) ^ -int64(u&1)
}

func (d *decoder) blob(field string) []byte {
	n := d.uvarint(field + " length")
	if d.err != nil {
		return nil
	}
	if rest := uint64(len(d.buf) - d.off); n > rest {
		d.fail(fmt.Sprintf("%s length %d exceeds the %d bytes left", field, n, rest))
		return nil
	}
	if n == 0 {
		return nil
	}
	end := d.off + int(n)
	// Full slice expression: an append by the caller must not write into the
	// next field.
	b := d.buf[d.off:end:end]
	d.off = end
	return b
}

func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}

func zigzag(v int64) uint64 {
	return uint64(v<<1) ^ uint64(v>>63)
}
