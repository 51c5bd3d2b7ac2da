package mcast

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftcast/raftcast/transfer/content"
)

// Demux shares one Channel among the receivers of several contents: it reads the channel in
// one goroutine and hands each datagram to the sub-channel of its content tag. Datagrams for
// content nobody opened are discarded (counted).
//
// A sub-channel's queue is bounded. When it is full and its receiver has started reading, the
// Demux waits for room (at most SubWait per batch) rather than dropping: it stops reading the
// channel, so the backlog builds up below it (for pipes, in the socket's receive buffer, not
// in this process), and other contents on the channel wait too (they share its link anyway).
// A full queue whose receiver has not asked for a batch within SubWait (not started, or done),
// or a wait that times out, drops (counted).
//
// When the channel is a Membership, the Demux receives only while a sub-channel is open: a
// node that gets nothing (a rendezvous, a source) does not take the stream in.
//
// Datagrams move in batches: when the channel is a BatchReceiver, what one read returns is
// split by content into one batch per sub-channel, so a receiver wakes once per batch, not
// once per datagram.
type Demux struct {
	ch    Channel
	queue int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reader

	pool sync.Pool // of *Batch

	mu   sync.Mutex // guards subs, err
	subs map[tag]*Sub
	err  error // set when the underlying channel failed: every Recv returns it

	memberMu sync.Mutex // guards member and serialises SetReceiving calls
	member   int        // the channel's receiving state: -1 unknown, 0 off, 1 on

	Unclaimed, Dropped atomic.Int64
}

// NewDemux starts reading ch. Each sub-channel buffers up to queue datagrams.
func NewDemux(ch Channel, queue int) *Demux {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Demux{ch: ch, queue: max(queue, 1), ctx: ctx, cancel: cancel, subs: make(map[tag]*Sub), member: -1}
	d.pool.New = func() any { return new(Batch) }
	d.updateMembership()
	d.wg.Go(d.read)
	return d
}

// updateMembership has a Membership channel receive exactly while a sub-channel is open.
func (d *Demux) updateMembership() {
	mc, ok := d.ch.(Membership)
	if !ok {
		return
	}
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	d.mu.Lock()
	want := 0
	if len(d.subs) > 0 {
		want = 1
	}
	d.mu.Unlock()
	if want != d.member && mc.SetReceiving(want == 1) == nil {
		d.member = want
	}
}

func (d *Demux) getBatch() *Batch {
	b := d.pool.Get().(*Batch)
	b.Reset()
	return b
}

func (d *Demux) read() {
	br, batched := d.ch.(BatchReceiver)
	in := new(Batch)
	var buf []byte
	if !batched {
		buf = make([]byte, 65536)
	}
	type out struct {
		s *Sub
		b *Batch
	}
	var outs []out
	for {
		var err error
		if batched {
			err = br.RecvBatch(d.ctx, in)
		} else {
			var n int
			if n, err = d.ch.Recv(d.ctx, buf); err == nil {
				in.Reset()
				in.Append(buf[:n])
			}
		}
		if err != nil {
			if d.ctx.Err() != nil {
				err = ErrClosed
			}
			d.mu.Lock()
			d.err = err
			for _, s := range d.subs {
				s.closeOnce.Do(func() { close(s.done) })
			}
			d.mu.Unlock()
			return
		}
		outs = outs[:0]
		d.mu.Lock()
		for i := range in.Len() {
			p := in.At(i)
			t, ok := tagOfDatagram(p)
			s := d.subs[t]
			if !ok || s == nil {
				d.Unclaimed.Add(1)
				continue
			}
			j := 0
			for j < len(outs) && outs[j].s != s {
				j++
			}
			if j == len(outs) {
				outs = append(outs, out{s, d.getBatch()})
			}
			outs[j].b.Append(p)
		}
		d.mu.Unlock()
		for _, o := range outs {
			o.s.push(d.ctx, o.b)
		}
		clear(outs)
	}
}

// tagOfDatagram returns the content tag of a well-formed datagram.
func tagOfDatagram(p []byte) (tag, bool) {
	if len(p) < HeaderSize || p[0] != 'R' || p[1] != 'M' || p[2] != version {
		return tag{}, false
	}
	return tag(p[4:12]), true
}

// Open returns the sub-channel of content id (replacing an earlier one for the same content).
func (d *Demux) Open(id content.ID) *Sub {
	s := &Sub{d: d, t: tagOf(id), q: make(chan *Batch, d.queue), room: make(chan struct{}, 1), done: make(chan struct{})}
	d.mu.Lock()
	if d.err != nil {
		close(s.done)
	}
	d.subs[s.t] = s
	d.mu.Unlock()
	d.updateMembership()
	return s
}

// Close stops reading and closes every sub-channel. It does not close the underlying channel.
func (d *Demux) Close() error {
	d.cancel()
	d.wg.Wait()
	return nil
}

// Sub is one content's view of a demultiplexed Channel; it implements Channel and
// BatchReceiver. It is meant to be read by one goroutine (a Receiver).
type Sub struct {
	d *Demux
	t tag
	// q is bounded: at most d.queue datagrams in it (queued), in at most
	// d.queue×queuedBytesPer bytes of batch buffers (queuedBytes).
	q           chan *Batch
	queued      atomic.Int64
	queuedBytes atomic.Int64
	lastRead    atomic.Int64  // when the receiver last asked for a batch (unix ns; 0 never)
	room        chan struct{} // signalled (capacity 1) when the receiver takes a batch
	done        chan struct{}
	closeOnce   sync.Once

	mu  sync.Mutex // guards cur, pos
	cur *Batch     // the batch Recv is taking datagrams from
	pos int
}

var (
	_ Channel       = (*Sub)(nil)
	_ BatchReceiver = (*Sub)(nil)
)

// queuedBytesPer is the buffer memory a queued datagram may take on average: a batch
// buffer from the pool keeps the capacity of the largest batch it held, so the queue counts
// buffer capacity as well as datagrams, and small batches are trimmed before they queue.
const queuedBytesPer = 2048

// SubWait bounds how long the Demux waits for room in a full sub-channel queue for one batch
// before it drops the batch.
const SubWait = time.Second

// push queues b (the reader's), waiting while the queue is full and its receiver reads; it
// drops b when the receiver has not read within SubWait, after SubWait, or when the
// sub-channel or ctx ends.
func (s *Sub) push(ctx context.Context, b *Batch) {
	b.trim()
	n, c := int64(b.Len()), int64(cap(b.buf))
	if !s.reserve(ctx, n, c) {
		s.d.Dropped.Add(n)
		s.d.pool.Put(b)
		return
	}
	select {
	case s.q <- b:
	default: // cannot happen: every queued batch holds at least one datagram
		s.queued.Add(-n)
		s.queuedBytes.Add(-c)
		s.d.Dropped.Add(n)
		s.d.pool.Put(b)
	}
}

// reserve takes room for n datagrams in c bytes of buffers (an empty queue always takes a
// batch), waiting as push says; false if it gave up.
func (s *Sub) reserve(ctx context.Context, n, c int64) bool {
	var deadline *time.Timer
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	for {
		qn, qc := s.queued.Add(n), s.queuedBytes.Add(c)
		if qn == n || (qn <= int64(s.d.queue) && qc <= int64(s.d.queue)*queuedBytesPer) {
			return true
		}
		s.queued.Add(-n)
		s.queuedBytes.Add(-c)
		if time.Since(time.Unix(0, s.lastRead.Load())) > SubWait {
			return false
		}
		if deadline == nil {
			deadline = time.NewTimer(SubWait)
		}
		select {
		case <-s.room:
		case <-deadline.C:
			return false
		case <-s.done:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// Queued returns the datagrams waiting for the reader and the buffer bytes holding them.
func (s *Sub) Queued() (datagrams int, bytes int64) {
	return int(s.queued.Load()), s.queuedBytes.Load()
}

// next waits for the next queued batch.
func (s *Sub) next(ctx context.Context) (*Batch, error) {
	s.lastRead.Store(time.Now().UnixNano())
	select {
	case b := <-s.q:
		s.queued.Add(-int64(b.Len()))
		s.queuedBytes.Add(-int64(cap(b.buf)))
		select {
		case s.room <- struct{}{}:
		default:
		}
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		s.d.mu.Lock()
		err := s.d.err
		s.d.mu.Unlock()
		if err == nil || errors.Is(err, ErrClosed) {
			err = ErrClosed
		}
		return nil, err
	}
}

// MaxDatagram implements Channel.
func (s *Sub) MaxDatagram() int { return s.d.ch.MaxDatagram() }

// UnfragmentedSize passes the underlying channel's through (DefaultDatagram if it has none).
func (s *Sub) UnfragmentedSize() int {
	if u, ok := s.d.ch.(interface{ UnfragmentedSize() int }); ok {
		return u.UnfragmentedSize()
	}
	return DefaultDatagram
}

// Send implements Channel: it sends on the underlying channel.
func (s *Sub) Send(ctx context.Context, p []byte) error { return s.d.ch.Send(ctx, p) }

// SendBatch implements BatchSender: it sends on the underlying channel.
func (s *Sub) SendBatch(ctx context.Context, ps [][]byte) error { return sendBatch(ctx, s.d.ch, ps) }

// Recv implements Channel.
func (s *Sub) Recv(ctx context.Context, buf []byte) (int, error) {
	for {
		s.mu.Lock()
		if s.cur != nil && s.pos < s.cur.Len() {
			n := copy(buf, s.cur.At(s.pos))
			s.pos++
			s.mu.Unlock()
			return n, nil
		}
		s.mu.Unlock()
		b, err := s.next(ctx)
		if err != nil {
			return 0, err
		}
		s.mu.Lock()
		if s.cur != nil && s.pos < s.cur.Len() { // another Recv got there first: keep the order
			for i := range b.Len() {
				s.cur.Append(b.At(i))
			}
			s.d.pool.Put(b)
		} else {
			if s.cur != nil {
				s.d.pool.Put(s.cur)
			}
			s.cur, s.pos = b, 0
		}
		s.mu.Unlock()
	}
}

// RecvBatch implements BatchReceiver.
func (s *Sub) RecvBatch(ctx context.Context, b *Batch) error {
	s.mu.Lock()
	if s.cur != nil && s.pos < s.cur.Len() { // left over by Recv
		b.Reset()
		for ; s.pos < s.cur.Len(); s.pos++ {
			b.Append(s.cur.At(s.pos))
		}
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	q, err := s.next(ctx)
	if err != nil {
		return err
	}
	*b, *q = *q, *b // hand over the queued buffers, recycle b's
	s.d.pool.Put(q)
	return nil
}

// Close detaches the sub-channel from the demultiplexer.
func (s *Sub) Close() error {
	s.d.mu.Lock()
	if s.d.subs[s.t] == s {
		delete(s.d.subs, s.t)
	}
	s.d.mu.Unlock()
	s.closeOnce.Do(func() { close(s.done) })
	s.d.updateMembership()
	return nil
}
