package peergroup

import (
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func seq(n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(i)
	}
	return out
}

func counts(as []Assignment) map[peer.ID]int {
	c := make(map[peer.ID]int)
	for _, a := range as {
		c[a.Member]++
	}
	return c
}

// checkBasic asserts what every arrangement must satisfy: one assignment per slice, in order,
// only to eligible members, and the returned load is the input load plus the assignments.
func checkBasic(t *testing.T, in ArrangeInput, as []Assignment, load map[peer.ID]int64) {
	t.Helper()
	if len(as) != len(in.Slices) {
		t.Fatalf("%d assignments for %d slices", len(as), len(in.Slices))
	}
	eligible := make(map[peer.ID]bool)
	for _, p := range in.Members {
		eligible[p] = true
	}
	for _, p := range in.Exclude {
		delete(eligible, p)
	}
	for i, a := range as {
		if a.Slice != in.Slices[i] {
			t.Fatalf("assignment %d is for slice %d, want %d", i, a.Slice, in.Slices[i])
		}
		if !eligible[a.Member] {
			t.Fatalf("slice %d given to ineligible member %s", a.Slice, a.Member)
		}
	}
	c := counts(as)
	for p := range eligible {
		if load[p] != in.Load[p]+int64(c[p]) {
			t.Fatalf("load of %s is %d, want %d + %d", p, load[p], in.Load[p], c[p])
		}
	}
}

func TestArrangeEqualLoadBalancedWithinOne(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	all := testPeers(t, 12)
	for iter := 0; iter < 500; iter++ {
		members := all[:1+r.IntN(len(all))]
		base := int64(r.IntN(5))
		load := make(map[peer.ID]int64)
		for _, p := range members {
			load[p] = base
		}
		in := ArrangeInput{Slices: seq(r.IntN(300)), Members: members, Load: load}
		as, out, err := Arrange(in)
		if err != nil {
			t.Fatal(err)
		}
		checkBasic(t, in, as, out)
		c := counts(as)
		lo, hi := len(in.Slices), 0
		for _, p := range members {
			lo, hi = min(lo, c[p]), max(hi, c[p])
		}
		if hi-lo > 1 {
			t.Fatalf("iter %d: %d members, %d slices: counts range %d..%d", iter, len(members), len(in.Slices), lo, hi)
		}
	}
}

func TestArrangeRespectsExistingLoad(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	all := testPeers(t, 10)
	for iter := 0; iter < 500; iter++ {
		members := all[:1+r.IntN(len(all))]
		load := make(map[peer.ID]int64)
		for _, p := range members {
			load[p] = int64(r.IntN(20))
		}
		in := ArrangeInput{Slices: seq(r.IntN(100)), Members: members, Load: load}
		as, out, err := Arrange(in)
		if err != nil {
			t.Fatal(err)
		}
		checkBasic(t, in, as, out)
		// Greedy least-loaded: whoever got a slice ends at most one above the least loaded.
		minFinal := int64(1 << 62)
		for _, p := range members {
			minFinal = min(minFinal, out[p])
		}
		c := counts(as)
		for _, p := range members {
			if c[p] > 0 && out[p] > minFinal+1 {
				t.Fatalf("iter %d: %s got %d slices and ends at %d, least loaded ends at %d", iter, p, c[p], out[p], minFinal)
			}
		}
		// A member loaded above everyone's final level gets nothing.
		for _, p := range members {
			if load[p] > minFinal+1 && c[p] != 0 {
				t.Fatalf("iter %d: overloaded %s (load %d) got %d slices", iter, p, load[p], c[p])
			}
		}
		if in.Load[members[0]] != load[members[0]] {
			t.Fatal("input load map modified")
		}
	}
}

func TestArrangeExcludedNeverAssigned(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	all := testPeers(t, 8)
	for iter := 0; iter < 500; iter++ {
		var excl []peer.ID
		for _, p := range all {
			if r.IntN(3) == 0 {
				excl = append(excl, p)
			}
		}
		load := map[peer.ID]int64{}
		for _, p := range all {
			load[p] = int64(r.IntN(3))
		}
		missing := seq(1 + r.IntN(50))
		as, out, err := Rearrange(missing, all, load, excl)
		if len(excl) == len(all) {
			if !errors.Is(err, ErrNoMembers) {
				t.Fatalf("all excluded: err %v, want ErrNoMembers", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		checkBasic(t, ArrangeInput{Slices: missing, Members: all, Load: load, Exclude: excl}, as, out)
		for _, a := range as {
			if slices.Contains(excl, a.Member) {
				t.Fatalf("excluded %s got slice %d", a.Member, a.Slice)
			}
		}
	}
}

func TestArrangeTiesByPeerIDAndDeterministic(t *testing.T) {
	ps := testPeers(t, 4) // sorted
	shuffled := []peer.ID{ps[2], ps[0], ps[3], ps[1]}
	as, _, err := Arrange(ArrangeInput{Slices: seq(6), Members: shuffled})
	if err != nil {
		t.Fatal(err)
	}
	want := []peer.ID{ps[0], ps[1], ps[2], ps[3], ps[0], ps[1]}
	for i, a := range as {
		if a.Member != want[i] {
			t.Fatalf("slice %d to %s, want %s", i, a.Member, want[i])
		}
	}
	again, _, _ := Arrange(ArrangeInput{Slices: seq(6), Members: []peer.ID{ps[1], ps[3], ps[0], ps[2], ps[1]}})
	if !slices.Equal(as, again) {
		t.Fatal("same input in another order (and a duplicate member) gave another arrangement")
	}
}

func TestArrangeLeastLoadedFirst(t *testing.T) {
	ps := testPeers(t, 3)
	load := map[peer.ID]int64{ps[0]: 5, ps[1]: 0, ps[2]: 2}
	as, out, err := Arrange(ArrangeInput{Slices: seq(4), Members: ps, Load: load})
	if err != nil {
		t.Fatal(err)
	}
	// ps1: 0→1→2 (slices 0,1), then ps1 and ps2 tie at 2: ps with smaller ID wins.
	got := []peer.ID{as[0].Member, as[1].Member}
	if !slices.Equal(got, []peer.ID{ps[1], ps[1]}) {
		t.Fatalf("first two slices to %v, want ps1 twice", got)
	}
	if out[ps[0]] != 5 || out[ps[1]]+out[ps[2]] != 6 {
		t.Fatalf("final load %v", out)
	}
}

func TestArrangePrefersHolders(t *testing.T) {
	ps := testPeers(t, 4)
	load := map[peer.ID]int64{ps[0]: 10}
	holders := map[uint32][]peer.ID{
		0: {ps[0]},        // the only holder, heavily loaded: still preferred
		1: {ps[3], ps[2]}, // two holders: the least loaded (tie → smaller ID ps2)
		2: {ps[1]},        // holder excluded below: falls back to the heap
	}
	in := ArrangeInput{Slices: seq(4), Members: ps, Load: load, Exclude: []peer.ID{ps[1]}, Holders: holders, PreferHolders: true}
	as, out, err := Arrange(in)
	if err != nil {
		t.Fatal(err)
	}
	checkBasic(t, in, as, out)
	if as[0].Member != ps[0] || as[1].Member != ps[2] {
		t.Fatalf("holders not preferred: %v", as)
	}
	if as[2].Member == ps[1] {
		t.Fatal("excluded holder got its slice")
	}
	// Without PreferHolders the holder map is ignored.
	in.PreferHolders = false
	as, _, _ = Arrange(in)
	if as[0].Member == ps[0] {
		t.Fatal("holder preferred although PreferHolders is off")
	}
}

func TestArrangeNoSlicesNoMembers(t *testing.T) {
	as, load, err := Arrange(ArrangeInput{})
	if err != nil || len(as) != 0 || load == nil {
		t.Fatalf("empty arrange: %v %v %v", as, load, err)
	}
	if _, _, err := Arrange(ArrangeInput{Slices: seq(1)}); !errors.Is(err, ErrNoMembers) {
		t.Fatalf("no members: %v", err)
	}
	ps := testPeers(t, 2)
	in := map[peer.ID]int64{ps[0]: 3}
	_, out, _ := Arrange(ArrangeInput{Slices: seq(2), Members: ps[1:], Load: in})
	if out[ps[0]] != 3 || !maps.Equal(in, map[peer.ID]int64{ps[0]: 3}) {
		t.Fatalf("non-candidate load lost or input modified: %v %v", out, in)
	}
}

func BenchmarkArrange(b *testing.B) {
	ps := testPeers(b, 8)
	in := ArrangeInput{Slices: seq(4096), Members: ps, Load: map[peer.ID]int64{}}
	for b.Loop() {
		if _, _, err := Arrange(in); err != nil {
			b.Fatal(err)
		}
	}
}
