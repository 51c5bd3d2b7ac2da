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
//     whose heartbeats resumed is committed alive;
//  4. voters: ready, live non-voters are promoted while there are fewer than MaxVoters;
//     a dead voter is replaced by a ready, live non-voter (promote first, then demote, so
//     the quorum never shrinks on a dead node).
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
	// 3. Liveness.
	dead := make(map[peer.ID]bool)
	g.mu.Lock()
	for p := range members {
		if since, failing := g.failed[p]; failing && p != g.self && now.Sub(since) >= g.m.cfg.DeadAfter {
			dead[p] = true
		}
	}
	g.mu.Unlock()
	for p, m := range members {
		if alive := !dead[p]; alive != m.Alive {
			if _, err := g.applyLocal(ctx, &MemberLive{PeerID: p, Alive: alive, At: now}, mustEncode(&MemberLive{PeerID: p, Alive: alive, At: now}), g.self); err != nil {
				return
			}
			g.log.Info("member liveness", "peer", p, "alive", alive)
		}
	}
	// 4. Voters.
	voters := 0
	var deadVoters, spares []peer.ID
	for p, s := range servers {
		switch {
		case s == raft.Voter:
			voters++
			if dead[p] {
				deadVoters = append(deadVoters, p)
			}
		case members[p].Ready && !dead[p]:
			spares = append(spares, p)
		}
	}
	slices.Sort(spares)
	slices.Sort(deadVoters)
	for len(spares) > 0 && voters < g.m.cfg.MaxVoters {
		p := spares[0]
		spares = spares[1:]
		if !change("promote", p, g.raft.AddVoter(id(p), addr(p), prev, configChangeTimeout)) {
			return
		}
		voters++
	}
	for _, d := range deadVoters {
		if len(spares) == 0 {
			break
		}
		p := spares[0]
		spares = spares[1:]
		if !change("promote", p, g.raft.AddVoter(id(p), addr(p), prev, configChangeTimeout)) {
			return
		}
		if !change("demote-dead", d, g.raft.DemoteVoter(id(d), prev, configChangeTimeout)) {
			return
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
