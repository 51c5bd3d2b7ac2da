package pipes

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/raftcast/raftcast/advert"
	"github.com/zeebo/blake3"
)

// Kind is the kind of a pipe.
type Kind uint8

// Pipe kinds.
const (
	// Unicast: each message goes to one bound peer, failing over to another.
	Unicast Kind = 1 + iota
	// Bidi: a reliable full-duplex connection between two peers.
	Bidi
	// Propagate: each message goes to every peer bound in the group.
	Propagate
)

var kindNames = [...]string{Unicast: "unicast", Bidi: "bidi", Propagate: "propagate"}

// String returns the kind's name as used on the command line and in advertisements.
func (k Kind) String() string {
	if k >= Unicast && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("pipekind(%d)", uint8(k))
}

// ParseKind parses "unicast", "bidi" or "propagate".
func ParseKind(s string) (Kind, error) {
	for k := Unicast; int(k) < len(kindNames); k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("pipes: unknown pipe kind %q (want unicast, bidi or propagate)", s)
}

// PipeSpec names a pipe (JXTA's pipe advertisement).
//
// A pipe is identified by its ID. When ID is empty it is derived from (Group, Kind, Name), so
// peers that agree on a name, kind and group meet on the same pipe without exchanging IDs.
type PipeSpec struct {
	ID    string
	Name  string
	Kind  Kind
	Group string // default DefaultGroup
}

// Normalize returns the spec with its defaults filled in (Group, ID) and checks it.
func (s PipeSpec) Normalize() (PipeSpec, error) {
	if s.Group == "" {
		s.Group = DefaultGroup
	}
	if s.Kind < Unicast || int(s.Kind) >= len(kindNames) {
		return s, fmt.Errorf("pipes: spec %q: %w", s.Name, ErrBadSpec)
	}
	if s.ID == "" {
		if s.Name == "" {
			return s, fmt.Errorf("pipes: spec needs an ID or a name: %w", ErrBadSpec)
		}
		s.ID = DerivePipeID(s.Group, s.Kind, s.Name)
	}
	if len(s.ID) > advert.MaxIDLen || len(s.Name) > advert.MaxNameLen || len(s.Group) > advert.MaxAttrValueLen {
		return s, fmt.Errorf("pipes: spec ID, name or group too long: %w", ErrBadSpec)
	}
	if strings.ContainsAny(s.Group, "/") {
		return s, fmt.Errorf("pipes: group %q must not contain '/': %w", s.Group, ErrBadSpec)
	}
	return s, nil
}

// DerivePipeID returns the ID of the pipe named name of kind k in group: "pipe-" and 32 hex
// digits of BLAKE3("raftcast/pipe\x00" group "\x00" kind "\x00" name).
func DerivePipeID(group string, k Kind, name string) string {
	h := blake3.New()
	_, _ = h.WriteString("raftcast/pipe\x00" + group + "\x00" + k.String() + "\x00" + name)
	sum := h.Sum(nil)
	return "pipe-" + hex.EncodeToString(sum[:16])
}

// Advert returns the pipe advertisement of s that a bound peer publishes (the overlay sets
// the publisher, times and sequence number). bound is false for the withdrawal published when
// the input end closes.
func (s PipeSpec) Advert(bound bool) *advert.Advert {
	b := "false"
	if bound {
		b = "true"
	}
	return &advert.Advert{
		Kind: advert.KindPipe,
		ID:   s.ID,
		Name: s.Name,
		Attrs: map[string]string{
			AttrKind:  s.Kind.String(),
			AttrGroup: s.Group,
			AttrBound: b,
		},
	}
}

// SpecFromAdvert reads the pipe spec of a pipe advertisement.
func SpecFromAdvert(a *advert.Advert) (PipeSpec, error) {
	if a == nil || a.Kind != advert.KindPipe {
		return PipeSpec{}, fmt.Errorf("pipes: not a pipe advertisement: %w", ErrBadSpec)
	}
	k, err := ParseKind(a.Attrs[AttrKind])
	if err != nil {
		return PipeSpec{}, err
	}
	return PipeSpec{ID: a.ID, Name: a.Name, Kind: k, Group: a.Attrs[AttrGroup]}.Normalize()
}
