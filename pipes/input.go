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
	Data    []byte  // owned by the receiver
	Carrier Carrier
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
// ErrClosed.
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
