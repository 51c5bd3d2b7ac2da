package peergroup

// Commands, snapshots, the group info and the wire frames use internal/bincodec; its decoders
// here wrap ErrMalformed.

// Limits on decoded fields.
const (
	maxIDLen       = 128     // group, task, content IDs
	maxNameLen     = 256     // names, domains
	maxURLLen      = 8 << 10 // task URLs
	maxShortLen    = 512     // validators, messages
	maxAddrs       = 32      // multiaddrs per member
	maxAddrLen     = 1 << 10 // one multiaddr's bytes
	maxPeerIDLen   = 128
	maxSlices      = 1 << 20 // slices per task
	maxListLen     = 1 << 16 // members, tasks, catalogue entries, excluded peers
	maxCommandSize = 8 << 20
)
