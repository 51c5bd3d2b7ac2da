package mcast_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/mcast"
	"github.com/raftcast/raftcast/transfer/mcast/mcasttest"
	"github.com/raftcast/raftcast/transfer/store"
)

func fixture(t *testing.T, size, sliceSize int) (string, []byte, *content.Manifest, *store.Store) {
	return fixtureB(t, size, sliceSize)
}

func fixtureB(t testing.TB, size, sliceSize int) (string, []byte, *content.Manifest, *store.Store) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(size), 3))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), "src.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := content.BuildFile(p, "", sliceSize)
	if err != nil {
		t.Fatal(err)
	}
	src, err := store.OpenSource(p, store.Layout{Size: m.Size, SliceSize: m.SliceSize}, m.Verify)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return p, data, m, src
}

func openStore(t *testing.T, m *content.Manifest) *store.Store {
	t.Helper()
	st, err := store.Open(store.ForManifest(t.TempDir(), m))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func checkOutput(t *testing.T, st *store.Store, want []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.bin")
	if err := st.Finalize(out); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("output differs")
	}
}

func TestMulticastNoLoss(t *testing.T) {
	_, data, m, src := fixture(t, 3<<20+777, 256<<10)
	d := mcasttest.NewDomain(1500)
	tx, rx := d.Join(0, 1, 1<<16), d.Join(0, 2, 1<<16)
	st := openStore(t, m)
	recv, err := mcast.NewReceiver(rx, m, st, mcast.DefaultReceiverConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- recv.Run(ctx) }()
	snd, err := mcast.NewSender(tx, m, mcast.DefaultSenderConfig(1<<30))
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.SendAll(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := recv.Stats(); s.BytesNew != m.Size || s.LostReports != 0 || s.Corrupt != 0 {
		t.Fatalf("stats %+v", s)
	}
	checkOutput(t, st, data)
}

// TestMulticastLossWithRepair: 5% of datagrams lost; the receiver reports the slices it lost
// and they are repaired (here straight from the source's store, standing in for peers).
func TestMulticastLossWithRepair(t *testing.T) {
	_, data, m, src := fixture(t, 8<<20+5, 256<<10)
	d := mcasttest.NewDomain(1500)
	tx := d.Join(0, 1, 16)
	rx := d.Join(0.05, 2, 1<<16)
	st := openStore(t, m)

	var mu sync.Mutex
	lost := map[int]bool{}
	idle := make(chan struct{}, 1)
	cfg := mcast.DefaultReceiverConfig()
	cfg.IdleTimeout = 200 * time.Millisecond
	cfg.OnLost = func(idx []int) {
		mu.Lock()
		defer mu.Unlock()
		for _, i := range idx {
			lost[i] = true
		}
	}
	cfg.OnIdle = func() {
		select {
		case idle <- struct{}{}:
		default:
		}
	}
	recv, err := mcast.NewReceiver(rx, m, st, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- recv.Run(ctx) }()
	snd, _ := mcast.NewSender(tx, m, mcast.DefaultSenderConfig(1<<30))
	if err := snd.SendAll(ctx, src); err != nil {
		t.Fatal(err)
	}
	// After the pass (END, or idle if every END is lost), every slice not stored is reported
	// lost. (An idle signal may also come earlier if the sender stalls: poll for the outcome.)
	allReported := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, i := range st.Missing() {
			if !lost[i] {
				return false
			}
		}
		return true
	}
	for !allReported() {
		select {
		case <-idle:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("missing slices never reported lost")
		}
	}
	mu.Lock()
	repair := len(lost)
	mu.Unlock()
	if repair == 0 {
		t.Fatal("5% datagram loss lost no slice: the fake is not lossy")
	}
	for _, i := range st.Missing() {
		b, err := src.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(i, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := recv.Stats()
	t.Logf("%d of %d slices by multicast, %d repaired; stats %+v", s.SlicesNew, m.NumSlices(), repair, s)
	if s.BytesNew >= m.Size || s.BytesNew == 0 {
		t.Fatalf("bytes by multicast %d of %d", s.BytesNew, m.Size)
	}
	checkOutput(t, st, data)
}

// TestMulticastForgedDatagramNeverStored: a member injects a datagram with the right tag and
// wrong bytes; the slice fails verification, is reported lost and is not stored.
func TestMulticastForgedDatagramNeverStored(t *testing.T) {
	_, _, m, src := fixture(t, 64<<10, content.MinSliceSize)
	d := mcasttest.NewDomain(1500)
	tx, rx := d.Join(0, 1, 1<<12), d.Join(0, 2, 1<<12)
	st := openStore(t, m)
	lost := make(chan []int, 100)
	cfg := mcast.DefaultReceiverConfig()
	cfg.OnLost = func(idx []int) { lost <- idx }
	recv, _ := mcast.NewReceiver(rx, m, st, cfg, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	go recv.Run(ctx)

	// Slice 0 with every byte flipped, sent by a sender that believes it is valid.
	good, _ := src.Get(0)
	bad := append([]byte(nil), good...)
	for i := range bad {
		bad[i] ^= 0xff
	}
	snd, _ := mcast.NewSender(tx, m, mcast.DefaultSenderConfig(1<<30))
	if err := snd.SendSlice(ctx, 0, bad); err != nil {
		t.Fatal(err)
	}
	select {
	case idx := <-lost:
		if len(idx) != 1 || idx[0] != 0 {
			t.Fatalf("lost %v", idx)
		}
	case <-ctx.Done():
		t.Fatal("corrupt slice not reported")
	}
	if st.Has(0) || recv.Stats().Corrupt != 1 {
		t.Fatalf("forged slice stored: %+v", recv.Stats())
	}
	// The genuine slice is still accepted afterwards.
	if err := snd.SendSlice(ctx, 0, good); err != nil {
		t.Fatal(err)
	}
	for !st.Has(0) {
		select {
		case <-ctx.Done():
			t.Fatal("genuine slice not stored")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestSenderPacing checks only a lower bound: at rate R, N bytes beyond the burst cannot leave
// faster than (N-burst)/R.
func TestSenderPacing(t *testing.T) {
	_, _, m, src := fixture(t, 256<<10, content.MinSliceSize)
	d := mcasttest.NewDomain(1500)
	tx := d.Join(0, 1, 1)
	cfg := mcast.DefaultSenderConfig(1 << 20) // 1 MiB/s
	cfg.Burst = 64 << 10
	snd, _ := mcast.NewSender(tx, m, cfg)
	start := time.Now()
	if err := snd.SendAll(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	sent := snd.Stats().Bytes
	if min := time.Duration(float64(sent-int64(cfg.Burst)) / float64(cfg.Rate) * float64(time.Second)); el < min*9/10 {
		t.Fatalf("%d bytes in %v: faster than the rate allows (%v)", sent, el, min)
	}
	if sent < m.Size || snd.Stats().Datagrams < int64(m.Size/(mcast.DefaultDatagram-mcast.HeaderSize)) {
		t.Fatalf("stats %+v", snd.Stats())
	}
}

func TestMalformedDatagramsIgnored(t *testing.T) {
	_, _, m, _ := fixture(t, 64<<10, content.MinSliceSize)
	d := mcasttest.NewDomain(1500)
	tx, rx := d.Join(0, 1, 64), d.Join(0, 2, 64)
	st := openStore(t, m)
	recv, _ := mcast.NewReceiver(rx, m, st, mcast.DefaultReceiverConfig(), nil)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	for _, b := range [][]byte{nil, []byte("RM"), bytes.Repeat([]byte{0xff}, 100), append([]byte("RM\x01\x01"), make([]byte, 40)...)} {
		tx.Send(ctx, b)
	}
	err := recv.Run(ctx)
	if err == nil || st.Count() != 0 {
		t.Fatalf("run: %v, stored %d", err, st.Count())
	}
	if s := recv.Stats(); s.Foreign+s.Malformed != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDemuxTwoContents: two receivers share one port through a Demux; each completes its own
// content from interleaved multicasts.
func TestDemuxTwoContents(t *testing.T) {
	_, data1, m1, src1 := fixture(t, 1<<20+3, content.MinSliceSize*4)
	_, data2, m2, src2 := fixture(t, 1<<20+77, content.MinSliceSize*4)
	d := mcasttest.NewDomain(1500)
	tx1, tx2, rx := d.Join(0, 1, 16), d.Join(0, 2, 16), d.Join(0, 3, 1<<16)
	dm := mcast.NewDemux(rx, 1<<14)
	defer dm.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var stores []*store.Store
	var wants [][]byte
	for _, c := range []struct {
		m    *content.Manifest
		src  *store.Store
		tx   *mcasttest.Port
		want []byte
	}{{m1, src1, tx1, data1}, {m2, src2, tx2, data2}} {
		st := openStore(t, c.m)
		stores, wants = append(stores, st), append(wants, c.want)
		recv, err := mcast.NewReceiver(dm.Open(c.m.ID()), c.m, st, mcast.DefaultReceiverConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- recv.Run(ctx) }()
		snd, _ := mcast.NewSender(c.tx, c.m, mcast.DefaultSenderConfig(20<<20))
		wg.Go(func() {
			if err := snd.SendAll(ctx, c.src); err != nil {
				t.Error(err)
				return
			}
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i, st := range stores {
		checkOutput(t, st, wants[i])
	}
	if dm.Dropped.Load() != 0 {
		t.Errorf("dropped %d", dm.Dropped.Load())
	}
}

// memberPort is a port that records the receiving states it is set to.
type memberPort struct {
	*mcasttest.Port
	mu     sync.Mutex // guards states
	states []bool
}

func (p *memberPort) SetReceiving(on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.states = append(p.states, on)
	return nil
}

// TestDemuxMembership: a Demux over a Membership channel receives exactly while a sub-channel
// is open.
func TestDemuxMembership(t *testing.T) {
	_, _, m1, _ := fixture(t, 64<<10, content.MinSliceSize)
	_, _, m2, _ := fixture(t, 64<<10+1, content.MinSliceSize)
	p := &memberPort{Port: mcasttest.NewDomain(1500).Join(0, 1, 16)}
	dm := mcast.NewDemux(p, 16)
	defer dm.Close()
	check := func(want ...bool) {
		t.Helper()
		p.mu.Lock()
		defer p.mu.Unlock()
		if fmt.Sprint(p.states) != fmt.Sprint(want) {
			t.Fatalf("receiving set to %v, want %v", p.states, want)
		}
	}
	check(false)
	s1 := dm.Open(m1.ID())
	check(false, true)
	s2 := dm.Open(m2.ID())
	s1.Close()
	check(false, true)
	s2.Close()
	check(false, true, false)
}

// batchPort hands out the batches it is given, then blocks until ctx ends.
type batchPort struct {
	*mcasttest.Port
	batches chan [][]byte
}

func (p *batchPort) RecvBatch(ctx context.Context, b *mcast.Batch) error {
	select {
	case ds := <-p.batches:
		b.Reset()
		for _, d := range ds {
			b.Append(d)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestDemuxQueueMemory: a sub-channel nobody reads queues at most its bound of datagrams, in
// at most 2 KiB of buffer each, while big and single-datagram batches arrive (pooled buffers
// that held a big batch are trimmed: TestBatchTrim), and drops the rest.
func TestDemuxQueueMemory(t *testing.T) {
	_, _, m, _ := fixture(t, 64<<10, content.MinSliceSize)
	const queue = 256
	p := &batchPort{Port: mcasttest.NewDomain(1500).Join(0, 1, 16), batches: make(chan [][]byte)}
	dm := mcast.NewDemux(p, queue)
	defer dm.Close()
	sub := dm.Open(m.ID())
	defer sub.Close()
	dg := func(i int) []byte {
		b := make([]byte, 1400)
		copy(b, "RM\x01\x01")
		id := m.ID()
		copy(b[4:12], id[:8])
		b[12] = byte(i)
		return b
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	send := func(ds [][]byte) {
		select {
		case p.batches <- ds:
		case <-ctx.Done():
			t.Fatal("demux did not take a batch")
		}
	}
	big := make([][]byte, 44)
	for i := range big {
		big[i] = dg(i)
	}
	send(big) // 44 queued
	for i := range 2 * queue {
		send([][]byte{dg(i)})
		if i == queue {
			send(big) // dropped: its big buffer goes back to the pool for the singles
		}
	}
	send([][]byte{dg(0)}) // the reader has handled everything before it once this one is taken
	n, bytes := sub.Queued()
	if d := dm.Dropped.Load(); n != queue || d < 44+2*queue+44-queue || d > 44+2*queue+44+1-queue { // the last single may be pending
		t.Fatalf("queued %d, dropped %d: want %d queued and the rest dropped", n, dm.Dropped.Load(), queue)
	}
	if bytes > queue*2048 {
		t.Fatalf("%d datagrams queued in %d bytes of buffers, more than 2 KiB each", n, bytes)
	}
}

// TestDemuxWaitsForReader: a full queue whose receiver reads, slowly, holds the Demux back
// (the channel below it keeps the backlog) and loses nothing; a full queue nobody reads drops
// at once and does not hold back the other content.
func TestDemuxWaitsForReader(t *testing.T) {
	_, _, m1, _ := fixture(t, 64<<10, content.MinSliceSize)
	_, _, m2, _ := fixture(t, 64<<10+1, content.MinSliceSize)
	const queue, n = 8, 200
	p := &batchPort{Port: mcasttest.NewDomain(1500).Join(0, 1, 16), batches: make(chan [][]byte)}
	dm := mcast.NewDemux(p, queue)
	defer dm.Close()
	read, idle := dm.Open(m1.ID()), dm.Open(m2.ID())
	defer read.Close()
	defer idle.Close()
	dg := func(id content.ID, i int) []byte {
		b := make([]byte, 1400)
		copy(b, "RM\x01\x01")
		copy(b[4:12], id[:8])
		binary.BigEndian.PutUint32(b[12:], uint32(i))
		return b
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	got, first := make(chan []int, 1), make(chan struct{})
	go func() {
		var seen []int
		b := new(mcast.Batch)
		for len(seen) < n {
			if err := read.RecvBatch(ctx, b); err != nil {
				break
			}
			if len(seen) == 0 {
				close(first)
			}
			for i := range b.Len() {
				seen = append(seen, int(binary.BigEndian.Uint32(b.At(i)[12:])))
			}
			time.Sleep(2 * time.Millisecond) // slower than the sender: the queue fills
		}
		got <- seen
	}()
	for i := range n {
		select {
		case p.batches <- [][]byte{dg(m1.ID(), i), dg(m2.ID(), i)}:
		case <-ctx.Done():
			t.Fatal("demux did not take a batch")
		}
		if i == 0 {
			<-first // the receiver reads from now on
		}
	}
	seen := <-got
	if len(seen) != n {
		t.Fatalf("the reading receiver got %d datagrams of %d", len(seen), n)
	}
	for i, v := range seen {
		if v != i {
			t.Fatalf("datagram %d is %d: out of order", i, v)
		}
	}
	if q, _ := idle.Queued(); q != queue || dm.Dropped.Load() != n-queue {
		t.Fatalf("idle sub-channel queued %d, dropped %d: want %d queued and %d dropped", q, dm.Dropped.Load(), queue, n-queue)
	}
}
