package overlay

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/advert"
)

func benchNode(b *testing.B, mod func(*Config)) *Node {
	b.Helper()
	cfg := DefaultConfig()
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.MDNS = false
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkPublishRemoteQuery20: one node publishes a content advert, another finds it by
// name across an overlay of a rendezvous and 20 nodes.
func BenchmarkPublishRemoteQuery20(b *testing.B) {
	r := benchNode(b, func(c *Config) { c.Role = RoleRendezvous })
	defer r.Close()
	var nodes []*Node
	for i := 0; i < 20; i++ {
		n := benchNode(b, func(c *Config) { c.Bootstrap = r.Addrs() })
		defer n.Close()
		nodes = append(nodes, n)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pub, seeker := nodes[i%20], nodes[(i+7)%20]
		name := fmt.Sprintf("bench-%d", i)
		a := advert.New(advert.KindContent, name, name, pub.PrivateKey(), time.Minute, time.Now())
		if _, err := pub.Publish(ctx, a); err != nil {
			b.Fatal(err)
		}
		res, err := seeker.Discover(ctx, advert.Query{Kind: advert.KindContent, Name: name}, true)
		if err != nil || len(res) != 1 {
			b.Fatalf("query %d: %d results, %v", i, len(res), err)
		}
	}
}

// BenchmarkStartup: from New to the end of Start (peer advert published to the rendezvous).
func BenchmarkStartup(b *testing.B) {
	r := benchNode(b, func(c *Config) { c.Role = RoleRendezvous })
	defer r.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := benchNode(b, func(c *Config) { c.Bootstrap = r.Addrs() })
		b.StopTimer()
		n.Close()
		b.StartTimer()
	}
}

// BenchmarkIdleNodeRSS reports the resident set of this process (the test binary, a
// rendezvous and a node) after the node idled 3 s; run it alone with -benchtime 1x. The
// daemon's own figure comes from /proc/PID/status of `raftcast node` (see the README).
func BenchmarkIdleNodeRSS(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r := benchNode(b, func(c *Config) { c.Role = RoleRendezvous })
		n := benchNode(b, func(c *Config) { c.Bootstrap = r.Addrs() })
		time.Sleep(3 * time.Second)
		runtime.GC()
		b.ReportMetric(float64(rssKiB())/1024, "MiB-rss-process")
		n.Close()
		r.Close()
	}
}

func rssKiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}
