package daemon

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/transfer/mcast"
)

// demuxQueue bounds the datagrams waiting for one subscriber; past it datagrams are dropped
// (and counted): the subscriber repairs from peers what it misses.
const demuxQueue = 16384

// mcastDemux shares the node's one native multicast data channel among several transfers:
// one reader hands every datagram to every subscriber (each keeps the content it wants).
type mcastDemux struct {
	ch *pipes.MulticastChannel

	mu      sync.Mutex // guards subs, started
	subs    map[*mcastSub]struct{}
	started bool

	dropped atomic.Uint64
}

func newMcastDemux(ch *pipes.MulticastChannel) *mcastDemux {
	return &mcastDemux{ch: ch, subs: map[*mcastSub]struct{}{}}
}

// subscribe returns a channel that sees every datagram from now until cancel.
func (d *mcastDemux) subscribe(ctx context.Context) (*mcastSub, func()) {
	s := &mcastSub{d: d, q: make(chan []byte, demuxQueue), done: make(chan struct{})}
	d.mu.Lock()
	d.subs[s] = struct{}{}
	if !d.started {
		d.started = true
		go d.read(context.WithoutCancel(ctx))
	}
	d.mu.Unlock()
	return s, func() {
		d.mu.Lock()
		delete(d.subs, s)
		d.mu.Unlock()
		s.once.Do(func() { close(s.done) })
	}
}

// read runs until the multicast channel closes (with the pipe service).
func (d *mcastDemux) read(ctx context.Context) {
	for {
		dg, err := d.ch.Recv(ctx)
		if err != nil {
			return
		}
		d.mu.Lock()
		for s := range d.subs {
			select {
			case s.q <- dg.Data:
			default:
				d.dropped.Add(1)
			}
		}
		d.mu.Unlock()
	}
}

// mcastSub is one subscriber; it implements mcast.Channel.
type mcastSub struct {
	d    *mcastDemux
	q    chan []byte
	done chan struct{}
	once sync.Once
}

var _ mcast.Channel = (*mcastSub)(nil)

func (s *mcastSub) MaxDatagram() int { return s.d.ch.MaxDatagram() }

func (s *mcastSub) Send(_ context.Context, p []byte) error {
	_, err := s.d.ch.Send(p)
	return err
}

func (s *mcastSub) Recv(ctx context.Context, buf []byte) (int, error) {
	select {
	case b := <-s.q:
		return copy(buf, b), nil
	case <-s.done:
		return 0, mcast.ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
