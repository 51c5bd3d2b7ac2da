//go:build linux

package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The scenario tests run testnet/run with a small topology and a small file, as root, and
// check the outcomes each scenario records (not only its exit status): CI runs them on every
// change (`go test ./testnet/`), so each stays under about a minute at moderate load and they
// run in parallel with one another (after the package's other tests). RC_HEAVY=1 runs the
// larger variants instead (more hosts, bigger files, the paper topology).

// heavy reports whether RC_HEAVY=1 asks for the larger variants.
func heavy() bool { return os.Getenv("RC_HEAVY") == "1" }

// scenarioDoc is a run's JSON summary with every check's members kept.
type scenarioDoc struct {
	OK     bool             `json:"ok"`
	Checks []map[string]any `json:"checks"`
}

// checkOf returns the check called name, failing the test if there is none.
func (d scenarioDoc) checkOf(t *testing.T, name string) map[string]any {
	t.Helper()
	for _, c := range d.Checks {
		if c["name"] == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, d.Checks)
	return nil
}

// num returns a numeric member of a check (0 when absent).
func num(c map[string]any, key string) float64 {
	f, _ := c[key].(float64)
	return f
}

// TestMain removes the binaries the scenario tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// shared holds rcnet and raftcast, built once for every scenario test (each build links a
// 50 MB binary: seconds of CPU that parallel tests would pay four times).
var shared struct {
	once sync.Once
	dir  string // a temporary directory holding rcnet (and raftcast unless RAFTCAST_BIN)
	bin  string // raftcast
	err  error
}

// sharedTools skips unless the test can build namespaces, as needRoot does, and returns the
// directory holding rcnet (for RC_TOOLS) and the raftcast binary.
func sharedTools(t *testing.T) (tools, bin string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testnet needs root (network namespaces, bridges, tc, nftables): run `sudo go test ./testnet/`")
	}
	for _, tool := range []string{"ip", "tc", "nft", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("testnet needs %s (apt-get install iproute2 nftables)", tool)
		}
	}
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "rctestnet-"); shared.err != nil {
			return
		}
		build := func(out, pkg string) {
			if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil && shared.err == nil {
				shared.err = fmt.Errorf("building %s: %v\n%s", pkg, err, b)
			}
		}
		build(filepath.Join(shared.dir, "rcnet"), "./tools/rcnet")
		if shared.bin = os.Getenv("RAFTCAST_BIN"); shared.bin == "" {
			shared.bin = filepath.Join(shared.dir, "raftcast")
			build(shared.bin, "../cmd/raftcast")
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.dir, shared.bin
}

// runScenario runs testnet/run args as root with a prebuilt raftcast and rcnet and the extra
// environment env (parallel tests cannot use t.Setenv), asserts that every check passed and
// that nothing was left behind, and returns the full summary.
func runScenario(t *testing.T, id string, env []string, args ...string) scenarioDoc {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping the scenario runs (each 15-60 s)")
	}
	tools, bin := sharedTools(t)
	before := netState(t)
	base := t.TempDir()
	out := filepath.Join(base, "summary.json")
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "./run", append(args, "--id", id, "--json-out", out)...)
	cmd.Env = append(os.Environ(), "RC_BASE="+base, "RC_TOOLS="+tools, "RAFTCAST_BIN="+bin)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 30 * time.Second
	defer showDaemonLogs(t, filepath.Join(base, id, "logs"))
	err := cmd.Run()
	logs := stderr.String()
	s := readSummary(t, id, args, err, stdout.Bytes(), logs)
	assertAllOK(t, s, logs)
	var doc scenarioDoc
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || !bytes.Equal(bytes.TrimSpace(b), bytes.TrimSpace(stdout.Bytes())) {
		t.Errorf("--json-out: %v, %q differs from stdout", err, b)
	}
	if after := netState(t); after != before {
		t.Errorf("network state changed:\nbefore %s\nafter  %s", before, after)
	}
	return doc
}

// showDaemonLogs logs the end of each raftcast daemon's log of a failed run (the run
// directory goes with the test's temporary directory).
func showDaemonLogs(t *testing.T, dir string) {
	if !t.Failed() {
		return
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*raftcast*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("%s (last lines):\n%s", filepath.Base(l), strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
}

func runID(prefix string) string { return fmt.Sprintf("%s%d", prefix, os.Getpid()%100000) }

func needSmcroute(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("smcrouted"); err != nil {
		t.Skip("the paper topology's multicast routing needs smcrouted (apt-get install smcroute)")
	}
}

// TestGroupsScenario: three members form a group, the leader's daemon is SIGKILLed, the
// other two agree on a new leader with a higher term, and the killed node, restarted on its
// data dir, comes back as a follower with the same identity.
func TestGroupsScenario(t *testing.T) {
	t.Parallel()
	args := []string{"lan", "--hosts", "4", "--scenario", "groups", "--timeout", "180"}
	if heavy() {
		needSmcroute(t)
		args = []string{"paper", "--hosts", "2", "--scenario", "groups", "--timeout", "240"}
	}
	doc := runScenario(t, runID("rcsg"), nil, args...)
	f := doc.checkOf(t, "failover")
	if f["killed"] == f["new_leader"] || num(f, "term_after") <= num(f, "term_before") || num(f, "failover_seconds") <= 0 {
		t.Errorf("failover: %v", f)
	}
	t.Logf("failover after %.3f s (kill to every survivor reporting the new leader)", num(f, "failover_seconds"))
	killed, _ := f["killed"].(string)
	if r := doc.checkOf(t, "rejoined as follower "+killed); r["same_peer_id"] != true || r["leader"] == killed {
		t.Errorf("rejoin: %v", r)
	}
	doc.checkOf(t, "group agrees")
}

// TestPipesScenario: on the paper testbed (one host per segment), a propagate pipe reaches
// the listener in the source's multicast domain (s3, routed) partly by native multicast and
// the one in segment 1 only by gossipsub; a unicast pipe delivers in order to one listener
// and fails over to the other from a frozen and from a killed listener.
func TestPipesScenario(t *testing.T) {
	t.Parallel()
	needSmcroute(t)
	hosts := "1"
	if heavy() {
		hosts = "2"
	}
	doc := runScenario(t, runID("rcsp"), nil, "paper", "--hosts", hosts, "--scenario", "pipes", "--timeout", "180")
	in, out := doc.checkOf(t, "propagate h21->h31"), doc.checkOf(t, "propagate h21->h11")
	if num(in, "multicast") == 0 || in["same_domain"] != true {
		t.Errorf("the listener in the source's domain got nothing by multicast: %v", in)
	}
	if num(out, "multicast") != 0 || num(out, "gossipsub") != num(out, "sent") {
		t.Errorf("the listener across the router: %v, want everything by gossipsub", out)
	}
	for _, c := range doc.Checks {
		if name, _ := c["name"].(string); len(name) > 8 && name[:8] == "unicast " && c["in_order"] != true {
			t.Errorf("%s: not in order: %v", name, c)
		}
	}
}

// TestFaultsScenario: a 16 MiB distribution to three receivers over 30 Mbit/s links with 5 %
// random loss on every link; one receiver is SIGKILLed mid-transfer and restarted (it must
// resume from its store), another is partitioned for 5 s then healed; every copy identical.
func TestFaultsScenario(t *testing.T) {
	t.Parallel()
	args := []string{"lan", "--hosts", "5", "--scenario", "faults", "--bytes", "16MiB", "--timeout", "240"}
	env := []string{"RC_PARTITION_SECONDS=5"}
	if heavy() {
		args = []string{"lan", "--hosts", "6", "--scenario", "faults", "--bytes", "64MiB", "--rate", "50mbit", "--timeout", "400"}
		env = nil
	}
	doc := runScenario(t, runID("rcsf"), env, args...)
	set := doc.checkOf(t, "faults set")
	k, _ := set["killed"].(string)
	p, _ := set["partitioned"].(string)
	if r := doc.checkOf(t, "resumed "+k); num(r, "bytes_resumed") <= 0 {
		t.Errorf("the killed receiver did not resume: %v", r)
	}
	doc.checkOf(t, "completed after partition "+p)
	for _, c := range doc.Checks {
		if name, _ := c["name"].(string); len(name) > 10 && name[:10] == "identical " {
			sum := num(c, "bytes_multicast") + num(c, "bytes_peers") + num(c, "bytes_source") + num(c, "bytes_resumed")
			if sum != num(set, "bytes") {
				t.Errorf("%s: the summary adds up to %.0f bytes, want %.0f: %v", name, sum, num(set, "bytes"), c)
			}
		}
	}
}

// TestRemoteDistribution: testnet/remote over ssh (sshd in every namespace): a distribution
// to two nodes and a cooperative download through the group from an rcnet origin capped per
// client IP, then everything stopped by PID and removed from the hosts.
func TestRemoteDistribution(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"/usr/sbin/sshd", "ssh", "scp", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the real-hosts mode test needs %s (apt-get install openssh-server openssh-client)", tool)
		}
	}
	args := []string{"lan", "--hosts", "4", "--scenario", "remote-dist", "--bytes", "4MiB", "--timeout", "240"}
	if heavy() {
		args = []string{"lan", "--hosts", "6", "--scenario", "remote-dist", "--bytes", "64MiB", "--timeout", "400"}
	}
	id := runID("rcsr")
	doc := runScenario(t, id, []string{"RC_REMOTE_TIMEOUT=200"}, args...)
	var remote scenarioDoc
	b, _ := json.Marshal(doc.checkOf(t, "remote run")["summary"])
	if err := json.Unmarshal(b, &remote); err != nil || !remote.OK {
		t.Fatalf("remote summary (%v): %s", err, b)
	}
	hosts := 4
	if heavy() {
		hosts = 6
	}
	for i := 3; i <= hosts; i++ {
		remote.checkOf(t, fmt.Sprintf("identical h%d", i))
	}
	d := remote.checkOf(t, "download h2")
	if num(d, "members_fetching") < 2 || num(d, "origin_bytes") < num(d, "bytes") || num(d, "origin_bytes") > 1.1*num(d, "bytes") {
		t.Errorf("download: %v (want 2 members fetching or more, the origin sending the file about once)", d)
	}
	t.Logf("remote download speed-up over one connection: %.2f", num(remote.checkOf(t, "baseline fetch h2"), "speedup"))
	if m, _ := filepath.Glob("/tmp/raftcast-remote-" + id + "r-*"); len(m) > 0 {
		t.Errorf("remote directories left behind: %v", m)
	}
	if m, _ := filepath.Glob("/tmp/rcmux-" + id + "r-*"); len(m) > 0 {
		t.Errorf("ssh control sockets left behind: %v", m)
	}
}
