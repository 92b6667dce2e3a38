package bench

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPlot(t *testing.T) {
	zero := &Result{Target: "zero", Series: series(5, 2)}
	for i := range zero.Series {
		zero.Series[i].ProducedBytes = 0
		zero.Series[i].Produce = Latencies{}
		zero.Series[i].EndToEnd = Latencies{}
	}
	short := series(4, 0)
	short[3].At = 3500 * time.Millisecond // an interrupted run's last, short second

	for _, tc := range []struct {
		name    string
		results []*Result
	}{
		{"targets", testResults()},
		{"none", nil},
		{"empty series", []*Result{{Target: "local"}, nil}},
		{"one second", []*Result{{Target: "local", Series: series(1, 0)}}},
		{"warm-up only", []*Result{{Target: "local", Series: series(3, 3)}}},
		{"zero latencies", []*Result{zero}},
		{"one latency value", []*Result{{Target: "flat", Series: []Second{
			{At: time.Second, Produce: Latencies{Count: 1, P50: time.Millisecond, P99: time.Millisecond}},
			{At: 2 * time.Second, Produce: Latencies{Count: 1, P50: time.Millisecond, P99: time.Millisecond}},
		}}}},
		{"short last second", []*Result{{Target: "local", Interrupted: true, Series: short}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bench.png")
			if err := Plot(path, tc.results); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); b.Dx() < 1100 || b.Dx() > 1300 || b.Dy() < 1400 || b.Dy() > 1600 {
				t.Errorf("image is %dx%d, want about 1200x1500", b.Dx(), b.Dy())
			}
		})
	}
}

func TestPlotUnwritable(t *testing.T) {
	if err := Plot(filepath.Join(t.TempDir(), "missing", "bench.png"), testResults()); err == nil {
		t.Error("Plot into a missing directory succeeded")
	}
}

func TestStep125(t *testing.T) {
	for _, tc := range []struct {
		v        float64
		down, up float64
	}{
		{0.84, 0.5, 1},
		{1, 1, 1},
		{3, 2, 5},
		{7, 5, 10},
		{150, 100, 200},
	} {
		if got := step125(tc.v, false); got != tc.down {
			t.Errorf("step125(%v) down = %v, want %v", tc.v, got, tc.down)
		}
		if got := step125(tc.v, true); got != tc.up {
			t.Errorf("step125(%v) up = %v, want %v", tc.v, got, tc.up)
		}
	}
}
