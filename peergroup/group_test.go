package peergroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/internal/bincodec"
)

func TestThreeMembersAgreeAndWrongSecretRejected(t *testing.T) {
	id, nodes := threeMemberGroup(t, nil)
	eventually(t, 20*time.Second, "agreement on leader, term and 3 members", func() error { return agree(id, 3, nodes...) })
	// All three become voters once caught up.
	eventually(t, 20*time.Second, "3 voters", func() error {
		for _, n := range nodes {
			for _, m := range n.group(t, id).Status().Members {
				if !m.Voter || !m.Ready {
					return errors.New(n.name + " sees a non-voter or unready member")
				}
			}
		}
		return nil
	})

	d := startNode(t, "d", nil)
	info := nodes[0].group(t, id).Info()
	_, err := d.m.Join(ctxT(t, 20*time.Second), info, Credential{Secret: "guess"})
	if !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("join with a wrong secret: %v, want ErrWrongSecret", err)
	}
	if _, ok := d.m.Group(id); ok {
		t.Fatal("d has the group after a refused join")
	}
	if entries, _ := os.ReadDir(d.dir + "/groups"); len(entries) != 0 {
		t.Fatalf("d kept %d group dirs after a refused join", len(entries))
	}
	for _, n := range nodes {
		if n.group(t, id).State().IsMember(d.id()) {
			t.Fatalf("%s lists d as a member", n.name)
		}
	}
	// No secret at all for a secret group.
	if _, err := d.m.Join(ctxT(t, 10*time.Second), info, Credential{}); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("join without a secret: %v", err)
	}
	// The group advert body round-trips and carries no secret material.
	b := EncodeGroupInfo(info)
	back, err := DecodeGroupInfo(b)
	if err != nil || back.ID != id || back.Policy != PolicySecret || len(back.Contacts) != 3 || back.Members != 3 {
		t.Fatalf("group info round trip: %+v %v", back, err)
	}
}

func leaderNode(t *testing.T, id string, nodes []*testNode) (*testNode, []*testNode) {
	t.Helper()
	var leader *testNode
	eventually(t, 20*time.Second, "a leader", func() error {
		for _, n := range nodes {
			if n.m != nil && n.group(t, id).IsLeader() {
				leader = n
				return nil
			}
		}
		return errors.New("no leader")
	})
	var others []*testNode
	for _, n := range nodes {
		if n != leader {
			others = append(others, n)
		}
	}
	return leader, others
}

func allVoters(t *testing.T, id string, want int, nodes ...*testNode) {
	t.Helper()
	eventually(t, 20*time.Second, "voters", func() error {
		for _, n := range nodes {
			voters := 0
			for _, m := range n.group(t, id).Status().Members {
				if m.Voter {
					voters++
				}
			}
			if voters != want {
				return fmt.Errorf("%s sees %d voters, want %d", n.name, voters, want)
			}
		}
		return nil
	})
}

func TestLeaderFailoverAndRestartRejoin(t *testing.T) {
	id, nodes := threeMemberGroup(t, nil)
	allVoters(t, id, 3, nodes...)
	old, others := leaderNode(t, id, nodes)
	oldTerm := old.group(t, id).Term()

	killed := time.Now()
	old.stop()
	eventually(t, 20*time.Second, "new leader among the other two", func() error {
		if err := agree(id, 3, others...); err != nil {
			return err
		}
		if st := others[0].group(t, id).Status(); st.Leader == old.id() || st.Term <= oldTerm {
			return fmt.Errorf("leader %s term %d", st.Leader, st.Term)
		}
		return nil
	})
	t.Logf("failover: new leader after %s", time.Since(killed).Round(time.Millisecond))

	// The group keeps working without the old leader: a follower's command is forwarded.
	follower := others[0]
	if follower.group(t, id).IsLeader() {
		follower = others[1]
	}
	if err := follower.group(t, id).Apply(ctxT(t, 10*time.Second), &ContentAdd{Content: Content{ID: "c1", Name: "while-down", Size: 1, Source: follower.id()}}); err != nil {
		t.Fatal(err)
	}

	// The killed node restarts on its data dir (new port): it rejoins as a follower and
	// catches up with what was committed while it was down.
	old.start(t, nil)
	eventually(t, 20*time.Second, "restarted node caught up as follower", func() error {
		g, ok := old.m.Group(id)
		if !ok {
			return errors.New("group not reopened")
		}
		if g.IsLeader() {
			return errors.New("restarted node is leader")
		}
		if _, ok := g.State().Catalogue["c1"]; !ok {
			return errors.New("has not caught up")
		}
		return agree(id, 3, nodes...)
	})
	// Its new address reaches the others' state.
	eventually(t, 20*time.Second, "new address announced", func() error {
		m, _ := others[0].group(t, id).State().Member(old.id())
		for _, a := range m.Addrs {
			for _, b := range old.h.Addrs() {
				if a.Equal(b) {
					return nil
				}
			}
		}
		return fmt.Errorf("others still see %v, node listens on %v", m.Addrs, old.h.Addrs())
	})
}

func TestHostInTwoGroups(t *testing.T) {
	a, b := startNode(t, "a", nil), startNode(t, "b", nil)
	g1, err := a.m.Create(ctxT(t, 20*time.Second), "one", PolicyOpen, "")
	if err != nil {
		t.Fatal(err)
	}
	g2, err := b.m.Create(ctxT(t, 20*time.Second), "two", PolicyOpen, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.Join(ctxT(t, 20*time.Second), g1.Info(), Credential{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Join(ctxT(t, 20*time.Second), g2.Info(), Credential{}); err != nil {
		t.Fatal(err)
	}
	if len(a.m.Groups()) != 2 || len(b.m.Groups()) != 2 {
		t.Fatalf("groups: a %d b %d", len(a.m.Groups()), len(b.m.Groups()))
	}
	// Each node commits in both groups, as leader in one and follower in the other.
	for _, n := range []*testNode{a, b} {
		for _, gid := range []string{g1.ID(), g2.ID()} {
			c := &ContentAdd{Content: Content{ID: "from-" + n.name, Name: n.name, Size: 1, Source: n.id()}}
			if err := n.group(t, gid).Apply(ctxT(t, 10*time.Second), c); err != nil {
				t.Fatalf("%s in %s: %v", n.name, gid, err)
			}
		}
	}
	for _, n := range []*testNode{a, b} {
		for _, gid := range []string{g1.ID(), g2.ID()} {
			eventually(t, 10*time.Second, "both entries", func() error {
				if cat := n.group(t, gid).State().Catalogue; len(cat) != 2 {
					return fmt.Errorf("%s sees %d entries in %s", n.name, len(cat), gid)
				}
				return nil
			})
		}
		if g, _ := n.m.Group("one"); g.ID() != g1.ID() {
			t.Fatal("lookup by name")
		}
	}
}

// A peer that answers a join for a secret group without knowing the secret is caught: the
// joiner refuses its acceptance (ErrBadLeader), and the secret never reaches disk.
func TestFakeLeaderAndSecretNeverStored(t *testing.T) {
	id, nodes := threeMemberGroup(t, nil)
	for _, n := range nodes {
		filepath.WalkDir(n.dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, _ := os.ReadFile(path)
			if bytes.Contains(b, []byte("s3cret")) {
				t.Errorf("%s: secret stored in %s", n.name, path)
			}
			return nil
		})
	}
	info := nodes[0].group(t, id).Info()
	if bytes.Contains(EncodeGroupInfo(info), []byte("s3cret")) {
		t.Fatal("secret in the group info")
	}

	fake := startNode(t, "fake", nil)
	fake.h.SetStreamHandler(JoinProtocol, func(s network.Stream) {
		defer s.Close()
		r := bufio.NewReader(s)
		var req joinRequest
		if expectFrame(r, maxJoinFrame, msgJoinRequest, req.decode) != nil {
			return
		}
		_ = writeFrame(s, msgJoinChallenge, bincodec.Encode((&joinChallenge{Nonce: make([]byte, nonceLen)}).encode))
		var pr joinProofMsg
		if expectFrame(r, maxJoinFrame, msgJoinProof, pr.decode) != nil {
			return
		}
		acc := &joinAccept{Header: Header{ID: id, Name: "films", Policy: PolicySecret, Creator: fake.id()}, Leader: fake.id(), Term: 1, LeaderProof: make([]byte, 32)}
		_ = writeFrame(s, msgJoinAccept, bincodec.Encode(acc.encode))
	})
	j := startNode(t, "j", nil)
	lure := info
	lure.Contacts = []peer.AddrInfo{{ID: fake.id(), Addrs: fake.h.Addrs()}}
	if _, err := j.m.Join(ctxT(t, 20*time.Second), lure, Credential{Secret: "s3cret"}); !errors.Is(err, ErrBadLeader) {
		t.Fatalf("join through a fake leader: %v, want ErrBadLeader", err)
	}
	if len(j.m.Groups()) != 0 {
		t.Fatal("joiner kept a group after a fake acceptance")
	}
}

func TestLeaderLeaves(t *testing.T) {
	id, nodes := threeMemberGroup(t, nil)
	allVoters(t, id, 3, nodes...)
	leader, others := leaderNode(t, id, nodes)
	if err := leader.m.Leave(ctxT(t, 20*time.Second), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the two others carry on", func() error {
		if err := agree(id, 2, others...); err != nil {
			return err
		}
		if st := others[0].group(t, id).Status(); st.Leader == leader.id() {
			return errors.New("old leader still leads")
		}
		return nil
	})
	if err := others[1].group(t, id).Apply(ctxT(t, 10*time.Second), &ContentAdd{Content: Content{ID: "after", Source: others[1].id()}}); err != nil {
		t.Fatal(err)
	}
	// Two members: one voter.
	allVoters(t, id, 1, others...)
}

// Pooled Raft streams (Config.RaftStreamPool) interoperate with go-libp2p-raft's transport
// and survive a leader's death.
func TestPooledRaftStreams(t *testing.T) {
	i := 0
	mixed := func(c *Config) { // a and c pool, b does not
		if i%2 == 0 {
			c.RaftStreamPool = 2
		}
		i++
	}
	id, nodes := threeMemberGroup(t, mixed)
	allVoters(t, id, 3, nodes...)
	old, others := leaderNode(t, id, nodes)
	old.stop()
	eventually(t, 20*time.Second, "new leader", func() error {
		if err := agree(id, 3, others...); err != nil {
			return err
		}
		if others[0].group(t, id).Leader() == old.id() {
			return errors.New("old leader")
		}
		return nil
	})
	if err := others[0].group(t, id).Apply(ctxT(t, 10*time.Second), &ContentAdd{Content: Content{ID: "x", Source: others[0].id()}}); err != nil {
		t.Fatal(err)
	}
}
