package pipes

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Config configures a Service. Start from DefaultConfig; the zero value is not valid.
type Config struct {
	// Logger receives the service's logs. Nil discards them.
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// MaxFrameSize is the largest message of a unicast or bidirectional pipe, and the largest
	// frame this peer accepts on their streams (default 4 MiB). A larger frame resets the stream.
	MaxFrameSize int
	// MaxPropagateSize is the largest propagate-pipe payload (default 1 MiB - 8 KiB). The
	// overlay's gossipsub must accept messages of this size plus 8 KiB of envelope.
	MaxPropagateSize int

	// WindowMessages and WindowBytes bound the messages an output end of a unicast pipe holds
	// unacknowledged (sent or queued); Send blocks when either is reached (default 4096 messages,
	// 16 MiB). Unacknowledged messages are re-sent to another bound peer on failover.
	WindowMessages int
	WindowBytes    int
	// RecvQueue is the number of received messages an input pipe buffers for Recv (default
	// 1024). A unicast stream stops reading when it is full (back-pressure); a propagate message
	// is dropped and counted.
	RecvQueue int
	// AcceptBacklog is the number of bidirectional connections waiting for Accept (default 64).
	AcceptBacklog int
	// StreamBuffer is the read and write buffer of each stream (default 64 KiB).
	StreamBuffer int

	// BindingTTL is the lifetime of a published binding; it is re-published at half of it
	// (default 10 min).
	BindingTTL time.Duration
	// ResolveTTL is how long resolved bindings are cached before a sender resolves again
	// (default 15 s). A failure invalidates them at once.
	ResolveTTL time.Duration
	// HandshakeTimeout bounds opening a stream, its hello and status (default 10 s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a unicast stream that carried nothing for this long (default 2 min).
	IdleTimeout time.Duration
	// RetryMin and RetryMax bound the back-off of an output end that finds no reachable bound
	// peer (default 100 ms, 2 s).
	RetryMin, RetryMax time.Duration
	// FailedPeerTTL is how long a peer that failed is passed over when others are bound
	// (default 30 s).
	FailedPeerTTL time.Duration

	// ReplayWindow is the number of sequence numbers remembered per sender and pipe for
	// de-duplication and replay rejection (default 4096, rounded up to a multiple of 64).
	ReplayWindow int
	// MaxSenders bounds the senders remembered per propagate pipe (default 4096).
	MaxSenders int
	// GossipBuffer is the gossipsub subscription buffer of a propagate pipe (default 8192).
	GossipBuffer int
	// TrustGossipAuthor says that the overlay's PubSub verifies every message's author
	// signature (pubsub.StrictSign). Then a propagate message that arrives by gossipsub from
	// its own author is not verified a second time (halves the signature checks on that
	// carrier); one forwarded under another author is still verified. Default false.
	TrustGossipAuthor bool

	// Multicast configures native UDP multicast.
	Multicast MulticastConfig
}

// MulticastConfig configures native UDP multicast: domain discovery by beacons, the propagate
// carrier and the raw bulk data channel.
type MulticastConfig struct {
	// Disabled turns native multicast off: propagate pipes use gossipsub only and the raw
	// channel is unavailable. Tests on loopback set it.
	Disabled bool
	// Interfaces names the interfaces to join (CLI --multicast-iface). Empty means every
	// interface that is up, multicast-capable and not loopback.
	Interfaces []string
	// Group4 and Group6 are the multicast groups (defaults 239.255.82.67 and ff12::5243:7069,
	// administratively scoped IPv4 and link-local transient IPv6).
	Group4, Group6 netip.Addr
	// HopLimit is the IPv4 TTL and IPv6 hop limit of multicast datagrams (default 8), so a
	// multicast domain can span segments joined by a multicast router (the paper's domain of
	// segments 2 and 3). The IPv6 group's scope still bounds where IPv6 datagrams go.
	HopLimit int
	// Port carries beacons and propagate-pipe datagrams; DataPort the raw data channel.
	Port, DataPort int
	// BeaconInterval is the period of beacons (default 1 s); a peer not heard for
	// BeaconExpiry (default 4 × interval) leaves the domain view.
	BeaconInterval, BeaconExpiry time.Duration
	// MaxDatagram is the largest propagate datagram sent by multicast (default 65000 bytes; IP
	// fragments it). Larger propagate messages go by gossipsub only.
	MaxDatagram int
	// SocketBuffer is the send and receive buffer of each socket (default 8 MiB; root may
	// exceed net.core.rmem_max).
	SocketBuffer int
	// DataSocketBuffer is the receive buffer of the data sockets (default 32 MiB; root may
	// exceed net.core.rmem_max): where datagrams wait while the consumer is behind.
	DataSocketBuffer int
	// DataQueue is the number of raw datagrams taken from the data sockets and waiting for
	// MulticastChannel.Recv (default 512). While it is full the reader waits (up to
	// DataQueueWait per read, after which that read's datagrams are dropped and counted) and
	// what arrives meanwhile stays in the socket buffer: kernel memory, not this process's.
	DataQueue int
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{
		MaxFrameSize:     4 << 20,
		MaxPropagateSize: 1<<20 - 8<<10,
		WindowMessages:   4096,
		WindowBytes:      16 << 20,
		RecvQueue:        1024,
		AcceptBacklog:    64,
		StreamBuffer:     64 << 10,
		BindingTTL:       10 * time.Minute,
		ResolveTTL:       15 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		IdleTimeout:      2 * time.Minute,
		RetryMin:         100 * time.Millisecond,
		RetryMax:         2 * time.Second,
		FailedPeerTTL:    30 * time.Second,
		ReplayWindow:     4096,
		MaxSenders:       4096,
		GossipBuffer:     8192,
		Multicast: MulticastConfig{
			Group4:           netip.MustParseAddr("239.255.82.67"),
			Group6:           netip.MustParseAddr("ff12::5243:7069"),
			Port:             DefaultPort,
			DataPort:         DefaultDataPort,
			BeaconInterval:   time.Second,
			BeaconExpiry:     4 * time.Second,
			HopLimit:         8,
			MaxDatagram:      65000,
			SocketBuffer:     8 << 20,
			DataSocketBuffer: 32 << 20,
			DataQueue:        512,
		},
	}
}

// maxFrameLimit is the hard ceiling of MaxFrameSize and MaxPropagateSize.
const maxFrameLimit = 64 << 20

func (c *Config) validate() error {
	var errs []error
	pos := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", name, v))
		}
	}
	posD := func(name string, v time.Duration) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", name, v))
		}
	}
	pos("MaxFrameSize", c.MaxFrameSize)
	pos("MaxPropagateSize", c.MaxPropagateSize)
	if c.MaxFrameSize > maxFrameLimit || c.MaxPropagateSize > maxFrameLimit {
		errs = append(errs, fmt.Errorf("MaxFrameSize and MaxPropagateSize must not exceed %d", maxFrameLimit))
	}
	pos("WindowMessages", c.WindowMessages)
	pos("WindowBytes", c.WindowBytes)
	if c.WindowBytes < c.MaxFrameSize {
		errs = append(errs, fmt.Errorf("WindowBytes (%d) must hold one message of MaxFrameSize (%d)", c.WindowBytes, c.MaxFrameSize))
	}
	pos("RecvQueue", c.RecvQueue)
	pos("AcceptBacklog", c.AcceptBacklog)
	if c.StreamBuffer < 4096 {
		errs = append(errs, fmt.Errorf("StreamBuffer must be at least 4096, got %d", c.StreamBuffer))
	}
	posD("BindingTTL", c.BindingTTL)
	posD("ResolveTTL", c.ResolveTTL)
	posD("HandshakeTimeout", c.HandshakeTimeout)
	posD("IdleTimeout", c.IdleTimeout)
	posD("RetryMin", c.RetryMin)
	if c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("RetryMax (%v) must not be below RetryMin (%v)", c.RetryMax, c.RetryMin))
	}
	posD("FailedPeerTTL", c.FailedPeerTTL)
	pos("ReplayWindow", c.ReplayWindow)
	pos("MaxSenders", c.MaxSenders)
	pos("GossipBuffer", c.GossipBuffer)
	m := &c.Multicast
	if !m.Disabled {
		if !m.Group4.Is4() || !m.Group4.IsMulticast() {
			errs = append(errs, fmt.Errorf("Multicast.Group4 must be an IPv4 multicast address, got %v", m.Group4))
		}
		if !m.Group6.Is6() || !m.Group6.IsMulticast() {
			errs = append(errs, fmt.Errorf("Multicast.Group6 must be an IPv6 multicast address, got %v", m.Group6))
		}
		if m.Port <= 0 || m.Port > 65535 || m.DataPort <= 0 || m.DataPort > 65535 || m.Port == m.DataPort {
			errs = append(errs, fmt.Errorf("Multicast.Port (%d) and DataPort (%d) must be distinct ports", m.Port, m.DataPort))
		}
		posD("Multicast.BeaconInterval", m.BeaconInterval)
		if m.BeaconExpiry <= m.BeaconInterval {
			errs = append(errs, fmt.Errorf("Multicast.BeaconExpiry (%v) must exceed BeaconInterval (%v)", m.BeaconExpiry, m.BeaconInterval))
		}
		if m.MaxDatagram < 512 || m.MaxDatagram > 65000 {
			errs = append(errs, fmt.Errorf("Multicast.MaxDatagram must be within 512..65000, got %d", m.MaxDatagram))
		}
		pos("Multicast.SocketBuffer", m.SocketBuffer)
		pos("Multicast.DataSocketBuffer", m.DataSocketBuffer)
		pos("Multicast.DataQueue", m.DataQueue)
	}
	if len(errs) > 0 {
		return fmt.Errorf("pipes: invalid config: %w", errors.Join(errs...))
	}
	return nil
}
