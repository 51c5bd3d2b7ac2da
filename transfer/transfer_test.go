package transfer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/mcast"
	"github.com/raftcast/raftcast/transfer/mcast/mcasttest"
	"github.com/raftcast/raftcast/transfer/store"
	"github.com/raftcast/raftcast/transfer/swarm"
)

type tnode struct {
	h   host.Host
	e   *Engine
	dir string
}

func newTNode(t *testing.T, sliceSize int) *tnode {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &tnode{h: h, e: newEngine(t, h, sliceSize), dir: t.TempDir()}
}

// newEngine starts an engine on h with a fresh directory (closed when the test ends, before h).
func newEngine(t *testing.T, h host.Host, sliceSize int) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.SliceSize = sliceSize
	cfg.Session.HaveInterval = 100 * time.Millisecond
	cfg.Receiver.IdleTimeout = 500 * time.Millisecond
	e, err := New(h, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func connect(t *testing.T, ns ...*tnode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i, a := range ns {
		for _, b := range ns[i+1:] {
			if err := a.h.Connect(ctx, peer.AddrInfo{ID: b.h.ID(), Addrs: b.h.Addrs()}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func writeRandom(t *testing.T, size int, seed uint64) (string, []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 99))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), "shared.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func peerIDs(ns ...*tnode) []peer.ID {
	var out []peer.ID
	for _, n := range ns {
		out = append(out, n.h.ID())
	}
	return out
}

func checkResult(t *testing.T, res *Result, out string, want []byte) {
	t.Helper()
	if sum := res.BytesMulticast + res.BytesPeers + res.BytesSource + res.BytesResumed; sum != res.Size {
		t.Errorf("summary does not add up: %+v", res)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the shared file (%v)", out, err)
	}
}

func TestGetUnknownContentFailsWithinTimeout(t *testing.T) {
	src, r := newTNode(t, content.DefaultSliceSize), newTNode(t, content.DefaultSliceSize)
	connect(t, src, r)
	out := filepath.Join(r.dir, "out.bin")
	timeout := 2 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	start := time.Now()
	_, err := r.e.Get(ctx, GetRequest{ID: content.ID{0xde, 0xad}, Out: out, Source: src.h.ID()})
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if el := time.Since(start); el > timeout+5*time.Second {
		t.Fatalf("took %v with a %v timeout", el, timeout)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("something at out: %v", err)
	}
}

func TestGetCancelledLeavesNothingAndResumes(t *testing.T) {
	src, r := newTNode(t, 64<<10), newTNode(t, 64<<10)
	connect(t, src, r)
	path, data := writeRandom(t, 16<<20, 5)
	m, err := src.e.Share(t.Context(), path, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(r.dir, "out.bin")
	ctx, cancel := context.WithCancel(t.Context())
	_, err = r.e.Get(ctx, GetRequest{ID: m.ID(), Out: out, Source: src.h.ID(), Progress: func(p Progress) {
		if p.Have > p.Total/3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled get: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a cancelled get left something at out")
	}
	// Restart the receiver: a new engine (same host, for simplicity) on the same directory.
	cfg := r.e.cfg
	if err := r.e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := New(r.h, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e2.Close() })
	r.e = e2
	// The cancelled get's streams may still be finishing a frame on the source's side: count
	// from when the source serves none.
	deadline := time.Now().Add(30 * time.Second)
	for src.e.Server().Stats().Streams > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the source still serves the cancelled get's streams after 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	servedBefore := src.e.Server().Stats().SliceFrames
	ctx2, cancel2 := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel2()
	res, err := r.e.Get(ctx2, GetRequest{ID: m.ID(), Out: out, Source: src.h.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesResumed < m.Size/3 {
		t.Fatalf("resumed only %d of %d bytes", res.BytesResumed, m.Size)
	}
	if served, want := src.e.Server().Stats().SliceFrames-servedBefore, int64(m.NumSlices())-res.BytesResumed/int64(m.SliceSize); served != want {
		t.Fatalf("after the restart the source served %d slices, want the %d missing", served, want)
	}
	checkResult(t, res, out, data)
	tr := r.e.Transfers()
	if len(tr) != 1 || tr[0].State != StateServing || tr[0].DoneBytes != m.Size {
		t.Fatalf("transfers: %+v", tr)
	}
}

// TestMulticastPartialRepair: with 256 KiB slices (190 datagrams each) and 1% loss almost
// every slice misses a datagram; the receivers fetch only the missing parts from peers, so
// multicast still carries most bytes.
func TestMulticastPartialRepair(t *testing.T) {
	const ss = 256 << 10
	src := newTNode(t, ss)
	rs := []*tnode{newTNode(t, ss), newTNode(t, ss)}
	connect(t, append([]*tnode{src}, rs...)...)
	path, data := writeRandom(t, 8<<20, 8)
	m, err := src.e.Share(t.Context(), path, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	dom := mcasttest.NewDomain(1500)
	srcPort := dom.Join(0, 100, 16)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]*Result, len(rs))
	errs := make([]error, len(rs))
	for i, r := range rs {
		port := dom.Join(0.01, uint64(i+11), 1<<16)
		wg.Go(func() {
			results[i], errs[i] = r.e.Get(ctx, GetRequest{ID: m.ID(), Out: filepath.Join(r.dir, "out.bin"), Source: src.h.ID(), Peers: peerIDs(rs...), Multicast: port})
		})
	}
	for _, r := range rs {
		for len(r.e.Transfers()) == 0 {
			select {
			case <-ctx.Done():
				t.Fatal("receivers never started")
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	if err := src.e.Multicast(m.ID(), srcPort, 50<<20); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, r := range rs {
		if errs[i] != nil {
			t.Fatalf("receiver %d: %v", i, errs[i])
		}
		res := results[i]
		t.Logf("receiver %d: multicast %d KiB, peers %d KiB, source %d KiB, %d partial repairs", i, res.BytesMulticast>>10, res.BytesPeers>>10, res.BytesSource>>10, res.PartialRepairs)
		if res.PartialRepairs == 0 || res.BytesMulticast < res.Size*3/4 {
			t.Errorf("receiver %d: partial repair not effective: %+v", i, res)
		}
		checkResult(t, res, filepath.Join(r.dir, "out.bin"), data)
	}
}

// TestShareGetMulticastWithRepair: a source multicasts into a domain losing 2% of datagrams
// at every receiver; three receivers complete from multicast plus repair from peers.
func TestShareGetMulticastWithRepair(t *testing.T) {
	const ss = 16 << 10 // 12 datagrams a slice: most slices survive 2% loss
	src := newTNode(t, ss)
	rs := []*tnode{newTNode(t, ss), newTNode(t, ss), newTNode(t, ss)}
	connect(t, append([]*tnode{src}, rs...)...)
	path, data := writeRandom(t, 8<<20, 6)
	m, err := src.e.Share(t.Context(), path, "data.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	dom := mcasttest.NewDomain(1500)
	srcPort := dom.Join(0, 100, 16)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]*Result, len(rs))
	errs := make([]error, len(rs))
	for i, r := range rs {
		port := dom.Join(0.02, uint64(i+1), 1<<16)
		wg.Go(func() {
			results[i], errs[i] = r.e.Get(ctx, GetRequest{
				ID: m.ID(), Out: filepath.Join(r.dir, "out.bin"), Source: src.h.ID(),
				Peers: peerIDs(rs...), Multicast: port,
			})
		})
	}
	// Start the pass once every receiver is listening.
	for _, r := range rs {
		for len(r.e.Transfers()) == 0 {
			select {
			case <-ctx.Done():
				t.Fatal("receivers never started")
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	if err := src.e.Multicast(m.ID(), srcPort, 50<<20); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, r := range rs {
		if errs[i] != nil {
			t.Fatalf("receiver %d: %v", i, errs[i])
		}
		res := results[i]
		t.Logf("receiver %d: multicast %d KiB, peers %d KiB, source %d KiB in %.2fs", i, res.BytesMulticast>>10, res.BytesPeers>>10, res.BytesSource>>10, res.Seconds)
		if res.BytesMulticast == 0 || res.BytesMulticast == res.Size {
			t.Errorf("receiver %d: %d bytes by multicast of %d: no multicast or no repair", i, res.BytesMulticast, res.Size)
		}
		checkResult(t, res, filepath.Join(r.dir, "out.bin"), data)
	}
}

// TestProxyRelaysIntoDomain: domain B has no source. A proxy in B gets the content from the
// source over streams and re-multicasts it into B; B's receivers take most bytes by multicast.
func TestProxyRelaysIntoDomain(t *testing.T) {
	const ss = 16 << 10
	src, proxy := newTNode(t, ss), newTNode(t, ss)
	rs := []*tnode{newTNode(t, ss), newTNode(t, ss)}
	connect(t, append([]*tnode{src, proxy}, rs...)...)
	path, data := writeRandom(t, 4<<20, 7)
	m, err := src.e.Share(t.Context(), path, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	domB := mcasttest.NewDomain(1500)
	proxyPort := domB.Join(0, 50, 16)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]*Result, len(rs))
	errs := make([]error, len(rs))
	for i, r := range rs {
		port := domB.Join(0, uint64(i+1), 1<<16)
		wg.Go(func() {
			// The receivers know only the source as a stream peer: they may repair from it,
			// but the proxy's multicast should beat that.
			results[i], errs[i] = r.e.Get(ctx, GetRequest{ID: m.ID(), Out: filepath.Join(r.dir, "out.bin"), Source: src.h.ID(), Multicast: port})
		})
	}
	for _, r := range rs {
		for len(r.e.Transfers()) == 0 {
			select {
			case <-ctx.Done():
				t.Fatal("receivers never started")
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	pres, err := proxy.e.Get(ctx, GetRequest{ID: m.ID(), Out: filepath.Join(proxy.dir, "out.bin"), Source: src.h.ID(), Relay: proxyPort, RelayRate: 100 << 20})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, pres, filepath.Join(proxy.dir, "out.bin"), data)
	wg.Wait()
	for i, r := range rs {
		if errs[i] != nil {
			t.Fatalf("receiver %d: %v", i, errs[i])
		}
		res := results[i]
		t.Logf("receiver %d: multicast %d KiB, source %d KiB", i, res.BytesMulticast>>10, res.BytesSource>>10)
		if res.BytesMulticast < res.Size/2 {
			t.Errorf("receiver %d got only %d of %d bytes from the proxy's multicast", i, res.BytesMulticast, res.Size)
		}
		checkResult(t, res, filepath.Join(r.dir, "out.bin"), data)
	}
}

// TestRelayTakeover: a receiver that takes over from a dead proxy (RelayFrom closed) relays,
// from the slice after the last one the dead proxy multicast, what it holds and everything
// it gains after: a receiver of the domain with no other way to the content completes from
// the two proxies' multicast alone, and the first quarter (the dead proxy's) is not sent
// again. Without a takeover, a receiver relays nothing and its get ends.
func TestRelayTakeover(t *testing.T) {
	const ss = 16 << 10
	src, taker, idle := newTNode(t, ss), newTNode(t, ss), newTNode(t, ss)
	only := newTNode(t, ss)
	connect(t, src, taker, idle)
	path, data := writeRandom(t, 2<<20, 11)
	m, err := src.e.Share(t.Context(), path, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dom := mcasttest.NewDomain(1500)
	listen := dom.Join(0, 1, 1<<16)

	// No takeover: nothing is multicast, and the get returns once complete.
	never := make(chan struct{})
	idlePort := dom.Join(0, 2, 16)
	res, err := idle.e.Get(ctx, GetRequest{ID: m.ID(), Out: filepath.Join(idle.dir, "out.bin"), Source: src.h.ID(),
		Multicast: idlePort, Relay: idlePort, RelayFrom: never, RelayRate: 100 << 20})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, filepath.Join(idle.dir, "out.bin"), data)
	if n := listen.Received.Load() + listen.Overflow.Load(); n != 0 {
		t.Fatalf("%d datagrams multicast without a takeover", n)
	}
	listen.Close()

	// Takeover: the taker knows no stream peer until it takes over (then the source), so
	// what it holds before came from the dead proxy's multicast. Its multicast receiver
	// would wait minutes before giving up on the dead proxy: the takeover itself must set it
	// fetching what it misses.
	taker.e.cfg.Receiver.IdleTimeout, taker.e.cfg.Receiver.GoneTimeout = 10*time.Minute, 10*time.Minute
	onlyPort, takerPort, deadPort := dom.Join(0, 3, 1<<16), dom.Join(0, 4, 1<<16), dom.Join(0, 5, 16)
	take := make(chan struct{})
	var wg sync.WaitGroup
	var onlyRes, takerRes *Result
	var onlyErr, takerErr error
	wg.Go(func() {
		// No stream peers at all: multicast is its only way to the bytes.
		onlyRes, onlyErr = only.e.Get(ctx, GetRequest{Manifest: m, Out: filepath.Join(only.dir, "out.bin"), Multicast: onlyPort})
	})
	wg.Go(func() {
		takerRes, takerErr = taker.e.Get(ctx, GetRequest{Manifest: m, Out: filepath.Join(taker.dir, "out.bin"),
			Multicast: takerPort, Relay: takerPort, RelayFrom: take, RelayRate: 100 << 20,
			MorePeers: func(context.Context) []peer.ID {
				select {
				case <-take:
					return []peer.ID{src.h.ID()}
				default:
					return nil
				}
			}})
	})
	for len(only.e.Transfers()) == 0 || len(taker.e.Transfers()) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the receivers never started")
		case <-time.After(10 * time.Millisecond):
		}
	}
	dead, err := mcast.NewSender(deadPort, m, mcast.DefaultSenderConfig(100<<20))
	if err != nil {
		t.Fatal(err)
	}
	n, q := m.NumSlices(), m.NumSlices()/4
	for i := range q {
		if err := dead.SendSlice(ctx, i, data[i*ss:min((i+1)*ss, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	for taker.e.Transfers()[0].DoneBytes < int64(q*ss) {
		select {
		case <-ctx.Done():
			t.Fatal("the taker never got the dead proxy's slices")
		case <-time.After(10 * time.Millisecond):
		}
	}
	relayed := dom.Join(0, 6, 1<<16) // counts the taker's datagrams from now on
	close(take)
	wg.Wait()
	if takerErr != nil || onlyErr != nil {
		t.Fatalf("taker: %v; multicast-only receiver: %v", takerErr, onlyErr)
	}
	checkResult(t, takerRes, filepath.Join(taker.dir, "out.bin"), data)
	checkResult(t, onlyRes, filepath.Join(only.dir, "out.bin"), data)
	if onlyRes.BytesMulticast != onlyRes.Size {
		t.Errorf("multicast-only receiver: %d of %d bytes by multicast", onlyRes.BytesMulticast, onlyRes.Size)
	}
	per := (ss + mcast.DefaultDatagram - mcast.HeaderSize - 1) / (mcast.DefaultDatagram - mcast.HeaderSize)
	if got, most := relayed.Received.Load()+relayed.Overflow.Load(), int64((n-q)*per+3); got == 0 || got > most {
		t.Errorf("the taker multicast %d datagrams, want 1 to %d (slices %d to %d and END)", got, most, q, n-1)
	}
}

// corrupting serves a complete copy with one byte of every part of every slice flipped.
type corrupting struct{ *store.Store }

func (c corrupting) ReadSlice(i int, buf []byte) ([]byte, error) {
	b, err := c.Store.ReadSlice(i, buf)
	for k := 0; err == nil && k < content.Parts; k++ {
		if off, end := content.PartBounds(len(b), k); end > off {
			b[off] ^= 0x21
		}
	}
	return b, err
}

// TestPartialRepairFromCorruptPeer: partial repairs go to a peer that serves corrupt bytes.
// The completed slices fail verification, are fetched whole, the peer is banned, and the
// file is correct.
func TestPartialRepairFromCorruptPeer(t *testing.T) {
	const ss = 256 << 10
	src, r := newTNode(t, ss), newTNode(t, ss)
	badHost, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer badHost.Close()
	bad := &tnode{h: badHost}
	connect(t, src, r, bad)
	path, data := writeRandom(t, 4<<20, 10)
	m, err := src.e.Share(t.Context(), path, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	good, err := store.OpenSource(path, store.Layout{Size: m.Size, SliceSize: m.SliceSize}, store.LengthOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	badSrv, err := swarm.NewServer(badHost, swarm.DefaultServerConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer badSrv.Close()
	badSrv.Add(m, corrupting{good})
	r.e.cfg.Session.Planner.BanAfter = 1 // few slices in this test: ban at the first proven lie

	dom := mcasttest.NewDomain(1500)
	srcPort, rPort := dom.Join(0, 1, 16), dom.Join(0.01, 2, 1<<16)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	out := filepath.Join(r.dir, "out.bin")
	go func() {
		res, err := r.e.Get(ctx, GetRequest{ID: m.ID(), Out: out, Source: src.h.ID(), Peers: []peer.ID{bad.h.ID()}, Multicast: rPort})
		done <- outcome{res, err}
	}()
	for len(r.e.Transfers()) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("receiver never started")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := src.e.Multicast(m.ID(), srcPort, 50<<20); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	t.Logf("%+v", *o.res)
	if len(o.res.Banned) != 1 || o.res.Banned[0] != bad.h.ID() {
		t.Errorf("corrupt peer not banned: %v", o.res.Banned)
	}
	checkResult(t, o.res, out, data)
}

func TestShareGetEmptyFile(t *testing.T) {
	src, r := newTNode(t, content.DefaultSliceSize), newTNode(t, content.DefaultSliceSize)
	connect(t, src, r)
	p := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := src.e.Share(t.Context(), p, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out := filepath.Join(r.dir, "empty.out")
	res, err := r.e.Get(ctx, GetRequest{ID: m.ID(), Out: out, Source: src.h.ID()})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, out, nil)
	// A second get of content already held copies it out again.
	out2 := filepath.Join(r.dir, "again.out")
	if _, err := r.e.Get(ctx, GetRequest{ID: m.ID(), Out: out2, Source: src.h.ID()}); err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, out2, nil)
}

// countingChannel is a multicast channel that counts datagrams and how many sends overlap.
type countingChannel struct {
	mu        sync.Mutex // guards in, maxIn, datagrams
	in, maxIn int
	datagrams int
}

func (c *countingChannel) MaxDatagram() int { return 1500 }
func (c *countingChannel) Send(ctx context.Context, p []byte) error {
	return c.SendBatch(ctx, [][]byte{p})
}
func (c *countingChannel) SendBatch(ctx context.Context, ps [][]byte) error {
	c.mu.Lock()
	c.in++
	c.maxIn = max(c.maxIn, c.in)
	c.mu.Unlock()
	time.Sleep(time.Millisecond) // let another pass overlap if it runs beside this one
	c.mu.Lock()
	c.in--
	c.datagrams += len(ps)
	c.mu.Unlock()
	return ctx.Err()
}
func (c *countingChannel) Recv(ctx context.Context, _ []byte) (int, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// TestMulticastPassesDoNotOverlap: a pass asked for while one runs follows it (two at once
// would split the link), and asking many times while one runs adds one pass.
func TestMulticastPassesDoNotOverlap(t *testing.T) {
	src := newTNode(t, 16<<10)
	path, _ := writeRandom(t, 1<<20, 9)
	m, err := src.e.Share(t.Context(), path, "data.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := &countingChannel{}
	for range 3 {
		if err := src.e.Multicast(m.ID(), ch, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
	perPass := 0
	for i := range m.NumSlices() {
		perPass += (m.SliceLen(i) + mcast.DefaultDatagram - mcast.HeaderSize - 1) / (mcast.DefaultDatagram - mcast.HeaderSize)
	}
	perPass += 3 // END
	deadline := time.Now().Add(time.Minute)
	for {
		ch.mu.Lock()
		n, maxIn := ch.datagrams, ch.maxIn
		ch.mu.Unlock()
		if maxIn > 1 {
			t.Fatalf("%d sends at once: passes overlap", maxIn)
		}
		if n >= 2*perPass {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d datagrams sent, want two passes of %d", n, perPass)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a third pass would have started by now
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.datagrams != 2*perPass {
		t.Fatalf("%d datagrams sent, want exactly two passes of %d", ch.datagrams, perPass)
	}
}

// TestRelaySendsOnPastLateSlice: the relay multicasts in order, but a slice still missing once
// the one relaySkipAhead beyond it is held goes out when it comes instead of holding back the
// rest; short of that, and near the end, the relay waits for the slice in order.
func TestRelaySendsOnPastLateSlice(t *testing.T) {
	const ss = 256 << 10 // relaySkipAhead is 4 slices
	if relaySkipAhead/ss != 4 {
		t.Fatalf("the test assumes relaySkipAhead of 4 slices of %d bytes", ss)
	}
	_, data := writeRandom(t, 8*ss, 13)
	m, err := content.Build(bytes.NewReader(data), "f.bin", ss)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.ForManifest(t.TempDir(), m))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out, err := store.Open(store.ForManifest(t.TempDir(), m))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	dom := mcasttest.NewDomain(1500)
	relayPort, listen := dom.Join(0, 1, 16), dom.Join(0, 2, 1<<16)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	var mu sync.Mutex
	var order []int
	rcfg := mcast.DefaultReceiverConfig()
	rcfg.OnStored = func(i, _ int) {
		mu.Lock()
		order = append(order, i)
		mu.Unlock()
	}
	recv, err := mcast.NewReceiver(listen, m, out, rcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = recv.Run(ctx) })
	snd, err := mcast.NewSender(relayPort, m, mcast.DefaultSenderConfig(100<<20))
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{log: slog.New(slog.DiscardHandler)}
	stored := make(chan struct{}, 1)
	wg.Go(func() { e.relay(ctx, snd, st, stored, 0) })

	put := func(is ...int) {
		t.Helper()
		for _, i := range is {
			if _, err := st.Put(i, data[i*ss:(i+1)*ss]); err != nil {
				t.Fatal(err)
			}
			select {
			case stored <- struct{}{}:
			default:
			}
		}
	}
	got := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(order)
	}
	waitFor := func(want []int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !slices.Equal(got(), want) {
			if time.Now().After(deadline) || len(got()) > len(want) {
				t.Fatalf("relayed %v, want %v", got(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	settle := func(want []int) { // nothing more goes out for a while
		t.Helper()
		time.Sleep(150 * time.Millisecond)
		if !slices.Equal(got(), want) {
			t.Fatalf("relayed %v, want still %v", got(), want)
		}
	}
	put(1, 2, 3)
	settle(nil) // 0 is missing, but 4 slices beyond it are not held yet: wait
	put(4)
	waitFor([]int{1, 2, 3, 4}) // 4 beyond 0 held: send on; 0 goes out when it comes
	put(6, 7)
	settle([]int{1, 2, 3, 4}) // 5 is missing but nothing 4 beyond it exists: wait
	put(0)
	waitFor([]int{1, 2, 3, 4, 0})
	put(5)
	waitFor([]int{1, 2, 3, 4, 0, 5, 6, 7})
}

// TestRelayedReceiverWaitsForLateSlice: a slice that comes from a relay after the ones that
// follow it is taken from the multicast when the get is Relayed; otherwise, once the usual
// Lag of slices beyond it arrived, it counts as lost and is fetched from a peer.
func TestRelayedReceiverWaitsForLateSlice(t *testing.T) {
	const ss = 64 << 10
	for _, relayed := range []bool{true, false} {
		src, r := newTNode(t, ss), newTNode(t, ss)
		connect(t, src, r)
		path, data := writeRandom(t, 32*ss, 17)
		m, err := src.e.Share(t.Context(), path, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		dom := mcasttest.NewDomain(1500)
		sendPort, recvPort := dom.Join(0, 1, 16), dom.Join(0, 2, 1<<16)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		var res *Result
		var gerr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, gerr = r.e.Get(ctx, GetRequest{ID: m.ID(), Manifest: m, Out: filepath.Join(r.dir, "out.bin"),
				Source: src.h.ID(), Multicast: recvPort, Relayed: relayed})
		}()
		for len(r.e.Transfers()) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		snd, err := mcast.NewSender(sendPort, m, mcast.DefaultSenderConfig(100<<20))
		if err != nil {
			t.Fatal(err)
		}
		// Slices 1..12 (the usual Lag is 4; relayLag is 256 of these), a pause, then 0 and
		// the rest, as a relay sends a slice that reached it late.
		sendSlice := func(i int) {
			if err := snd.SendSlice(ctx, i, data[i*ss:(i+1)*ss]); err != nil {
				t.Fatal(err)
			}
		}
		for i := 1; i <= 12; i++ {
			sendSlice(i)
		}
		time.Sleep(300 * time.Millisecond)
		sendSlice(0)
		for i := 13; i < 32; i++ {
			sendSlice(i)
		}
		_ = snd.SendEnd(ctx)
		<-done
		cancel()
		if gerr != nil {
			t.Fatalf("relayed %v: %v", relayed, gerr)
		}
		checkResult(t, res, filepath.Join(r.dir, "out.bin"), data)
		if relayed && (res.BytesMulticast != m.Size || res.BytesSource != 0) {
			t.Errorf("relayed: multicast %d, source %d bytes; want all %d by multicast", res.BytesMulticast, res.BytesSource, m.Size)
		}
		if !relayed && res.BytesSource < ss {
			t.Errorf("not relayed: the late slice was not fetched from the source (multicast %d, source %d bytes)", res.BytesMulticast, res.BytesSource)
		}
	}
}

// An engine that restarts serves, through Serve, what it shared and what it received whole:
// a new receiver gets the content from them alone. Sharing the same file again is no error.
func TestServeAfterRestart(t *testing.T) {
	src, r1 := newTNode(t, 64<<10), newTNode(t, 64<<10)
	connect(t, src, r1)
	path, data := writeRandom(t, 2<<20, 11)
	m, err := src.e.Share(t.Context(), path, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.e.Share(t.Context(), path, "", 0); err != nil {
		t.Fatalf("sharing again: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out := filepath.Join(r1.dir, "out.bin")
	if _, err := r1.e.Get(ctx, GetRequest{ID: m.ID(), Out: out, Source: src.h.ID()}); err != nil {
		t.Fatal(err)
	}

	// Both restart: new engines on the same hosts, told what they held.
	for _, n := range []*tnode{src, r1} {
		if err := n.e.Close(); err != nil {
			t.Fatal(err)
		}
	}
	src2, r1b := newEngine(t, src.h, 64<<10), newEngine(t, r1.h, 64<<10)
	if err := src2.Serve(m, path, KindShare); err != nil {
		t.Fatal(err)
	}
	if err := r1b.Serve(m, out, KindGet); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*Engine{src2, r1b} {
		if ts := e.Transfers(); len(ts) != 1 || ts[0].State != StateServing || ts[0].DoneBytes != m.Size {
			t.Fatalf("transfers after Serve: %+v", ts)
		}
	}
	if err := r1b.Serve(m, filepath.Join(t.TempDir(), "gone"), KindGet); err == nil {
		t.Fatal("Serve of a missing file succeeded")
	}

	// A receiver with no peers gets it all from the restarted source; one with no source, all
	// from the restarted receiver.
	r2, r3 := newTNode(t, 64<<10), newTNode(t, 64<<10)
	connect(t, r2, src)
	connect(t, r3, r1)
	out2 := filepath.Join(r2.dir, "out.bin")
	res, err := r2.e.Get(ctx, GetRequest{ID: m.ID(), Out: out2, Source: src.h.ID()})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, out2, data)
	if res.BytesSource != m.Size {
		t.Fatalf("not every byte from the restarted source: %+v", res)
	}
	out3 := filepath.Join(r3.dir, "out.bin")
	if res, err = r3.e.Get(ctx, GetRequest{ID: m.ID(), Out: out3, Peers: []peer.ID{r1.h.ID()}}); err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, out3, data)
	if res.BytesPeers != m.Size {
		t.Fatalf("not every byte from the restarted receiver: %+v", res)
	}
}
