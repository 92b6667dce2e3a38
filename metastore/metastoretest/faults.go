package metastoretest

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// SyncFaults is a Pebble errorfs injector that fails every fsync while On is set:
// the disk that stops persisting, for tests that a node stops instead of lying.
type SyncFaults struct{ On atomic.Bool }

func (f *SyncFaults) String() string { return "sync faults" }

// MaybeError implements errorfs.Injector.
func (f *SyncFaults) MaybeError(op errorfs.Op) error {
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		if f.On.Load() {
			return errorfs.ErrInjected
		}
	}
	return nil
}
