package peergroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Manager holds the groups this node is in. It serves the join and apply protocols on the
// host and, when created, reopens the groups found in its data directory (a restarted node
// rejoins its groups and catches up).
type Manager struct {
	h   host.Host
	key crypto.PrivKey
	cfg Config
	log *slog.Logger

	wg sync.WaitGroup // background work: dropping groups, reconnecting

	mu     sync.Mutex        // guards groups and closed
	groups map[string]*Group // by group ID
	closed bool
}

// NewManager starts a manager on host h, whose identity key is key.
func NewManager(h host.Host, key crypto.PrivKey, cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if key == nil || !h.ID().MatchesPrivateKey(key) {
		return nil, errors.New("peergroup: key is not the host's identity key")
	}
	m := &Manager{h: h, key: key, cfg: cfg, log: cfg.Logger.With("component", "peergroup"), groups: make(map[string]*Group)}
	root := filepath.Join(cfg.DataDir, "groups")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || !validGroupID(e.Name()) {
			continue
		}
		if err := m.reopen(filepath.Join(root, e.Name())); err != nil {
			m.log.Warn("cannot reopen group", "group", e.Name(), "err", err)
		}
	}
	h.SetStreamHandler(JoinProtocol, m.handleJoin)
	h.SetStreamHandler(ApplyProtocol, m.handleApply)
	return m, nil
}

// reopen restarts a group from its directory: Raft recovers its log and snapshot; the node
// reconnects to the members it knew and announces its (possibly new) addresses.
func (m *Manager) reopen(dir string) error {
	meta, err := readMeta(dir)
	if err != nil {
		return err
	}
	if filepath.Base(dir) != meta.Header.ID {
		return fmt.Errorf("%w: directory %s holds group %s", ErrMalformed, dir, meta.Header.ID)
	}
	book, err := readBook(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("members file unreadable", "dir", dir, "err", err)
	}
	g, err := openGroup(m, meta, false, book)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.groups[g.id] = g
	m.mu.Unlock()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for _, ai := range book {
			if ai.ID == g.self {
				continue
			}
			ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
			_ = m.h.Connect(ctx, ai)
			cancel()
		}
		if err := g.announce(g.ctx); err != nil && g.ctx.Err() == nil {
			g.log.Warn("announce after restart failed", "err", err)
		}
	}()
	m.log.Info("reopened group", "group", g.id, "name", g.Name())
	return nil
}

// Create creates a group with this node as its first member and leader. secret is required
// for PolicySecret and refused otherwise.
func (m *Manager) Create(ctx context.Context, name string, policy Policy, secret string) (*Group, error) {
	if name == "" || len(name) > maxNameLen {
		return nil, fmt.Errorf("%w: group name must have 1..%d bytes", ErrMalformed, maxNameLen)
	}
	if !policy.Valid() {
		return nil, fmt.Errorf("%w: unknown policy %d", ErrMalformed, policy)
	}
	if (policy == PolicySecret) != (secret != "") {
		return nil, fmt.Errorf("%w: a secret is required for, and only for, the secret policy", ErrMalformed)
	}
	if _, ok := m.Group(name); ok {
		return nil, fmt.Errorf("%w: this node is already in a group named %q", ErrExists, name)
	}
	self := m.h.ID()
	meta := &groupMeta{Header: Header{ID: newGroupID(self, name), Name: name, Policy: policy, Creator: self, Created: m.cfg.Now().UTC().Truncate(time.Millisecond)}}
	if policy == PolicySecret {
		key, err := deriveGroupKey(secret, meta.Header.ID)
		if err != nil {
			return nil, err
		}
		meta.Key = key
	}
	g, err := m.start(meta, true, nil)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Group, error) {
		m.forget(g)
		_ = g.close(true)
		return nil, err
	}
	// The single voter elects itself after a heartbeat timeout or so.
	ch, stop := g.Watch()
	for !g.IsLeader() {
		select {
		case <-ctx.Done():
			stop()
			return fail(fmt.Errorf("waiting to become the new group's leader: %w", ctx.Err()))
		case _, ok := <-ch:
			if !ok {
				stop()
				return fail(ErrClosed)
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop()
	addrs := m.h.Addrs()
	for _, c := range []Command{
		&GroupInit{Header: meta.Header},
		&MemberAdd{Member: Member{PeerID: self, Addrs: addrs[:min(len(addrs), maxAddrs)], Domain: m.cfg.Domain, Capacity: m.cfg.Capacity, Joined: meta.Header.Created}},
		g.selfUpdate(),
	} {
		if err := g.Apply(ctx, c); err != nil {
			return fail(fmt.Errorf("initialise group: %w", err))
		}
	}
	m.log.Info("created group", "group", g.id, "name", name, "policy", policy)
	return g, nil
}

// start writes the group's meta file, opens the group and registers it.
func (m *Manager) start(meta *groupMeta, bootstrap bool, seed []peer.AddrInfo) (*Group, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := m.groups[meta.Header.ID]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: group %s", ErrExists, meta.Header.ID)
	}
	m.groups[meta.Header.ID] = nil // reserved while opening
	m.mu.Unlock()
	unreserve := func() {
		m.mu.Lock()
		delete(m.groups, meta.Header.ID)
		m.mu.Unlock()
	}
	dir := filepath.Join(m.cfg.DataDir, "groups", meta.Header.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		unreserve()
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, metaFile), meta.marshal()); err != nil {
		unreserve()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	g, err := openGroup(m, meta, bootstrap, seed)
	if err != nil {
		unreserve()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	m.mu.Lock()
	m.groups[g.id] = g
	m.mu.Unlock()
	return g, nil
}

// forget unregisters a group (it stays open until closed).
func (m *Manager) forget(g *Group) {
	m.mu.Lock()
	if m.groups[g.id] == g {
		delete(m.groups, g.id)
	}
	m.mu.Unlock()
}

// dropGroup closes a group this node was removed from and deletes its data, in the
// background (called from the group's own loop).
func (m *Manager) dropGroup(g *Group) {
	m.forget(g)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := g.close(true); err != nil {
			m.log.Warn("closing dropped group", "group", g.id, "err", err)
		}
	}()
}

// Leave leaves a group cleanly: this node's removal is committed, then its Raft stops and
// its data for the group is deleted. The group may be named by ID or name.
func (m *Manager) Leave(ctx context.Context, idOrName string) error {
	g, ok := m.Group(idOrName)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownGroup, idOrName)
	}
	g.mu.Lock()
	g.leaving = true
	g.mu.Unlock()
	v := g.fsm.view(nil)
	if v.IsMember(g.self) && len(v.Members) > 1 {
		err := g.Apply(ctx, &MemberRemove{PeerID: g.self, Reason: ReasonLeave, At: m.cfg.Now()})
		if err != nil && !errors.Is(err, ErrNotMember) {
			g.mu.Lock()
			g.leaving = false
			g.mu.Unlock()
			return fmt.Errorf("leave group %s: %w", g.id, err)
		}
		if g.IsLeader() { // hand over: remove ourselves from the Raft configuration
			f := g.raft.RemoveServer(raftID(g.self), 0, configChangeTimeout)
			if err := g.waitFuture(ctx, f); err != nil {
				g.log.Info("leader self-removal", "err", err)
			}
		}
	}
	m.forget(g)
	m.log.Info("left group", "group", g.id, "name", g.Name())
	return g.close(true)
}

// Group returns the group with that ID or, failing that, the only group with that name
// (false when several groups this node is in share the name).
func (m *Manager) Group(idOrName string) (*Group, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.groups[idOrName]; g != nil {
		return g, true
	}
	var found *Group
	for _, g := range m.groups {
		if g != nil && g.meta.Header.Name == idOrName {
			if found != nil {
				return nil, false // ambiguous: several groups have that name; use the ID
			}
			found = g
		}
	}
	return found, found != nil
}

// Groups returns the groups this node is in, sorted by name then ID.
func (m *Manager) Groups() []*Group {
	m.mu.Lock()
	out := make([]*Group, 0, len(m.groups))
	for _, g := range m.groups {
		if g != nil {
			out = append(out, g)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b *Group) int {
		if c := strings.Compare(a.meta.Header.Name, b.meta.Header.Name); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	return out
}

// Close stops every group (keeping their data, so a new Manager on the same DataDir rejoins
// them) and stops serving the protocols. It does not close the host.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	groups := make([]*Group, 0, len(m.groups))
	for _, g := range m.groups {
		if g != nil {
			groups = append(groups, g)
		}
	}
	m.mu.Unlock()
	m.h.RemoveStreamHandler(JoinProtocol)
	m.h.RemoveStreamHandler(ApplyProtocol)
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.close(false)
		}()
	}
	wg.Wait()
	m.wg.Wait()
	return errors.Join(errs...)
}
