package peergroup

import (
	"context"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
)

// configChangeTimeout bounds one Raft configuration change.
const configChangeTimeout = 10 * time.Second

// leaderLoop runs the leader's membership duties every ReconcileInterval and whenever
// something changed (leadership, a heartbeat resumed).
func (g *Group) leaderLoop() {
	defer g.wg.Done()
	t := time.NewTicker(g.m.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		case <-g.kick:
		}
		if g.IsLeader() {
			g.reconcile()
		}
	}
}

// reconcile brings the Raft configuration in line with the replicated member list and
// records liveness, one step at a time (each a committed change):
//
//  1. servers that are no longer members (left, expelled) are removed;
//  2. members missing from the configuration (e.g. the leader died between committing the
//     MemberAdd and adding the server) are added as non-voters;
//  3. liveness: a member whose heartbeats have failed for DeadAfter is committed dead, one
//     whose heartbeats resumed is committed alive; a joiner that never caught up and has
//     been unreachable for AbandonAfter is removed;
//  4. voters: a dead voter is replaced by a ready, live non-voter (promote first, then
//     demote, so the quorum never shrinks on a dead node); ready live non-voters are
//     promoted, two at a time, while that keeps the voters odd and at most MaxVoters; an
//     even number of voters (after a leave) is made odd by demoting one (a dead one first).
//     An odd count is strictly better: 2k+2 voters survive no more failures than 2k+1.
func (g *Group) reconcile() {
	ctx, cancel := context.WithTimeout(g.ctx, configChangeTimeout)
	defer cancel()
	cf := g.raft.GetConfiguration()
	if err := g.waitFuture(ctx, cf); err != nil {
		return
	}
	conf := cf.Configuration()
	prev := cf.Index()
	v := g.fsm.view(nil)
	if v.Header.ID == "" { // not initialised yet (first entries still committing)
		return
	}
	now := g.m.cfg.Now()
	servers := make(map[peer.ID]raft.ServerSuffrage, len(conf.Servers))
	for _, s := range conf.Servers {
		if p, err := peer.Decode(string(s.ID)); err == nil {
			servers[p] = s.Suffrage
		}
	}
	members := make(map[peer.ID]Member, len(v.Members))
	for _, m := range v.Members {
		members[m.PeerID] = m
	}

	change := func(what string, p peer.ID, f raft.IndexFuture) bool {
		if err := g.waitFuture(ctx, f); err != nil {
			g.log.Info("membership change failed", "change", what, "peer", p, "err", err)
			return false
		}
		g.log.Info("membership change", "change", what, "peer", p)
		prev = f.Index()
		return true
	}
	id := func(p peer.ID) raft.ServerID { return raft.ServerID(p.String()) }
	addr := func(p peer.ID) raft.ServerAddress { return raft.ServerAddress(p.String()) }

	// 1. Remove servers that are not members. The leader removing itself steps down.
	for p := range servers {
		if _, ok := members[p]; !ok && p != g.self { // the leader leaves through Leave
			if !change("remove", p, g.raft.RemoveServer(id(p), prev, configChangeTimeout)) {
				return
			}
			delete(servers, p)
		}
	}
	// 2. Add members that are not servers, as non-voters.
	for p := range members {
		if _, ok := servers[p]; !ok {
			if !change("add-nonvoter", p, g.raft.AddNonvoter(id(p), addr(p), prev, configChangeTimeout)) {
				return
			}
			servers[p] = raft.Nonvoter
		}
	}
	// 3. Liveness; joiners that never caught up and have been unreachable for AbandonAfter
	// are removed.
	dead := make(map[peer.ID]bool)
	var abandoned []peer.ID
	g.mu.Lock()
	for p, m := range members {
		since, failing := g.failed[p]
		if !failing || p == g.self {
			continue
		}
		if now.Sub(since) >= g.m.cfg.DeadAfter {
			dead[p] = true
		}
		if !m.Ready && now.Sub(since) >= g.m.cfg.AbandonAfter && now.Sub(m.Joined) >= g.m.cfg.AbandonAfter {
			abandoned = append(abandoned, p)
		}
	}
	g.mu.Unlock()
	for _, p := range abandoned {
		c := &MemberRemove{PeerID: p, Reason: ReasonLeave, At: now}
		if _, err := g.applyLocal(ctx, c, mustEncode(c), g.self); err != nil {
			return
		}
		g.log.Info("removed a joiner that never caught up", "peer", p)
		delete(members, p)
	}
	for p, m := range members {
		if alive := !dead[p]; alive != m.Alive {
			c := &MemberLive{PeerID: p, Alive: alive, At: now}
			if _, err := g.applyLocal(ctx, c, mustEncode(c), g.self); err != nil {
				return
			}
			g.log.Info("member liveness", "peer", p, "alive", alive)
		}
	}

	// 4. Voters: an odd number (2k+1 voters survive k failures, 2k+2 no more), at most
	// MaxVoters; dead voters are replaced by ready live non-voters.
	voters := 0
	var liveVoters, deadVoters, spares []peer.ID
	for p, s := range servers {
		switch {
		case s == raft.Voter && dead[p]:
			voters++
			deadVoters = append(deadVoters, p)
		case s == raft.Voter:
			voters++
			if p != g.self {
				liveVoters = append(liveVoters, p)
			}
		case members[p].Ready && !dead[p]:
			spares = append(spares, p)
		}
	}
	slices.Sort(spares)
	slices.Sort(deadVoters)
	slices.Sort(liveVoters)
	promote := func(p peer.ID) bool {
		return change("promote", p, g.raft.AddVoter(id(p), addr(p), prev, configChangeTimeout))
	}
	demote := func(what string, p peer.ID) bool {
		return change(what, p, g.raft.DemoteVoter(id(p), prev, configChangeTimeout))
	}
	for len(deadVoters) > 0 && len(spares) > 0 { // replace: promote first, then demote
		if !promote(spares[0]) || !demote("demote-dead", deadVoters[0]) {
			return
		}
		spares, deadVoters = spares[1:], deadVoters[1:]
	}
	maxVoters := g.m.cfg.MaxVoters
	if maxVoters%2 == 0 {
		maxVoters--
	}
	for {
		need := 1 + voters%2 // from odd, grow by two; from even, by one
		if voters+need > maxVoters || len(spares) < need {
			break
		}
		for _, p := range spares[:need] {
			if !promote(p) {
				return
			}
		}
		spares, voters = spares[need:], voters+need
	}
	if voters%2 == 0 || voters > maxVoters { // shrink to odd: a dead voter first
		switch {
		case len(deadVoters) > 0:
			demote("demote-dead", deadVoters[0])
		case len(liveVoters) > 0:
			demote("demote-even", liveVoters[len(liveVoters)-1])
		}
	}
}

func mustEncode(c Command) []byte {
	b, err := EncodeCommand(c)
	if err != nil {
		panic(err) // only called with commands built here, which are well-formed
	}
	return b
}
