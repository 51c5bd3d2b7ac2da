// Package demo runs the whole raftcast story on one machine with no set-up: a rendezvous and
// a handful of nodes on loopback in one process, and a report of what happened and how fast.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/overlay"
)

// Options tune the demo.
type Options struct {
	Nodes   int // ordinary nodes besides the rendezvous (default 5)
	Logger  *slog.Logger
	Timeout time.Duration // whole run (default 2 min)
}

// Report is what the demo measured.
type Report struct {
	Peers          int           `json:"peers"`
	DiscoveredAll  bool          `json:"discovered_all"`
	StartupMedian  time.Duration `json:"startup_median_ns"`
	DiscoveryTime  time.Duration `json:"discovery_ns"`
	AdvertsPerPeer []int         `json:"adverts_per_peer"`
}

// cluster is a rendezvous and nodes running in this process.
type cluster struct {
	rdv   *overlay.Node
	nodes []*overlay.Node // nodes[0] is the rendezvous
}

func (c *cluster) close() {
	for i := len(c.nodes) - 1; i >= 0; i-- {
		c.nodes[i].Close()
	}
}

func loopback() []ma.Multiaddr {
	return []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
}

// startCluster starts a rendezvous and n nodes bootstrapped from it, and returns how long
// each node took from New to the end of Start.
func startCluster(ctx context.Context, n int, log *slog.Logger) (*cluster, []time.Duration, error) {
	c := &cluster{}
	var startup []time.Duration
	start := func(cfg overlay.Config) (*overlay.Node, error) {
		t0 := time.Now()
		cfg.ListenAddrs = loopback()
		cfg.MDNS = false
		cfg.Logger = log
		nd, err := overlay.New(cfg)
		if err != nil {
			return nil, err
		}
		if err := nd.Start(ctx); err != nil {
			nd.Close()
			return nil, err
		}
		startup = append(startup, time.Since(t0))
		c.nodes = append(c.nodes, nd)
		return nd, nil
	}
	rcfg := overlay.DefaultConfig()
	rcfg.Role = overlay.RoleRendezvous
	rcfg.Name = "rendezvous"
	rdv, err := start(rcfg)
	if err != nil {
		return nil, nil, err
	}
	c.rdv = rdv
	for i := 0; i < n; i++ {
		cfg := overlay.DefaultConfig()
		cfg.Name = fmt.Sprintf("node%d", i+1)
		cfg.Bootstrap = rdv.Addrs()
		if _, err := start(cfg); err != nil {
			c.close()
			return nil, nil, err
		}
	}
	return c, startup, nil
}

// Run runs the demo and writes its report to w.
func Run(ctx context.Context, w io.Writer, o Options) (*Report, error) {
	if o.Nodes <= 0 {
		o.Nodes = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	fmt.Fprintf(w, "raftcast demo: a rendezvous and %d nodes on loopback, in this process\n\n", o.Nodes)
	c, startup, err := startCluster(ctx, o.Nodes, o.Logger)
	if err != nil {
		return nil, err
	}
	defer c.close()
	rep := &Report{Peers: len(c.nodes), StartupMedian: median(startup)}
	for _, nd := range c.nodes {
		fmt.Fprintf(w, "  %-10s %s  %s\n", nd.Name(), nd.ID(), nd.Addrs()[0])
	}

	// 1. Discovery (PDP): every peer finds every other peer's signed advertisement.
	fmt.Fprintf(w, "\n1. discovery: each peer asks the overlay for peer advertisements\n")
	t0 := time.Now()
	want := len(c.nodes)
	for {
		rep.AdvertsPerPeer = rep.AdvertsPerPeer[:0]
		all := true
		for _, nd := range c.nodes {
			qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := nd.Discover(qctx, advert.Query{Kind: advert.KindPeer}, true)
			qcancel()
			if err != nil {
				return nil, err
			}
			rep.AdvertsPerPeer = append(rep.AdvertsPerPeer, len(res))
			if len(res) < want {
				all = false
			}
		}
		if all {
			rep.DiscoveredAll = true
			break
		}
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("discovery did not complete: adverts per peer %v, want %d each", rep.AdvertsPerPeer, want)
		case <-time.After(200 * time.Millisecond):
		}
	}
	rep.DiscoveryTime = time.Since(t0)
	for i, nd := range c.nodes {
		fmt.Fprintf(w, "   %-10s sees %d peer advertisements, %d connections\n", nd.Name(), rep.AdvertsPerPeer[i], len(nd.Host().Network().Peers()))
	}
	fmt.Fprintf(w, "   all %d peers discovered each other's advertisements in %s\n", want, rep.DiscoveryTime.Round(time.Millisecond))

	fmt.Fprintf(w, "\nreport\n")
	fmt.Fprintf(w, "  peers                       %d\n", rep.Peers)
	fmt.Fprintf(w, "  node start-up (median)      %s\n", rep.StartupMedian.Round(time.Millisecond))
	fmt.Fprintf(w, "  discovery of all adverts    %s\n", rep.DiscoveryTime.Round(time.Millisecond))
	if !rep.DiscoveredAll {
		return rep, errors.New("not every peer discovered every other")
	}
	return rep, nil
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
