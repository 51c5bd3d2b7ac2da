package mcast

import (
	"context"
	"errors"
)

// Channel is a multicast data channel into one multicast domain: what the engine needs from
// native UDP multicast (provided by pipes) or from a fake in tests. Delivery is best effort:
// datagrams may be lost, duplicated or reordered, and a member may or may not receive its own.
type Channel interface {
	// MaxDatagram returns the largest datagram Send accepts.
	MaxDatagram() int
	// Send transmits one datagram to the members of the domain. A nil error does not mean
	// anyone received it. p may be reused once Send returns.
	Send(ctx context.Context, p []byte) error
	// Recv waits for the next datagram and copies it into buf, returning its length; a
	// datagram longer than buf is truncated. It returns ctx.Err() when ctx ends and
	// ErrClosed once the channel is closed.
	Recv(ctx context.Context, buf []byte) (int, error)
}

// ErrClosed is returned by a closed Channel.
var ErrClosed = errors.New("mcast: channel closed")

// BatchSender is a Channel that sends several datagrams per call (one sendmmsg system call
// for many). The Sender uses it when its channel has it.
type BatchSender interface {
	// SendBatch transmits the datagrams in order, as Send does each. The buffers may be
	// reused once it returns.
	SendBatch(ctx context.Context, ps [][]byte) error
}

// BatchReceiver is a Channel that hands over several datagrams per call: those that arrived
// together. The Receiver and the Demux use it when their channel has it.
type BatchReceiver interface {
	// RecvBatch waits for datagrams and replaces b's contents with those ready (at least
	// one). Errors are those of Recv.
	RecvBatch(ctx context.Context, b *Batch) error
}

// Batch is datagrams back to back in one buffer. Its zero value is empty and ready to use.
type Batch struct {
	buf  []byte
	ends []int // end of each datagram in buf
}

// Len returns the number of datagrams.
func (b *Batch) Len() int { return len(b.ends) }

// At returns datagram i; it aliases the batch until the batch is reset or appended to.
func (b *Batch) At(i int) []byte {
	start := 0
	if i > 0 {
		start = b.ends[i-1]
	}
	return b.buf[start:b.ends[i]:b.ends[i]]
}

// Size returns the bytes of all datagrams.
func (b *Batch) Size() int { return len(b.buf) }

// Reset empties the batch, keeping its buffers.
func (b *Batch) Reset() { b.buf, b.ends = b.buf[:0], b.ends[:0] }

// trim moves a few datagrams out of a buffer much larger than they need (a pooled batch's
// buffer keeps the capacity of the largest batch it held) into one of their size.
func (b *Batch) trim() {
	if cap(b.buf) > 2*len(b.buf)+4096 {
		b.buf = append(make([]byte, 0, len(b.buf)), b.buf...)
	}
}

// Append adds a copy of p.
func (b *Batch) Append(p []byte) {
	b.buf = append(b.buf, p...)
	b.ends = append(b.ends, len(b.buf))
}

// Membership is a Channel whose receiving can be turned off (leaving the multicast group), so
// that a node that reads nothing spends nothing on the stream. The Demux turns it on while it
// has a sub-channel open and off otherwise.
type Membership interface {
	SetReceiving(on bool) error
}
