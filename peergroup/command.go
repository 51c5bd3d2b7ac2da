package peergroup

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// Commands change the replicated group state. Each is a typed struct encoded as
//
//	version (1 byte, commandVersion) | kind (1 byte, CommandKind) | the kind's fields
//
// with the package's compact binary codec (see codec.go); no reflection, no JSON. A command
// is checked for structure when encoded and when decoded (malformed → ErrMalformed), and
// against the state when applied (stale term → ErrStale, does not fit → ErrInvalid); a
// rejected command changes nothing on any replica.

// commandVersion is the encoding version of every command. A replica refuses commands of a
// version it does not know (they are rejected, not applied).
const commandVersion = 1

// CommandKind identifies a command type on the wire. The values are part of the format.
type CommandKind uint8

// The command kinds.
const (
	KindGroupInit CommandKind = 1 + iota
	KindMemberAdd
	KindMemberUpdate
	KindMemberRemove
	KindMemberLive
	KindTaskAdd
	KindTaskAssign
	KindSlicesDone
	KindTaskRemove
	KindContentAdd
	KindContentRemove
	KindProxySet
	KindProxyDrop
	kindEnd
)

var commandNames = [...]string{
	KindGroupInit: "group-init", KindMemberAdd: "member-add", KindMemberUpdate: "member-update",
	KindMemberRemove: "member-remove", KindMemberLive: "member-live", KindTaskAdd: "task-add",
	KindTaskAssign: "task-assign", KindSlicesDone: "slices-done", KindTaskRemove: "task-remove",
	KindContentAdd: "content-add", KindContentRemove: "content-remove", KindProxySet: "proxy-set",
	KindProxyDrop: "proxy-drop",
}

func (k CommandKind) String() string {
	if k >= KindGroupInit && k < kindEnd {
		return commandNames[k]
	}
	return fmt.Sprintf("command(%d)", uint8(k))
}

// Command is one typed change to the group state. The implementations are the exported
// structs of this file.
type Command interface {
	Kind() CommandKind
	encode(e *bincodec.Encoder)
	decode(d *bincodec.Decoder)
	// check validates the command's structure, independent of the state.
	check() error
}

// EncodeCommand checks and encodes a command.
func EncodeCommand(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrMalformed)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	e := bincodec.Encoder{B: make([]byte, 0, 64)}
	e.U8(commandVersion)
	e.U8(uint8(c.Kind()))
	c.encode(&e)
	if len(e.B) > maxCommandSize {
		return nil, fmt.Errorf("%w: command of %d bytes (limit %d)", ErrMalformed, len(e.B), maxCommandSize)
	}
	return e.B, nil
}

// DecodeCommand decodes and checks a command.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) > maxCommandSize {
		return nil, fmt.Errorf("%w: command of %d bytes (limit %d)", ErrMalformed, len(b), maxCommandSize)
	}
	d := bincodec.NewDecoder(b, ErrMalformed)
	if v := d.U8(); d.Err() == nil && v != commandVersion {
		return nil, fmt.Errorf("%w: command version %d (this node knows %d)", ErrMalformed, v, commandVersion)
	}
	k := CommandKind(d.U8())
	if d.Err() != nil {
		return nil, d.Err()
	}
	c := newCommand(k)
	if c == nil {
		return nil, fmt.Errorf("%w: unknown command kind %d", ErrMalformed, uint8(k))
	}
	c.decode(&d)
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

func newCommand(k CommandKind) Command {
	switch k {
	case KindGroupInit:
		return &GroupInit{}
	case KindMemberAdd:
		return &MemberAdd{}
	case KindMemberUpdate:
		return &MemberUpdate{}
	case KindMemberRemove:
		return &MemberRemove{}
	case KindMemberLive:
		return &MemberLive{}
	case KindTaskAdd:
		return &TaskAdd{}
	case KindTaskAssign:
		return &TaskAssign{}
	case KindSlicesDone:
		return &SlicesDone{}
	case KindTaskRemove:
		return &TaskRemove{}
	case KindContentAdd:
		return &ContentAdd{}
	case KindContentRemove:
		return &ContentRemove{}
	case KindProxySet:
		return &ProxySet{}
	case KindProxyDrop:
		return &ProxyDrop{}
	}
	return nil
}

func malformed(k CommandKind, format string, args ...any) error {
	return fmt.Errorf("%w: %s: "+format, append([]any{ErrMalformed, k}, args...)...)
}

func checkID(k CommandKind, what, id string) error {
	if id == "" || len(id) > maxIDLen {
		return malformed(k, "%s must have 1..%d bytes", what, maxIDLen)
	}
	return nil
}

func checkPeer(k CommandKind, what string, p peer.ID) error {
	if p == "" {
		return malformed(k, "%s missing", what)
	}
	if _, err := peer.IDFromBytes([]byte(p)); err != nil || len(p) > maxPeerIDLen {
		return malformed(k, "%s is not a peer ID", what)
	}
	return nil
}

func checkAddrs(k CommandKind, as []ma.Multiaddr) error {
	if len(as) > maxAddrs {
		return malformed(k, "%d addrs (limit %d)", len(as), maxAddrs)
	}
	for _, a := range as {
		if a == nil || len(a.Bytes()) == 0 || len(a.Bytes()) > maxAddrLen {
			return malformed(k, "bad addr")
		}
	}
	return nil
}

// GroupInit is the first command of every group's log: it fixes the group's header.
type GroupInit struct{ Header Header }

func (*GroupInit) Kind() CommandKind { return KindGroupInit }
func (c *GroupInit) encode(e *bincodec.Encoder) {
	e.Str(c.Header.ID)
	e.Str(c.Header.Name)
	e.U8(uint8(c.Header.Policy))
	e.Peer(c.Header.Creator)
	e.Time(c.Header.Created)
}
func (c *GroupInit) decode(d *bincodec.Decoder) {
	c.Header.ID = d.Str(maxIDLen, "group ID")
	c.Header.Name = d.Str(maxNameLen, "name")
	c.Header.Policy = Policy(d.U8())
	c.Header.Creator = d.Peer()
	c.Header.Created = d.Time()
}
func (c *GroupInit) check() error {
	if err := checkID(KindGroupInit, "group ID", c.Header.ID); err != nil {
		return err
	}
	if c.Header.Name == "" || len(c.Header.Name) > maxNameLen {
		return malformed(KindGroupInit, "name must have 1..%d bytes", maxNameLen)
	}
	if !c.Header.Policy.Valid() {
		return malformed(KindGroupInit, "unknown policy %d", c.Header.Policy)
	}
	return checkPeer(KindGroupInit, "creator", c.Header.Creator)
}

// MemberAdd admits a member (committed by the leader after the member's credential verified).
type MemberAdd struct{ Member Member }

func (*MemberAdd) Kind() CommandKind { return KindMemberAdd }
func (c *MemberAdd) encode(e *bincodec.Encoder) {
	e.Peer(c.Member.PeerID)
	e.Addrs(c.Member.Addrs)
	e.Str(c.Member.Domain)
	e.Uvarint(c.Member.Capacity)
	e.Time(c.Member.Joined)
}
func (c *MemberAdd) decode(d *bincodec.Decoder) {
	c.Member.PeerID = d.Peer()
	c.Member.Addrs = d.Addrs(maxAddrs, maxAddrLen)
	c.Member.Domain = d.Str(maxNameLen, "domain")
	c.Member.Capacity = d.Uvarint()
	c.Member.Joined = d.Time()
}
func (c *MemberAdd) check() error {
	if err := checkPeer(KindMemberAdd, "peer", c.Member.PeerID); err != nil {
		return err
	}
	if len(c.Member.Domain) > maxNameLen {
		return malformed(KindMemberAdd, "domain too long")
	}
	return checkAddrs(KindMemberAdd, c.Member.Addrs)
}

// MemberUpdate is a member announcing itself: its current addresses, multicast domain and
// capacity. It marks the member ready (caught up) and seen at At.
type MemberUpdate struct {
	PeerID   peer.ID
	Addrs    []ma.Multiaddr
	Domain   string
	Capacity uint64
	At       time.Time
}

func (*MemberUpdate) Kind() CommandKind { return KindMemberUpdate }
func (c *MemberUpdate) encode(e *bincodec.Encoder) {
	e.Peer(c.PeerID)
	e.Addrs(c.Addrs)
	e.Str(c.Domain)
	e.Uvarint(c.Capacity)
	e.Time(c.At)
}
func (c *MemberUpdate) decode(d *bincodec.Decoder) {
	c.PeerID = d.Peer()
	c.Addrs = d.Addrs(maxAddrs, maxAddrLen)
	c.Domain = d.Str(maxNameLen, "domain")
	c.Capacity = d.Uvarint()
	c.At = d.Time()
}
func (c *MemberUpdate) check() error {
	if err := checkPeer(KindMemberUpdate, "peer", c.PeerID); err != nil {
		return err
	}
	if len(c.Domain) > maxNameLen {
		return malformed(KindMemberUpdate, "domain too long")
	}
	return checkAddrs(KindMemberUpdate, c.Addrs)
}

// RemoveReason says why a member left.
type RemoveReason uint8

// The removal reasons.
const (
	ReasonLeave RemoveReason = 1 + iota // the member left on its own
	ReasonExpel                         // expelled; the peer is banned from rejoining
)

// MemberRemove removes a member (leave or expulsion).
type MemberRemove struct {
	PeerID peer.ID
	Reason RemoveReason
	At     time.Time
}

func (*MemberRemove) Kind() CommandKind { return KindMemberRemove }
func (c *MemberRemove) encode(e *bincodec.Encoder) {
	e.Peer(c.PeerID)
	e.U8(uint8(c.Reason))
	e.Time(c.At)
}
func (c *MemberRemove) decode(d *bincodec.Decoder) {
	c.PeerID = d.Peer()
	c.Reason = RemoveReason(d.U8())
	c.At = d.Time()
}
func (c *MemberRemove) check() error {
	if c.Reason != ReasonLeave && c.Reason != ReasonExpel {
		return malformed(KindMemberRemove, "unknown reason %d", c.Reason)
	}
	return checkPeer(KindMemberRemove, "peer", c.PeerID)
}

// MemberLive records the leader's view of a member's liveness when it changes.
type MemberLive struct {
	PeerID peer.ID
	Alive  bool
	At     time.Time
}

func (*MemberLive) Kind() CommandKind { return KindMemberLive }
func (c *MemberLive) encode(e *bincodec.Encoder) {
	e.Peer(c.PeerID)
	e.Bool(c.Alive)
	e.Time(c.At)
}
func (c *MemberLive) decode(d *bincodec.Decoder) {
	c.PeerID = d.Peer()
	c.Alive = d.Bool()
	c.At = d.Time()
}
func (c *MemberLive) check() error { return checkPeer(KindMemberLive, "peer", c.PeerID) }

// TaskAdd adds a task to the task table. Its slices start missing and unassigned; Term,
// Slices and Excluded of the given Task are ignored.
type TaskAdd struct{ Task Task }

func (*TaskAdd) Kind() CommandKind { return KindTaskAdd }
func (c *TaskAdd) encode(e *bincodec.Encoder) {
	t := &c.Task
	e.Str(t.ID)
	e.U8(uint8(t.Kind))
	e.Str(t.URL)
	e.Str(t.ContentID)
	e.Varint(t.Size)
	e.Varint(t.SliceSize)
	e.Str(t.Validators.ETag)
	e.Str(t.Validators.LastModified)
	e.Peer(t.Requester)
	e.Time(t.Created)
}
func (c *TaskAdd) decode(d *bincodec.Decoder) {
	t := &c.Task
	t.ID = d.Str(maxIDLen, "task ID")
	t.Kind = TaskKind(d.U8())
	t.URL = d.Str(maxURLLen, "URL")
	t.ContentID = d.Str(maxIDLen, "content ID")
	t.Size = d.Varint()
	t.SliceSize = d.Varint()
	t.Validators.ETag = d.Str(maxShortLen, "etag")
	t.Validators.LastModified = d.Str(maxShortLen, "last-modified")
	t.Requester = d.Peer()
	t.Created = d.Time()
}
func (c *TaskAdd) check() error {
	t := &c.Task
	k := KindTaskAdd
	if err := checkID(k, "task ID", t.ID); err != nil {
		return err
	}
	if t.Kind != TaskDownload && t.Kind != TaskDistribute {
		return malformed(k, "unknown task kind %d", t.Kind)
	}
	if len(t.URL) > maxURLLen || len(t.ContentID) > maxIDLen {
		return malformed(k, "URL or content ID too long")
	}
	if t.Kind == TaskDownload && t.URL == "" {
		return malformed(k, "download task without URL")
	}
	if t.Size <= 0 || t.SliceSize <= 0 {
		return malformed(k, "size %d and slice size %d must be positive", t.Size, t.SliceSize)
	}
	if n := NumSlices(t.Size, t.SliceSize); n > maxSlices {
		return malformed(k, "%d slices (limit %d)", n, maxSlices)
	}
	if len(t.Validators.ETag) > maxShortLen || len(t.Validators.LastModified) > maxShortLen {
		return malformed(k, "validators too long")
	}
	return checkPeer(k, "requester", t.Requester)
}

// Assignment places one slice on one member.
type Assignment struct {
	Slice  uint32
	Member peer.ID
}

// TaskAssign commits (re-)assignments of a task's slices under a Raft term. It is rejected
// as stale when Term is older than the task's current term, and as malformed when Term is
// newer than the term of the log entry carrying it. Assignments of slices already done are
// skipped; Exclude is added to the task's excluded members before checking assignees.
type TaskAssign struct {
	TaskID      string
	Term        uint64
	Assignments []Assignment
	Exclude     []peer.ID
}

func (*TaskAssign) Kind() CommandKind { return KindTaskAssign }
func (c *TaskAssign) encode(e *bincodec.Encoder) {
	e.Str(c.TaskID)
	e.Uvarint(c.Term)
	e.Count(len(c.Assignments))
	for _, a := range c.Assignments {
		e.Uvarint(uint64(a.Slice))
		e.Peer(a.Member)
	}
	e.Peers(c.Exclude)
}
func (c *TaskAssign) decode(d *bincodec.Decoder) {
	c.TaskID = d.Str(maxIDLen, "task ID")
	c.Term = d.Uvarint()
	n := d.Count(maxSlices, "assignments")
	if n > 0 {
		c.Assignments = make([]Assignment, 0, n)
	}
	for i := 0; i < n && d.Err() == nil; i++ {
		s := d.Uvarint()
		if s > maxSlices {
			d.Fail("slice %d out of range", s)
		}
		c.Assignments = append(c.Assignments, Assignment{Slice: uint32(s), Member: d.Peer()})
	}
	c.Exclude = d.Peers(maxListLen, "exclude")
}
func (c *TaskAssign) check() error {
	k := KindTaskAssign
	if err := checkID(k, "task ID", c.TaskID); err != nil {
		return err
	}
	if c.Term == 0 {
		return malformed(k, "term 0")
	}
	if len(c.Assignments) > maxSlices || len(c.Exclude) > maxListLen {
		return malformed(k, "too many assignments or exclusions")
	}
	seen := make(map[uint32]bool, len(c.Assignments))
	for _, a := range c.Assignments {
		if seen[a.Slice] {
			return malformed(k, "slice %d assigned twice", a.Slice)
		}
		seen[a.Slice] = true
		if err := checkPeer(k, "assignee", a.Member); err != nil {
			return err
		}
	}
	for _, p := range c.Exclude {
		if err := checkPeer(k, "excluded", p); err != nil {
			return err
		}
	}
	return nil
}

// SlicesDone reports delivered slices of a task (in batches). Member is the member that
// delivered them; the load of each slice's assignee is released.
type SlicesDone struct {
	TaskID string
	Member peer.ID
	Slices []uint32
}

func (*SlicesDone) Kind() CommandKind { return KindSlicesDone }
func (c *SlicesDone) encode(e *bincodec.Encoder) {
	e.Str(c.TaskID)
	e.Peer(c.Member)
	e.Uint32s(c.Slices)
}
func (c *SlicesDone) decode(d *bincodec.Decoder) {
	c.TaskID = d.Str(maxIDLen, "task ID")
	c.Member = d.Peer()
	c.Slices = d.Uint32s(maxSlices, "slices")
}
func (c *SlicesDone) check() error {
	k := KindSlicesDone
	if err := checkID(k, "task ID", c.TaskID); err != nil {
		return err
	}
	if len(c.Slices) == 0 || len(c.Slices) > maxSlices {
		return malformed(k, "1..%d slices", maxSlices)
	}
	return checkPeer(k, "member", c.Member)
}

// TaskRemove removes a finished or abandoned task, releasing the load of its outstanding
// slices.
type TaskRemove struct{ TaskID string }

func (*TaskRemove) Kind() CommandKind            { return KindTaskRemove }
func (c *TaskRemove) encode(e *bincodec.Encoder) { e.Str(c.TaskID) }
func (c *TaskRemove) decode(d *bincodec.Decoder) { c.TaskID = d.Str(maxIDLen, "task ID") }
func (c *TaskRemove) check() error               { return checkID(KindTaskRemove, "task ID", c.TaskID) }

// ContentAdd adds (or replaces) an entry of the content catalogue.
type ContentAdd struct{ Content Content }

func (*ContentAdd) Kind() CommandKind { return KindContentAdd }
func (c *ContentAdd) encode(e *bincodec.Encoder) {
	e.Str(c.Content.ID)
	e.Str(c.Content.Name)
	e.Varint(c.Content.Size)
	e.Peer(c.Content.Source)
	e.Time(c.Content.Added)
}
func (c *ContentAdd) decode(d *bincodec.Decoder) {
	c.Content.ID = d.Str(maxIDLen, "content ID")
	c.Content.Name = d.Str(maxNameLen, "name")
	c.Content.Size = d.Varint()
	c.Content.Source = d.Peer()
	c.Content.Added = d.Time()
}
func (c *ContentAdd) check() error {
	k := KindContentAdd
	if err := checkID(k, "content ID", c.Content.ID); err != nil {
		return err
	}
	if len(c.Content.Name) > maxNameLen {
		return malformed(k, "name too long")
	}
	if c.Content.Size < 0 {
		return malformed(k, "negative size")
	}
	return checkPeer(k, "source", c.Content.Source)
}

// ContentRemove removes an entry of the content catalogue.
type ContentRemove struct{ ContentID string }

func (*ContentRemove) Kind() CommandKind            { return KindContentRemove }
func (c *ContentRemove) encode(e *bincodec.Encoder) { e.Str(c.ContentID) }
func (c *ContentRemove) decode(d *bincodec.Decoder) { c.ContentID = d.Str(maxIDLen, "content ID") }
func (c *ContentRemove) check() error {
	return checkID(KindContentRemove, "content ID", c.ContentID)
}

// ProxySet records Proxy as the proxy peer of a content in Proxy's multicast domain (the
// member that pulls the content from peers and re-multicasts it there), in place of Replaces
// (a proxy that died; empty if none). A content has one proxy per domain; the state keeps the
// list, and each node picks the one it hears in its own domain.
type ProxySet struct {
	ContentID string
	Proxy     peer.ID
	Replaces  peer.ID
}

func (*ProxySet) Kind() CommandKind { return KindProxySet }
func (c *ProxySet) encode(e *bincodec.Encoder) {
	e.Str(c.ContentID)
	e.Peer(c.Proxy)
	e.Peer(c.Replaces) // empty: none
}
func (c *ProxySet) decode(d *bincodec.Decoder) {
	c.ContentID = d.Str(maxIDLen, "content ID")
	c.Proxy = d.Peer()
	c.Replaces = d.PeerOpt()
}
func (c *ProxySet) check() error {
	k := KindProxySet
	if err := checkID(k, "content ID", c.ContentID); err != nil {
		return err
	}
	if c.Replaces == c.Proxy {
		return malformed(k, "a proxy cannot replace itself")
	}
	return checkPeer(k, "proxy", c.Proxy)
}

// ProxyDrop removes Proxy from the proxies of a content: a member whose claim (ProxySet) was
// ordered after another's in its domain withdraws it, so that should the domain's proxy die,
// the stale claim is not taken for its successor.
type ProxyDrop struct {
	ContentID string
	Proxy     peer.ID
}

func (*ProxyDrop) Kind() CommandKind { return KindProxyDrop }
func (c *ProxyDrop) encode(e *bincodec.Encoder) {
	e.Str(c.ContentID)
	e.Peer(c.Proxy)
}
func (c *ProxyDrop) decode(d *bincodec.Decoder) {
	c.ContentID = d.Str(maxIDLen, "content ID")
	c.Proxy = d.Peer()
}
func (c *ProxyDrop) check() error {
	if err := checkID(KindProxyDrop, "content ID", c.ContentID); err != nil {
		return err
	}
	return checkPeer(KindProxyDrop, "proxy", c.Proxy)
}
