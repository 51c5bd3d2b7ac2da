package mcast

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/raftcast/raftcast/transfer/content"
)

// Demux shares one Channel among the receivers of several contents: it reads the channel in
// one goroutine and hands each datagram to the sub-channel of its content tag. Datagrams for
// content nobody opened are discarded; a full sub-channel queue drops (both counted).
type Demux struct {
	ch    Channel
	queue int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reader

	mu   sync.Mutex // guards subs, err
	subs map[tag]*Sub
	err  error // set when the underlying channel failed: every Recv returns it

	Unclaimed, Dropped atomic.Int64
}

// NewDemux starts reading ch. Each sub-channel buffers up to queue datagrams.
func NewDemux(ch Channel, queue int) *Demux {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Demux{ch: ch, queue: max(queue, 1), ctx: ctx, cancel: cancel, subs: make(map[tag]*Sub)}
	d.wg.Go(d.read)
	return d
}

func (d *Demux) read() {
	buf := make([]byte, 65536)
	for {
		n, err := d.ch.Recv(d.ctx, buf)
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
		h, _, perr := parse(buf[:n])
		d.mu.Lock()
		s := d.subs[h.tag]
		d.mu.Unlock()
		if perr != nil || s == nil {
			d.Unclaimed.Add(1)
			continue
		}
		select {
		case s.q <- append([]byte(nil), buf[:n]...):
		default:
			d.Dropped.Add(1)
		}
	}
}

// Open returns the sub-channel of content id (replacing an earlier one for the same content).
func (d *Demux) Open(id content.ID) *Sub {
	s := &Sub{d: d, t: tagOf(id), q: make(chan []byte, d.queue), done: make(chan struct{})}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		close(s.done)
	}
	d.subs[s.t] = s
	return s
}

// Close stops reading and closes every sub-channel. It does not close the underlying channel.
func (d *Demux) Close() error {
	d.cancel()
	d.wg.Wait()
	return nil
}

// Sub is one content's view of a demultiplexed Channel; it implements Channel.
type Sub struct {
	d         *Demux
	t         tag
	q         chan []byte
	done      chan struct{}
	closeOnce sync.Once
}

var _ Channel = (*Sub)(nil)

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

// Recv implements Channel.
func (s *Sub) Recv(ctx context.Context, buf []byte) (int, error) {
	select {
	case b := <-s.q:
		return copy(buf, b), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.done:
		s.d.mu.Lock()
		err := s.d.err
		s.d.mu.Unlock()
		if err == nil || errors.Is(err, ErrClosed) {
			err = ErrClosed
		}
		return 0, err
	}
}

// Close detaches the sub-channel from the demultiplexer.
func (s *Sub) Close() error {
	s.d.mu.Lock()
	if s.d.subs[s.t] == s {
		delete(s.d.subs, s.t)
	}
	s.d.mu.Unlock()
	s.closeOnce.Do(func() { close(s.done) })
	return nil
}
