package coop

import (
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"
)

// testPeers returns n fresh peer IDs sorted ascending.
func testPeers(t testing.TB, n int) []peer.ID {
	t.Helper()
	out := make([]peer.ID, n)
	for i := range out {
		_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = peer.IDFromPublicKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	slices.SortFunc(out, func(a, b peer.ID) int { return strings.Compare(string(a), string(b)) })
	return out
}

func seq(n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(i)
	}
	return out
}

// byMember groups a plan's slices by member.
func byMember(as []peergroup.Assignment) map[peer.ID][]uint32 {
	m := make(map[peer.ID][]uint32)
	for _, a := range as {
		m[a.Member] = append(m[a.Member], a.Slice)
	}
	return m
}

// runsOf counts the contiguous runs in sorted slices.
func runsOf(s []uint32) int {
	n := 0
	for i, v := range s {
		if i == 0 || v != s[i-1]+1 {
			n++
		}
	}
	return n
}

func TestPlanBalancedContiguous(t *testing.T) {
	ps := testPeers(t, 4)
	as, err := Plan(PlanInput{Slices: seq(48), Members: ps})
	if err != nil {
		t.Fatal(err)
	}
	checkEverySliceOnce(t, as, 48)
	bm := byMember(as)
	for _, p := range ps {
		if len(bm[p]) != 12 {
			t.Fatalf("%s got %d slices, want 12", p, len(bm[p]))
		}
		if runsOf(bm[p]) != 1 {
			t.Fatalf("%s got %v: not one contiguous block", p, bm[p])
		}
	}
}

func TestPlanRespectsLoadAndExclusion(t *testing.T) {
	ps := testPeers(t, 4)
	load := map[peer.ID]int64{ps[0]: 10, ps[1]: 0, ps[2]: 0, ps[3]: 0}
	as, err := Plan(PlanInput{Slices: seq(10), Members: ps, Load: load, Exclude: []peer.ID{ps[3]}})
	if err != nil {
		t.Fatal(err)
	}
	bm := byMember(as)
	if len(bm[ps[3]]) != 0 {
		t.Fatal("excluded member got slices")
	}
	if len(bm[ps[0]]) != 0 {
		t.Fatalf("member with load 10 got %d of 10 slices while others had 0", len(bm[ps[0]]))
	}
	if len(bm[ps[1]])+len(bm[ps[2]]) != 10 || abs(len(bm[ps[1]])-len(bm[ps[2]])) > 1 {
		t.Fatalf("unbalanced: %d and %d", len(bm[ps[1]]), len(bm[ps[2]]))
	}
	if load[ps[0]] != 10 {
		t.Fatal("input load map modified")
	}
	if _, err := Plan(PlanInput{Slices: seq(3), Members: ps[:1], Exclude: ps[:1]}); !errors.Is(err, ErrNoMembers) {
		t.Fatalf("no eligible member: err %v", err)
	}
	if as, err := Plan(PlanInput{Members: ps}); err != nil || as != nil {
		t.Fatalf("nothing to place: %v %v", as, err)
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestPlanPrefersHolders(t *testing.T) {
	ps := testPeers(t, 4)
	// ps[0] holds everything (it downloaded the file), each other member holds its share.
	holders := make(map[uint32][]peer.ID)
	for i := range uint32(12) {
		holders[i] = []peer.ID{ps[0], ps[1+i%3]}
	}
	as, err := Plan(PlanInput{Slices: seq(16), Members: ps, Holders: holders})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.Slice < 12 && !slices.Contains(holders[a.Slice], a.Member) {
			t.Fatalf("cached slice %d went to %s, not a holder", a.Slice, a.Member)
		}
	}
	bm := byMember(as)
	for _, p := range ps {
		if len(bm[p]) < 3 || len(bm[p]) > 5 {
			t.Fatalf("holders not balanced: %s got %d of 16", p, len(bm[p]))
		}
	}
	// A holder that is excluded does not count.
	as, err = Plan(PlanInput{Slices: []uint32{0}, Members: ps, Holders: map[uint32][]peer.ID{0: {ps[0]}}, Exclude: ps[:1]})
	if err != nil || as[0].Member == ps[0] {
		t.Fatalf("excluded holder chosen: %v %v", as, err)
	}
}

func TestPlanNoRangesOneMember(t *testing.T) {
	ps := testPeers(t, 4)
	as, err := Plan(PlanInput{Slices: seq(9), Members: ps, NoRanges: true, Prefer: ps[2]})
	if err != nil {
		t.Fatal(err)
	}
	if bm := byMember(as); len(bm) != 1 || len(bm[ps[2]]) != 9 {
		t.Fatalf("without ranges every slice goes to the preferred member: %v", bm)
	}
	// The preferred member excluded: the least loaded gets all.
	as, err = Plan(PlanInput{Slices: seq(9), Members: ps, NoRanges: true, Prefer: ps[2], Exclude: ps[2:3],
		Load: map[peer.ID]int64{ps[0]: 3, ps[1]: 1, ps[3]: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if bm := byMember(as); len(bm) != 1 || len(bm[ps[1]]) != 9 {
		t.Fatalf("want all on the least loaded: %v", bm)
	}
}

func TestPlanMaxFetchers(t *testing.T) {
	ps := testPeers(t, 6)
	as, err := Plan(PlanInput{Slices: seq(30), Members: ps, MaxFetchers: 2, Load: map[peer.ID]int64{ps[0]: 5}})
	if err != nil {
		t.Fatal(err)
	}
	bm := byMember(as)
	if len(bm) != 2 {
		t.Fatalf("%d members fetch, cap 2", len(bm))
	}
	if len(bm[ps[0]]) != 0 {
		t.Fatal("the loaded member was chosen over idle ones")
	}
}

func TestRearrangePlanExcludesFailed(t *testing.T) {
	ps := testPeers(t, 3)
	missing := []uint32{4, 5, 6, 9}
	as, err := Plan(PlanInput{Slices: missing, Members: ps, Exclude: []peer.ID{ps[1]}})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]uint32, 0, len(as))
	for _, a := range as {
		if a.Member == ps[1] {
			t.Fatal("failed member re-assigned")
		}
		got = append(got, a.Slice)
	}
	if !slices.Equal(got, missing) {
		t.Fatalf("re-plan placed %v, want %v", got, missing)
	}
}

func TestCoalesce(t *testing.T) {
	for _, tc := range []struct {
		idx      []int
		max, par int
		want     []span
	}{
		{nil, 4, 1, nil},
		{[]int{3, 1, 2, 2, 7, 8, 10}, 32, 1, []span{{1, 3}, {7, 8}, {10, 10}}},
		{[]int{0, 1, 2, 3, 4, 5, 6}, 3, 1, []span{{0, 2}, {3, 5}, {6, 6}}},
		{[]int{0, 1, 2, 3, 4, 5}, 32, 2, []span{{0, 2}, {3, 5}}},
		{[]int{0, 1, 2, 3, 4}, 32, 3, []span{{0, 1}, {2, 2}, {3, 4}}},
		{[]int{5}, 32, 4, []span{{5, 5}}},
	} {
		if got := coalesce(tc.idx, tc.max, tc.par); !slices.Equal(got, tc.want) {
			t.Errorf("coalesce(%v, %d, %d) = %v, want %v", tc.idx, tc.max, tc.par, got, tc.want)
		}
	}
}

func TestCheckSlices(t *testing.T) {
	ps := testPeers(t, 4)
	a, b, c, d := ps[0], ps[1], ps[2], ps[3]
	now := time.Unix(1000, 0)
	sl := []peergroup.Slice{
		{Assignee: a, State: peergroup.SliceDone}, // 0 done, held
		{Assignee: a}, // 1 held, unreported
		{Assignee: a}, // 2 a outstanding (a is fresh)
		{Assignee: b}, // 3 b outstanding, b silent
		{Assignee: c}, // 4 c dead
		{},            // 5 unassigned
		{Assignee: d, State: peergroup.SliceDone}, // 6 done but not held: lost
		{Assignee: d}, // 7 d excluded
	}
	held := map[int]bool{0: true, 1: true}
	res := CheckSlices(CheckInput{
		Now: now, Slices: sl, Held: func(i int) bool { return held[i] },
		Live:     map[peer.ID]bool{a: true, b: true, d: true},
		Excluded: []peer.ID{d},
		Since:    map[peer.ID]time.Time{a: now.Add(-time.Second), b: now.Add(-10 * time.Second)},
		Timeout:  5 * time.Second,
	})
	if !slices.Equal(res.Missing, []uint32{3, 4, 5, 7}) {
		t.Errorf("missing %v", res.Missing)
	}
	want := []peer.ID{b, c}
	slices.Sort(want)
	if !slices.Equal(res.Exclude, want) {
		t.Errorf("exclude %v, want %v", res.Exclude, want)
	}
	if !slices.Equal(res.Unreported, []uint32{1}) || !slices.Equal(res.Lost, []uint32{6}) {
		t.Errorf("unreported %v lost %v", res.Unreported, res.Lost)
	}
	if res.Outstanding[a] != 1 || res.Outstanding[b] != 1 {
		t.Errorf("outstanding %v", res.Outstanding)
	}
	// A member not yet in Since is not silent.
	res = CheckSlices(CheckInput{Now: now, Slices: sl[2:4], Held: func(int) bool { return false },
		Live: map[peer.ID]bool{a: true, b: true}, Since: map[peer.ID]time.Time{}, Timeout: time.Second})
	if len(res.Missing) != 0 {
		t.Errorf("fresh members re-planned: %v", res.Missing)
	}
}

func TestPlanSteal(t *testing.T) {
	ps := testPeers(t, 3)
	a, b, c := ps[0], ps[1], ps[2]
	own := map[peer.ID][]uint32{a: {7, 4, 5, 6}, b: {9}}
	of := func(p peer.ID) []uint32 { return own[p] }
	eta := func(d time.Duration) func(peer.ID) (time.Duration, bool) {
		return func(p peer.ID) (time.Duration, bool) {
			if p == a {
				return d, true
			}
			return 0, false
		}
	}
	out := map[peer.ID]int{a: 4, b: 1}
	v, s := PlanSteal(out, of, ps, nil, nil, eta(10*time.Second), 5*time.Second)
	if v != a || !slices.Equal(s, []uint32{6, 7}) {
		t.Fatalf("steal %s %v, want a [6 7]", v, s)
	}
	if v, _ := PlanSteal(out, of, ps, nil, nil, eta(time.Second), 5*time.Second); v != "" {
		t.Fatal("stole from a member about to finish")
	}
	if v, _ := PlanSteal(out, of, ps, []peer.ID{c}, nil, eta(10*time.Second), 5*time.Second); v != "" {
		t.Fatal("stole with no idle member (c excluded)")
	}
	if v, _ := PlanSteal(map[peer.ID]int{a: 1}, of, ps, nil, nil, eta(time.Hour), time.Second); v != "" {
		t.Fatal("stole a member's last slice")
	}
	// A member stolen from lately is skipped: the next slowest gets its turn.
	own[b] = []uint32{9, 10, 11}
	out2 := map[peer.ID]int{a: 4, b: 3}
	eta2 := func(p peer.ID) (time.Duration, bool) {
		return map[peer.ID]time.Duration{a: 10 * time.Second, b: 3 * time.Second}[p], p != c
	}
	if v, _ := PlanSteal(out2, of, ps, nil, nil, eta2, time.Second); v != a {
		t.Fatalf("victim %s, want a (the slowest)", v)
	}
	if v, s := PlanSteal(out2, of, ps, nil, map[peer.ID]bool{a: true}, eta2, time.Second); v != b || !slices.Equal(s, []uint32{11}) {
		t.Fatalf("steal %s %v with a skipped, want b [11]", v, s)
	}
}

// TestPlanStripes: with Stripe, the origin's slices go out in stripes round-robin over the
// members in peer-ID order, each member keeping the count the min-heap gave it.
func TestPlanStripes(t *testing.T) {
	ps := testPeers(t, 4)
	order := slices.Clone(ps)
	slices.Sort(order)
	as, err := Plan(PlanInput{Slices: seq(50), Members: ps, Stripe: 4})
	if err != nil {
		t.Fatal(err)
	}
	checkEverySliceOnce(t, as, 50)
	bm := byMember(as)
	for _, p := range ps {
		if n := len(bm[p]); n < 12 || n > 13 {
			t.Fatalf("%s got %d slices, want 12 or 13", p, n)
		}
	}
	// The first rounds are whole stripes in peer-ID order.
	for i := 0; i < 32; i++ {
		if want := order[(i/4)%4]; as[i].Member != want {
			t.Fatalf("slice %d went to %s, want %s", i, as[i].Member, want)
		}
	}
	// Loaded members get fewer slices, still in stripes.
	load := map[peer.ID]int64{order[0]: 8}
	as, err = Plan(PlanInput{Slices: seq(40), Members: ps, Load: load, Stripe: 4})
	if err != nil {
		t.Fatal(err)
	}
	bm = byMember(as)
	total := 0
	for _, p := range ps {
		total += len(bm[p])
	}
	if total != 40 || len(bm[order[0]]) >= len(bm[order[1]]) {
		t.Fatalf("loaded member got %d, others %d %d %d", len(bm[order[0]]), len(bm[order[1]]), len(bm[order[2]]), len(bm[order[3]]))
	}
}

// checkEverySliceOnce fails unless as assigns slices 0..n-1, each once, in order.
func checkEverySliceOnce(t *testing.T, as []peergroup.Assignment, n int) {
	t.Helper()
	if len(as) != n {
		t.Fatalf("%d assignments, want %d", len(as), n)
	}
	for i, a := range as {
		if a.Slice != uint32(i) {
			t.Fatalf("assignment %d is slice %d (not sorted or not every slice once)", i, a.Slice)
		}
	}
}
