// Command benchplot turns testnet/bench CSV rows into a comparison table (Markdown, on
// stdout) and one SVG bar chart per scenario (time as a ratio to the bound, median over
// runs, with the bound drawn at 1.0).
//
//	benchplot [-out DIR] FILE.csv...
//
// Rows are scenario,tool,seconds,bound_seconds,ratio,complete[,wall_seconds]; a header
// row and rows with an incomplete delivery (complete k/n with k < n) are skipped, the
// latter counted in the table.
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

type key struct{ scenario, tool string }

type series struct {
	ratios, seconds []float64
	bound           float64
	incomplete      int
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

func main() {
	out := flag.String("out", "", "directory for one SVG per scenario (none if empty)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: benchplot [-out DIR] FILE.csv...")
		os.Exit(2)
	}
	data := map[key]*series{}
	var order []key
	for _, name := range flag.Args() {
		if err := read(name, data, &order); err != nil {
			fmt.Fprintf(os.Stderr, "benchplot: %s: %v\n", name, err)
			os.Exit(1)
		}
	}
	writeTable(os.Stdout, data, order)
	if *out == "" {
		return
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
	var scenarios []string
	for _, k := range order {
		if !slices.Contains(scenarios, k.scenario) {
			scenarios = append(scenarios, k.scenario)
		}
	}
	for _, sc := range scenarios {
		var keys []key
		for _, k := range order {
			if k.scenario == sc {
				keys = append(keys, k)
			}
		}
		path := filepath.Join(*out, sc+".svg")
		if err := os.WriteFile(path, []byte(svg(sc, keys, data)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "benchplot:", err)
			os.Exit(1)
		}
	}
}

func read(name string, data map[key]*series, order *[]key) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if len(rec) < 6 || rec[0] == "scenario" {
			continue
		}
		secs, err1 := strconv.ParseFloat(rec[2], 64)
		bound, err2 := strconv.ParseFloat(rec[3], 64)
		ratio, err3 := strconv.ParseFloat(rec[4], 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return fmt.Errorf("bad row %q", strings.Join(rec, ","))
		}
		k := key{rec[0], rec[1]}
		s := data[k]
		if s == nil {
			s = &series{}
			data[k] = s
			*order = append(*order, k)
		}
		if got, total, ok := strings.Cut(rec[5], "/"); ok && got != total {
			s.incomplete++
			continue
		}
		s.ratios = append(s.ratios, ratio)
		s.seconds = append(s.seconds, secs)
		s.bound = bound
	}
}

func writeTable(w io.Writer, data map[key]*series, order []key) {
	fmt.Fprintln(w, "| scenario | tool | runs | median seconds | bound seconds | median time / bound | incomplete runs |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, k := range order {
		s := data[k]
		fmt.Fprintf(w, "| %s | %s | %d | %.2f | %.2f | %.2f | %d |\n",
			k.scenario, k.tool, len(s.ratios), median(s.seconds), s.bound, median(s.ratios), s.incomplete)
	}
}

// svg draws horizontal bars, one per tool, scaled so the longest ratio fits.
func svg(scenario string, keys []key, data map[key]*series) string {
	const (
		left, right, top, barH, gap = 150.0, 70.0, 40.0, 22.0, 10.0
		width                       = 640.0
	)
	maxRatio := 1.0
	for _, k := range keys {
		maxRatio = max(maxRatio, median(data[k].ratios))
	}
	scale := (width - left - right) / maxRatio
	height := top + float64(len(keys))*(barH+gap) + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="13">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15">%s: time / bound (median; 1.0 = bound)</text>`+"\n", html.EscapeString(scenario))
	for i, k := range keys {
		s := data[k]
		y := top + float64(i)*(barH+gap)
		r := median(s.ratios)
		color := "#4a7bd0"
		if k.tool == "raftcast" {
			color = "#d0673a"
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%s</text>`+"\n", left-8, y+barH-6, html.EscapeString(k.tool))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.1f" height="%.0f" fill="%s"/>`+"\n", left, y, r*scale, barH, color)
		label := fmt.Sprintf("%.2f", r)
		if s.incomplete > 0 {
			label += fmt.Sprintf(" (%d incomplete)", s.incomplete)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f">%s</text>`+"\n", left+r*scale+5, y+barH-6, label)
	}
	x1 := left + scale
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="black" stroke-dasharray="4 3"/>`+"\n", x1, top-6, x1, height-20)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">bound</text>`+"\n", x1, height-6)
	b.WriteString("</svg>\n")
	return b.String()
}
