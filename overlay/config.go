package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// Role is what a node does for the overlay.
type Role string

// Roles.
const (
	RoleNode       Role = "node"       // an ordinary peer
	RoleRendezvous Role = "rendezvous" // bootstrap, DHT server, relay v2 service, advert index, tracker
)

// Config configures a Node. Start from DefaultConfig.
type Config struct {
	// DataDir holds the identity key, the advert cache and everything else the node keeps.
	// Empty means an in-memory node with a fresh key (tests, the demo).
	DataDir string
	// Role is RoleNode or RoleRendezvous.
	Role Role
	// Name is a human name published in the peer advertisement (default: a prefix of the peer ID).
	Name string
	// ListenAddrs default to TCP and QUIC on every interface, on free ports.
	ListenAddrs []ma.Multiaddr
	// Bootstrap peers (full multiaddrs with /p2p/); they also act as static relays and as the
	// rendezvous advert index for this node.
	Bootstrap []ma.Multiaddr
	// MDNS turns LAN discovery on (default true).
	MDNS bool
	// DHTServer forces the DHT into server mode (always true for rendezvous nodes). When false
	// the DHT runs in auto mode, serving when reachability is unknown or public.
	DHTServer bool
	// AdvertTTL is the lifetime of the adverts this node publishes (default 30 min); they are
	// refreshed at half their lifetime.
	AdvertTTL time.Duration
	// CacheEntries bounds the advert cache (default 10000).
	CacheEntries int
	// IndexQuota bounds how many adverts one peer may keep in a rendezvous index (default 256).
	IndexQuota int
	// QueryTimeout bounds one remote query to one peer (default 5 s).
	QueryTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives structured logs (default: discard).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Role:         RoleNode,
		MDNS:         true,
		AdvertTTL:    30 * time.Minute,
		CacheEntries: 10000,
		IndexQuota:   256,
		QueryTimeout: 5 * time.Second,
		Now:          time.Now,
		Logger:       slog.New(slog.DiscardHandler),
	}
}

func (c *Config) validate() error {
	switch c.Role {
	case RoleNode, RoleRendezvous:
	default:
		return fmt.Errorf("overlay: unknown role %q", c.Role)
	}
	if c.AdvertTTL < time.Second {
		return errors.New("overlay: AdvertTTL must be at least 1s")
	}
	if c.CacheEntries <= 0 || c.IndexQuota <= 0 || c.QueryTimeout <= 0 {
		return errors.New("overlay: CacheEntries, IndexQuota and QueryTimeout must be positive")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for _, a := range c.Bootstrap {
		if _, err := peerInfo(a); err != nil {
			return fmt.Errorf("overlay: bootstrap address %s: %w", a, err)
		}
	}
	return nil
}
