package pipes

import "sync/atomic"

// Stats is a snapshot of the service's counters.
type Stats struct {
	Unicast   UnicastStats
	Bidi      BidiStats
	Propagate PropagateStats
	Rejected  RejectStats
	Multicast MulticastStats
}

// UnicastStats counts unicast-pipe traffic.
type UnicastStats struct {
	MessagesSent, BytesSent uint64 // written to a stream (re-sends after failover included)
	MessagesAcked           uint64 // acknowledged by a bound peer
	MessagesRecv, BytesRecv uint64 // received on this peer's input ends
	StreamsOpened           uint64 // streams this peer opened to bound peers
	StreamsAccepted         uint64
	Failovers               uint64 // streams lost with messages unacknowledged, or bound peers that failed
}

// BidiStats counts bidirectional-pipe connections and bytes.
type BidiStats struct {
	Dialed, Accepted       uint64
	BytesSent, BytesRecv   uint64 // payload bytes
	FramesSent, FramesRecv uint64
	AcceptDropped          uint64 // connections refused because the accept backlog was full
}

// CarrierStats counts messages and payload bytes on one carrier.
type CarrierStats struct {
	Messages, Bytes uint64
}

// PropagateStats counts propagate-pipe traffic per carrier.
type PropagateStats struct {
	// SentMulticast counts datagrams sent (one per interface); SentGossip messages published.
	SentMulticast, SentGossip CarrierStats
	// RecvMulticast and RecvGossip count valid (verified, not replayed) arrivals, duplicates
	// across carriers included.
	RecvMulticast, RecvGossip CarrierStats
	// Delivered* count messages handed to an input pipe, by the carrier that brought them first.
	DeliveredMulticast, DeliveredGossip, DeliveredLocal uint64
	// Duplicates counts arrivals dropped because the other carrier delivered them first.
	Duplicates uint64
	// QueueDrops counts messages dropped because an input pipe's queue was full.
	QueueDrops uint64
	// NoListener counts verified messages for a pipe with no input end bound here.
	NoListener uint64
}

// RejectStats counts bad input, each rejected with a clear error and the stream reset.
type RejectStats struct {
	OversizedFrames uint64 // frames above the maximum size
	Malformed       uint64 // hellos, frames, datagrams or gossip messages that do not decode
	UnknownPipe     uint64 // streams for a pipe not bound here
	Forged          uint64 // propagate messages and beacons whose signature does not verify
	Replayed        uint64 // propagate messages whose (sender, sequence) was seen or is too old
}

// MulticastStats counts native multicast traffic.
type MulticastStats struct {
	Joins                    uint64 // group joins that succeeded (interface × family × socket)
	BeaconsSent, BeaconsRecv uint64
	DataSent, DataSentBytes  uint64 // raw channel datagrams (one per interface)
	DataRecv, DataRecvBytes  uint64
	DataDropped              uint64 // raw datagrams dropped: the Recv queue stayed full for DataQueueWait
	SendErrors               uint64
}

// counters holds the live counters; Stats copies them.
type counters struct {
	uniSent, uniSentBytes, uniAcked, uniRecv, uniRecvBytes, uniOpened, uniAccepted, uniFailovers atomic.Uint64

	bidiDialed, bidiAccepted, bidiSentBytes, bidiRecvBytes, bidiFramesSent, bidiFramesRecv, bidiAcceptDropped atomic.Uint64

	propSentMC, propSentMCBytes, propSentGS, propSentGSBytes    atomic.Uint64
	propRecvMC, propRecvMCBytes, propRecvGS, propRecvGSBytes    atomic.Uint64
	propDelivMC, propDelivGS, propDelivLocal, propDup, propDrop atomic.Uint64
	propNoListener                                              atomic.Uint64

	rejOversized, rejMalformed, rejUnknownPipe, rejForged, rejReplayed atomic.Uint64

	mcJoins, mcBeaconsSent, mcBeaconsRecv, mcDataSent, mcDataSentBytes atomic.Uint64
	mcDataRecv, mcDataRecvBytes, mcDataDropped, mcSendErrors           atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Unicast: UnicastStats{
			MessagesSent: c.uniSent.Load(), BytesSent: c.uniSentBytes.Load(), MessagesAcked: c.uniAcked.Load(),
			MessagesRecv: c.uniRecv.Load(), BytesRecv: c.uniRecvBytes.Load(),
			StreamsOpened: c.uniOpened.Load(), StreamsAccepted: c.uniAccepted.Load(), Failovers: c.uniFailovers.Load(),
		},
		Bidi: BidiStats{
			Dialed: c.bidiDialed.Load(), Accepted: c.bidiAccepted.Load(),
			BytesSent: c.bidiSentBytes.Load(), BytesRecv: c.bidiRecvBytes.Load(),
			FramesSent: c.bidiFramesSent.Load(), FramesRecv: c.bidiFramesRecv.Load(),
			AcceptDropped: c.bidiAcceptDropped.Load(),
		},
		Propagate: PropagateStats{
			SentMulticast:      CarrierStats{c.propSentMC.Load(), c.propSentMCBytes.Load()},
			SentGossip:         CarrierStats{c.propSentGS.Load(), c.propSentGSBytes.Load()},
			RecvMulticast:      CarrierStats{c.propRecvMC.Load(), c.propRecvMCBytes.Load()},
			RecvGossip:         CarrierStats{c.propRecvGS.Load(), c.propRecvGSBytes.Load()},
			DeliveredMulticast: c.propDelivMC.Load(), DeliveredGossip: c.propDelivGS.Load(), DeliveredLocal: c.propDelivLocal.Load(),
			Duplicates: c.propDup.Load(), QueueDrops: c.propDrop.Load(), NoListener: c.propNoListener.Load(),
		},
		Rejected: RejectStats{
			OversizedFrames: c.rejOversized.Load(), Malformed: c.rejMalformed.Load(), UnknownPipe: c.rejUnknownPipe.Load(),
			Forged: c.rejForged.Load(), Replayed: c.rejReplayed.Load(),
		},
		Multicast: MulticastStats{
			Joins: c.mcJoins.Load(), BeaconsSent: c.mcBeaconsSent.Load(), BeaconsRecv: c.mcBeaconsRecv.Load(),
			DataSent: c.mcDataSent.Load(), DataSentBytes: c.mcDataSentBytes.Load(),
			DataRecv: c.mcDataRecv.Load(), DataRecvBytes: c.mcDataRecvBytes.Load(),
			DataDropped: c.mcDataDropped.Load(), SendErrors: c.mcSendErrors.Load(),
		},
	}
}
