// Package swarm is the peer exchange of the transfer engine: the bulk carrier between peers
// wherever there is no multicast, and across multicast domains.
//
// # Protocol /raftcast/transfer/1.0.0
//
// The client opens a stream and writes fixed-size requests, as many as it likes without
// waiting (pipelining); the server answers them strictly in order. A request is 41 bytes:
//
//	op (u8) | content ID (32) | start (u32) | count (u32)
//
// op 1 MANIFEST asks for the encoded manifest, op 2 HAVE for the bitmap of the slices the
// server holds, op 3 SLICES for the run [start, start+count) with 1 ≤ count ≤ MaxRun (64),
// op 4 PARTS for the parts of slice start whose bits are set in count (a slice is divided
// into content.Parts = 32 parts; see content.PartBounds): for repairing a slice multicast
// delivered in part.
// Every answer is a frame: a 9-byte header and a payload,
//
//	status (u8) | index (u32) | length (u32) | payload
//
// with status 0 OK, 1 NOT_FOUND (content unknown: one frame answers the whole request),
// 2 NOT_HAVE (that slice is not held), 3 BAD_REQUEST (the server then closes the stream),
// 4 ERROR (the server could not read that slice). A MANIFEST answer carries the manifest, a
// HAVE answer the slice count in index and the bitmap (store.Bitmap.Bytes) as payload, a
// SLICES request one frame per slice, in order, a PARTS request one frame per requested part,
// in ascending part order (or one NOT_HAVE or ERROR frame for all). All integers are
// big-endian.
//
// Version 1.1.0 (ProtocolID11, asked for first; a 1.0.0 peer is spoken to in 1.0.0) adds
// status 5 ELSEWHERE: a seeding server (the content's source, Server.AddSeed) that sent a
// slice to one peer less than SeedWindow (2 s) ago answers another peer's request for it with
// ELSEWHERE instead of the slice. That peer takes it from the first once it announces it, and
// asks the source's have-bitmap again a second later (the source serves it again after the
// window, should no one else have it). Each slice thus crosses the source's uplink about once
// and the receivers pass it on among themselves (BitTorrent's super-seeding): in testnet/bench's
// streams-only case the source had sent 1.41-1.48 × the file, and 1.02-1.07 × with seeding.
//
// Bounds and failure: the server waits at most IdleTimeout for a request and WriteTimeout per
// frame, serves at most MaxStreams streams (more are reset) and reserves its slice buffer from
// the resource manager. The client bounds every payload (a manifest by
// content.MaxManifestSize, a bitmap by the slice count, a slice by the slice size), checks
// that the frames answer what it asked, in order, and gives a peer FrameTimeout per frame; a
// violation takes that stream down and the peer rests.
//
// Trust: a manifest is accepted only if its bytes hash to the content ID and decode strictly
// (an unsafe name is refused); a slice only if it matches its hash in the manifest, checked
// by the store before anything is written. A bad slice is dropped, the sender penalised, the
// slice asked from another peer; after BanAfter bad slices the peer is banned: disconnected
// and never asked again.
//
// # Receiver session
//
// A Session completes a store from peers. A pure Planner decides (see its doc): rarest first
// among what peers announce, non-source peers preferred, a bounded number of requests in
// flight per peer (MaxInflightPerPeer, MaxInflightSource), randomised exponential back-off,
// the source used for a slice after MaxPeerTries failures elsewhere or when every other
// holder is stalled, and an endgame: once nothing is left to request, slices in flight for
// EndgameAfter (3 s) are asked from a second peer, the first answer winning. The session only feeds
// it events: have-bitmaps polled every HaveInterval (on a control stream of their own, so
// that they never queue behind slices) from peers that do not yet hold everything, answers,
// failures, the clock; and carries out its requests, coalescing adjacent
// slices for one peer into runs. Slices stored by another carrier (multicast) are reported
// with Stored; Hold/Release keep slices that multicast is expected to deliver from being
// fetched twice. Bytes are counted by origin (source, other peers) for new slices only. A
// node keeps serving what it holds through its Server for as long as the content is added.
//
// # Measured
//
// On the 2-core build machine, shared with other jobs (load average 8-23), everything in one
// process, so sender and receivers share the two cores (ranges over several runs; the ratio
// is taken within each run):
//
//	go test -bench SwarmVsRaw/slice=256KiB -benchtime 3x ./transfer/swarm/
//	  64 MiB, source -> 1 receiver:   swarm 0.39-0.85 x a raw libp2p stream's throughput
//	                                   CPU 3.9-8.7 s/GB against 2.0-4.8 s/GB for the raw stream
//	  64 MiB, source -> 4 receivers:  swarm 0.36-0.68 x raw (4 raw streams from the source)
//	                                   CPU 4.2-8.3 s/GB against 2.2-4.5 s/GB
//	go test -bench PlannerNext ./transfer/swarm/
//	  one answer + Next: 21 us with 1024 slices, 31 us with 40960 slices
//
// A profile (4 receivers) puts 60% of the CPU in TLS and TCP (as for the raw stream), 10% in
// BLAKE3 verification, 9% in writing slices to the store and the rest in copies and
// scheduling: the swarm costs about twice the CPU per byte of a bare stream because every
// byte is also hashed, written and read back, and in one process that halves throughput.
// Between machines the receiver's extra work runs on its own cores. In the 3-receiver
// loopback test a plain source uploaded 1.6-1.7 x the file: with everything equally fast a
// receiver takes from the source whatever no peer has announced yet; a seeding one uploads it
// once (TestSwarmSourceAndThreeReceivers/seeding).
package swarm
