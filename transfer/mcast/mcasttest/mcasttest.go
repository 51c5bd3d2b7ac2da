// Package mcasttest provides an in-memory multicast domain with loss, for tests of code that
// uses mcast.Channel.
package mcasttest

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/raftcast/raftcast/transfer/mcast"
)

// Domain is an in-memory multicast domain: a datagram sent by one port reaches every other
// port, each independently lost with the port's loss probability.
type Domain struct {
	maxDatagram int

	mu    sync.Mutex // guards ports
	ports []*Port
}

// NewDomain returns a domain whose ports accept datagrams up to maxDatagram bytes.
func NewDomain(maxDatagram int) *Domain { return &Domain{maxDatagram: maxDatagram} }

// Port is one member's channel into a Domain. It implements mcast.Channel.
type Port struct {
	d     *Domain
	queue chan []byte // bounded; full means dropped

	rngMu sync.Mutex // guards rng
	rng   *rand.Rand
	loss  float64

	closeOnce sync.Once
	closed    chan struct{}

	Received, Lost, Overflow atomic.Int64
}

var (
	_ mcast.Channel       = (*Port)(nil)
	_ mcast.BatchSender   = (*Port)(nil)
	_ mcast.BatchReceiver = (*Port)(nil)
)

// Join adds a port that loses each incoming datagram with probability loss (deterministic for
// a seed) and buffers up to queue datagrams.
func (d *Domain) Join(loss float64, seed uint64, queue int) *Port {
	p := &Port{d: d, queue: make(chan []byte, queue), rng: rand.New(rand.NewPCG(seed, seed^0xabcdef)), loss: loss, closed: make(chan struct{})}
	d.mu.Lock()
	d.ports = append(d.ports, p)
	d.mu.Unlock()
	return p
}

// MaxDatagram implements mcast.Channel.
func (p *Port) MaxDatagram() int { return p.d.maxDatagram }

// Send implements mcast.Channel: it never blocks; full queues drop.
func (p *Port) Send(ctx context.Context, b []byte) error {
	select {
	case <-p.closed:
		return mcast.ErrClosed
	default:
	}
	if len(b) > p.d.maxDatagram {
		return nil // too big: lost, as on a real network
	}
	p.d.mu.Lock()
	ports := append([]*Port(nil), p.d.ports...)
	p.d.mu.Unlock()
	for _, q := range ports {
		if q == p {
			continue
		}
		q.deliver(b)
	}
	return ctx.Err()
}

func (p *Port) deliver(b []byte) {
	p.rngMu.Lock()
	lost := p.rng.Float64() < p.loss
	p.rngMu.Unlock()
	if lost {
		p.Lost.Add(1)
		return
	}
	select {
	case p.queue <- append([]byte(nil), b...):
		p.Received.Add(1)
	default:
		p.Overflow.Add(1)
	}
}

// Recv implements mcast.Channel.
func (p *Port) Recv(ctx context.Context, buf []byte) (int, error) {
	select {
	case b := <-p.queue:
		return copy(buf, b), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-p.closed:
		return 0, mcast.ErrClosed
	}
}

// SendBatch implements mcast.BatchSender: Send for each datagram.
func (p *Port) SendBatch(ctx context.Context, bs [][]byte) error {
	for _, b := range bs {
		if err := p.Send(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// RecvBatch implements mcast.BatchReceiver: it waits for one datagram, then takes those
// already queued (at most 64).
func (p *Port) RecvBatch(ctx context.Context, b *mcast.Batch) error {
	select {
	case d := <-p.queue:
		b.Reset()
		b.Append(d)
	case <-ctx.Done():
		return ctx.Err()
	case <-p.closed:
		return mcast.ErrClosed
	}
	for b.Len() < 64 {
		select {
		case d := <-p.queue:
			b.Append(d)
		default:
			return nil
		}
	}
	return nil
}

// Close leaves the domain.
func (p *Port) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	for i, q := range p.d.ports {
		if q == p {
			p.d.ports = append(p.d.ports[:i], p.d.ports[i+1:]...)
			break
		}
	}
	return nil
}
