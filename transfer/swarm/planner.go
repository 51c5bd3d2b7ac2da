package swarm

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/transfer/store"
)

// PlannerConfig tunes the pure request planner.
type PlannerConfig struct {
	MaxInflightPerPeer int           // slices requested and not yet answered, per non-source peer
	MaxInflightSource  int           // the same for the source
	MaxPeerTries       int           // failed attempts of a slice after which the source may serve it although other peers hold it
	BanAfter           int           // bad slices after which a peer is banned (K)
	BackoffBase        time.Duration // a failing peer rests BackoffBase·2^(failures-1), randomised ×[0.5,1.5)
	BackoffMax         time.Duration
	Rand               *rand.Rand // tie-breaking and jitter; nil: seeded randomly
	// Ascending requests the lowest missing slices first instead of the rarest: for a proxy
	// that re-multicasts slices in order as they arrive.
	Ascending bool
	// EndgameAfter: once nothing is left to request, a slice in flight for this long is also
	// requested from a second peer (the first answer wins; the other counts as duplicate).
	// 0 disables the endgame.
	EndgameAfter time.Duration
	// SourceDelay keeps the source for when other peers stop getting slices: it serves a slice
	// no other peer holds only once no non-source peer has gained a slice we miss for this
	// long (counted from the first Next call). For a proxy in another multicast domain while
	// the source multicasts into its own: that domain's receivers hold each slice moments
	// after the source sends it, and the source's uplink is busy with the multicast. 0: the
	// source serves such slices at once.
	SourceDelay time.Duration
}

// DefaultPlannerConfig returns the defaults.
func DefaultPlannerConfig() PlannerConfig {
	return PlannerConfig{
		MaxInflightPerPeer: 8,
		MaxInflightSource:  8,
		MaxPeerTries:       3,
		BanAfter:           3,
		BackoffBase:        200 * time.Millisecond,
		BackoffMax:         5 * time.Second,
		EndgameAfter:       3 * time.Second,
	}
}

// Request is one planned slice request.
type Request struct {
	Peer  peer.ID
	Index int
}

type peerState struct {
	id       peer.ID
	has      store.Bitmap
	source   bool
	inflight int
	fails    int       // consecutive failures, reset by a success
	bad      int       // slices that failed verification
	banned   bool      // never asked again
	until    time.Time // resting (back-off) until then
	busy     time.Time // when it last went from no request in flight to one, or last answered
}

// Planner decides which slice to request from which peer. It is a pure state machine: feed it
// what happened (peers' have-sets, answers, failures, the clock) and ask Next for requests.
// It does no I/O and is not safe for concurrent use; the session owns it.
//
// Policy: among the slices we miss that are not in flight, not held back for multicast and
// not resting after a failure, the rarest first (fewest non-banned peers holding it, random
// among equals; the candidate order is recomputed at most every 250 ms while announcements
// change, slices becoming candidates in between are appended, and one Next call looks at no
// more than 256 candidates, putting those that must wait at the back, so a call costs
// O(256) and not O(slices)); each goes to a non-source peer that holds it and has a free
// request slot (fewest in flight first). The source serves a slice only if no non-source peer that is
// not banned, resting or stalled (requests in flight, no answer for EndgameAfter) holds it
// (and, with SourceDelay, no such peer is still gaining slices), or after MaxPeerTries failed
// attempts of that slice. Every
// failure rests the peer (randomised exponential back-off); a bad slice counts against the
// peer, and BanAfter of them ban it.
type Planner struct {
	cfg       PlannerConfig
	n         int
	have      store.Bitmap
	hold      store.Bitmap // slices held back (expected by multicast); never requested
	peers     map[peer.ID]*peerState
	order     []peer.ID         // peers in the order they were added (deterministic iteration)
	states    []*peerState      // the same peers' states, in the same order
	avail     []uint16          // per slice: non-banned peers holding it
	inflight  map[int]peer.ID   // slice → the peer it is requested from
	dups      map[int]peer.ID   // slice → a second peer it is requested from (endgame)
	since     map[int]time.Time // slice → when it was requested (from inflight's peer)
	tries     []uint8           // per slice: failed attempts
	notBefore map[int]time.Time
	rng       *rand.Rand

	lastNow time.Time    // the time of the last Next call
	grewAt  time.Time    // when a non-source peer last gained a slice we miss (SourceDelay)
	cand    []int        // candidate slices from head on, roughly rarest first (see Next); nil until built
	head    int          // cand[:head] are taken
	scratch []int        // reused by Next
	incand  store.Bitmap // slices in cand
	builtAt time.Time
	dirty   bool // availability changed since the last rebuild
}

// NewPlanner returns a planner for n slices of which have are already held.
func NewPlanner(n int, have store.Bitmap, cfg PlannerConfig) *Planner {
	rng := cfg.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if have.Len() != n {
		have = store.NewBitmap(n)
	}
	return &Planner{
		cfg:       cfg,
		n:         n,
		have:      have.Clone(),
		hold:      store.NewBitmap(n),
		peers:     make(map[peer.ID]*peerState),
		avail:     make([]uint16, n),
		inflight:  make(map[int]peer.ID),
		dups:      make(map[int]peer.ID),
		since:     make(map[int]time.Time),
		tries:     make([]uint8, n),
		notBefore: make(map[int]time.Time),
		rng:       rng,
	}
}

// AddPeer makes p a candidate; source marks the content's source peer. Adding a known peer
// only updates its source flag.
func (pl *Planner) AddPeer(p peer.ID, source bool) {
	if ps, ok := pl.peers[p]; ok {
		ps.source = ps.source || source
		return
	}
	ps := &peerState{id: p, has: store.NewBitmap(pl.n), source: source}
	pl.peers[p] = ps
	pl.order = append(pl.order, p)
	pl.states = append(pl.states, ps)
}

// Known reports whether p was added.
func (pl *Planner) Known(p peer.ID) bool { _, ok := pl.peers[p]; return ok }

// Banned reports whether p is banned.
func (pl *Planner) Banned(p peer.ID) bool { ps := pl.peers[p]; return ps != nil && ps.banned }

// SetHave replaces what p announces it holds.
func (pl *Planner) SetHave(p peer.ID, has store.Bitmap) {
	ps := pl.peers[p]
	if ps == nil || has.Len() != pl.n {
		return
	}
	for i := 0; i < pl.n; i++ {
		was, is := ps.has.Has(i), has.Has(i)
		if was == is {
			continue
		}
		if is {
			ps.has.Set(i)
			pl.grew(ps, i)
			if !ps.banned {
				pl.avail[i]++
				pl.dirty = true
				pl.offer(i)
			}
		} else {
			ps.has.Clear(i)
			if !ps.banned {
				pl.avail[i]--
			}
		}
	}
}

// PeerHas records that p holds slice i.
func (pl *Planner) PeerHas(p peer.ID, i int) {
	if ps := pl.peers[p]; ps != nil && ps.has.Set(i) && !ps.banned {
		pl.grew(ps, i)
		pl.avail[i]++
		pl.offer(i)
	}
}

// grew notes that ps gained slice i (SourceDelay).
func (pl *Planner) grew(ps *peerState, i int) {
	if !ps.source && !ps.banned && !pl.have.Has(i) {
		pl.grewAt = pl.lastNow
	}
}

// sourceOpen reports whether the source may serve slices no other peer holds (SourceDelay).
func (pl *Planner) sourceOpen(now time.Time) bool {
	return pl.cfg.SourceDelay <= 0 || now.Sub(pl.grewAt) >= pl.cfg.SourceDelay
}

// Have records that we hold slice i (from any carrier).
func (pl *Planner) Have(i int) {
	pl.have.Set(i)
	pl.hold.Clear(i)
}

// Hold keeps slice i from being requested (multicast is expected to deliver it).
func (pl *Planner) Hold(i int) {
	if !pl.have.Has(i) {
		pl.hold.Set(i)
	}
}

// Release makes a held-back slice eligible again.
func (pl *Planner) Release(i int) {
	pl.hold.Clear(i)
	pl.offer(i)
}

// ReleaseAll makes every held-back slice eligible.
func (pl *Planner) ReleaseAll() {
	pl.hold = store.NewBitmap(pl.n)
	pl.cand = nil // rebuild at the next Next
}

// Complete reports whether every slice is held.
func (pl *Planner) Complete() bool { return pl.have.Full() }

// HaveCount returns the number of slices held.
func (pl *Planner) HaveCount() int { return pl.have.Count() }

// Inflight returns the number of slices requested from p and not yet answered.
func (pl *Planner) Inflight(p peer.ID) int {
	if ps := pl.peers[p]; ps != nil {
		return ps.inflight
	}
	return 0
}

// release frees the slot of slice i if it is in flight to p, and reports whether it was.
func (pl *Planner) release(p peer.ID, i int) (*peerState, bool) {
	ps := pl.peers[p]
	if ps == nil {
		return nil, false
	}
	if q, ok := pl.dups[i]; ok && q == p {
		delete(pl.dups, i)
		ps.inflight--
		ps.busy = pl.lastNow
		return ps, true
	}
	if q, ok := pl.inflight[i]; !ok || q != p {
		return ps, false
	}
	delete(pl.inflight, i)
	delete(pl.since, i)
	ps.inflight--
	ps.busy = pl.lastNow
	if d, ok := pl.dups[i]; ok { // the duplicate request is now the request
		delete(pl.dups, i)
		pl.inflight[i] = d
		pl.since[i] = pl.lastNow
	}
	return ps, true
}

// dropPeerRequests frees every slot p holds (primary or duplicate requests).
func (pl *Planner) dropPeerRequests(p peer.ID) {
	for i, q := range pl.dups {
		if q == p {
			pl.release(p, i)
		}
	}
	for i, q := range pl.inflight {
		if q == p {
			pl.release(p, i)
			pl.offer(i)
		}
	}
}

// Done records that p delivered slice i and it verified.
func (pl *Planner) Done(p peer.ID, i int) {
	ps, _ := pl.release(p, i)
	if ps != nil {
		ps.fails = 0
		ps.until = time.Time{}
		pl.PeerHas(p, i)
	}
	pl.Have(i)
	delete(pl.notBefore, i)
}

// NotHave records that p answered it does not hold slice i (no penalty).
func (pl *Planner) NotHave(p peer.ID, i int) {
	ps, _ := pl.release(p, i)
	if ps != nil && ps.has.Has(i) {
		ps.has.Clear(i)
		if !ps.banned {
			pl.avail[i]--
		}
	}
}

// Failed records that the request of slice i from p failed (error, timeout, refusal).
func (pl *Planner) Failed(p peer.ID, i int, now time.Time) {
	ps, ok := pl.release(p, i)
	if !ok {
		return
	}
	pl.sliceFailed(i, now)
	pl.rest(ps, now)
	pl.offer(i)
}

// PeerDown records that the connection to p failed: everything in flight to it is freed and
// it rests. Its slices are not charged with a failed attempt.
func (pl *Planner) PeerDown(p peer.ID, now time.Time) {
	ps := pl.peers[p]
	if ps == nil {
		return
	}
	pl.dropPeerRequests(p)
	pl.rest(ps, now)
}

// Corrupt records that p sent slice i and it failed verification. It reports whether p is now
// banned; a banned peer is never asked again and its announcements no longer count.
func (pl *Planner) Corrupt(p peer.ID, i int, now time.Time) (banned bool) {
	ps := pl.peers[p]
	if ps == nil {
		return false
	}
	if _, ok := pl.release(p, i); ok {
		pl.sliceFailed(i, now)
		pl.offer(i)
	}
	ps.bad++
	pl.rest(ps, now)
	if ps.bad >= pl.cfg.BanAfter && !ps.banned {
		pl.Ban(p)
	}
	return ps.banned
}

// Ban bans p: nothing in flight to it counts any more and it is never asked again.
func (pl *Planner) Ban(p peer.ID) {
	ps := pl.peers[p]
	if ps == nil || ps.banned {
		return
	}
	ps.banned = true
	for i := 0; i < pl.n; i++ {
		if ps.has.Has(i) {
			pl.avail[i]--
		}
	}
	pl.dropPeerRequests(p)
	pl.dirty = true
}

func (pl *Planner) sliceFailed(i int, now time.Time) {
	if pl.tries[i] < 255 {
		pl.tries[i]++
	}
	pl.notBefore[i] = now.Add(pl.jitter(pl.cfg.BackoffBase / 2))
}

func (pl *Planner) rest(ps *peerState, now time.Time) {
	ps.fails++
	d := pl.cfg.BackoffBase
	for k := 1; k < ps.fails && d < pl.cfg.BackoffMax; k++ {
		d *= 2
	}
	d = min(d, pl.cfg.BackoffMax)
	ps.until = now.Add(pl.jitter(d))
}

// jitter returns d randomised to [0.5d, 1.5d).
func (pl *Planner) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + time.Duration(pl.rng.Int64N(int64(d)))
}

func (pl *Planner) limit(ps *peerState) int {
	if ps.source {
		return pl.cfg.MaxInflightSource
	}
	return pl.cfg.MaxInflightPerPeer
}

func (pl *Planner) usable(ps *peerState, now time.Time) bool {
	return !ps.banned && !now.Before(ps.until)
}

// Next returns the requests to send now. Each returned request is counted in flight until
// Done, NotHave, Failed, Corrupt, PeerDown or Ban.
func (pl *Planner) Next(now time.Time) []Request {
	pl.lastNow = now
	if pl.grewAt.IsZero() {
		pl.grewAt = now
	}
	free := 0
	for _, ps := range pl.states {
		if pl.usable(ps, now) {
			free += max(0, pl.limit(ps)-ps.inflight)
		}
	}
	if free == 0 {
		return nil
	}
	if pl.cand == nil || (pl.dirty && now.Sub(pl.builtAt) >= rebuildEvery) || now.Sub(pl.builtAt) >= rebuildMax || now.Before(pl.builtAt) {
		pl.rebuild(now)
	}
	// Take candidates from the head of the queue: drop what is held, held back, in flight or
	// unavailable; assign what a peer can serve now; put what must wait (resting slice, no
	// free peer) back at the tail. At most walkMax entries per call.
	var out []Request
	deferred := pl.scratch[:0]
	for walked := 0; free > 0 && walked < walkMax && pl.head < len(pl.cand); walked++ {
		i := pl.cand[pl.head]
		pl.head++
		_, busy := pl.inflight[i]
		if pl.have.Has(i) || pl.hold.Has(i) || pl.avail[i] == 0 || busy {
			pl.incand.Clear(i)
			continue
		}
		if t, ok := pl.notBefore[i]; ok && now.Before(t) {
			deferred = append(deferred, i)
			continue
		}
		p, ok := pl.pick(i, now)
		if !ok {
			deferred = append(deferred, i)
			continue
		}
		pl.incand.Clear(i)
		pl.assign(p, now)
		pl.inflight[i] = p
		pl.since[i] = now
		out = append(out, Request{Peer: p, Index: i})
		free--
	}
	if pl.head > len(pl.cand)/2 { // compact: amortised O(1) per entry
		pl.cand = append(pl.cand[:0], pl.cand[pl.head:]...)
		pl.head = 0
	}
	pl.cand = append(pl.cand, deferred...)
	pl.scratch = deferred[:0]
	if free > 0 && pl.head == len(pl.cand) && pl.cfg.EndgameAfter > 0 {
		out = append(out, pl.endgame(now, free)...)
	}
	return out
}

// assign counts one more request in flight to p.
func (pl *Planner) assign(p peer.ID, now time.Time) {
	ps := pl.peers[p]
	if ps.inflight == 0 {
		ps.busy = now
	}
	ps.inflight++
}

// stalled reports whether p has requests in flight and has answered none for EndgameAfter.
func (pl *Planner) stalled(ps *peerState, now time.Time) bool {
	return pl.cfg.EndgameAfter > 0 && ps.inflight > 0 && now.Sub(ps.busy) >= pl.cfg.EndgameAfter
}

// endgame asks a second peer for slices in flight for longer than EndgameAfter, oldest first.
func (pl *Planner) endgame(now time.Time, free int) []Request {
	var old []int
	for i, t := range pl.since {
		if _, dup := pl.dups[i]; !dup && now.Sub(t) >= pl.cfg.EndgameAfter {
			old = append(old, i)
		}
	}
	slices.SortFunc(old, func(a, b int) int { return pl.since[a].Compare(pl.since[b]) })
	var out []Request
	for _, i := range old {
		if free == 0 {
			break
		}
		first := pl.inflight[i]
		var best peer.ID
		bestLoad := -1
		for _, ps := range pl.states {
			p := ps.id
			if p == first || !ps.has.Has(i) || !pl.usable(ps, now) || ps.inflight >= pl.limit(ps) {
				continue
			}
			// Non-source peers first, then the least loaded.
			load := ps.inflight
			if ps.source {
				load += 1 << 20
			}
			if bestLoad < 0 || load < bestLoad {
				best, bestLoad = p, load
			}
		}
		if bestLoad < 0 {
			continue
		}
		pl.assign(best, now)
		pl.dups[i] = best
		out = append(out, Request{Peer: best, Index: i})
		free--
	}
	return out
}

// Candidate list upkeep: rebuilt (sorted rarest first, or ascending) at most every
// rebuildEvery while availability changed, and at least every rebuildMax; in between,
// slices that become candidates are appended.
const (
	rebuildEvery = 250 * time.Millisecond
	rebuildMax   = 2 * time.Second
	walkMax      = 256
)

func (pl *Planner) rebuild(now time.Time) {
	pl.cand, pl.head = pl.cand[:0], 0
	pl.incand = store.NewBitmap(pl.n)
	for i := 0; i < pl.n; i++ {
		if _, busy := pl.inflight[i]; busy || pl.have.Has(i) || pl.hold.Has(i) || pl.avail[i] == 0 {
			continue
		}
		pl.cand = append(pl.cand, i)
		pl.incand.Set(i)
	}
	if pl.cand == nil {
		pl.cand = []int{}
	}
	if !pl.cfg.Ascending {
		pl.rng.Shuffle(len(pl.cand), func(x, y int) { pl.cand[x], pl.cand[y] = pl.cand[y], pl.cand[x] })
		slices.SortStableFunc(pl.cand, func(a, b int) int { return int(pl.avail[a]) - int(pl.avail[b]) })
	}
	pl.builtAt, pl.dirty = now, false
}

// offer makes slice i a candidate again (appended; ordered properly at the next rebuild).
func (pl *Planner) offer(i int) {
	if pl.cand == nil || i < 0 || i >= pl.n || pl.have.Has(i) || pl.incand.Has(i) {
		return
	}
	pl.cand = append(pl.cand, i)
	pl.incand.Set(i)
}

// pick chooses the peer for slice i, or reports false if none may serve it now.
func (pl *Planner) pick(i int, now time.Time) (peer.ID, bool) {
	var best peer.ID
	bestLoad, ties := -1, 0
	var src peer.ID
	srcOK, otherHolder := false, false
	for _, ps := range pl.states {
		p := ps.id
		if !ps.has.Has(i) || !pl.usable(ps, now) {
			continue
		}
		if ps.source {
			srcOK = ps.inflight < pl.limit(ps)
			src = p
			continue
		}
		if ps.inflight >= pl.limit(ps) {
			// A busy peer that answers keeps the slice for itself; a stalled one does not.
			otherHolder = otherHolder || !pl.stalled(ps, now)
			continue
		}
		otherHolder = true
		switch {
		case bestLoad < 0 || ps.inflight < bestLoad:
			best, bestLoad, ties = p, ps.inflight, 1
		case ps.inflight == bestLoad:
			ties++
			if pl.rng.IntN(ties) == 0 {
				best = p
			}
		}
	}
	if bestLoad >= 0 {
		return best, true
	}
	if srcOK && ((!otherHolder && pl.sourceOpen(now)) || int(pl.tries[i]) >= pl.cfg.MaxPeerTries) {
		return src, true
	}
	return "", false
}

// NextWake returns the earliest time after now at which a resting peer or slice becomes
// eligible again or a request becomes old enough for the endgame, or the zero time if none.
func (pl *Planner) NextWake(now time.Time) time.Time {
	var t time.Time
	consider := func(u time.Time) {
		if u.After(now) && (t.IsZero() || u.Before(t)) {
			t = u
		}
	}
	for _, ps := range pl.peers {
		if !ps.banned {
			consider(ps.until)
		}
	}
	for _, u := range pl.notBefore {
		consider(u)
	}
	if pl.cfg.SourceDelay > 0 && !pl.grewAt.IsZero() {
		consider(pl.grewAt.Add(pl.cfg.SourceDelay)) // the source may open then
	}
	if pl.cfg.EndgameAfter > 0 {
		for _, ps := range pl.peers {
			if !ps.banned && ps.inflight > 0 {
				consider(ps.busy.Add(pl.cfg.EndgameAfter)) // may become stalled then
			}
		}
		for i, u := range pl.since {
			if _, dup := pl.dups[i]; !dup {
				consider(u.Add(pl.cfg.EndgameAfter))
			}
		}
	}
	return t
}
