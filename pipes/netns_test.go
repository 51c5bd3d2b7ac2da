package pipes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/pipes/internal/netnstest"
	"github.com/raftcast/raftcast/pipes/pipestest"
	"golang.org/x/net/ipv6"
)

// The namespace test re-executes this test binary inside each namespace with these variables
// set; TestNetnsRole then plays the role.
const (
	envRole = "RAFTCAST_PIPES_NETNS_ROLE"
	envDir  = "RAFTCAST_PIPES_NETNS_DIR"
	envAddr = "RAFTCAST_PIPES_NETNS_ADDR"
)

const (
	netnsMessages = 100 // propagate messages sent by h1
	netnsRaw      = 50  // raw data-channel datagrams sent by h1
)

var netnsHosts = map[string]string{"h1": "198.18.1.1", "h2": "198.18.1.2", "h3": "198.18.1.3", "h4": "198.18.2.4"}

// netnsResult is what each role process reports.
type netnsResult struct {
	Role       string
	Peer       peer.ID
	Stats      pipes.Stats
	Domains    []pipes.Domain
	DomainAttr string
	Received   int // distinct propagate messages received
	Raw        int // raw datagrams received from h1
}

// Topology: h1, h2, h3 on one bridge (198.18.1.0/24, fd00:1::/64) with the router r; h4 behind
// r (198.18.2.0/24). h1 sends on a propagate pipe that h2, h3 and h4 listen to. h2 and h3
// must get every message by native multicast, h4 by gossipsub (multicast does not cross r).
func TestNetnsMulticast(t *testing.T) {
	if os.Getenv(envRole) != "" {
		t.Skip("inside a role process")
	}
	netnstest.Skip(t)
	prefix := fmt.Sprintf("rcp%d", os.Getpid())
	mine := func(names []string) []string {
		var out []string
		for _, n := range names {
			if strings.HasPrefix(n, prefix+"-") {
				out = append(out, n)
			}
		}
		return out
	}
	before := netnstest.List(t)
	if m := mine(before); len(m) != 0 {
		t.Fatalf("namespaces %v exist before the test", m)
	}

	nt := netnstest.New(t, prefix)
	for _, ns := range []string{"sw", "r", "h1", "h2", "h3", "h4"} {
		nt.AddNS(ns)
	}
	nt.Bridge("sw", "br0")
	for i, h := range []string{"h1", "h2", "h3"} {
		nt.Link(h, "eth0", "sw", fmt.Sprintf("p%d", i+1), "br0")
		nt.Addr(h, "eth0", netnsHosts[h]+"/24")
		nt.Addr(h, "eth0", fmt.Sprintf("fd00:1::%d/64", i+1))
		nt.Route(h, "198.18.1.254")
		nt.Route(h, "fd00:1::fe")
	}
	nt.Link("r", "eth0", "sw", "pr", "br0")
	nt.Addr("r", "eth0", "198.18.1.254/24")
	nt.Addr("r", "eth0", "fd00:1::fe/64")
	nt.Link("r", "eth1", "h4", "eth0", "")
	nt.Addr("r", "eth1", "198.18.2.254/24")
	nt.Addr("r", "eth1", "fd00:2::fe/64")
	nt.Addr("h4", "eth0", netnsHosts["h4"]+"/24")
	nt.Addr("h4", "eth0", "fd00:2::4/64")
	nt.Route("h4", "198.18.2.254")
	nt.Route("h4", "fd00:2::fe")
	nt.Forward("r")
	for _, h := range []string{"h1", "h2", "h3", "h4"} {
		nt.WaitLinkLocal(h, "eth0")
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, sub := range []string{"adverts", "peers", "ready", "results"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	type proc struct {
		role string
		log  string
		done chan error
	}
	var procs []*proc
	for _, role := range []string{"h1", "h2", "h3", "h4"} {
		p := &proc{role: role, log: filepath.Join(dir, role+".log"), done: make(chan error, 1)}
		f, err := os.Create(p.log)
		if err != nil {
			t.Fatal(err)
		}
		cmd := nt.Command(ctx, role, exe, "-test.run=^TestNetnsRole$", "-test.v", "-test.timeout=200s")
		cmd.Env = append(os.Environ(), envRole+"="+role, envDir+"="+dir, envAddr+"="+netnsHosts[role])
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.done <- cmd.Wait(); _ = f.Close() }()
		procs = append(procs, p)
	}
	failed := false
	for _, p := range procs {
		if err := <-p.done; err != nil {
			failed = true
			out, _ := os.ReadFile(p.log)
			t.Errorf("role %s failed: %v\n%s", p.role, err, out)
		}
	}
	nt.Close()
	if m := mine(netnstest.List(t)); len(m) != 0 {
		t.Errorf("namespaces left behind: %v", m)
	}
	if failed {
		t.FailNow()
	}

	res := make(map[string]netnsResult)
	for _, role := range []string{"h1", "h2", "h3", "h4"} {
		b, err := os.ReadFile(filepath.Join(dir, "results", role+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var r netnsResult
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		res[role] = r
		p := r.Stats.Propagate
		t.Logf("%s: received %d, raw %d, domain %q; propagate sent mc %d gs %d, recv mc %d gs %d, delivered mc %d gs %d, dup %d; rejected %+v; multicast %+v",
			role, r.Received, r.Raw, r.DomainAttr, p.SentMulticast.Messages, p.SentGossip.Messages, p.RecvMulticast.Messages, p.RecvGossip.Messages,
			p.DeliveredMulticast, p.DeliveredGossip, p.Duplicates, r.Stats.Rejected, r.Stats.Multicast)
	}
	for _, role := range []string{"h2", "h3"} {
		r := res[role]
		if r.Received != netnsMessages || r.Stats.Propagate.RecvMulticast.Messages != netnsMessages {
			t.Errorf("%s (bridge): received %d messages, %d by multicast; want %d by multicast", role, r.Received, r.Stats.Propagate.RecvMulticast.Messages, netnsMessages)
		}
		if r.Stats.Propagate.DeliveredMulticast+r.Stats.Propagate.DeliveredGossip != netnsMessages {
			t.Errorf("%s: delivered %d+%d, want %d once each", role, r.Stats.Propagate.DeliveredMulticast, r.Stats.Propagate.DeliveredGossip, netnsMessages)
		}
		if r.Raw < netnsRaw*9/10 {
			t.Errorf("%s: %d of %d raw datagrams", role, r.Raw, netnsRaw)
		}
		if r.Stats.Rejected.Forged == 0 || r.Stats.Rejected.Replayed == 0 {
			t.Errorf("%s: forged/replayed datagrams not rejected: %+v", role, r.Stats.Rejected)
		}
		if r.DomainAttr != res["h1"].DomainAttr {
			t.Errorf("%s: domain %q, h1's %q: same bridge, want the same domain", role, r.DomainAttr, res["h1"].DomainAttr)
		}
	}
	r4 := res["h4"]
	if r4.Received != netnsMessages || r4.Stats.Propagate.RecvGossip.Messages != netnsMessages || r4.Stats.Propagate.RecvMulticast.Messages != 0 {
		t.Errorf("h4 (routed): received %d, %d by gossipsub, %d by multicast; want all %d by gossipsub", r4.Received,
			r4.Stats.Propagate.RecvGossip.Messages, r4.Stats.Propagate.RecvMulticast.Messages, netnsMessages)
	}
	if r4.DomainAttr == res["h1"].DomainAttr || r4.DomainAttr == "" {
		t.Errorf("h4: domain %q, h1's %q: want different domains", r4.DomainAttr, res["h1"].DomainAttr)
	}
	if s := res["h1"].Stats.Propagate; s.SentMulticast.Messages < netnsMessages || s.SentGossip.Messages != netnsMessages {
		t.Errorf("h1: sent %d datagrams and %d gossip messages, want at least %d and exactly %d", s.SentMulticast.Messages, s.SentGossip.Messages, netnsMessages, netnsMessages)
	}
	if want := pipes.DomainID(minPeer(res["h1"].Peer, res["h2"].Peer, res["h3"].Peer)); res["h1"].DomainAttr != want {
		t.Errorf("h1's domain %q, want %q (smallest peer ID of the bridge)", res["h1"].DomainAttr, want)
	}
}

// ids1 returns h1's peer ID from its peer file.
func ids1(dir string) peer.ID {
	b, _ := os.ReadFile(filepath.Join(dir, "peers", "h1"))
	var as []string
	_ = json.Unmarshal(b, &as)
	if len(as) == 0 {
		return ""
	}
	ai, _ := peer.AddrInfoFromString(as[0])
	return ai.ID
}

func minPeer(ps ...peer.ID) peer.ID { return slices.Min(ps) }

// TestNetnsRole is one host of TestNetnsMulticast (run only by it, inside a namespace).
func TestNetnsRole(t *testing.T) {
	role := os.Getenv(envRole)
	if role == "" {
		t.Skip("run by TestNetnsMulticast")
	}
	dir, addr := os.Getenv(envDir), os.Getenv(envAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	wait := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("%s: timed out waiting for %s", role, what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/" + addr + "/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ps := pipestest.NewPubSub(t, h)
	ov := pipestest.NewNode(h, ps, &pipestest.FileDirectory{Dir: filepath.Join(dir, "adverts")})
	cfg := pipes.DefaultConfig()
	cfg.Multicast.Interfaces = []string{"eth0"}
	cfg.Multicast.BeaconInterval = 200 * time.Millisecond
	cfg.Multicast.BeaconExpiry = 2 * time.Second
	cfg.ResolveTTL = time.Second
	svc, err := pipes.New(ov, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	mc := svc.Multicast()
	if mc == nil {
		t.Fatal("native multicast did not start")
	}

	// Publish our address and connect to everyone.
	var addrs []string
	for _, a := range h.Addrs() {
		addrs = append(addrs, a.Encapsulate(ma.StringCast("/p2p/"+h.ID().String())).String())
	}
	b, _ := json.Marshal(addrs)
	if err := os.WriteFile(filepath.Join(dir, "peers", role), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for other := range netnsHosts {
		if other == role {
			continue
		}
		p := filepath.Join(dir, "peers", other)
		wait("peer "+other, func() bool { return exists(p) })
		b, _ := os.ReadFile(p)
		var as []string
		_ = json.Unmarshal(b, &as)
		for _, s := range as {
			ai, err := peer.AddrInfoFromString(s)
			if err != nil {
				t.Fatal(err)
			}
			wait("connection to "+other, func() bool {
				cctx, cc := context.WithTimeout(ctx, 5*time.Second)
				defer cc()
				return h.Connect(cctx, *ai) == nil
			})
		}
	}

	spec := pipes.PipeSpec{Name: "netns-chat", Kind: pipes.Propagate}
	result := netnsResult{Role: role, Peer: h.ID()}
	finish := func() {
		result.Stats = svc.Stats()
		result.Domains = mc.Domains()
		result.DomainAttr = ov.PeerAttr(pipes.PeerAttrDomains)
		b, _ := json.MarshalIndent(result, "", " ")
		if err := os.WriteFile(filepath.Join(dir, "results", role+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	if role != "h1" {
		in, err := svc.Listen(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ready", role), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		got := make(map[string]bool)
		for len(got) < netnsMessages {
			m, err := in.Recv(ctx)
			if err != nil {
				t.Fatalf("%s: after %d messages: %v (stats %+v)", role, len(got), err, svc.Stats())
			}
			if got[string(m.Data)] {
				t.Fatalf("%s: %q delivered twice", role, m.Data)
			}
			got[string(m.Data)] = true
		}
		result.Received = len(got)
		if role != "h4" {
			// Raw datagrams from h1, then the forged and replayed datagrams.
			for result.Raw < netnsRaw {
				rctx, rc := context.WithTimeout(ctx, 5*time.Second)
				d, err := mc.Recv(rctx)
				rc()
				if err != nil {
					break
				}
				if d.Peer != ids1(dir) || len(d.Data) != 1200 {
					continue
				}
				result.Raw++
			}
			wait("forged and replayed datagrams", func() bool {
				r := svc.Stats().Rejected
				return r.Forged > 0 && r.Replayed > 0
			})
		}
		finish()
		if err := os.WriteFile(filepath.Join(dir, "ready", role+".done"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		// Stay up (relaying gossip) until h1 is done.
		wait("h1 to finish", func() bool { return exists(filepath.Join(dir, "results", "h1.json")) })
		return
	}

	// h1: the sender.
	for _, l := range []string{"h2", "h3", "h4"} {
		wait(l+" ready", func() bool { return exists(filepath.Join(dir, "ready", l)) })
	}
	ids := map[string]peer.ID{}
	for _, l := range []string{"h2", "h3", "h4"} {
		b, _ := os.ReadFile(filepath.Join(dir, "peers", l))
		var as []string
		_ = json.Unmarshal(b, &as)
		ai, _ := peer.AddrInfoFromString(as[0])
		ids[l] = ai.ID
	}
	wait("beacons from h2 and h3", func() bool { return mc.InDomain(ids["h2"]) && mc.InDomain(ids["h3"]) })
	if mc.InDomain(ids["h4"]) {
		t.Fatal("h4 is behind a router but heard in h1's domain")
	}
	if got := mc.Interfaces(); !slices.Equal(got, []string{"eth0"}) {
		t.Fatalf("multicast data interfaces %v, want [eth0]", got)
	}
	wait("bindings of h2, h3, h4", func() bool {
		ps, err := svc.Resolve(ctx, spec, true)
		return err == nil && len(ps) == 3
	})
	topic := topicName(spec)
	wait("gossipsub subscriptions", func() bool {
		have := ps.ListPeers(topic)
		return slices.Contains(have, ids["h2"]) && slices.Contains(have, ids["h3"]) && slices.Contains(have, ids["h4"])
	})
	// Capture our own multicast datagrams (multicast loopback) to replay and forge them.
	capture := startCapture(t, cfg)
	out, err := svc.Output(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the output end resolve the bindings
	for i := range netnsMessages {
		if err := out.Send(ctx, fmt.Appendf(nil, "netns message %d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	raw := make([]byte, 1200)
	for range netnsRaw {
		if _, err := mc.Send(raw); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	pkt := capture.first(ctx, t)
	// Replay the captured datagram, and send a forged copy (payload changed), until the
	// bridge listeners have counted both.
	forged := append([]byte(nil), pkt...)
	if i := strings.Index(string(forged), "netns message"); i >= 0 {
		copy(forged[i:], "forged!")
	}
	for !(exists(filepath.Join(dir, "ready", "h2.done")) && exists(filepath.Join(dir, "ready", "h3.done")) && exists(filepath.Join(dir, "results", "h4.json"))) {
		if ctx.Err() != nil {
			t.Fatal("timed out waiting for the listeners")
		}
		capture.send(t, pkt)
		capture.send(t, forged)
		time.Sleep(200 * time.Millisecond)
	}
	result.Received = 0
	finish()
}

// capturer is a raw IPv6 multicast socket on the pipe port of eth0: it sees this node's own
// datagrams (multicast loopback) and can send arbitrary ones.
type capturer struct {
	p    *ipv6.PacketConn
	ifi  *net.Interface
	dst  *net.UDPAddr
	pkts chan []byte
}

func startCapture(t *testing.T, cfg pipes.Config) *capturer {
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	lc := net.ListenConfig{Control: reuseAddr}
	c, err := lc.ListenPacket(context.Background(), "udp6", fmt.Sprintf("[::]:%d", cfg.Multicast.Port))
	if err != nil {
		t.Fatal(err)
	}
	p := ipv6.NewPacketConn(c)
	group := &net.UDPAddr{IP: cfg.Multicast.Group6.AsSlice(), Port: cfg.Multicast.Port, Zone: "eth0"}
	if err := p.JoinGroup(ifi, group); err != nil {
		t.Fatal(err)
	}
	_ = p.SetMulticastInterface(ifi)
	_ = p.SetMulticastHopLimit(1)
	_ = p.SetMulticastLoopback(false)
	cp := &capturer{p: p, ifi: ifi, dst: group, pkts: make(chan []byte, 1024)}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, _, err := p.ReadFrom(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "netns message") {
				select {
				case cp.pkts <- append([]byte(nil), buf[:n]...):
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { _ = p.Close() })
	return cp
}

func (c *capturer) first(ctx context.Context, t *testing.T) []byte {
	select {
	case b := <-c.pkts:
		return b
	case <-ctx.Done():
		t.Fatal("no datagram captured")
		return nil
	}
}

func (c *capturer) send(t *testing.T, b []byte) {
	if _, err := c.p.WriteTo(b, nil, c.dst); err != nil {
		t.Logf("capture send: %v", err)
	}
}
