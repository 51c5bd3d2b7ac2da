package overlay

import "github.com/libp2p/go-libp2p/core/protocol"

// Protocol IDs spoken by every raftcast node.
const (
	// ResolverProtocol carries one resolver query and its response per stream (PRP).
	ResolverProtocol protocol.ID = "/raftcast/resolver/1.0.0"
	// DHTPrefix is the kad-DHT protocol prefix; the DHT speaks DHTPrefix + "/kad/1.0.0".
	DHTPrefix protocol.ID = "/raftcast"
	// DHTNamespace is the DHT record namespace holding signed advertisements.
	DHTNamespace = "rcadv"
	// MDNSService is the mDNS service name raftcast peers announce on the LAN.
	MDNSService = "_raftcast._udp"
)

// Resolver handler names registered by the overlay itself.
const (
	// HandlerAdverts answers an advert.Query with the matching envelopes from the local cache.
	HandlerAdverts = "adverts"
	// HandlerPeerInfo answers with this node's peer information (PIP).
	HandlerPeerInfo = "peerinfo"
	// HandlerIndexPublish stores the caller's own advertisements in a rendezvous index.
	HandlerIndexPublish = "index.publish"
	// HandlerIndexQuery answers an advert.Query from a rendezvous index.
	HandlerIndexQuery = "index.query"
)
