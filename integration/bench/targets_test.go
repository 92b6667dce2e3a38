package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A target starts in an empty directory, whatever an earlier run left there.
func TestTargetStartsFresh(t *testing.T) {
	cfg := &Config{Dir: t.TempDir()}
	old := filepath.Join(cfg.Dir, "x", "metastore-1", "raft.db")
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("term 3"), 0o644); err != nil {
		t.Fatal(err)
	}
	var seen []os.DirEntry
	target := Target{Name: "x", start: func(_ context.Context, _ *Config, dir string) (*Running, error) {
		var err error
		seen, err = os.ReadDir(dir)
		return &Running{}, err
	}}
	if _, err := target.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 0 {
		t.Fatalf("the target's directory held %d entries from an earlier run", len(seen))
	}
}
