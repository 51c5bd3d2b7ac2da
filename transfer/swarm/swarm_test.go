package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/zeebo/blake3"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/store"
)

func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func connectAll(t testing.TB, hs ...host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, a := range hs {
		for _, b := range hs[i+1:] {
			if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func randomFile(t testing.TB, dir string, size int, seed uint64) (string, []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed+1))
	data := make([]byte, size)
	for i := 0; i+8 <= size; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			data[i+k] = byte(v >> (8 * k))
		}
	}
	p := filepath.Join(dir, fmt.Sprintf("file-%d.bin", seed))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// node is a host with a server, as every peer of a swarm runs.
type node struct {
	h   host.Host
	srv *Server
	dir string
}

func newNode(t testing.TB) *node { t.Helper(); return newNodeWith(t, DefaultServerConfig()) }

func newNodeWith(t testing.TB, cfg ServerConfig) *node {
	t.Helper()
	h := newHost(t)
	srv, err := NewServer(h, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &node{h: h, srv: srv, dir: t.TempDir()}
}

// share makes n a source of the file at path.
func (n *node) share(t testing.TB, path string, sliceSize int) *content.Manifest {
	t.Helper()
	return n.shareAs(t, path, sliceSize, false)
}

// shareAs makes n a source of the file at path, seeding (Server.AddSeed) if seed.
func (n *node) shareAs(t testing.TB, path string, sliceSize int, seed bool) *content.Manifest {
	t.Helper()
	m, err := content.BuildFile(path, "", sliceSize)
	if err != nil {
		t.Fatal(err)
	}
	src, err := store.OpenSource(path, store.Layout{Size: m.Size, SliceSize: m.SliceSize}, m.Verify)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if seed {
		n.srv.AddSeed(m, src)
	} else {
		n.srv.Add(m, src)
	}
	return m
}

// receive opens n's store for m and serves it while it fills.
func (n *node) receive(t testing.TB, m *content.Manifest) *store.Store {
	t.Helper()
	st, err := store.Open(store.ForManifest(n.dir, m))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n.srv.Add(m, st)
	return st
}

func testConfig(source peer.ID, peers []peer.ID) Config {
	cfg := DefaultConfig()
	cfg.Source = source
	cfg.HaveInterval = 100 * time.Millisecond
	cfg.Peers = func(context.Context) []peer.ID { return peers }
	return cfg
}

func connectNodes(t testing.TB, ns ...*node) {
	t.Helper()
	var hs []host.Host
	for _, n := range ns {
		hs = append(hs, n.h)
	}
	connectAll(t, hs...)
}

func ids(ns ...*node) []peer.ID {
	var out []peer.ID
	for _, n := range ns {
		out = append(out, n.h.ID())
	}
	return out
}

func finalizeAndCompare(t *testing.T, st *store.Store, out string, want []byte) {
	t.Helper()
	if err := st.Finalize(out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the source", out)
	}
}

func TestSwarmSourceAndThreeReceivers(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testSourceAndThree(t, false) })
	// A seeding source (what the engine's Share makes) sends each slice once: with a window
	// longer than the test, a second receiver is always sent to the first.
	t.Run("seeding", func(t *testing.T) { testSourceAndThree(t, true) })
}

func testSourceAndThree(t *testing.T, seed bool) {
	size := 64 << 20
	if testing.Short() {
		size = 8 << 20
	}
	scfg := DefaultServerConfig()
	scfg.SeedWindow = time.Hour
	src := newNodeWith(t, scfg)
	rs := []*node{newNode(t), newNode(t), newNode(t)}
	connectNodes(t, append([]*node{src}, rs...)...)
	path, data := randomFile(t, t.TempDir(), size, 1)
	m := src.shareAs(t, path, content.DefaultSliceSize, seed)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	stats := make([]Stats, len(rs))
	errs := make([]error, len(rs))
	stores := make([]*store.Store, len(rs))
	for i, r := range rs {
		stores[i] = r.receive(t, m)
		sess, err := NewSession(r.h, m, stores[i], testConfig(src.h.ID(), ids(rs...)), nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			errs[i] = sess.Run(ctx)
			stats[i] = sess.Stats()
		})
	}
	wg.Wait()
	var fromSource int64
	elsewhere := 0
	for i, r := range rs {
		if errs[i] != nil {
			t.Fatalf("receiver %d: %v", i, errs[i])
		}
		s := stats[i]
		if s.BytesSource+s.BytesPeers != m.Size {
			t.Errorf("receiver %d: source %d + peers %d != size %d", i, s.BytesSource, s.BytesPeers, m.Size)
		}
		fromSource += s.BytesSource
		elsewhere += s.Elsewhere
		t.Logf("receiver %d: %d MiB from the source, %d MiB from peers, %d requests, %d sent elsewhere", i, s.BytesSource>>20, s.BytesPeers>>20, s.Requests, s.Elsewhere)
		finalizeAndCompare(t, stores[i], filepath.Join(r.dir, "out.bin"), data)
	}
	served := src.srv.Stats()
	t.Logf("source served %d MiB for 3×%d MiB delivered", served.SliceBytes>>20, size>>20)
	if seed {
		if served.SliceBytes != m.Size || fromSource != m.Size {
			t.Errorf("seeding source served %d bytes, receivers took %d from it: want each slice once, %d", served.SliceBytes, fromSource, m.Size)
		}
		if served.Elsewhere == 0 || int64(elsewhere) != served.Elsewhere {
			t.Errorf("ELSEWHERE answers: %d sent, %d received", served.Elsewhere, elsewhere)
		}
	}
	if fromSource == 3*m.Size {
		t.Log("note: receivers exchanged nothing among themselves this run")
	}
}

// corruptSource serves a complete copy but flips a byte in every slice.
type corruptSource struct{ *store.Store }

func (c corruptSource) ReadSlice(i int, buf []byte) ([]byte, error) {
	b, err := c.Store.ReadSlice(i, buf)
	if err == nil && len(b) > 0 {
		b[len(b)/2] ^= 0x5a
	}
	return b, err
}

func TestSwarmCorruptPeerBanned(t *testing.T) {
	src, bad := newNode(t), newNode(t)
	rs := []*node{newNode(t), newNode(t)}
	all := append([]*node{src, bad}, rs...)
	connectNodes(t, all...)
	path, data := randomFile(t, t.TempDir(), 24<<20+12345, 2)
	m := src.share(t, path, content.DefaultSliceSize)
	good, err := store.OpenSource(path, store.Layout{Size: m.Size, SliceSize: m.SliceSize}, func(int, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	bad.srv.Add(m, corruptSource{good}) // a non-source peer announcing everything: asked first

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i, r := range rs {
		st := r.receive(t, m)
		sess, err := NewSession(r.h, m, st, testConfig(src.h.ID(), ids(bad, rs[0], rs[1])), nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := sess.Run(ctx); err != nil {
				t.Errorf("receiver %d: %v", i, err)
				return
			}
			s := sess.Stats()
			if len(s.Banned) != 1 || s.Banned[0] != bad.h.ID() {
				t.Errorf("receiver %d: banned %v, want the bad peer", i, s.Banned)
			}
			if s.SlicesCorrupt < DefaultPlannerConfig().BanAfter {
				t.Errorf("receiver %d: %d corrupt slices", i, s.SlicesCorrupt)
			}
			if s.BytesSource+s.BytesPeers != m.Size {
				t.Errorf("receiver %d: bytes do not add up", i)
			}
			if c := r.h.Network().Connectedness(bad.h.ID()); c == network.Connected {
				t.Errorf("receiver %d: still connected to the banned peer", i)
			}
			finalizeAndCompare(t, st, filepath.Join(r.dir, "out.bin"), data)
		})
	}
	wg.Wait()
	if served := bad.srv.Stats().SliceFrames; served > int64(2*(DefaultPlannerConfig().MaxInflightPerPeer+DefaultPlannerConfig().BanAfter)) {
		t.Errorf("bad peer served %d slices: it was asked after the ban", served)
	}
}

func TestSwarmResumeAfterRestart(t *testing.T) {
	src, r := newNode(t), newNode(t)
	connectNodes(t, src, r)
	path, data := randomFile(t, t.TempDir(), 32<<20, 3)
	m := src.share(t, path, content.DefaultSliceSize)
	n := m.NumSlices()

	st, err := store.Open(store.ForManifest(r.dir, m))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cfg := testConfig(src.h.ID(), nil)
	cfg.OnProgress = func(p Progress) {
		if p.Have >= n/2 {
			cancel() // kill the receiver half way
		}
	}
	sess, _ := NewSession(r.h, m, st, cfg, nil)
	if err := sess.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The cancelled session's streams may still be finishing a frame on the source's side:
	// count from when the source serves none.
	deadline := time.Now().Add(30 * time.Second)
	for src.srv.Stats().Streams > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the source still serves the cancelled session's streams after 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	servedBefore := src.srv.Stats().SliceFrames

	st2, err := store.Open(store.ForManifest(r.dir, m))
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	held := st2.Count()
	if held < n/2 || held == n {
		t.Fatalf("after restart the store holds %d of %d", held, n)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel2()
	sess2, _ := NewSession(r.h, m, st2, testConfig(src.h.ID(), nil), nil)
	if err := sess2.Run(ctx2); err != nil {
		t.Fatal(err)
	}
	if got := sess2.Stats().Requests; got != n-held {
		t.Fatalf("restarted session requested %d slices, want exactly the %d missing", got, n-held)
	}
	if servedAfter := src.srv.Stats().SliceFrames - servedBefore; servedAfter != int64(n-held) {
		t.Fatalf("source served %d slices after the restart, want %d", servedAfter, n-held)
	}
	finalizeAndCompare(t, st2, filepath.Join(r.dir, "out.bin"), data)
}

func TestFetchManifest(t *testing.T) {
	src, r := newNode(t), newNode(t)
	connectNodes(t, src, r)
	path, _ := randomFile(t, t.TempDir(), 100000, 4)
	m := src.share(t, path, content.MinSliceSize)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	got, err := FetchManifest(ctx, r.h, src.h.ID(), m.ID())
	if err != nil || got.ID() != m.ID() {
		t.Fatalf("FetchManifest: %v", err)
	}
	have, err := FetchHave(ctx, r.h, src.h.ID(), m)
	if err != nil || !have.Full() {
		t.Fatalf("FetchHave: %v", err)
	}
	if _, err := FetchManifest(ctx, r.h, src.h.ID(), content.ID{1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown content: %v", err)
	}
}

// TestFetchManifestRefusesTraversal: a peer answers with a manifest whose name tries to escape
// the output directory, under the content ID of exactly those bytes. It must be refused.
func TestFetchManifestRefusesTraversal(t *testing.T) {
	evil, r := newHost(t), newHost(t)
	connectAll(t, evil, r)
	hashes := []content.Hash{content.HashSlice([]byte("x"))}
	raw := fakeManifest("../../etc/cron.d/evil", 1, content.MinSliceSize, hashes)
	id := content.ID(blake3.Sum256(raw))
	evil.SetStreamHandler(ProtocolID, func(s network.Stream) {
		defer s.Close()
		var rb [reqSize]byte
		if _, err := readReq(s, &rb); err != nil {
			s.Reset()
			return
		}
		var hb [hdrSize]byte
		wireHdr{status: stOK, length: uint32(len(raw))}.put(hb[:])
		s.Write(hb[:])
		s.Write(raw)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := FetchManifest(ctx, r, evil.ID(), id); !errors.Is(err, content.ErrBadName) {
		t.Fatalf("traversal manifest: %v", err)
	}
}

// fakeManifest encodes a manifest without validating it, as an attacker would.
func fakeManifest(name string, size int64, sliceSize int, hashes []content.Hash) []byte {
	m := &content.Manifest{Name: name, Size: size, SliceSize: sliceSize, Hashes: hashes, Root: content.MerkleRoot(hashes)}
	return m.Encode()
}

// TestSwarmSourceKilled: the source dies once every slice exists somewhere among the
// receivers; they all complete from each other.
func TestSwarmSourceKilled(t *testing.T) {
	src := newNode(t)
	rs := []*node{newNode(t), newNode(t), newNode(t)}
	connectNodes(t, append([]*node{src}, rs...)...)
	path, data := randomFile(t, t.TempDir(), 16<<20, 9)
	m := src.share(t, path, 64<<10)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	stores := make([]*store.Store, len(rs))
	sessions := make([]*Session, len(rs))
	var wg sync.WaitGroup
	errs := make([]error, len(rs))
	stats := make([]Stats, len(rs))
	for i, r := range rs {
		stores[i] = r.receive(t, m)
		cfg := testConfig(src.h.ID(), ids(rs...))
		cfg.Planner.BackoffMax = time.Second
		sess, _ := NewSession(r.h, m, stores[i], cfg, nil)
		sessions[i] = sess
		// Until the source dies, receiver i fetches only the slices i mod 3: each gets a
		// third from the source, and together they hold everything at about a third each.
		var hold []int
		for k := 0; k < m.NumSlices(); k++ {
			if k%len(rs) != i {
				hold = append(hold, k)
			}
		}
		sess.Hold(hold...)
		wg.Go(func() { errs[i] = sess.Run(ctx); stats[i] = sess.Stats() })
	}
	// Kill the source as soon as the receivers hold every slice between them.
	killedAt := -1
	var killTime time.Time
	t0 := time.Now()
	for killedAt < 0 {
		union := store.NewBitmap(m.NumSlices())
		least := m.NumSlices()
		for _, st := range stores {
			h := st.Have()
			least = min(least, h.Count())
			for i := 0; i < m.NumSlices(); i++ {
				if h.Has(i) {
					union.Set(i)
				}
			}
		}
		if union.Full() {
			t.Logf("union full after %v", time.Since(t0))
			src.srv.Close()
			src.h.Close()
			killedAt = least
			killTime = time.Now()
			for _, sess := range sessions {
				sess.ReleaseAll()
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the receivers never held every slice between them")
		case <-time.After(5 * time.Millisecond):
		}
	}
	wg.Wait()
	t.Logf("source killed when the poorest receiver held %d of %d slices; all complete %v later", killedAt, m.NumSlices(), time.Since(killTime))
	for i, r := range rs {
		if errs[i] != nil {
			t.Fatalf("receiver %d: %v", i, errs[i])
		}
		if stats[i].BytesSource+stats[i].BytesPeers != m.Size {
			t.Errorf("receiver %d: bytes do not add up", i)
		}
		finalizeAndCompare(t, stores[i], filepath.Join(r.dir, "out.bin"), data)
	}
	if killedAt > m.NumSlices()/2 {
		t.Errorf("source died too late (%d of %d) to test anything", killedAt, m.NumSlices())
	}
}

// TestSwarmBlackHolePeer: a peer announces every slice and then never sends any. With a frame
// timeout far beyond the test's, only the endgame (asking another peer for slices in flight
// too long) can complete the transfer.
func TestSwarmBlackHolePeer(t *testing.T) {
	src, r := newNode(t), newNode(t)
	hole := newHost(t)
	connectAll(t, src.h, r.h, hole)
	path, data := randomFile(t, t.TempDir(), 4<<20, 11)
	m := src.share(t, path, 64<<10)
	full := store.FullBitmap(m.NumSlices()).Bytes()
	hole.SetStreamHandler(ProtocolID, func(s network.Stream) {
		defer s.Reset()
		var rb [reqSize]byte
		for {
			q, err := readReq(s, &rb)
			if err != nil {
				return
			}
			if q.op == opHave {
				var hb [hdrSize]byte
				wireHdr{status: stOK, index: uint32(m.NumSlices()), length: uint32(len(full))}.put(hb[:])
				s.Write(hb[:])
				s.Write(full)
			}
			// Slices: swallowed.
		}
	})
	st := r.receive(t, m)
	cfg := testConfig(src.h.ID(), []peer.ID{hole.ID()})
	cfg.FrameTimeout = 10 * time.Minute
	cfg.Planner.EndgameAfter = 500 * time.Millisecond
	sess, _ := NewSession(r.h, m, st, cfg, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := sess.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if s := sess.Stats(); s.BytesSource != m.Size {
		t.Errorf("stats %+v", s)
	}
	finalizeAndCompare(t, st, filepath.Join(r.dir, "out.bin"), data)
}
