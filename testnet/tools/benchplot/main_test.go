package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Rows as testnet/bench writes them, older 7-field rows and an incomplete run among them.
const sample = `scenario,tool,seconds,bound_seconds,ratio,complete,wall_seconds,cpu_s_per_gb,peak_rss_mib,origin_bytes_per_file
one-domain,uftp,30.000,20.000,1.500,6/6,35.000
one-domain,raftcast,24.000,20.000,1.200,6/6,24.000,12.50,60.2,
one-domain,raftcast,26.000,20.000,1.300,6/6,26.000,13.50,62.0,
one-domain,raftcast,99.000,20.000,4.950,5/6,99.000,40.00,70.0,
coop-ipcap20mbit,curl,100.000,100.000,1.000,1/1,100.000,,,1.000
coop-ipcap20mbit,raftcast-k4,28.000,25.000,1.120,1/1,28.000,20.00,55.0,1.000
coop-ipcap20mbit,raftcast-k8,0.000,12.500,0.000,0/1,600.000,,,0.500
`

func load(t *testing.T) *results {
	t.Helper()
	res := &results{data: map[key]*series{}}
	if err := res.read(strings.NewReader(sample)); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	load(t).writeTable(&b)
	table := b.String()
	for _, want := range []string{
		"| one-domain | uftp | 1 | 30.00 | 20.00 | 1.50 |  |  |  |  | 0 |",
		// Median of the two complete runs; the incomplete one is counted, not used.
		"| one-domain | raftcast | 2 | 25.00 | 20.00 | 1.25 | uftp 1.20× | 13.0 | 61 |  | 1 |",
		"| coop-ipcap20mbit | raftcast-k4 | 1 | 28.00 | 25.00 | 1.12 | curl 3.57× | 20.0 | 55 | 1.00 | 0 |",
		"| coop-ipcap20mbit | raftcast-k8 | 0 |  |  |  |  |  |  |  | 1 |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestBadRow(t *testing.T) {
	res := &results{data: map[key]*series{}}
	for _, row := range []string{"a,b,x,1,1,1/1\n", "a,b,1,1,1,1/1,1,cpu,1,1\n"} {
		if err := res.read(strings.NewReader(row)); err == nil {
			t.Errorf("row %q accepted", row)
		}
	}
}

func TestCharts(t *testing.T) {
	dir := t.TempDir()
	if err := load(t).writeCharts(dir); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []string{"one-domain", "coop-ipcap20mbit"} {
		f, err := os.Open(filepath.Join(dir, sc+".png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s.png: %v", sc, err)
		}
		if b := img.Bounds(); b.Dx() != pngWidth || b.Dy() < pngTop+2*(pngBarH+pngNoteH) {
			t.Errorf("%s.png is %v", sc, b)
		}
		svg, err := os.ReadFile(filepath.Join(dir, sc+".svg"))
		if err != nil || !strings.Contains(string(svg), "<svg") || strings.Count(string(svg), "<rect") < 3 {
			t.Errorf("%s.svg: %v\n%s", sc, err, svg)
		}
	}
}

func TestAscii(t *testing.T) {
	if got := ascii("curl 3.57× — ok"); got != "curl 3.57x ? ok" {
		t.Errorf("ascii: %q", got)
	}
}
