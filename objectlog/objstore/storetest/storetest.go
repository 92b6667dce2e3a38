// Package storetest is the acceptance suite for objstore.Store implementations. Every
// implementation (memory, directory, S3 on a real MinIO) runs the same Run, so callers
// may rely on the contract documented on objstore.Store and nothing else.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog/objstore"
)

// Run runs every acceptance test. newStore must return an empty store, independent of
// the stores returned by earlier calls.
func Run(t *testing.T, newStore func(t *testing.T) objstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s objstore.Store)
	}{
		{"PutGetHead", testPutGetHead},
		{"Missing", testMissing},
		{"GetRange", testGetRange},
		{"Overwrite", testOverwrite},
		{"IfNoneMatch", testIfNoneMatch},
		{"IfNoneMatchRace", testIfNoneMatchRace},
		{"IfMatch", testIfMatch},
		{"Delete", testDelete},
		{"List", testList},
		{"InvalidKeys", testInvalidKeys},
		{"SizeMismatch", testSizeMismatch},
		{"EmptyObject", testEmptyObject},
		{"LargeObject", testLargeObject},
		{"UnseekableBody", testUnseekableBody},
		{"CanceledContext", testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, s objstore.Store, key string, data []byte, opts objstore.PutOptions) (objstore.ObjectInfo, error) {
	t.Helper()
	return s.Put(ctxT(t), key, bytes.NewReader(data), int64(len(data)), opts)
}

func mustPut(t *testing.T, s objstore.Store, key string, data []byte) objstore.ObjectInfo {
	t.Helper()
	info, err := put(t, s, key, data, objstore.PutOptions{})
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return info
}

func mustGet(t *testing.T, s objstore.Store, key string) ([]byte, objstore.ObjectInfo) {
	t.Helper()
	rc, info, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("get %q: read: %v", key, err)
	}
	return data, info
}

func readRange(t *testing.T, s objstore.Store, key string, off, n int64) ([]byte, error) {
	t.Helper()
	rc, err := s.GetRange(ctxT(t), key, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func testPutGetHead(t *testing.T, s objstore.Store) {
	data := randBytes(1000)
	pinfo := mustPut(t, s, "a/b/c.seg", data)
	if pinfo.Size != 1000 || pinfo.ETag == "" || pinfo.Key != "a/b/c.seg" {
		t.Fatalf("put info = %+v", pinfo)
	}
	got, ginfo := mustGet(t, s, "a/b/c.seg")
	if !bytes.Equal(got, data) {
		t.Fatalf("get returned different bytes")
	}
	hinfo, err := s.Head(ctxT(t), "a/b/c.seg")
	if err != nil {
		t.Fatalf("head: %v", err)
	}
	for _, info := range []objstore.ObjectInfo{ginfo, hinfo} {
		if info.Size != 1000 || info.ETag != pinfo.ETag || info.ModTime.IsZero() {
			t.Fatalf("info %+v does not match put %+v", info, pinfo)
		}
	}
}

func testMissing(t *testing.T, s objstore.Store) {
	ctx := ctxT(t)
	_, _, err := s.Get(ctx, "nope")
	wantErr(t, err, objstore.ErrNotExist, "get")
	_, err = s.Head(ctx, "nope")
	wantErr(t, err, objstore.ErrNotExist, "head")
	_, err = s.GetRange(ctx, "nope", 0, 10)
	wantErr(t, err, objstore.ErrNotExist, "get range")
	// A missing key below an existing object's "directory" is missing too.
	mustPut(t, s, "dir/obj", []byte("x"))
	_, err = s.Head(ctx, "dir/obj/child")
	wantErr(t, err, objstore.ErrNotExist, "head below object")
	_, err = s.Head(ctx, "dir")
	wantErr(t, err, objstore.ErrNotExist, "head of a prefix")
}

func testGetRange(t *testing.T, s objstore.Store) {
	data := randBytes(4096)
	mustPut(t, s, "r", data)
	cases := []struct {
		off, n int64
		want   []byte
	}{
		{0, 1, data[:1]},
		{100, 200, data[100:300]},
		{4000, 96, data[4000:]},
		{4000, 1000, data[4000:]}, // shortened at the end
		{4095, 1 << 40, data[4095:]},
		{0, 4096, data},
	}
	for _, c := range cases {
		got, err := readRange(t, s, "r", c.off, c.n)
		if err != nil {
			t.Fatalf("range %d+%d: %v", c.off, c.n, err)
		}
		if !bytes.Equal(got, c.want) {
			t.Fatalf("range %d+%d: got %d bytes, want %d", c.off, c.n, len(got), len(c.want))
		}
	}
	for _, c := range []struct{ off, n int64 }{{4096, 1}, {5000, 10}, {-1, 10}, {0, 0}, {0, -5}} {
		_, err := readRange(t, s, "r", c.off, c.n)
		wantErr(t, err, objstore.ErrInvalidRange, fmt.Sprintf("range %d+%d", c.off, c.n))
	}
}

func testOverwrite(t *testing.T, s objstore.Store) {
	first := mustPut(t, s, "k", []byte("first version"))
	second := mustPut(t, s, "k", []byte("second, longer version"))
	if first.ETag == second.ETag {
		t.Fatalf("ETag did not change on overwrite: %q", first.ETag)
	}
	got, info := mustGet(t, s, "k")
	if string(got) != "second, longer version" || info.ETag != second.ETag {
		t.Fatalf("after overwrite got %q etag %q", got, info.ETag)
	}
}

func testIfNoneMatch(t *testing.T, s objstore.Store) {
	if _, err := put(t, s, "once", []byte("winner"), objstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("first conditional put: %v", err)
	}
	_, err := put(t, s, "once", []byte("loser"), objstore.PutOptions{IfNoneMatch: true})
	wantErr(t, err, objstore.ErrPreconditionFailed, "second conditional put")
	if got, _ := mustGet(t, s, "once"); string(got) != "winner" {
		t.Fatalf("conditional put replaced the object: %q", got)
	}
}

func testIfNoneMatchRace(t *testing.T, s objstore.Store) {
	const racers = 8
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			_, errs[i] = put(t, s, "race", []byte(fmt.Sprintf("racer %d", i)), objstore.PutOptions{IfNoneMatch: true})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("racers %d and %d both won", winner, i)
			}
			winner = i
		case !errors.Is(err, objstore.ErrPreconditionFailed):
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no racer won")
	}
	if got, _ := mustGet(t, s, "race"); string(got) != fmt.Sprintf("racer %d", winner) {
		t.Fatalf("object %q is not the winner's (%d)", got, winner)
	}
}

func testIfMatch(t *testing.T, s objstore.Store) {
	_, err := put(t, s, "cas", []byte("v0"), objstore.PutOptions{IfMatch: "no-such-etag"})
	wantErr(t, err, objstore.ErrPreconditionFailed, "if-match on a missing key")

	v1 := mustPut(t, s, "cas", []byte("v1"))
	v2, err := put(t, s, "cas", []byte("v2"), objstore.PutOptions{IfMatch: v1.ETag})
	if err != nil {
		t.Fatalf("if-match with current etag: %v", err)
	}
	_, err = put(t, s, "cas", []byte("v3"), objstore.PutOptions{IfMatch: v1.ETag})
	wantErr(t, err, objstore.ErrPreconditionFailed, "if-match with stale etag")
	if got, info := mustGet(t, s, "cas"); string(got) != "v2" || info.ETag != v2.ETag {
		t.Fatalf("got %q etag %q, want v2 etag %q", got, info.ETag, v2.ETag)
	}
	// The ETag from Head and List works as well as Put's.
	h, err := s.Head(ctxT(t), "cas")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := put(t, s, "cas", []byte("v4"), objstore.PutOptions{IfMatch: h.ETag}); err != nil {
		t.Fatalf("if-match with Head's etag: %v", err)
	}
	for info, err := range s.List(ctxT(t), "cas") {
		if err != nil {
			t.Fatal(err)
		}
		if _, err := put(t, s, "cas", []byte("v5"), objstore.PutOptions{IfMatch: info.ETag}); err != nil {
			t.Fatalf("if-match with List's etag: %v", err)
		}
	}
	if got, _ := mustGet(t, s, "cas"); string(got) != "v5" {
		t.Fatalf("got %q, want v5", got)
	}
}

func testDelete(t *testing.T, s objstore.Store) {
	ctx := ctxT(t)
	mustPut(t, s, "x/del", []byte("bye"))
	if err := s.Delete(ctx, "x/del"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	_, _, err := s.Get(ctx, "x/del")
	wantErr(t, err, objstore.ErrNotExist, "get after delete")
	if err := s.Delete(ctx, "x/del"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if err := s.Delete(ctx, "never/existed"); err != nil {
		t.Fatalf("delete of a missing key: %v", err)
	}
	// The key is free again for a conditional create.
	if _, err := put(t, s, "x/del", []byte("again"), objstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("if-none-match after delete: %v", err)
	}
}

func listKeys(t *testing.T, s objstore.Store, prefix string) []string {
	t.Helper()
	var keys []string
	for info, err := range s.List(ctxT(t), prefix) {
		if err != nil {
			t.Fatalf("list %q: %v", prefix, err)
		}
		keys = append(keys, info.Key)
	}
	return keys
}

func testList(t *testing.T, s objstore.Store) {
	keys := []string{"seg/00/b", "seg/00/a", "seg/01/c", "seg/0x", "seg-other", "top", "seg/00/a.idx"}
	for i, k := range keys {
		mustPut(t, s, k, randBytes(i+1))
	}
	cases := map[string][]string{
		"":         {"seg-other", "seg/00/a", "seg/00/a.idx", "seg/00/b", "seg/01/c", "seg/0x", "top"},
		"seg/":     {"seg/00/a", "seg/00/a.idx", "seg/00/b", "seg/01/c", "seg/0x"},
		"seg/0":    {"seg/00/a", "seg/00/a.idx", "seg/00/b", "seg/01/c", "seg/0x"},
		"seg/00/":  {"seg/00/a", "seg/00/a.idx", "seg/00/b"},
		"seg/00/a": {"seg/00/a", "seg/00/a.idx"},
		"seg":      {"seg-other", "seg/00/a", "seg/00/a.idx", "seg/00/b", "seg/01/c", "seg/0x"},
		"zzz":      nil,
		"nothere/": nil,
	}
	for prefix, want := range cases {
		got := listKeys(t, s, prefix)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("list %q = %q, want %q", prefix, got, want)
		}
	}
	// Sizes are reported, and stopping early is allowed.
	n := 0
	for info, err := range s.List(ctxT(t), "") {
		if err != nil {
			t.Fatal(err)
		}
		if info.Key == "top" && info.Size != 6 {
			t.Errorf("size of top = %d, want 6", info.Size)
		}
		if info.ETag == "" {
			t.Errorf("list gave %q no ETag", info.Key)
		}
		n++
		if n == 2 {
			break
		}
	}
}

func testInvalidKeys(t *testing.T, s objstore.Store) {
	ctx := ctxT(t)
	for _, key := range []string{"", "/abs", "a//b", "a/../b", "..", "./a", "a/", "bad\x00nul", "new\nline", strings.Repeat("k", 1025), "\xff\xfe"} {
		_, err := put(t, s, key, []byte("x"), objstore.PutOptions{})
		wantErr(t, err, objstore.ErrInvalidKey, fmt.Sprintf("put %q", key))
		_, _, err = s.Get(ctx, key)
		wantErr(t, err, objstore.ErrInvalidKey, fmt.Sprintf("get %q", key))
		_, err = s.Head(ctx, key)
		wantErr(t, err, objstore.ErrInvalidKey, fmt.Sprintf("head %q", key))
		wantErr(t, s.Delete(ctx, key), objstore.ErrInvalidKey, fmt.Sprintf("delete %q", key))
	}
	if keys := listKeys(t, s, ""); len(keys) != 0 {
		t.Fatalf("invalid puts stored objects: %q", keys)
	}
}

func testSizeMismatch(t *testing.T, s objstore.Store) {
	ctx := ctxT(t)
	data := []byte("twelve bytes")
	if _, err := s.Put(ctx, "short", bytes.NewReader(data), 20, objstore.PutOptions{}); err == nil {
		t.Fatal("put with body shorter than size succeeded")
	}
	if _, err := s.Put(ctx, "long", bytes.NewReader(data), 5, objstore.PutOptions{}); err == nil {
		t.Fatal("put with body longer than size succeeded")
	}
	if keys := listKeys(t, s, ""); len(keys) != 0 {
		t.Fatalf("mismatched puts stored objects: %q", keys)
	}
}

func testEmptyObject(t *testing.T, s objstore.Store) {
	info := mustPut(t, s, "empty", nil)
	if info.Size != 0 {
		t.Fatalf("size = %d", info.Size)
	}
	got, _ := mustGet(t, s, "empty")
	if len(got) != 0 {
		t.Fatalf("got %d bytes", len(got))
	}
	_, err := readRange(t, s, "empty", 0, 1)
	wantErr(t, err, objstore.ErrInvalidRange, "range of empty object")
}

func testLargeObject(t *testing.T, s objstore.Store) {
	data := randBytes(9<<20 + 123) // past the 8 MiB default segment size and any 5 MiB part size
	mustPut(t, s, "big", data)
	got, info := mustGet(t, s, "big")
	if !bytes.Equal(got, data) || info.Size != int64(len(data)) {
		t.Fatalf("large object round trip: got %d bytes (info %d), want %d", len(got), info.Size, len(data))
	}
	off := int64(8<<20 - 7)
	part, err := readRange(t, s, "big", off, 1<<20)
	if err != nil || !bytes.Equal(part, data[off:off+1<<20]) {
		t.Fatalf("range in large object: %d bytes, err %v", len(part), err)
	}
}

// onlyReader hides any io.Seeker so implementations take their streaming path.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func testUnseekableBody(t *testing.T, s objstore.Store) {
	data := randBytes(70_000)
	if _, err := s.Put(ctxT(t), "stream", onlyReader{bytes.NewReader(data)}, int64(len(data)), objstore.PutOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	if got, _ := mustGet(t, s, "stream"); !bytes.Equal(got, data) {
		t.Fatal("unseekable body round trip differs")
	}
}

func testCanceledContext(t *testing.T, s objstore.Store) {
	mustPut(t, s, "c", []byte("data"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Get(ctx, "c"); err == nil {
		t.Fatal("get with canceled context succeeded")
	}
	if _, err := s.Head(ctx, "c"); err == nil {
		t.Fatal("head with canceled context succeeded")
	}
	if _, err := s.Put(ctx, "c2", bytes.NewReader([]byte("x")), 1, objstore.PutOptions{}); err == nil {
		t.Fatal("put with canceled context succeeded")
	}
}
