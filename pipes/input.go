package pipes

import (
	"context"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Carrier says how a message reached this peer.
type Carrier uint8

// Carriers.
const (
	CarrierStream    Carrier = 1 + iota // a unicast stream
	CarrierMulticast                    // native UDP multicast
	CarrierGossip                       // gossipsub
	CarrierLocal                        // sent by this node to its own input end
)

func (c Carrier) String() string {
	switch c {
	case CarrierStream:
		return "stream"
	case CarrierMulticast:
		return "multicast"
	case CarrierGossip:
		return "gossipsub"
	case CarrierLocal:
		return "local"
	}
	return "unknown"
}

// Message is one message received on an input pipe.
type Message struct {
	Pipe    string  // pipe ID
	From    peer.ID // sender (verified for propagate messages and streams)
	Seq     uint64  // propagate: the sender's sequence number; unicast: 0
	Data    []byte  // owned by the receiver until it calls Release (if it ever does)
	Carrier Carrier

	buf  []byte   // the recyclable buffer under Data (nil if none)
	pool *bufPool // where buf goes back on Release
}

// Release hands m.Data back to the pipe service, which reuses its memory for a later message
// (unicast pipes: fewer allocations and a warm cache at high message rates). Calling it is
// optional: a receiver that keeps Data, or hands it on, just does not call it and the garbage
// collector frees it as usual.
//
// Ownership rule: after Release, m.Data and every slice of it belong to the service again and
// must not be read or written. Release each message at most once: Release clears m.Data, but
// a copy of m made before Release still points at the buffer, and releasing that copy too
// would give one buffer to two later messages. Release is a no-op for a message with no
// recyclable buffer (propagate messages, a zero Message).
func (m *Message) Release() {
	if m.buf != nil && m.pool != nil {
		m.pool.put(m.buf)
	}
	m.Data, m.buf, m.pool = nil, nil, nil
}

// pooledMessage returns a Message whose Data is n bytes of a buffer from pool, to be filled by
// the caller. Data's capacity is n, so appending to it never writes into the pooled buffer.
func pooledMessage(pool *bufPool, n int) Message {
	b := pool.get(n)
	return Message{Data: b[:n:n], buf: b, pool: pool}
}

// InputPipe is the bound input end of a unicast or propagate pipe.
type InputPipe struct {
	s    *Service
	spec PipeSpec
	q    chan Message
	done chan struct{}
	once sync.Once

	mu      sync.Mutex                // guards streams
	streams map[network.Stream]func() // feeding streams → what acknowledges what they delivered
}

func newInputPipe(s *Service, spec PipeSpec) *InputPipe {
	return &InputPipe{
		s: s, spec: spec,
		q:       make(chan Message, s.cfg.RecvQueue),
		done:    make(chan struct{}),
		streams: make(map[network.Stream]func()),
	}
}

// Spec returns the pipe's normalized spec.
func (p *InputPipe) Spec() PipeSpec { return p.spec }

// Recv returns the next message. After Close it returns the messages still buffered, then
// ErrClosed. The caller owns the message's Data; when done with it, it may hand the buffer
// back with Message.Release (see there for the rule).
func (p *InputPipe) Recv(ctx context.Context) (Message, error) {
	select {
	case m := <-p.q:
		return m, nil
	default:
	}
	select {
	case m := <-p.q:
		return m, nil
	case <-p.done:
		select {
		case m := <-p.q:
			return m, nil
		default:
		}
		return Message{}, ErrClosed
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// Close unbinds the input end: it withdraws the binding, resets the streams that feed it (their
// senders fail over with the unacknowledged messages) and stops propagate delivery.
func (p *InputPipe) Close() error {
	p.once.Do(func() {
		close(p.done)
		p.s.dropInput(p)
		p.s.unbind(p.spec)
		if p.spec.Kind == Propagate {
			p.s.prop.unlisten(p)
		}
		p.mu.Lock()
		streams := p.streams
		p.streams = nil
		p.mu.Unlock()
		for st, ack := range streams {
			// What was handed to this pipe counts as delivered: acknowledge it before
			// cutting the stream, or the sender would re-send it elsewhere.
			// A graceful close delivers the acknowledgement; a reset could drop it.
			if ack != nil {
				ack()
				_ = st.Close()
				continue
			}
			_ = st.Reset()
		}
	})
	return nil
}

// addStream registers a feeding stream and what flushes its acknowledgements; false if the
// pipe is closed.
func (p *InputPipe) addStream(st network.Stream, ack func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.streams == nil {
		return false
	}
	p.streams[st] = ack
	return true
}

func (p *InputPipe) removeStream(st network.Stream) {
	p.mu.Lock()
	if p.streams != nil {
		delete(p.streams, st)
	}
	p.mu.Unlock()
}

// deliverWait queues m, waiting for room (back-pressure); false if the pipe closed or ctx ended.
func (p *InputPipe) deliverWait(ctx context.Context, m Message) bool {
	select {
	case <-p.done:
		return false
	default:
	}
	select {
	case p.q <- m:
		return true
	case <-p.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// deliverNow queues m without waiting; false if the queue is full or the pipe closed.
func (p *InputPipe) deliverNow(m Message) bool {
	select {
	case <-p.done:
		return false
	default:
	}
	select {
	case p.q <- m:
		return true
	default:
		return false
	}
}
