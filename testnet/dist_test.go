package testnet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// raftcastBin builds ./cmd/raftcast into dir unless RAFTCAST_BIN names one.
func raftcastBin(t *testing.T, dir string) string {
	t.Helper()
	if bin := os.Getenv("RAFTCAST_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(dir, "raftcast")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/raftcast").CombinedOutput(); err != nil {
		t.Fatalf("building raftcast: %v\n%s", err, out)
	}
	return bin
}

// needPaper skips (with -short: what) unless the paper topology can run: root, smcrouted;
// it sets RAFTCAST_BIN and returns the tools directory.
func needPaper(t *testing.T, what string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping " + what)
	}
	tools := needRoot(t)
	if _, err := exec.LookPath("smcrouted"); err != nil {
		t.Skip("the paper topology's multicast routing needs smcrouted (apt-get install smcroute)")
	}
	t.Setenv("RAFTCAST_BIN", raftcastBin(t, tools))
	return tools
}

// TestPaperDistribution is issue 5's namespace acceptance: the paper's testbed, the source in
// segment 2, receivers in all three segments; every receiver completes with an identical copy
// and segment 1's non-proxy receiver gets most bytes by multicast from its proxy. Again with
// 5% random loss on every link: everyone completes.
func TestPaperDistribution(t *testing.T) {
	tools := needPaper(t, "the distribution runs (about 2 min)")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no-loss", []string{"--bytes", "16MiB"}},
		{"loss-5pct", []string{"--bytes", "8MiB", "--loss", "5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"paper", "--scenario", "distribution", "--rate", "100mbit", "--timeout", "200"}, tc.args...)
			s, logs := runTestnet(t, tools, fmt.Sprintf("rcd%d%s", os.Getpid()%100000, tc.name[:2]), nil, args...)
			assertAllOK(t, s, logs)
			for _, h := range []string{"h11", "h12", "h22", "h31", "h32"} {
				if !s.check(t, "identical "+h).OK {
					t.Errorf("%s did not receive an identical copy", h)
				}
			}
			// No --rate: the source paces at 96 % of the shaped links, the proxy at 92 %.
			for _, role := range []string{"source", "proxy"} {
				if !s.check(t, "pace from the links "+role).OK {
					t.Errorf("the %s did not pace at its share of the links", role)
				}
			}
		})
	}
}

// TestProxyFailover: issue 5's "if it dies another member takes over". The paper's testbed with
// three receivers in segment 1; its proxy is killed a third of the way through; another
// receiver of segment 1 takes over and is recorded as proxy in the group state, and every
// other receiver completes with an identical copy.
func TestProxyFailover(t *testing.T) {
	tools := needPaper(t, "the proxy failover run (about 1 min)")
	s, logs := runTestnet(t, tools, fmt.Sprintf("rcf%d", os.Getpid()%100000), nil,
		"paper", "--hosts", "3", "--scenario", "proxy-failover", "--timeout", "300")
	assertAllOK(t, s, logs)
	for _, name := range []string{"proxy chosen", "takeover"} {
		if !s.check(t, name).OK {
			t.Errorf("check %q failed", name)
		}
	}
}

// TestLateGet: a get started in segment 1 after the others completed takes the file by
// multicast from the domain's proxy (which answers its want with a pass, as the source does
// in its own domain), not from peers after waiting for a relay that ended; so does one after
// the proxy's daemon was killed and restarted (it serves again what it held).
func TestLateGet(t *testing.T) {
	tools := needPaper(t, "the late get run (about 40 s)")
	s, logs := runTestnet(t, tools, fmt.Sprintf("rcl%d", os.Getpid()%100000), nil,
		"paper", "--hosts", "3", "--scenario", "late-get", "--timeout", "240")
	assertAllOK(t, s, logs)
	if !s.check(t, "late get by multicast from the proxy h12").OK {
		t.Error("the late receiver did not take the file by multicast from its proxy")
	}
	if !s.check(t, "late get by multicast from the restarted proxy h13").OK {
		t.Error("the last receiver did not take the file by multicast from its restarted proxy")
	}
}
