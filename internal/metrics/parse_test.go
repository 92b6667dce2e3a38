package metrics

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const exposition = `# HELP strata_objstore_requests_total Object-store requests.
# TYPE strata_objstore_requests_total counter
strata_objstore_requests_total{op="get"} 12
strata_objstore_requests_total{op="put"} 3
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.25
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 1e-05
go_gc_duration_seconds{quantile="0.5"} 2e-05
go_gc_duration_seconds_sum 0.001
go_gc_duration_seconds_count 40
# TYPE rpc_seconds histogram
rpc_seconds_bucket{method="commit",le="0.1"} 4
rpc_seconds_bucket{method="commit",le="+Inf"} 5
rpc_seconds_sum{method="commit"} 0.7
rpc_seconds_count{method="commit"} 5
odd_label{b="2",a="x\"y\\z"} 1 1700000000000
nan_gauge NaN
`

func TestParseText(t *testing.T) {
	s, err := ParseText(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"strata_objstore_requests_total", []string{"op", "put"}, 3},
		{"strata_objstore_requests_total", []string{"op", "get"}, 12},
		{"process_cpu_seconds_total", nil, 0.25},
		{"go_gc_duration_seconds", []string{"quantile", "0.5"}, 2e-05},
		{"go_gc_duration_seconds_count", nil, 40},
		{"rpc_seconds_bucket", []string{"le", "+Inf", "method", "commit"}, 5},
		{"rpc_seconds_bucket", []string{"method", "commit", "le", "0.1"}, 4},
		{"rpc_seconds_sum", []string{"method", "commit"}, 0.7},
		{"odd_label", []string{"b", "2", "a", `x"y\z`}, 1},
	} {
		if got, ok := s.Value(c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v, %v; want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if v, ok := s.Value("nan_gauge"); !ok || !math.IsNaN(v) {
		t.Errorf("nan_gauge = %v, %v", v, ok)
	}
	for _, miss := range [][]string{
		{"strata_objstore_requests_total"},                        // labels are part of the series
		{"strata_objstore_requests_total", "op", "delete"},        // not scraped
		{"strata_objstore_requests_total", "op"},                  // odd labels
		{"strata_objstore_requests_total", "op", "put", "x", "y"}, // extra label
	} {
		if v, ok := s.Value(miss[0], miss[1:]...); ok {
			t.Errorf("%v found: %v", miss, v)
		}
	}
	if _, ok := s[`odd_label{a="x\"y\\z",b="2"}`]; !ok || len(s) != 13 {
		t.Errorf("keys: %q", slices.Sorted(maps.Keys(s)))
	}
	if s, err := ParseText(strings.NewReader("")); err != nil || len(s) != 0 {
		t.Errorf("empty input: %v, %v", s, err)
	}
}

func TestParseTextRejects(t *testing.T) {
	for _, in := range []string{
		"garbage\n",
		"<html><body>502 Bad Gateway</body></html>\n",
		"metric{op=\"put\" 1\n",
		"metric 1 2 3\n",
		"metric one\n",
		"# TYPE m counter\n# TYPE m gauge\nm 1\n",
		"m{a=\"1\"} 1\nm{a=\"1\"} 2\n",     // a series twice
		"m{a=\"1\",a=\"2\"} 1\n",           // a label twice
		"# TYPE m counter\nm -1\nm{x=\"\n", // cut off
		"m{le-bad=\"1\"} 1\n",
		"m{\"utf8.name\"} 1\n",
		"\x00\xff\n",
		"# TYPE A counter\n{}", // panics in expfmt v0.71.0
	} {
		s, err := ParseText(strings.NewReader(in))
		var pe *ParseError
		if !errors.As(err, &pe) || s != nil {
			t.Errorf("ParseText(%q) = %v, %v; want a *ParseError and no samples", in, s, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "metrics: parse") {
			t.Errorf("ParseText(%q): %v", in, err)
		}
	}
}

// FuzzParseText: no input panics; what parses writes back (one line per series) to
// the same samples.
func FuzzParseText(f *testing.F) {
	for _, seed := range []string{
		exposition,
		"",
		"m 1\n",
		"m{a=\"\\n\"} +Inf\n",
		"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
		"# TYPE s summary\ns{quantile=\"0.9\"} 1\ns_sum 1\ns_count 1\n",
		"m{a=\"1\",a=\"1\"} 1\n",
		"garbage",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseText(strings.NewReader(in))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || s != nil {
				t.Fatalf("error %T %v with samples %v", err, err, s)
			}
			return
		}
		var b strings.Builder
		for key, v := range s {
			fmt.Fprintf(&b, "%s %s\n", key, strconv.FormatFloat(v, 'g', -1, 64))
		}
		again, err := ParseText(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("written back, the samples do not parse: %v\n%s", err, b.String())
		}
		if len(again) != len(s) {
			t.Fatalf("%d samples written back as %d\n%s", len(s), len(again), b.String())
		}
		for key, v := range s {
			w, ok := again[key]
			if !ok || w != v && !(math.IsNaN(v) && math.IsNaN(w)) {
				t.Fatalf("%s = %v, written back %v (%v)", key, v, w, ok)
			}
		}
	})
}
