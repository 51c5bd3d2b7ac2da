// Command benchplot turns testnet/bench CSV rows into a comparison table (Markdown, on
// stdout) and one PNG and one SVG bar chart per scenario (time as a ratio to the bound,
// median over runs, the bound drawn at 1.0).
//
//	benchplot [-out DIR] FILE.csv...
//
// Rows are
//
//	scenario,tool,seconds,bound_seconds,ratio,complete[,wall_seconds[,cpu_s_per_gb,peak_rss_mib,origin_bytes_per_file]]
//
// A header row is skipped; rows with an incomplete delivery (complete k/n with k < n) are
// left out of the figures and counted in the table; empty optional fields are left out of
// their medians. Tools whose name starts with "raftcast" are raftcast's rows: the table gives
// their speed-up over every other tool of the same scenario (that tool's median seconds
// divided by this one's), and the charts draw them in another colour.
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

type key struct{ scenario, tool string }

// series is every complete run of one tool in one scenario.
type series struct {
	ratios, seconds []float64
	cpu, rss        []float64 // CPU-seconds per delivered GB, peak RSS per peer (MiB)
	origin          []float64 // bytes the HTTP origin sent / file size
	bound           float64
	incomplete      int
}

// results holds the series in the order their first row came.
type results struct {
	data  map[key]*series
	order []key
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func isRaftcast(tool string) bool { return strings.HasPrefix(tool, "raftcast") }

func main() {
	out := flag.String("out", "", "directory for one PNG and one SVG chart per scenario (none if empty)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: benchplot [-out DIR] FILE.csv...")
		os.Exit(2)
	}
	res := &results{data: map[key]*series{}}
	for _, name := range flag.Args() {
		f, err := os.Open(name)
		if err == nil {
			err = res.read(f)
			f.Close()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchplot: %s: %v\n", name, err)
			os.Exit(1)
		}
	}
	res.writeTable(os.Stdout)
	if *out == "" {
		return
	}
	if err := res.writeCharts(*out); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

// optional parses an optional numeric field: ok is false when it is absent or empty.
func optional(rec []string, i int) (v float64, ok bool, err error) {
	if i >= len(rec) || strings.TrimSpace(rec[i]) == "" {
		return 0, false, nil
	}
	v, err = strconv.ParseFloat(strings.TrimSpace(rec[i]), 64)
	return v, err == nil, err
}

func (res *results) read(r io.Reader) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if len(rec) < 6 || rec[0] == "scenario" {
			continue
		}
		bad := fmt.Errorf("bad row %q", strings.Join(rec, ","))
		secs, err1 := strconv.ParseFloat(rec[2], 64)
		bound, err2 := strconv.ParseFloat(rec[3], 64)
		ratio, err3 := strconv.ParseFloat(rec[4], 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return bad
		}
		k := key{rec[0], rec[1]}
		s := res.data[k]
		if s == nil {
			s = &series{}
			res.data[k] = s
			res.order = append(res.order, k)
		}
		if got, total, ok := strings.Cut(rec[5], "/"); ok && got != total {
			s.incomplete++
			continue
		}
		s.ratios = append(s.ratios, ratio)
		s.seconds = append(s.seconds, secs)
		s.bound = bound
		for i, dst := range []*[]float64{&s.cpu, &s.rss, &s.origin} {
			v, ok, err := optional(rec, 7+i)
			if err != nil {
				return bad
			}
			if ok {
				*dst = append(*dst, v)
			}
		}
	}
}

// scenarios lists the scenarios in order of their first row.
func (res *results) scenarios() []string {
	var out []string
	for _, k := range res.order {
		if !slices.Contains(out, k.scenario) {
			out = append(out, k.scenario)
		}
	}
	return out
}

// keysOf lists one scenario's tools in order of their first row.
func (res *results) keysOf(scenario string) []key {
	var keys []key
	for _, k := range res.order {
		if k.scenario == scenario {
			keys = append(keys, k)
		}
	}
	return keys
}

// speedups says, for a raftcast row, how much faster it was than each other tool of its
// scenario (their median seconds / its median seconds), e.g. "curl 3.91×, aria2c-x8 3.87×".
func (res *results) speedups(k key) string {
	s := res.data[k]
	if !isRaftcast(k.tool) || len(s.seconds) == 0 {
		return ""
	}
	var parts []string
	for _, o := range res.keysOf(k.scenario) {
		other := res.data[o]
		if isRaftcast(o.tool) || len(other.seconds) == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.2f×", o.tool, median(other.seconds)/median(s.seconds)))
	}
	return strings.Join(parts, ", ")
}

func fmtMedian(v []float64, format string) string {
	if len(v) == 0 {
		return ""
	}
	return fmt.Sprintf(format, median(v))
}

func (res *results) writeTable(w io.Writer) {
	fmt.Fprintln(w, "| scenario | tool | runs | median seconds | bound seconds | time / bound | raftcast's speed-up (their time / its time) | CPU-s per GB | peak RSS per peer (MiB) | origin sent / file | incomplete runs |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, k := range res.order {
		s := res.data[k]
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %d |\n",
			k.scenario, k.tool, len(s.ratios), fmtMedian(s.seconds, "%.2f"), fmtBound(s),
			fmtMedian(s.ratios, "%.2f"), res.speedups(k), fmtMedian(s.cpu, "%.1f"),
			fmtMedian(s.rss, "%.0f"), fmtMedian(s.origin, "%.2f"), s.incomplete)
	}
}

func fmtBound(s *series) string {
	if len(s.ratios) == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", s.bound)
}

// writeCharts writes DIR/SCENARIO.png and DIR/SCENARIO.svg for every scenario.
func (res *results) writeCharts(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, sc := range res.scenarios() {
		c := res.chart(sc)
		f, err := os.Create(filepath.Join(dir, sc+".png"))
		if err != nil {
			return err
		}
		err = c.png(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, sc+".svg"), []byte(c.svg()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// chart is what one scenario's plot shows: a bar per tool, time / bound (median).
type chart struct {
	title string
	bars  []bar
}

type bar struct {
	tool     string
	ratio    float64
	label    string // "1.23 (26.4 s)" or "incomplete"
	note     string // CPU, RSS, origin bytes, speed-ups: a smaller second line
	raftcast bool
}

func (res *results) chart(scenario string) chart {
	c := chart{title: scenario + ": time / bound (median; 1.0 = bound)"}
	for _, k := range res.keysOf(scenario) {
		s := res.data[k]
		b := bar{tool: k.tool, raftcast: isRaftcast(k.tool)}
		if len(s.ratios) == 0 {
			b.label = fmt.Sprintf("no complete run (%d incomplete)", s.incomplete)
		} else {
			b.ratio = median(s.ratios)
			b.label = fmt.Sprintf("%.2f (%.1f s)", b.ratio, median(s.seconds))
			if s.incomplete > 0 {
				b.label += fmt.Sprintf(", %d incomplete", s.incomplete)
			}
		}
		var notes []string
		if len(s.cpu) > 0 {
			notes = append(notes, fmt.Sprintf("CPU %.1f s/GB", median(s.cpu)))
		}
		if len(s.rss) > 0 {
			notes = append(notes, fmt.Sprintf("RSS %.0f MiB/peer", median(s.rss)))
		}
		if len(s.origin) > 0 {
			notes = append(notes, fmt.Sprintf("origin sent %.2f×F", median(s.origin)))
		}
		if sp := res.speedups(k); sp != "" {
			notes = append(notes, "speed-up: "+sp)
		}
		b.note = strings.Join(notes, "; ")
		c.bars = append(c.bars, b)
	}
	return c
}

// maxRatio is the largest bar, at least 1 (the bound line) so the axis always shows it.
func (c chart) maxRatio() float64 {
	m := 1.0
	for _, b := range c.bars {
		m = max(m, b.ratio)
	}
	return m
}

// tickStep chooses an axis step giving at most about 8 ticks.
func tickStep(maxRatio float64) float64 {
	for _, s := range []float64{0.25, 0.5, 1, 2, 5, 10, 20, 50, 100} {
		if maxRatio/s <= 8 {
			return s
		}
	}
	return 200
}
