package peergroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"go.etcd.io/bbolt"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// memberAddrTTL is how long member addresses learnt from the group state stay in the
// peerstore (refreshed on every state change).
const memberAddrTTL = 24 * time.Hour

// Group is this node's membership of one peer group: its Raft instance, replicated state and
// leader duties. Obtain one from Manager.Create, Manager.Join or Manager.Group.
type Group struct {
	m    *Manager
	id   string
	dir  string
	meta groupMeta // immutable after open
	self peer.ID
	log  *slog.Logger

	fsm   *fsm
	raft  *raft.Raft
	trans *raft.NetworkTransport
	store *raftboltdb.BoltStore
	obs   *raft.Observer
	obsCh chan raft.Observation

	changed chan struct{} // cap 1: the FSM applied something (coalesced)
	kick    chan struct{} // cap 1: the leader loop should reconcile now (coalesced)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the group's loops
	waits  sync.WaitGroup // goroutines waiting on raft futures (resolved by raft at the latest on shutdown)

	closeOnce sync.Once
	closeErr  error

	mu          sync.Mutex                 // guards the fields below
	failed      map[peer.ID]time.Time      // leader: peers whose heartbeats fail, since when
	watchers    map[chan struct{}]struct{} // Watch subscribers
	seed        map[peer.ID]bool           // peers allowed on the Raft protocol before the state lists them
	members     map[peer.ID]bool           // the member set as of the last applied change
	servers     map[peer.ID]bool           // the Raft configuration as last read
	book        []byte                     // the members file as last written
	hadSelf     bool                       // this node has been in the member list
	closing     bool                       // close has started: start no goroutine
	refreshing  bool                       // a member-list refresh is running
	lastRefresh time.Time                  // when the last one started
	leaving     bool                       // Leave in progress: own removal is expected
}

// openGroup opens (or creates) the group's stores and starts its Raft. With bootstrap set the
// group is new and this node its only voter. seed lists peers to trust and dial before the
// replicated state lists them (the join answer, or the members file after a restart).
func openGroup(m *Manager, meta *groupMeta, bootstrap bool, seed []peer.AddrInfo) (*Group, error) {
	cfg := &m.cfg
	dir := filepath.Join(cfg.DataDir, "groups", meta.Header.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	g := &Group{
		m: m, id: meta.Header.ID, dir: dir, meta: *meta, self: m.h.ID(),
		log:      m.log.With("group", meta.Header.ID),
		obsCh:    make(chan raft.Observation, 256),
		changed:  make(chan struct{}, 1),
		kick:     make(chan struct{}, 1),
		failed:   make(map[peer.ID]time.Time),
		watchers: make(map[chan struct{}]struct{}),
		seed:     make(map[peer.ID]bool),
		members:  make(map[peer.ID]bool),
		servers:  make(map[peer.ID]bool),
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	for _, ai := range seed {
		if ai.ID == g.self {
			continue
		}
		g.seed[ai.ID] = true
		m.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, memberAddrTTL)
	}

	var err error
	g.store, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second},
		NoSync:      cfg.NoSync,
	})
	if err != nil {
		g.cancel()
		return nil, fmt.Errorf("open raft store: %w", err)
	}
	hl := newHclogAdapter(g.log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, cfg.SnapshotRetain, hl)
	if err != nil {
		g.cancel()
		g.store.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	gh := &groupHost{Host: m.h, proto: RaftProtocol(g.id), allow: g.allowRaftPeer}
	g.trans, err = newRaftTransport(gh, cfg.RaftStreamPool, cfg.TransportTimeout, hl)
	if err != nil {
		g.cancel()
		g.store.Close()
		return nil, fmt.Errorf("raft transport: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(g.self.String())
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hl

	g.fsm = newFSM(g.onApply)
	// The leader reads the entry before each AppendEntries (every CommitTimeout per follower,
	// empty ones included) from the log store: the cache keeps recent entries in memory so
	// that is not a bolt transaction each time.
	logs, err := raft.NewLogCache(raftLogCache, g.store)
	if err != nil {
		g.cancel()
		g.trans.Close()
		g.store.Close()
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	g.raft, err = raft.NewRaft(rc, g.fsm, logs, g.store, snaps, g.trans)
	if err != nil {
		g.cancel()
		g.trans.Close()
		g.store.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if bootstrap {
		conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(rc.LocalID)}}}
		if err := g.raft.BootstrapCluster(conf).Error(); err != nil {
			g.close(false)
			return nil, fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	g.obs = raft.NewObserver(g.obsCh, false, nil)
	g.raft.RegisterObserver(g.obs)

	g.wg.Add(3)
	go g.observeLoop()
	go g.changeLoop()
	go g.leaderLoop()
	g.signal(g.changed)
	return g, nil
}

// raftLogCache is how many recent Raft log entries a group keeps in memory.
const raftLogCache = 256

// signal does a non-blocking send on a coalescing channel.
func (g *Group) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// onApply is the FSM hook (raft's FSM goroutine): it must not block.
func (g *Group) onApply(Command) { g.signal(g.changed) }

// close stops the group: Raft (bounded by ShutdownTimeout), the loops, the stores; with
// removeData it deletes the group's directory.
func (g *Group) close(removeData bool) error {
	g.closeOnce.Do(func() {
		if removeData && g.IsLeader() { // leaving for good: hand over first (bounded)
			f := g.raft.LeadershipTransfer()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = g.waitFuture(ctx, f)
			cancel()
		}
		g.mu.Lock()
		g.closing = true
		g.mu.Unlock()
		g.cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = g.raft.Shutdown().Error()
		}()
		select {
		case <-done:
		case <-time.After(g.m.cfg.ShutdownTimeout):
			g.closeErr = errors.New("peergroup: raft did not shut down in time")
			_ = g.trans.Close()
		}
		if g.obs != nil {
			g.raft.DeregisterObserver(g.obs)
		}
		g.wg.Wait()
		waited := make(chan struct{})
		go func() { g.waits.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(g.m.cfg.ShutdownTimeout):
		}
		if err := g.store.Close(); err != nil && g.closeErr == nil {
			g.closeErr = err
		}
		g.mu.Lock()
		for ch := range g.watchers {
			close(ch)
			delete(g.watchers, ch)
		}
		g.mu.Unlock()
		if removeData {
			if err := os.RemoveAll(g.dir); err != nil && g.closeErr == nil {
				g.closeErr = err
			}
		}
	})
	return g.closeErr
}

// ID returns the group ID.
func (g *Group) ID() string { return g.id }

// Name returns the group name.
func (g *Group) Name() string { return g.meta.Header.Name }

// Header returns the group's immutable header.
func (g *Group) Header() Header { return g.meta.Header }

// IsLeader reports whether this node is the group's Raft leader.
func (g *Group) IsLeader() bool { return g.raft.State() == raft.Leader }

// Leader returns the current leader as this node knows it ("" during an election).
func (g *Group) Leader() peer.ID {
	_, id := g.raft.LeaderWithID()
	if id == "" {
		return ""
	}
	p, err := peer.Decode(string(id))
	if err != nil {
		return ""
	}
	return p
}

// Term returns the current Raft term.
func (g *Group) Term() uint64 { return g.raft.CurrentTerm() }

// Watch returns a channel that receives (coalesced) whenever the replicated state or the
// leadership changes, and a function to stop watching. The channel is closed when the group
// closes.
func (g *Group) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		close(ch)
		return ch, func() {}
	}
	g.watchers[ch] = struct{}{}
	g.mu.Unlock()
	return ch, func() {
		g.mu.Lock()
		if _, ok := g.watchers[ch]; ok {
			delete(g.watchers, ch)
			close(ch)
		}
		g.mu.Unlock()
	}
}

func (g *Group) notifyWatchers() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for ch := range g.watchers {
		g.signal(ch)
	}
}

// voters returns the Raft configuration as this node knows it (voter or not per server).
func (g *Group) configuration() (map[peer.ID]bool, error) {
	f := g.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	out := make(map[peer.ID]bool)
	for _, s := range f.Configuration().Servers {
		if p, err := peer.Decode(string(s.ID)); err == nil {
			out[p] = s.Suffrage == raft.Voter
		}
	}
	return out, nil
}

// Proxies returns the proxy peers recorded for a content (ProxySet), one per multicast domain:
// State().Proxies[contentID] without copying the rest of the state.
func (g *Group) Proxies(contentID string) []peer.ID { return g.fsm.proxies(contentID) }

// IsMember reports whether p is a member of the group: State().IsMember(p) without copying
// the state or asking Raft for its configuration.
func (g *Group) IsMember(p peer.ID) bool {
	ok := false
	g.fsm.read(func(s *state) { _, ok = s.members[p] })
	return ok
}

// State returns a read-only copy of the replicated state; Member.Voter comes from the Raft
// configuration this node knows.
func (g *Group) State() StateView {
	conf, _ := g.configuration()
	return g.fsm.view(func(p peer.ID) bool { return conf[p] })
}

// Status is a summary of the group as this node sees it.
type Status struct {
	ID      string
	Name    string
	Policy  Policy
	Self    peer.ID
	Leader  peer.ID
	Term    uint64
	State   string // "leader", "follower", "candidate" or "shutdown"
	Members []Member
	// AppliedIndex is the log index of the last command applied to this node's state.
	AppliedIndex uint64
}

// Status returns the group's status as this node sees it.
func (g *Group) Status() Status {
	v := g.State()
	return Status{
		ID: g.id, Name: g.meta.Header.Name, Policy: g.meta.Header.Policy, Self: g.self,
		Leader: g.Leader(), Term: g.raft.CurrentTerm(), State: stateName(g.raft.State()),
		Members: v.Members, AppliedIndex: g.fsm.index(),
	}
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

// Info returns what goes into the group's advertisement: the header, the size, the members'
// multicast domains and contacts (the leader first) with their addresses.
func (g *Group) Info() GroupInfo {
	v := g.fsm.view(nil)
	h := g.meta.Header
	gi := GroupInfo{ID: h.ID, Name: h.Name, Policy: h.Policy, Creator: h.Creator, Created: h.Created, Members: len(v.Members)}
	leader := g.Leader()
	var contacts []peer.AddrInfo
	for _, m := range v.Members {
		gi.Capacity += m.Capacity
		if m.Domain != "" && !slices.Contains(gi.Domains, m.Domain) {
			gi.Domains = append(gi.Domains, m.Domain)
		}
		ai := peer.AddrInfo{ID: m.PeerID, Addrs: m.Addrs}
		if m.PeerID == g.self {
			ai.Addrs = g.m.h.Addrs()
		}
		if m.PeerID == leader {
			contacts = append([]peer.AddrInfo{ai}, contacts...)
		} else {
			contacts = append(contacts, ai)
		}
	}
	if len(contacts) == 0 { // not caught up yet: this node at least
		contacts = []peer.AddrInfo{{ID: g.self, Addrs: g.m.h.Addrs()}}
	}
	gi.Contacts = contacts[:min(len(contacts), maxContacts)]
	slices.Sort(gi.Domains)
	return gi
}

// Invite returns an invitation for invitee, signed with this node's key, valid for ttl.
func (g *Group) Invite(invitee peer.ID, ttl time.Duration) ([]byte, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: invitation lifetime must be positive", ErrMalformed)
	}
	return SignInvitation(g.m.key, g.id, invitee, g.m.cfg.Now().Add(ttl))
}

// Expel removes a misbehaving member and bans it from rejoining. Only the leader or a voter
// may expel (the leader checks).
func (g *Group) Expel(ctx context.Context, p peer.ID) error {
	if p == g.self {
		return fmt.Errorf("%w: use Leave to leave a group", ErrForbidden)
	}
	return g.Apply(ctx, &MemberRemove{PeerID: p, Reason: ReasonExpel, At: g.m.cfg.Now()})
}

// LiveMembers returns the members that can take work: caught up (ready) and alive as the
// leader sees it right now (committed liveness, refined by the leader's current heartbeat
// failures), sorted by peer ID. This node always counts.
func (g *Group) LiveMembers() []peer.ID {
	v := g.fsm.view(nil)
	now := g.m.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []peer.ID
	for _, m := range v.Members {
		if since, failing := g.failed[m.PeerID]; m.PeerID != g.self && (!m.Ready || !m.Alive || failing && now.Sub(since) >= g.m.cfg.DeadAfter) {
			continue
		}
		out = append(out, m.PeerID)
	}
	return out
}

// ArrangeTask is the leader's duty for a task: it places slices on the live members not
// excluded (least loaded first, holders preferred when holders is non-nil), stamps the
// assignment with the current term and commits it. Only the leader may call it.
func (g *Group) ArrangeTask(ctx context.Context, taskID string, slicesToPlace []uint32, exclude []peer.ID, holders map[uint32][]peer.ID) ([]Assignment, error) {
	if !g.IsLeader() {
		return nil, ErrNotLeader
	}
	term := g.raft.CurrentTerm()
	v := g.fsm.view(nil)
	t, ok := v.Tasks[taskID]
	if !ok {
		return nil, fmt.Errorf("%w: unknown task %q", ErrInvalid, taskID)
	}
	as, _, err := Arrange(ArrangeInput{
		Slices: slicesToPlace, Members: g.LiveMembers(), Load: v.Load,
		Exclude: append(slices.Clone(t.Excluded), exclude...), Holders: holders, PreferHolders: holders != nil,
	})
	if err != nil {
		return nil, err
	}
	if err := g.Apply(ctx, &TaskAssign{TaskID: taskID, Term: term, Assignments: as, Exclude: exclude}); err != nil {
		return nil, err
	}
	return as, nil
}

// allowRaftPeer gates the group's Raft protocol: only members (as the state, the Raft
// configuration or the join answer / members file list them) may talk Raft to this node.
// An unknown peer is refused, and the members this node knows are asked for the current
// member list (at most once per refreshEvery): a node that missed admissions while it was
// away still learns who the new members (and maybe the new leader) are.
func (g *Group) allowRaftPeer(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.members[p] || g.servers[p] || g.seed[p] {
		return true
	}
	now := time.Now()
	if !g.refreshing && !g.closing && now.Sub(g.lastRefresh) >= refreshEvery {
		g.refreshing, g.lastRefresh = true, now
		ask := make([]peer.ID, 0, len(g.members)+len(g.seed))
		for q := range g.members {
			ask = append(ask, q)
		}
		for q := range g.seed {
			ask = append(ask, q)
		}
		g.wg.Add(1)
		go g.refreshMembers(ask)
	}
	return false
}

// refreshEvery bounds how often an unknown Raft peer makes this node refresh its member list.
const refreshEvery = time.Second

// refreshMembers asks known members for the member list until one answers, and trusts the
// peers it lists on the Raft protocol.
func (g *Group) refreshMembers(ask []peer.ID) {
	defer g.wg.Done()
	defer func() {
		g.mu.Lock()
		g.refreshing = false
		g.mu.Unlock()
	}()
	for _, q := range ask {
		if q == g.self {
			continue
		}
		ps, err := g.askMembers(q)
		if err != nil {
			g.log.Debug("member list request failed", "peer", q, "err", err)
			continue
		}
		g.mu.Lock()
		for _, p := range ps {
			g.seed[p] = true
		}
		g.mu.Unlock()
		return
	}
}

func (g *Group) askMembers(q peer.ID) ([]peer.ID, error) {
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	defer cancel()
	s, err := g.m.h.NewStream(network.WithAllowLimitedConn(ctx, "group-members"), q, ApplyProtocol)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	dl, _ := ctx.Deadline()
	_ = s.SetDeadline(dl)
	if err := writeFrame(s, msgMembersRequest, bincodec.Encode((&membersRequest{GroupID: g.id}).encode)); err != nil {
		s.Reset()
		return nil, err
	}
	_ = s.CloseWrite()
	var resp membersResponse
	if err := expectFrame(bufio.NewReader(s), maxApplyFrame, msgMembersResponse, resp.decode); err != nil {
		s.Reset()
		return nil, err
	}
	return resp.Peers, nil
}

// observeLoop follows Raft's observations: leadership changes and the leader's view of
// followers' heartbeats (member liveness).
func (g *Group) observeLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.ctx.Done():
			return
		case o := <-g.obsCh:
			switch d := o.Data.(type) {
			case raft.LeaderObservation, raft.RaftState:
				g.mu.Lock()
				clear(g.failed)
				g.mu.Unlock()
				g.notifyWatchers()
				g.signal(g.kick)
				g.signal(g.changed)
			case raft.FailedHeartbeatObservation:
				if p, err := peer.Decode(string(d.PeerID)); err == nil {
					g.mu.Lock()
					if _, ok := g.failed[p]; !ok {
						since := d.LastContact
						if since.IsZero() {
							since = g.m.cfg.Now()
						}
						g.failed[p] = since
					}
					g.mu.Unlock()
				}
			case raft.ResumedHeartbeatObservation:
				if p, err := peer.Decode(string(d.PeerID)); err == nil {
					g.mu.Lock()
					delete(g.failed, p)
					g.mu.Unlock()
					g.signal(g.kick)
				}
			case raft.PeerObservation:
				if p, err := peer.Decode(string(d.Peer.ID)); err == nil {
					g.mu.Lock()
					delete(g.failed, p)
					g.mu.Unlock()
				}
				g.signal(g.changed)
			}
		}
	}
}

// changeLoop reacts to state changes: it refreshes the member and server sets (Raft gate),
// puts member addresses in the peerstore, rewrites the members file, notices this node's
// own removal, and wakes watchers.
func (g *Group) changeLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-g.changed:
		}
		idx := g.fsm.index() // before the view: the view is at least this far
		v := g.fsm.view(nil)
		conf, confErr := g.configuration()
		members := make(map[peer.ID]bool, len(v.Members))
		book := make([]peer.AddrInfo, 0, len(v.Members))
		ps := g.m.h.Peerstore()
		for _, m := range v.Members {
			members[m.PeerID] = true
			book = append(book, peer.AddrInfo{ID: m.PeerID, Addrs: m.Addrs})
			if m.PeerID != g.self && len(m.Addrs) > 0 {
				ps.AddAddrs(m.PeerID, m.Addrs, memberAddrTTL)
			}
		}
		bookBytes := marshalBook(book)

		g.mu.Lock()
		g.members = members
		for p := range members { // the state covers them now; a later removal must count
			delete(g.seed, p)
		}
		for _, p := range v.Banned {
			delete(g.seed, p)
		}
		if confErr == nil {
			g.servers = make(map[peer.ID]bool, len(conf))
			for p := range conf {
				g.servers[p] = true
			}
		}
		writeBook := len(book) > 0 && !slices.Equal(bookBytes, g.book)
		if writeBook {
			g.book = bookBytes
		}
		removed := g.noteSelf(members[g.self], idx)
		g.mu.Unlock()

		if writeBook {
			if err := writeFileAtomic(filepath.Join(g.dir, membersFile), bookBytes); err != nil {
				g.log.Warn("cannot write members file", "err", err)
			}
		}
		g.notifyWatchers()
		if removed {
			g.log.Warn("this node was removed from the group; dropping it")
			g.m.dropGroup(g)
			return
		}
	}
}

// noteSelf records whether the state at log index idx lists this node and reports whether
// the node has been removed: listed in a state at or past its admission, absent now, and not
// leaving. A state before the admission does not count: the log a rejoining node receives
// replays its earlier membership and its end. g.mu must be held.
func (g *Group) noteSelf(listed bool, idx uint64) (removed bool) {
	if listed {
		if idx >= g.meta.AdmitIndex {
			g.hadSelf = true
		}
		return false
	}
	return g.hadSelf && !g.leaving
}

// selfMember returns what this node announces about itself.
func (g *Group) selfUpdate() *MemberUpdate {
	addrs := g.m.h.Addrs()
	return &MemberUpdate{PeerID: g.self, Addrs: addrs[:min(len(addrs), maxAddrs)], Domain: g.m.cfg.Domain, Capacity: g.m.cfg.Capacity, At: g.m.cfg.Now()}
}

// announce waits until this node's state lists it (it has caught up with its admission),
// then commits a MemberUpdate with its current addresses: the member is then ready to be
// promoted to voter. It retries until ctx ends.
func (g *Group) announce(ctx context.Context) error {
	ch, stop := g.Watch()
	defer stop()
	for {
		if g.fsm.index() >= g.meta.AdmitIndex && g.fsm.view(nil).IsMember(g.self) {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := g.Apply(actx, g.selfUpdate())
			cancel()
			if err == nil {
				return nil
			}
			if errors.Is(err, ErrNotMember) || errors.Is(err, ErrBanned) || errors.Is(err, ErrForbidden) {
				return err
			}
			g.log.Debug("announce failed, retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting to catch up with the group: %w", ctx.Err())
		case _, ok := <-ch:
			if !ok {
				return ErrClosed
			}
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// addrsOf returns the addresses the peerstore has for p.
func (g *Group) addrsOf(p peer.ID) []ma.Multiaddr {
	if p == g.self {
		return g.m.h.Addrs()
	}
	return g.m.h.Peerstore().Addrs(p)
}
