package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stratalog/strata/objectlog/objstore"
	"github.com/stratalog/strata/objectlog/objstore/storetest"
)

// With no faults configured, a Faulty store is a transparent wrapper.
func TestFaultyAcceptance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.NewFaulty(objstore.NewMemory(), 1) })
}

func TestCountingAcceptance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.NewCounting(objstore.NewMemory()) })
}

func putBytes(ctx context.Context, s objstore.Store, key string, b []byte) error {
	_, err := s.Put(ctx, key, bytes.NewReader(b), int64(len(b)), objstore.PutOptions{})
	return err
}

func TestFaultyErrorRate(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMemory()
	f := objstore.NewFaulty(mem, 42)
	f.Set(objstore.OpPut, objstore.OpFaults{ErrorRate: 1})
	if err := putBytes(ctx, f, "k", []byte("x")); !errors.Is(err, objstore.ErrInjected) {
		t.Fatalf("put: %v, want ErrInjected", err)
	}
	if _, err := mem.Head(ctx, "k"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("a failed-before put reached the store: %v", err)
	}

	// A rate of 0.3 fails roughly 30% of calls, and the same seed gives the same fates.
	fates := func() []bool {
		f := objstore.NewFaulty(objstore.NewMemory(), 7)
		f.Set(objstore.OpHead, objstore.OpFaults{ErrorRate: 0.3})
		var out []bool
		for range 1000 {
			_, err := f.Head(ctx, "missing")
			out = append(out, errors.Is(err, objstore.ErrInjected))
		}
		return out
	}
	a, b := fates(), fates()
	n := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("call %d: fates differ between runs with one seed", i)
		}
		if a[i] {
			n++
		}
	}
	if n < 230 || n > 370 {
		t.Fatalf("%d of 1000 calls failed at rate 0.3", n)
	}
}

func TestFaultyLostReply(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMemory()
	f := objstore.NewFaulty(mem, 1)
	f.Set(objstore.OpPut, objstore.OpFaults{LostReplyRate: 1})
	f.Set(objstore.OpDelete, objstore.OpFaults{LostReplyRate: 1})
	if err := putBytes(ctx, f, "k", []byte("x")); !errors.Is(err, objstore.ErrInjected) {
		t.Fatalf("put: %v, want ErrInjected", err)
	}
	if _, err := mem.Head(ctx, "k"); err != nil {
		t.Fatalf("the put whose reply was lost did not take effect: %v", err)
	}
	if err := f.Delete(ctx, "k"); !errors.Is(err, objstore.ErrInjected) {
		t.Fatalf("delete: %v, want ErrInjected", err)
	}
	if _, err := mem.Head(ctx, "k"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("the delete whose reply was lost did not take effect: %v", err)
	}
}

func TestFaultyLatency(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMemory(), 1)
	f.Set(objstore.OpGet, objstore.OpFaults{Latency: objstore.Fixed(time.Hour)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := f.Get(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get under an hour of latency: %v, want deadline exceeded", err)
	}
}

func TestLatencyDistributions(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	u := objstore.Uniform{Min: time.Millisecond, Max: 3 * time.Millisecond}
	ln := objstore.LogNormal{Median: 10 * time.Millisecond, Sigma: 0.5}
	var below int
	for range 10000 {
		if d := u.Sample(r); d < u.Min || d > u.Max {
			t.Fatalf("uniform sample %v outside [%v,%v]", d, u.Min, u.Max)
		}
		if ln.Sample(r) < ln.Median {
			below++
		}
	}
	if below < 4700 || below > 5300 {
		t.Fatalf("%d of 10000 lognormal samples below the median", below)
	}
}

func TestCountingCounts(t *testing.T) {
	ctx := context.Background()
	c := objstore.NewCounting(objstore.NewMemory())
	for i := range 3 {
		if err := putBytes(ctx, c, string(rune('a'+i)), make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := c.GetRange(ctx, "a", 10, 50)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	c.Head(ctx, "missing")
	for range c.List(ctx, "") {
	}
	got := c.Counts()
	want := objstore.Counts{BytesIn: 300, BytesOut: 50}
	want.Requests[objstore.OpPut] = 3
	want.Requests[objstore.OpGetRange] = 1
	want.Requests[objstore.OpHead] = 1
	want.Errors[objstore.OpHead] = 1
	want.Requests[objstore.OpList] = 1
	if got != want {
		t.Fatalf("counts = %+v\nwant     %+v", got, want)
	}
	if got.Total() != 6 {
		t.Fatalf("total = %d, want 6", got.Total())
	}
}

func TestReadAllN(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 300_000) // 3 MB: several growth steps
	got, err := objstore.ReadAllN(bytes.NewReader(data), int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("exact: %d bytes, %v", len(got), err)
	}
	if cap(got) != len(data) {
		t.Fatalf("buffer capacity %d for %d bytes: grew past size", cap(got), len(data))
	}
	if _, err := objstore.ReadAllN(bytes.NewReader(data[:10]), 11); !errors.Is(err, objstore.ErrShortBody) {
		t.Fatalf("short: %v", err)
	}
	if _, err := objstore.ReadAllN(bytes.NewReader(data[:12]), 11); err == nil {
		t.Fatal("long body accepted")
	}
	if got, err := objstore.ReadAllN(bytes.NewReader(nil), 0); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v", err)
	}
	// A claimed size far beyond the bytes does not allocate the claim.
	if _, err := objstore.ReadAllN(bytes.NewReader(data[:5]), 1<<40); !errors.Is(err, objstore.ErrShortBody) {
		t.Fatalf("huge claim: %v", err)
	}
}
