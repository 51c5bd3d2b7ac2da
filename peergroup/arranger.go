package peergroup

import (
	"container/heap"
	"maps"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The arranger is the group leader's task arrangement (seed: taskArrange / partDownLoad):
// a pure function, no network, no clock. The leader feeds it the live members and the
// replicated load map and commits what it returns as a TaskAssign stamped with its term.

// ArrangeInput is what the arranger decides on.
type ArrangeInput struct {
	// Slices to place, in the order they are assigned.
	Slices []uint32
	// Members that may receive slices (the live members). Duplicates are ignored.
	Members []peer.ID
	// Load is each member's outstanding slice count; absent means 0. It is not modified.
	Load map[peer.ID]int64
	// Exclude lists members that must never receive a slice (members that failed).
	Exclude []peer.ID
	// Holders lists, per slice, members that already hold it (cache). Used only when
	// PreferHolders is set: such a slice goes to its least-loaded eligible holder.
	Holders       map[uint32][]peer.ID
	PreferHolders bool
}

// Arrange assigns every slice to the least-loaded eligible member, using a min-heap over
// (load, peer ID) and incrementing the chosen member's load as it goes; with PreferHolders a
// slice some eligible member already holds goes to the least-loaded such holder instead.
// It returns one assignment per slice, in the order of in.Slices, and the resulting load map
// (a new map: in.Load plus the new assignments). With slices to place and no eligible member
// it fails with ErrNoMembers.
func Arrange(in ArrangeInput) ([]Assignment, map[peer.ID]int64, error) {
	load := maps.Clone(in.Load)
	if load == nil {
		load = make(map[peer.ID]int64)
	}
	if len(in.Slices) == 0 {
		return nil, load, nil
	}
	excluded := make(map[peer.ID]bool, len(in.Exclude))
	for _, p := range in.Exclude {
		excluded[p] = true
	}
	h := &loadHeap{}
	items := make(map[peer.ID]*loadItem, len(in.Members))
	for _, p := range in.Members {
		if p == "" || excluded[p] || items[p] != nil {
			continue
		}
		it := &loadItem{id: p, load: load[p], index: len(h.items)}
		items[p] = it
		h.items = append(h.items, it)
	}
	if len(h.items) == 0 {
		return nil, load, ErrNoMembers
	}
	heap.Init(h)

	out := make([]Assignment, 0, len(in.Slices))
	for _, s := range in.Slices {
		it := h.items[0]
		if in.PreferHolders {
			if best := bestHolder(in.Holders[s], items); best != nil {
				it = best
			}
		}
		out = append(out, Assignment{Slice: s, Member: it.id})
		it.load++
		heap.Fix(h, it.index)
	}
	for p, it := range items {
		load[p] = it.load
	}
	return out, load, nil
}

// Rearrange places missing slices again (seed: partDownLoad): like Arrange, with the members
// that failed excluded.
func Rearrange(missing []uint32, members []peer.ID, load map[peer.ID]int64, failed []peer.ID) ([]Assignment, map[peer.ID]int64, error) {
	return Arrange(ArrangeInput{Slices: missing, Members: members, Load: load, Exclude: failed})
}

// bestHolder returns the eligible holder with the least load (ties by peer ID), or nil.
func bestHolder(holders []peer.ID, items map[peer.ID]*loadItem) *loadItem {
	var best *loadItem
	for _, p := range holders {
		it := items[p]
		if it != nil && (best == nil || it.less(best)) {
			best = it
		}
	}
	return best
}

type loadItem struct {
	id    peer.ID
	load  int64
	index int // position in the heap
}

func (a *loadItem) less(b *loadItem) bool {
	if a.load != b.load {
		return a.load < b.load
	}
	return a.id < b.id
}

// loadHeap is a min-heap of members by (load, peer ID).
type loadHeap struct{ items []*loadItem }

func (h *loadHeap) Len() int           { return len(h.items) }
func (h *loadHeap) Less(i, j int) bool { return h.items[i].less(h.items[j]) }
func (h *loadHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].index = i
	h.items[j].index = j
}
func (h *loadHeap) Push(x any) {
	it := x.(*loadItem)
	it.index = len(h.items)
	h.items = append(h.items, it)
}
func (h *loadHeap) Pop() any {
	n := len(h.items)
	it := h.items[n-1]
	h.items = h.items[:n-1]
	return it
}
