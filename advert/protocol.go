package advert

// Identifiers of the advertisement envelope. They are part of what is signed: changing either
// invalidates every advertisement in circulation.
const (
	// EnvelopeDomain is the libp2p signed-envelope domain of advertisements.
	EnvelopeDomain = "raftcast-advert"
	// EnvelopeCodec is the envelope payload type of advertisements.
	EnvelopeCodec = "/raftcast/advert/1"
)
