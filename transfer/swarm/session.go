package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/store"
)

// Config tunes a receiver Session.
type Config struct {
	Planner       PlannerConfig
	Source        peer.ID                             // the content's source peer (asked last); may be empty
	Peers         func(ctx context.Context) []peer.ID // optional: more peers that may hold the content, polled every PeersInterval
	OnProgress    func(Progress)                      // optional: called from the session goroutine after every new slice; must not block
	OnStored      func(index, n int, from peer.ID)    // optional: likewise, with the slice and the bytes received from that peer
	Partials      Partials                            // optional: slices partly received by multicast, completed by asking only for the missing parts
	HaveInterval  time.Duration                       // how often a peer's have-bitmap is asked for while we miss slices it might get
	PeersInterval time.Duration                       // how often Peers is called
	DialTimeout   time.Duration                       // opening a stream to a peer
	FrameTimeout  time.Duration                       // a peer that sends nothing for this long while we wait for it is down
	Now           func() time.Time                    // the clock; nil: time.Now
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Planner:       DefaultPlannerConfig(),
		HaveInterval:  250 * time.Millisecond,
		PeersInterval: 2 * time.Second,
		DialTimeout:   10 * time.Second,
		FrameTimeout:  15 * time.Second,
	}
}

func (c *Config) validate() error {
	p := c.Planner
	if p.MaxInflightPerPeer <= 0 || p.MaxInflightSource <= 0 || p.BanAfter <= 0 || p.MaxPeerTries < 0 || p.BackoffBase <= 0 || p.BackoffMax < p.BackoffBase {
		return fmt.Errorf("swarm: bad planner config %+v", p)
	}
	if c.HaveInterval <= 0 || c.PeersInterval <= 0 || c.DialTimeout <= 0 || c.FrameTimeout <= 0 {
		return fmt.Errorf("swarm: bad session config")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Partials hands the session slices partly received by another carrier (multicast), so that
// only their missing parts are fetched from a peer.
type Partials interface {
	// Take removes and returns slice i's partial buffer (the slice's full length, received
	// bytes in place) and the mask of content.Parts parts still needed; ok is false if there
	// is none. The session owns the buffer afterwards.
	Take(i int) (buf []byte, need uint32, ok bool)
}

// Stats counts what a session received, by origin. Only slices new to the store count in
// BytesSource and BytesPeers, so with the bytes other carriers stored they add up to the size.
type Stats struct {
	BytesSource    int64     // verified new bytes from the source peer
	BytesPeers     int64     // verified new bytes from other peers
	BytesDuplicate int64     // verified bytes we already held (another carrier was faster)
	BytesPartial   int64     // bytes of slices completed from parts that were already there (from multicast)
	PartsRequests  int       // parts requests sent (slices completed from a partial copy)
	PartsBad       int       // slices completed from parts that failed verification (fetched whole again)
	SlicesCorrupt  int       // slices that failed verification
	Requests       int       // slice requests sent
	Elsewhere      int       // slices the seeding source sent us to take from other peers
	Banned         []peer.ID // peers banned for bad slices
}

// Progress is reported after every new slice.
type Progress struct {
	Have, Total int // slices
	Stats
}

// Session fetches the slices a store misses from peers over the transfer protocol.
type Session struct {
	h   host.Host
	m   *content.Manifest
	st  *store.Store
	cfg Config
	log *slog.Logger

	events chan event // from conns; bounded, the session loop always drains it

	inboxMu sync.Mutex       // guards inbox
	inbox   []func(*Planner) // commands from other goroutines, applied by the loop
	poke    chan struct{}    // capacity 1: the inbox has something

	statsMu sync.Mutex // guards stats
	stats   Stats

	wg sync.WaitGroup // conn goroutines and peer lookups

	suspects map[int]suspect   // owned by the Run goroutine: failed partial repairs awaiting blame
	ctls     map[peer.ID]*conn // owned by the Run goroutine: control streams for have polls
}

// suspect is a partial repair that failed verification: either the peer's parts or the
// multicast's bytes were bad. Once the slice is stored whole (verified), the peer's parts are
// compared with it: if they differ, the peer lied and is charged with a bad slice.
type suspect struct {
	p    peer.ID
	mask uint32
	buf  []byte
}

// maxSuspects bounds the memory held for blame (slice buffers).
const maxSuspects = 16

// NewSession prepares a session that completes st (whose slices are verified against m) from
// peers. Peers are added with AddPeer or through Config.Peers; the source is Config.Source.
func NewSession(h host.Host, m *content.Manifest, st *store.Store, cfg Config, log *slog.Logger) (*Session, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if l := st.Layout(); l.Size != m.Size || l.SliceSize != m.SliceSize {
		return nil, fmt.Errorf("swarm: store layout %+v does not match the manifest", l)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Session{
		h: h, m: m, st: st, cfg: cfg, log: log.With("content", m.ID().String()[:12]),
		events: make(chan event, 256),
		poke:   make(chan struct{}, 1),
	}, nil
}

func (s *Session) do(f func(*Planner)) {
	s.inboxMu.Lock()
	s.inbox = append(s.inbox, f)
	s.inboxMu.Unlock()
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// AddPeer adds a peer that may hold the content. Safe from any goroutine.
func (s *Session) AddPeer(p peer.ID) {
	if p == s.h.ID() {
		return
	}
	s.do(func(pl *Planner) { pl.AddPeer(p, p == s.cfg.Source) })
}

// Stored tells the session that slice i reached the store by another carrier.
func (s *Session) Stored(i int) { s.do(func(pl *Planner) { pl.Have(i) }) }

// Hold keeps slices from being fetched from peers (multicast is expected to deliver them).
func (s *Session) Hold(idx ...int) {
	idx = slices.Clone(idx)
	s.do(func(pl *Planner) {
		for _, i := range idx {
			pl.Hold(i)
		}
	})
}

// Release makes held-back slices eligible for fetching from peers (multicast lost them).
func (s *Session) Release(idx ...int) {
	idx = slices.Clone(idx)
	s.do(func(pl *Planner) {
		for _, i := range idx {
			pl.Release(i)
		}
	})
}

// ReleaseAll makes every held-back slice eligible (multicast is over or gone).
func (s *Session) ReleaseAll() { s.do(func(pl *Planner) { pl.ReleaseAll() }) }

// Stats returns a snapshot of the counters.
func (s *Session) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := s.stats
	st.Banned = slices.Clone(st.Banned)
	return st
}

// report hands an event to the session loop. Blocks only while the loop is busy; gives up
// when the conn is stopped.
func (s *Session) report(ev event) {
	select {
	case s.events <- ev:
	case <-ev.c.ctx.Done():
		if ev.kind == evDown || ev.kind == evFatal {
			// The loop may be gone; a down conn after the end is of no interest.
			select {
			case s.events <- ev:
			default:
			}
		}
	}
}

type peerInfo struct {
	nextHave    time.Time
	havePending bool
	full        bool // announced every slice: no more have polls
}

// Run fetches until the store is complete (nil), ctx ends (its error) or storing fails (that
// error). Run may be called once. All goroutines it starts have returned when it returns.
func (s *Session) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		s.wg.Wait()
	}()
	now := s.cfg.Now
	n := s.m.NumSlices()
	s.suspects = make(map[int]suspect)
	s.ctls = make(map[peer.ID]*conn)
	pl := NewPlanner(n, s.st.Have(), s.cfg.Planner)
	conns := make(map[peer.ID]*conn)
	infos := make(map[peer.ID]*peerInfo)
	if s.cfg.Source != "" && s.cfg.Source != s.h.ID() {
		pl.AddPeer(s.cfg.Source, true)
	}
	defer func() {
		for _, c := range conns {
			c.close()
		}
		for _, c := range s.ctls {
			c.close()
		}
	}()
	start := func(c *conn) *conn {
		s.wg.Add(2)
		go func() { defer s.wg.Done(); c.writer() }()
		go func() { defer s.wg.Done(); c.reader() }()
		return c
	}
	connFor := func(p peer.ID) *conn {
		if c := conns[p]; c != nil {
			return c
		}
		c := newConn(s, ctx, p, s.cfg.Planner.MaxInflightPerPeer+s.cfg.Planner.MaxInflightSource+4)
		conns[p] = c
		return start(c)
	}
	// Have polls go on a stream of their own, so that they do not wait behind slices.
	ctlFor := func(p peer.ID) *conn {
		if c := s.ctls[p]; c != nil {
			return c
		}
		c := newConn(s, ctx, p, 2)
		c.ctl = true
		s.ctls[p] = c
		return start(c)
	}
	peersDone := make(chan []peer.ID, 1)
	var nextPeers time.Time
	lookingUp := false
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		t := now()
		s.applyInbox(pl)
		if pl.Complete() {
			return nil
		}
		if s.st.Complete() {
			// Another path filled the store; let the conns that stored the last slices
			// report them (for the byte counts), briefly.
			s.drainUntilComplete(ctx, pl, conns, infos)
			return nil
		}
		// More peers.
		if s.cfg.Peers != nil && !lookingUp && !t.Before(nextPeers) {
			lookingUp = true
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				lctx, lcancel := context.WithTimeout(ctx, s.cfg.PeersInterval*4)
				defer lcancel()
				ps := s.cfg.Peers(lctx)
				select {
				case peersDone <- ps:
				case <-ctx.Done():
				}
			}()
		}
		// Have polls.
		wake := t.Add(time.Hour)
		for _, p := range pl.order {
			if p == s.h.ID() || pl.Banned(p) {
				continue
			}
			pi := infos[p]
			if pi == nil {
				pi = &peerInfo{}
				infos[p] = pi
			}
			ps := pl.peers[p]
			if pi.full || pi.havePending || t.Before(ps.until) {
				continue
			}
			if t.Before(pi.nextHave) {
				wake = minTime(wake, pi.nextHave)
				continue
			}
			if ctlFor(p).send(connReq{op: opHave}) {
				pi.havePending = true
			}
			pi.nextHave = t.Add(s.cfg.HaveInterval)
		}
		// Slice requests, coalesced into runs per peer.
		reqs := pl.Next(t)
		s.dispatch(reqs, connFor, pl, t)
		if w := pl.NextWake(t); !w.IsZero() {
			wake = minTime(wake, w)
		}
		if s.cfg.Peers != nil && !lookingUp {
			wake = minTime(wake, nextPeers)
		}
		timer.Reset(max(wake.Sub(t), time.Millisecond))

		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.poke:
		case <-timer.C:
		case ps := <-peersDone:
			lookingUp = false
			nextPeers = now().Add(s.cfg.PeersInterval)
			for _, p := range ps {
				if p != s.h.ID() {
					pl.AddPeer(p, p == s.cfg.Source)
				}
			}
		case ev := <-s.events:
			if err := s.apply(ev, pl, conns, infos); err != nil {
				return err
			}
			// Drain what else is queued before planning again.
			for drained := false; !drained; {
				select {
				case ev := <-s.events:
					if err := s.apply(ev, pl, conns, infos); err != nil {
						return err
					}
				default:
					drained = true
				}
			}
		}
	}
}

// applyInbox applies the commands other goroutines queued.
func (s *Session) applyInbox(pl *Planner) {
	s.inboxMu.Lock()
	cmds := s.inbox
	s.inbox = nil
	s.inboxMu.Unlock()
	for _, f := range cmds {
		f(pl)
	}
}

func (s *Session) drainUntilComplete(ctx context.Context, pl *Planner, conns map[peer.ID]*conn, infos map[peer.ID]*peerInfo) {
	grace := time.NewTimer(time.Second)
	defer grace.Stop()
	for !pl.Complete() {
		select {
		case ev := <-s.events:
			if s.apply(ev, pl, conns, infos) != nil {
				return
			}
		case <-s.poke:
			s.applyInbox(pl)
		case <-grace.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (s *Session) dispatch(reqs []Request, connFor func(peer.ID) *conn, pl *Planner, t time.Time) {
	if len(reqs) == 0 {
		return
	}
	byPeer := make(map[peer.ID][]int)
	var order []peer.ID
	for _, r := range reqs {
		if _, ok := byPeer[r.Peer]; !ok {
			order = append(order, r.Peer)
		}
		byPeer[r.Peer] = append(byPeer[r.Peer], r.Index)
	}
	sent := 0
	for _, p := range order {
		idx := byPeer[p]
		slices.Sort(idx)
		c := connFor(p)
		if s.cfg.Partials != nil {
			whole := idx[:0]
			for _, i := range idx {
				buf, need, ok := s.cfg.Partials.Take(i)
				if !ok || need == 0 || len(buf) != s.m.SliceLen(i) {
					whole = append(whole, i)
					continue
				}
				if c.send(connReq{op: opParts, start: i, count: int(need), buf: buf}) {
					sent++
					s.statsMu.Lock()
					s.stats.PartsRequests++
					s.statsMu.Unlock()
				} else {
					pl.Failed(p, i, t)
				}
			}
			idx = whole
		}
		for i := 0; i < len(idx); {
			j := i + 1
			for j < len(idx) && idx[j] == idx[j-1]+1 && j-i < MaxRun {
				j++
			}
			if c.send(connReq{op: opSlices, start: idx[i], count: j - i}) {
				sent++
			} else {
				for _, k := range idx[i:j] {
					pl.Failed(p, k, t)
				}
			}
			i = j
		}
	}
	s.statsMu.Lock()
	s.stats.Requests += len(reqs)
	s.statsMu.Unlock()
}

func (s *Session) apply(ev event, pl *Planner, conns map[peer.ID]*conn, infos map[peer.ID]*peerInfo) error {
	p := ev.c.p
	current := conns[p] == ev.c || s.ctls[p] == ev.c
	t := s.cfg.Now()
	if ev.c.ctl && ev.kind == evDown {
		// A control stream failed: poll again later on a new one; the data stream decides
		// whether the peer is down.
		if current {
			delete(s.ctls, p)
			if pi := infos[p]; pi != nil {
				pi.havePending = false
				pi.nextHave = t.Add(max(s.cfg.HaveInterval, time.Second))
			}
		}
		return nil
	}
	switch ev.kind {
	case evDone:
		s.statsMu.Lock()
		switch {
		case !ev.added:
			s.stats.BytesDuplicate += int64(ev.n + ev.partial)
		case p == s.cfg.Source:
			s.stats.BytesSource += int64(ev.n)
		default:
			s.stats.BytesPeers += int64(ev.n)
		}
		if ev.added {
			s.stats.BytesPartial += int64(ev.partial)
		}
		st := s.stats
		s.statsMu.Unlock()
		pl.Done(p, ev.index)
		if sus, ok := s.suspects[ev.index]; ok {
			delete(s.suspects, ev.index)
			if s.partsLied(ev.index, sus) {
				s.corrupt(sus.p, ev.index, pl, conns, t)
			}
		}
		if ev.added && s.cfg.OnStored != nil {
			s.cfg.OnStored(ev.index, ev.n, p)
		}
		if ev.added && s.cfg.OnProgress != nil {
			s.cfg.OnProgress(Progress{Have: pl.HaveCount(), Total: pl.n, Stats: st})
		}
	case evNotHave:
		if current {
			pl.NotHave(p, ev.index)
		}
	case evElsewhere:
		// The seeding peer has just sent this slice to another peer: take it from there
		// once that peer announces it. The seeder serves it again after its window, so its
		// have-bitmap is asked for again (a full peer's is otherwise not).
		if current {
			pl.NotHave(p, ev.index)
			s.statsMu.Lock()
			s.stats.Elsewhere++
			s.statsMu.Unlock()
			if pi := infos[p]; pi != nil && pi.full {
				pi.full = false
				pi.nextHave = t.Add(max(s.cfg.HaveInterval, time.Second))
			}
		}
	case evFailed:
		if current {
			pl.Failed(p, ev.index, t)
		}
	case evPartBad:
		s.statsMu.Lock()
		s.stats.PartsBad++
		s.statsMu.Unlock()
		s.log.Info("slice completed from parts failed verification; fetching it whole", "peer", p, "slice", ev.index)
		pl.Failed(p, ev.index, t)
		if len(s.suspects) >= maxSuspects {
			for k := range s.suspects {
				delete(s.suspects, k)
				break
			}
		}
		s.suspects[ev.index] = suspect{p: p, mask: ev.mask, buf: ev.buf}
	case evCorrupt:
		s.statsMu.Lock()
		s.stats.SlicesCorrupt++
		s.statsMu.Unlock()
		s.log.Warn("peer sent a corrupt slice", "peer", p, "slice", ev.index)
		s.corrupt(p, ev.index, pl, conns, t)
	case evHave:
		if pi := infos[p]; pi != nil && current {
			pi.havePending = false
			pi.full = ev.have.Full()
		}
		if !pl.Banned(p) {
			pl.SetHave(p, ev.have)
		}
	case evNotFound:
		if pi := infos[p]; pi != nil && current {
			pi.havePending = false
		}
	case evDown:
		if current {
			delete(conns, p)
			if !pl.Banned(p) {
				s.log.Debug("transfer connection down", "peer", p, "err", ev.err)
				pl.PeerDown(p, t)
			}
		}
	case evFatal:
		return fmt.Errorf("swarm: storing slice %d: %w", ev.index, ev.err)
	}
	return nil
}

// partsLied reports whether the parts a suspect peer sent for slice i differ from the slice
// now verified in the store.
func (s *Session) partsLied(i int, sus suspect) bool {
	good, err := s.st.ReadSlice(i, nil)
	if err != nil || len(good) != len(sus.buf) {
		return false
	}
	for k := 0; k < content.Parts; k++ {
		if sus.mask&(1<<k) == 0 {
			continue
		}
		off, end := content.PartBounds(len(good), k)
		if !bytes.Equal(good[off:end], sus.buf[off:end]) {
			s.statsMu.Lock()
			s.stats.SlicesCorrupt++
			s.statsMu.Unlock()
			s.log.Warn("peer sent corrupt parts", "peer", sus.p, "slice", i)
			return true
		}
	}
	return false
}

// corrupt charges p with a bad slice and bans it when that is its BanAfter-th.
func (s *Session) corrupt(p peer.ID, i int, pl *Planner, conns map[peer.ID]*conn, t time.Time) {
	was := pl.Banned(p)
	if pl.Corrupt(p, i, t) && !was {
		s.ban(p, conns)
	}
}

// ban disconnects p and never asks it again.
func (s *Session) ban(p peer.ID, conns map[peer.ID]*conn) {
	s.log.Warn("banning peer for sending corrupt slices", "peer", p)
	s.statsMu.Lock()
	s.stats.Banned = append(s.stats.Banned, p)
	s.statsMu.Unlock()
	if c := conns[p]; c != nil {
		c.close()
		delete(conns, p)
	}
	if c := s.ctls[p]; c != nil {
		c.close()
		delete(s.ctls, p)
	}
	if err := s.h.Network().ClosePeer(p); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Debug("closing banned peer", "peer", p, "err", err)
	}
}
