package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The files WriteReport writes into its directory.
const (
	ReportFile  = "report.md"
	ResultsFile = "results.json"
	PlotFile    = "bench.png"
)

// column is one column of the results table: how a result fills it, and how a
// ratio row (a result against the reference) fills it; a nil ratio prints "-".
type column struct {
	head  string
	cell  func(r *Result, p Prices) string
	ratio func(r, ref *Result) string
}

var columns = []column{
	{head: "target", cell: func(r *Result, _ Prices) string { return rowLabel(r) }},
	{head: "MiB/s", cell: perSecCell((*Result).MiBps), ratio: throughputRatio},
	{head: "records/s", cell: perSecCell((*Result).RecordsPerSec)},
	latencyColumn("produce p50 (ms)", func(r *Result) (Latencies, time.Duration) { return r.Produce, r.Produce.P50 }),
	latencyColumn("produce p99 (ms)", func(r *Result) (Latencies, time.Duration) { return r.Produce, r.Produce.P99 }),
	latencyColumn("produce p99.9 (ms)", func(r *Result) (Latencies, time.Duration) { return r.Produce, r.Produce.P999 }),
	latencyColumn("e2e p50 (ms)", func(r *Result) (Latencies, time.Duration) { return r.EndToEnd, r.EndToEnd.P50 }),
	latencyColumn("e2e p99 (ms)", func(r *Result) (Latencies, time.Duration) { return r.EndToEnd, r.EndToEnd.P99 }),
	latencyColumn("e2e p99.9 (ms)", func(r *Result) (Latencies, time.Duration) { return r.EndToEnd, r.EndToEnd.P999 }),
	{head: "server CPU (s/GiB)", cell: func(r *Result, _ Prices) string {
		if r.Server.Processes == 0 || r.Bytes <= 0 {
			return "-"
		}
		return fmtNum(r.CPUPerGiB())
	}},
	{head: "peak RSS (MiB)", cell: func(r *Result, _ Prices) string {
		if r.Server.Processes == 0 || r.Server.PeakRSSBytes <= 0 {
			return "-"
		}
		return fmtNum(float64(r.Server.PeakRSSBytes) / (1 << 20))
	}},
	{head: "PUT/GiB", cell: storeCell(perGiBCell((*Result).PutsPerGiB))},
	{head: "GET/GiB", cell: storeCell(perGiBCell((*Result).GetsPerGiB))},
	{head: "PUT/s", cell: storeCell(perSecCell((*Result).PutsPerSec))},
	{head: "GET/s", cell: storeCell(perSecCell((*Result).GetsPerSec))},
	{head: "commits/s", cell: storeCell(perSecCell((*Result).CommitsPerSec))},
	{head: "request $/GiB", cell: storeCell(func(r *Result, p Prices) string {
		if r.Bytes <= 0 {
			return "-"
		}
		return fmtNum(r.CostPerGiB(p))
	})},
}

// perSecCell prints a rate, unknown when nothing was measured.
func perSecCell(f func(*Result) float64) func(*Result, Prices) string {
	return func(r *Result, _ Prices) string {
		if r.Measured <= 0 {
			return "-"
		}
		return fmtNum(f(r))
	}
}

// perGiBCell prints a figure per GiB produced, unknown when nothing was.
func perGiBCell(f func(*Result) float64) func(*Result, Prices) string {
	return func(r *Result, _ Prices) string {
		if r.Bytes <= 0 {
			return "-"
		}
		return fmtNum(f(r))
	}
}

// storeCell prints "-" for targets without object-store counters (kfake).
func storeCell(cell func(*Result, Prices) string) func(*Result, Prices) string {
	return func(r *Result, p Prices) string {
		if !r.Server.HasStore {
			return "-"
		}
		return cell(r, p)
	}
}

func latencyColumn(head string, pick func(*Result) (Latencies, time.Duration)) column {
	return column{
		head: head,
		cell: func(r *Result, _ Prices) string {
			l, d := pick(r)
			if !hasLatencies(l) {
				return "-"
			}
			return fmtMillis(d)
		},
		ratio: func(r, ref *Result) string {
			l, d := pick(r)
			lref, dref := pick(ref)
			if !hasLatencies(l) || !hasLatencies(lref) || dref <= 0 {
				return "-"
			}
			return fmtRatio(float64(d) / float64(dref))
		},
	}
}

func throughputRatio(r, ref *Result) string {
	if r.Measured <= 0 || ref.Measured <= 0 || ref.MiBps() <= 0 {
		return "-"
	}
	return fmtRatio(r.MiBps() / ref.MiBps())
}

// hasLatencies tells whether a distribution holds anything; Max guards against a
// writer that filled the percentiles but not Count.
func hasLatencies(l Latencies) bool { return l.Count > 0 || l.Max > 0 }

// Table renders results as a GitHub Markdown table, one row per result in the given
// order, then one ratio row per other result against the result whose Target is
// reference (if there is one), then a line describing the workload and the prices.
// Figures that do not apply or were not measured print "-".
func Table(results []*Result, reference string, prices Prices) string {
	results = nonNilResults(results)
	var b strings.Builder
	row := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + escapeCell(c) + " |")
		}
		b.WriteString("\n")
	}

	head := make([]string, len(columns))
	rule := make([]string, len(columns))
	for i, c := range columns {
		head[i] = c.head
		rule[i] = "---:"
	}
	rule[0] = "---"
	row(head)
	row(rule)

	for _, r := range results {
		cells := make([]string, len(columns))
		for i, c := range columns {
			cells[i] = c.cell(r, prices)
		}
		row(cells)
	}

	if ref := findTarget(results, reference); reference != "" && ref != nil {
		for _, r := range results {
			if r.Target == reference {
				continue
			}
			cells := make([]string, len(columns))
			cells[0] = r.Target + " / " + ref.Target
			for i, c := range columns[1:] {
				cells[i+1] = "-"
				if c.ratio != nil {
					cells[i+1] = c.ratio(r, ref)
				}
			}
			row(cells)
		}
	}

	b.WriteString("\n")
	for _, line := range workloadLines(results) {
		b.WriteString(line + "\n")
	}
	fmt.Fprintf(&b, "Request prices: $%s per 1000 PUTs, $%s per 1000 GETs; ratios are target / %s.\n",
		fmtPlain(prices.PutPer1000), fmtPlain(prices.GetPer1000), orDash(reference))
	return b.String()
}

// workloadLines describes the workload once, or once per target when the targets
// ran different ones.
func workloadLines(results []*Result) []string {
	if len(results) == 0 {
		return nil
	}
	same := true
	for _, r := range results[1:] {
		same = same && r.Workload == results[0].Workload
	}
	if same {
		return []string{"Workload: " + describeWorkload(results[0].Workload) + "."}
	}
	lines := make([]string, len(results))
	for i, r := range results {
		lines[i] = fmt.Sprintf("Workload (%s): %s.", r.Target, describeWorkload(r.Workload))
	}
	return lines
}

func describeWorkload(w Workload) string {
	parts := []string{
		fmtBytes(w.RecordBytes) + " records",
		fmt.Sprintf("%d partitions", w.Partitions),
		fmt.Sprintf("%d producers", w.Producers),
		fmt.Sprintf("%d consumers", w.Consumers),
		"acks=" + orDash(w.Acks),
		"linger " + w.Linger.String(),
		"compression " + orDash(w.Compression),
	}
	if w.Idempotent {
		parts = append(parts, "idempotent")
	} else {
		parts = append(parts, "not idempotent")
	}
	if w.RateMiBps > 0 && !math.IsInf(w.RateMiBps, 0) {
		parts = append(parts, "rate "+fmtNum(w.RateMiBps)+" MiB/s")
	} else {
		parts = append(parts, "unlimited rate")
	}
	if w.MaxInflight > 0 {
		parts = append(parts, fmt.Sprintf("%d requests in flight per broker", w.MaxInflight))
	}
	if w.MaxBufferedRecords > 0 {
		parts = append(parts, fmt.Sprintf("at most %d buffered records per producer", w.MaxBufferedRecords))
	}
	parts = append(parts, "warm-up "+w.Warmup.String(), "measured "+w.Duration.String())
	return strings.Join(parts, ", ")
}

// WriteReport writes report.md, results.json and bench.png into dir, creating it if
// needed, and returns the paths it wrote. It writes what it can when one file fails,
// so partial results of an interrupted run are never lost to a plotting problem.
func WriteReport(dir string, results []*Result, reference string, prices Prices, title string) (files []string, err error) {
	results = nonNilResults(results)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: report: %w", err)
	}
	var errs []error
	written := func(name string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("bench: report: %w", err))
			return
		}
		files = append(files, filepath.Join(dir, name))
	}

	js, err := resultsJSON(results, reference, prices, title)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, ResultsFile), js, 0o644)
	}
	written(ResultsFile, err)
	written(PlotFile, Plot(filepath.Join(dir, PlotFile), results))
	md := markdown(results, reference, prices, title)
	written(ReportFile, os.WriteFile(filepath.Join(dir, ReportFile), []byte(md), 0o644))
	return files, errors.Join(errs...)
}

func markdown(results []*Result, reference string, prices Prices, title string) string {
	if title == "" {
		title = "Strata bench"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n## Targets\n\n", title)
	for _, r := range results {
		fmt.Fprintf(&b, "- **%s**: %s", r.Target, orDash(r.Description))
		if r.Interrupted {
			b.WriteString(" (interrupted)")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\n## Results\n\n%s", Table(results, reference, prices))

	var failed []*Result
	for _, r := range results {
		if r.Err != "" {
			failed = append(failed, r)
		}
	}
	if len(failed) > 0 {
		b.WriteString("\n## Errors\n\n")
		for _, r := range failed {
			fmt.Fprintf(&b, "- **%s**: %s\n", r.Target, r.Err)
		}
	}
	fmt.Fprintf(&b, "\n## Over time\n\n![Produce throughput, produce and end-to-end latency per second](%s)\n\n", PlotFile)
	fmt.Fprintf(&b, "Every figure, with the per-second series, is in [%s](%s).\n", ResultsFile, ResultsFile)
	return b.String()
}

// resultJSON is a Result with its derived figures, for readers of results.json who
// do not have this package's methods.
type resultJSON struct {
	*Result
	MiBps         float64
	RecordsPerSec float64
	CPUPerGiB     float64
	PutsPerGiB    float64
	GetsPerGiB    float64
	PutsPerSec    float64
	GetsPerSec    float64
	CommitsPerSec float64
	CostPerGiB    float64
}

type reportJSON struct {
	Title     string
	Reference string
	Prices    Prices
	Results   []resultJSON
}

// resultsJSON marshals the results. encoding/json refuses NaN and Inf, so every
// float is made finite first: one odd figure must not cost the whole file.
func resultsJSON(results []*Result, reference string, prices Prices, title string) ([]byte, error) {
	out := reportJSON{
		Title:     title,
		Reference: reference,
		Prices:    Prices{PutPer1000: jsonFinite(prices.PutPer1000), GetPer1000: jsonFinite(prices.GetPer1000)},
		Results:   make([]resultJSON, len(results)),
	}
	for i, r := range results {
		c := *r
		c.Workload.RateMiBps = jsonFinite(c.Workload.RateMiBps)
		c.Server.CPUSeconds = jsonFinite(c.Server.CPUSeconds)
		out.Results[i] = resultJSON{
			Result:        &c,
			MiBps:         jsonFinite(c.MiBps()),
			RecordsPerSec: jsonFinite(c.RecordsPerSec()),
			CPUPerGiB:     jsonFinite(c.CPUPerGiB()),
			PutsPerGiB:    jsonFinite(c.PutsPerGiB()),
			GetsPerGiB:    jsonFinite(c.GetsPerGiB()),
			PutsPerSec:    jsonFinite(c.PutsPerSec()),
			GetsPerSec:    jsonFinite(c.GetsPerSec()),
			CommitsPerSec: jsonFinite(c.CommitsPerSec()),
			CostPerGiB:    jsonFinite(c.CostPerGiB(out.Prices)),
		}
	}
	js, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(js, '\n'), nil
}

func jsonFinite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// fmtNum prints v with about three significant digits and never an exponent:
// 1234, 123, 12.3, 1.23, 0.00123.
func fmtNum(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	digits := min(2-int(math.Floor(math.Log10(a))), 9)
	return strconv.FormatFloat(v, 'f', digits, 64)
}

// fmtMillis prints a latency in milliseconds: two decimals below 10 ms, one below
// 100 ms, none above.
func fmtMillis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 100:
		return strconv.FormatFloat(ms, 'f', 0, 64)
	case ms >= 10:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	}
	return strconv.FormatFloat(ms, 'f', 2, 64)
}

// fmtRatio prints a ratio as "1.73x".
func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + "x"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "x"
	case v >= 0.01:
		return strconv.FormatFloat(v, 'f', 2, 64) + "x"
	}
	return fmtNum(v) + "x"
}

// fmtPlain prints a float with as many digits as it needs and no exponent.
func fmtPlain(v float64) string { return strconv.FormatFloat(jsonFinite(v), 'f', -1, 64) }

func fmtBytes(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

func rowLabel(r *Result) string {
	if r.Interrupted {
		return r.Target + " (interrupted)"
	}
	return r.Target
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// escapeCell keeps a cell from breaking the table.
func escapeCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func findTarget(results []*Result, target string) *Result {
	for _, r := range results {
		if r.Target == target {
			return r
		}
	}
	return nil
}

func nonNilResults(results []*Result) []*Result {
	out := make([]*Result, 0, len(results))
	for _, r := range results {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}
