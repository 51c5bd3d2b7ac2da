package advert

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Wire format of an Advert (version 1). All integers are unsigned varints (minimal encoding
// required); "bytes" is a uvarint length followed by that many bytes.
//
//	version   byte    = 1
//	kind      byte    (1..5)
//	id        bytes   (UTF-8, 1..MaxIDLen)
//	name      bytes   (UTF-8, 0..MaxNameLen)
//	publisher bytes   (peer ID multihash, 1..MaxPublisherLen)
//	seq       uvarint
//	created   uvarint (Unix milliseconds)
//	expires   uvarint (Unix milliseconds)
//	nattrs    uvarint (0..MaxAttrs), then per attribute, keys strictly increasing:
//	  key     bytes   (UTF-8, 1..MaxAttrKeyLen)
//	  value   bytes   (UTF-8, 0..MaxAttrValueLen)
//	naddrs    uvarint (0..MaxAddrs), then per address:
//	  addr    bytes   (binary multiaddr, 1..MaxAddrLen)
//	body      bytes   (0..MaxBodySize)
//
// Nothing may follow the body.
const wireVersion = 1

// maxUnixMilli is the last millisecond of year 9999: later times are rejected.
const maxUnixMilli = 253402300799999

// Validate checks every limit and rule on the advertisement. Errors wrap ErrUnknownKind,
// ErrTooLarge or ErrMalformed and name the offending field.
func (a *Advert) Validate() error {
	if a == nil {
		return fmt.Errorf("%w: nil advert", ErrMalformed)
	}
	if !a.Kind.Valid() {
		return fmt.Errorf("%w %d", ErrUnknownKind, uint8(a.Kind))
	}
	if err := checkString("id", a.ID, MaxIDLen); err != nil {
		return err
	}
	if a.ID == "" {
		return fmt.Errorf("%w: id is empty", ErrMalformed)
	}
	if err := checkString("name", a.Name, MaxNameLen); err != nil {
		return err
	}
	if a.Publisher == "" {
		return fmt.Errorf("%w: publisher is empty", ErrMalformed)
	}
	if len(a.Publisher) > MaxPublisherLen {
		return fmt.Errorf("%w: publisher is %d bytes (max %d)", ErrTooLarge, len(a.Publisher), MaxPublisherLen)
	}
	if _, err := peer.IDFromBytes([]byte(a.Publisher)); err != nil {
		return fmt.Errorf("%w: publisher is not a peer ID: %v", ErrMalformed, err)
	}
	if a.Kind == KindPeer && a.ID != a.Publisher.String() {
		return fmt.Errorf("%w: id of a peer advert must be the publisher's peer ID %s, not %q", ErrMalformed, a.Publisher, a.ID)
	}
	created, expires := a.Created.UnixMilli(), a.Expires.UnixMilli()
	if created <= 0 || created > maxUnixMilli {
		return fmt.Errorf("%w: created %v is out of range", ErrMalformed, a.Created)
	}
	if expires <= 0 || expires > maxUnixMilli {
		return fmt.Errorf("%w: expires %v is out of range", ErrMalformed, a.Expires)
	}
	if expires <= created {
		return fmt.Errorf("%w: expires %v is not after created %v", ErrMalformed, a.Expires, a.Created)
	}
	if life := time.Duration(expires-created) * time.Millisecond; life > MaxLifetime {
		return fmt.Errorf("%w: lifetime %v exceeds %v", ErrMalformed, life, MaxLifetime)
	}
	if len(a.Attrs) > MaxAttrs {
		return fmt.Errorf("%w: %d attrs (max %d)", ErrTooLarge, len(a.Attrs), MaxAttrs)
	}
	for k, v := range a.Attrs {
		if err := checkAttr(k, v); err != nil {
			return err
		}
	}
	if len(a.Addrs) > MaxAddrs {
		return fmt.Errorf("%w: %d addrs (max %d)", ErrTooLarge, len(a.Addrs), MaxAddrs)
	}
	for i, m := range a.Addrs {
		if len(m) == 0 {
			return fmt.Errorf("%w: addr %d is empty", ErrMalformed, i)
		}
		if n := len(m.Bytes()); n > MaxAddrLen {
			return fmt.Errorf("%w: addr %d is %d bytes (max %d)", ErrTooLarge, i, n, MaxAddrLen)
		}
	}
	if len(a.Body) > MaxBodySize {
		return fmt.Errorf("%w: body is %d bytes (max %d)", ErrTooLarge, len(a.Body), MaxBodySize)
	}
	return nil
}

func checkString(field, s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s is %d bytes (max %d)", ErrTooLarge, field, len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrMalformed, field)
	}
	return nil
}

func checkAttr(k, v string) error {
	if k == "" {
		return fmt.Errorf("%w: empty attr key", ErrMalformed)
	}
	if err := checkString("attr key", k, MaxAttrKeyLen); err != nil {
		return err
	}
	if err := checkString("attr "+k, v, MaxAttrValueLen); err != nil {
		return err
	}
	return nil
}

// MarshalBinary returns the canonical encoding of the advertisement after validating it.
// Times are encoded in whole milliseconds (truncated).
func (a *Advert) MarshalBinary() ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	size := 2 + 3*binary.MaxVarintLen64 + len(a.ID) + len(a.Name) + len(a.Publisher) + 3*binary.MaxVarintLen64 + binary.MaxVarintLen16*2 + len(a.Body) + binary.MaxVarintLen16
	for k, v := range a.Attrs {
		size += len(k) + len(v) + 2*binary.MaxVarintLen16
	}
	for _, m := range a.Addrs {
		size += len(m.Bytes()) + binary.MaxVarintLen16
	}
	b := make([]byte, 0, size)
	b = append(b, wireVersion, byte(a.Kind))
	b = appendString(b, a.ID)
	b = appendString(b, a.Name)
	b = appendString(b, string(a.Publisher))
	b = binary.AppendUvarint(b, a.Seq)
	b = binary.AppendUvarint(b, uint64(a.Created.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(a.Expires.UnixMilli()))
	b = appendAttrs(b, a.Attrs)
	b = binary.AppendUvarint(b, uint64(len(a.Addrs)))
	for _, m := range a.Addrs {
		b = appendBytes(b, m.Bytes())
	}
	b = appendBytes(b, a.Body)
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendAttrs(b []byte, attrs map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(attrs)))
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, attrs[k])
	}
	return b
}

// UnmarshalBinary decodes the canonical encoding strictly (trailing bytes, non-minimal
// varints, unsorted or duplicate attrs, over-limit lengths and unknown kinds are all
// rejected) and validates the result. On error a is left unchanged.
func (a *Advert) UnmarshalBinary(b []byte) error {
	d, err := decodeAdvert(b)
	if err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	*a = *d
	return nil
}

// decodeAdvert parses the wire form, enforcing the size limits as it reads (so nothing is
// allocated from an unchecked length), but does not run the semantic checks of Validate.
func decodeAdvert(b []byte) (*Advert, error) {
	r := reader{b: b}
	if v := r.byte("version"); r.err == nil && v != wireVersion {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrMalformed, v)
	}
	kind := Kind(r.byte("kind"))
	if r.err == nil && !kind.Valid() {
		return nil, fmt.Errorf("%w %d", ErrUnknownKind, uint8(kind))
	}
	a := &Advert{Kind: kind}
	a.ID = r.str("id", MaxIDLen)
	a.Name = r.str("name", MaxNameLen)
	a.Publisher = peer.ID(r.bytes("publisher", MaxPublisherLen))
	a.Seq = r.uvarint("seq")
	a.Created = r.millis("created")
	a.Expires = r.millis("expires")
	a.Attrs = r.attrs()
	if n := r.count("addrs", MaxAddrs); n > 0 {
		a.Addrs = make([]ma.Multiaddr, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			raw := r.bytes("addr", MaxAddrLen)
			if r.err != nil {
				break
			}
			m, err := ma.NewMultiaddrBytes(raw)
			if err != nil || len(m) == 0 || !bytes.Equal(m.Bytes(), raw) {
				r.fail(fmt.Errorf("%w: addr %d is not a canonical multiaddr: %v", ErrMalformed, i, err))
				break
			}
			a.Addrs = append(a.Addrs, m)
		}
	}
	if body := r.bytes("body", MaxBodySize); len(body) > 0 {
		a.Body = bytes.Clone(body)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b)))
	}
	if r.err != nil {
		return nil, r.err
	}
	return a, nil
}

// reader is a strict, bounded decoder over a byte slice. After the first error every read
// returns a zero value and the error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) byte(field string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail(fmt.Errorf("%w: truncated at %s", ErrMalformed, field))
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	switch {
	case n == 0:
		r.fail(fmt.Errorf("%w: truncated at %s", ErrMalformed, field))
		return 0
	case n < 0:
		r.fail(fmt.Errorf("%w: %s overflows 64 bits", ErrMalformed, field))
		return 0
	case n > 1 && r.b[n-1] == 0:
		r.fail(fmt.Errorf("%w: %s is not minimally encoded", ErrMalformed, field))
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length or count and checks it against maxN before anyone allocates from it.
func (r *reader) count(field string, maxN int) int {
	v := r.uvarint(field)
	if r.err != nil {
		return 0
	}
	if v > uint64(maxN) {
		r.fail(fmt.Errorf("%w: %s is %d (max %d)", ErrTooLarge, field, v, maxN))
		return 0
	}
	return int(v)
}

// bytes returns a sub-slice of the input (not a copy) of at most maxLen bytes.
func (r *reader) bytes(field string, maxLen int) []byte {
	n := r.count(field+" length", maxLen)
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail(fmt.Errorf("%w: %s is %d bytes but only %d remain", ErrMalformed, field, n, len(r.b)))
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

func (r *reader) str(field string, maxLen int) string {
	s := r.bytes(field, maxLen)
	if r.err != nil {
		return ""
	}
	if !utf8.Valid(s) {
		r.fail(fmt.Errorf("%w: %s is not valid UTF-8", ErrMalformed, field))
		return ""
	}
	return string(s)
}

func (r *reader) millis(field string) time.Time {
	v := r.uvarint(field)
	if r.err != nil {
		return time.Time{}
	}
	if v == 0 || v > maxUnixMilli {
		r.fail(fmt.Errorf("%w: %s %d ms is out of range", ErrMalformed, field, v))
		return time.Time{}
	}
	return time.UnixMilli(int64(v)).UTC()
}

// attrs reads a count and that many key/value pairs, keys strictly increasing. It always
// returns a non-nil map on success.
func (r *reader) attrs() map[string]string {
	n := r.count("attrs", MaxAttrs)
	if r.err != nil {
		return nil
	}
	m := make(map[string]string, n)
	prev := ""
	for i := 0; i < n; i++ {
		k := r.str("attr key", MaxAttrKeyLen)
		v := r.str("attr value", MaxAttrValueLen)
		if r.err != nil {
			return nil
		}
		if k == "" {
			r.fail(fmt.Errorf("%w: empty attr key", ErrMalformed))
			return nil
		}
		if i > 0 && k <= prev {
			r.fail(fmt.Errorf("%w: attr key %q is not after %q (keys must be sorted and unique)", ErrMalformed, k, prev))
			return nil
		}
		m[k] = v
		prev = k
	}
	return m
}
