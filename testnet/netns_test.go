//go:build linux

package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type check struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Expected *bool  `json:"expected"`
	Sent     int    `json:"sent"`
	Packets  int    `json:"packets"`
}

type summary struct {
	Topology string  `json:"topology"`
	Scenario string  `json:"scenario"`
	RunID    string  `json:"run_id"`
	OK       bool    `json:"ok"`
	Exit     int     `json:"exit"`
	TimedOut bool    `json:"timed_out"`
	Clean    bool    `json:"clean"`
	Failed   int     `json:"failed"`
	Checks   []check `json:"checks"`
}

func (s summary) check(t *testing.T, name string) check {
	t.Helper()
	for _, c := range s.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in the summary", name)
	return check{}
}

// needRoot skips unless the test can build namespaces; it returns a directory with a
// prebuilt rcnet for RC_TOOLS.
func needRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testnet needs root (network namespaces, bridges, tc, nftables): run `sudo go test ./testnet/`")
	}
	for _, tool := range []string{"ip", "tc", "nft", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("testnet needs %s (apt-get install iproute2 nftables)", tool)
		}
	}
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "rcnet"), "./tools/rcnet").CombinedOutput()
	if err != nil {
		t.Fatalf("building rcnet: %v\n%s", err, out)
	}
	return dir
}

// netState is what must be the same before and after a run: the root namespace's links
// (names only; counters and flags may change). Namespaces are checked by run ID instead
// (leftNamespaces): other engineers' testnet runs may come and go at the same time.
func netState(t *testing.T) string {
	t.Helper()
	links, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip link: %v", err)
	}
	var names []string
	for l := range strings.Lines(string(links)) {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return "links: " + strings.Join(names, " ")
}

// leftNamespaces lists the namespaces of run id that `ip netns list` still shows.
func leftNamespaces(t *testing.T, id string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var left []string
	for l := range strings.Lines(string(out)) {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], id+"-") {
			left = append(left, f[0])
		}
	}
	return left
}

// runTestnet runs testnet/run with args; signal, if non-nil, is called once the run's
// namespaces exist, with the process, to interrupt it.
func runTestnet(t *testing.T, tools string, id string, signal func(*os.Process), args ...string) (summary, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	base := t.TempDir()
	cmd := exec.CommandContext(ctx, "./run", append(args, "--id", id)...)
	cmd.Env = append(os.Environ(), "RC_BASE="+base, "RC_TOOLS="+tools)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if signal != nil {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if m, _ := filepath.Glob("/run/netns/" + id + "-h*"); len(m) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run never created its namespaces\n%s", stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		signal(cmd.Process)
	}
	err := cmd.Wait()
	logs := stderr.String()
	s := readSummary(t, id, args, err, stdout.Bytes(), logs)
	return s, logs
}

// readSummary decodes the JSON summary a run of args (id) printed on stdout, failing the
// test without one, and checks that it agrees with the run's exit error and that the run
// left no namespace behind.
func readSummary(t *testing.T, id string, args []string, err error, stdout []byte, logs string) summary {
	t.Helper()
	var s summary
	if jerr := json.Unmarshal(stdout, &s); jerr != nil {
		t.Fatalf("run %v: %v; no JSON summary (%v) in %q\nstderr:\n%s", args, err, jerr, stdout, logs)
	}
	if s.OK != (err == nil) {
		t.Errorf("summary ok=%v but exit error %v", s.OK, err)
	}
	if m := leftNamespaces(t, id); len(m) > 0 || !s.Clean {
		t.Errorf("namespaces left behind: %v (clean=%v)", m, s.Clean)
	}
	return s
}

func assertAllOK(t *testing.T, s summary, logs string) {
	t.Helper()
	if !s.OK || s.Failed != 0 || s.Exit != 0 {
		t.Errorf("run not ok: ok=%v exit=%d failed=%d\nstderr:\n%s", s.OK, s.Exit, s.Failed, logs)
	}
	for _, c := range s.Checks {
		if !c.OK {
			t.Errorf("check %s failed: %+v", c.Name, c)
		}
	}
}

func TestLanNetCheck(t *testing.T) {
	tools := needRoot(t)
	before := netState(t)
	s, logs := runTestnet(t, tools, fmt.Sprintf("rcgl%d", os.Getpid()), nil, "lan", "--hosts", "3", "--timeout", "180")
	assertAllOK(t, s, logs)
	// h1 pings h2 in both families; h1's multicast reaches h2 and h3 in both families.
	if want := 2 + 4; len(s.Checks) != want {
		t.Errorf("%d checks, want %d: %+v", len(s.Checks), want, s.Checks)
	}
	for _, name := range []string{"mcast4 h1(lan)->h3(lan)", "mcast6 h1(lan)->h2(lan)"} {
		if c := s.check(t, name); c.Packets < c.Sent*9/10 || c.Sent == 0 {
			t.Errorf("%s: %d of %d datagrams", name, c.Packets, c.Sent)
		}
	}
	if after := netState(t); after != before {
		t.Errorf("network state changed:\nbefore %s\nafter  %s", before, after)
	}
}

func TestPaperNetCheck(t *testing.T) {
	tools := needRoot(t)
	if _, err := exec.LookPath("smcrouted"); err != nil {
		t.Skip("the paper topology's multicast routing needs smcrouted (apt-get install smcroute)")
	}
	before := netState(t)
	s, logs := runTestnet(t, tools, fmt.Sprintf("rcgp%d", os.Getpid()), nil, "paper", "--hosts", "2", "--scenario", "net-check", "--timeout", "180")
	assertAllOK(t, s, logs)
	// Unicast crosses the router both ways, in both families.
	for _, name := range []string{"ping4 rv->h21", "ping6 rv->h31", "ping4 h31->h21", "ping6 h21->rv"} {
		if c := s.check(t, name); !c.OK {
			t.Errorf("%s failed", name)
		}
	}
	// Segments 2 and 3 are one multicast domain, segment 1 is not.
	for name, reach := range map[string]bool{
		"mcast4 h21(s2)->h22(s2)": true,
		"mcast4 h21(s2)->h31(s3)": true,
		"mcast6 h21(s2)->h32(s3)": true,
		"mcast6 h31(s3)->h21(s2)": true,
		"mcast4 h21(s2)->h11(s1)": false,
		"mcast6 h21(s2)->rv(s1)":  false,
		"mcast4 h31(s3)->h12(s1)": false,
		"mcast6 rv(s1)->h11(s1)":  true,
		"mcast4 rv(s1)->h22(s2)":  false,
	} {
		c := s.check(t, name)
		if c.Expected == nil || *c.Expected != reach {
			t.Errorf("%s: expected=%v, want %v", name, c.Expected, reach)
		}
		if reach && c.Packets < c.Sent*9/10 || !reach && c.Packets != 0 || c.Sent == 0 {
			t.Errorf("%s: %d of %d datagrams (reach=%v)", name, c.Packets, c.Sent, reach)
		}
	}
	if after := netState(t); after != before {
		t.Errorf("network state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// TestWanNetCheck: two domains behind a core router with shaped, lossy links (htb and
// nftables on every link): unicast crosses, multicast stays inside each domain.
func TestWanNetCheck(t *testing.T) {
	tools := needRoot(t)
	before := netState(t)
	s, logs := runTestnet(t, tools, fmt.Sprintf("rcgw%d", os.Getpid()), nil, "wan", "--domains", "2",
		"--hosts", "2", "--rate", "50mbit", "--loss", "1", "--wan-rate", "10mbit", "--wan-loss", "1",
		"--timeout", "180")
	assertAllOK(t, s, logs)
	for _, name := range []string{"ping4 h11->h21", "ping6 h21->h11"} {
		s.check(t, name)
	}
	for name, reach := range map[string]bool{
		"mcast4 h11(d1)->h12(d1)": true,
		"mcast6 h21(d2)->h22(d2)": true,
		"mcast4 h11(d1)->h21(d2)": false,
		"mcast6 h21(d2)->h12(d1)": false,
	} {
		c := s.check(t, name)
		if c.Expected == nil || *c.Expected != reach || reach != (c.Packets > 0) {
			t.Errorf("%s: expected=%v packets=%d, want reach=%v", name, c.Expected, c.Packets, reach)
		}
	}
	if after := netState(t); after != before {
		t.Errorf("network state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// TestTeardownOnTimeoutAndSignal: a run cut short by its --timeout or by SIGINT still
// removes everything and still prints a summary saying it failed.
func TestTeardownOnTimeoutAndSignal(t *testing.T) {
	tools := needRoot(t)
	before := netState(t)
	// A long paced transfer that the 5 s bound cuts.
	s, logs := runTestnet(t, tools, fmt.Sprintf("rcgt%d", os.Getpid()), nil, "lan", "--hosts", "2",
		"--scenario", "mcast-goodput", "--bytes", "1GiB", "--send-rate", "10mbit", "--timeout", "5")
	if s.OK || !s.TimedOut || s.Exit == 0 {
		t.Errorf("timed-out run: ok=%v timed_out=%v exit=%d\n%s", s.OK, s.TimedOut, s.Exit, logs)
	}
	s, logs = runTestnet(t, tools, fmt.Sprintf("rcgi%d", os.Getpid()), func(p *os.Process) {
		time.Sleep(time.Second)
		_ = p.Signal(syscall.SIGINT)
	}, "lan", "--hosts", "2", "--scenario", "mcast-goodput", "--bytes", "1GiB", "--send-rate", "10mbit", "--timeout", "120")
	if s.OK || s.TimedOut || s.Exit == 0 {
		t.Errorf("interrupted run: ok=%v timed_out=%v exit=%d\n%s", s.OK, s.TimedOut, s.Exit, logs)
	}
	if after := netState(t); after != before {
		t.Errorf("network state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// TestTeardownAfterKill: a run killed with SIGKILL leaves its namespaces and processes;
// `run --teardown ID` removes them from the state file.
func TestTeardownAfterKill(t *testing.T) {
	tools := needRoot(t)
	before := netState(t)
	id := fmt.Sprintf("rcgk%d", os.Getpid())
	base := t.TempDir()
	env := append(os.Environ(), "RC_BASE="+base, "RC_TOOLS="+tools)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "./run", "lan", "--hosts", "2", "--scenario", "mcast-goodput",
		"--bytes", "1GiB", "--send-rate", "10mbit", "--timeout", "120", "--id", id)
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once the sender runs (its log exists), so there are processes to find.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(base, id, "logs", "h1-goodput-send.log")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("the run never started its sender")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if m := leftNamespaces(t, id); len(m) == 0 {
		t.Fatal("SIGKILL left nothing behind: the test proves nothing")
	}
	td := exec.CommandContext(ctx, "./run", "--teardown", id)
	td.Env = env
	if out, err := td.CombinedOutput(); err != nil {
		t.Fatalf("run --teardown: %v\n%s", err, out)
	}
	if m := leftNamespaces(t, id); len(m) > 0 {
		t.Errorf("namespaces left behind: %v", m)
	}
	if after := netState(t); after != before {
		t.Errorf("network state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// TestRaftcastSmoke runs real raftcast daemons in the paper topology: a rendezvous in
// segment 1 and a node in every other host, each bootstrapping across the router. It
// uses RAFTCAST_BIN when set, else builds ./cmd/raftcast.
func TestRaftcastSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the raftcast daemons run (about 30 s)")
	}
	tools := needRoot(t)
	if _, err := exec.LookPath("smcrouted"); err != nil {
		t.Skip("the paper topology's multicast routing needs smcrouted (apt-get install smcroute)")
	}
	bin := os.Getenv("RAFTCAST_BIN")
	if bin == "" {
		bin = filepath.Join(tools, "raftcast")
		out, err := exec.Command("go", "build", "-o", bin, "../cmd/raftcast").CombinedOutput()
		if err != nil {
			t.Fatalf("building raftcast: %v\n%s", err, out)
		}
	}
	t.Setenv("RAFTCAST_BIN", bin)
	before := netState(t)
	s, logs := runTestnet(t, tools, fmt.Sprintf("rcgs%d", os.Getpid()), nil, "paper", "--hosts", "1",
		"--scenario", "raftcast-smoke", "--timeout", "180")
	assertAllOK(t, s, logs)
	for _, h := range []string{"h11", "h21", "h31"} {
		s.check(t, "ready "+h)
		s.check(t, "peers "+h)
	}
	if after := netState(t); after != before {
		t.Errorf("network state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// The real-hosts mode (testnet/remote over ssh) is tested by TestRemoteDistribution
// (scenarios_test.go), whose remote run begins with the smoke checks.

// TestBenchSmoke runs testnet/bench on a tiny file with one case of each kind: UFTP and
// aria2's BitTorrent in one domain, raftcast over streams only, the cooperative download
// (curl, aria2c -x8 and a raftcast group of 2) and two members wanting the same URL. It
// checks that every row reports a complete delivery and a ratio at or above 1 (nothing beats
// the bound), that raftcast's rows carry CPU and peak RSS, that the origin's bytes are
// counted (once for a raftcast group, once per client for aria2c), and that the table, the
// PNG charts and the download profile are written. It skips when the reference tools are not installed.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the bench run (about 60 s)")
	}
	tools := needRoot(t)
	for _, tool := range []string{"uftp", "uftpd", "nginx", "curl", "aria2c", "opentracker", "mktorrent"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("bench needs %s (apt-get install uftp aria2 opentracker mktorrent nginx-light curl)", tool)
		}
	}
	bin := raftcastBin(t, tools)
	before := netState(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	id := fmt.Sprintf("rcgb%d", os.Getpid())
	csv := filepath.Join(t.TempDir(), "bench.csv")
	cmd := exec.CommandContext(ctx, "./bench", "--cases", "uftp-1domain,bt-1domain,raftcast-streams,coop,coop-same",
		"--size", "2MiB", "--recv-a", "2", "--recv-b", "1", "--coop-k", "2", "--coop-want", "2",
		"--timeout", "200", "--case-timeout", "60", "--csv", csv)
	base := t.TempDir()
	cmd.Env = append(os.Environ(), "RC_BASE="+base, "RC_TOOLS="+tools, "RC_ID="+id, "RAFTCAST_BIN="+bin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 30 * time.Second
	if _, err := cmd.Output(); err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(csv)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for r := range strings.Lines(strings.TrimSpace(string(data))) {
		f := strings.Split(strings.TrimSpace(r), ",")
		if len(f) != 10 {
			t.Fatalf("row %q: %d fields, want 10", r, len(f))
		}
		rows[f[0]+" "+f[1]] = f
		var ratio float64
		if _, err := fmt.Sscan(f[4], &ratio); err != nil || ratio < 1 {
			t.Errorf("row %q: ratio %q", r, f[4])
		}
		if k, n, _ := strings.Cut(f[5], "/"); k != n || k == "0" {
			t.Errorf("row %q: incomplete delivery %s", r, f[5])
		}
	}
	num := func(row, field string, i int) float64 {
		t.Helper()
		f, ok := rows[row]
		if !ok {
			t.Fatalf("no row %q in\n%s", row, data)
		}
		var v float64
		if _, err := fmt.Sscan(f[i], &v); err != nil {
			t.Errorf("row %q: %s %q", row, field, f[i])
		}
		return v
	}
	for _, r := range []string{"one-domain raftcast-streams", "coop-ipcap20mbit raftcast-k2", "same-url-2want-ipcap20mbit raftcast"} {
		if cpu, rss := num(r, "cpu_s_per_gb", 7), num(r, "peak_rss_mib", 8); cpu <= 0 || rss <= 0 {
			t.Errorf("row %q: cpu %v s/GB, peak RSS %v MiB", r, cpu, rss)
		}
	}
	if len(rows) != 8 {
		t.Errorf("%d rows, want 8:\n%s", len(rows), data)
	}
	// The origin's bytes: once for one requester; for two members wanting the URL at once,
	// at most once each (the goal, about once, is measured at full size by the bench: a
	// 2 MiB file is one slice, and a start racing the other's plan may fetch it again).
	for r, lim := range map[string][2]float64{
		"coop-ipcap20mbit curl":                     {0.99, 1.01},
		"coop-ipcap20mbit raftcast-k2":              {0.99, 1.1},
		"same-url-2want-ipcap20mbit raftcast":       {0.99, 2.05},
		"same-url-2want-ipcap20mbit aria2c-x8-each": {1.9, 4},
	} {
		if o := num(r, "origin_bytes_per_file", 9); o < lim[0] || o > lim[1] {
			t.Errorf("row %q: the origin sent %.3f x the file, want %v..%v", r, o, lim[0], lim[1])
		}
	}
	run := filepath.Join(base, id)
	table, err := os.ReadFile(filepath.Join(run, "bench.md"))
	if err != nil || !strings.Contains(string(table), "| one-domain | uftp | 1 |") ||
		!strings.Contains(string(table), "| coop-ipcap20mbit | raftcast-k2 | 1 |") {
		t.Errorf("comparison table missing or wrong (%v):\n%s", err, table)
	}
	for _, sc := range []string{"one-domain", "coop-ipcap20mbit", "same-url-2want-ipcap20mbit"} {
		f, err := os.Open(filepath.Join(run, "plots", sc+".png"))
		if err != nil {
			t.Errorf("chart: %v", err)
			continue
		}
		if _, err := png.Decode(f); err != nil {
			t.Errorf("%s.png: %v", sc, err)
		}
		f.Close()
	}
	if prof, err := os.ReadFile(filepath.Join(run, "profile-coop-k2.txt")); err != nil ||
		!strings.Contains(string(prof), "\nog ") || !strings.Contains(string(prof), "bytes_by_peer") {
		t.Errorf("download profile missing or wrong (%v):\n%s", err, prof)
	}
	if m := leftNamespaces(t, id); len(m) > 0 {
		t.Errorf("namespaces left behind: %v", m)
	}
	if after := netState(t); after != before {
		t.Errorf("network state changed:\nbefore %s\nafter  %s", before, after)
	}
}
