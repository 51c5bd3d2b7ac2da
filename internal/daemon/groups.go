package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/internal/api"
	"github.com/raftcast/raftcast/overlay"
	"github.com/raftcast/raftcast/peergroup"
)

// HandlerTrackerPick is the rendezvous node's tracker: given a joiner, it names a group to
// join (seed 1's group assignment), chosen by peergroup.TrackerPolicy from the group
// advertisements in the rendezvous index.
const HandlerTrackerPick = "tracker.pick"

// groupAdvertTTL is the lifetime of group advertisements; they are republished whenever the
// group changes and at least every half lifetime.
const groupAdvertTTL = 2 * time.Minute

// groups ties the group manager to the overlay: it publishes an advertisement per group and
// keeps it current.
type groups struct {
	d   *Daemon
	m   *peergroup.Manager
	ctx context.Context

	mu       sync.Mutex // guards watching
	watching map[string]context.CancelFunc
	wg       sync.WaitGroup
}

func newGroups(ctx context.Context, d *Daemon, dataDir string) (*groups, error) {
	cfg := peergroup.DefaultConfig()
	cfg.DataDir = dataDir
	cfg.Logger = d.log
	cfg.RaftStreamPool = 2 // keep Raft streams open: about half the idle CPU of a stream per RPC
	m, err := peergroup.NewManager(d.node.Host(), d.node.PrivateKey(), cfg)
	if err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	gs := &groups{d: d, m: m, ctx: ctx, watching: map[string]context.CancelFunc{}}
	for _, g := range m.Groups() { // groups reopened from the data dir
		gs.watch(g)
	}
	if d.node.Role() == overlay.RoleRendezvous {
		d.node.Resolver().Handle(HandlerTrackerPick, gs.handleTrackerPick)
	}
	return gs, nil
}

func (gs *groups) close() error {
	gs.mu.Lock()
	for _, c := range gs.watching {
		c()
	}
	gs.mu.Unlock()
	gs.wg.Wait()
	return gs.m.Close()
}

// added starts what a group this node just created or joined needs: its advertisement
// (watch) and its distribution coordination pipe, bound now so that the wants of the
// members' first gets reach it (a gossipsub topic subscribed at a get's start misses what its
// peers publish before they learn of the subscription).
func (gs *groups) added(g *peergroup.Group) {
	gs.watch(g)
	if err := gs.d.dist.ensureListening(g); err != nil {
		gs.d.log.Warn("binding the group's coordination pipe", "group", g.Name(), "err", err)
	}
}

// watch publishes g's advertisement now, whenever what it says changes, and before it
// expires.
func (gs *groups) watch(g *peergroup.Group) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if _, ok := gs.watching[g.ID()]; ok {
		return
	}
	ctx, cancel := context.WithCancel(gs.ctx)
	gs.watching[g.ID()] = cancel
	gs.wg.Add(1)
	go func() {
		defer gs.wg.Done()
		changed, stop := g.Watch()
		defer stop()
		refresh := time.NewTicker(groupAdvertTTL / 2)
		defer refresh.Stop()
		keepAdvert(ctx, changed, refresh.C, 300*time.Millisecond,
			func() []byte { return gs.advertContent(g) }, func() { gs.publish(ctx, g) })
	}()
}

// keepAdvert publishes an advertisement at once, then again when what it says (content)
// changed after a change of the group (changed; bursts coalesced over settle), and at every
// refresh whatever it says, until ctx ends or changed closes (the group closed: left, or this
// node was expelled). Most changes of a group's state (download tasks and their progress)
// leave its advertisement as it was: publishing it again would cost every member a DHT put
// to every other, each verified, at every change.
func keepAdvert(ctx context.Context, changed <-chan struct{}, refresh <-chan time.Time, settle time.Duration,
	content func() []byte, publish func()) {
	var last []byte
	force := true
	for {
		if c := content(); force || !bytes.Equal(c, last) {
			publish()
			last = c
		}
		force = false
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changed:
			if !ok {
				return
			}
			select { // coalesce bursts of changes (joins, elections) into one advert
			case <-ctx.Done():
				return
			case <-time.After(settle):
			}
		case <-refresh:
			force = true
		}
	}
}

// advertContent returns what the group's advertisement says (its attributes and body).
func (gs *groups) advertContent(g *peergroup.Group) []byte {
	a := gs.groupAdvert(g, time.Time{})
	out := a.Body
	for _, k := range slices.Sorted(maps.Keys(a.Attrs)) {
		out = append(append(append(out, k...), 0), a.Attrs[k]...)
		out = append(out, 0)
	}
	return out
}

func (gs *groups) unwatch(id string) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if c, ok := gs.watching[id]; ok {
		c()
		delete(gs.watching, id)
	}
}

// groupAdvert builds the group's advertisement as of now.
func (gs *groups) groupAdvert(g *peergroup.Group, now time.Time) *advert.Advert {
	info := g.Info()
	a := advert.New(advert.KindGroup, g.ID(), g.Name(), gs.d.node.PrivateKey(), groupAdvertTTL, now)
	a.Attrs["policy"] = info.Policy.String()
	a.Attrs["members"] = fmt.Sprint(info.Members)
	if l := g.Leader(); l != "" {
		a.Attrs["leader"] = l.String()
	}
	a.Body = peergroup.EncodeGroupInfo(info)
	return a
}

func (gs *groups) publish(ctx context.Context, g *peergroup.Group) {
	a := gs.groupAdvert(g, time.Now())
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := gs.d.node.Publish(pctx, a); err != nil {
		gs.d.log.Warn("publishing group advertisement", "group", g.Name(), "err", err)
	}
}

// lookup finds a group this node is in, by name or ID.
func (gs *groups) lookup(name string) (*peergroup.Group, error) {
	if name == "" {
		return nil, usagef("a group name is required")
	}
	g, ok := gs.m.Group(name)
	if !ok {
		return nil, fmt.Errorf("this node is not in a group %q", name)
	}
	return g, nil
}

func (gs *groups) create(r *http.Request) (any, error) {
	var req api.GroupCreate
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, usagef("a group name is required")
	}
	if _, ok := gs.m.Group(req.Name); ok {
		return nil, fmt.Errorf("this node is already in a group %q", req.Name)
	}
	policy := peergroup.PolicyOpen
	if req.Secret != "" {
		policy = peergroup.PolicySecret
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	g, err := gs.m.Create(ctx, req.Name, policy, req.Secret)
	if err != nil {
		return nil, err
	}
	gs.added(g)
	return groupRef(g), nil
}

func (gs *groups) join(r *http.Request) (any, error) {
	var req api.GroupJoin
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if (req.Name == "") == !req.Any {
		return nil, usagef("give a group name or --any")
	}
	timeout := timeoutOr(req.Timeout, 30*time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	name := req.Name
	if req.Any {
		picked, err := gs.pickFromTracker(ctx)
		if err != nil {
			return nil, err
		}
		if picked == "" {
			// Every group is full, or there is none: start one the tracker will hand out next.
			var raw [4]byte
			_, _ = rand.Read(raw[:])
			g, err := gs.m.Create(ctx, "group-"+hex.EncodeToString(raw[:]), peergroup.PolicyOpen, "")
			if err != nil {
				return nil, err
			}
			gs.added(g)
			return groupRef(g), nil
		}
		name = picked
	}
	if g, ok := gs.m.Group(name); ok {
		return groupRef(g), nil
	}
	info, err := gs.findGroup(ctx, name)
	if err != nil {
		return nil, err
	}
	g, err := gs.m.Join(ctx, info, peergroup.Credential{Secret: req.Secret})
	if err != nil {
		return nil, err
	}
	gs.added(g)
	return groupRef(g), nil
}

// newestGroupAdvert asks the overlay once for the group's advertisements, by name and then
// by ID, and returns the newest, or nil.
func (gs *groups) newestGroupAdvert(ctx context.Context, name string) (*advert.Signed, error) {
	var best *advert.Signed
	for _, q := range []advert.Query{{Kind: advert.KindGroup, Name: name}, {Kind: advert.KindGroup, ID: name}} {
		res, err := gs.d.node.Discover(ctx, q, true)
		if err != nil {
			return nil, err
		}
		for _, s := range res {
			if best == nil || s.Advert.Created.After(best.Advert.Created) {
				best = s
			}
		}
		if best != nil {
			return best, nil
		}
	}
	return nil, nil
}

// findGroup discovers the group's advertisements (by name, or by ID) and returns the newest
// group information among them. A group created moments ago may not be found at once (its
// advertisement is still on its way to the rendezvous and the DHT): it asks again every
// half second until ctx ends.
func (gs *groups) findGroup(ctx context.Context, name string) (peergroup.GroupInfo, error) {
	var best *advert.Signed
	for {
		var err error
		if best, err = gs.newestGroupAdvert(ctx, name); err != nil && ctx.Err() == nil {
			return peergroup.GroupInfo{}, err
		}
		if best != nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	if best == nil {
		return peergroup.GroupInfo{}, fmt.Errorf("no advertisement of a group %q found in the overlay", name)
	}
	info, err := peergroup.DecodeGroupInfo(best.Advert.Body)
	if err != nil {
		return info, fmt.Errorf("group advertisement of %q: %w", name, err)
	}
	if info.ID != best.Advert.ID {
		return info, fmt.Errorf("group advertisement of %q names another group", name)
	}
	return info, nil
}

// pickFromTracker asks the rendezvous nodes' trackers for a group; "" means create one.
func (gs *groups) pickFromTracker(ctx context.Context) (string, error) {
	rdv := gs.d.node.Rendezvous()
	if len(rdv) == 0 {
		return "", errors.New("--any needs a rendezvous node (--bootstrap) to ask for a group")
	}
	var lastErr error
	for _, r := range rdv {
		resp, err := gs.d.node.Resolver().Query(ctx, r.ID, HandlerTrackerPick, []byte(gs.domain()))
		if err != nil {
			lastErr = err
			continue
		}
		return string(resp), nil
	}
	return "", fmt.Errorf("no tracker answered: %w", lastErr)
}

// domain is this node's multicast domain as published in its peer advert ("" if none).
func (gs *groups) domain() string {
	id := gs.d.node.ID()
	if s, ok := gs.d.node.Cache().Get(advert.Key{Kind: advert.KindPeer, ID: id.String(), Publisher: id}); ok {
		return s.Advert.Attrs["mcast_domain"]
	}
	return ""
}

// handleTrackerPick answers a joiner (request: its multicast domain) with a group name from
// the index, or an empty answer for "create a new group".
func (gs *groups) handleTrackerPick(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
	if len(req) > 256 {
		return nil, errors.New("tracker: request too large")
	}
	loads := map[string]peergroup.GroupLoad{}
	names := map[string]string{}
	newest := map[string]time.Time{}
	for _, s := range gs.d.node.IndexQuery(advert.Query{Kind: advert.KindGroup}) {
		info, err := peergroup.DecodeGroupInfo(s.Advert.Body)
		if err != nil || info.ID != s.Advert.ID || info.Policy != peergroup.PolicyOpen {
			continue // only open groups can be handed out
		}
		if s.Advert.Created.Before(newest[info.ID]) {
			continue
		}
		newest[info.ID] = s.Advert.Created
		loads[info.ID] = info.Load()
		names[info.ID] = info.Name
	}
	cands := make([]peergroup.GroupLoad, 0, len(loads))
	for _, l := range loads {
		cands = append(cands, l)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ID < cands[j].ID })
	id, ok := peergroup.DefaultTrackerPolicy().Pick(cands, peergroup.Joiner{Domain: string(req)})
	if !ok {
		return nil, nil
	}
	return []byte(names[id]), nil
}

func (gs *groups) leave(r *http.Request) (any, error) {
	var req api.GroupLeave
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	g, err := gs.lookup(req.Name)
	if err != nil {
		return nil, err
	}
	id := g.ID()
	gs.unwatch(id)
	gs.d.node.Unpublish(advert.Key{Kind: advert.KindGroup, ID: id, Publisher: gs.d.node.ID()})
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := gs.m.Leave(ctx, id); err != nil {
		return nil, err
	}
	return map[string]string{"id": id}, nil
}

func (gs *groups) status(r *http.Request) (any, error) {
	g, err := gs.lookup(r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	return groupStatus(g), nil
}

func (gs *groups) list(*http.Request) (any, error) {
	out := []api.GroupRef{}
	for _, g := range gs.m.Groups() {
		out = append(out, groupRef(g))
	}
	return out, nil
}

func groupRef(g *peergroup.Group) api.GroupRef {
	return api.GroupRef{ID: g.ID(), Name: g.Name(), Leader: peerString(g.Leader())}
}

func groupStatus(g *peergroup.Group) api.GroupStatus {
	st := g.Status()
	out := api.GroupStatus{
		ID: st.ID, Name: st.Name, Policy: st.Policy.String(), Leader: peerString(st.Leader),
		Term: st.Term, State: st.State, Self: st.Self.String(), Members: []api.GroupMember{},
	}
	for _, m := range st.Members {
		out.Members = append(out.Members, api.GroupMember{PeerID: m.PeerID.String(), Voter: m.Voter, Alive: m.Alive, Domain: m.Domain})
	}
	if ps := g.State().Proxies; len(ps) > 0 {
		out.Proxies = make(map[string][]string, len(ps))
		for id, peers := range ps {
			for _, p := range peers {
				out.Proxies[id] = append(out.Proxies[id], p.String())
			}
		}
	}
	return out
}

func peerString(p peer.ID) string {
	if p == "" {
		return ""
	}
	return p.String()
}
