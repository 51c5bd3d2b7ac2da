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
// 20 ms worth or 64 KiB). The source sends every slice in ascending order, then END three
// times. A proxy can call SendSlice for slices as it obtains them.
//
// # Receiving
//
// A Receiver takes datagrams with its content's tag, checks offsets and lengths, reassembles
// slices (at most MaxAssembling at once; memory does not grow with the file), verifies each
// completed slice against the manifest and stores it (store.Put verifies again; nothing
// unverified is stored). It reports a slice lost (OnLost) when the sender has moved Lag
// slices beyond it without completing it, when it fails verification (a forged or damaged
// datagram), when it is evicted for memory, and, for everything still missing, when END
// arrives. OnIdle fires on END and after IdleTimeout without a datagram: the pass is over or
// the sender is gone, so every missing slice must be repaired from peers. The swarm session
// does that repair (the transfer package wires OnStored/OnLost/OnIdle to Session.Stored,
// Release and ReleaseAll).
//
// # Known weakness: loss amplification
//
// Repair is per slice: a slice with one lost datagram is fetched whole from a peer. A slice
// of S bytes spans S/1378 datagrams, so with datagram loss p it survives with probability
// (1-p)^(S/1378): 256 KiB slices at 0.1% loss 83%, at 1% 15%, at 5% almost never. Under real
// loss the multicast then only seeds the swarm and peers carry most bytes. Chunk-level repair
// (keep partial slices, fetch only missing byte ranges) or FEC is the next step.
package mcast
