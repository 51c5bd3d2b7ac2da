package overlay

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// TestMDNSOnLAN: two nodes with no bootstrap find each other through mDNS. Multicast must not
// leave the machine, so the test re-runs itself inside a network namespace of its own whose
// only LAN is a veth pair; it needs root (CI runs as root).
func TestMDNSOnLAN(t *testing.T) {
	if os.Getenv("RAFTCAST_MDNS_NETNS") == "1" {
		mdnsPair(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace for the mDNS LAN")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	ns := fmt.Sprintf("rcmdns%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "link", "add", "rcA", "type", "veth", "peer", "name", "rcB")
	run("-n", ns, "addr", "add", "198.18.0.1/24", "dev", "rcA")
	run("-n", ns, "addr", "add", "198.18.0.2/24", "dev", "rcB")
	run("-n", ns, "link", "set", "rcA", "up")
	run("-n", ns, "link", "set", "rcB", "up")
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestMDNSOnLAN$", "-test.v", "-test.timeout=90s")
	cmd.Env = append(os.Environ(), "RAFTCAST_MDNS_NETNS=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestMDNSOnLAN") {
		t.Fatalf("inside the namespace: %v\n%s", err, out)
	}
}

func mdnsPair(t *testing.T) {
	mk := func(addr string) *Node {
		return testNode(t, func(c *Config) {
			c.MDNS = true
			c.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/" + addr + "/tcp/0")}
		})
	}
	a, b := mk("198.18.0.1"), mk("198.18.0.2")
	eventually(t, 30*time.Second, "the two nodes to find each other by mDNS", func() bool {
		found := func(x, y *Node) bool {
			for _, p := range x.Peers() {
				if p.ID == y.ID() && p.Name != "" {
					return true // connected and holding its peer advert
				}
			}
			return false
		}
		return found(a, b) && found(b, a)
	})
}
