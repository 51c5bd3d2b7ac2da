package peergroup

import (
	"context"

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
