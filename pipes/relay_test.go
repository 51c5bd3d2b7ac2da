package pipes_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/pipes/pipestest"
)

// A node whose only address is a circuit-relay address (it listens nowhere and holds a
// reservation on a relay) binds a unicast pipe and receives its messages through the relay.
func TestUnicastThroughRelay(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	relayHost := pipestest.NewHost(t)
	rl, err := relay.New(relayHost) // default limits: relayed connections are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Close() })

	hidden, err := libp2p.New(libp2p.NoListenAddrs, libp2p.EnableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hidden.Close() })
	relayInfo := peer.AddrInfo{ID: relayHost.ID(), Addrs: relayHost.Addrs()}
	if err := hidden.Connect(ctx, relayInfo); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, hidden, relayInfo); err != nil {
		t.Fatalf("reservation: %v", err)
	}
	circuit := relayHost.Addrs()[0].
		Encapsulate(ma.StringCast("/p2p/" + relayHost.ID().String() + "/p2p-circuit"))

	sender := pipestest.NewHost(t)
	sender.Peerstore().AddAddrs(hidden.ID(), []ma.Multiaddr{circuit}, peerstore.PermanentAddrTTL)
	if len(hidden.Addrs()) != 0 {
		t.Fatalf("hidden node has direct addresses %v", hidden.Addrs())
	}

	dir := pipestest.NewMemDirectory()
	hiddenSvc, err := pipes.New(pipestest.NewNode(hidden, pipestest.NewPubSub(t, hidden), dir), testConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hiddenSvc.Close() })
	senderSvc, err := pipes.New(pipestest.NewNode(sender, pipestest.NewPubSub(t, sender), dir), testConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = senderSvc.Close() })

	spec := pipes.PipeSpec{Name: "behind-nat", Kind: pipes.Unicast}
	in, err := hiddenSvc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	out, err := senderSvc.Output(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := range n {
		if err := out.Send(ctx, fmt.Appendf(nil, "relayed %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		m, err := in.Recv(ctx)
		if err != nil || string(m.Data) != fmt.Sprintf("relayed %d", i) || m.From != sender.ID() {
			t.Fatalf("message %d: %q from %s, %v", i, m.Data, m.From, err)
		}
	}
	if err := out.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	conns := sender.Network().ConnsToPeer(hidden.ID())
	if len(conns) == 0 {
		t.Fatal("no connection to the hidden node")
	}
	for _, c := range conns {
		if !strings.Contains(c.RemoteMultiaddr().String(), "p2p-circuit") || !c.Stat().Limited {
			t.Fatalf("connection to the hidden node is not relayed: %s (limited %v)", c.RemoteMultiaddr(), c.Stat().Limited)
		}
	}
}
