package coop

import (
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocol IDs.
const (
	// ControlProtocol carries one request and one answer per stream: a download request to
	// the leader (start), a re-arrangement request to the leader (partDownload), the leader's
	// question to a member about the slices it holds (have), and a member's notice to a
	// requester (the resource changed).
	ControlProtocol protocol.ID = "/raftcast/coop/1.0.0"
	// PushProtocol carries slices from a member to the requester of a task, acknowledged one
	// by one (the requester acks a slice once it is stored).
	PushProtocol protocol.ID = "/raftcast/coop/push/1.0.0"
)

// ServiceName is the resource-manager service name of the protocols' streams.
const ServiceName = "raftcast.coop"

// Wire limits.
const (
	maxURLLen      = 8 << 10 // a task URL (as peergroup's task table accepts)
	maxIDLen       = 128     // group and task IDs
	maxShortLen    = 512     // validators, messages
	maxSlices      = 1 << 20 // slices per task (peergroup and the store agree)
	planSlices     = 4096    // the leader's default slicing doubles the slice size beyond this
	maxListLen     = 1 << 12 // peers in an exclude list
	maxControl     = 8 << 20 // one control frame (a re-arrangement of every slice fits)
	maxSliceSize   = 16 << 20
	minSliceSize   = 4 << 10
	maxPushStreams = 64      // concurrent incoming push streams; more are reset
	maxCtlStreams  = 64      // concurrent incoming control streams; more are reset
	pushReadAhead  = 2 << 20 // bytes of slices a requester reads ahead of its store per push stream
)

// Stream timing.
const (
	headerTimeout  = 10 * time.Second // reading a stream's first frame
	pushIdle       = time.Minute      // an incoming push stream with no frame for this long is reset
	pushBackoffMax = 5 * time.Second  // longest pause between attempts to reach a requester
	refuseLinger   = 2 * time.Second  // a refused push stream waits this long for the member to close
)
