package peergroup

import (
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocol IDs.
const (
	// JoinProtocol admits a member (PMP): joiner → any member; a member that is not the
	// leader redirects to the leader.
	JoinProtocol protocol.ID = "/raftcast/group/join/1.0.0"
	// ApplyProtocol forwards a command from a member to the leader.
	ApplyProtocol protocol.ID = "/raftcast/group/apply/1.0.0"
)

// RaftProtocol is the protocol ID of one group's Raft RPCs (go-libp2p-raft's fixed
// "/raft/1.0.0/rpc", renamed per group so a host can be in several groups).
func RaftProtocol(groupID string) protocol.ID {
	return protocol.ID("/raftcast/group/" + groupID + "/raft/1.0.0")
}

// Stream limits.
const (
	joinStreamTimeout  = 30 * time.Second
	applyStreamTimeout = 30 * time.Second
	maxJoinFrame       = 64 << 10
	maxApplyFrame      = maxCommandSize + 1<<10
)
