package coop

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"
)

func TestMain(m *testing.M) {
	_ = logging.SetLogLevel("raftlib", "fatal") // go-libp2p-raft complains when a test kills a host
	os.Exit(m.Run())
}

func testLogger(name string) *slog.Logger {
	if os.Getenv("COOP_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

// testConfig is the service configuration of the loopback tests: 1 MiB slices, short timers.
func testConfig(dir string) Config {
	c := DefaultConfig()
	c.Dir = dir
	c.SliceSize = 1 << 20
	c.SliceTimeout = 3 * time.Second
	c.Heartbeat = 100 * time.Millisecond
	c.DoneInterval = 300 * time.Millisecond
	c.GroupScan = 500 * time.Millisecond
	c.HaveTimeout = time.Second
	c.RetryBackoff = 50 * time.Millisecond
	c.ControlTimeout = 15 * time.Second
	return c
}

// memberTransport tags each request with the member's name so a test origin can tell
// members apart (as a real origin tells client IPs apart).
type memberTransport struct {
	name string
	rt   http.RoundTripper
}

func (m *memberTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Test-Member", m.name)
	return m.rt.RoundTrip(r)
}

// testNode is one node: a libp2p host, its group manager and its coop service.
type testNode struct {
	name string
	key  crypto.PrivKey
	dir  string
	tr   *http.Transport
	h    host.Host
	m    *peergroup.Manager
	svc  *Service
}

func (n *testNode) id() peer.ID {
	id, _ := peer.IDFromPrivateKey(n.key)
	return id
}

func startNode(t testing.TB, name string, mod func(*Config)) *testNode {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{name: name, key: key, dir: filepath.Join(t.TempDir(), name)}
	n.start(t, mod)
	t.Cleanup(n.stop)
	return n
}

// start starts the node's host, manager (reopening its groups) and service on its data dir.
func (n *testNode) start(t testing.TB, mod func(*Config)) {
	t.Helper()
	var err error
	n.h, err = libp2p.New(libp2p.Identity(n.key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	name, key := n.name, n.key
	pc := peergroup.DefaultConfig()
	pc.DataDir = filepath.Join(n.dir, "pg")
	pc.NoSync = true
	pc.DeadAfter = 1500 * time.Millisecond
	pc.ReconcileInterval = 200 * time.Millisecond
	pc.Logger = testLogger(name)
	if n.m, err = peergroup.NewManager(n.h, key, pc); err != nil {
		n.h.Close()
		t.Fatal(err)
	}
	n.startService(t, mod)
}

func (n *testNode) startService(t testing.TB, mod func(*Config)) {
	t.Helper()
	cfg := testConfig(filepath.Join(n.dir, "coop"))
	if mod != nil {
		mod(&cfg)
	}
	n.tr = &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true}
	client := &http.Client{Transport: &memberTransport{name: n.name, rt: n.tr}}
	svc, err := New(n.h, n.m, client, testLogger(n.name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.svc = svc
}

// stop closes everything (to the others, a crash).
func (n *testNode) stop() {
	if n.svc != nil {
		_ = n.svc.Close()
		n.svc = nil
	}
	if n.m != nil {
		_ = n.m.Close()
		n.m = nil
	}
	if n.h != nil {
		_ = n.h.Close()
		n.h = nil
	}
	if n.tr != nil {
		n.tr.CloseIdleConnections()
	}
}

func (n *testNode) group(t testing.TB, id string) *peergroup.Group {
	t.Helper()
	for _, g := range n.m.Groups() {
		if g.ID() == id {
			return g
		}
	}
	t.Fatalf("%s is not in group %s", n.name, id)
	return nil
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
}

// newGroup starts k nodes in one open group and waits until they agree on a leader and on
// the k members, all alive.
func newGroup(t testing.TB, k int, mod func(*Config)) (string, []*testNode) {
	t.Helper()
	nodes := make([]*testNode, k)
	for i := range nodes {
		nodes[i] = startNode(t, fmt.Sprintf("n%d", i), mod)
	}
	g0, err := nodes[0].m.Create(ctxT(t, 20*time.Second), "dl", peergroup.PolicyOpen, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		if _, err := n.m.Join(ctxT(t, 30*time.Second), g0.Info(), peergroup.Credential{}); err != nil {
			t.Fatalf("%s join: %v", n.name, err)
		}
	}
	id := g0.ID()
	eventually(t, 30*time.Second, "group agreement", func() error {
		var leader peer.ID
		for _, n := range nodes {
			st := n.group(t, id).Status()
			if st.Leader == "" || (leader != "" && st.Leader != leader) {
				return fmt.Errorf("%s sees leader %q", n.name, st.Leader)
			}
			leader = st.Leader
			if len(st.Members) != k {
				return fmt.Errorf("%s sees %d members", n.name, len(st.Members))
			}
			for _, m := range st.Members {
				if !m.Alive || !m.Ready {
					return fmt.Errorf("%s sees %s not ready/alive", n.name, m.PeerID)
				}
			}
		}
		if len(nodes[0].group(t, id).LiveMembers()) != k {
			return fmt.Errorf("not all live")
		}
		return nil
	})
	return id, nodes
}

// leaderOf returns the index of the group's leader among nodes.
func leaderOf(t testing.TB, id string, nodes []*testNode) int {
	t.Helper()
	for _, n := range nodes {
		if n.m == nil {
			continue
		}
		l := n.group(t, id).Leader()
		for i, m := range nodes {
			if m.m != nil && m.id() == l {
				return i
			}
		}
	}
	t.Fatal("no leader among the nodes")
	return -1
}

// testOrigin is an httptest origin: ServeContent (ranges, If-Range) with a strong ETag, a
// per-request rate cap, counters, and switches for misbehaviour.
type testOrigin struct {
	srv *httptest.Server

	rate        int64 // bytes/s per request (per connection, with keep-alive); 0: no cap
	clientRate  int64 // bytes/s per client (X-Test-Member) across its connections; 0: no cap
	noRange     bool  // ignore Range: always 200 with the whole body, no Accept-Ranges
	failMember  string
	slowMember  string // this member's requests run at slowRate per connection
	slowRate    int64
	changeAfter int64         // after this many body bytes, serve version 2 (0: never)
	headDelay   time.Duration // a HEAD (the leader's probe) waits this long before answering

	body      atomic.Int64 // body bytes written
	requests  atomic.Int64
	failed    atomic.Int64
	mu        sync.Mutex // guards versions, byMember
	versions  [][]byte
	byMember  map[string]int64
	pace      map[string]time.Time // per client: when its next byte may go (clientRate)
	switchedV atomic.Bool
}

func newTestOrigin(t testing.TB, data []byte, configure func(*testOrigin)) *testOrigin {
	t.Helper()
	o := &testOrigin{versions: [][]byte{data}, byMember: make(map[string]int64), pace: make(map[string]time.Time)}
	if configure != nil {
		configure(o)
	}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *testOrigin) url(name string) string { return o.srv.URL + "/" + name }

func (o *testOrigin) current() (int, []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v := 0
	if o.changeAfter > 0 && o.body.Load() >= o.changeAfter && len(o.versions) > 1 {
		v = 1
		o.switchedV.Store(true)
	}
	return v, o.versions[v]
}

func (o *testOrigin) serve(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	if r.Method == http.MethodHead && o.headDelay > 0 {
		time.Sleep(o.headDelay)
	}
	member := r.Header.Get("X-Test-Member")
	if o.failMember != "" && member == o.failMember {
		o.failed.Add(1)
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	v, data := o.current()
	etag := fmt.Sprintf("\"v%d-%x\"", v, sha256.Sum256(data[:min(len(data), 4096)]))
	tw := &throttledWriter{ResponseWriter: w, rate: o.rate, start: time.Now(), o: o, member: member, v: v}
	if o.slowMember != "" && member == o.slowMember {
		tw.rate = o.slowRate
	}
	w.Header().Set("ETag", etag)
	if o.noRange {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = tw.Write(data)
		}
		return
	}
	http.ServeContent(tw, r, "", time.Time{}, bytes.NewReader(data))
}

type throttledWriter struct {
	http.ResponseWriter
	rate   int64
	start  time.Time
	n      int64
	o      *testOrigin
	member string
	v      int // version being sent
}

func (w *throttledWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if o := w.o; o.changeAfter > 0 && w.v == 0 && o.body.Load() >= o.changeAfter && len(o.versions) > 1 {
			o.switchedV.Store(true)
			panic(http.ErrAbortHandler) // the old version is gone: its transfers break off
		}
		c := p[:min(len(p), 16<<10)]
		if r := w.o.clientRate; r > 0 { // reserve the client's share of time, then wait for it
			w.o.mu.Lock()
			now := time.Now()
			at := w.o.pace[w.member]
			if at.Before(now.Add(-20 * time.Millisecond)) { // idle: no credit beyond 20ms
				at = now.Add(-20 * time.Millisecond)
			}
			w.o.pace[w.member] = at.Add(time.Duration(float64(len(c)) / float64(r) * float64(time.Second)))
			w.o.mu.Unlock()
			time.Sleep(time.Until(at))
		}
		n, err := w.ResponseWriter.Write(c)
		written += n
		w.n += int64(n)
		w.o.body.Add(int64(n))
		w.o.mu.Lock()
		w.o.byMember[w.member] += int64(n)
		w.o.mu.Unlock()
		if err != nil {
			return written, err
		}
		p = p[n:]
		if w.rate > 0 {
			due := time.Duration(float64(w.n) / float64(w.rate) * float64(time.Second))
			if d := due - time.Since(w.start); d > 0 {
				time.Sleep(d)
			}
		}
	}
	return written, nil
}

func randomData(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkFile checks out holds exactly want.
func checkFile(t testing.TB, out string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, sha %s; want %d bytes, sha %s", out, len(got), sha(got), len(want), sha(want))
	}
}

// noOutput checks that nothing is at out, nor a temporary file beside it.
func noOutput(t testing.TB, out string) {
	t.Helper()
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("%s exists after a failed download (err %v)", out, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(out))
	for _, e := range ents {
		if strings.Contains(e.Name(), filepath.Base(out)) {
			t.Fatalf("leftover %s beside the output", e.Name())
		}
	}
}

// fetchers returns the members that fetched a positive number of bytes.
func fetchers(r Result) int {
	n := 0
	for _, b := range r.BytesByPeer {
		if b > 0 {
			n++
		}
	}
	return n
}
