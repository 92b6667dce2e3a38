package bench

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testWorkload = Workload{
	RecordBytes: 1024, Partitions: 12, Producers: 4, Consumers: 2, Acks: "all",
	Linger: 5 * time.Millisecond, Compression: "none", Idempotent: true,
	Duration: 10 * time.Second, Warmup: 3 * time.Second,
}

// testResults are a Strata target with a store, the kfake reference at half its
// throughput, and an interrupted run that measured nothing.
func testResults() []*Result {
	local := &Result{
		Target: "local", Description: "strata local, file store", Workload: testWorkload,
		Measured: 10 * time.Second,
		Bytes:    2000 << 20, // 200 MiB/s, 1.953125 GiB
		Records:  2000 << 10, // 204800 records/s
		Produce:  Latencies{Count: 1000, P50: 1500 * time.Microsecond, P99: 4 * time.Millisecond, P999: 12 * time.Millisecond},
		EndToEnd: Latencies{Count: 1000, P50: 3 * time.Millisecond, P99: 8 * time.Millisecond, P999: 150 * time.Millisecond},
		Server: ServerStats{
			Processes: 1, CPUSeconds: 19.53125, PeakRSSBytes: 512 << 20,
			HasStore: true, Puts: 500, Gets: 1000, Commits: 250,
		},
		Series: series(13, 3),
	}
	kfake := &Result{
		Target: "kfake", Description: "franz-go kfake, in memory", Workload: testWorkload,
		Measured: 10 * time.Second,
		Bytes:    1000 << 20,
		Records:  1000 << 10,
		Produce:  Latencies{Count: 1000, P50: 500 * time.Microsecond, P99: 2 * time.Millisecond, P999: 6 * time.Millisecond},
		EndToEnd: Latencies{Count: 1000, P50: time.Millisecond, P99: 4 * time.Millisecond, P999: 50 * time.Millisecond},
		Series:   series(13, 3),
	}
	minio := &Result{
		Target: "minio", Description: "strata local on MinIO", Workload: testWorkload,
		Interrupted: true, Err: "context canceled",
		// Nothing measured, and a NaN that must not reach the JSON.
		Server: ServerStats{Processes: 1, CPUSeconds: math.NaN(), HasStore: true},
	}
	return []*Result{local, kfake, minio}
}

// series is n seconds of steady load, the first warm of them warm-up.
func series(n, warm int) []Second {
	s := make([]Second, n)
	for i := range s {
		s[i] = Second{
			At:              time.Duration(i+1) * time.Second,
			Warmup:          i < warm,
			ProducedBytes:   (100 + int64(i)) << 20,
			ProducedRecords: (100 + int64(i)) << 10,
			Produce:         Latencies{Count: 100, P50: time.Duration(i+1) * time.Millisecond, P99: time.Duration(i+5) * time.Millisecond},
			EndToEnd:        Latencies{Count: 100, P50: time.Duration(i+2) * time.Millisecond, P99: time.Duration(i+20) * time.Millisecond},
		}
	}
	return s
}

// tableRows parses a Markdown table into its header and rows of trimmed cells.
func tableRows(t *testing.T, table string) (head []string, rows map[string][]string, n int) {
	t.Helper()
	rows = make(map[string][]string)
	for line := range strings.SplitSeq(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		n++
		parts := strings.Split(strings.Trim(line, "|"), "|")
		cells := make([]string, len(parts))
		for i, p := range parts {
			cells[i] = strings.TrimSpace(p)
		}
		if head == nil {
			head = cells
			continue
		}
		if len(cells) != len(head) {
			t.Fatalf("row %q has %d cells, header %d", line, len(cells), len(head))
		}
		rows[cells[0]] = cells
	}
	return head, rows, n
}

func TestTable(t *testing.T) {
	table := Table(testResults(), "kfake", DefaultPrices)
	head, rows, n := tableRows(t, table)
	// Header, rule, three results, two ratio rows.
	if n != 7 {
		t.Fatalf("table has %d rows, want 7:\n%s", n, table)
	}
	col := make(map[string]int)
	for i, h := range head {
		col[h] = i
	}

	want := map[string]map[string]string{
		"local": {
			"MiB/s": "200", "records/s": "204800",
			"produce p50 (ms)": "1.50", "produce p99 (ms)": "4.00", "produce p99.9 (ms)": "12.0",
			"e2e p50 (ms)": "3.00", "e2e p99 (ms)": "8.00", "e2e p99.9 (ms)": "150",
			"server CPU (s/GiB)": "10.0", "peak RSS (MiB)": "512",
			"PUT/GiB": "256", "GET/GiB": "512", "PUT/s": "50.0", "GET/s": "100", "commits/s": "25.0",
			// 256 PUTs at $0.005/1000 plus 512 GETs at $0.0004/1000.
			"request $/GiB": "0.00148",
		},
		"kfake": {
			"MiB/s": "100", "records/s": "102400", "produce p50 (ms)": "0.50", "e2e p99.9 (ms)": "50.0",
			"server CPU (s/GiB)": "-", "peak RSS (MiB)": "-",
			"PUT/GiB": "-", "GET/GiB": "-", "PUT/s": "-", "GET/s": "-", "commits/s": "-", "request $/GiB": "-",
		},
		"minio (interrupted)": {
			"MiB/s": "-", "records/s": "-", "produce p50 (ms)": "-", "e2e p99.9 (ms)": "-",
			"server CPU (s/GiB)": "-", "peak RSS (MiB)": "-",
			"PUT/GiB": "-", "PUT/s": "-", "commits/s": "-", "request $/GiB": "-",
		},
		"local / kfake": {
			"MiB/s": "2.00x", "records/s": "-",
			"produce p50 (ms)": "3.00x", "produce p99 (ms)": "2.00x", "produce p99.9 (ms)": "2.00x",
			"e2e p50 (ms)": "3.00x", "e2e p99 (ms)": "2.00x", "e2e p99.9 (ms)": "3.00x",
			"server CPU (s/GiB)": "-", "PUT/GiB": "-", "request $/GiB": "-",
		},
		"minio / kfake": {
			"MiB/s": "-", "produce p50 (ms)": "-", "e2e p99.9 (ms)": "-",
		},
	}
	for target, cells := range want {
		row, ok := rows[target]
		if !ok {
			t.Errorf("no row %q in\n%s", target, table)
			continue
		}
		for h, v := range cells {
			i, ok := col[h]
			if !ok {
				t.Fatalf("no column %q in %q", h, head)
			}
			if row[i] != v {
				t.Errorf("%s, %s: got %q, want %q", target, h, row[i], v)
			}
		}
	}

	for _, s := range []string{"1 KiB records", "12 partitions", "acks=all", "linger 5ms", "idempotent",
		"unlimited rate", "warm-up 3s", "measured 10s", "$0.005 per 1000 PUTs", "$0.0004 per 1000 GETs"} {
		if !strings.Contains(table, s) {
			t.Errorf("table misses %q:\n%s", s, table)
		}
	}
}

func TestTableWithoutReference(t *testing.T) {
	for _, ref := range []string{"", "absent"} {
		_, rows, n := tableRows(t, Table(testResults(), ref, DefaultPrices))
		if n != 5 {
			t.Errorf("reference %q: %d rows, want 5 (no ratio rows)", ref, n)
		}
		if _, ok := rows["local / kfake"]; ok {
			t.Errorf("reference %q: ratio row without a reference", ref)
		}
	}
	if _, _, n := tableRows(t, Table(nil, "kfake", DefaultPrices)); n != 2 {
		t.Errorf("no results: %d rows, want header and rule only", n)
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{fmtNum(0), "0"},
		{fmtNum(1234.5), "1234"},
		{fmtNum(12.345), "12.3"},
		{fmtNum(1.2345), "1.23"},
		{fmtNum(0.0012345), "0.00123"},
		{fmtNum(3e9), "3000000000"},
		{fmtNum(math.NaN()), "-"},
		{fmtMillis(840 * time.Microsecond), "0.84"},
		{fmtMillis(12340 * time.Microsecond), "12.3"},
		{fmtMillis(1234 * time.Millisecond), "1234"},
		{fmtRatio(1.7349), "1.73x"},
		{fmtRatio(0.5), "0.50x"},
		{fmtRatio(123.4), "123x"},
		{fmtRatio(math.Inf(1)), "-"},
		{fmtPlain(0.0004), "0.0004"},
		{fmtBytes(100), "100 B"},
		{fmtBytes(4096), "4 KiB"},
		{tickLabel(5, -2), "0.05"},
		{tickLabel(2, 3), "2000"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestWriteReport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "run")
	files, err := WriteReport(dir, testResults(), "kfake", DefaultPrices, "Strata vs kfake")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ResultsFile, PlotFile, ReportFile} {
		p := filepath.Join(dir, name)
		found := false
		for _, f := range files {
			found = found || f == p
		}
		if !found {
			t.Errorf("files %q miss %s", files, p)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v, %v", p, fi, err)
		}
	}

	js, err := os.ReadFile(filepath.Join(dir, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	results, _ := doc["Results"].([]any)
	if len(results) != 3 {
		t.Fatalf("results.json has %d results, want 3", len(results))
	}
	for i, want := range []struct {
		target string
		mibps  float64
		puts   float64
	}{{"local", 200, 256}, {"kfake", 100, 0}, {"minio", 0, 0}} {
		r, _ := results[i].(map[string]any)
		if r["Target"] != want.target || r["MiBps"] != want.mibps || r["PutsPerGiB"] != want.puts {
			t.Errorf("result %d: Target %v, MiBps %v, PutsPerGiB %v; want %v", i, r["Target"], r["MiBps"], r["PutsPerGiB"], want)
		}
	}
	if s, _ := results[0].(map[string]any)["Series"].([]any); len(s) != 13 {
		t.Errorf("local series has %d seconds, want 13", len(s))
	}

	md, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	report := string(md)
	for _, s := range []string{
		"# Strata vs kfake",
		"strata local, file store",
		"| target | MiB/s |",
		"| local / kfake | 2.00x |",
		"**minio**: context canceled",
		"](bench.png)",
	} {
		if !strings.Contains(report, s) {
			t.Errorf("report.md misses %q:\n%s", s, report)
		}
	}
}

func TestWriteReportNothing(t *testing.T) {
	files, err := WriteReport(t.TempDir(), nil, "kfake", DefaultPrices, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Errorf("wrote %q, want three files", files)
	}
}
