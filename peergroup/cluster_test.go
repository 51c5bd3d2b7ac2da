package peergroup

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// testNode is one node of an in-process test network: a libp2p host and its Manager.
type testNode struct {
	name string
	key  crypto.PrivKey
	dir  string
	h    host.Host
	m    *Manager
}

func testLogger(name string) *slog.Logger {
	if os.Getenv("PEERGROUP_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

func testConfig(dir, name string) Config {
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.NoSync = true
	if os.Getenv("PEERGROUP_TEST_POOL") != "" { // run the suite on pooled Raft streams
		cfg.RaftStreamPool = 2
	}
	cfg.DeadAfter = 1500 * time.Millisecond
	cfg.ReconcileInterval = 200 * time.Millisecond
	cfg.Logger = testLogger(name)
	return cfg
}

// newHost starts a real libp2p host listening on a free loopback TCP port.
func newHost(t testing.TB, key crypto.PrivKey) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// startNode starts a node (or restarts it on its data dir when n is given).
func startNode(t testing.TB, name string, mod func(*Config)) *testNode {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{name: name, key: key, dir: filepath.Join(t.TempDir(), name)}
	n.start(t, mod)
	t.Cleanup(func() { n.stop() })
	return n
}

func (n *testNode) start(t testing.TB, mod func(*Config)) {
	t.Helper()
	n.h = newHost(t, n.key)
	cfg := testConfig(n.dir, n.name)
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewManager(n.h, n.key, cfg)
	if err != nil {
		n.h.Close()
		t.Fatal(err)
	}
	n.m = m
}

// stop closes the manager then the host (a crash as far as the others can tell).
func (n *testNode) stop() {
	if n.m != nil {
		_ = n.m.Close()
		n.m = nil
	}
	if n.h != nil {
		_ = n.h.Close()
		n.h = nil
	}
}

func (n *testNode) id() peer.ID { return peer.ID(mustID(n.key)) }

func mustID(k crypto.PrivKey) peer.ID {
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return id
}

func (n *testNode) group(t testing.TB, id string) *Group {
	t.Helper()
	g, ok := n.m.Group(id)
	if !ok {
		t.Fatalf("%s is not in group %s", n.name, id)
	}
	return g
}

// eventually polls cond every 50ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
}

// agree checks that the nodes see the same leader (one of them), term and member set.
func agree(groupID string, want int, nodes ...*testNode) error {
	var leader peer.ID
	var term uint64
	for i, n := range nodes {
		g, ok := n.m.Group(groupID)
		if !ok {
			return fmt.Errorf("%s not in group", n.name)
		}
		st := g.Status()
		if st.Leader == "" {
			return fmt.Errorf("%s sees no leader", n.name)
		}
		if len(st.Members) != want {
			return fmt.Errorf("%s sees %d members, want %d", n.name, len(st.Members), want)
		}
		if i == 0 {
			leader, term = st.Leader, st.Term
			continue
		}
		if st.Leader != leader || st.Term != term {
			return fmt.Errorf("%s sees leader %s term %d, %s sees %s term %d", nodes[0].name, leader, term, n.name, st.Leader, st.Term)
		}
	}
	found := false
	for _, n := range nodes {
		found = found || n.id() == leader
	}
	if !found {
		return fmt.Errorf("leader %s is none of the nodes", leader)
	}
	return nil
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// threeMemberGroup creates a secret group on a and joins b and c.
func threeMemberGroup(t testing.TB, mod func(*Config)) (string, []*testNode) {
	t.Helper()
	a, b, c := startNode(t, "a", mod), startNode(t, "b", mod), startNode(t, "c", mod)
	ga, err := a.m.Create(ctxT(t, 20*time.Second), "films", PolicySecret, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{b, c} {
		if _, err := n.m.Join(ctxT(t, 30*time.Second), ga.Info(), Credential{Secret: "s3cret"}); err != nil {
			t.Fatalf("%s join: %v", n.name, err)
		}
	}
	return ga.ID(), []*testNode{a, b, c}
}

var _ = io.Discard

func TestMain(m *testing.M) {
	// go-libp2p-raft logs through go-log; its transport complains loudly when a test closes
	// a host under it.
	_ = logging.SetLogLevel("raftlib", "fatal")
	os.Exit(m.Run())
}
