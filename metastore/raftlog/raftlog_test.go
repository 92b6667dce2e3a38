package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hashicorp/raft"

	"github.com/stratalog/strata/metastore/metastoretest"
)

var quiet = slog.New(slog.DiscardHandler)

// openStore opens a store and closes it when the test ends.
func openStore(tb testing.TB, dir string, opts Options) *Store {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	s, err := Open(dir, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func memStore(t *testing.T) *Store {
	t.Helper()
	return openStore(t, "db", Options{FS: vfs.NewMem(), NoSync: true})
}

var allTypes = []raft.LogType{
	raft.LogCommand,
	raft.LogNoop,
	raft.LogAddPeerDeprecated,
	raft.LogRemovePeerDeprecated,
	raft.LogBarrier,
	raft.LogConfiguration,
}

// sameLog compares the fields raft cares about. Nil and empty byte slices are
// the same entry; times compare as instants.
func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func logString(l *raft.Log) string {
	return fmt.Sprintf("{Index:%d Term:%d Type:%v Data:%q Ext:%q At:%v}",
		l.Index, l.Term, l.Type, l.Data, l.Extensions, l.AppendedAt)
}

// sampleLogs returns one entry per log type, with and without extensions and
// AppendedAt, at indexes 1, 2, ...
func sampleLogs() []*raft.Log {
	at := time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)
	var logs []*raft.Log
	for _, typ := range allTypes {
		for _, ext := range [][]byte{nil, []byte("chunk:1/3")} {
			i := uint64(len(logs) + 1)
			logs = append(logs, &raft.Log{
				Index:      i,
				Term:       i/3 + 1,
				Type:       typ,
				Data:       []byte(fmt.Sprintf("%v payload %d", typ, i)),
				Extensions: ext,
				AppendedAt: at.Add(time.Duration(i) * time.Millisecond),
			})
		}
	}
	// No payload, no timestamp: raft's own noop entries look like this.
	logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Term: 9, Type: raft.LogNoop})
	return logs
}

func TestEncodingRoundTrip(t *testing.T) {
	logs := sampleLogs()
	logs = append(logs,
		&raft.Log{Index: 1<<64 - 1, Term: 1<<64 - 1, Type: 255, Data: bytes.Repeat([]byte{0xff}, 300)},
		&raft.Log{Index: 5, Term: 1, AppendedAt: time.Unix(-1, 999999999)},
		&raft.Log{Index: 6, Term: 1, AppendedAt: time.Unix(0, 0)},
		&raft.Log{Index: 7, Term: 1, Data: []byte{}, Extensions: []byte{}},
	)
	for _, l := range logs {
		t.Run(logString(l), func(t *testing.T) {
			b := appendLog(nil, l)
			if len(b) != encodedLogLen(l) {
				t.Fatalf("encoded %d bytes, encodedLogLen says %d", len(b), encodedLogLen(l))
			}
			var got raft.Log
			if err := decodeLog(b, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !sameLog(&got, l) {
				t.Fatalf("round trip:\n got %s\nwant %s", logString(&got), logString(l))
			}
		})
	}
}

// The example in the package comment.
func TestEncodingExample(t *testing.T) {
	got := appendLog(nil, &raft.Log{Index: 7, Term: 2, Type: raft.LogCommand, Data: []byte("hi")})
	want := []byte{0x01, 0x07, 0x02, 0x00, 0x00, 0x02, 'h', 'i', 0x00}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding = % x, want % x", got, want)
	}
}

func TestDecodeCorrupt(t *testing.T) {
	valid := appendLog(nil, &raft.Log{Index: 7, Term: 2, Data: []byte("hi"), AppendedAt: time.Unix(1700000000, 5)})
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{2}, valid[1:]...)},
		{"version only", []byte{1}},
		{"truncated everywhere", valid[:len(valid)-1]},
		{"trailing byte", append(slices.Clone(valid), 0)},
		{"unknown flag", []byte{1, 7, 2, 0, 0x02, 0, 0}},
		{"data length past end", []byte{1, 7, 2, 0, 0, 0x7f, 'h', 'i', 0}},
		{"huge data length", []byte{1, 7, 2, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"varint overflow", []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 2, 0, 0, 0, 0}},
		{"non-minimal varint", []byte{1, 0x87, 0x00, 2, 0, 0, 0, 0}},
		{"nanoseconds out of range", binary.AppendUvarint([]byte{1, 7, 2, 0, 1, 0, 0, 2}, 1e9)},
		{"zero time flagged", binary.AppendUvarint(binary.AppendVarint([]byte{1, 7, 2, 0, 1, 0, 0}, time.Time{}.Unix()), 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l raft.Log
			err := decodeLog(tt.in, &l)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode(% x) = %v, want ErrCorrupt", tt.in, err)
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Offset < 0 || ce.Offset > len(tt.in) {
				t.Fatalf("error %v: want *CorruptError with offset in [0, %d]", err, len(tt.in))
			}
			if l.Index != 0 || l.Data != nil {
				t.Fatalf("decode modified its output on error: %s", logString(&l))
			}
		})
	}
}

func FuzzDecodeLog(f *testing.F) {
	for _, l := range sampleLogs() {
		f.Add(appendLog(nil, l))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var l raft.Log
		err := decodeLog(in, &l)
		if err != nil {
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *CorruptError marked ErrCorrupt", err)
			}
			return
		}
		// Every accepted value has exactly one encoding.
		if out := appendLog(nil, &l); !bytes.Equal(out, in) {
			t.Fatalf("re-encoding differs:\n in % x\nout % x", in, out)
		}
		if n := encodedLogLen(&l); n != len(in) {
			t.Fatalf("encodedLogLen = %d, input is %d bytes", n, len(in))
		}
	})
}

func TestStoreRoundTrip(t *testing.T) {
	s := memStore(t)
	logs := sampleLogs()
	if err := s.StoreLogs(logs[:len(logs)-1]); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLog(logs[len(logs)-1]); err != nil {
		t.Fatal(err)
	}
	for _, want := range logs {
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", want.Index, err)
		}
		if !sameLog(&got, want) {
			t.Errorf("GetLog(%d):\n got %s\nwant %s", want.Index, logString(&got), logString(want))
		}
	}
}

func TestStoreLogsRejectsIndexZero(t *testing.T) {
	s := memStore(t)
	if err := s.StoreLogs([]*raft.Log{{Index: 1}, {Index: 0}}); err == nil {
		t.Fatal("StoreLogs with index 0 succeeded")
	}
	if err := s.GetLog(1, new(raft.Log)); err != raft.ErrLogNotFound {
		t.Fatalf("a rejected batch was partly written: GetLog(1) = %v", err)
	}
}

func TestGetLogMissing(t *testing.T) {
	s := memStore(t)
	if err := s.GetLog(1, new(raft.Log)); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog on empty store = %v, want raft.ErrLogNotFound", err)
	}
	if err := s.StoreLogs(sampleLogs()[:3]); err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{0, 4, 1 << 63} {
		// raft compares with ==, so the sentinel must not be wrapped.
		if err := s.GetLog(i, new(raft.Log)); err != raft.ErrLogNotFound {
			t.Errorf("GetLog(%d) = %v, want raft.ErrLogNotFound", i, err)
		}
	}
}

// TestIndexes walks the log through what raft does to it: appends, front
// truncation after a snapshot, tail truncation on a conflict, a gap after an
// installed snapshot, and restarts.
func TestIndexes(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{NoSync: true})
	entries := func(lo, hi uint64) []*raft.Log {
		var logs []*raft.Log
		for i := lo; i <= hi; i++ {
			logs = append(logs, &raft.Log{Index: i, Term: 1, Data: []byte{byte(i)}})
		}
		return logs
	}
	type step struct {
		name        string
		do          func() error
		first, last uint64
	}
	steps := []step{
		{"empty", nil, 0, 0},
		{"store 1..10", func() error { return s.StoreLogs(entries(1, 10)) }, 1, 10},
		{"store 11", func() error { return s.StoreLog(entries(11, 11)[0]) }, 1, 11},
		{"delete front 1..4 (snapshot)", func() error { return s.DeleteRange(1, 4) }, 5, 11},
		{"delete tail 9..11 (conflict)", func() error { return s.DeleteRange(9, 11) }, 5, 8},
		{"delete tail past end", func() error { return s.DeleteRange(8, 1<<64-1) }, 5, 7},
		{"delete nothing", func() error { return s.DeleteRange(100, 200) }, 5, 7},
		{"empty range", func() error { return s.DeleteRange(7, 6) }, 5, 7},
		{"reopen", func() error {
			if err := s.Close(); err != nil {
				return err
			}
			s = openStore(t, dir, Options{NoSync: true})
			return nil
		}, 5, 7},
		{"store after gap", func() error { return s.StoreLogs(entries(20, 25)) }, 5, 25},
		{"delete below gap", func() error { return s.DeleteRange(1, 7) }, 20, 25},
		{"reopen after gap", func() error {
			if err := s.Close(); err != nil {
				return err
			}
			s = openStore(t, dir, Options{NoSync: true})
			return nil
		}, 20, 25},
		{"delete all", func() error { return s.DeleteRange(0, 1<<64-1) }, 0, 0},
		{"reopen empty", func() error {
			if err := s.Close(); err != nil {
				return err
			}
			s = openStore(t, dir, Options{NoSync: true})
			return nil
		}, 0, 0},
		{"store below old first", func() error { return s.StoreLogs(entries(3, 4)) }, 3, 4},
	}
	for _, st := range steps {
		if st.do != nil {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		first, err := s.FirstIndex()
		if err != nil {
			t.Fatalf("%s: FirstIndex: %v", st.name, err)
		}
		last, err := s.LastIndex()
		if err != nil {
			t.Fatalf("%s: LastIndex: %v", st.name, err)
		}
		if first != st.first || last != st.last {
			t.Fatalf("%s: (first, last) = (%d, %d), want (%d, %d)", st.name, first, last, st.first, st.last)
		}
		if first == 0 {
			continue
		}
		for _, i := range []uint64{first, last} {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil || l.Index != i {
				t.Fatalf("%s: GetLog(%d) = %s, %v", st.name, i, logString(&l), err)
			}
		}
	}
}

var (
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteTerm = []byte("LastVoteTerm")
	keyLastVoteCand = []byte("LastVoteCand")
)

func TestStableStore(t *testing.T) {
	s := memStore(t)

	// raft tells a missing key from a failure by the message alone.
	for _, k := range [][]byte{keyCurrentTerm, keyLastVoteTerm, keyLastVoteCand, nil} {
		v, err := s.Get(k)
		if err == nil || err.Error() != "not found" || v != nil {
			t.Errorf("Get(%q) = %q, %v; want nil, \"not found\"", k, v, err)
		}
		n, err := s.GetUint64(k)
		if err == nil || err.Error() != "not found" || n != 0 {
			t.Errorf("GetUint64(%q) = %d, %v; want 0, \"not found\"", k, n, err)
		}
	}
	if has, err := raft.HasExistingState(s, s, raft.NewInmemSnapshotStore()); err != nil || has {
		t.Fatalf("HasExistingState on a new store = %v, %v; want false, nil", has, err)
	}

	tests := []struct {
		key []byte
		val []byte
	}{
		{keyLastVoteCand, []byte("node-1")},
		{[]byte("empty"), []byte{}},
		{[]byte("binary\x00key"), []byte{0, 1, 2, 0xff}},
		{nil, []byte("empty key")},
	}
	for _, tt := range tests {
		if err := s.Set(tt.key, tt.val); err != nil {
			t.Fatalf("Set(%q): %v", tt.key, err)
		}
		got, err := s.Get(tt.key)
		if err != nil || !bytes.Equal(got, tt.val) || got == nil {
			t.Errorf("Get(%q) = %q, %v; want %q", tt.key, got, err, tt.val)
		}
	}

	// Overwrite, and the returned slice is the caller's.
	if err := s.Set(keyLastVoteCand, []byte("node-2")); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(keyLastVoteCand)
	got[0] = 'X'
	if again, _ := s.Get(keyLastVoteCand); string(again) != "node-2" {
		t.Fatalf("Get after overwrite and caller mutation = %q, want node-2", again)
	}

	for _, n := range []uint64{0, 1, 1 << 40, 1<<64 - 1} {
		if err := s.SetUint64(keyCurrentTerm, n); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetUint64(keyCurrentTerm); err != nil || got != n {
			t.Fatalf("GetUint64 = %d, %v; want %d", got, err, n)
		}
	}
	if has, err := raft.HasExistingState(s, s, raft.NewInmemSnapshotStore()); err != nil || !has {
		t.Fatalf("HasExistingState with a term = %v, %v; want true, nil", has, err)
	}

	// Stable keys and log entries do not collide.
	if err := s.Set([]byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastIndex(); last != 0 {
		t.Fatalf("a stable key shows up in the log: LastIndex = %d", last)
	}

	if err := s.Set([]byte("short"), []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUint64([]byte("short")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of a 3-byte value = %v, want ErrCorrupt", err)
	}
}

func TestCorruptValueOnDisk(t *testing.T) {
	s := memStore(t)
	if err := s.StoreLogs(sampleLogs()[:5]); err != nil {
		t.Fatal(err)
	}
	k3, k4 := logKey(3), logKey(4)
	garbage := []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x42}
	if err := s.db.Set(k3[:], garbage, pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	// A well-formed entry under the wrong key.
	if err := s.db.Set(k4[:], appendLog(nil, &raft.Log{Index: 9, Term: 1}), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{3, 4} {
		err := s.GetLog(i, new(raft.Log))
		var ce *CorruptError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.Index != i {
			t.Errorf("GetLog(%d) = %v, want *CorruptError for index %d", i, err, i)
		}
	}
	// Corruption is not a store failure: other entries still read.
	if err := s.GetLog(5, new(raft.Log)); err != nil {
		t.Fatalf("GetLog(5) after corruption elsewhere: %v", err)
	}
}

func TestCorruptKeyOnOpen(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs, NoSync: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set([]byte{prefixLog, 1, 2}, []byte("x"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := Open("db", Options{FS: fs, NoSync: true, Logger: quiet}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open with a 3-byte log key = %v, want ErrCorrupt", err)
	}
}

func TestSyncFailureIsSticky(t *testing.T) {
	mem := vfs.NewMem()
	faults := &metastoretest.SyncFaults{}
	var logged bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, nil))
	s, err := Open("db", Options{FS: errorfs.Wrap(mem, faults), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	logs := sampleLogs()
	if err := s.StoreLogs(logs[:3]); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64(keyCurrentTerm, 3); err != nil {
		t.Fatal(err)
	}

	faults.On.Store(true)
	err = s.StoreLogs(logs[3:5])
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("StoreLogs with failing fsync = %v, want ErrFailed", err)
	}
	if !errors.Is(err, errorfs.ErrInjected) {
		t.Errorf("sticky error %v does not carry the injected cause", err)
	}
	// The disk recovers; the store must not.
	faults.On.Store(false)
	calls := map[string]func() error{
		"GetLog (synced entry)":   func() error { return s.GetLog(1, new(raft.Log)) },
		"GetLog (unsynced entry)": func() error { return s.GetLog(4, new(raft.Log)) },
		"FirstIndex":              func() error { _, err := s.FirstIndex(); return err },
		"LastIndex":               func() error { _, err := s.LastIndex(); return err },
		"StoreLog":                func() error { return s.StoreLog(&raft.Log{Index: 10}) },
		"DeleteRange":             func() error { return s.DeleteRange(1, 2) },
		"Set":                     func() error { return s.Set([]byte("k"), []byte("v")) },
		"Get":                     func() error { _, err := s.Get(keyCurrentTerm); return err },
		"SetUint64":               func() error { return s.SetUint64(keyCurrentTerm, 4) },
		"GetUint64":               func() error { _, err := s.GetUint64(keyCurrentTerm); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrFailed) {
			t.Errorf("%s after failed fsync = %v, want ErrFailed", name, err)
		}
	}
	logMu.Lock()
	if !bytes.Contains(logged.Bytes(), []byte("store failed")) {
		t.Errorf("the failure was not logged; log:\n%s", logged.String())
	}
	logMu.Unlock()
	// Close may report the failure too; it must not hang or panic.
	_ = s.Close()

	// A restart sees what was synced before the failure.
	s2 := openStore(t, "db", Options{FS: mem, NoSync: true})
	for _, l := range logs[:3] {
		var got raft.Log
		if err := s2.GetLog(l.Index, &got); err != nil || !sameLog(&got, l) {
			t.Fatalf("after reopen GetLog(%d) = %s, %v", l.Index, logString(&got), err)
		}
	}
	if term, err := s2.GetUint64(keyCurrentTerm); err != nil || term != 3 {
		t.Fatalf("after reopen CurrentTerm = %d, %v; want 3", term, err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestClosed(t *testing.T) {
	s := memStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if err := s.GetLog(1, new(raft.Log)); !errors.Is(err, ErrClosed) {
		t.Errorf("GetLog after Close = %v, want ErrClosed", err)
	}
	if err := s.StoreLog(&raft.Log{Index: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("StoreLog after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Get(keyCurrentTerm); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
}

// TestConcurrentUse runs raft's access pattern at once: an appender, a
// truncator behind it, and readers. Run with -race.
func TestConcurrentUse(t *testing.T) {
	s := memStore(t)
	const n = 2000
	var wg sync.WaitGroup
	var appended atomic.Uint64
	errs := make(chan error, 8)
	wg.Go(func() {
		for i := uint64(1); i <= n; i += 4 {
			batch := []*raft.Log{{Index: i, Term: 1}, {Index: i + 1, Term: 1}, {Index: i + 2, Term: 1}, {Index: i + 3, Term: 1}}
			if err := s.StoreLogs(batch); err != nil {
				errs <- err
				return
			}
			appended.Store(i + 3)
		}
	})
	wg.Go(func() {
		for appended.Load() < n {
			if a := appended.Load(); a > 100 {
				if err := s.DeleteRange(1, a-100); err != nil {
					errs <- err
					return
				}
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for appended.Load() < n {
				last, err := s.LastIndex()
				if err != nil {
					errs <- err
					return
				}
				if last == 0 {
					continue
				}
				var l raft.Log
				if err := s.GetLog(last, &l); err != nil {
					errs <- fmt.Errorf("GetLog(LastIndex=%d): %w", last, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if last, _ := s.LastIndex(); last != n {
		t.Fatalf("LastIndex = %d, want %d", last, n)
	}
}

// listFSM appends every command to a slice.
type listFSM struct {
	mu   sync.Mutex
	cmds []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return nil
}

func (f *listFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cmds)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	return listSnapshot(f.list()), nil
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	var cmds []string
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return errors.New("listFSM: bad snapshot")
		}
		cmds = append(cmds, string(b[k:k+int(n)]))
		b = b[k+int(n):]
	}
	f.mu.Lock()
	f.cmds = cmds
	f.mu.Unlock()
	return nil
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	var b []byte
	for _, c := range s {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	if _, err := sink.Write(b); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

type clusterNode struct {
	id    raft.ServerID
	dir   string
	snaps *raft.InmemSnapshotStore // kept across restarts, as a disk would be
	store *Store
	fsm   *listFSM
	raft  *raft.Raft
}

// startCluster opens every node's store from its directory and starts raft
// on fresh in-memory transports at the same addresses.
func startCluster(t *testing.T, nodes []*clusterNode) {
	t.Helper()
	transports := make([]*raft.InmemTransport, len(nodes))
	for i, n := range nodes {
		_, transports[i] = raft.NewInmemTransport(raft.ServerAddress(n.id))
	}
	for i, a := range transports {
		for j, b := range transports {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i, n := range nodes {
		n.store = openStore(t, n.dir, Options{})
		n.fsm = &listFSM{}
		conf := raft.DefaultConfig()
		conf.LocalID = n.id
		conf.HeartbeatTimeout = 100 * time.Millisecond
		conf.ElectionTimeout = 100 * time.Millisecond
		conf.LeaderLeaseTimeout = 100 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.TrailingLogs = 10
		conf.SnapshotThreshold = 1 << 20 // snapshots only when the test asks
		conf.LogOutput = io.Discard
		r, err := raft.NewRaft(conf, n.fsm, n.store, n.store, n.snaps, transports[i])
		if err != nil {
			t.Fatalf("NewRaft(%s): %v", n.id, err)
		}
		n.raft = r
	}
	t.Cleanup(func() { stopCluster(t, nodes) })
}

func stopCluster(t *testing.T, nodes []*clusterNode) {
	t.Helper()
	for _, n := range nodes {
		if n.raft == nil {
			continue
		}
		if err := n.raft.Shutdown().Error(); err != nil {
			t.Errorf("shutdown %s: %v", n.id, err)
		}
		n.raft = nil
		if err := n.store.Close(); err != nil {
			t.Errorf("close %s: %v", n.id, err)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func leader(t *testing.T, nodes []*clusterNode) *clusterNode {
	t.Helper()
	var l *clusterNode
	waitFor(t, "a leader", 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// applyAll applies the commands through the leader, pipelined, and retries
// one by one through whoever leads if leadership moves. It returns whether
// any command was retried (a retried command may have been applied twice).
func applyAll(t *testing.T, nodes []*clusterNode, cmds []string) (retried bool) {
	t.Helper()
	l := leader(t, nodes)
	futures := make([]raft.ApplyFuture, len(cmds))
	for i, c := range cmds {
		futures[i] = l.raft.Apply([]byte(c), 5*time.Second)
	}
	for i, f := range futures {
		if f.Error() == nil {
			continue
		}
		retried = true
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := leader(t, nodes).raft.Apply([]byte(cmds[i]), 5*time.Second).Error()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("apply %q: %v", cmds[i], err)
			}
		}
	}
	return retried
}

// waitConverged waits until every FSM holds want (or, after retries, a
// superset in the same order with the same contents everywhere).
func waitConverged(t *testing.T, nodes []*clusterNode, want []string, retried bool) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d commands on every FSM", len(want)), 10*time.Second, func() bool {
		first := nodes[0].fsm.list()
		for _, n := range nodes {
			got := n.fsm.list()
			if !slices.Equal(got, first) {
				return false
			}
			if !retried && !slices.Equal(got, want) {
				return false
			}
			if retried && !containsInOrder(got, want) {
				return false
			}
		}
		return true
	})
}

func containsInOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func commands(from, to int) []string {
	var cmds []string
	for i := from; i < to; i++ {
		cmds = append(cmds, fmt.Sprintf("cmd-%04d", i))
	}
	return cmds
}

// TestRaftCluster runs a real three-node hashicorp/raft cluster on the store,
// restarts it from disk, and checks that logs, terms and votes survived.
func TestRaftCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a raft cluster")
	}
	nodes := make([]*clusterNode, 3)
	var servers []raft.Server
	for i := range nodes {
		id := raft.ServerID(fmt.Sprintf("node-%d", i))
		nodes[i] = &clusterNode{id: id, dir: t.TempDir(), snaps: raft.NewInmemSnapshotStore()}
		servers = append(servers, raft.Server{ID: id, Address: raft.ServerAddress(id)})
	}
	startCluster(t, nodes)
	if err := nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}

	want := commands(0, 200)
	retried := applyAll(t, nodes, want)
	waitConverged(t, nodes, want, retried)

	// Snapshot everywhere so raft truncates the front of each log.
	for _, n := range nodes {
		if err := n.raft.Snapshot().Error(); err != nil {
			t.Fatalf("snapshot %s: %v", n.id, err)
		}
		if first, _ := n.store.FirstIndex(); first <= 1 {
			t.Errorf("%s: FirstIndex = %d after snapshot, want the front truncated", n.id, first)
		}
	}

	type state struct{ first, last, term uint64 }
	before := make([]state, len(nodes))
	stopCluster(t, nodes)
	voted := 0
	for i, n := range nodes {
		s := openStore(t, n.dir, Options{})
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		term, err := s.GetUint64(keyCurrentTerm)
		if err != nil {
			t.Fatalf("%s: CurrentTerm after restart: %v", n.id, err)
		}
		before[i] = state{first, last, term}
		if last < 200 || term < 1 || first <= 1 {
			t.Fatalf("%s after restart: first %d, last %d, term %d; want first > 1, last >= 200, term >= 1",
				n.id, first, last, term)
		}
		var l raft.Log
		if err := s.GetLog(last, &l); err != nil || l.Term > term {
			t.Fatalf("%s: last entry %s, %v; term on disk %d", n.id, logString(&l), err, term)
		}
		if has, err := raft.HasExistingState(s, s, n.snaps); err != nil || !has {
			t.Fatalf("%s: HasExistingState = %v, %v", n.id, has, err)
		}
		voteTerm, errTerm := s.GetUint64(keyLastVoteTerm)
		cand, errCand := s.Get(keyLastVoteCand)
		if errTerm == nil && errCand == nil && voteTerm >= 1 && len(cand) > 0 {
			voted++
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The leader voted for itself and a quorum granted it the election.
	if voted < 2 {
		t.Fatalf("%d nodes have a vote on disk, want at least 2", voted)
	}

	// Restart without bootstrapping: raft must find its state in the stores.
	startCluster(t, nodes)
	more := commands(200, 250)
	retried = applyAll(t, nodes, more) || retried
	waitConverged(t, nodes, append(want, more...), retried)
	for i, n := range nodes {
		last, _ := n.store.LastIndex()
		term, _ := n.store.GetUint64(keyCurrentTerm)
		if last < before[i].last+50 || term < before[i].term {
			t.Errorf("%s after second run: last %d, term %d; before restart last %d, term %d",
				n.id, last, term, before[i].last, before[i].term)
		}
	}
}
