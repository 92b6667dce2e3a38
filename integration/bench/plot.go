package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The PNG is 1200x1500 pixels at vgimg's 96 dpi.
var (
	plotWidth  = vg.Points(900)
	plotHeight = vg.Points(1125)
)

var (
	warmupColor = color.Gray{Y: 225}
	p50Dashes   = []vg.Length{vg.Points(6), vg.Points(3)}
)

// Plot draws the per-second series of results into one PNG at path: produce
// throughput, produce latency and end-to-end latency, stacked over a shared time
// axis (seconds since the start of each run), one colour per target, with the
// warm-up shaded. Results without a series are left out.
func Plot(path string, results []*Result) (err error) {
	// gonum/plot panics on ranges it cannot draw; a plot must never take the
	// results of a long run down with it.
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("bench: plot: %v", v)
		}
	}()

	var runs []*Result
	end, warm := 1.0, 0.0
	for _, r := range results {
		if r == nil || len(r.Series) == 0 {
			continue
		}
		runs = append(runs, r)
		for _, s := range r.Series {
			end = math.Max(end, s.At.Seconds())
			if s.Warmup {
				warm = math.Max(warm, s.At.Seconds())
			}
		}
	}

	thr := newPanel("Produce throughput (shaded: warm-up)", "MiB/s", warm)
	prod := newPanel("Produce latency: p99 solid, p50 dashed", "ms", warm)
	e2e := newPanel("End-to-end latency: p99 solid, p50 dashed", "ms", warm)
	panels := []*plot.Plot{thr, prod, e2e}
	if warm > 0 {
		thr.Legend.Add("warm-up", warmupBand{end: warm})
	}

	for i, r := range runs {
		c := plotutil.DarkColors[i%len(plotutil.DarkColors)]
		solid := draw.LineStyle{Color: c, Width: vg.Points(1.5)}
		dashed := draw.LineStyle{Color: c, Width: vg.Points(1.2), Dashes: p50Dashes}

		addLine(thr, throughputXYs(r.Series), solid)
		addLine(prod, latencyXYs(r.Series, func(s Second) time.Duration { return s.Produce.P99 }), solid)
		addLine(prod, latencyXYs(r.Series, func(s Second) time.Duration { return s.Produce.P50 }), dashed)
		addLine(e2e, latencyXYs(r.Series, func(s Second) time.Duration { return s.EndToEnd.P99 }), solid)
		addLine(e2e, latencyXYs(r.Series, func(s Second) time.Duration { return s.EndToEnd.P50 }), dashed)
		thr.Legend.Add(rowLabel(r), &plotter.Line{LineStyle: solid})
	}
	if len(runs) == 0 {
		thr.Title.Text += " (no per-second data)"
	}

	for _, p := range panels {
		p.X.Min, p.X.Max = 0, end
	}
	// The legend, shared by the panels, sits in headroom above the throughput.
	thr.Y.Min = 0
	thr.Y.Max *= 1.4
	if thr.Y.Max <= 0 || math.IsInf(thr.Y.Max, 0) {
		thr.Y.Max = 1
	}
	logScale(prod)
	logScale(e2e)

	img := vgimg.New(plotWidth, plotHeight)
	tiles := draw.Tiles{
		Rows: len(panels), Cols: 1,
		PadTop: vg.Points(10), PadBottom: vg.Points(10),
		PadLeft: vg.Points(10), PadRight: vg.Points(20),
		PadY: vg.Points(20),
	}
	grid := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, tiles, draw.New(img))
	for i, p := range panels {
		p.Draw(canvases[i][0])
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: plot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	return nil
}

// newPanel starts a panel, shading the warm-up (up to warm seconds) beneath the grid.
func newPanel(title, unit string, warm float64) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since start"
	p.Y.Label.Text = unit
	p.Legend.Top = true
	p.Legend.XOffs = -vg.Points(8)
	p.Legend.YOffs = -vg.Points(4)
	if warm > 0 {
		p.Add(warmupBand{end: warm})
	}
	p.Add(plotter.NewGrid())
	return p
}

// addLine adds a line, and a dot when it has one point: a line needs two to show.
func addLine(p *plot.Plot, xys plotter.XYs, style draw.LineStyle) {
	if len(xys) == 0 {
		return
	}
	p.Add(&plotter.Line{XYs: xys, LineStyle: style})
	if len(xys) == 1 {
		p.Add(&plotter.Scatter{XYs: xys, GlyphStyle: draw.GlyphStyle{
			Color: style.Color, Radius: vg.Points(3), Shape: draw.CircleGlyph{},
		}})
	}
}

// throughputXYs is MiB/s per second; the last second of an interrupted run may be
// short, so each is divided by its own length.
func throughputXYs(series []Second) plotter.XYs {
	var xys plotter.XYs
	var prev time.Duration
	for _, s := range series {
		dt := s.At - prev
		prev = s.At
		if dt <= 0 {
			continue
		}
		xys = append(xys, plotter.XY{X: s.At.Seconds(), Y: float64(s.ProducedBytes) / (1 << 20) / dt.Seconds()})
	}
	return xys
}

// latencyXYs are the picked percentile per second in ms; seconds with none (or a
// zero, which a log scale cannot show) are skipped.
func latencyXYs(series []Second, pick func(Second) time.Duration) plotter.XYs {
	var xys plotter.XYs
	for _, s := range series {
		if d := pick(s); d > 0 {
			xys = append(xys, plotter.XY{X: s.At.Seconds(), Y: float64(d) / float64(time.Millisecond)})
		}
	}
	return xys
}

// logScale turns the Y axis logarithmic when the panel has data, from a 1-2-5 step
// below the data to one above so that at least two ticks are labelled; an empty
// panel stays linear, as a log scale cannot reach zero.
func logScale(p *plot.Plot) {
	if !(p.Y.Min > 0) || math.IsInf(p.Y.Max, 0) {
		p.Y.Min, p.Y.Max = 0, 1
		return
	}
	if p.Y.Min == p.Y.Max {
		p.Y.Min, p.Y.Max = p.Y.Min/2, p.Y.Max*2
	}
	p.Y.Min, p.Y.Max = step125(p.Y.Min, false), step125(p.Y.Max, true)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
}

// step125 rounds v > 0 down (or up) to 1, 2 or 5 times a power of ten.
func step125(v float64, up bool) float64 {
	pow := math.Pow10(int(math.Floor(math.Log10(v))))
	m := v / pow
	if up {
		switch {
		case m <= 1:
			return pow
		case m <= 2:
			return 2 * pow
		case m <= 5:
			return 5 * pow
		}
		return 10 * pow
	}
	switch {
	case m >= 5:
		return 5 * pow
	case m >= 2:
		return 2 * pow
	}
	return pow
}

// logTicks marks 1..9 times each power of ten and labels 1, 2 and 5 times it (only
// the powers over more than three decades); plot.LogTicks labels powers of ten
// only, which leaves a narrow latency range unlabelled.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0) || !(hi >= lo) || math.IsInf(hi, 0) {
		return nil
	}
	first := int(math.Floor(math.Log10(lo)))
	last := int(math.Ceil(math.Log10(hi)))
	wide := last-first > 3
	var ticks []plot.Tick
	for k := first; k <= last; k++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow10(k)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || (!wide && (m == 2 || m == 5)) {
				t.Label = tickLabel(m, k)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// tickLabel prints m·10^k without an exponent or float noise.
func tickLabel(m, k int) string {
	return strconv.FormatFloat(float64(m)*math.Pow10(k), 'f', max(-k, 0), 64)
}

// warmupBand shades the warm-up, from 0 to end seconds, across a panel's height.
// It has no data range, so it never stretches the axes.
type warmupBand struct{ end float64 }

func (b warmupBand) Plot(c draw.Canvas, p *plot.Plot) {
	if b.end <= p.X.Min {
		return
	}
	trX, _ := p.Transforms(&c)
	x0, x1 := trX(math.Max(p.X.Min, 0)), trX(math.Min(b.end, p.X.Max))
	c.SetColor(warmupColor)
	c.Fill(rectPath(x0, c.Min.Y, x1, c.Max.Y))
}

func (b warmupBand) Thumbnail(c *draw.Canvas) {
	c.SetColor(warmupColor)
	c.Fill(rectPath(c.Min.X, c.Min.Y, c.Max.X, c.Max.Y))
}

func rectPath(x0, y0, x1, y1 vg.Length) vg.Path {
	var p vg.Path
	p.Move(vg.Point{X: x0, Y: y0})
	p.Line(vg.Point{X: x1, Y: y0})
	p.Line(vg.Point{X: x1, Y: y1})
	p.Line(vg.Point{X: x0, Y: y1})
	p.Close()
	return p
}
