package pipes

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Addr is the net.Addr of a bidirectional pipe end: a peer and a pipe ID.
type Addr struct {
	Peer peer.ID
	Pipe string
}

// Network returns "raftcast-pipe".
func (a Addr) Network() string { return "raftcast-pipe" }

// String returns "peer/pipe".
func (a Addr) String() string { return a.Peer.String() + "/" + a.Pipe }

// BidiConn is one end of a bidirectional pipe: a reliable, ordered, full-duplex channel over
// one libp2p stream, carried in length-prefixed frames of at most MaxFrameSize bytes.
//
// It is a net.Conn (Read/Write see a byte stream; frames are invisible) and also carries whole
// messages (WriteMsg/ReadMsg keep boundaries). Back-pressure is the stream's flow control;
// deadlines are the stream's. Do not mix Write and WriteMsg on a connection whose Write
// returned an error part-way, nor Read and ReadMsg in the middle of a message.
type BidiConn struct {
	s      *Service
	st     network.Stream
	local  Addr
	remote Addr
	chunk  int // largest frame this end writes

	rmu       sync.Mutex // guards r, remaining
	r         *bufio.Reader
	remaining int // bytes of the current incoming frame not yet read

	wmu  sync.Mutex // guards whdr, wrem, wbuf
	whdr []byte     // header bytes of the current outgoing frame not yet written
	wrem int        // payload bytes of the current outgoing frame not yet written
	wbuf []byte

	closeOnce sync.Once
}

var _ net.Conn = (*BidiConn)(nil)

// combineMax is the payload written in one stream write with its frame header.
const combineMax = 64 << 10

func newBidiConn(s *Service, st network.Stream, r *bufio.Reader, pipe string) *BidiConn {
	return &BidiConn{
		s: s, st: st, r: r,
		local:  Addr{Peer: s.self, Pipe: pipe},
		remote: Addr{Peer: st.Conn().RemotePeer(), Pipe: pipe},
		chunk:  min(s.cfg.MaxFrameSize, 1<<20),
		wbuf:   make([]byte, 0, combineMax+binary.MaxVarintLen64),
	}
}

// RemotePeer returns the peer at the other end.
func (c *BidiConn) RemotePeer() peer.ID { return c.remote.Peer }

// Read reads payload bytes across frame boundaries. A frame above MaxFrameSize resets the
// connection and returns an error wrapping ErrFrameTooLarge.
func (c *BidiConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for c.remaining == 0 {
		n, err := peekFrameLen(c.r, c.s.cfg.MaxFrameSize)
		if err != nil {
			return 0, c.readErr(err)
		}
		c.remaining = n
		c.s.stats.bidiFramesRecv.Add(1)
	}
	n, err := c.r.Read(p[:min(len(p), c.remaining)])
	c.remaining -= n
	c.s.stats.bidiRecvBytes.Add(uint64(n))
	if err == io.EOF && n == 0 {
		err = io.ErrUnexpectedEOF
	} else if err == io.EOF {
		err = nil
	}
	return n, err
}

// ReadMsg reads one whole message (the rest of the current frame if a Read stopped inside one).
func (c *BidiConn) ReadMsg() ([]byte, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.remaining == 0 {
		n, err := peekFrameLen(c.r, c.s.cfg.MaxFrameSize)
		if err != nil {
			return nil, c.readErr(err)
		}
		c.remaining = n
		c.s.stats.bidiFramesRecv.Add(1)
	}
	b := make([]byte, c.remaining)
	n, err := io.ReadFull(c.r, b)
	c.remaining -= n
	c.s.stats.bidiRecvBytes.Add(uint64(n))
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// readErr turns a framing error into a rejection (stream reset, counted); I/O errors, timeouts
// included, are returned as they are so net.Error still works.
func (c *BidiConn) readErr(err error) error {
	if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrMalformed) {
		c.s.rejectStream(c.st, err)
		return fmt.Errorf("pipes: bidi from %s: %w", c.remote.Peer, err)
	}
	return err
}

// Write writes p as one or more frames of at most min(MaxFrameSize, 1 MiB) bytes.
func (c *BidiConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(p)
}

func (c *BidiConn) writeLocked(p []byte) (int, error) {
	written := 0
	defer func() { c.s.stats.bidiSentBytes.Add(uint64(written)) }()
	for {
		if len(c.whdr) > 0 {
			n, err := c.st.Write(c.whdr)
			c.whdr = c.whdr[n:]
			if err != nil {
				return written, err
			}
		}
		if c.wrem > 0 {
			k := min(len(p), c.wrem)
			if k == 0 {
				return written, nil
			}
			n, err := c.st.Write(p[:k])
			written += n
			c.wrem -= n
			p = p[n:]
			if err != nil {
				return written, err
			}
			continue
		}
		if len(p) == 0 {
			return written, nil
		}
		// A new frame: its header and up to combineMax payload bytes go in one write.
		k := min(len(p), c.chunk)
		first := min(k, combineMax)
		buf := appendFrameHeader(c.wbuf[:0], k)
		hl := len(buf)
		buf = append(buf, p[:first]...)
		c.s.stats.bidiFramesSent.Add(1)
		n, err := c.st.Write(buf)
		hn := min(n, hl)
		pn := n - hn
		c.whdr = slices.Clone(buf[hn:hl])
		c.wrem = k - pn
		written += pn
		p = p[pn:]
		if err != nil {
			return written, err
		}
	}
}

// WriteMsg writes b as one message (frame); b must not exceed MaxFrameSize.
func (c *BidiConn) WriteMsg(b []byte) error {
	if len(b) > c.s.cfg.MaxFrameSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(b), c.s.cfg.MaxFrameSize)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.whdr) > 0 || c.wrem > 0 {
		return fmt.Errorf("pipes: WriteMsg after a partial Write: %w", ErrMalformed)
	}
	if len(b) == 0 {
		c.s.stats.bidiFramesSent.Add(1)
		_, err := c.st.Write([]byte{0})
		return err
	}
	saved := c.chunk
	c.chunk = len(b)
	_, err := c.writeLocked(b)
	c.chunk = saved
	return err
}

// CloseWrite half-closes the connection: the peer reads io.EOF after the data sent so far.
func (c *BidiConn) CloseWrite() error { return c.st.CloseWrite() }

// Close closes both directions; data already written is still delivered.
func (c *BidiConn) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.st.Close() })
	return err
}

// Reset aborts the connection in both directions.
func (c *BidiConn) Reset() error { return c.st.Reset() }

func (c *BidiConn) LocalAddr() net.Addr                { return c.local }
func (c *BidiConn) RemoteAddr() net.Addr               { return c.remote }
func (c *BidiConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *BidiConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *BidiConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

// peekFrameLen reads a frame length prefix without consuming anything until it is complete,
// so a read deadline in the middle of a header does not lose bytes.
func peekFrameLen(r *bufio.Reader, max int) (int, error) {
	for k := 1; k <= binary.MaxVarintLen64; k++ {
		b, err := r.Peek(k)
		if len(b) < k {
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if b[k-1] < 0x80 {
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return 0, fmt.Errorf("%w: length prefix overflows", ErrMalformed)
			}
			_, _ = r.Discard(k)
			if v > uint64(max) {
				return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, v, max)
			}
			return int(v), nil
		}
	}
	return 0, fmt.Errorf("%w: length prefix overflows", ErrMalformed)
}

// BidiListener accepts the connections of a bidirectional pipe bound on this node. It is a
// net.Listener.
type BidiListener struct {
	s    *Service
	spec PipeSpec
	ch   chan *BidiConn
	done chan struct{}
	once sync.Once
}

var _ net.Listener = (*BidiListener)(nil)

// ListenBidi binds the accepting end of a bidirectional pipe and publishes the binding.
func (s *Service) ListenBidi(ctx context.Context, spec PipeSpec) (*BidiListener, error) {
	spec.Kind = Bidi
	spec, err := spec.Normalize()
	if err != nil {
		return nil, err
	}
	l := &BidiListener{s: s, spec: spec, ch: make(chan *BidiConn, s.cfg.AcceptBacklog), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := s.bidi[spec.ID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s (%s)", ErrAlreadyBound, spec.Name, spec.ID)
	}
	s.bidi[spec.ID] = l
	s.mu.Unlock()
	if err := s.bind(ctx, spec); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}

// Spec returns the pipe's normalized spec.
func (l *BidiListener) Spec() PipeSpec { return l.spec }

// AcceptBidi waits for the next connection.
func (l *BidiListener) AcceptBidi(ctx context.Context) (*BidiConn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Accept waits for the next connection (net.Listener).
func (l *BidiListener) Accept() (net.Conn, error) {
	c, err := l.AcceptBidi(context.Background())
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Addr returns this node's end of the pipe.
func (l *BidiListener) Addr() net.Addr { return Addr{Peer: l.s.self, Pipe: l.spec.ID} }

// Close unbinds the pipe and resets connections not yet accepted.
func (l *BidiListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.s.mu.Lock()
		if l.s.bidi[l.spec.ID] == l {
			delete(l.s.bidi, l.spec.ID)
		}
		l.s.mu.Unlock()
		l.s.unbind(l.spec)
		for {
			select {
			case c := <-l.ch:
				_ = c.Reset()
			default:
				return
			}
		}
	})
	return nil
}

func (s *Service) handleBidi(st network.Stream) {
	r, h, ok := s.acceptHello(st)
	if !ok {
		return
	}
	s.mu.Lock()
	l := s.bidi[h.Pipe]
	s.mu.Unlock()
	if l == nil {
		s.refuseUnknown(st, h.Pipe)
		return
	}
	if len(l.ch) == cap(l.ch) {
		s.stats.bidiAcceptDropped.Add(1)
		_ = writeStatus(st, statusBusy, "accept backlog full")
		_ = st.Reset()
		return
	}
	if err := writeStatus(st, statusOK, ""); err != nil {
		_ = st.Reset()
		return
	}
	_ = st.SetDeadline(time.Time{})
	c := newBidiConn(s, st, r, h.Pipe)
	select {
	case l.ch <- c:
		s.stats.bidiAccepted.Add(1)
	case <-l.done:
		_ = st.Reset()
	default:
		s.stats.bidiAcceptDropped.Add(1)
		_ = st.Reset()
	}
}

// DialBidi opens a bidirectional connection to a peer bound to the pipe, trying bound peers in
// turn (connected ones first).
func (s *Service) DialBidi(ctx context.Context, spec PipeSpec) (*BidiConn, error) {
	spec.Kind = Bidi
	spec, err := spec.Normalize()
	if err != nil {
		return nil, err
	}
	var errs []error
	tried := make(map[peer.ID]bool)
	for _, fresh := range []bool{false, true} {
		peers, err := s.res.resolve(ctx, spec, fresh)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		peers = slices.Clone(peers)
		slices.SortStableFunc(peers, func(a, b peer.ID) int {
			ca := s.h.Network().Connectedness(a) == network.Connected
			cb := s.h.Network().Connectedness(b) == network.Connected
			switch {
			case ca && !cb:
				return -1
			case cb && !ca:
				return 1
			}
			return 0
		})
		for _, p := range peers {
			if tried[p] || p == s.self {
				continue
			}
			tried[p] = true
			st, r, _, err := s.openPipeStream(ctx, p, spec.ID, ProtocolBidi)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s.stats.bidiDialed.Add(1)
			return newBidiConn(s, st, r, spec.ID), nil
		}
		s.res.invalidate(spec.ID)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoListener, spec.Name)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoListener, errors.Join(errs...))
}
