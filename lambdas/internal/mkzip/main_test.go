package main

import (
	"archive/zip"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// checkZip opens a deployment zip and returns its bootstrap's bytes, failing unless
// the zip holds exactly one entry, "bootstrap" at the root, an executable regular file.
func checkZip(t *testing.T, path string) []byte {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if len(zr.File) != 1 {
		t.Fatalf("%s holds %d entries, want only bootstrap", path, len(zr.File))
	}
	f := zr.File[0]
	if f.Name != EntryName {
		t.Fatalf("entry %q, want %q at the root", f.Name, EntryName)
	}
	if m := f.Mode(); !m.IsRegular() || m.Perm() != 0o755 {
		t.Fatalf("bootstrap mode %v, want -rwxr-xr-x", m)
	}
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPack(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "some-binary")
	content := bytes.Repeat([]byte("\x7fELF not really"), 1000)
	if err := os.WriteFile(bin, content, 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "fn.zip")
	if err := pack(out, bin); err != nil {
		t.Fatal(err)
	}
	if got := checkZip(t, out); !bytes.Equal(got, content) {
		t.Fatal("bootstrap content differs from the binary")
	}
	first, _ := os.ReadFile(out)
	if err := pack(out, bin); err != nil {
		t.Fatal(err)
	}
	if second, _ := os.ReadFile(out); !bytes.Equal(first, second) {
		t.Fatal("two packs of one binary differ: the zip is not reproducible")
	}
	if err := pack(out, dir); err == nil {
		t.Fatal("packed a directory")
	}
	if err := pack(out, filepath.Join(dir, "missing")); err == nil {
		t.Fatal("packed a missing file")
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 1 {
		t.Fatalf("temporary files left beside the zip: %v", entries)
	}
}

// TestMakeLambdas runs `make lambdas` into a temporary bin directory and checks the
// zip Lambda would get: a static linux/amd64 executable named bootstrap at its root.
func TestMakeLambdas(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the bootstrap")
	}
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make")
	}
	bin := t.TempDir()
	cmd := exec.Command(mk, "-C", filepath.Join("..", "..", ".."), "lambdas", "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make lambdas: %v\n%s", err, out)
	}
	b := checkZip(t, filepath.Join(bin, "lambdas", "compaction.zip"))
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("bootstrap is not an ELF binary: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("bootstrap is %v %v, want an x86-64 executable", f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("bootstrap is dynamically linked (CGO_ENABLED=0 missing)")
		}
	}
}
