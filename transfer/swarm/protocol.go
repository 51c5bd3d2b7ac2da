package swarm

import "github.com/libp2p/go-libp2p/core/protocol"

// ProtocolID is the stream protocol of the peer exchange.
const ProtocolID protocol.ID = "/raftcast/transfer/1.0.0"

// ProtocolID11 is version 1.1.0: 1.0.0 plus the status ELSEWHERE, with which a seeding
// server sends a client to the peer it has just served that slice to. Clients ask for 1.1.0
// first; a 1.0.0 peer is answered and asked in 1.0.0.
const ProtocolID11 protocol.ID = "/raftcast/transfer/1.1.0"
