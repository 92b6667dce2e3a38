// Package state is the metastore's replicated state machine: topics, partition heads,
// the offset index, segments, upload intents and agents, kept in Pebble.
//
// Apply is deterministic: it reads nothing but the command, the Raft index and the
// current state (no clock, no randomness, no map iteration order), so every replica
// that applies the same log holds byte-identical state. Time and ids are stamped into
// commands by the leader before it proposes them.
//
// The applied Raft index is written in the same Pebble batch as the changes, so Apply
// is idempotent across restarts: entries at or below it are skipped. State writes are
// not fsynced (the Raft log is); after a power loss the state may be behind its last
// snapshot, which the node detects at start (Applied) and repairs by Restore.
//
// Reads take a consistent view; linearizability is the caller's job (the server reads
// on the leader after confirming leadership).
package state

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
)

// CommandVersion is the version of the apply rules this build writes and applies.
const CommandVersion = 1

// State is the state machine over one Pebble database. Apply, ApplyBatch, Snapshot and
// Restore must not run concurrently with each other (Raft calls them from one
// goroutine); reads may run concurrently with everything.
type State struct {
	dir string
	log *slog.Logger

	mu      sync.RWMutex // write-held only while Restore swaps the database
	db      *pebble.DB
	active  string // subdirectory holding db
	applied atomic.Uint64

	notify atomic.Pointer[func(*pb.WatchEvent)]
	cache  applyCache // owned by the apply goroutine
}

// Options tune Open.
type Options struct {
	Logger *slog.Logger
	// CacheSize is Pebble's block cache in bytes (0: 64 MiB).
	CacheSize int64
}

const activeFile = "ACTIVE"

// Open opens (creating if needed) the state in dir.
func Open(dir string, opts Options) (*State, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	s := &State{dir: dir, log: opts.Logger}
	active, err := os.ReadFile(filepath.Join(dir, activeFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		active = []byte("db-0")
		if err := writeFileSync(dir, activeFile, active); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("state: %w", err)
	}
	s.active = strings.TrimSpace(string(active))
	// Leftovers of an interrupted Restore or Snapshot are garbage.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() && e.Name() != s.active {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	db, err := openDB(filepath.Join(dir, s.active), opts.CacheSize, s.log)
	if err != nil {
		return nil, err
	}
	if err := s.adopt(db); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func openDB(path string, cacheSize int64, log *slog.Logger) (*pebble.DB, error) {
	if cacheSize <= 0 {
		cacheSize = 64 << 20
	}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref()
	db, err := pebble.Open(path, &pebble.Options{Cache: cache, Logger: pebbleLogger{log}})
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	return db, nil
}

// adopt checks db's format and loads its applied index.
func (s *State) adopt(db *pebble.DB) error {
	v, closer, err := db.Get(keyFormat)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := db.Set(keyFormat, binary.BigEndian.AppendUint32(nil, stateFormat), pebble.Sync); err != nil {
			return fmt.Errorf("state: %w", err)
		}
	case err != nil:
		return fmt.Errorf("state: %w", err)
	default:
		f := binary.BigEndian.Uint32(v)
		closer.Close()
		if f != stateFormat {
			return fmt.Errorf("%w: state format %d, this build reads %d", ErrCorrupt, f, stateFormat)
		}
	}
	applied, err := getUint64(db, keyApplied)
	if err != nil {
		return err
	}
	s.db = db
	s.applied.Store(applied)
	s.cache.reset()
	return nil
}

func getUint64(r pebble.Reader, key []byte) (uint64, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("state: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: %x holds %d bytes", ErrCorrupt, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Close closes the database.
func (s *State) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
}

// Applied is the last Raft index applied.
func (s *State) Applied() uint64 { return s.applied.Load() }

// SetNotifier installs the function that receives a WatchEvent after every applied
// batch that changed something watchable, and a Resync event after Restore. It is
// called on the apply goroutine, outside any lock, and must not block.
func (s *State) SetNotifier(f func(*pb.WatchEvent)) { s.notify.Store(&f) }

// Entry is one Raft log entry to apply.
type Entry struct {
	Index uint64
	Cmd   *pb.Command
}

// Result is what applying one command produced, for the caller waiting on it.
type Result struct {
	Topics []*pb.TopicResult
	// Commits has one response per CommitSegmentRequest of a CommitSegmentsCommand.
	Commits []*pb.CommitSegmentResponse
	Agent   *pb.AgentInfo
	Intent  *pb.UploadIntent
	// Offsets has one result per partition of a CommitOffsets or DeleteOffsets.
	Offsets []*pb.OffsetResult
	// Groups has one result per group of a DeleteGroups.
	Groups []*pb.GroupResult
	// Batch has one result per command of a CommitOffsetsBatch or TxnBatch.
	Batch []*Result
	// More: an ExpireOffsets stopped at its bound; there is more to expire.
	More bool
	// Producer is the outcome of an InitProducer.
	Producer *pb.ProducerRecord
	// TxnAdds has one result per TxnAdd of an AddToTxn.
	TxnAdds []*pb.TxnAddResult
	// Replace is the outcome of a ReplaceIndex.
	Replace *pb.ReplaceIndexResponse
	// LogStarts has one result per partition of a DeleteRecords.
	LogStarts []*pb.PartitionOffsetResult
	// Garbage lists the condemned objects after a ClaimGarbage.
	Garbage []*pb.Garbage
	// Err is set when the command as a whole was refused.
	Err *Error
}

// Error is a refusal with a code the agent maps to Kafka's.
type Error struct {
	Code    pb.ErrorCode
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("state: %s: %s", e.Code, e.Message) }

func refuse(code pb.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Apply applies one command at a Raft index.
func (s *State) Apply(index uint64, cmd *pb.Command) (*Result, error) {
	rs, err := s.ApplyBatch([]Entry{{Index: index, Cmd: cmd}})
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// ApplyBatch applies entries in order in one Pebble batch. Entries at or below the
// applied index get a nil Result (they were applied before a restart; nobody waits on
// them). The error is only ever a storage failure, after which the state must not be
// used: the node must stop.
func (s *State) ApplyBatch(entries []Entry) ([]*Result, error) {
	results, ev, err := s.applyBatch(entries)
	if ev != nil {
		if f := s.notify.Load(); f != nil {
			(*f)(ev)
		}
	}
	return results, err
}

func (s *State) applyBatch(entries []Entry) ([]*Result, *pb.WatchEvent, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	tx := &txn{b: b, ev: &pb.WatchEvent{}, c: newTxnCache(), shared: &s.cache}
	results := make([]*Result, len(entries))
	last := s.applied.Load()
	for i, e := range entries {
		if e.Index <= last {
			continue
		}
		r, err := tx.apply(e.Cmd)
		if err != nil {
			return nil, nil, err
		}
		results[i] = r
		last = e.Index
	}
	if last == s.applied.Load() {
		return results, nil, nil
	}
	if err := tx.flushHeads(); err != nil {
		return nil, nil, err
	}
	if err := b.Set(keyApplied, binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
		return nil, nil, fmt.Errorf("state: %w", err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		s.cache.reset()
		return nil, nil, fmt.Errorf("state: commit: %w", err)
	}
	s.applied.Store(last)
	s.cache.publish(tx.c)
	if !tx.watchable {
		return results, nil, nil
	}
	tx.ev.AppliedIndex = last
	return results, tx.ev, nil
}

// txn is one apply batch: reads see its own writes.
type txn struct {
	b         *pebble.Batch
	ev        *pb.WatchEvent
	watchable bool
	c         *txnCache
	shared    *applyCache
}

func (t *txn) apply(cmd *pb.Command) (*Result, error) {
	if cmd == nil || cmd.Version == 0 || cmd.Version > CommandVersion {
		// A command this build does not understand must not be half-applied:
		// refuse it identically on every replica.
		return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "command version %d not supported", cmd.GetVersion())}, nil
	}
	now := cmd.NowMs
	switch op := cmd.Op.(type) {
	case *pb.Command_CreateTopics:
		return t.createTopics(op.CreateTopics, now)
	case *pb.Command_DeleteTopics:
		return t.deleteTopics(op.DeleteTopics, now)
	case *pb.Command_AlterConfigs:
		return t.alterConfigs(op.AlterConfigs)
	case *pb.Command_CreatePartitions:
		return t.createPartitions(op.CreatePartitions)
	case *pb.Command_CommitSegments:
		return t.commitSegments(op.CommitSegments, now)
	case *pb.Command_RegisterAgent:
		return t.registerAgent(op.RegisterAgent.GetAgent(), now)
	case *pb.Command_DeregisterAgent:
		return t.deregisterAgent(op.DeregisterAgent.GetAgentId())
	case *pb.Command_ExpireAgents:
		return t.expireAgents(now)
	case *pb.Command_RecordIntent:
		return t.recordIntent(op.RecordIntent.GetIntent(), now)
	case *pb.Command_ResolveIntent:
		return t.resolveIntent(op.ResolveIntent.GetSegmentId())
	case *pb.Command_CommitOffsets:
		return t.commitOffsets(op.CommitOffsets, now)
	case *pb.Command_DeleteOffsets:
		return t.deleteOffsets(op.DeleteOffsets)
	case *pb.Command_DeleteGroups:
		return t.deleteGroups(op.DeleteGroups.GetGroups())
	case *pb.Command_CommitOffsetsBatch:
		return t.commitOffsetsBatch(op.CommitOffsetsBatch.GetCommits(), now)
	case *pb.Command_InitProducer:
		return t.initProducer(op.InitProducer, now)
	case *pb.Command_ExpireProducers:
		return t.expireProducers(op.ExpireProducers.GetExpirationMs(), now)
	case *pb.Command_AddToTxn:
		return t.addToTxn(op.AddToTxn, now)
	case *pb.Command_EndTxn:
		return t.endTxn(op.EndTxn, now)
	case *pb.Command_TxnOffsetCommit:
		return t.txnOffsetCommit(op.TxnOffsetCommit, now)
	case *pb.Command_ExpireTxns:
		return t.expireTxns(op.ExpireTxns.GetExpirationMs(), now)
	case *pb.Command_TxnBatch:
		return t.txnBatch(op.TxnBatch.GetOps(), now)
	case *pb.Command_SaveGroup:
		return t.saveGroup(op.SaveGroup.GetGroup(), now)
	case *pb.Command_ReplaceIndex:
		return t.replaceIndex(op.ReplaceIndex.GetRequest(), now)
	case *pb.Command_DeleteRecords:
		return t.deleteRecords(op.DeleteRecords.GetPartitions(), now)
	case *pb.Command_ClaimGarbage:
		return t.claimGarbage(op.ClaimGarbage.GetGraceMs(), int(op.ClaimGarbage.GetLimit()), now)
	case *pb.Command_ForgetGarbage:
		return t.forgetGarbage(op.ForgetGarbage.GetSegmentIds(), now)
	case *pb.Command_ExpireOffsets:
		return t.expireOffsets(op.ExpireOffsets.GetRetentionMs(), now)
	}
	return &Result{Err: refuse(pb.ErrorCode_INVALID_REQUEST, "empty command")}, nil
}

// --- storage helpers -------------------------------------------------------------

func (t *txn) getProto(key []byte, m proto.Message) (bool, error) {
	return getProto(t.b, key, m)
}

func getProto(r pebble.Reader, key []byte, m proto.Message) (bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state: %w", err)
	}
	defer closer.Close()
	if err := proto.Unmarshal(v, m); err != nil {
		return false, fmt.Errorf("%w: %x: %v", ErrCorrupt, key, err)
	}
	return true, nil
}

// deterministic marshalling: map fields (topic configs) sorted by key.
var marshal = proto.MarshalOptions{Deterministic: true}

func (t *txn) setProto(key []byte, m proto.Message) error {
	v, err := marshal.Marshal(m)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return t.set(key, v)
}

func (t *txn) set(key, val []byte) error {
	if err := t.b.Set(key, val, nil); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

func (t *txn) del(key []byte) error {
	if err := t.b.Delete(key, nil); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// get returns a copy of the value under key.
func (t *txn) get(key []byte) ([]byte, bool, error) {
	v, closer, err := t.b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("state: %w", err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

func (t *txn) has(key []byte) (bool, error) {
	_, closer, err := t.b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state: %w", err)
	}
	closer.Close()
	return true, nil
}

// --- snapshots -------------------------------------------------------------------

// Snapshot takes a Pebble checkpoint of the current state (consistent with Applied)
// and returns it as a directory to stream with WriteSnapshot, then remove. Taking it
// is quick (hard links and a WAL flush); streaming can run alongside later applies.
func (s *State) Snapshot() (dir string, applied uint64, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	tmp, err := os.MkdirTemp(s.dir, "snap-")
	if err != nil {
		return "", 0, fmt.Errorf("state: snapshot: %w", err)
	}
	dir = filepath.Join(tmp, "checkpoint")
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		os.RemoveAll(tmp)
		return "", 0, fmt.Errorf("state: snapshot: %w", err)
	}
	return tmp, s.applied.Load(), nil
}

// WriteSnapshot streams a snapshot directory from Snapshot as a tar archive.
func WriteSnapshot(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	root := filepath.Join(dir, "checkpoint")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("state: write snapshot: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("state: write snapshot: %w", err)
	}
	return nil
}

// Restore replaces the whole state with a snapshot stream from WriteSnapshot. The new
// database is unpacked beside the old one, fsynced, opened and checked, and only then
// made active (an atomic rename of the ACTIVE file), so a crash mid-restore leaves the
// old state intact.
func (s *State) Restore(r io.Reader) error {
	next, err := os.MkdirTemp(s.dir, "db-")
	if err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	cleanup := func(err error) error {
		os.RemoveAll(next)
		return fmt.Errorf("state: restore: %w", err)
	}
	if err := untar(r, next); err != nil {
		return cleanup(err)
	}
	db, err := openDB(next, 0, s.log)
	if err != nil {
		return cleanup(err)
	}
	probe := &State{}
	if err := probe.adopt(db); err != nil {
		db.Close()
		return cleanup(err)
	}
	if err := db.Flush(); err != nil {
		db.Close()
		return cleanup(err)
	}
	s.mu.Lock()
	if err := writeFileSync(s.dir, activeFile, []byte(filepath.Base(next))); err != nil {
		s.mu.Unlock()
		db.Close()
		return cleanup(err)
	}
	old := s.active
	if s.db != nil {
		s.db.Close()
	}
	s.db, s.active = db, filepath.Base(next)
	s.applied.Store(probe.applied.Load())
	s.cache.reset()
	s.mu.Unlock()
	os.RemoveAll(filepath.Join(s.dir, old))
	// Everything a watcher cached may have changed.
	if f := s.notify.Load(); f != nil {
		(*f)(&pb.WatchEvent{AppliedIndex: s.applied.Load(), Resync: true})
	}
	return nil
}

// untar unpacks a snapshot into dir, refusing names that leave it.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return syncDir(dir)
		}
		if err != nil {
			return err
		}
		name := filepath.FromSlash(h.Name)
		if h.Typeflag != tar.TypeReg || !filepath.IsLocal(name) || strings.ContainsRune(name, filepath.Separator) {
			return fmt.Errorf("%w: snapshot entry %q", ErrCorrupt, h.Name)
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

func writeFileSync(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
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

// Dump writes every key and value in order, for determinism tests and debugging.
func (s *State) Dump(w io.Writer) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, err := s.db.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	var buf bytes.Buffer
	for it.First(); it.Valid(); it.Next() {
		buf.Reset()
		buf.Write(binary.AppendUvarint(nil, uint64(len(it.Key()))))
		buf.Write(it.Key())
		buf.Write(binary.AppendUvarint(nil, uint64(len(it.Value()))))
		buf.Write(it.Value())
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	return it.Error()
}

// pebbleLogger sends Pebble's messages to slog: its routine chatter at debug level.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error("pebble: fatal: " + msg)
	panic("pebble: " + msg) // Pebble's contract: Fatalf does not return
}
