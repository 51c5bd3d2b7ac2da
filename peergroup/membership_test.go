package peergroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestInvitePolicy(t *testing.T) {
	a, b, c := startNode(t, "a", nil), startNode(t, "b", nil), startNode(t, "c", nil)
	ga, err := a.m.Create(ctxT(t, 20*time.Second), "club", PolicyInvite, "")
	if err != nil {
		t.Fatal(err)
	}
	info := ga.Info()
	if _, err := b.m.Join(ctxT(t, 10*time.Second), info, Credential{}); !errors.Is(err, ErrBadInvitation) {
		t.Fatalf("join without invitation: %v", err)
	}
	forC, _ := ga.Invite(c.id(), time.Hour)
	if _, err := b.m.Join(ctxT(t, 10*time.Second), info, Credential{Invitation: forC}); !errors.Is(err, ErrBadInvitation) {
		t.Fatalf("join with someone else's invitation: %v", err)
	}
	expired, _ := SignInvitation(a.key, ga.ID(), b.id(), time.Now().Add(-time.Minute))
	if _, err := b.m.Join(ctxT(t, 10*time.Second), info, Credential{Invitation: expired}); !errors.Is(err, ErrBadInvitation) {
		t.Fatalf("join with an expired invitation: %v", err)
	}
	byOutsider, _ := SignInvitation(c.key, ga.ID(), b.id(), time.Now().Add(time.Hour))
	if _, err := b.m.Join(ctxT(t, 10*time.Second), info, Credential{Invitation: byOutsider}); !errors.Is(err, ErrBadInvitation) {
		t.Fatalf("join with an invitation from a non-member: %v", err)
	}
	tampered, _ := ga.Invite(b.id(), time.Hour)
	tampered[len(tampered)-1] ^= 1
	if _, err := b.m.Join(ctxT(t, 10*time.Second), info, Credential{Invitation: tampered}); !errors.Is(err, ErrBadInvitation) {
		t.Fatalf("join with a tampered invitation: %v", err)
	}
	forB, _ := ga.Invite(b.id(), time.Hour)
	gb, err := b.m.Join(ctxT(t, 20*time.Second), info, Credential{Invitation: forB})
	if err != nil {
		t.Fatal(err)
	}
	// A member other than the creator invites c; c joins through b (a follower redirects).
	invC, _ := gb.Invite(c.id(), time.Hour)
	infoViaB := info
	infoViaB.Contacts = []peer.AddrInfo{{ID: b.id(), Addrs: b.h.Addrs()}}
	if _, err := c.m.Join(ctxT(t, 20*time.Second), infoViaB, Credential{Invitation: invC}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "3 members agree", func() error { return agree(ga.ID(), 3, a, b, c) })
}

func TestLeaveAndExpel(t *testing.T) {
	id, nodes := threeMemberGroup(t, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	allVoters(t, id, 3, nodes...)
	d := startNode(t, "d", nil)
	if _, err := d.m.Join(ctxT(t, 20*time.Second), a.group(t, id).Info(), Credential{Secret: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "4 members", func() error { return agree(id, 4, a, b, c, d) })

	// b leaves cleanly: gone from everyone's state and from the Raft configuration, its
	// data deleted.
	if err := b.m.Leave(ctxT(t, 20*time.Second), "films"); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.m.Group(id); ok {
		t.Fatal("b still has the group")
	}
	if _, err := os.Stat(b.dir + "/groups/" + id); !os.IsNotExist(err) {
		t.Fatalf("b's group data still there: %v", err)
	}
	eventually(t, 20*time.Second, "3 members after leave", func() error {
		if err := agree(id, 3, a, c, d); err != nil {
			return err
		}
		conf, err := a.group(t, id).configuration()
		if err != nil {
			return err
		}
		if _, ok := conf[b.id()]; ok {
			return errors.New("b still in the raft configuration")
		}
		return nil
	})
	if ga := a.group(t, id); ga.IsMember(b.id()) || !ga.IsMember(c.id()) {
		t.Fatalf("IsMember after b left: b %v, c %v", ga.IsMember(b.id()), ga.IsMember(c.id()))
	}

	// d is expelled by a voter: it drops the group and may not come back.
	expeller := a
	if err := expeller.group(t, id).Expel(ctxT(t, 20*time.Second), d.id()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "expelled member drops the group", func() error {
		if _, ok := d.m.Group(id); ok {
			return errors.New("d still has the group")
		}
		return agree(id, 2, a, c)
	})
	_, err := d.m.Join(ctxT(t, 10*time.Second), a.group(t, id).Info(), Credential{Secret: "s3cret"})
	if !errors.Is(err, ErrBanned) {
		t.Fatalf("expelled peer rejoining: %v, want ErrBanned", err)
	}
	// The one who left may come back. The log it receives replays its first membership and
	// its leave before its new admission: only the new admission counts, so it keeps the group.
	g2, err := b.m.Join(ctxT(t, 20*time.Second), a.group(t, id).Info(), Credential{Secret: "s3cret"})
	if err != nil {
		t.Fatalf("rejoin after leave: %v", err)
	}
	if g2.meta.AdmitIndex == 0 {
		t.Fatal("the rejoin's admission index is not known")
	}
	if meta, err := readMeta(b.dir + "/groups/" + id); err != nil || meta.AdmitIndex != g2.meta.AdmitIndex {
		t.Fatalf("meta on disk: %+v, %v; want admission index %d", meta, err, g2.meta.AdmitIndex)
	}
	eventually(t, 20*time.Second, "3 members after rejoin", func() error { return agree(id, 3, a, b, c) })
}

func TestApplyForwardingAndAuthorization(t *testing.T) {
	id, nodes := threeMemberGroup(t, nil)
	leader, others := leaderNode(t, id, nodes)
	f := others[0].group(t, id)
	ctx := ctxT(t, 30*time.Second)

	// A follower's own commands are forwarded and visible locally when Apply returns.
	task := Task{ID: "t1", Kind: TaskDownload, URL: "http://origin/f", Size: 10 << 20, SliceSize: 1 << 20, Requester: others[0].id()}
	if err := f.Apply(ctx, &TaskAdd{Task: task}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.State().Tasks["t1"]; !ok {
		t.Fatal("forwarded command not applied locally when Apply returned")
	}
	// Leader duties are refused from followers; so is speaking for someone else.
	refused := map[string]Command{
		"assign":           &TaskAssign{TaskID: "t1", Term: f.Term(), Assignments: []Assignment{{0, others[0].id()}}},
		"liveness":         &MemberLive{PeerID: leader.id(), Alive: false},
		"update other":     &MemberUpdate{PeerID: others[1].id()},
		"leave for other":  &MemberRemove{PeerID: others[1].id(), Reason: ReasonLeave},
		"task for other":   &TaskAdd{Task: Task{ID: "t2", Kind: TaskDownload, URL: "u", Size: 1, SliceSize: 1, Requester: others[1].id()}},
		"content of other": &ContentAdd{Content: Content{ID: "c", Source: others[1].id()}},
		"proxy for other":  &ProxySet{ContentID: "c", Proxy: others[1].id()},
		"drop other proxy": &ProxyDrop{ContentID: "c", Proxy: others[1].id()},
	}
	for name, c := range refused {
		if err := f.Apply(ctx, c); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: %v, want ErrForbidden", name, err)
		}
	}
	// State rejections come back from the leader's FSM.
	if err := f.Apply(ctx, &SlicesDone{TaskID: "t1", Member: others[0].id(), Slices: []uint32{99}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("slice out of range: %v", err)
	}
	// The leader arranges: every live member gets slices, stamped with the current term.
	as, err := leader.group(t, id).ArrangeTask(ctx, "t1", seq(10), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := counts(as); len(c) != 3 {
		t.Fatalf("arrangement over %d members: %v", len(c), c)
	}
	if _, err := f.ArrangeTask(ctx, "t1", seq(1), nil, nil); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower arranging: %v", err)
	}
	eventually(t, 10*time.Second, "assignment replicated", func() error {
		tk := f.State().Tasks["t1"]
		if tk.Term != leader.group(t, id).Term() || tk.Slices[9].Assignee == "" {
			return fmt.Errorf("task at term %d", tk.Term)
		}
		return nil
	})
	// The requester reports completions in a batch; load drops back.
	if err := f.Apply(ctx, &SlicesDone{TaskID: "t1", Member: others[0].id(), Slices: seq(10)}); err != nil {
		t.Fatal(err)
	}
	for p, l := range f.State().Load {
		if l != 0 {
			t.Fatalf("load of %s is %d after all done", p, l)
		}
	}
}

func TestVoterCapAndPromotion(t *testing.T) {
	fast := func(c *Config) { c.MaxVoters = 3; c.DeadAfter = time.Second }
	a := startNode(t, "a", fast)
	ga, err := a.m.Create(ctxT(t, 20*time.Second), "big", PolicyOpen, "")
	if err != nil {
		t.Fatal(err)
	}
	nodes := []*testNode{a}
	for _, name := range []string{"b", "c", "d", "e"} {
		n := startNode(t, name, fast)
		if _, err := n.m.Join(ctxT(t, 20*time.Second), ga.Info(), Credential{}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	allVoters(t, ga.ID(), 3, nodes...)
	// Kill a voter that is not the leader: a non-voter is promoted in its place.
	leader, _ := leaderNode(t, ga.ID(), nodes)
	var victim *testNode
	for _, m := range leader.group(t, ga.ID()).Status().Members {
		if m.Voter && m.PeerID != leader.id() {
			for _, n := range nodes {
				if n.id() == m.PeerID {
					victim = n
				}
			}
			break
		}
	}
	victim.stop()
	eventually(t, 30*time.Second, "dead voter replaced", func() error {
		st := leader.group(t, ga.ID()).State()
		voters := 0
		for _, m := range st.Members {
			if m.Voter && m.PeerID == victim.id() {
				return errors.New("victim still a voter")
			}
			if m.Voter {
				voters++
			}
			if m.PeerID == victim.id() && m.Alive {
				return errors.New("victim still alive in the state")
			}
		}
		if voters != 3 {
			return fmt.Errorf("%d voters", voters)
		}
		return nil
	})
	if live := leader.group(t, ga.ID()).LiveMembers(); len(live) != 4 {
		t.Fatalf("live members %d, want 4", len(live))
	}
}

// A member that does not know a peer refuses its Raft RPCs, asks the members it knows, and
// from then on accepts that peer if it is a member; outsiders stay refused.
func TestRaftGateLearnsMissedMembers(t *testing.T) {
	id, nodes := threeMemberGroup(t, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	eventually(t, 20*time.Second, "agreement", func() error { return agree(id, 3, nodes...) })
	outsider := startNode(t, "x", nil)

	gc := c.group(t, id)
	forget := func() {
		gc.mu.Lock()
		delete(gc.members, b.id())
		delete(gc.servers, b.id())
		delete(gc.seed, b.id())
		gc.lastRefresh = time.Time{}
		gc.mu.Unlock()
	}
	forget()
	if gc.allowRaftPeer(b.id()) {
		// The change loop may have re-added b from c's own state in between: try again.
		forget()
		if gc.allowRaftPeer(b.id()) {
			t.Skip("could not make c forget b")
		}
	}
	eventually(t, 10*time.Second, "c learns b from a", func() error {
		gc.mu.Lock()
		defer gc.mu.Unlock()
		if !gc.seed[b.id()] && !gc.members[b.id()] {
			return errors.New("b still unknown to c")
		}
		return nil
	})
	if gc.allowRaftPeer(outsider.id()) {
		t.Fatal("outsider allowed on the raft protocol")
	}
	time.Sleep(refreshEvery + 100*time.Millisecond)
	if gc.allowRaftPeer(outsider.id()) {
		t.Fatal("outsider allowed after a refresh")
	}
	// An outsider's stream on the group's Raft protocol is reset.
	outsider.h.Peerstore().AddAddrs(a.id(), a.h.Addrs(), time.Hour)
	s, err := outsider.h.NewStream(ctxT(t, 5*time.Second), a.id(), RaftProtocol(id))
	if err == nil {
		_, _ = s.Write([]byte{0})
		buf := make([]byte, 1)
		if _, err := s.Read(buf); err == nil {
			t.Fatal("outsider's raft stream was served")
		}
		s.Close()
	}
}

// TestNoteSelf: a node counts as removed only when a state at or past its admission listed
// it and a later one does not; the replay of an earlier membership that ended does not count.
func TestNoteSelf(t *testing.T) {
	type obs struct {
		listed      bool
		idx         uint64
		wantRemoved bool
	}
	for _, tc := range []struct {
		name  string
		admit uint64
		seq   []obs
	}{
		{"rejoin replays the old membership", 10, []obs{{true, 3, false}, {false, 6, false}, {true, 10, false}, {true, 11, false}}},
		{"removed after the admission", 10, []obs{{true, 3, false}, {false, 6, false}, {true, 10, false}, {false, 14, true}}},
		{"creator or an older leader", 0, []obs{{true, 1, false}, {false, 6, true}}},
		{"not yet admitted", 10, []obs{{false, 2, false}, {false, 9, false}}},
	} {
		g := &Group{meta: groupMeta{AdmitIndex: tc.admit}}
		for i, o := range tc.seq {
			if got := g.noteSelf(o.listed, o.idx); got != o.wantRemoved {
				t.Errorf("%s: step %d (listed %v at %d): removed %v, want %v", tc.name, i, o.listed, o.idx, got, o.wantRemoved)
			}
		}
	}
	g := &Group{meta: groupMeta{AdmitIndex: 1}, leaving: true}
	g.noteSelf(true, 1)
	if g.noteSelf(false, 2) {
		t.Error("a node that is leaving counts its own removal as one")
	}
}

// TestGroupMetaAdmitIndex: the admission index survives a round trip, and a meta file written
// before it existed still opens (with 0).
func TestGroupMetaAdmitIndex(t *testing.T) {
	dir := t.TempDir()
	gm := groupMeta{Header: Header{ID: "0123456789abcdef01234567", Name: "films", Policy: PolicySecret, Creator: fixedPeers(t, 1)[0], Created: t0},
		Key: bytes.Repeat([]byte{7}, keyLen), AdmitIndex: 42}
	b := gm.marshal()
	if err := os.WriteFile(filepath.Join(dir, metaFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readMeta(dir)
	if err != nil || got.AdmitIndex != 42 || got.Header.Name != "films" || !bytes.Equal(got.Key, gm.Key) {
		t.Fatalf("read back %+v, %v", got, err)
	}
	old := b[:len(b)-1] // 42 is one uvarint byte: without it, the format before the index
	if err := os.WriteFile(filepath.Join(dir, metaFile), old, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readMeta(dir); err != nil || got.AdmitIndex != 0 {
		t.Fatalf("old meta: %+v, %v", got, err)
	}
}
