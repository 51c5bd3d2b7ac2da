package pipes

import "github.com/libp2p/go-libp2p/core/protocol"

// Stream protocols. Both open with a hello naming the pipe and a status reply (see doc.go).
const (
	// ProtocolUnicast carries the messages of one unicast pipe from a sender to a bound peer,
	// with cumulative acknowledgements flowing back. A message frame's length prefix also says
	// whether the sender wants an acknowledgement at once (it has nothing more queued).
	ProtocolUnicast protocol.ID = "/raftcast/pipe/unicast/1.1.0"
	// ProtocolUnicastV1 is the first unicast protocol: plain length prefixes, and the receiver
	// acknowledges the end of a burst after a short delay. Still accepted, and spoken to peers
	// that do not know ProtocolUnicast.
	ProtocolUnicastV1 protocol.ID = "/raftcast/pipe/unicast/1.0.0"
	// ProtocolBidi carries one bidirectional pipe connection (JXTA's BiDiPipe / JxtaSocket).
	ProtocolBidi protocol.ID = "/raftcast/pipe/bidi/1.0.0"
)

// TopicPrefix prefixes the gossipsub topic of a propagate pipe: TopicPrefix + group + "/" + pipe ID.
const TopicPrefix = "/raftcast/pipe/propagate/1/"

// Attribute keys of a pipe binding advertisement (advert.KindPipe, published by the bound peer).
const (
	AttrKind  = "pipe.kind"  // "unicast", "bidi" or "propagate"
	AttrGroup = "pipe.group" // the pipe's group scope
	AttrBound = "pipe.bound" // "true" while the publisher has the input end bound, "false" after
)

// PeerAttrDomains is the peer-advertisement attribute (set through SetPeerAttr) that lists this
// peer's multicast domain IDs, comma separated, one per interface with a working join.
const PeerAttrDomains = "mcast.domains"

// DefaultGroup is the overlay-wide group every peer belongs to (JXTA's NetPeerGroup).
const DefaultGroup = "net"

// Native multicast defaults (see MulticastConfig).
const (
	DefaultPort     = 47650 // beacons and propagate-pipe datagrams
	DefaultDataPort = 47651 // the raw bulk data channel
)

// Wire constants.
const (
	wireVersion   = 1
	maxHelloSize  = 1024 // hello frame of a stream
	maxStatusSize = 512  // status reply of a stream
	maxAckSize    = binaryMaxVarintLen64
)

const binaryMaxVarintLen64 = 10
