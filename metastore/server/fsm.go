package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/stratalog/strata/metastore/metastorepb"
	"github.com/stratalog/strata/metastore/state"
)

// fsm adapts state.State to raft.FSM and raft.BatchingFSM.
//
// Raft calls Apply, ApplyBatch, Snapshot and Restore from one goroutine. An entry
// that does not decode is applied as a nil command, which the state refuses the same
// way on every replica (and it still advances the applied index); it is logged,
// never a panic. A storage failure in the state is fatal: the fsm stops applying
// (every later entry answers errStopped) and onFail stops the node, because the
// state may now hold less than Raft believes it applied.
type fsm struct {
	st     *state.State
	log    *slog.Logger
	onFail func(error)
	failed atomic.Bool
}

// applied is what a Raft apply future's Response holds.
type applied struct {
	res *state.Result // nil when the entry was applied before a restart
	err error         // storage failure: the node stops
}

var errStopped = errors.New("metastore server: state machine stopped after a storage failure")

var (
	_ raft.FSM         = (*fsm)(nil)
	_ raft.BatchingFSM = (*fsm)(nil)
)

func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if f.failed.Load() {
		for i := range out {
			out[i] = &applied{err: errStopped}
		}
		return out
	}
	entries := make([]state.Entry, 0, len(logs))
	at := make([]int, 0, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue // configuration changes live in Raft, not in the state
		}
		cmd := &pb.Command{}
		if err := proto.Unmarshal(l.Data, cmd); err != nil {
			f.log.Error("metastore server: undecodable log entry applied as a refused command", "index", l.Index, "err", err)
			cmd = nil
		}
		entries = append(entries, state.Entry{Index: l.Index, Cmd: cmd})
		at = append(at, i)
	}
	for i := range out {
		out[i] = &applied{}
	}
	if len(entries) == 0 {
		return out
	}
	results, err := f.st.ApplyBatch(entries)
	if err != nil {
		f.fail(fmt.Errorf("metastore server: apply at %d..%d: %w", entries[0].Index, entries[len(entries)-1].Index, err))
		for i := range out {
			out[i] = &applied{err: errStopped}
		}
		return out
	}
	for j, i := range at {
		out[i] = &applied{res: results[j]}
	}
	return out
}

func (f *fsm) fail(err error) {
	if f.failed.CompareAndSwap(false, true) {
		f.onFail(err)
	}
}

// Snapshot takes a Pebble checkpoint (quick); Persist streams it while applies go on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.failed.Load() {
		return nil, errStopped
	}
	dir, _, err := f.st.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{dir: dir}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if f.failed.Load() {
		return errStopped
	}
	return f.st.Restore(rc)
}

type fsmSnapshot struct{ dir string }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := state.WriteSnapshot(s.dir, sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { os.RemoveAll(s.dir) }

// catchUp repairs a state left behind its latest snapshot (state writes are not
// fsynced; after a power loss they may end earlier than the snapshot Raft will
// start from, and Raft, told not to restore on start, would never replay the gap).
// The gap is applied from the log when the log still holds it, else the snapshot is
// restored.
func catchUp(f *fsm, snaps raft.SnapshotStore, logs raft.LogStore, log *slog.Logger) error {
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("metastore server: list snapshots: %w", err)
	}
	if len(list) == 0 {
		return nil
	}
	latest := list[0]
	from := f.st.Applied()
	if from >= latest.Index {
		return nil
	}
	var batch []*raft.Log
	fromLog := true
	for i := from + 1; i <= latest.Index && fromLog; i++ {
		l := new(raft.Log)
		if err := logs.GetLog(i, l); err != nil {
			fromLog = false
			break
		}
		batch = append(batch, l)
		if len(batch) == 256 || i == latest.Index {
			for _, r := range f.ApplyBatch(batch) {
				if err := r.(*applied).err; err != nil {
					return fmt.Errorf("metastore server: catch up from the log: %w", err)
				}
			}
			batch = batch[:0]
		}
	}
	if fromLog {
		log.Info("metastore server: state caught up from the raft log", "from", from, "to", latest.Index)
		return nil
	}
	_, rc, err := snaps.Open(latest.ID)
	if err != nil {
		return fmt.Errorf("metastore server: open snapshot %s: %w", latest.ID, err)
	}
	if err := f.Restore(rc); err != nil {
		return fmt.Errorf("metastore server: restore snapshot %s: %w", latest.ID, err)
	}
	log.Info("metastore server: state restored from snapshot", "snapshot", latest.ID, "was", from, "now", f.st.Applied())
	return nil
}
