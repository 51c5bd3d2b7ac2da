package pipes

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestSeqWindow(t *testing.T) {
	w := newSeqWindow(100) // rounded up to 128
	steps := []struct {
		seq  uint64
		want seqVerdict
	}{
		{1000, seqNew}, {1000, seqDup}, {999, seqNew}, {999, seqDup}, {1001, seqNew},
		{1001 - 127, seqNew}, {1001 - 128, seqOld}, {1200, seqNew}, {1001, seqOld},
		{1199, seqNew}, {1073, seqNew}, {1072, seqOld}, {5000, seqNew}, {1199, seqOld}, {4999, seqNew},
	}
	for i, s := range steps {
		if got := w.observe(s.seq); got != s.want {
			t.Fatalf("step %d: observe(%d) = %d, want %d", i, s.seq, got, s.want)
		}
	}
	// After a jump smaller than the window, slots in between are clear.
	w = newSeqWindow(64)
	w.observe(10)
	w.observe(5)
	w.observe(70) // clears 11..70 but keeps 10 (and 5 falls out: 70-5 >= 64)
	if w.observe(10) != seqDup || w.observe(5) != seqOld || w.observe(69) != seqNew {
		t.Fatal("window after a partial shift")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (func() error { c := DefaultConfig(); return c.validate() })(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	c := DefaultConfig()
	c.MaxPropagateSize = 0
	c.Multicast.Port = c.Multicast.DataPort
	c.WindowBytes = 10
	err := c.validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"MaxPropagateSize", "DataPort", "WindowBytes"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestSpecNormalize(t *testing.T) {
	s, err := PipeSpec{Name: "chat", Kind: Propagate}.Normalize()
	if err != nil || s.Group != DefaultGroup || s.ID != DerivePipeID(DefaultGroup, Propagate, "chat") {
		t.Fatalf("%+v %v", s, err)
	}
	if a, b := DerivePipeID("g", Unicast, "x"), DerivePipeID("g", Propagate, "x"); a == b {
		t.Fatal("kinds share an ID")
	}
	if _, err := (PipeSpec{Kind: Unicast}).Normalize(); !errors.Is(err, ErrBadSpec) {
		t.Fatalf("no name nor ID: %v", err)
	}
	if _, err := (PipeSpec{Name: "x"}).Normalize(); !errors.Is(err, ErrBadSpec) {
		t.Fatalf("no kind: %v", err)
	}
	back, err := SpecFromAdvert(s.Advert(true))
	if err != nil || back != s {
		t.Fatalf("advert round trip: %+v %v", back, err)
	}
}

func testSigner(t testing.TB, typ int) *signer {
	priv, _, err := crypto.GenerateKeyPair(typ, 2048)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(priv)
	sg, err := newSigner(id, priv)
	if err != nil {
		t.Fatal(err)
	}
	return sg
}

func TestSignedRoundTrip(t *testing.T) {
	for _, typ := range []int{crypto.Ed25519, crypto.ECDSA} {
		sg := testSigner(t, typ)
		b, err := sg.propagate("pipe-x", 42, []byte("payload"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := decodeSigned(b, 1<<20)
		if err != nil || m.Type != msgPropagate || m.Pipe != "pipe-x" || m.Seq != 42 || string(m.Payload) != "payload" || m.Sender != sg.self {
			t.Fatalf("decode: %+v %v", m, err)
		}
		if err := m.verify(); err != nil {
			t.Fatalf("verify (key type %d): %v", typ, err)
		}
		// Any flipped bit is caught: by the decoder or by the signature.
		for i := range b {
			c := bytes.Clone(b)
			c[i] ^= 0x01
			m, err := decodeSigned(c, 1<<20)
			if err == nil {
				err = m.verify()
			}
			if err == nil {
				t.Fatalf("flipped bit in byte %d accepted", i)
			}
		}
		bc, _ := sg.beacon(1234)
		m, err = decodeSigned(bc, 0)
		if err != nil || m.Type != msgBeacon || m.Seq != 1234 || m.verify() != nil {
			t.Fatalf("beacon: %+v %v", m, err)
		}
		// A beacon's signature does not verify as a propagate message (domain separation).
		m.Type = msgPropagate
		if m.verify() == nil {
			t.Fatal("beacon signature accepted for a propagate message")
		}
	}
	// Another peer's key claiming the sender is rejected.
	a, b := testSigner(t, crypto.ECDSA), testSigner(t, crypto.ECDSA)
	forged := &signer{self: a.self, priv: b.priv, key: b.key}
	msg, _ := forged.propagate("p", 1, nil)
	m, err := decodeSigned(msg, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.verify(); !errors.Is(err, ErrForged) {
		t.Fatalf("key of another peer: %v", err)
	}
}

func TestFrameLimits(t *testing.T) {
	r := bufio.NewReader(bytes.NewReader(appendFrameHeader(nil, 1000)))
	if _, err := readFrameLen(r, 999); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	r = bufio.NewReader(bytes.NewReader(bytes.Repeat([]byte{0x80}, 11)))
	if _, err := readFrameLen(r, 1<<30); !errors.Is(err, ErrMalformed) {
		t.Fatalf("overflow: %v", err)
	}
	r = bufio.NewReader(bytes.NewReader(bytes.Repeat([]byte{0x80}, 11)))
	if _, err := peekFrameLen(r, 1<<30); !errors.Is(err, ErrMalformed) {
		t.Fatalf("overflow (peek): %v", err)
	}
}

func FuzzDecodeSigned(f *testing.F) {
	sg := testSigner(f, crypto.Ed25519)
	p, _ := sg.propagate("pipe-a", 7, []byte("hello"))
	bc, _ := sg.beacon(99)
	f.Add(p)
	f.Add(bc)
	f.Add([]byte{1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeSigned(b, 1<<16)
		if err != nil {
			return
		}
		_ = m.verify()
	})
}

func FuzzHelloStatus(f *testing.F) {
	f.Add(hello{Version: 1, Pipe: "pipe-x"}.marshal())
	f.Add(status{Code: 1, Msg: "no"}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := unmarshalHello(b); err == nil {
			if h2, err := unmarshalHello(h.marshal()); err != nil || h2 != h {
				t.Fatalf("hello round trip: %+v %+v %v", h, h2, err)
			}
		}
		if s, err := unmarshalStatus(b); err == nil {
			if s2, err := unmarshalStatus(s.marshal()); err != nil || s2 != s {
				t.Fatalf("status round trip: %+v %+v %v", s, s2, err)
			}
		}
	})
}

func TestBufPool(t *testing.T) {
	var p bufPool
	for _, n := range []int{0, 1, 1024, 1025, 64 << 10, 4 << 20} {
		b := p.get(n)
		if len(b) != n {
			t.Fatalf("get(%d) has length %d", n, len(b))
		}
		p.put(b)
	}
	// A power of two and the same message with room for its length prefix share a class.
	for _, n := range []int{1 << 10, 64 << 10, 1 << 20, maxFrameLimit} {
		c1, ok1 := bufClass(n)
		c2, ok2 := bufClass(n + frameHeadroom)
		if !ok1 || !ok2 || c1 != c2 || classCap(c1) < n+frameHeadroom {
			t.Fatalf("%d bytes in class %d, its frame in class %d", n, c1, c2)
		}
		if c, _ := bufClass(n + bufSlack + 1); c != c1+1 {
			t.Fatalf("%d bytes in class %d, want %d", n+bufSlack+1, c, c1+1)
		}
	}
	// A recycled buffer comes back with the length asked for.
	b := p.get(5000)
	p.put(b)
	if b2 := p.get(6000); len(b2) != 6000 || cap(b2) != classCap(3) {
		t.Fatalf("get(6000): length %d, capacity %d", len(b2), cap(b2))
	}
	p.put(make([]byte, 8192)) // not from get: ignored
	big := p.get(200 << 20)   // above the classes: plain allocation
	if len(big) != 200<<20 {
		t.Fatal("big buffer")
	}
	p.put(big)
}

func TestMessageRelease(t *testing.T) {
	var p bufPool
	m := pooledMessage(&p, 3000)
	if len(m.Data) != 3000 || cap(m.Data) != 3000 {
		t.Fatalf("Data has length %d and capacity %d, want 3000 and 3000", len(m.Data), cap(m.Data))
	}
	if cap(m.buf) != classCap(2) {
		t.Fatalf("pooled buffer has capacity %d, want its class's %d", cap(m.buf), classCap(2))
	}
	// Appending to Data reallocates: it never writes into the rest of the pooled buffer.
	whole := m.buf[:cap(m.buf)]
	whole[3000] = 7
	d := append(m.Data, 1)
	if whole[3000] != 7 || &d[0] == &m.Data[0] {
		t.Fatal("append to Data wrote into the pooled buffer")
	}
	m.Release()
	if m.Data != nil || m.buf != nil {
		t.Fatal("Release left Data or the buffer set")
	}
	m.Release() // a second Release of the same variable is a no-op
	var zero Message
	zero.Release() // so is releasing a message without a pooled buffer
	plain := Message{Data: []byte("propagate")}
	plain.Release()
}

// frameReader returns every frame intact whatever the mix of sizes and however the stream
// cuts its reads, ends cleanly between frames and reports a frame cut short.
func TestFrameReader(t *testing.T) {
	sizes := []int{0, 1, 100, directReadMin - 1, directReadMin, 70000, 3, 5000, 200000, 17, 0, 64 << 10}
	var wire []byte
	for i, n := range sizes {
		wire = binary.AppendUvarint(wire, uint64(n))
		for j := range n {
			wire = append(wire, byte(i*31+j))
		}
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+err": iotest.DataErrReader,
	}
	for name, wrap := range readers {
		t.Run(name, func(t *testing.T) {
			st := wrap(bytes.NewReader(wire))
			// Start as handleUnicast does: some bytes already in the hello's buffered reader.
			br := bufio.NewReaderSize(st, 4096)
			if _, err := br.Peek(1); err != nil {
				t.Fatal(err)
			}
			f := newFrameReader(st, br, 4096)
			for i, n := range sizes {
				got, err := readFrameLen(f, 1<<20)
				if err != nil || got != n {
					t.Fatalf("frame %d: length %d, %v; want %d", i, got, err, n)
				}
				p := make([]byte, n)
				if err := f.readFull(p); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				for j := range p {
					if p[j] != byte(i*31+j) {
						t.Fatalf("frame %d: byte %d is %d, want %d", i, j, p[j], byte(i*31+j))
					}
				}
			}
			if _, err := readFrameLen(f, 1<<20); err != io.EOF {
				t.Fatalf("after the last frame: %v, want io.EOF", err)
			}
		})
	}
	// A payload cut short.
	cut := binary.AppendUvarint(nil, 10000)
	cut = append(cut, make([]byte, 6000)...)
	st := bytes.NewReader(cut)
	f := newFrameReader(st, bufio.NewReader(st), 4096)
	if n, err := readFrameLen(f, 1<<20); err != nil || n != 10000 {
		t.Fatalf("length %d, %v", n, err)
	}
	if err := f.readFull(make([]byte, 10000)); err != io.ErrUnexpectedEOF {
		t.Fatalf("payload cut short: %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestDataQueueWaits: a full data queue holds the reader back until the consumer takes a
// batch (an empty queue takes any batch), and gives up when the channel closes.
func TestDataQueueWaits(t *testing.T) {
	m := &multicast{cfg: MulticastConfig{DataQueue: 4}, dataQ: make(chan *DatagramBatch, 4),
		room: make(chan struct{}, 1), done: make(chan struct{})}
	c := &MulticastChannel{m: m}
	if !m.waitRoom(10) { // more than the bound, but the queue is empty
		t.Fatal("an empty queue refused a batch")
	}
	m.dataQ <- &DatagramBatch{Datagrams: make([]Datagram, 10)}
	got := make(chan bool, 1)
	go func() { got <- m.waitRoom(1) }()
	select {
	case ok := <-got:
		t.Fatalf("waitRoom returned %v with the queue full", ok)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := c.RecvBatch(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-got:
		if !ok || m.queued.Load() != 1 {
			t.Fatalf("after a take: waitRoom %v, %d queued; want true, 1", ok, m.queued.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitRoom still waiting after the consumer took the batch")
	}
	m.queued.Store(4)
	go func() { got <- m.waitRoom(1) }()
	close(m.done)
	select {
	case ok := <-got:
		if ok {
			t.Fatal("waitRoom reserved room after the channel closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitRoom still waiting after the channel closed")
	}
}
