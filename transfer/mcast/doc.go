// Package mcast carries slices over a multicast data channel: the seam between the transfer
// engine and native UDP multicast (implemented by pipes; in tests by mcasttest).
//
// # Datagrams
//
// A Sender chunks each slice into datagrams of SenderConfig.Datagram bytes (default 1400, so
// that no IP fragmentation happens on an Ethernet path, IPv4 or IPv6) with a 22-byte header:
//
//	"RM" | version 1 | type (1 DATA, 2 END) | content tag (first 8 bytes of the content ID) |
//	slice (u32) | offset (u32) | chunk size (u16) | payload
//
// and paces them with a token bucket (SenderConfig.Rate bytes/s, headers included, burst
// 50 ms worth or 64 KiB), a batch of datagrams at a time. The source sends every slice in ascending order, then END three
// times. A proxy can call SendSlice for slices as it obtains them.
//
// # Datagram size: measured
//
// Between two network namespaces over a veth with MTU 1500 on the 2-core build machine
// (internal/udpmeas; 64-256 MiB per run; the machine was shared, so read ratios):
//
//	datagram   unpaced send      send CPU    1% packet loss, paced at 20 MiB/s
//	1400 B      43 MB/s          12 s/GB     1.0% of datagrams lost
//	8972 B      93 MB/s           8 s/GB     100% lost (7 fragments each)
//	63000 B    188 MB/s           4 s/GB     100% lost (44 fragments each)
//
// Large datagrams save system calls (3× less CPU per byte), but one lost fragment loses the
// datagram, and worse: the kernel keeps every incomplete reassembly for ipfrag_time (30 s)
// within ipfrag_high_thresh (4 MiB), so under steady loss the reassembly memory fills and
// every later fragmented datagram is dropped (IpReasmFails counted 397 139 of 1 109 961).
// Without loss the large datagrams pass. Loss is the normal case for multicast, so the
// default stays at 1400 bytes, which never fragments (the sender takes the channel's
// UnfragmentedSize, 1472 on an Ethernet path with IPv4); at 100 Mbit/s it cost about 15% of a
// core to send one datagram per system call.
//
// # Batches
//
// So the cost per datagram is cut by moving them in batches rather than by fragmenting: the
// Sender paces up to SenderConfig.Batch datagrams (64, 94 KB) as one burst and hands them to a
// BatchSender channel in one call (pipes: one sendmmsg); a BatchReceiver channel hands over
// what arrived together (pipes: one recvmmsg, paced to gather about 48), and the Demux and the
// Receiver pass batches on, one hand-off per batch. BenchmarkUDPMulticast (package pipesch)
// measures the whole path over real sockets.
//
// # Receiving
//
// A Receiver takes datagrams with its content's tag, checks offsets and lengths, reassembles
// slices (at most MaxAssembling at once; memory does not grow with the file), verifies each
// completed slice against the manifest and stores it (store.Put verifies again; nothing
// unverified is stored). It reports a slice lost (OnLost) when the sender has moved Lag
// slices beyond it without completing it, when it fails verification (a forged or damaged
// datagram), when it is evicted for memory, and, for everything still missing, when END
// arrives. OnIdle fires on END, after IdleTimeout without a datagram and again after
// GoneTimeout: after END or GoneTimeout the pass is over or the sender is gone, so every
// missing slice must be repaired from peers; after a shorter silence mid-pass only those up to
// Front (the sender may just be starved of CPU). The swarm session
// does that repair (the transfer package wires OnStored/OnLost/OnIdle to Session.Stored,
// Release and ReleaseAll).
//
// # Several contents on one channel
//
// A Receiver reads its Channel itself, so two receivers must not share one: wrap the domain's
// channel in a Demux (one reading goroutine, per-content sub-channels by tag, bounded queues)
// and give each receiver Demux.Open(contentID).
//
// # Partial repair
//
// A slice of S bytes spans S/1378 datagrams, so with datagram loss p it arrives whole with
// probability (1-p)^(S/1378): 256 KiB slices at 1% loss only 15% of the time. Repairing whole
// slices would make the multicast useless under loss. So a slice the receiver gives up on is
// kept, with the mask of its content.Parts (32) parts still missing, in a bounded
// PartialStore (MaxPartial slices, default 64); the swarm session takes it from there and
// asks a peer only for the missing parts (op PARTS), then verifies the whole slice. Measured
// in TestMulticastPartialRepair (256 KiB slices, 1% loss): 93-95% of the bytes arrive by
// multicast, the rest by partial repair. If a slice completed from parts fails verification,
// the bad bytes came from a forged multicast datagram or from the peer: the slice is fetched
// whole (verified as usual), then the peer's parts are compared with it, and a peer whose
// parts differ is charged with a bad slice (banned after BanAfter). When the PartialStore is
// full further partial slices are repaired whole.
package mcast
