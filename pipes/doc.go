// Package pipes implements raftcast's pipes (JXTA's Pipe Binding Protocol): unicast,
// bidirectional and propagate pipes bound to live peers through pipe advertisements, carried
// over libp2p streams, native UDP multicast and gossipsub.
//
// # Pipes and bindings
//
// A pipe is named by a PipeSpec: ID, name, kind (unicast, bidi, propagate) and group scope
// (default "net", the overlay-wide group). Without an explicit ID the ID is derived from
// (group, kind, name) with DerivePipeID, so peers meet on a pipe by name alone.
//
// Binding an input end (Service.Listen, Service.ListenBidi) registers it locally and publishes
// a pipe advertisement (advert.KindPipe, ID = pipe ID) signed by the bound peer, with
// attributes pipe.kind, pipe.group and pipe.bound=true, expiring after BindingTTL and
// re-published at half of it. Closing the input end publishes the same advertisement with
// pipe.bound=false (a higher sequence number, so it supersedes the binding everywhere).
// An output end resolves the bound peers with Overlay.Discover (kind pipe, that ID; the newest
// advert per publisher decides), caches the answer for ResolveTTL and resolves afresh as soon
// as a bound peer fails.
//
// # Streams: hello and status
//
// Unicast (ProtocolUnicast) and bidirectional (ProtocolBidi) streams use frames: a uvarint
// length then that many bytes. The opener sends a hello frame (version byte = 1, pipe ID as
// uvarint-prefixed bytes, at most 1 KiB); the acceptor answers with a status frame (code
// byte, message) within HandshakeTimeout: 0 ok, 1 unknown pipe (no input end bound here),
// 2 bad request, 3 busy (accept backlog full), 4 unsupported version. Anything but ok ends the
// stream. A frame above the receiver's MaxFrameSize, a hello that does not decode or a stream
// that stalls in the handshake is rejected: counted in Stats().Rejected and the stream reset.
//
// # Unicast pipes
//
// The output end keeps one stream to one bound peer (ProtocolUnicast, or ProtocolUnicastV1 to
// a peer that knows no newer one) and writes each message as one frame, batching whatever is
// queued before a flush. On ProtocolUnicast a message frame's length prefix is
// uvarint(length<<1 | ackNow); the sender sets ackNow on the last frame it writes when nothing
// more is queued. The receiver answers with cumulative acknowledgements (uvarint count of
// messages it has queued for Recv on this stream) every 64 messages or 1 MiB, and at once after
// a message with ackNow (ProtocolUnicastV1: plain length prefixes, and instead 2 ms after its
// read buffer ran dry with messages unacknowledged). The sender holds up to WindowMessages /
// WindowBytes unacknowledged messages (Send blocks beyond: back-pressure, down to the
// receiver's Recv).
//
// Copies: Send copies the message once, into a pooled buffer with room for its length prefix
// (kept for re-sending until acknowledged); SendNoCopy keeps the caller's buffer instead. A
// large frame goes to the stream in one write; the receiver reads a large payload straight
// from the stream into the message's buffer, which comes from a pool: Message.Release hands it
// back. When the stream fails (the input end closed, the peer went
// away, a write failed) every unacknowledged message is re-sent, in order, to the next bound
// peer: peers that have not failed in the last FailedPeerTTL first, connected ones before
// others, this node last (it delivers to its own input end in-process). Delivery is in order
// and at least once; a message can reach two peers if an acknowledgement is lost in a
// failover. With nobody reachable, messages wait in the window and the output end retries
// with back-off (RetryMin..RetryMax); Send and Flush report ErrNoListener when their context
// ends in that state. Idle streams close after IdleTimeout.
//
// # Bidirectional pipes
//
// DialBidi opens one stream to a bound peer (ListenBidi / AcceptBidi on the other side) and
// returns a BidiConn: a net.Conn whose Write cuts the bytes into frames of at most
// min(MaxFrameSize, 1 MiB) and whose Read reassembles them, plus WriteMsg/ReadMsg for whole
// messages. Flow control is the stream's (yamux windows): a slow reader slows the writer.
// Deadlines are the stream's deadlines.
//
// # Propagate pipes
//
// Every message goes to every bound peer. It is signed by the sender and carries a sequence
// number (see signed.go for the layout; the signature covers a BLAKE3 digest of the message,
// so signing costs the same for any size); the sequence starts at the sender's clock in
// nanoseconds when the pipe is first used, so a restarted sender is not taken for a replay.
// Two carriers are chosen per message:
//
//   - native UDP multicast on each interface whose multicast domain holds a bound peer (when
//     the signed message fits in Multicast.MaxDatagram), IPv6 when every such peer was heard
//     on IPv6, IPv4 when every one was heard on IPv4, otherwise both;
//   - gossipsub (topic TopicPrefix + group + "/" + pipe ID on the node's one PubSub) when some
//     bound peer, or some peer subscribed to the topic, is outside this node's domains, when
//     the bindings are not resolved yet, or when the message is too large for a datagram.
//
// A receiver verifies the signature (forged: counted, and the gossipsub validator returns
// Reject so the router penalises the peer that forwarded it; with Config.TrustGossipAuthor a
// gossip message whose pubsub author is its sender relies on the PubSub's StrictSign check
// instead of a second verification), then checks (sender, sequence)
// against a window of the last ReplayWindow sequence numbers kept per carrier: a number seen
// before on the same carrier is a replay (counted; Reject on gossipsub), one older than the
// window cannot be judged (counted as a replay; Ignore on gossipsub, not penalised). A third
// window de-duplicates across carriers, so the input end gets each message once whichever
// carrier brings it first. Propagate delivery does not block: when an input end's queue is
// full the message is dropped and counted (Stats().Propagate.QueueDrops).
//
// # Multicast domains
//
// With multicast enabled (Config.Multicast), the service joins Group6 (default
// ff12::5243:7069, link-local scope) and Group4 (default 239.255.82.67, TTL 1) on each chosen
// interface (Multicast.Interfaces, CLI --multicast-iface; default every interface that is up,
// multicast-capable and not loopback), counting only joins that succeed. Every
// BeaconInterval it sends a signed beacon (peer ID and clock) on each interface and family to
// Port. A peer heard on an interface within BeaconExpiry shares this node's multicast domain
// there. The domain ID of an interface is the first 16 hex digits of
// BLAKE3("raftcast/mcast-domain\x00" || the smallest peer ID among this node and the peers it
// hears there) (DomainID): all peers of a segment hear the same set, so they converge on the
// same ID within one beacon interval after the membership settles. The IDs of all interfaces,
// comma separated, go into the peer advertisement as attribute mcast.domains
// (Overlay.SetPeerAttr) whenever they change.
//
// # Raw data channel
//
// Service.Multicast returns the MulticastChannel for bulk data: unsigned datagrams to DataPort
// on the same groups, large socket buffers (SocketBuffer, forced past rmem_max/wmem_max when
// running as root), received with their source address (and the peer that beacons from it,
// unauthenticated), plus the domain view (Domains, Members, InDomain). Send blocks while the
// socket buffer is full, so a shaped link slows the sender rather than dropping; it prefers
// IPv4 (smaller headers) and UnfragmentedSize gives the largest datagram that IP does not
// fragment. Pacing, repair and verification are the transfer engine's.
//
// The data channel moves datagrams in batches (mmsg.go): its sockets are plain blocking
// sockets outside Go's netpoller (whose epoll registration would wake a thread for every
// datagram that arrives and every send buffer freed), SendBatch hands sendmmsg up to 64
// messages per call, each run of equal-sized datagrams one UDP segmentation offload message
// (UDP_SEGMENT; one message per datagram where the kernel refuses it), and the reader takes
// up to 64 per recvmmsg, pausing between reads while datagrams flow so that each read finds
// about 48 (RecvBatch returns them together). The reader hands them to a short queue
// (DataQueue) and, while the consumer is behind and the queue full, waits (DataQueueWait) with
// the backlog in the socket's receive buffer (DataSocketBuffer, 32 MiB): kernel memory that the
// process neither copies nor garbage-collects, so a receiver's memory does not grow with how far
// it falls behind. SetReceiving(false) leaves the data group (a
// node that reads nothing takes nothing in; the transfer engine's Demux does this while no
// content is being received). The data
// sending socket of an interface shares the port of its beacon socket (so a datagram's source
// names the peer beaconing from it) and loops its datagrams back to this host only while a
// peer is heard from one of this host's own addresses.
//
// # Tests and defaults
//
// Native multicast is on by default (every multicast-capable interface): tests on loopback and
// in-process fakes must set Config.Multicast.Disabled. pipestest.Node is a fake Overlay over
// plain libp2p hosts with an in-memory or file-backed advertisement directory.
//
// # Relays
//
// Streams are opened with network.WithAllowLimitedConn, so a peer reachable only through a
// circuit-relay v2 reservation can bind and be reached (within the relay's limits).
package pipes
