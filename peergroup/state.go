package peergroup

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// state is the replicated group state: what every replica's FSM holds. It is not safe for
// concurrent use; the FSM guards it.
type state struct {
	header    Header
	members   map[peer.ID]*Member
	load      map[peer.ID]int64 // outstanding (assigned, not done) slices per member
	tasks     map[string]*Task
	catalogue map[string]*Content
	proxies   map[string][]peer.ID // content ID → its proxy peers (one per multicast domain)
	banned    map[peer.ID]bool
	// index is the log index of the last command applied (or rejected): how far this
	// replica's state has got. It is in snapshots so that it survives a restore.
	index uint64
}

func newState() *state {
	return &state{
		members:   make(map[peer.ID]*Member),
		load:      make(map[peer.ID]int64),
		tasks:     make(map[string]*Task),
		catalogue: make(map[string]*Content),
		proxies:   make(map[string][]peer.ID),
		banned:    make(map[peer.ID]bool),
	}
}

func invalid(k CommandKind, format string, args ...any) error {
	return fmt.Errorf("%w: %s: "+format, append([]any{ErrInvalid, k}, args...)...)
}

// apply validates cmd against the state and, only if it is valid, applies it. logTerm is the
// Raft term of the log entry carrying the command (0 when unknown, e.g. in tests).
// Validation completes before any mutation, so a rejected command changes nothing.
func (s *state) apply(cmd Command, logTerm uint64) error {
	if err := cmd.check(); err != nil {
		return err
	}
	if _, init := cmd.(*GroupInit); !init && s.header.ID == "" {
		return invalid(cmd.Kind(), "group not initialised")
	}
	switch c := cmd.(type) {
	case *GroupInit:
		if s.header.ID != "" {
			return invalid(c.Kind(), "group already initialised")
		}
		s.header = c.Header
	case *MemberAdd:
		p := c.Member.PeerID
		if s.banned[p] {
			return fmt.Errorf("%w: %s", ErrBanned, p)
		}
		if m, ok := s.members[p]; ok { // rejoin: refresh what the member told us
			m.Addrs, m.Domain, m.Capacity = slices.Clone(c.Member.Addrs), c.Member.Domain, c.Member.Capacity
			return nil
		}
		s.members[p] = &Member{
			PeerID: p, Addrs: slices.Clone(c.Member.Addrs), Domain: c.Member.Domain,
			Capacity: c.Member.Capacity, Alive: true, Joined: c.Member.Joined, LastSeen: c.Member.Joined,
		}
		s.load[p] = 0
	case *MemberUpdate:
		m, ok := s.members[c.PeerID]
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotMember, c.PeerID)
		}
		m.Addrs, m.Domain, m.Capacity = slices.Clone(c.Addrs), c.Domain, c.Capacity
		m.Ready, m.Alive = true, true
		if c.At.After(m.LastSeen) {
			m.LastSeen = c.At
		}
	case *MemberRemove:
		if _, ok := s.members[c.PeerID]; !ok {
			return fmt.Errorf("%w: %s", ErrNotMember, c.PeerID)
		}
		delete(s.members, c.PeerID)
		delete(s.load, c.PeerID)
		for id, ps := range s.proxies {
			s.setProxies(id, slices.DeleteFunc(ps, func(p peer.ID) bool { return p == c.PeerID }))
		}
		if c.Reason == ReasonExpel {
			s.banned[c.PeerID] = true
		}
	case *MemberLive:
		m, ok := s.members[c.PeerID]
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotMember, c.PeerID)
		}
		m.Alive = c.Alive
		if c.Alive && c.At.After(m.LastSeen) {
			m.LastSeen = c.At
		}
	case *TaskAdd:
		if _, ok := s.tasks[c.Task.ID]; ok {
			return invalid(c.Kind(), "task %q exists", c.Task.ID)
		}
		if _, ok := s.members[c.Task.Requester]; !ok {
			return fmt.Errorf("%w: requester %s", ErrNotMember, c.Task.Requester)
		}
		t := c.Task
		t.Term, t.Excluded = 0, nil
		t.Slices = make([]Slice, NumSlices(t.Size, t.SliceSize))
		s.tasks[t.ID] = &t
	case *TaskAssign:
		return s.assign(c, logTerm)
	case *SlicesDone:
		t, ok := s.tasks[c.TaskID]
		if !ok {
			return invalid(c.Kind(), "unknown task %q", c.TaskID)
		}
		for _, i := range c.Slices {
			if int(i) >= len(t.Slices) {
				return invalid(c.Kind(), "slice %d out of range (task has %d)", i, len(t.Slices))
			}
		}
		for _, i := range c.Slices {
			sl := &t.Slices[i]
			if sl.State == SliceDone {
				continue
			}
			s.release(sl.Assignee)
			sl.State = SliceDone
		}
	case *TaskRemove:
		t, ok := s.tasks[c.TaskID]
		if !ok {
			return invalid(c.Kind(), "unknown task %q", c.TaskID)
		}
		for _, sl := range t.Slices {
			if sl.State != SliceDone {
				s.release(sl.Assignee)
			}
		}
		delete(s.tasks, c.TaskID)
	case *ContentAdd:
		if _, ok := s.members[c.Content.Source]; !ok {
			return fmt.Errorf("%w: source %s", ErrNotMember, c.Content.Source)
		}
		ct := c.Content
		s.catalogue[ct.ID] = &ct
	case *ContentRemove:
		if _, ok := s.catalogue[c.ContentID]; !ok {
			return invalid(c.Kind(), "unknown content %q", c.ContentID)
		}
		delete(s.catalogue, c.ContentID)
		delete(s.proxies, c.ContentID)
	case *ProxySet:
		if _, ok := s.catalogue[c.ContentID]; !ok {
			return invalid(c.Kind(), "unknown content %q", c.ContentID)
		}
		if _, ok := s.members[c.Proxy]; !ok {
			return fmt.Errorf("%w: proxy %s", ErrNotMember, c.Proxy)
		}
		ps := slices.DeleteFunc(slices.Clone(s.proxies[c.ContentID]), func(p peer.ID) bool { return p == c.Replaces || p == c.Proxy })
		if len(ps) >= maxListLen {
			return invalid(c.Kind(), "content %q has %d proxies", c.ContentID, len(ps))
		}
		s.setProxies(c.ContentID, append(ps, c.Proxy))
	case *ProxyDrop:
		// An unknown content is no error here: its entry (and its proxies) may have gone.
		s.setProxies(c.ContentID, slices.DeleteFunc(slices.Clone(s.proxies[c.ContentID]), func(p peer.ID) bool { return p == c.Proxy }))
	default:
		return fmt.Errorf("%w: unhandled command %T", ErrMalformed, cmd)
	}
	return nil
}

// setProxies sets (or, empty, removes) the proxy list of a content.
func (s *state) setProxies(id string, ps []peer.ID) {
	if len(ps) == 0 {
		delete(s.proxies, id)
		return
	}
	s.proxies[id] = ps
}

// release gives back one unit of load of p (if p is still a member with load).
func (s *state) release(p peer.ID) {
	if p == "" {
		return
	}
	if l, ok := s.load[p]; ok && l > 0 {
		s.load[p] = l - 1
	}
}

func (s *state) assign(c *TaskAssign, logTerm uint64) error {
	t, ok := s.tasks[c.TaskID]
	if !ok {
		return invalid(c.Kind(), "unknown task %q", c.TaskID)
	}
	if c.Term < t.Term {
		return fmt.Errorf("%w: assignment of task %q under term %d, task is at term %d", ErrStale, c.TaskID, c.Term, t.Term)
	}
	if logTerm != 0 && c.Term > logTerm {
		return malformed(c.Kind(), "assignment term %d is newer than its log entry's term %d", c.Term, logTerm)
	}
	excluded := make(map[peer.ID]bool, len(t.Excluded)+len(c.Exclude))
	for _, p := range t.Excluded {
		excluded[p] = true
	}
	for _, p := range c.Exclude {
		excluded[p] = true
	}
	for _, a := range c.Assignments {
		if int(a.Slice) >= len(t.Slices) {
			return invalid(c.Kind(), "slice %d out of range (task has %d)", a.Slice, len(t.Slices))
		}
		if _, ok := s.members[a.Member]; !ok {
			return fmt.Errorf("%w: assignee %s", ErrNotMember, a.Member)
		}
		if excluded[a.Member] {
			return invalid(c.Kind(), "assignee %s is excluded from task %q", a.Member, c.TaskID)
		}
	}
	t.Term = c.Term
	t.Excluded = slices.Sorted(maps.Keys(excluded))
	for _, a := range c.Assignments {
		sl := &t.Slices[a.Slice]
		if sl.State == SliceDone {
			continue
		}
		s.release(sl.Assignee)
		sl.Assignee, sl.Term = a.Member, c.Term
		s.load[a.Member]++
	}
	return nil
}

// view returns a deep copy; voter reports which peers vote in the Raft configuration.
func (s *state) view(voter func(peer.ID) bool) StateView {
	v := StateView{
		Header:    s.header,
		Members:   make([]Member, 0, len(s.members)),
		Load:      maps.Clone(s.load),
		Tasks:     make(map[string]Task, len(s.tasks)),
		Catalogue: make(map[string]Content, len(s.catalogue)),
		Proxies:   make(map[string][]peer.ID, len(s.proxies)),
		Banned:    slices.Sorted(maps.Keys(s.banned)),
	}
	for id, ps := range s.proxies {
		v.Proxies[id] = slices.Clone(ps)
	}
	for _, m := range s.members {
		c := *m
		c.Addrs = slices.Clone(m.Addrs)
		if voter != nil {
			c.Voter = voter(m.PeerID)
		}
		v.Members = append(v.Members, c)
	}
	slices.SortFunc(v.Members, func(a, b Member) int { return strings.Compare(string(a.PeerID), string(b.PeerID)) })
	for id, t := range s.tasks {
		v.Tasks[id] = t.clone()
	}
	for id, c := range s.catalogue {
		v.Catalogue[id] = *c
	}
	return v
}

// Snapshot format: magic "RCGS", version byte, then the state's fields in a fixed order with
// every map written in sorted key order, so equal states give equal bytes.
const (
	snapshotMagic   = "RCGS"
	snapshotVersion = 2 // 2 added the proxies; version 1 snapshots are read too
)

func (s *state) marshal() []byte {
	e := bincodec.Encoder{B: make([]byte, 0, 1024)}
	e.Fixed([]byte(snapshotMagic))
	e.U8(snapshotVersion)
	e.Uvarint(s.index)
	(&GroupInit{Header: s.header}).encode(&e)

	ids := slices.Sorted(maps.Keys(s.members))
	e.Count(len(ids))
	for _, p := range ids {
		m := s.members[p]
		e.Peer(m.PeerID)
		e.Addrs(m.Addrs)
		e.Str(m.Domain)
		e.Uvarint(m.Capacity)
		e.Bool(m.Ready)
		e.Bool(m.Alive)
		e.Time(m.Joined)
		e.Time(m.LastSeen)
		e.Varint(s.load[p])
	}

	tids := slices.Sorted(maps.Keys(s.tasks))
	e.Count(len(tids))
	for _, id := range tids {
		t := s.tasks[id]
		(&TaskAdd{Task: *t}).encode(&e)
		e.Uvarint(t.Term)
		e.Count(len(t.Slices))
		for _, sl := range t.Slices {
			e.Peer(sl.Assignee)
			e.Uvarint(sl.Term)
			e.U8(uint8(sl.State))
		}
		e.Peers(t.Excluded)
	}

	cids := slices.Sorted(maps.Keys(s.catalogue))
	e.Count(len(cids))
	for _, id := range cids {
		(&ContentAdd{Content: *s.catalogue[id]}).encode(&e)
	}
	e.Peers(slices.Sorted(maps.Keys(s.banned)))
	pids := slices.Sorted(maps.Keys(s.proxies))
	e.Count(len(pids))
	for _, id := range pids {
		e.Str(id)
		e.Peers(s.proxies[id])
	}
	return e.B
}

func unmarshalState(b []byte) (*state, error) {
	d := bincodec.NewDecoder(b, ErrMalformed)
	if m := d.Fixed(len(snapshotMagic)); d.Err() == nil && string(m) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a group snapshot", ErrMalformed)
	}
	version := d.U8()
	if d.Err() == nil && (version < 1 || version > snapshotVersion) {
		return nil, fmt.Errorf("%w: snapshot version %d (this node knows 1 to %d)", ErrMalformed, version, snapshotVersion)
	}
	s := newState()
	s.index = d.Uvarint()
	var gi GroupInit
	gi.decode(&d)
	s.header = gi.Header

	n := d.Count(maxListLen, "members")
	for i := 0; i < n && d.Err() == nil; i++ {
		m := &Member{PeerID: d.Peer(), Addrs: d.Addrs(maxAddrs, maxAddrLen), Domain: d.Str(maxNameLen, "domain")}
		m.Capacity = d.Uvarint()
		m.Ready = d.Bool()
		m.Alive = d.Bool()
		m.Joined = d.Time()
		m.LastSeen = d.Time()
		s.load[m.PeerID] = d.Varint()
		s.members[m.PeerID] = m
	}

	n = d.Count(maxListLen, "tasks")
	for i := 0; i < n && d.Err() == nil; i++ {
		var ta TaskAdd
		ta.decode(&d)
		t := ta.Task
		t.Term = d.Uvarint()
		ns := d.Count(maxSlices, "slices")
		if d.Err() == nil && ns != NumSlices(t.Size, t.SliceSize) {
			d.Fail("task %q has %d slices, want %d", t.ID, ns, NumSlices(t.Size, t.SliceSize))
		}
		if d.Err() == nil {
			t.Slices = make([]Slice, ns)
		}
		for j := 0; j < ns && d.Err() == nil; j++ {
			t.Slices[j] = Slice{Assignee: d.PeerOpt(), Term: d.Uvarint(), State: SliceState(d.U8())}
		}
		t.Excluded = d.Peers(maxListLen, "excluded")
		s.tasks[t.ID] = &t
	}

	n = d.Count(maxListLen, "catalogue")
	for i := 0; i < n && d.Err() == nil; i++ {
		var ca ContentAdd
		ca.decode(&d)
		c := ca.Content
		s.catalogue[c.ID] = &c
	}
	for _, p := range d.Peers(maxListLen, "banned") {
		s.banned[p] = true
	}
	if version >= 2 {
		n = d.Count(maxListLen, "proxied contents")
		for i := 0; i < n && d.Err() == nil; i++ {
			id := d.Str(maxIDLen, "content ID")
			if ps := d.Peers(maxListLen, "proxies"); d.Err() == nil {
				s.setProxies(id, ps)
			}
		}
	}
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return s, nil
}
