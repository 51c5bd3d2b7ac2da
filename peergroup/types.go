package peergroup

import (
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Policy is a group's membership policy. The numeric values are part of the wire format.
type Policy uint8

// The membership policies.
const (
	// PolicyOpen admits anyone who asks.
	PolicyOpen Policy = 1 + iota
	// PolicySecret admits a peer that proves knowledge of the group secret by
	// challenge–response; the secret itself never leaves the peer.
	PolicySecret
	// PolicyInvite admits a peer holding an invitation signed by a member.
	PolicyInvite
)

var policyNames = [...]string{PolicyOpen: "open", PolicySecret: "secret", PolicyInvite: "invite"}

// String returns "open", "secret" or "invite".
func (p Policy) String() string {
	if p.Valid() {
		return policyNames[p]
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// Valid reports whether p is a known policy.
func (p Policy) Valid() bool { return p >= PolicyOpen && int(p) < len(policyNames) }

// ParsePolicy parses "open", "secret" or "invite".
func ParsePolicy(s string) (Policy, error) {
	for p := PolicyOpen; int(p) < len(policyNames); p++ {
		if policyNames[p] == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown policy %q (want open, secret or invite)", ErrMalformed, s)
}

// Header is the immutable description of a group, committed as the first entry of its log.
type Header struct {
	ID      string
	Name    string
	Policy  Policy
	Creator peer.ID
	Created time.Time
}

// Member is one member of a group as the replicated state records it.
type Member struct {
	PeerID   peer.ID
	Addrs    []ma.Multiaddr
	Domain   string // multicast domain ("" when none)
	Capacity uint64 // what the member offers (e.g. bytes/s of download bandwidth); 0 = unknown
	// Voter is true when the member votes in the group's Raft. It is read from the Raft
	// configuration this node knows when a view is taken, not from the replicated state.
	Voter bool
	// Ready is set once the member has caught up with the log and announced itself; only
	// ready members are promoted to voters.
	Ready bool
	// Alive is the leader's view of the member's liveness (Raft heartbeats), committed
	// when it changes.
	Alive    bool
	Joined   time.Time
	LastSeen time.Time // last committed sign of life (announce or liveness change)
}

// SliceState is the state of one slice of a task.
type SliceState uint8

// The slice states.
const (
	SliceMissing SliceState = iota // not yet delivered (assigned or not)
	SliceDone                      // delivered to the requester
)

// Slice is one slice of a task: who is assigned to fetch it, under which term, and whether
// it was delivered.
type Slice struct {
	Assignee peer.ID // "" when unassigned
	Term     uint64  // Raft term of the assignment
	State    SliceState
}

// TaskKind says what a task does.
type TaskKind uint8

// The task kinds.
const (
	TaskDownload   TaskKind = 1 + iota // cooperative HTTP download of a URL
	TaskDistribute                     // group distribution of content
)

// Validators pin one version of an HTTP resource.
type Validators struct {
	ETag         string
	LastModified string
}

// Task is one cooperative job in the task table.
type Task struct {
	ID         string
	Kind       TaskKind
	URL        string
	ContentID  string
	Size       int64
	SliceSize  int64
	Validators Validators
	Requester  peer.ID
	Created    time.Time
	Term       uint64    // term of the latest assignment committed for this task
	Slices     []Slice   // len = ceil(Size / SliceSize)
	Excluded   []peer.ID // members that failed this task; never assigned again (sorted)
}

// NumSlices returns how many slices a resource of size bytes has with slices of sliceSize.
func NumSlices(size, sliceSize int64) int {
	if size <= 0 || sliceSize <= 0 {
		return 0
	}
	return int((size + sliceSize - 1) / sliceSize)
}

// Missing returns the indexes of the slices not yet delivered.
func (t Task) Missing() []uint32 {
	var out []uint32
	for i, s := range t.Slices {
		if s.State != SliceDone {
			out = append(out, uint32(i))
		}
	}
	return out
}

// Done reports whether every slice was delivered.
func (t Task) Done() bool {
	for _, s := range t.Slices {
		if s.State != SliceDone {
			return false
		}
	}
	return true
}

func (t Task) clone() Task {
	c := t
	c.Slices = slices.Clone(t.Slices)
	c.Excluded = slices.Clone(t.Excluded)
	return c
}

// Content is one entry of the group's content catalogue.
type Content struct {
	ID     string
	Name   string
	Size   int64
	Source peer.ID
	Added  time.Time
}

// StateView is a read-only copy of a group's replicated state.
type StateView struct {
	Header    Header
	Members   []Member // sorted by peer ID
	Load      map[peer.ID]int64
	Tasks     map[string]Task
	Catalogue map[string]Content
	Proxies   map[string][]peer.ID // content ID → its proxy peers, one per multicast domain (ProxySet)
	Banned    []peer.ID            // expelled peers (sorted)
}

// Member returns the member with that peer ID.
func (v StateView) Member(p peer.ID) (Member, bool) {
	i, ok := slices.BinarySearchFunc(v.Members, p, func(m Member, p peer.ID) int {
		switch {
		case m.PeerID < p:
			return -1
		case m.PeerID > p:
			return 1
		}
		return 0
	})
	if !ok {
		return Member{}, false
	}
	return v.Members[i], true
}

// IsMember reports whether p is a member.
func (v StateView) IsMember(p peer.ID) bool { _, ok := v.Member(p); return ok }
