package pipes_test

import (
	"context"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/pipes/pipestest"
)

type node struct {
	h   host.Host
	ps  *pubsub.PubSub
	ov  *pipestest.Node
	svc *pipes.Service
}

// testConfig is the default configuration with multicast off (tests on loopback must not
// send on the machine's interfaces) and short retry/resolve periods.
func testConfig() pipes.Config {
	cfg := pipes.DefaultConfig()
	cfg.Multicast.Disabled = true
	cfg.ResolveTTL = 500 * time.Millisecond
	cfg.RetryMax = 300 * time.Millisecond
	return cfg
}

// newNodes starts n fake overlay nodes sharing one directory, all connected to each other.
func newNodes(t testing.TB, n int, cfg pipes.Config, psOpts ...pubsub.Option) []*node {
	t.Helper()
	dir := pipestest.NewMemDirectory()
	nodes := make([]*node, n)
	for i := range nodes {
		h := pipestest.NewHost(t)
		ps := pipestest.NewPubSub(t, h, psOpts...)
		ov := pipestest.NewNode(h, ps, dir)
		svc, err := pipes.New(ov, cfg)
		if err != nil {
			t.Fatalf("pipes.New: %v", err)
		}
		t.Cleanup(func() { _ = svc.Close() })
		nodes[i] = &node{h: h, ps: ps, ov: ov, svc: svc}
	}
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			pipestest.Connect(t, nodes[i].h, nodes[j].h)
		}
	}
	return nodes
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
