package peergroup

import "strings"

// The tracker's group assignment (seed: the tracker's "组分配" load balancing): a pure policy
// the rendezvous node runs when a peer asks to be put in some group (`group join --any`).

// GroupLoad describes one candidate group as the tracker sees it (from group adverts).
type GroupLoad struct {
	ID       string
	Members  int
	Capacity uint64   // the members' total capacity
	Domains  []string // multicast domains the members are in
}

// Joiner describes the peer asking for a group.
type Joiner struct {
	Domain string // its multicast domain; "" when none
}

// TrackerPolicy picks a group for a joiner.
type TrackerPolicy struct {
	// MaxMembers caps a group's size; full groups are never picked.
	MaxMembers int
	// DomainSlack lets a group in the joiner's multicast domain win over one with up to
	// DomainSlack fewer members. 0 (the default) makes member count decide first.
	DomainSlack int
}

// DefaultTrackerPolicy caps groups at 8 members.
func DefaultTrackerPolicy() TrackerPolicy { return TrackerPolicy{MaxMembers: 8} }

// Pick returns the ID of the group the joiner should join, or ok=false when every candidate
// is full (or there is none) and the joiner should create a new group.
//
// Order: groups that are not full; fewest members first (a group in the joiner's multicast
// domain counts DomainSlack members fewer); then a group in the joiner's domain; then the
// smaller total capacity (the joiner's capacity is needed most there); then the smaller ID,
// so the choice is deterministic.
func (p TrackerPolicy) Pick(groups []GroupLoad, j Joiner) (id string, ok bool) {
	var best *GroupLoad
	var bestScore int
	var bestLocal bool
	for i := range groups {
		g := &groups[i]
		if g.ID == "" || (p.MaxMembers > 0 && g.Members >= p.MaxMembers) {
			continue
		}
		local := j.Domain != "" && contains(g.Domains, j.Domain)
		score := g.Members
		if local {
			score -= p.DomainSlack
		}
		if best == nil || better(score, local, g, bestScore, bestLocal, best) {
			best, bestScore, bestLocal = g, score, local
		}
	}
	if best == nil {
		return "", false
	}
	return best.ID, true
}

func better(score int, local bool, g *GroupLoad, bScore int, bLocal bool, b *GroupLoad) bool {
	if score != bScore {
		return score < bScore
	}
	if local != bLocal {
		return local
	}
	if g.Capacity != b.Capacity {
		return g.Capacity < b.Capacity
	}
	return strings.Compare(g.ID, b.ID) < 0
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
