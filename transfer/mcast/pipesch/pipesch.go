// Package pipesch adapts the native multicast data channel of package pipes to mcast.Channel,
// so the transfer engine can multicast slices over it.
package pipesch

import (
	"context"
	"errors"

	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/transfer/mcast"
)

// Channel is a pipes.MulticastChannel seen as an mcast.Channel.
type Channel struct {
	C *pipes.MulticastChannel
}

var (
	_ mcast.Channel       = Channel{}
	_ mcast.BatchSender   = Channel{}
	_ mcast.BatchReceiver = Channel{}
	_ mcast.Membership    = Channel{}
)

// MaxDatagram implements mcast.Channel.
func (c Channel) MaxDatagram() int { return c.C.MaxDatagram() }

// UnfragmentedSize is the largest datagram that crosses every joined interface unfragmented;
// the mcast.Sender uses it as its default datagram size.
func (c Channel) UnfragmentedSize() int { return c.C.UnfragmentedSize() }

// Send implements mcast.Channel. pipes' Send blocks while the socket buffer is full; ctx is
// checked before sending.
func (c Channel) Send(ctx context.Context, p []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := c.C.Send(p)
	if errors.Is(err, pipes.ErrClosed) {
		return mcast.ErrClosed
	}
	return err
}

// Recv implements mcast.Channel.
func (c Channel) Recv(ctx context.Context, buf []byte) (int, error) {
	d, err := c.C.Recv(ctx)
	if err != nil {
		if errors.Is(err, pipes.ErrClosed) {
			return 0, mcast.ErrClosed
		}
		return 0, err
	}
	return copy(buf, d.Data), nil
}

// SendBatch implements mcast.BatchSender: the datagrams go out with one sendmmsg per up to 64
// per interface.
func (c Channel) SendBatch(ctx context.Context, ps [][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := c.C.SendBatch(ps)
	if errors.Is(err, pipes.ErrClosed) {
		return mcast.ErrClosed
	}
	return err
}

// RecvBatch implements mcast.BatchReceiver: b gets the datagrams one recvmmsg took.
func (c Channel) RecvBatch(ctx context.Context, b *mcast.Batch) error {
	db, err := c.C.RecvBatch(ctx)
	if err != nil {
		if errors.Is(err, pipes.ErrClosed) {
			return mcast.ErrClosed
		}
		return err
	}
	b.Reset()
	for _, d := range db.Datagrams {
		b.Append(d.Data)
	}
	db.Release()
	return nil
}

// SetReceiving implements mcast.Membership: it joins or leaves the data group.
func (c Channel) SetReceiving(on bool) error { return c.C.SetReceiving(on) }
