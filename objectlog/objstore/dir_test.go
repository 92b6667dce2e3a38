package objstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog/objstore"
)

func TestDirRejectsItsTempArea(t *testing.T) {
	d, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = putBytes(context.Background(), d, ".strata-tmp/evil", []byte("x"))
	if !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("put into the temp area: %v, want ErrInvalidKey", err)
	}
}

func TestDirRemovesStaleTempFiles(t *testing.T) {
	root := t.TempDir()
	if _, err := objstore.NewDir(root); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(root, ".strata-tmp", "put-crashed")
	fresh := filepath.Join(root, ".strata-tmp", "put-in-progress")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	if _, err := objstore.NewDir(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("fresh temp file removed: %v", err)
	}
}

// Objects survive reopening the directory: the store keeps nothing in memory.
func TestDirReopen(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	d1, _ := objstore.NewDir(root)
	if err := putBytes(ctx, d1, "segments/ab/1", []byte("durable")); err != nil {
		t.Fatal(err)
	}
	d2, _ := objstore.NewDir(root)
	info, err := d2.Head(ctx, "segments/ab/1")
	if err != nil || info.Size != 7 {
		t.Fatalf("after reopen: %+v %v", info, err)
	}
}
