package peergroup

import (
	"context"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	gostream "github.com/libp2p/go-libp2p-gostream"

	libp2praft "github.com/libp2p/go-libp2p-raft"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// groupHost is the thin host.Host wrapper each group's Raft transport runs on: it renames
// go-libp2p-raft's fixed protocol ID to the group's own (RaftProtocol(groupID)), so one host
// serves the Raft of several groups, and it refuses Raft streams from peers allow rejects.
// Everything else passes through to the real host.
type groupHost struct {
	host.Host
	proto protocol.ID
	allow func(peer.ID) bool
}

var _ host.Host = (*groupHost)(nil)

func (h *groupHost) mapID(p protocol.ID) protocol.ID {
	if p == libp2praft.RaftProtocol {
		return h.proto
	}
	return p
}

func (h *groupHost) SetStreamHandler(p protocol.ID, handler network.StreamHandler) {
	if p != libp2praft.RaftProtocol {
		h.Host.SetStreamHandler(p, handler)
		return
	}
	h.Host.SetStreamHandler(h.proto, func(s network.Stream) {
		if h.allow != nil && !h.allow(s.Conn().RemotePeer()) {
			_ = s.Reset()
			return
		}
		handler(s)
	})
}

func (h *groupHost) SetStreamHandlerMatch(p protocol.ID, match func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(h.mapID(p), match, handler)
}

func (h *groupHost) RemoveStreamHandler(p protocol.ID) { h.Host.RemoveStreamHandler(h.mapID(p)) }

func (h *groupHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	mapped := make([]protocol.ID, len(pids))
	for i, id := range pids {
		mapped[i] = h.mapID(id)
	}
	return h.Host.NewStream(ctx, p, mapped...)
}

// Close must not close the shared host: the Raft transport closing goes no further.
func (h *groupHost) Close() error { return nil }

// pooledStreamLayer is go-libp2p-raft's stream layer (gostream over the group's host
// wrapper) for a raft.NetworkTransport that keeps up to Config.RaftStreamPool streams per
// peer open between RPCs, instead of opening one per RPC (go-libp2p-raft's MaxPool=0).
type pooledStreamLayer struct {
	h host.Host
	l net.Listener
}

var _ raft.StreamLayer = (*pooledStreamLayer)(nil)

func newPooledStreamLayer(h host.Host) (*pooledStreamLayer, error) {
	l, err := gostream.Listen(h, libp2praft.RaftProtocol)
	if err != nil {
		return nil, err
	}
	return &pooledStreamLayer{h: h, l: l}, nil
}

func (sl *pooledStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	pid, err := peer.Decode(string(address))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return gostream.Dial(ctx, sl.h, pid, libp2praft.RaftProtocol)
}

func (sl *pooledStreamLayer) Accept() (net.Conn, error) { return sl.l.Accept() }
func (sl *pooledStreamLayer) Addr() net.Addr            { return sl.l.Addr() }
func (sl *pooledStreamLayer) Close() error              { return sl.l.Close() }

// newRaftTransport returns go-libp2p-raft's transport (pool = 0: one stream per RPC) or the
// same stream layer with pooled streams.
func newRaftTransport(h host.Host, pool int, timeout time.Duration, logger hclog.Logger) (*raft.NetworkTransport, error) {
	if pool <= 0 {
		return libp2praft.NewLibp2pTransport(h, timeout)
	}
	sl, err := newPooledStreamLayer(h)
	if err != nil {
		return nil, err
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: sl, MaxPool: pool, Timeout: timeout, Logger: logger,
	}), nil
}
