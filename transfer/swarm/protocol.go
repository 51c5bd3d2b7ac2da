package swarm

import "github.com/libp2p/go-libp2p/core/protocol"

// ProtocolID is the stream protocol of the peer exchange.
const ProtocolID protocol.ID = "/raftcast/transfer/1.0.0"
