package pipes_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/raftcast/raftcast/pipes"
)

func topicName(spec pipes.PipeSpec) string {
	spec, _ = spec.Normalize()
	return pipes.TopicPrefix + spec.Group + "/" + spec.ID
}

// waitTopicPeers waits until n's gossipsub knows every one of want as subscribed to the pipe.
func waitTopicPeers(t testing.TB, n *node, spec pipes.PipeSpec, want ...*node) {
	t.Helper()
	eventually(t, 30*time.Second, "gossipsub subscriptions", func() bool {
		have := n.ps.ListPeers(topicName(spec))
		for _, w := range want {
			if !slices.Contains(have, w.h.ID()) {
				return false
			}
		}
		return true
	})
}

// Two listeners of a propagate pipe both get every message a third node sends, once each.
func TestPropagateTwoListeners(t *testing.T) {
	nodes := newNodes(t, 3, testConfig())
	ctx := testCtx(t, 60*time.Second)
	spec := pipes.PipeSpec{Name: "chat", Kind: pipes.Propagate}
	in1, err := nodes[0].svc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	in2, err := nodes[1].svc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	out, err := nodes[2].svc.Output(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitTopicPeers(t, nodes[2], spec, nodes[0], nodes[1])
	const n = 500
	for i := range n {
		if err := out.Send(ctx, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for li, in := range []*pipes.InputPipe{in1, in2} {
		got := make(map[string]bool)
		for len(got) < n {
			m, err := in.Recv(ctx)
			if err != nil {
				t.Fatalf("listener %d after %d messages: %v", li, len(got), err)
			}
			if m.From != nodes[2].h.ID() || m.Carrier != pipes.CarrierGossip {
				t.Fatalf("listener %d: message from %s by %v", li, m.From, m.Carrier)
			}
			if got[string(m.Data)] {
				t.Fatalf("listener %d: %q delivered twice", li, m.Data)
			}
			got[string(m.Data)] = true
		}
	}
	for li, nd := range nodes[:2] {
		st := nd.svc.Stats().Propagate
		if st.DeliveredGossip != n || st.RecvMulticast.Messages != 0 {
			t.Fatalf("listener %d stats: %+v", li, st)
		}
	}
	if st := nodes[2].svc.Stats().Propagate; st.SentGossip.Messages != n || st.SentMulticast.Messages != 0 {
		t.Fatalf("sender stats: %+v", st)
	}
	if out.Delivered() != n {
		t.Fatalf("Delivered = %d", out.Delivered())
	}
}

// A node that sends on a pipe it also listens to gets its own messages once, locally.
func TestPropagateLocalListener(t *testing.T) {
	nodes := newNodes(t, 2, testConfig())
	ctx := testCtx(t, 60*time.Second)
	spec := pipes.PipeSpec{Name: "echo", Kind: pipes.Propagate, Group: "g1"}
	in0, err := nodes[0].svc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	in1, err := nodes[1].svc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	out, err := nodes[0].svc.Output(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitTopicPeers(t, nodes[0], spec, nodes[1])
	// A subscribed publisher reaches others through its gossipsub mesh, which forms at the
	// next heartbeat (no flood publishing): probe until the remote listener hears one.
	for i := 0; ; i++ {
		if err := out.Send(ctx, fmt.Appendf(nil, "probe%d", i)); err != nil {
			t.Fatal(err)
		}
		m, err := in0.Recv(ctx)
		if err != nil || m.Carrier != pipes.CarrierLocal || string(m.Data) != fmt.Sprintf("probe%d", i) || m.From != nodes[0].h.ID() {
			t.Fatalf("local: %+v %v", m, err)
		}
		rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		m, err = in1.Recv(rctx)
		cancel()
		if err == nil {
			if m.Carrier != pipes.CarrierGossip || m.From != nodes[0].h.ID() {
				t.Fatalf("remote: %+v", m)
			}
			break
		}
	}
	if err := out.Send(ctx, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if m, err := in0.Recv(ctx); err != nil || string(m.Data) != "again" {
		t.Fatalf("local second: %+v %v", m, err)
	}
	peers, err := nodes[0].svc.Resolve(ctx, spec, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []peer.ID{nodes[0].h.ID(), nodes[1].h.ID()}
	slices.Sort(want)
	if !slices.Equal(peers, want) {
		t.Fatalf("Resolve = %v, want %v", peers, want)
	}
}
