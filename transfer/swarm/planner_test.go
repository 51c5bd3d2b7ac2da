package swarm

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/transfer/store"
)

var t0 = time.Unix(1_000_000, 0)

func testPlanner(n int) *Planner {
	cfg := DefaultPlannerConfig()
	cfg.Rand = rand.New(rand.NewPCG(1, 2))
	return NewPlanner(n, store.NewBitmap(n), cfg)
}

func bm(n int, idx ...int) store.Bitmap {
	b := store.NewBitmap(n)
	for _, i := range idx {
		b.Set(i)
	}
	return b
}

func count(reqs []Request, p peer.ID) int {
	c := 0
	for _, r := range reqs {
		if r.Peer == p {
			c++
		}
	}
	return c
}

func TestPlannerRarestFirst(t *testing.T) {
	pl := testPlanner(4)
	pl.cfg.MaxInflightPerPeer = 1
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	for _, p := range []peer.ID{a, b, c} {
		pl.AddPeer(p, false)
	}
	pl.SetHave(a, bm(4, 0, 1, 2, 3))
	pl.SetHave(b, bm(4, 0, 1, 2))
	pl.SetHave(c, bm(4, 0, 1))
	// Availability: 0,1 → 3 peers; 2 → 2; 3 → 1. One slot each: 3 first, then 2, then 0 or 1.
	reqs := pl.Next(t0)
	if len(reqs) != 3 || reqs[0].Index != 3 || reqs[0].Peer != a || reqs[1].Index != 2 || reqs[1].Peer != b {
		t.Fatalf("not rarest first: %+v", reqs)
	}
	if reqs[2].Peer != c || (reqs[2].Index != 0 && reqs[2].Index != 1) {
		t.Fatalf("third request: %+v", reqs[2])
	}
	if more := pl.Next(t0); len(more) != 0 {
		t.Fatalf("exceeded per-peer slots: %+v", more)
	}
}

func TestPlannerPrefersNonSource(t *testing.T) {
	pl := testPlanner(10)
	src, a := peer.ID("src"), peer.ID("a")
	pl.AddPeer(src, true)
	pl.AddPeer(a, false)
	pl.SetHave(src, store.FullBitmap(10))
	pl.SetHave(a, bm(10, 0, 1, 2, 3))
	reqs := pl.Next(t0)
	for _, r := range reqs {
		if r.Peer == src && r.Index <= 3 {
			t.Fatalf("source asked for slice %d that a peer holds", r.Index)
		}
		if r.Peer == a && r.Index > 3 {
			t.Fatalf("peer asked for a slice it lacks")
		}
	}
	if count(reqs, a) != 4 || count(reqs, src) != 6 {
		t.Fatalf("split: a=%d src=%d", count(reqs, a), count(reqs, src))
	}
}

func TestPlannerBoundedPerPeer(t *testing.T) {
	pl := testPlanner(100)
	a := peer.ID("a")
	pl.AddPeer(a, false)
	pl.SetHave(a, store.FullBitmap(100))
	reqs := pl.Next(t0)
	if len(reqs) != pl.cfg.MaxInflightPerPeer {
		t.Fatalf("%d requests, limit %d", len(reqs), pl.cfg.MaxInflightPerPeer)
	}
	pl.Done(a, reqs[0].Index)
	if r := pl.Next(t0); len(r) != 1 {
		t.Fatalf("after one answer: %d requests", len(r))
	}
}

func TestPlannerRetriesThenSource(t *testing.T) {
	pl := testPlanner(1)
	src, a := peer.ID("src"), peer.ID("a")
	pl.AddPeer(src, true)
	pl.AddPeer(a, false)
	pl.SetHave(src, bm(1, 0))
	pl.SetHave(a, bm(1, 0))
	now := t0
	for try := 0; try < pl.cfg.MaxPeerTries; try++ {
		now = now.Add(time.Minute) // past every back-off
		reqs := pl.Next(now)
		if len(reqs) != 1 || reqs[0].Peer != a {
			t.Fatalf("try %d: %+v, want the peer", try, reqs)
		}
		pl.Failed(a, 0, now)
		// Resting: the peer is not asked again at once, and the source is used only while
		// the only other holder rests.
		if r := pl.Next(now); len(r) != 0 {
			t.Fatalf("try %d: asked again before the back-off: %+v", try, r)
		}
	}
	now = now.Add(time.Minute)
	reqs := pl.Next(now)
	if len(reqs) != 1 {
		t.Fatalf("after %d tries: %+v", pl.cfg.MaxPeerTries, reqs)
	}
	// After MaxPeerTries the source may serve it even though a holds it; a is preferred
	// while usable, so fail a once more and check the source gets it.
	if reqs[0].Peer == a {
		pl.Failed(a, 0, now)
		now = now.Add(pl.cfg.BackoffBase) // slice rested, peer still resting (longer back-off)
		reqs = pl.Next(now)
	}
	if len(reqs) != 1 || reqs[0].Peer != src {
		t.Fatalf("source not used: %+v", reqs)
	}
}

func TestPlannerBackoffRandomisedAndBounded(t *testing.T) {
	pl := testPlanner(1)
	a := peer.ID("a")
	pl.AddPeer(a, false)
	pl.SetHave(a, bm(1, 0))
	now := t0
	var prev time.Duration
	for k := 1; k <= 12; k++ {
		reqs := pl.Next(now)
		if len(reqs) != 1 {
			t.Fatalf("k=%d: %+v", k, reqs)
		}
		pl.Failed(a, 0, now)
		wait := pl.peers[a].until.Sub(now)
		base := pl.cfg.BackoffBase << (k - 1)
		if base > pl.cfg.BackoffMax || base <= 0 {
			base = pl.cfg.BackoffMax
		}
		if wait < base/2 || wait > base*3/2 {
			t.Fatalf("k=%d: wait %v for base %v", k, wait, base)
		}
		if k > 8 && wait > pl.cfg.BackoffMax*3/2 {
			t.Fatalf("back-off unbounded: %v", wait)
		}
		prev = wait
		now = now.Add(pl.cfg.BackoffMax * 2)
	}
	_ = prev
}

func TestPlannerBanAfterK(t *testing.T) {
	pl := testPlanner(20)
	bad, good := peer.ID("bad"), peer.ID("good")
	pl.AddPeer(bad, false)
	pl.AddPeer(good, false)
	pl.SetHave(bad, store.FullBitmap(20))
	now := t0
	for k := 1; k <= pl.cfg.BanAfter; k++ {
		reqs := pl.Next(now)
		if len(reqs) == 0 || reqs[0].Peer != bad {
			t.Fatalf("k=%d: %+v", k, reqs)
		}
		banned := pl.Corrupt(bad, reqs[0].Index, now)
		if banned != (k == pl.cfg.BanAfter) {
			t.Fatalf("k=%d banned=%v", k, banned)
		}
		now = now.Add(time.Minute)
	}
	if pl.Inflight(bad) != 0 {
		t.Fatal("banned peer keeps requests in flight")
	}
	if r := pl.Next(now.Add(time.Hour)); len(r) != 0 {
		t.Fatalf("banned peer asked again: %+v", r)
	}
	pl.SetHave(good, store.FullBitmap(20))
	reqs := pl.Next(now.Add(time.Hour))
	if len(reqs) == 0 || count(reqs, bad) != 0 {
		t.Fatalf("after ban: %+v", reqs)
	}
	for _, a := range pl.avail {
		if a != 1 {
			t.Fatal("banned peer still counted in availability")
		}
	}
}

func TestPlannerHoldAndNotHave(t *testing.T) {
	pl := testPlanner(3)
	a := peer.ID("a")
	pl.AddPeer(a, false)
	pl.SetHave(a, store.FullBitmap(3))
	pl.Hold(0)
	pl.Hold(1)
	reqs := pl.Next(t0)
	if len(reqs) != 1 || reqs[0].Index != 2 {
		t.Fatalf("held slices requested: %+v", reqs)
	}
	pl.NotHave(a, 2)
	if r := pl.Next(t0); len(r) != 0 {
		t.Fatalf("slice requested from a peer that said it lacks it: %+v", r)
	}
	pl.Release(1)
	if r := pl.Next(t0); len(r) != 1 || r[0].Index != 1 {
		t.Fatalf("released slice not requested: %+v", r)
	}
	pl.Have(0)
	pl.Done(a, 1)
	pl.PeerHas(a, 2)
	if r := pl.Next(t0.Add(time.Minute)); len(r) != 1 || r[0].Index != 2 {
		t.Fatalf("%+v", r)
	}
	pl.Done(a, 2)
	if !pl.Complete() {
		t.Fatal("not complete")
	}
}

func TestPlannerPeerDownFreesSlots(t *testing.T) {
	pl := testPlanner(8)
	a, b := peer.ID("a"), peer.ID("b")
	pl.AddPeer(a, false)
	pl.AddPeer(b, false)
	pl.SetHave(a, store.FullBitmap(8))
	reqs := pl.Next(t0)
	if len(reqs) != 8 {
		t.Fatalf("%d", len(reqs))
	}
	pl.PeerDown(a, t0)
	pl.SetHave(b, store.FullBitmap(8))
	reqs = pl.Next(t0)
	if len(reqs) != 8 || count(reqs, b) != 8 {
		t.Fatalf("slices of a down peer not re-planned: %+v", reqs)
	}
}

// TestPlannerScenario drives a planner through a random run with failures and a bad peer and
// checks it completes without ever asking a banned peer or exceeding slots.
func TestPlannerScenario(t *testing.T) {
	const n = 200
	rng := rand.New(rand.NewPCG(9, 9))
	pl := testPlanner(n)
	src := peer.ID("src")
	pl.AddPeer(src, true)
	pl.SetHave(src, store.FullBitmap(n))
	peers := []peer.ID{"p1", "p2", "p3", "bad"}
	for _, p := range peers {
		pl.AddPeer(p, false)
		h := store.NewBitmap(n)
		for i := 0; i < n; i++ {
			if rng.IntN(2) == 0 {
				h.Set(i)
			}
		}
		pl.SetHave(p, h)
	}
	now := t0
	var bannedAt int = -1
	fromSource := 0
	for step := 0; step < 100000 && !pl.Complete(); step++ {
		wasBanned := pl.Banned("bad")
		reqs := pl.Next(now)
		for _, r := range reqs {
			if r.Peer == "bad" && wasBanned {
				t.Fatalf("asked banned peer")
			}
			if pl.Banned(r.Peer) {
				continue // banned within this batch: its answers no longer matter
			}
			if pl.Inflight(r.Peer) > pl.limit(pl.peers[r.Peer]) {
				t.Fatalf("slots exceeded")
			}
			switch {
			case r.Peer == "bad":
				if pl.Corrupt(r.Peer, r.Index, now) && bannedAt < 0 {
					bannedAt = step
				}
			case rng.IntN(10) == 0:
				pl.Failed(r.Peer, r.Index, now)
			default:
				if r.Peer == src {
					fromSource++
				}
				pl.Done(r.Peer, r.Index)
			}
		}
		now = now.Add(50 * time.Millisecond)
	}
	if !pl.Complete() {
		t.Fatalf("did not complete: %d of %d", pl.HaveCount(), n)
	}
	if bannedAt < 0 {
		t.Fatal("bad peer never banned")
	}
	t.Logf("complete; %d of %d slices from the source; bad peer banned at step %d", fromSource, n, bannedAt)
}

func TestPlannerEndgame(t *testing.T) {
	pl := testPlanner(2)
	slow, fast := peer.ID("slow"), peer.ID("fast")
	pl.AddPeer(slow, false)
	pl.SetHave(slow, store.FullBitmap(2))
	reqs := pl.Next(t0)
	if len(reqs) != 2 || count(reqs, slow) != 2 {
		t.Fatalf("%+v", reqs)
	}
	pl.AddPeer(fast, false)
	pl.SetHave(fast, store.FullBitmap(2))
	if r := pl.Next(t0.Add(time.Second)); len(r) != 0 {
		t.Fatalf("duplicated before EndgameAfter: %+v", r)
	}
	if w := pl.NextWake(t0.Add(time.Second)); !w.Equal(t0.Add(pl.cfg.EndgameAfter)) {
		t.Fatalf("wake %v", w)
	}
	later := t0.Add(pl.cfg.EndgameAfter)
	reqs = pl.Next(later)
	if len(reqs) != 2 || count(reqs, fast) != 2 {
		t.Fatalf("endgame: %+v", reqs)
	}
	if r := pl.Next(later.Add(time.Hour)); len(r) != 0 {
		t.Fatalf("a third request: %+v", r)
	}
	// The duplicate answers first; the slow peer's slot stays taken until it answers or fails.
	pl.Done(fast, 0)
	pl.Done(fast, 1)
	if !pl.Complete() || pl.Inflight(fast) != 0 || pl.Inflight(slow) != 2 {
		t.Fatalf("complete %v, in flight fast %d slow %d", pl.Complete(), pl.Inflight(fast), pl.Inflight(slow))
	}
	pl.PeerDown(slow, later)
	if pl.Inflight(slow) != 0 {
		t.Fatal("slots leaked")
	}
}

func TestPlannerEndgamePromotion(t *testing.T) {
	pl := testPlanner(1)
	a, b := peer.ID("a"), peer.ID("b")
	pl.AddPeer(a, false)
	pl.AddPeer(b, false)
	pl.SetHave(a, store.FullBitmap(1))
	pl.Next(t0)
	pl.SetHave(b, store.FullBitmap(1))
	if r := pl.Next(t0.Add(pl.cfg.EndgameAfter)); len(r) != 1 || r[0].Peer != b {
		t.Fatalf("%+v", r)
	}
	// The first request fails: the duplicate becomes the request; nothing new is sent.
	pl.Failed(a, 0, t0.Add(pl.cfg.EndgameAfter))
	if r := pl.Next(t0.Add(pl.cfg.EndgameAfter + 50*time.Millisecond)); len(r) != 0 {
		t.Fatalf("re-requested a slice still in flight: %+v", r)
	}
	pl.Done(b, 0)
	if !pl.Complete() || pl.Inflight(a) != 0 || pl.Inflight(b) != 0 {
		t.Fatalf("in flight a %d b %d", pl.Inflight(a), pl.Inflight(b))
	}
}

// TestPlannerSourceDelay: with SourceDelay, a proxy takes slices from a peer that keeps gaining
// them (a receiver of the source's multicast) and asks the source only once that peer has
// stopped gaining slices for SourceDelay.
func TestPlannerSourceDelay(t *testing.T) {
	const n, delay = 20, 2 * time.Second
	cfg := DefaultPlannerConfig()
	cfg.Rand = rand.New(rand.NewPCG(1, 2))
	cfg.Ascending = true
	cfg.SourceDelay = delay
	pl := NewPlanner(n, store.NewBitmap(n), cfg)
	src, a := peer.ID("src"), peer.ID("a")
	pl.AddPeer(src, true)
	pl.AddPeer(a, false)
	pl.SetHave(src, store.FullBitmap(n))
	if reqs := pl.Next(t0); len(reqs) != 0 {
		t.Fatalf("source asked at once despite SourceDelay: %+v", reqs)
	}
	if w := pl.NextWake(t0); !w.Equal(t0.Add(delay)) {
		t.Fatalf("NextWake = %v, want the source to open at %v", w, t0.Add(delay))
	}
	// a gains slices every second: they go to a, never to the source.
	now := t0
	for k := range 5 {
		now = now.Add(time.Second)
		pl.Next(now) // the session calls Next often; growth is stamped with its clock
		pl.SetHave(a, bm(n, seq(0, 2*(k+1))...))
		for _, r := range pl.Next(now) {
			if r.Peer != a {
				t.Fatalf("at +%ds slice %d asked from %s while a keeps gaining slices", k+1, r.Index, r.Peer)
			}
			pl.Done(r.Peer, r.Index)
		}
	}
	// a stops gaining slices: after SourceDelay the source serves the rest.
	if reqs := pl.Next(now.Add(delay - time.Millisecond)); count(reqs, src) != 0 {
		t.Fatalf("source asked before SourceDelay elapsed: %+v", reqs)
	}
	reqs := pl.Next(now.Add(delay))
	if count(reqs, src) == 0 || reqs[0].Index != 10 {
		t.Fatalf("source not asked for the rest (from slice 10) once a stopped: %+v", reqs)
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}
