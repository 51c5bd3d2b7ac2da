package peergroup

import (
	"errors"
	"os"
	"testing"
	"time"
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
