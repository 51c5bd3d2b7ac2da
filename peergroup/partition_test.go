package peergroup

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// mockCluster starts n nodes on a mocknet (links can be cut and healed).
func mockCluster(t *testing.T, n int) (mocknet.Mocknet, []*testNode) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	var nodes []*testNode
	for i := 0; i < n; i++ {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		name := string(rune('a' + i))
		node := &testNode{name: name, key: h.Peerstore().PrivKey(h.ID()), dir: filepath.Join(t.TempDir(), name), h: h}
		m, err := NewManager(h, node.key, testConfig(node.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		node.m = m
		t.Cleanup(func() { node.stop() })
		nodes = append(nodes, node)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	return mn, nodes
}

// logsAgree checks that the nodes' Raft logs hold the same entries (terms and data) over
// the range they all still keep, end at the same index, and that their states are equal.
func logsAgree(id string, nodes ...*testNode) error {
	var last, first uint64
	for i, n := range nodes {
		g, _ := n.m.Group(id)
		f, _ := g.store.FirstIndex()
		l, _ := g.store.LastIndex()
		if i == 0 || f > first {
			first = f
		}
		if i == 0 {
			last = l
		} else if l != last {
			return fmt.Errorf("%s ends its log at %d, %s at %d", nodes[0].name, last, n.name, l)
		}
	}
	for idx := first; idx <= last; idx++ {
		var ref raft.Log
		for i, n := range nodes {
			g, _ := n.m.Group(id)
			var e raft.Log
			if err := g.store.GetLog(idx, &e); err != nil {
				return fmt.Errorf("%s: entry %d: %v", n.name, idx, err)
			}
			if i == 0 {
				ref = e
			} else if e.Term != ref.Term || e.Type != ref.Type || !bytes.Equal(e.Data, ref.Data) {
				return fmt.Errorf("entry %d differs between %s (term %d) and %s (term %d)", idx, nodes[0].name, ref.Term, n.name, e.Term)
			}
		}
	}
	var ref []byte
	for i, n := range nodes {
		g, _ := n.m.Group(id)
		if g.raft.AppliedIndex() < last {
			return fmt.Errorf("%s applied %d of %d", n.name, g.raft.AppliedIndex(), last)
		}
		b := marshalFSM(g.fsm)
		if i == 0 {
			ref = b
		} else if !bytes.Equal(b, ref) {
			return fmt.Errorf("state of %s differs from %s", n.name, nodes[0].name)
		}
	}
	return nil
}

func TestPartitionedLeaderReplacedAndStepsDownOnHeal(t *testing.T) {
	mn, nodes := mockCluster(t, 3)
	a := nodes[0]
	ga, err := a.m.Create(ctxT(t, 20*time.Second), "p", PolicyOpen, "")
	if err != nil {
		t.Fatal(err)
	}
	id := ga.ID()
	for _, n := range nodes[1:] {
		if _, err := n.m.Join(ctxT(t, 20*time.Second), ga.Info(), Credential{}); err != nil {
			t.Fatal(err)
		}
	}
	allVoters(t, id, 3, nodes...)
	old, others := leaderNode(t, id, nodes)
	oldTerm := old.group(t, id).Term()

	// Isolate the leader.
	for _, o := range others {
		if err := mn.UnlinkPeers(old.h.ID(), o.h.ID()); err != nil {
			t.Fatal(err)
		}
		_ = mn.DisconnectPeers(old.h.ID(), o.h.ID())
	}
	// The isolated leader may still append this entry, but can never commit it.
	lostErr := make(chan error, 1)
	go func() {
		lostErr <- old.group(t, id).Apply(ctxT(t, 3*time.Second), &ContentAdd{Content: Content{ID: "lost", Source: old.id()}})
	}()

	eventually(t, 20*time.Second, "majority elects a new leader", func() error {
		if err := agree(id, 3, others...); err != nil {
			return err
		}
		if st := others[0].group(t, id).Status(); st.Leader == old.id() || st.Term <= oldTerm {
			return fmt.Errorf("leader %s term %d", st.Leader, st.Term)
		}
		return nil
	})
	eventually(t, 10*time.Second, "isolated leader steps down", func() error {
		if old.group(t, id).IsLeader() {
			return errors.New("still leader")
		}
		return nil
	})
	if err := <-lostErr; err == nil {
		t.Fatal("command on the isolated leader reported committed")
	}
	// The majority keeps committing.
	if err := others[0].group(t, id).Apply(ctxT(t, 10*time.Second), &ContentAdd{Content: Content{ID: "kept", Source: others[0].id()}}); err != nil {
		t.Fatal(err)
	}

	// Heal: the old leader follows the new one, its log is repaired to match.
	for _, o := range others {
		if _, err := mn.LinkPeers(old.h.ID(), o.h.ID()); err != nil {
			t.Fatal(err)
		}
		if _, err := mn.ConnectPeers(old.h.ID(), o.h.ID()); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "healed: one leader, logs agree", func() error {
		if err := agree(id, 3, nodes...); err != nil {
			return err
		}
		return logsAgree(id, nodes...)
	})
	cat := old.group(t, id).State().Catalogue
	if _, ok := cat["kept"]; !ok {
		t.Fatal("old leader misses the entry committed during the partition")
	}
	if _, ok := cat["lost"]; ok {
		t.Fatal("uncommitted entry of the isolated leader survived")
	}
}
