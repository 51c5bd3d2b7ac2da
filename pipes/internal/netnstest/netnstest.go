// Package netnstest builds small throw-away topologies of Linux network namespaces for tests
// (root only): namespaces, a bridge, veth links, addresses and routes, made with the `ip`
// command, all named with a per-run prefix and deleted by Close. Test processes run inside a
// namespace with `ip netns exec` (see Command).
package netnstest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// Skip skips the test unless it runs as root with the ip command available.
func Skip(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespace test needs root (run as root, e.g. sudo go test -run Netns ./pipes/)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespace test needs the ip command (iproute2)")
	}
}

// List returns the names of the network namespaces that exist now.
func List(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	slices.Sort(names)
	return names
}

// Net is a set of namespaces created by one test.
type Net struct {
	t      testing.TB
	prefix string
	spaces []string
}

// New returns an empty Net whose namespaces are named prefix + "-" + name; Close (registered
// with t.Cleanup) deletes them.
func New(t testing.TB, prefix string) *Net {
	n := &Net{t: t, prefix: prefix}
	t.Cleanup(n.Close)
	return n
}

// Prefix returns the namespace-name prefix of this Net.
func (n *Net) Prefix() string { return n.prefix }

// NS returns the full name of namespace name.
func (n *Net) NS(name string) string { return n.prefix + "-" + name }

// Run runs a command and fails the test if it fails.
func (n *Net) Run(args ...string) {
	n.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		n.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
}

// In runs a command inside namespace name.
func (n *Net) In(name string, args ...string) {
	n.t.Helper()
	n.Run(append([]string{"ip", "netns", "exec", n.NS(name)}, args...)...)
}

// AddNS creates namespace name with loopback up and IPv6 duplicate address detection off.
func (n *Net) AddNS(name string) {
	n.t.Helper()
	n.Run("ip", "netns", "add", n.NS(name))
	n.spaces = append(n.spaces, n.NS(name))
	n.In(name, "ip", "link", "set", "lo", "up")
	n.In(name, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
}

// Bridge creates bridge br in namespace name, multicast snooping off, up.
func (n *Net) Bridge(name, br string) {
	n.t.Helper()
	n.In(name, "ip", "link", "add", br, "type", "bridge", "mcast_snooping", "0")
	n.In(name, "ip", "link", "set", br, "up")
}

// Link creates a veth pair: ifA in namespace a and ifB in namespace b, both up. If bridge is
// not empty, ifB is enslaved to it.
func (n *Net) Link(a, ifA, b, ifB, bridge string) {
	n.t.Helper()
	n.Run("ip", "link", "add", "name", ifA, "netns", n.NS(a), "type", "veth", "peer", "name", ifB, "netns", n.NS(b))
	if bridge != "" {
		n.In(b, "ip", "link", "set", ifB, "master", bridge)
	}
	n.In(a, "ip", "link", "set", ifA, "up")
	n.In(b, "ip", "link", "set", ifB, "up")
}

// Addr adds an address (CIDR) to an interface; IPv6 addresses skip DAD.
func (n *Net) Addr(name, ifname, cidr string) {
	n.t.Helper()
	args := []string{"ip", "addr", "add", cidr, "dev", ifname}
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	n.In(name, args...)
}

// Route adds a default route via gw (IPv4 or IPv6).
func (n *Net) Route(name, gw string) {
	n.t.Helper()
	if strings.Contains(gw, ":") {
		n.In(name, "ip", "-6", "route", "add", "default", "via", gw)
	} else {
		n.In(name, "ip", "route", "add", "default", "via", gw)
	}
}

// Forward turns IPv4 and IPv6 forwarding on in namespace name.
func (n *Net) Forward(name string) {
	n.t.Helper()
	n.In(name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
}

// WaitLinkLocal waits until ifname in namespace name has a usable IPv6 link-local address.
func (n *Net) WaitLinkLocal(name, ifname string) {
	n.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "exec", n.NS(name), "ip", "-6", "addr", "show", "dev", ifname, "scope", "link").Output()
		if bytes.Contains(out, []byte("fe80::")) && !bytes.Contains(out, []byte("tentative")) {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s/%s: no usable link-local address: %s", name, ifname, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Command returns a command that runs argv inside namespace name.
func (n *Net) Command(ctx context.Context, name string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NS(name)}, argv...)...)
}

// Close deletes the namespaces (their veths and bridges go with them).
func (n *Net) Close() {
	for i := len(n.spaces) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", n.spaces[i]).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "netnstest: ip netns del %s: %v %s\n", n.spaces[i], err, out)
		}
	}
	n.spaces = nil
}
