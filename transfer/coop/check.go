package coop

import (
	"cmp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"
)

// The requester's checks (seed: TaskListener, checkSlice), pure: the listener feeds them the
// task table, what it holds and when each member last delivered, and carries out what they
// return.

// CheckInput is the requester's view of a task at one heartbeat.
type CheckInput struct {
	Now    time.Time
	Slices []peergroup.Slice // the task's slices as the replicated table holds them
	Held   func(i int) bool  // slices the requester holds (stored)
	// Live is the set of members the leader considers alive.
	Live map[peer.ID]bool
	// Excluded: members already excluded from the task.
	Excluded []peer.ID
	// Since is, per member, the last sign of progress: its last delivered slice, or when it
	// was first seen with outstanding slices. A member absent from Since is treated as
	// having just started (the caller records it).
	Since map[peer.ID]time.Time
	// Timeout: a member with outstanding slices and no progress for this long is silent.
	Timeout time.Duration
}

// CheckResult is what the requester should do.
type CheckResult struct {
	// Missing are the slices to re-arrange (partDownLoad): not held, not done, and
	// unassigned or assigned to a member that is excluded, not alive, or silent.
	Missing []uint32
	// Exclude are the members to exclude from the task (silent or dead with outstanding
	// slices), sorted.
	Exclude []peer.ID
	// Unreported are slices held but not yet marked done in the table.
	Unreported []uint32
	// Lost are slices marked done in the table that the requester does not hold (its store
	// was lost): the task cannot be repaired by re-assignment and must start over.
	Lost []uint32
	// Outstanding counts, per member, the slices assigned to it that are still missing.
	Outstanding map[peer.ID]int
}

// CheckSlices computes the missing slices and the members to give up on (checkSlice).
func CheckSlices(in CheckInput) CheckResult {
	excluded := make(map[peer.ID]bool, len(in.Excluded))
	for _, p := range in.Excluded {
		excluded[p] = true
	}
	res := CheckResult{Outstanding: make(map[peer.ID]int)}
	for i, sl := range in.Slices {
		held := in.Held(i)
		switch {
		case held && sl.State != peergroup.SliceDone:
			res.Unreported = append(res.Unreported, uint32(i))
		case !held && sl.State == peergroup.SliceDone:
			res.Lost = append(res.Lost, uint32(i))
		case !held && sl.Assignee != "":
			res.Outstanding[sl.Assignee]++
		}
	}
	silent := make(map[peer.ID]bool)
	for p := range res.Outstanding {
		since, ok := in.Since[p]
		if excluded[p] || !in.Live[p] || (ok && in.Now.Sub(since) >= in.Timeout) {
			silent[p] = true
		}
	}
	for i, sl := range in.Slices {
		if in.Held(i) || sl.State == peergroup.SliceDone {
			continue
		}
		if sl.Assignee == "" || silent[sl.Assignee] {
			res.Missing = append(res.Missing, uint32(i))
		}
	}
	for p := range silent {
		if !excluded[p] {
			res.Exclude = append(res.Exclude, p)
		}
	}
	slices.Sort(res.Exclude)
	return res
}

// PlanSteal picks slices to move from a slow member to idle ones near the end of a task
// (endgame). It needs an idle member (live, not excluded, nothing outstanding) and a victim:
// the member with at least two slices outstanding whose estimated time to finish them (eta;
// unknown for a member that has delivered nothing yet) is the longest and at least minETA.
// Members in skip are not picked (a steal from them moved nothing lately: a member whose
// pushes lag its fetches holds its outstanding slices already, and the slowest member
// behind it must get its turn). It returns the victim and the upper half of its outstanding
// slices (the ones it would fetch last; it keeps the one it is fetching now), or nothing.
func PlanSteal(outstanding map[peer.ID]int, slicesOf func(peer.ID) []uint32, live []peer.ID, excluded []peer.ID,
	skip map[peer.ID]bool, eta func(peer.ID) (time.Duration, bool), minETA time.Duration) (peer.ID, []uint32) {
	ex := make(map[peer.ID]bool, len(excluded))
	for _, p := range excluded {
		ex[p] = true
	}
	idle := false
	for _, p := range live {
		if !ex[p] && outstanding[p] == 0 {
			idle = true
			break
		}
	}
	if !idle {
		return "", nil
	}
	var victim peer.ID
	var worst time.Duration
	for p, n := range outstanding {
		if ex[p] || skip[p] || n < 2 {
			continue
		}
		d, ok := eta(p)
		if !ok || d < minETA {
			continue
		}
		if victim == "" || d > worst || (d == worst && p < victim) {
			victim, worst = p, d
		}
	}
	if victim == "" {
		return "", nil
	}
	own := slices.Clone(slicesOf(victim))
	slices.SortFunc(own, cmp.Compare)
	if len(own) < 2 {
		return "", nil
	}
	return victim, own[len(own)-len(own)/2:]
}
