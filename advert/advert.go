package advert

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Kind is the kind of an advertisement.
type Kind uint8

// The advertisement kinds. The numeric values are part of the wire format.
const (
	KindPeer Kind = 1 + iota
	KindGroup
	KindPipe
	KindContent
	KindRendezvous
)

var kindNames = [...]string{KindPeer: "peer", KindGroup: "group", KindPipe: "pipe", KindContent: "content", KindRendezvous: "rendezvous"}

// String returns the kind's name as used on the command line and in JSON.
func (k Kind) String() string {
	if k >= KindPeer && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k >= KindPeer && int(k) < len(kindNames) }

// ParseKind parses a kind name ("peer", "group", "pipe", "content", "rendezvous").
func ParseKind(s string) (Kind, error) {
	for k := KindPeer; int(k) < len(kindNames); k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%w %q (want peer, group, pipe, content or rendezvous)", ErrUnknownKind, s)
}

// Limits enforced on every advertisement, encoded or decoded.
const (
	MaxEnvelopeSize = 16 << 10 // a whole signed envelope on the wire
	MaxBodySize     = 8 << 10  // the kind-specific body
	MaxIDLen        = 128
	MaxNameLen      = 256
	MaxAttrs        = 32
	MaxAttrKeyLen   = 64
	MaxAttrValueLen = 256
	MaxAddrs        = 32
	MaxLifetime     = 7 * 24 * time.Hour
)

// Sentinel errors; every rejection wraps exactly one of them.
var (
	ErrUnknownKind       = errors.New("advert: unknown kind")
	ErrMalformed         = errors.New("advert: malformed")
	ErrTooLarge          = errors.New("advert: too large")
	ErrBadSignature      = errors.New("advert: bad signature")
	ErrPublisherMismatch = errors.New("advert: signer is not the publisher")
	ErrExpired           = errors.New("advert: expired")
	ErrStale             = errors.New("advert: stale sequence number")
)

// Advert is one advertisement: a named, attributed resource published by a peer.
//
// An advertisement is identified by Key (kind, ID, publisher); of two with the same key the
// higher Seq wins. For KindPeer the ID is the publisher's peer ID string.
type Advert struct {
	Kind      Kind
	ID        string
	Name      string
	Publisher peer.ID
	Seq       uint64
	Created   time.Time // encoded with millisecond precision
	Expires   time.Time // encoded with millisecond precision
	Attrs     map[string]string
	Addrs     []ma.Multiaddr
	Body      []byte // kind-specific payload, encoded by the package that owns the kind
}

// Key identifies an advertisement in caches and indexes.
type Key struct {
	Kind      Kind
	ID        string
	Publisher peer.ID
}

// String renders the key as "kind/id/publisher".
func (k Key) String() string { return k.Kind.String() + "/" + k.ID + "/" + k.Publisher.String() }

// Key returns the advertisement's key.
func (a *Advert) Key() Key { return Key{Kind: a.Kind, ID: a.ID, Publisher: a.Publisher} }

// Expired reports whether the advertisement has expired at now.
func (a *Advert) Expired(now time.Time) bool { return !now.Before(a.Expires) }

// Further limits, derived from the ones above.
const (
	// MaxAddrLen bounds one multiaddr in binary form.
	MaxAddrLen = 512
	// MaxPublisherLen bounds the publisher's peer ID in binary (multihash) form.
	MaxPublisherLen = 128
	// MaxQueryLimit bounds Query.Limit (0 means no limit).
	MaxQueryLimit = 10000
)

// Reason maps an error to the short reason string used in Stats.Rejected and in metrics:
// "malformed", "too_large", "bad_signature", "publisher_mismatch", "expired", "stale",
// "unknown_kind"; "" for nil and "other" for an error that wraps none of the sentinels.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrUnknownKind):
		return "unknown_kind"
	case errors.Is(err, ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, ErrPublisherMismatch):
		return "publisher_mismatch"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrStale):
		return "stale"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	default:
		return "other"
	}
}
