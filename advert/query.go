package advert

import (
	"encoding/binary"
	"fmt"
	"path"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Query selects advertisements. Zero fields match anything: Kind 0 any kind, ID "" any ID,
// Name "" any name, Publisher "" any publisher, no Attrs any attributes.
type Query struct {
	Kind Kind
	// ID matches exactly.
	ID string
	// Name is a glob in path.Match syntax ("*", "?", "[a-z]", "\\" escapes); as in path.Match,
	// "*" does not match "/" (use "files/*/*.pdf" for "files/content/report.pdf").
	Name string
	// Attrs must all be present with exactly these values.
	Attrs     map[string]string
	Publisher peer.ID
	// Limit caps the number of results (0: no limit; at most MaxQueryLimit).
	Limit int
}

// Validate checks the query's limits; errors wrap ErrUnknownKind, ErrTooLarge or ErrMalformed.
func (q Query) Validate() error {
	if q.Kind != 0 && !q.Kind.Valid() {
		return fmt.Errorf("%w %d in query", ErrUnknownKind, uint8(q.Kind))
	}
	if err := checkString("query id", q.ID, MaxIDLen); err != nil {
		return err
	}
	if err := checkString("query name", q.Name, MaxNameLen); err != nil {
		return err
	}
	if _, err := path.Match(q.Name, ""); err != nil {
		return fmt.Errorf("%w: query name %q is not a valid glob: %v", ErrMalformed, q.Name, err)
	}
	if len(q.Attrs) > MaxAttrs {
		return fmt.Errorf("%w: query has %d attrs (max %d)", ErrTooLarge, len(q.Attrs), MaxAttrs)
	}
	for k, v := range q.Attrs {
		if err := checkAttr(k, v); err != nil {
			return fmt.Errorf("query: %w", err)
		}
	}
	if q.Publisher != "" {
		if len(q.Publisher) > MaxPublisherLen {
			return fmt.Errorf("%w: query publisher is %d bytes (max %d)", ErrTooLarge, len(q.Publisher), MaxPublisherLen)
		}
		if _, err := peer.IDFromBytes([]byte(q.Publisher)); err != nil {
			return fmt.Errorf("%w: query publisher is not a peer ID: %v", ErrMalformed, err)
		}
	}
	if q.Limit < 0 {
		return fmt.Errorf("%w: query limit %d is negative", ErrMalformed, q.Limit)
	}
	if q.Limit > MaxQueryLimit {
		return fmt.Errorf("%w: query limit %d (max %d)", ErrTooLarge, q.Limit, MaxQueryLimit)
	}
	return nil
}

// Match reports whether a satisfies the query. It does not look at expiry (the Cache does),
// and an invalid Name pattern matches nothing.
func (q Query) Match(a *Advert) bool {
	if a == nil {
		return false
	}
	if q.Kind != 0 && a.Kind != q.Kind {
		return false
	}
	if q.ID != "" && a.ID != q.ID {
		return false
	}
	if q.Publisher != "" && a.Publisher != q.Publisher {
		return false
	}
	for k, v := range q.Attrs {
		if av, ok := a.Attrs[k]; !ok || av != v {
			return false
		}
	}
	if q.Name != "" {
		if ok, err := path.Match(q.Name, a.Name); err != nil || !ok {
			return false
		}
	}
	return true
}

// Wire format of a Query (version 1), same conventions as the advert encoding:
//
//	version   byte    = 1
//	kind      byte    (0 = any, else 1..5)
//	id        bytes   (0..MaxIDLen)
//	name      bytes   (glob, 0..MaxNameLen)
//	publisher bytes   (0 = any, else a peer ID multihash up to MaxPublisherLen)
//	nattrs    uvarint (0..MaxAttrs), then key/value bytes pairs, keys strictly increasing
//	limit     uvarint (0..MaxQueryLimit)
const queryWireVersion = 1

// MarshalBinary returns the canonical encoding of a valid query.
func (q Query) MarshalBinary() ([]byte, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 64+len(q.ID)+len(q.Name)+len(q.Publisher))
	b = append(b, queryWireVersion, byte(q.Kind))
	b = appendString(b, q.ID)
	b = appendString(b, q.Name)
	b = appendString(b, string(q.Publisher))
	b = appendAttrs(b, q.Attrs)
	return binary.AppendUvarint(b, uint64(q.Limit)), nil
}

// UnmarshalBinary decodes a query strictly (as Advert.UnmarshalBinary does) and validates it.
// On error q is left unchanged.
func (q *Query) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	if v := r.byte("query version"); r.err == nil && v != queryWireVersion {
		return fmt.Errorf("%w: unsupported query version %d", ErrMalformed, v)
	}
	d := Query{Kind: Kind(r.byte("query kind"))}
	d.ID = r.str("query id", MaxIDLen)
	d.Name = r.str("query name", MaxNameLen)
	d.Publisher = peer.ID(r.bytes("query publisher", MaxPublisherLen))
	if attrs := r.attrs(); len(attrs) > 0 {
		d.Attrs = attrs
	}
	d.Limit = r.count("query limit", MaxQueryLimit)
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%w: %d trailing bytes after query", ErrMalformed, len(r.b)))
	}
	if r.err != nil {
		return r.err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	*q = d
	return nil
}
