// Package transfer is raftcast's transfer engine: it shares files and gets them from a
// multicast domain and from peers, never storing or passing on an unverified byte.
//
// Sub-packages: content (slicing, manifests, content IDs), store (resumable on-disk slice
// store, also for the cooperative HTTP download), swarm (the /raftcast/transfer/1.0.0 peer
// exchange and the receiver session with its pure planner), mcast (the multicast seam:
// Channel, paced Sender, reassembling Receiver; mcasttest has an in-memory lossy domain).
//
// # Engine
//
// An Engine runs on a libp2p host and serves every content it holds (shared, being received,
// or received) over the transfer protocol.
//
//   - Share(ctx, path, name, rate, opts...) slices and hashes the file, serves it as its
//     seed (a slice it has just sent to one receiver is not sent to another, which takes it
//     from the first: swarm's ELSEWHERE), and with
//     WithMulticast(ch) starts one multicast pass paced at rate bytes/s. Its manifest's ID is
//     the content ID to advertise (the content advertisement is published by the caller).
//     Multicast(id, ch, rate) starts a pass later (e.g. when the group is listening).
//   - Get(ctx, GetRequest) fetches the manifest by content ID (from the source, then the
//     peers, verified by its hash; names that try path traversal are refused), opens the
//     store <Dir>/<id>.part (resuming what an interrupted get verified), and completes it:
//     from the multicast channel if given (slices the multicast will deliver are held back
//     from peer requests until the receiver reports them lost or the channel goes idle), and
//     from peers, rarest first, non-source peers preferred, the source last. It returns once
//     the file is whole at Out (rename or copy, atomically), with the bytes counted by
//     carrier; on failure or cancellation nothing is at Out and the slices stay for a later
//     Get. With Relay set (a proxy peer) it fetches in ascending order and re-multicasts every
//     slice into the relay channel, in order but for a slice that comes late (sent when it
//     comes, the rest not waiting for it), then ends the pass; a Get with Relayed set (a
//     receiver of such a relay) waits longer for a missing slice before taking it for lost.
//   - After a Get the content stays served until Forget or Close.
//
// Multicast repair is by parts: a slice the multicast delivered in part is completed by
// asking a peer for only the 1/32 parts it misses (see package mcast), so under datagram loss
// multicast still carries most bytes (95% at 1% loss in TestMulticastPartialRepair).
//
// Result's BytesMulticast + BytesPeers + BytesSource + BytesResumed = Size: the CLI's
// bytes_multicast, bytes_peers and bytes_source (bytes_peers should include BytesResumed or
// report it separately).
//
// What the engine leaves to its caller: finding peers (GetRequest.Peers/MorePeers, e.g. group
// members or content-advert providers), resolving a name to a content ID, publishing the
// content advertisement (ContentAdvert builds it), the multicast channel (native multicast
// from pipes, adapted by mcast/pipesch), choosing the proxy of a domain, and the multicast
// rate (Share's rate; the receivers need no rate).
//
// Timing a caller should know: with GetRequest.Multicast set, peers are not asked for slices
// until the multicast reports them lost, or until the channel has been silent for
// Receiver.StartTimeout (5 s) before the first datagram, or until the pass ended. A silence of
// IdleTimeout (2 s) in the middle of a pass releases only the slices the sender has passed (a
// sender starved of CPU pauses; fetching what it is about to send would load its link twice);
// after GoneTimeout (10 s) the sender is taken for gone and everything missing is repaired
// from peers. A receiver that joins after the pass thus waits StartTimeout before repairing
// everything from peers.
//
// One multicast pass of a content runs at a time (Engine.Multicast): one asked for while
// another runs follows it.
package transfer
