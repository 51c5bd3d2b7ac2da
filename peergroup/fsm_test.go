package peergroup

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

var t0 = time.UnixMilli(1_700_000_000_000).UTC()

func sampleCommands(ps []peer.ID) []Command {
	a1 := ma.StringCast("/ip4/127.0.0.1/tcp/4001")
	a2 := ma.StringCast("/ip6/::1/udp/4001/quic-v1")
	return []Command{
		&GroupInit{Header: Header{ID: "g1", Name: "films", Policy: PolicySecret, Creator: ps[0], Created: t0}},
		&MemberAdd{Member: Member{PeerID: ps[1], Addrs: []ma.Multiaddr{a1, a2}, Domain: "lan1", Capacity: 10, Joined: t0}},
		&MemberUpdate{PeerID: ps[1], Addrs: []ma.Multiaddr{a2}, Domain: "lan2", Capacity: 7, At: t0.Add(time.Second)},
		&MemberRemove{PeerID: ps[2], Reason: ReasonExpel, At: t0},
		&MemberLive{PeerID: ps[1], Alive: true, At: t0},
		&TaskAdd{Task: Task{ID: "t1", Kind: TaskDownload, URL: "http://x/y", ContentID: "c", Size: 10 << 20, SliceSize: 1 << 20,
			Validators: Validators{ETag: `"e"`, LastModified: "Mon"}, Requester: ps[0], Created: t0}},
		&TaskAssign{TaskID: "t1", Term: 3, Assignments: []Assignment{{0, ps[0]}, {5, ps[1]}}, Exclude: []peer.ID{ps[2]}},
		&SlicesDone{TaskID: "t1", Member: ps[1], Slices: []uint32{5, 0}},
		&TaskRemove{TaskID: "t1"},
		&ContentAdd{Content: Content{ID: "c1", Name: "a.iso", Size: 123, Source: ps[0], Added: t0}},
		&ProxySet{ContentID: "c1", Proxy: ps[1], Replaces: ps[0]},
		&ProxyDrop{ContentID: "c1", Proxy: ps[1]},
		&ContentRemove{ContentID: "c1"},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	ps := testPeers(t, 3)
	for _, c := range sampleCommands(ps) {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("%s: %v", c.Kind(), err)
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%s: %v", c.Kind(), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%s: round trip\n got %#v\nwant %#v", c.Kind(), got, c)
		}
		// Every strict prefix is malformed, never a panic.
		for i := 0; i < len(b); i++ {
			if _, err := DecodeCommand(b[:i]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: prefix %d/%d: err %v", c.Kind(), i, len(b), err)
			}
		}
		if _, err := DecodeCommand(append(b, 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: trailing byte accepted: %v", c.Kind(), err)
		}
	}
}

func TestDecodeCommandRejectsMalformed(t *testing.T) {
	ps := testPeers(t, 2)
	good, _ := EncodeCommand(&TaskRemove{TaskID: "t"})
	cases := map[string][]byte{
		"empty":           nil,
		"unknown version": append([]byte{9}, good[1:]...),
		"unknown kind":    {commandVersion, 200},
		"kind zero":       {commandVersion, 0},
		"bad bool": func() []byte {
			b, _ := EncodeCommand(&MemberLive{PeerID: ps[0], At: t0})
			b[3+len(ps[0])] = 7
			return b
		}(),
		"huge count":    {commandVersion, byte(KindSlicesDone), 1, 't', 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"garbage peer":  {commandVersion, byte(KindMemberLive), 3, 1, 2, 3, 0, 0},
		"empty task id": {commandVersion, byte(KindTaskRemove), 0},
	}
	for name, b := range cases {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
	// Structural checks on encode too.
	bad := []Command{
		&TaskAdd{Task: Task{ID: "t", Kind: TaskDownload, URL: "u", Size: 0, SliceSize: 1, Requester: ps[0]}},
		&TaskAdd{Task: Task{ID: "t", Kind: 9, URL: "u", Size: 1, SliceSize: 1, Requester: ps[0]}},
		&TaskAdd{Task: Task{ID: "t", Kind: TaskDownload, Size: 1, SliceSize: 1, Requester: ps[0]}},
		&TaskAdd{Task: Task{ID: "t", Kind: TaskDownload, URL: "u", Size: 1 << 40, SliceSize: 1, Requester: ps[0]}},
		&TaskAssign{TaskID: "t", Term: 0},
		&TaskAssign{TaskID: "t", Term: 1, Assignments: []Assignment{{1, ps[0]}, {1, ps[1]}}},
		&SlicesDone{TaskID: "t", Member: ps[0]},
		&MemberRemove{PeerID: ps[0], Reason: 0},
		&GroupInit{Header: Header{ID: "g", Name: "n", Policy: 0, Creator: ps[0]}},
		&MemberLive{PeerID: "not-a-peer"},
		nil,
	}
	for i, c := range bad {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrMalformed) {
			t.Errorf("bad command %d (%T): err %v, want ErrMalformed", i, c, err)
		}
	}
}

// applyAt applies a command through the FSM as raft would, in a log entry of the given term.
func applyAt(t *testing.T, f *fsm, term uint64, c Command) error {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatalf("encode %s: %v", c.Kind(), err)
	}
	return applyRaw(f, term, b)
}

// applyRaw applies bytes in the FSM's next log entry.
func applyRaw(f *fsm, term uint64, b []byte) error {
	r := f.Apply(&raft.Log{Index: f.index() + 1, Term: term, Type: raft.LogCommand, Data: b})
	if r == nil {
		return nil
	}
	return r.(error)
}

func mustApply(t *testing.T, f *fsm, term uint64, c Command) {
	t.Helper()
	if err := applyAt(t, f, term, c); err != nil {
		t.Fatalf("apply %s: %v", c.Kind(), err)
	}
}

// newTestFSM returns an FSM with a group of the given members and a 10-slice task t1
// requested by ps[0].
func newTestFSM(t *testing.T, ps []peer.ID) *fsm {
	f := newFSM(nil)
	mustApply(t, f, 1, &GroupInit{Header: Header{ID: "g", Name: "g", Policy: PolicyOpen, Creator: ps[0], Created: t0}})
	for _, p := range ps {
		mustApply(t, f, 1, &MemberAdd{Member: Member{PeerID: p, Joined: t0}})
	}
	mustApply(t, f, 1, &TaskAdd{Task: Task{ID: "t1", Kind: TaskDownload, URL: "http://o/f", Size: 10 << 20, SliceSize: 1 << 20, Requester: ps[0], Created: t0}})
	return f
}

func marshalFSM(f *fsm) []byte {
	var b []byte
	f.read(func(s *state) { b = s.marshal() })
	return b
}

func TestFSMRejectsWithoutChange(t *testing.T) {
	ps := testPeers(t, 4)
	outsider := testPeers(t, 1)[0]
	f := newTestFSM(t, ps[:3])
	mustApply(t, f, 5, &TaskAssign{TaskID: "t1", Term: 5, Assignments: []Assignment{{0, ps[0]}, {1, ps[1]}}})

	enc := func(c Command) []byte { b, _ := EncodeCommand(c); return b }
	cases := []struct {
		name string
		term uint64
		data []byte
		want error
	}{
		{"malformed bytes", 5, []byte{commandVersion, byte(KindTaskAssign), 0xff}, ErrMalformed},
		{"unknown version", 5, append([]byte{2}, enc(&TaskRemove{TaskID: "t1"})[1:]...), ErrMalformed},
		{"stale term", 5, enc(&TaskAssign{TaskID: "t1", Term: 4, Assignments: []Assignment{{2, ps[1]}}}), ErrStale},
		{"term from the future", 5, enc(&TaskAssign{TaskID: "t1", Term: 6, Assignments: []Assignment{{2, ps[1]}}}), ErrMalformed},
		{"slice out of range", 5, enc(&TaskAssign{TaskID: "t1", Term: 5, Assignments: []Assignment{{10, ps[1]}}}), ErrInvalid},
		{"assignee not a member", 5, enc(&TaskAssign{TaskID: "t1", Term: 5, Assignments: []Assignment{{2, outsider}}}), ErrNotMember},
		{"assignee excluded", 5, enc(&TaskAssign{TaskID: "t1", Term: 5, Assignments: []Assignment{{2, ps[2]}}, Exclude: []peer.ID{ps[2]}}), ErrInvalid},
		{"unknown task", 5, enc(&TaskAssign{TaskID: "nope", Term: 5, Assignments: []Assignment{{0, ps[1]}}}), ErrInvalid},
		{"done out of range", 5, enc(&SlicesDone{TaskID: "t1", Member: ps[1], Slices: []uint32{1, 99}}), ErrInvalid},
		{"duplicate task", 5, enc(&TaskAdd{Task: Task{ID: "t1", Kind: TaskDownload, URL: "u", Size: 1, SliceSize: 1, Requester: ps[0]}}), ErrInvalid},
		{"task by outsider", 5, enc(&TaskAdd{Task: Task{ID: "t2", Kind: TaskDownload, URL: "u", Size: 1, SliceSize: 1, Requester: outsider}}), ErrNotMember},
		{"second init", 5, enc(&GroupInit{Header: Header{ID: "h", Name: "h", Policy: PolicyOpen, Creator: ps[0]}}), ErrInvalid},
		{"remove non-member", 5, enc(&MemberRemove{PeerID: outsider, Reason: ReasonLeave}), ErrNotMember},
		{"content by outsider", 5, enc(&ContentAdd{Content: Content{ID: "c", Source: outsider}}), ErrNotMember},
	}
	for _, c := range cases {
		before, index := f.view(nil), f.index()
		err := applyRaw(f, c.term, c.data)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
		if !reflect.DeepEqual(before, f.view(nil)) {
			t.Errorf("%s: rejected command changed the state", c.name)
		}
		if f.index() <= index {
			t.Errorf("%s: the FSM's index did not move past the rejected command", c.name)
		}
	}
}

func TestFSMTasksAndLoad(t *testing.T) {
	ps := testPeers(t, 3)
	f := newTestFSM(t, ps)
	mustApply(t, f, 2, &TaskAssign{TaskID: "t1", Term: 2, Assignments: []Assignment{{0, ps[0]}, {1, ps[1]}, {2, ps[1]}, {3, ps[2]}}})
	v := f.view(nil)
	if v.Load[ps[0]] != 1 || v.Load[ps[1]] != 2 || v.Load[ps[2]] != 1 {
		t.Fatalf("load after assign: %v", v.Load)
	}
	mustApply(t, f, 2, &SlicesDone{TaskID: "t1", Member: ps[1], Slices: []uint32{1, 2}})
	mustApply(t, f, 2, &SlicesDone{TaskID: "t1", Member: ps[1], Slices: []uint32{1}}) // repeat: no double release
	v = f.view(nil)
	if v.Load[ps[1]] != 0 {
		t.Fatalf("load of ps1 after done: %d", v.Load[ps[1]])
	}
	// Re-arrangement in a newer term moves slice 3 off ps2, which is excluded from then on;
	// reassigning a done slice is skipped.
	mustApply(t, f, 4, &TaskAssign{TaskID: "t1", Term: 4, Assignments: []Assignment{{3, ps[0]}, {1, ps[0]}}, Exclude: []peer.ID{ps[2]}})
	v = f.view(nil)
	task := v.Tasks["t1"]
	if task.Term != 4 || task.Slices[3].Assignee != ps[0] || task.Slices[3].Term != 4 || task.Slices[1].Assignee != ps[1] {
		t.Fatalf("task after re-arrange: %+v", task)
	}
	if v.Load[ps[2]] != 0 || v.Load[ps[0]] != 2 {
		t.Fatalf("load after re-arrange: %v", v.Load)
	}
	if len(task.Excluded) != 1 || task.Excluded[0] != ps[2] {
		t.Fatalf("excluded: %v", task.Excluded)
	}
	// The old leader's assignment from term 3 arrives late: rejected as stale.
	if err := applyAt(t, f, 4, &TaskAssign{TaskID: "t1", Term: 3, Assignments: []Assignment{{4, ps[1]}}}); !errors.Is(err, ErrStale) {
		t.Fatalf("late assignment: %v", err)
	}
	if got := f.view(nil).Tasks["t1"].Missing(); len(got) != 8 {
		t.Fatalf("missing slices: %v", got)
	}
	mustApply(t, f, 4, &TaskRemove{TaskID: "t1"})
	v = f.view(nil)
	if v.Load[ps[0]] != 0 || len(v.Tasks) != 0 {
		t.Fatalf("after remove: load %v tasks %d", v.Load, len(v.Tasks))
	}
}

func TestFSMMembership(t *testing.T) {
	ps := testPeers(t, 3)
	f := newTestFSM(t, ps)
	m, _ := func() (Member, bool) { v := f.view(nil); return v.Member(ps[1]) }()
	if m.Ready || !m.Alive {
		t.Fatalf("new member: %+v", m)
	}
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/9")
	mustApply(t, f, 1, &MemberUpdate{PeerID: ps[1], Addrs: []ma.Multiaddr{addr}, Domain: "d", At: t0.Add(time.Minute)})
	mustApply(t, f, 1, &MemberLive{PeerID: ps[2], Alive: false, At: t0})
	v := f.view(func(p peer.ID) bool { return p == ps[0] })
	m1, _ := v.Member(ps[1])
	m2, _ := v.Member(ps[2])
	m0, _ := v.Member(ps[0])
	if !m1.Ready || m1.Domain != "d" || !m1.LastSeen.Equal(t0.Add(time.Minute)) || len(m1.Addrs) != 1 {
		t.Fatalf("updated member: %+v", m1)
	}
	if m2.Alive || !m0.Voter || m1.Voter {
		t.Fatalf("liveness/voter: %+v %+v %+v", m0, m2, m1)
	}
	mustApply(t, f, 1, &MemberRemove{PeerID: ps[2], Reason: ReasonExpel})
	mustApply(t, f, 1, &MemberRemove{PeerID: ps[1], Reason: ReasonLeave})
	if err := applyAt(t, f, 1, &MemberAdd{Member: Member{PeerID: ps[2]}}); !errors.Is(err, ErrBanned) {
		t.Fatalf("expelled peer re-added: %v", err)
	}
	mustApply(t, f, 1, &MemberAdd{Member: Member{PeerID: ps[1]}}) // one who left may come back
	v = f.view(nil)
	if len(v.Members) != 2 || len(v.Banned) != 1 || v.Banned[0] != ps[2] {
		t.Fatalf("members %d banned %v", len(v.Members), v.Banned)
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func TestSnapshotRoundTrip(t *testing.T) {
	ps := testPeers(t, 4)
	f := newTestFSM(t, ps[:3])
	for _, c := range sampleCommands(ps)[1:] { // a bit of everything, some rejected
		if c.Kind() != KindTaskRemove && c.Kind() != KindContentRemove {
			_ = applyAt(t, f, 3, c)
		}
	}
	mustApply(t, f, 3, &TaskAssign{TaskID: "t1", Term: 3, Assignments: []Assignment{{0, ps[0]}, {9, ps[1]}}, Exclude: []peer.ID{ps[2]}})
	mustApply(t, f, 3, &SlicesDone{TaskID: "t1", Member: ps[0], Slices: []uint32{0}})
	mustApply(t, f, 3, &ContentAdd{Content: Content{ID: "c9", Name: "n", Size: 5, Source: ps[1], Added: t0}})
	mustApply(t, f, 3, &ProxySet{ContentID: "c9", Proxy: ps[0]})

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM(nil)
	if err := g.Restore(nopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.view(nil), g.view(nil)) {
		t.Fatalf("views differ after restore:\n%+v\n%+v", f.view(nil), g.view(nil))
	}
	if !bytes.Equal(marshalFSM(f), marshalFSM(g)) {
		t.Fatal("snapshot bytes differ after restore")
	}
	// A corrupted snapshot is refused and leaves the FSM as it was.
	b := sink.Bytes()
	for _, bad := range [][]byte{b[:len(b)-1], append(append([]byte{}, b...), 0), []byte("XXXX"), nil} {
		h := newFSM(nil)
		if err := h.Restore(nopCloser{bytes.NewReader(bad)}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("corrupt snapshot: %v", err)
		}
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func FuzzDecodeCommand(f *testing.F) {
	ps := testPeers(f, 3)
	for _, c := range sampleCommands(ps) {
		b, _ := EncodeCommand(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		b2, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		c2, err := DecodeCommand(b2)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-encoding changed the command: %v", err)
		}
	})
}

// A content's proxies: one per domain, a takeover replaces the dead one, and a proxy that
// leaves the group or a content that leaves the catalogue takes its entries along.
func TestFSMProxies(t *testing.T) {
	ps := testPeers(t, 4)
	f := newTestFSM(t, ps)
	if err := applyAt(t, f, 1, &ProxySet{ContentID: "c", Proxy: ps[1]}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("proxy of an unknown content: %v, want ErrInvalid", err)
	}
	mustApply(t, f, 1, &ContentAdd{Content: Content{ID: "c", Name: "c", Size: 1, Source: ps[0], Added: t0}})
	mustApply(t, f, 1, &ContentAdd{Content: Content{ID: "d", Name: "d", Size: 1, Source: ps[0], Added: t0}})
	mustApply(t, f, 1, &ProxySet{ContentID: "c", Proxy: ps[1]})
	mustApply(t, f, 1, &ProxySet{ContentID: "c", Proxy: ps[2]})
	mustApply(t, f, 1, &ProxySet{ContentID: "c", Proxy: ps[2]}) // again: no duplicate
	mustApply(t, f, 1, &ProxySet{ContentID: "d", Proxy: ps[1]})
	proxies := func(id string) []peer.ID {
		t.Helper()
		v := f.view(nil).Proxies[id]
		if got := f.proxies(id); !slices.Equal(got, v) {
			t.Fatalf("proxies(%q) = %v, the state view says %v", id, got, v)
		}
		return v
	}
	if got := proxies("c"); !slices.Equal(got, []peer.ID{ps[1], ps[2]}) {
		t.Fatalf("proxies of c: %v", got)
	}
	mustApply(t, f, 1, &ProxySet{ContentID: "c", Proxy: ps[3], Replaces: ps[1]})
	if got := proxies("c"); !slices.Equal(got, []peer.ID{ps[2], ps[3]}) {
		t.Fatalf("after ps[3] took over from ps[1]: %v", got)
	}
	// A claim ordered after another's in its domain is withdrawn; withdrawing twice, or from
	// a content with no proxies, changes nothing.
	mustApply(t, f, 1, &ProxySet{ContentID: "c", Proxy: ps[1]})
	mustApply(t, f, 1, &ProxyDrop{ContentID: "c", Proxy: ps[1]})
	mustApply(t, f, 1, &ProxyDrop{ContentID: "c", Proxy: ps[1]})
	mustApply(t, f, 1, &ProxyDrop{ContentID: "gone", Proxy: ps[1]})
	if got := proxies("c"); !slices.Equal(got, []peer.ID{ps[2], ps[3]}) {
		t.Fatalf("after ps[1] withdrew its claim: %v", got)
	}
	mustApply(t, f, 1, &MemberRemove{PeerID: ps[1], Reason: ReasonLeave})
	if got := proxies("d"); got != nil {
		t.Fatalf("proxies of d after its proxy left: %v", got)
	}
	if err := applyAt(t, f, 1, &ProxySet{ContentID: "d", Proxy: ps[1]}); !errors.Is(err, ErrNotMember) {
		t.Fatalf("a non-member as proxy: %v, want ErrNotMember", err)
	}
	mustApply(t, f, 1, &ContentRemove{ContentID: "c"})
	if got := f.view(nil).Proxies; len(got) != 0 {
		t.Fatalf("proxies after the content left: %v", got)
	}
	if _, err := EncodeCommand(&ProxySet{ContentID: "c", Proxy: ps[2], Replaces: ps[2]}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a proxy replacing itself: %v, want ErrMalformed", err)
	}
}

// A snapshot from before proxies were recorded (version 1) still restores.
func TestSnapshotVersion1(t *testing.T) {
	ps := testPeers(t, 2)
	f := newTestFSM(t, ps)
	b := marshalFSM(f)
	// Version 2 appends the proxy list (here empty: one zero count byte) to version 1's layout.
	v1 := append([]byte(nil), b[:len(b)-1]...)
	v1[len(snapshotMagic)] = 1
	s, err := unmarshalState(v1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.members) != 2 || len(s.tasks) != 1 {
		t.Fatalf("restored %d members, %d tasks", len(s.members), len(s.tasks))
	}
	b[len(snapshotMagic)] = 3
	if _, err := unmarshalState(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version 3: %v, want ErrMalformed", err)
	}
}
