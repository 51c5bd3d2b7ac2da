package swarm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/store"
)

// oneShot sends one request on a new stream and reads one response frame (at most maxLen
// payload bytes), honouring ctx.
func oneShot(ctx context.Context, h host.Host, p peer.ID, q wireReq, maxLen int) (wireHdr, []byte, error) {
	st, err := h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return wireHdr{}, nil, fmt.Errorf("swarm: open stream to %s: %w", p, err)
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if _, err := st.Write(q.append(nil)); err != nil {
		st.Reset()
		return wireHdr{}, nil, fmt.Errorf("swarm: send request to %s: %w", p, err)
	}
	_ = st.CloseWrite()
	var hb [hdrSize]byte
	br := bufio.NewReader(st)
	h0, err := readHdr(br, &hb)
	if err != nil {
		st.Reset()
		return wireHdr{}, nil, fmt.Errorf("swarm: read response from %s: %w", p, ctxErr(ctx, err))
	}
	if h0.status != stOK {
		st.Close()
		return h0, nil, statusErr(h0.status)
	}
	if int64(h0.length) > int64(maxLen) {
		st.Reset()
		return h0, nil, fmt.Errorf("%w: %d-byte response from %s (max %d)", ErrProtocol, h0.length, p, maxLen)
	}
	payload := make([]byte, h0.length)
	if _, err := io.ReadFull(br, payload); err != nil {
		st.Reset()
		return h0, nil, fmt.Errorf("swarm: read response from %s: %w", p, ctxErr(ctx, err))
	}
	st.Close()
	return h0, payload, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// FetchManifest asks p for the manifest of id. The bytes are checked against id (their hash)
// and decoded strictly (a manifest with an unsafe name is refused) before being returned.
func FetchManifest(ctx context.Context, h host.Host, p peer.ID, id content.ID) (*content.Manifest, error) {
	_, b, err := oneShot(ctx, h, p, wireReq{op: opManifest, id: id}, content.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	m, err := content.DecodeWithID(b, id)
	if err != nil {
		return nil, fmt.Errorf("swarm: manifest from %s: %w", p, err)
	}
	return m, nil
}

// FetchHave asks p which slices of m's content it holds.
func FetchHave(ctx context.Context, h host.Host, p peer.ID, m *content.Manifest) (store.Bitmap, error) {
	n := m.NumSlices()
	hd, b, err := oneShot(ctx, h, p, wireReq{op: opHave, id: m.ID()}, (n+7)/8)
	if err != nil {
		return store.Bitmap{}, err
	}
	if int(hd.index) != n {
		return store.Bitmap{}, fmt.Errorf("%w: have of %d slices, want %d", ErrProtocol, hd.index, n)
	}
	return store.BitmapFromBytes(n, b)
}

// Event kinds a conn reports to its session.
type evKind uint8

const (
	evDone      evKind = iota // slice received and verified (added tells whether it was new)
	evNotHave                 // peer does not hold the slice
	evElsewhere               // the seeding peer sent the slice to another peer: take it there
	evFailed                  // peer could not serve the slice (read error at its end)
	evCorrupt                 // slice failed verification
	evHave                    // have-bitmap received
	evNotFound                // peer does not know the content
	evDown                    // connection failed; everything in flight is lost
	evFatal                   // local failure (disk): the session must stop
	evPartBad                 // a slice completed from parts failed verification (blame decided later)
)

type event struct {
	c       *conn
	kind    evKind
	index   int
	n       int    // bytes of a slice received from the peer
	added   bool   // the slice was new to the store
	partial int    // opParts: bytes of the slice that were already there (from multicast)
	buf     []byte // evPartBad: the slice as completed with the peer's parts
	mask    uint32 // evPartBad: the parts the peer sent
	have    store.Bitmap
	err     error
}

type connReq struct {
	op           byte
	start, count int    // opParts: count is the mask of parts
	buf          []byte // opParts: the partial slice to complete
}

// conn is one pipelined stream to a peer. The writer goroutine opens the stream and writes
// requests; the reader goroutine reads the responses in order, verifies and stores slices,
// and reports events. Either failing takes the conn down (one evDown).
type conn struct {
	p       peer.ID
	ctl     bool // a control stream (have polls only)
	s       *Session
	reqs    chan connReq // to the writer; capacity bounds what may be queued
	pending chan connReq // written, awaiting a response, in order
	ready   chan struct{}
	st      network.Stream // set by the writer before ready is closed

	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
}

func newConn(s *Session, ctx context.Context, p peer.ID, capacity int) *conn {
	cctx, cancel := context.WithCancel(ctx)
	return &conn{
		p: p, s: s, ctx: cctx, cancel: cancel,
		reqs:    make(chan connReq, capacity),
		pending: make(chan connReq, capacity),
		ready:   make(chan struct{}),
	}
}

// send queues a request without blocking; false if the queue is full or the conn is done.
func (c *conn) send(r connReq) bool {
	if c.ctx.Err() != nil {
		return false
	}
	select {
	case c.reqs <- r:
		return true
	default:
		return false
	}
}

// down reports the conn's failure once and stops it.
func (c *conn) down(err error) {
	c.once.Do(func() {
		c.cancel()
		c.s.report(event{c: c, kind: evDown, err: err})
	})
}

// close stops the conn without reporting.
func (c *conn) close() {
	c.once.Do(c.cancel)
}

func (c *conn) writer() {
	dctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.DialTimeout)
	st, err := c.s.h.NewStream(network.WithAllowLimitedConn(dctx, "raftcast-transfer"), c.p, ProtocolID11, ProtocolID)
	cancel()
	if err != nil {
		c.down(fmt.Errorf("open stream: %w", err))
		close(c.ready)
		return
	}
	c.st = st
	close(c.ready)
	stop := context.AfterFunc(c.ctx, func() { st.Reset() })
	defer stop()
	bw := bufio.NewWriterSize(st, 4<<10)
	var buf [reqSize]byte
	id := c.s.m.ID()
	for {
		var r connReq
		select {
		case <-c.ctx.Done():
			return
		case r = <-c.reqs:
		}
		select {
		case c.pending <- r:
		case <-c.ctx.Done():
			return
		}
		_ = st.SetWriteDeadline(time.Now().Add(c.s.cfg.FrameTimeout))
		q := wireReq{op: r.op, id: id, start: uint32(r.start), count: uint32(r.count)}
		if _, err := bw.Write(q.append(buf[:0])); err != nil {
			c.down(fmt.Errorf("send request: %w", err))
			return
		}
		if len(c.reqs) == 0 {
			if err := bw.Flush(); err != nil {
				c.down(fmt.Errorf("send request: %w", err))
				return
			}
		}
	}
}

func (c *conn) reader() {
	select {
	case <-c.ready:
	case <-c.ctx.Done():
		return
	}
	if c.st == nil {
		return
	}
	br := bufio.NewReaderSize(c.st, 64<<10)
	m := c.s.m
	buf := make([]byte, m.SliceSize)
	var hb [hdrSize]byte
	for {
		var r connReq
		select {
		case <-c.ctx.Done():
			return
		case r = <-c.pending:
		}
		frames := 1
		switch r.op {
		case opSlices:
			frames = r.count
		case opParts:
			frames = bits.OnesCount32(uint32(r.count))
		}
		for k := 0; k < frames; k++ {
			_ = c.st.SetReadDeadline(time.Now().Add(c.s.cfg.FrameTimeout))
			h, err := readHdr(br, &hb)
			if err != nil {
				c.down(fmt.Errorf("read response: %w", err))
				return
			}
			rest, err := c.handle(r, k, h, br, buf)
			if err != nil {
				c.down(err)
				return
			}
			if rest {
				break
			}
		}
	}
}

// handle processes the k-th response frame to r. It reports whether that frame answered the
// rest of the request too, and returns an error if the conn must go down.
func (c *conn) handle(r connReq, k int, h wireHdr, br *bufio.Reader, buf []byte) (rest bool, err error) {
	m := c.s.m
	switch r.op {
	case opHave:
		if h.status == stNotFound {
			c.s.report(event{c: c, kind: evNotFound})
			return false, nil
		}
		if h.status != stOK {
			return false, statusErr(h.status)
		}
		n := m.NumSlices()
		if int(h.index) != n || int(h.length) != (n+7)/8 {
			return false, fmt.Errorf("%w: have frame of %d bytes for %d slices", ErrProtocol, h.length, h.index)
		}
		p := buf
		if int(h.length) > len(p) {
			p = make([]byte, h.length)
		}
		p = p[:h.length]
		if _, err := io.ReadFull(br, p); err != nil {
			return false, fmt.Errorf("read have: %w", err)
		}
		b, err := store.BitmapFromBytes(n, p)
		if err != nil {
			return false, err
		}
		c.s.report(event{c: c, kind: evHave, have: b})
		return false, nil
	case opSlices:
		want := r.start + k
		if h.status == stNotFound {
			// The peer does not know the content: one frame answers the whole run.
			for i := want; i < r.start+r.count; i++ {
				c.s.report(event{c: c, kind: evNotHave, index: i})
			}
			return true, nil
		}
		if int(h.index) != want {
			return false, fmt.Errorf("%w: got slice %d, expected %d", ErrProtocol, h.index, want)
		}
		switch h.status {
		case stOK:
		case stNotHave:
			c.s.report(event{c: c, kind: evNotHave, index: want})
			return false, nil
		case stElsewhere:
			c.s.report(event{c: c, kind: evElsewhere, index: want})
			return false, nil
		case stError:
			c.s.report(event{c: c, kind: evFailed, index: want})
			return false, nil
		default:
			return false, statusErr(h.status)
		}
		if int(h.length) > m.SliceSize {
			c.s.report(event{c: c, kind: evCorrupt, index: want})
			return false, fmt.Errorf("%w: %d-byte slice (slice size %d)", ErrProtocol, h.length, m.SliceSize)
		}
		p := buf[:h.length]
		if _, err := io.ReadFull(br, p); err != nil {
			return false, fmt.Errorf("read slice %d: %w", want, err)
		}
		added, err := c.s.st.Put(want, p)
		switch {
		case errors.Is(err, store.ErrCorrupt):
			c.s.report(event{c: c, kind: evCorrupt, index: want, err: err})
		case err != nil:
			c.s.report(event{c: c, kind: evFatal, index: want, err: err})
			return false, err
		default:
			c.s.report(event{c: c, kind: evDone, index: want, n: len(p), added: added})
		}
		return false, nil
	case opParts:
		return c.handlePart(r, k, h, br)
	}
	return false, fmt.Errorf("%w: response to unknown op %d", ErrProtocol, r.op)
}

// handlePart processes the k-th frame answering a parts request.
func (c *conn) handlePart(r connReq, k int, h wireHdr, br *bufio.Reader) (rest bool, err error) {
	i := r.start
	switch h.status {
	case stOK:
	case stNotFound, stNotHave:
		c.s.report(event{c: c, kind: evNotHave, index: i})
		return true, nil
	case stError:
		c.s.report(event{c: c, kind: evFailed, index: i})
		return true, nil
	default:
		return false, statusErr(h.status)
	}
	if int(h.index) != i {
		return false, fmt.Errorf("%w: got a part of slice %d, expected %d", ErrProtocol, h.index, i)
	}
	mask := uint32(r.count)
	for range k { // the k-th set bit is the part this frame carries
		mask &= mask - 1
	}
	part := bits.TrailingZeros32(mask)
	off, end := content.PartBounds(len(r.buf), part)
	if int(h.length) != end-off {
		return false, fmt.Errorf("%w: part %d of slice %d is %d bytes, want %d", ErrProtocol, part, i, h.length, end-off)
	}
	if _, err := io.ReadFull(br, r.buf[off:end]); err != nil {
		return false, fmt.Errorf("read part %d of slice %d: %w", part, i, err)
	}
	if k+1 < bits.OnesCount32(uint32(r.count)) {
		return false, nil
	}
	fetched := 0
	for p := 0; p < content.Parts; p++ {
		if uint32(r.count)&(1<<p) != 0 {
			a, b := content.PartBounds(len(r.buf), p)
			fetched += b - a
		}
	}
	added, err := c.s.st.Put(i, r.buf)
	switch {
	case errors.Is(err, store.ErrCorrupt):
		c.s.report(event{c: c, kind: evPartBad, index: i, err: err, buf: r.buf, mask: uint32(r.count)})
	case err != nil:
		c.s.report(event{c: c, kind: evFatal, index: i, err: err})
		return false, err
	default:
		c.s.report(event{c: c, kind: evDone, index: i, n: fetched, partial: len(r.buf) - fetched, added: added})
	}
	return false, nil
}
