package metrics

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Samples are the values of one scrape, keyed by series: the metric name, then its
// labels in braces sorted by name, values quoted as in the exposition format:
//
//	process_cpu_seconds_total
//	strata_objstore_requests_total{op="put"}
//
// Summaries and histograms are flattened as the text format writes them:
// name{quantile="0.5"}, name_bucket{le="0.1"}, name_sum, name_count.
type Samples map[string]float64

// ParseError is a scrape that is not the Prometheus text format, or is ambiguous.
type ParseError struct {
	Line int // 1-based; 0 when the problem is not on one line
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("metrics: parse line %d: %s", e.Line, e.Msg)
	}
	return "metrics: parse: " + e.Msg
}

// ParseText reads the Prometheus text exposition format (what /metrics answers a
// plain GET with). It is strict: anything but well-formed text, a series given twice
// or a label given twice in one series is a *ParseError, and no Samples.
func ParseText(r io.Reader) (Samples, error) {
	families, err := textToFamilies(r)
	if err != nil {
		return nil, err
	}
	s := Samples{}
	var perr *ParseError
	add := func(name string, labels []*dto.LabelPair, extra string, v float64) {
		key, err := seriesKey(name, labels, extra)
		if err == nil {
			if _, dup := s[key]; dup {
				err = fmt.Errorf("series %s given twice", key)
			}
		}
		if err != nil {
			if perr == nil {
				perr = &ParseError{Msg: err.Error()}
			}
			return
		}
		s[key] = v
	}
	for _, name := range slices.Sorted(maps.Keys(families)) { // the same input, the same error
		mf := families[name]
		for _, m := range mf.GetMetric() {
			l := m.GetLabel()
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add(name, l, "", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, l, "", m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add(name, l, "", m.GetUntyped().GetValue())
			case dto.MetricType_SUMMARY:
				sm := m.GetSummary()
				for _, q := range sm.GetQuantile() {
					add(name, l, `quantile="`+formatFloat(q.GetQuantile())+`"`, q.GetValue())
				}
				add(name+"_sum", l, "", sm.GetSampleSum())
				add(name+"_count", l, "", float64(sm.GetSampleCount()))
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					n := float64(b.GetCumulativeCount())
					if b.CumulativeCountFloat != nil {
						n = b.GetCumulativeCountFloat()
					}
					add(name+"_bucket", l, `le="`+formatFloat(b.GetUpperBound())+`"`, n)
				}
				add(name+"_sum", l, "", h.GetSampleSum())
				n := float64(h.GetSampleCount())
				if h.SampleCountFloat != nil {
					n = h.GetSampleCountFloat()
				}
				add(name+"_count", l, "", n)
			default:
				if perr == nil {
					perr = &ParseError{Msg: fmt.Sprintf("%s: metric type %v not supported", name, mf.GetType())}
				}
			}
		}
	}
	if perr != nil {
		return nil, perr
	}
	return s, nil
}

// textToFamilies runs expfmt's parser, which panics on some malformed input (in
// prometheus/common v0.71.0, "# TYPE a counter\n{}" dereferences a nil metric): a
// panic is turned into a *ParseError like any other garbage.
func textToFamilies(r io.Reader) (families map[string]*dto.MetricFamily, err error) {
	defer func() {
		if v := recover(); v != nil {
			families, err = nil, &ParseError{Msg: fmt.Sprintf("malformed input (the text parser failed: %v)", v)}
		}
	}()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err = p.TextToMetricFamilies(r)
	var pe expfmt.ParseError
	switch {
	case errors.As(err, &pe):
		return nil, &ParseError{Line: pe.Line, Msg: pe.Msg}
	case err != nil:
		return nil, &ParseError{Msg: err.Error()}
	}
	return families, nil
}

// Value is the sample of the series name with the given labels (name, value pairs,
// in any order); false if the scrape did not have it or labels has an odd length.
func (s Samples) Value(name string, labels ...string) (float64, bool) {
	if len(labels)%2 != 0 {
		return 0, false
	}
	pairs := make([]*dto.LabelPair, 0, len(labels)/2)
	for i := 0; i < len(labels); i += 2 {
		pairs = append(pairs, &dto.LabelPair{Name: &labels[i], Value: &labels[i+1]})
	}
	key, err := seriesKey(name, pairs, "")
	if err != nil {
		return 0, false
	}
	v, ok := s[key]
	return v, ok
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// seriesKey renders name{labels} with the labels sorted by name; extra is one more
// label, already rendered (a quantile or le). Two labels of one name are an error.
func seriesKey(name string, labels []*dto.LabelPair, extra string) (string, error) {
	type label struct{ name, text string }
	ls := make([]label, 0, len(labels)+1)
	for _, lp := range labels {
		ls = append(ls, label{lp.GetName(), lp.GetName() + `="` + labelEscaper.Replace(lp.GetValue()) + `"`})
	}
	if extra != "" {
		n, _, _ := strings.Cut(extra, "=")
		ls = append(ls, label{n, extra})
	}
	if len(ls) == 0 {
		return name, nil
	}
	slices.SortFunc(ls, func(a, b label) int { return strings.Compare(a.name, b.name) })
	var b strings.Builder
	b.WriteString(name)
	for i, l := range ls {
		if i > 0 && l.name == ls[i-1].name {
			return "", fmt.Errorf("series %s has label %s twice", name, l.name)
		}
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(l.text)
	}
	b.WriteByte('}')
	return b.String(), nil
}

// formatFloat writes a quantile or bucket bound as client_golang does.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
