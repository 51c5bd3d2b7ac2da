package coop

import (
	"cmp"
	"maps"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"
)

// The plan is the leader's decision (seed: taskArrange, partDownLoad), pure: no network, no
// clock. It uses peergroup's min-heap arranger over the load map for the counts and the cache
// preference, then lays the slices fetched from the origin out in contiguous blocks (or
// stripes, PlanInput.Stripe) so each member's share coalesces into few large Range requests.

// PlanInput is what a plan is made from.
type PlanInput struct {
	// Slices to place.
	Slices []uint32
	// Members that may receive slices (the live members).
	Members []peer.ID
	// Load is the replicated load map (outstanding slices per member). Not modified.
	Load map[peer.ID]int64
	// Exclude lists members that must not receive any slice (failed for this task, or, for a
	// steal, the slow member the slices are taken from).
	Exclude []peer.ID
	// Holders lists, per slice, members that hold it in their cache or are fetching it for
	// another task of the same resource version: such a slice goes to its least-loaded holder
	// and costs the origin nothing.
	Holders map[uint32][]peer.ID
	// NoRanges: the origin ignores Range, so every slice fetched from the origin goes to one
	// member (Prefer if eligible, else the least-loaded), which fetches the whole resource.
	NoRanges bool
	Prefer   peer.ID
	// MaxFetchers caps how many members fetch from the origin (the group-wide connection cap
	// divided by each member's connections); 0 means no cap.
	MaxFetchers int
	// Stripe, when positive, deals the slices fetched from the origin out in stripes of this
	// many contiguous slices, round-robin over the fetching members in peer-ID order (each
	// member still gets the count the min-heap gave it), so the members advance through the
	// resource side by side and the requester's contiguous prefix grows steadily. 0: one
	// contiguous block per member.
	Stripe int
}

// Plan assigns every slice of in.Slices to an eligible member. Slices with an eligible
// holder go to the least-loaded such holder; the others are counted out over the fetching
// members by the min-heap (least loaded first) and laid out in contiguous blocks in
// peer-ID order. It returns the assignments sorted by slice, and ErrNoMembers when slices
// need placing and no member is eligible.
func Plan(in PlanInput) ([]peergroup.Assignment, error) {
	if len(in.Slices) == 0 {
		return nil, nil
	}
	excluded := make(map[peer.ID]bool, len(in.Exclude))
	for _, p := range in.Exclude {
		excluded[p] = true
	}
	var eligible []peer.ID
	seen := make(map[peer.ID]bool, len(in.Members))
	for _, p := range in.Members {
		if p != "" && !excluded[p] && !seen[p] {
			seen[p] = true
			eligible = append(eligible, p)
		}
	}
	if len(eligible) == 0 {
		return nil, ErrNoMembers
	}
	todo := slices.Clone(in.Slices)
	slices.Sort(todo)
	todo = slices.Compact(todo)

	load := maps.Clone(in.Load)
	if load == nil {
		load = make(map[peer.ID]int64)
	}
	out := make([]peergroup.Assignment, 0, len(todo))

	// 1. Cached slices to their least-loaded eligible holder.
	var fetch []uint32
	var held []uint32
	for _, s := range todo {
		if hasEligible(in.Holders[s], seen) {
			held = append(held, s)
		} else {
			fetch = append(fetch, s)
		}
	}
	if len(held) > 0 {
		as, l, err := peergroup.Arrange(peergroup.ArrangeInput{
			Slices: held, Members: eligible, Load: load, Holders: in.Holders, PreferHolders: true,
		})
		if err != nil {
			return nil, ErrNoMembers
		}
		out = append(out, as...)
		load = l
	}
	if len(fetch) == 0 {
		sortAssignments(out)
		return out, nil
	}

	// 2. Slices from the origin.
	if in.NoRanges {
		who := in.Prefer
		if !seen[who] {
			who = leastLoaded(eligible, load, 1)[0]
		}
		for _, s := range fetch {
			out = append(out, peergroup.Assignment{Slice: s, Member: who})
		}
		sortAssignments(out)
		return out, nil
	}
	fetchers := eligible
	if in.MaxFetchers > 0 && len(fetchers) > in.MaxFetchers {
		fetchers = leastLoaded(eligible, load, in.MaxFetchers)
	}
	as, _, err := peergroup.Arrange(peergroup.ArrangeInput{Slices: fetch, Members: fetchers, Load: load})
	if err != nil {
		return nil, ErrNoMembers
	}
	count := make(map[peer.ID]int, len(fetchers))
	for _, a := range as {
		count[a.Member]++
	}
	order := slices.Clone(fetchers)
	slices.Sort(order)
	if in.Stripe > 0 {
		out = append(out, stripes(fetch, order, count, in.Stripe)...)
		sortAssignments(out)
		return out, nil
	}
	i := 0
	for _, p := range order {
		for range count[p] {
			out = append(out, peergroup.Assignment{Slice: fetch[i], Member: p})
			i++
		}
	}
	sortAssignments(out)
	return out, nil
}

// stripes deals fetch (sorted) out in stripes of up to stripe slices, round-robin over order,
// each member receiving exactly count[member] slices.
func stripes(fetch []uint32, order []peer.ID, count map[peer.ID]int, stripe int) []peergroup.Assignment {
	left := maps.Clone(count)
	out := make([]peergroup.Assignment, 0, len(fetch))
	i, k := 0, 0
	for i < len(fetch) {
		if k%len(order) == 0 && k > 0 && !slices.ContainsFunc(order, func(p peer.ID) bool { return left[p] > 0 }) {
			// The counts fall short (never with Arrange's output): the rest to the first member.
			for ; i < len(fetch); i++ {
				out = append(out, peergroup.Assignment{Slice: fetch[i], Member: order[0]})
			}
			break
		}
		p := order[k%len(order)]
		k++
		for n := 0; n < stripe && left[p] > 0 && i < len(fetch); n++ {
			out = append(out, peergroup.Assignment{Slice: fetch[i], Member: p})
			left[p]--
			i++
		}
	}
	return out
}

func hasEligible(holders []peer.ID, eligible map[peer.ID]bool) bool {
	for _, p := range holders {
		if eligible[p] {
			return true
		}
	}
	return false
}

// leastLoaded returns the n least-loaded members (ties by peer ID).
func leastLoaded(members []peer.ID, load map[peer.ID]int64, n int) []peer.ID {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b peer.ID) int {
		if c := cmp.Compare(load[a], load[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	return ms[:min(n, len(ms))]
}

func sortAssignments(as []peergroup.Assignment) {
	slices.SortFunc(as, func(a, b peergroup.Assignment) int { return cmp.Compare(a.Slice, b.Slice) })
}

// span is a run of contiguous slices [First, Last], fetched with one Range request.
type span struct{ First, Last int }

// coalesce groups slices (any order, duplicates allowed) into runs of contiguous slices,
// each at most maxSlices long, and splits runs further so that at least `parallel` spans
// exist when there are that many slices (so every connection has work).
func coalesce(idx []int, maxSlices, parallel int) []span {
	if len(idx) == 0 {
		return nil
	}
	s := slices.Clone(idx)
	slices.Sort(s)
	s = slices.Compact(s)
	maxSlices = max(maxSlices, 1)
	var runs []span
	cur := span{s[0], s[0]}
	for _, i := range s[1:] {
		if i == cur.Last+1 && cur.Last-cur.First+1 < maxSlices {
			cur.Last = i
			continue
		}
		runs = append(runs, cur)
		cur = span{i, i}
	}
	runs = append(runs, cur)
	// Split the longest runs until there are `parallel` spans or no run can be split.
	for len(runs) < parallel {
		j := -1
		for k, r := range runs {
			if r.Last > r.First && (j < 0 || r.Last-r.First > runs[j].Last-runs[j].First) {
				j = k
			}
		}
		if j < 0 {
			break
		}
		r := runs[j]
		mid := r.First + (r.Last-r.First+1)/2
		runs = slices.Insert(runs, j+1, span{mid, r.Last})
		runs[j].Last = mid - 1
	}
	return runs
}
