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
