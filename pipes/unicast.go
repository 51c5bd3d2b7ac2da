package pipes

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// OutputPipe is the output end of a unicast or propagate pipe.
type OutputPipe interface {
	// Spec returns the pipe's normalized spec.
	Spec() PipeSpec
	// Send sends one message (b is copied). Unicast: it queues b in the send window and
	// returns; it blocks while the window is full (back-pressure) and fails with an error
	// wrapping ErrNoListener if ctx ends while no bound peer is reachable. Propagate: it signs
	// and sends b to every bound peer now, by multicast and/or gossipsub.
	Send(ctx context.Context, b []byte) error
	// SendNoCopy is Send without the copy, for data that does not change (slices of a stored
	// file, one buffer sent on several pipes): a unicast pipe keeps b itself and reads it
	// until a bound peer acknowledges the message, writing it again to the next bound peer on
	// failover. The caller must not modify b after the call until Flush has returned nil or
	// Close has returned (simplest: never). Propagate pipes treat it as Send.
	SendNoCopy(ctx context.Context, b []byte) error
	// Flush waits until every message sent so far is acknowledged by a bound peer (unicast);
	// propagate pipes return at once.
	Flush(ctx context.Context) error
	// Delivered returns the number of messages acknowledged by bound peers (unicast) or sent
	// (propagate).
	Delivered() uint64
	// Close closes the output end; unacknowledged unicast messages are dropped (Flush first).
	Close() error
}

// unicastOut is the output end of a unicast pipe. One writer goroutine owns the connection to
// the current bound peer; an ack reader per stream releases acknowledged messages.
//
// Flow: Send copies the message, already framed, into a pooled buffer, appends it to queue and
// wakes the writer; the writer connects (resolving bindings, trying bound peers in turn),
// writes queue[sent:] and flushes; acks drop messages from the head of queue and recycle
// their buffers. When the stream fails, every queued message (sent but unacknowledged
// included) is written again to the next bound peer.
type unicastOut struct {
	s      *Service
	spec   PipeSpec
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // capacity 1: work for the writer

	delivered atomic.Uint64

	mu      sync.Mutex // guards queue, sent, writing, bytes, conn, lastErr, closed, changed, failed
	queue   []outMsg   // unacknowledged messages, oldest first
	sent    int        // queue[:sent] were written (or are being written) on conn
	writing bool       // the writer is writing a batch on conn
	bytes   int        // payload bytes in queue
	conn    *uniConn
	lastErr error
	closed  bool
	changed chan struct{} // closed and replaced when room frees up or the connection changes
	failed  map[peer.ID]time.Time

	batch []outMsg // the writer goroutine's copy of the messages it is writing (run only)
}

// outMsg is one message an output end holds until a bound peer acknowledges it. A message
// given to Send is copied into a buffer from Service.bufs behind frameHeadroom bytes where
// the writer puts its length prefix, so that a large message goes to the stream in one write
// with no further copy, to one peer or, after a failover, to the next. A message given to
// SendNoCopy is the caller's slice (data).
type outMsg struct {
	buf  []byte // Send: headroom and payload, pooled; nil for SendNoCopy
	data []byte // SendNoCopy: the caller's payload
	n    int    // payload bytes
}

// frameHeadroom is the room for a length prefix before a copied message's payload.
const frameHeadroom = binary.MaxVarintLen64

func (m outMsg) payload() []byte {
	if m.buf != nil {
		return m.buf[frameHeadroom : frameHeadroom+m.n]
	}
	return m.data
}

// recycle hands a copied message's buffer back to the pool (m must not be used afterwards).
func (m outMsg) recycle(p *bufPool) {
	if m.buf != nil {
		p.put(m.buf)
	}
}

// uniConn is the output end's connection to one bound peer: a stream, or the local input end
// when this node is the bound peer.
type uniConn struct {
	peer  peer.ID
	st    network.Stream
	w     *bufio.Writer
	r     *bufio.Reader
	local *InputPipe
	acks  bool   // the stream speaks ProtocolUnicast: message frames can ask for an ack at once
	acked uint64 // messages acknowledged on this connection; guarded by unicastOut.mu
	// started counts the messages whose writing began on this connection, wrote those wholly
	// handed to the stream. A peer that acknowledges more than started is broken; one message
	// acknowledged between the two (its last bytes arrived before the write returned) is
	// released to the garbage collector rather than to the pool, so a buffer is never
	// recycled while it is being written.
	started, wrote atomic.Uint64
}

var _ OutputPipe = (*unicastOut)(nil)

func newUnicastOut(s *Service, spec PipeSpec) *unicastOut {
	ctx, cancel := context.WithCancel(s.ctx)
	o := &unicastOut{
		s: s, spec: spec, ctx: ctx, cancel: cancel,
		wake:    make(chan struct{}, 1),
		changed: make(chan struct{}),
		failed:  make(map[peer.ID]time.Time),
	}
	o.goFunc(o.run)
	return o
}

func (o *unicastOut) goFunc(f func()) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		f()
	}()
}

func (o *unicastOut) Spec() PipeSpec    { return o.spec }
func (o *unicastOut) Delivered() uint64 { return o.delivered.Load() }

func (o *unicastOut) Send(ctx context.Context, b []byte) error {
	if len(b) > o.s.cfg.MaxFrameSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(b), o.s.cfg.MaxFrameSize)
	}
	buf := o.s.bufs.get(frameHeadroom + len(b))
	copy(buf[frameHeadroom:], b)
	return o.enqueue(ctx, outMsg{buf: buf, n: len(b)})
}

func (o *unicastOut) SendNoCopy(ctx context.Context, b []byte) error {
	if len(b) > o.s.cfg.MaxFrameSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(b), o.s.cfg.MaxFrameSize)
	}
	return o.enqueue(ctx, outMsg{data: b, n: len(b)})
}

// enqueue appends m to the send window, waiting for room, and wakes the writer.
func (o *unicastOut) enqueue(ctx context.Context, m outMsg) error {
	o.mu.Lock()
	for !o.closed && len(o.queue) > 0 &&
		(len(o.queue) >= o.s.cfg.WindowMessages || o.bytes+m.n > o.s.cfg.WindowBytes) {
		ch, last := o.changed, o.lastErr
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			m.recycle(&o.s.bufs)
			return waitErr(ctx, last)
		case <-o.ctx.Done():
			m.recycle(&o.s.bufs)
			return ErrClosed
		}
		o.mu.Lock()
	}
	if o.closed {
		o.mu.Unlock()
		m.recycle(&o.s.bufs)
		return ErrClosed
	}
	o.queue = append(o.queue, m)
	o.bytes += m.n
	o.mu.Unlock()
	o.signal()
	return nil
}

func (o *unicastOut) Flush(ctx context.Context) error {
	o.mu.Lock()
	for !o.closed && len(o.queue) > 0 {
		ch, last := o.changed, o.lastErr
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return waitErr(ctx, last)
		case <-o.ctx.Done():
			return ErrClosed
		}
		o.mu.Lock()
	}
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return nil
}

func (o *unicastOut) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	c := o.conn
	o.conn = nil
	o.queue, o.bytes, o.sent = nil, 0, 0
	o.broadcastLocked()
	o.mu.Unlock()
	o.cancel()
	if c != nil && c.st != nil {
		_ = c.st.Reset() // unblocks a writer stuck on back-pressure
	}
	o.wg.Wait()
	o.s.removeOutput(o)
	return nil
}

func (o *unicastOut) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *unicastOut) broadcastLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// run is the writer goroutine.
func (o *unicastOut) run() {
	backoff := o.s.cfg.RetryMin
	idle := time.NewTimer(o.s.cfg.IdleTimeout)
	defer idle.Stop()
	for {
		o.mu.Lock()
		for !o.closed && (o.sent >= len(o.queue) || o.writing || o.conn == nil && len(o.queue) == 0) {
			o.mu.Unlock()
			select {
			case <-o.wake:
			case <-o.ctx.Done():
			case <-idle.C:
				o.mu.Lock()
				c := o.conn
				idleNow := c != nil && len(o.queue) == 0
				o.mu.Unlock()
				if idleNow {
					o.failConn(c, nil)
				}
			}
			o.mu.Lock()
		}
		if o.closed {
			o.mu.Unlock()
			return
		}
		c := o.conn
		o.mu.Unlock()

		if c == nil {
			nc, err := o.connect()
			if err != nil {
				o.mu.Lock()
				o.lastErr = err
				o.broadcastLocked()
				o.mu.Unlock()
				o.s.log.Debug("unicast pipe: no bound peer reachable", "pipe", o.spec.ID, "err", err, "retry", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-o.ctx.Done():
				}
				t.Stop()
				backoff = min(2*backoff, o.s.cfg.RetryMax)
				continue
			}
			backoff = o.s.cfg.RetryMin
			o.mu.Lock()
			if o.closed {
				o.mu.Unlock()
				if nc.st != nil {
					_ = nc.st.Reset()
				}
				return
			}
			o.conn, o.sent, o.lastErr = nc, 0, nil
			o.broadcastLocked()
			o.mu.Unlock()
			if nc.st != nil {
				o.goFunc(func() { o.readAcks(nc) })
			}
			continue
		}

		o.mu.Lock()
		if o.conn != c {
			o.mu.Unlock()
			continue
		}
		if o.writing || o.sent >= len(o.queue) {
			o.mu.Unlock()
			continue
		}
		o.batch = append(o.batch[:0], o.queue[o.sent:]...)
		o.sent = len(o.queue)
		o.writing = true
		o.mu.Unlock()
		err := o.write(c, o.batch)
		clear(o.batch) // drop references to buffers that acks may recycle
		o.mu.Lock()
		o.writing = false
		o.mu.Unlock()
		if err != nil {
			o.failConn(c, err)
		}
		idle.Reset(o.s.cfg.IdleTimeout)
	}
}

// write writes a batch of messages on c and flushes. Frames smaller than the write buffer go
// through it (small messages share stream writes); larger ones go to the stream directly: a
// copied message's frame in one write, a SendNoCopy message's payload after its length prefix
// and first noCopyPrefix bytes went through the buffer (no write of a few bytes alone). When
// nothing more is queued behind the batch, its last frame asks for an acknowledgement at
// once, so Flush does not wait for the receiver's timer.
func (o *unicastOut) write(c *uniConn, batch []outMsg) error {
	if c.local != nil {
		for _, m := range batch {
			msg := pooledMessage(&o.s.bufs, m.n)
			copy(msg.Data, m.payload())
			msg.Pipe, msg.From, msg.Carrier = o.spec.ID, o.s.self, CarrierLocal
			if !c.local.deliverWait(o.ctx, msg) {
				msg.Release()
				return fmt.Errorf("local input end: %w", ErrClosed)
			}
			o.s.stats.uniRecv.Add(1)
			o.s.stats.uniRecvBytes.Add(uint64(m.n))
			c.started.Add(1)
			c.wrote.Add(1)
			o.mu.Lock()
			a := c.acked + 1
			o.mu.Unlock()
			if err := o.ack(c, a); err != nil {
				return err
			}
		}
		return nil
	}
	var n, nb uint64
	defer func() {
		o.s.stats.uniSent.Add(n)
		o.s.stats.uniSentBytes.Add(nb)
	}()
	var hdr [binary.MaxVarintLen64]byte
	for i, m := range batch {
		ackNow := false
		if c.acks && i == len(batch)-1 {
			o.mu.Lock()
			ackNow = o.sent >= len(o.queue)
			o.mu.Unlock()
		}
		h := appendMsgPrefix(hdr[:0], m.n, c.acks, ackNow)
		c.started.Add(1)
		var err error
		if m.buf != nil {
			start := frameHeadroom - len(h)
			copy(m.buf[start:], h)
			err = writeWhole(c, m.buf[start:frameHeadroom+m.n])
		} else {
			err = writeNoCopy(c, h, m.data)
		}
		if err != nil {
			return err
		}
		c.wrote.Add(1)
		n++
		nb += uint64(m.n)
	}
	return c.w.Flush()
}

// noCopyPrefix is how much of a large SendNoCopy payload is copied behind its length prefix.
const noCopyPrefix = 4 << 10

// writeWhole writes a frame: through c.w when smaller than its buffer, else in one stream write.
func writeWhole(c *uniConn, frame []byte) error {
	if len(frame) < c.w.Size() {
		_, err := c.w.Write(frame)
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	_, err := c.st.Write(frame)
	return err
}

// writeNoCopy writes the frame of payload p behind length prefix hdr: small ones through c.w;
// for a large one the prefix and the first noCopyPrefix bytes through c.w, then the rest in one
// stream write.
func writeNoCopy(c *uniConn, hdr, p []byte) error {
	hl := len(hdr)
	head := p
	if hl+len(p) >= c.w.Size() {
		head = p[:min(len(p), noCopyPrefix)]
		if c.w.Available() < hl+len(head) {
			if err := c.w.Flush(); err != nil {
				return err
			}
		}
	}
	if _, err := c.w.Write(hdr); err != nil {
		return err
	}
	if _, err := c.w.Write(head); err != nil {
		return err
	}
	if len(head) == len(p) {
		return nil
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	_, err := c.st.Write(p[len(head):])
	return err
}

// readAcks reads the cumulative acknowledgements of one stream until it ends.
func (o *unicastOut) readAcks(c *uniConn) {
	for {
		v, err := binary.ReadUvarint(c.r)
		if err != nil {
			o.failConn(c, fmt.Errorf("stream to %s: %w", c.peer, err))
			return
		}
		if err := o.ack(c, v); err != nil {
			o.failConn(c, err)
			return
		}
	}
}

// ack records that c's peer has accepted k messages in total on this connection.
func (o *unicastOut) ack(c *uniConn, k uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn != c {
		return nil
	}
	if started := c.started.Load(); k < c.acked || k > started {
		return fmt.Errorf("%w: acknowledgement %d from %s, %d acknowledged and %d sent", ErrMalformed, k, c.peer, c.acked, started)
	}
	n := int(k - c.acked)
	if n == 0 {
		return nil
	}
	wrote := c.wrote.Load()
	for i := range n {
		o.bytes -= o.queue[i].n
		if c.acked+uint64(i) < wrote {
			o.queue[i].recycle(&o.s.bufs)
		}
		o.queue[i] = outMsg{}
	}
	o.queue = o.queue[n:]
	o.sent -= n
	c.acked = k
	o.delivered.Add(uint64(n))
	o.s.stats.uniAcked.Add(uint64(n))
	o.broadcastLocked()
	return nil
}

// failConn drops c (if still current): its unacknowledged messages go to the next bound peer.
// err == nil is a clean close (idle).
func (o *unicastOut) failConn(c *uniConn, err error) {
	o.mu.Lock()
	current := o.conn == c
	if current {
		o.conn, o.sent = nil, 0
		if err != nil {
			o.lastErr = err
			o.failed[c.peer] = o.s.now()
			o.s.stats.uniFailovers.Add(1)
			o.s.log.Debug("unicast pipe: bound peer failed", "pipe", o.spec.ID, "peer", c.peer, "unacked", len(o.queue), "err", err)
		}
		o.broadcastLocked()
	}
	o.mu.Unlock()
	if current {
		if err != nil {
			o.s.res.invalidate(o.spec.ID)
		}
		o.signal()
	}
	if c.st != nil {
		if err != nil || !current {
			_ = c.st.Reset()
		} else {
			_ = c.st.Close()
		}
	}
}

// connect resolves the bound peers and opens a connection to the first that accepts: peers
// that have not failed recently first (connected ones before others), this node last. When
// all fail it resolves afresh once and tries the peers it has not tried yet.
func (o *unicastOut) connect() (*uniConn, error) {
	peers, err := o.s.res.resolve(o.ctx, o.spec, false)
	if err != nil {
		return nil, err
	}
	tried := make(map[peer.ID]bool)
	var errs []error
	try := func(peers []peer.ID) *uniConn {
		for _, p := range o.order(peers) {
			if tried[p] {
				continue
			}
			tried[p] = true
			c, err := o.open(p)
			if err == nil {
				o.s.stats.uniOpened.Add(1)
				return c
			}
			errs = append(errs, err)
			o.mu.Lock()
			o.failed[p] = o.s.now()
			o.mu.Unlock()
		}
		return nil
	}
	if c := try(peers); c != nil {
		return c, nil
	}
	if peers, err = o.s.res.resolve(o.ctx, o.spec, true); err != nil {
		errs = append(errs, err)
	} else if c := try(peers); c != nil {
		return c, nil
	}
	if len(tried) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoListener, o.spec.Name)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoListener, errors.Join(errs...))
}

func (o *unicastOut) order(peers []peer.ID) []peer.ID {
	now := o.s.now()
	rank := func(p peer.ID) int {
		o.mu.Lock()
		t, failed := o.failed[p]
		o.mu.Unlock()
		switch {
		case failed && now.Sub(t) < o.s.cfg.FailedPeerTTL:
			return 3
		case p == o.s.self:
			return 2
		case o.s.h.Network().Connectedness(p) == network.Connected:
			return 0
		}
		return 1
	}
	out := slices.Clone(peers)
	slices.SortStableFunc(out, func(a, b peer.ID) int { return rank(a) - rank(b) })
	return out
}

func (o *unicastOut) open(p peer.ID) (*uniConn, error) {
	if p == o.s.self {
		in := o.s.input(o.spec.ID)
		if in == nil || in.spec.Kind != Unicast {
			return nil, fmt.Errorf("self: %w", ErrUnknownPipe)
		}
		return &uniConn{peer: p, local: in}, nil
	}
	st, r, w, err := o.s.openPipeStream(o.ctx, p, o.spec.ID, ProtocolUnicast, ProtocolUnicastV1)
	if err != nil {
		return nil, err
	}
	return &uniConn{peer: p, st: st, r: r, w: w, acks: st.Protocol() == ProtocolUnicast}, nil
}

// Receiver side.

// The receiver acknowledges after ackEveryMessages messages or ackEveryBytes bytes, and at
// once after a message whose frame asks for it (ProtocolUnicast: the sender has nothing more
// queued); on ProtocolUnicastV1 streams instead ackDelay after its read buffer ran dry with
// messages unacknowledged.
const (
	ackEveryMessages = 64
	ackEveryBytes    = 1 << 20
	ackDelay         = 2 * time.Millisecond
)

// acker writes the cumulative acknowledgements of one unicast stream.
type acker struct {
	st    network.Stream
	idle  time.Duration // read/write deadline extension per acknowledgement
	now   func() time.Time
	mu    sync.Mutex // guards count, acked, since, timer, done, buf and writes on st
	count uint64     // messages queued for Recv
	acked uint64     // last count sent
	since int        // bytes since the last acknowledgement
	timer *time.Timer
	done  bool
	buf   []byte
}

// received records one message of n bytes; ackNow acknowledges it at once.
func (a *acker) received(n int, ackNow bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.count++
	a.since += n
	if ackNow || a.count-a.acked >= ackEveryMessages || a.since >= ackEveryBytes {
		return a.flushLocked()
	}
	return nil
}

// dry schedules an acknowledgement of what is pending (the read buffer ran dry).
func (a *acker) dry() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.count == a.acked || a.done {
		return
	}
	if a.timer == nil {
		a.timer = time.AfterFunc(ackDelay, a.fire)
	} else {
		a.timer.Reset(ackDelay)
	}
}

func (a *acker) fire() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.done {
		_ = a.flushLocked()
	}
}

func (a *acker) flushLocked() error {
	if a.count == a.acked {
		return nil
	}
	_ = a.st.SetDeadline(a.now().Add(a.idle))
	a.buf = binary.AppendUvarint(a.buf[:0], a.count)
	if _, err := a.st.Write(a.buf); err != nil {
		return err
	}
	a.acked, a.since = a.count, 0
	return nil
}

// flush acknowledges everything received so far, now (the input pipe is closing).
func (a *acker) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.done {
		_ = a.flushLocked()
	}
}

func (a *acker) stop() {
	a.mu.Lock()
	a.done = true
	if a.timer != nil {
		a.timer.Stop()
	}
	a.mu.Unlock()
}

func (s *Service) handleUnicast(st network.Stream) {
	s.stats.uniAccepted.Add(1)
	r, h, ok := s.acceptHello(st)
	if !ok {
		return
	}
	p := s.input(h.Pipe)
	a := &acker{st: st, idle: s.cfg.IdleTimeout + s.cfg.HandshakeTimeout, now: s.now}
	if p == nil || p.spec.Kind != Unicast || !p.addStream(st, a.flush) {
		s.refuseUnknown(st, h.Pipe)
		return
	}
	defer p.removeStream(st)
	defer a.stop()
	if err := writeStatus(st, statusOK, ""); err != nil {
		_ = st.Reset()
		return
	}
	from := st.Conn().RemotePeer()
	_ = st.SetDeadline(s.now().Add(a.idle))
	fr := newFrameReader(st, r, s.cfg.StreamBuffer)
	acks := st.Protocol() == ProtocolUnicast
	for {
		if !acks && fr.Buffered() == 0 {
			a.dry()
		}
		n, ackNow, err := readMsgPrefix(fr, s.cfg.MaxFrameSize, acks)
		if err == io.EOF {
			a.stop()
			_ = st.Close()
			return
		}
		if err != nil {
			select {
			case <-p.done: // the input pipe closed this stream
				return
			default:
			}
			s.rejectStream(st, fmt.Errorf("pipes: unicast frame from %s: %w", from, err))
			return
		}
		// The message's buffer comes from the service's pool: a receiver that calls
		// Message.Release hands it back for a later message.
		m := pooledMessage(&s.bufs, n)
		if err := fr.readFull(m.Data); err != nil {
			m.Release()
			_ = st.Reset()
			return
		}
		m.Pipe, m.From, m.Carrier = h.Pipe, from, CarrierStream
		if !p.deliverWait(s.ctx, m) {
			m.Release()
			_ = st.Reset()
			return
		}
		s.stats.uniRecv.Add(1)
		s.stats.uniRecvBytes.Add(uint64(n))
		if err := a.received(n, ackNow); err != nil {
			_ = st.Reset()
			return
		}
	}
}
