// Package bincodec is the compact binary codec of raftcast's peer-group commands, snapshots and
// control frames: unsigned and zigzag varints (shortest form only), length-prefixed byte
// strings, peer IDs as their bytes, times as Unix milliseconds (0 = the zero time) and
// multiaddrs as their binary form.
//
// An Encoder appends to a byte slice and cannot fail. A Decoder is bounded everywhere (every
// length is checked against a limit and against the bytes left, so a hostile length cannot
// make the caller allocate much) and sticky: after the first error every read returns a zero
// value, and Err or Finish reports that first error, wrapped around the sentinel the Decoder
// was made with so callers can tell malformed input apart with errors.Is.
package bincodec

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// MaxPeerIDLen bounds a peer ID's bytes.
const MaxPeerIDLen = 128

// Encoder appends encoded values to B.
type Encoder struct{ B []byte }

// U8 appends one byte.
func (e *Encoder) U8(v uint8) { e.B = append(e.B, v) }

// Uvarint appends an unsigned varint.
func (e *Encoder) Uvarint(v uint64) { e.B = binary.AppendUvarint(e.B, v) }

// Varint appends a zigzag varint.
func (e *Encoder) Varint(v int64) { e.B = binary.AppendVarint(e.B, v) }

// Bytes appends a length-prefixed byte string.
func (e *Encoder) Bytes(b []byte) { e.Uvarint(uint64(len(b))); e.B = append(e.B, b...) }

// Str appends a length-prefixed string.
func (e *Encoder) Str(s string) { e.Uvarint(uint64(len(s))); e.B = append(e.B, s...) }

// Peer appends a peer ID (empty allowed, see Decoder.PeerOpt).
func (e *Encoder) Peer(p peer.ID) { e.Str(string(p)) }

// Fixed appends b as it is, with no length.
func (e *Encoder) Fixed(b []byte) { e.B = append(e.B, b...) }

// Count appends a list length.
func (e *Encoder) Count(n int) { e.Uvarint(uint64(n)) }

// Bool appends a boolean as one byte, 0 or 1.
func (e *Encoder) Bool(v bool) {
	if v {
		e.U8(1)
		return
	}
	e.U8(0)
}

// Time appends t as Unix milliseconds, 0 for the zero time.
func (e *Encoder) Time(t time.Time) {
	if t.IsZero() {
		e.Varint(0)
		return
	}
	e.Varint(t.UnixMilli())
}

// Addrs appends a list of multiaddrs.
func (e *Encoder) Addrs(as []ma.Multiaddr) {
	e.Count(len(as))
	for _, a := range as {
		e.Bytes(a.Bytes())
	}
}

// Peers appends a list of peer IDs.
func (e *Encoder) Peers(ps []peer.ID) {
	e.Count(len(ps))
	for _, p := range ps {
		e.Peer(p)
	}
}

// Uint32s appends a list of unsigned integers (slice indexes).
func (e *Encoder) Uint32s(s []uint32) {
	e.Count(len(s))
	for _, v := range s {
		e.Uvarint(uint64(v))
	}
}

// Encode returns what f appends to an empty Encoder: a message's bytes.
func Encode(f func(*Encoder)) []byte {
	e := Encoder{B: make([]byte, 0, 64)}
	f(&e)
	return e.B
}

// Decode decodes all of b with f (nil: b must be empty) and returns the first error, or an
// error if bytes are left over, wrapped around sentinel.
func Decode(b []byte, sentinel error, f func(*Decoder)) error {
	d := NewDecoder(b, sentinel)
	if f != nil {
		f(&d)
	}
	return d.Finish()
}

// Decoder reads values from a byte slice. The zero Decoder is not usable: make one with
// NewDecoder.
type Decoder struct {
	b        []byte
	err      error
	sentinel error
}

// NewDecoder returns a decoder of b whose errors wrap sentinel.
func NewDecoder(b []byte, sentinel error) Decoder {
	return Decoder{b: b, sentinel: sentinel}
}

// Err returns the first error, or nil.
func (d *Decoder) Err() error { return d.err }

// Len returns the number of bytes not read yet (0 after an error).
func (d *Decoder) Len() int { return len(d.b) }

// Rest returns the bytes not read yet, without copying, and leaves nothing to read: for a
// bulk payload at the end of a frame.
func (d *Decoder) Rest() []byte {
	b := d.b
	d.b = nil
	return b
}

// Fail records an error (if none is recorded yet) and stops decoding: callers use it for
// values that decode but make no sense.
func (d *Decoder) Fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{d.sentinel}, args...)...)
	}
	d.b = nil
}

// Finish returns the first error, or an error if bytes are left over.
func (d *Decoder) Finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.Fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// U8 reads one byte.
func (d *Decoder) U8() uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.Fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// uvarint reads the bytes of a shortest-form varint.
func (d *Decoder) uvarint() (uint64, bool) {
	if d.err != nil {
		return 0, false
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) { // truncated, overflow, or not the shortest form
		d.Fail("bad varint")
		return 0, false
	}
	d.b = d.b[n:]
	return v, true
}

// Uvarint reads an unsigned varint.
func (d *Decoder) Uvarint() uint64 {
	v, _ := d.uvarint()
	return v
}

// Varint reads a zigzag varint.
func (d *Decoder) Varint() int64 {
	u, ok := d.uvarint()
	if !ok {
		return 0
	}
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

// Count reads a list length bounded by max and by the bytes left (each element takes at least
// one byte).
func (d *Decoder) Count(max int, what string) int {
	v, ok := d.uvarint()
	if !ok {
		return 0
	}
	if v > uint64(max) || v > uint64(len(d.b)) {
		d.Fail("%s: %d elements (limit %d, %d bytes left)", what, v, max, len(d.b))
		return 0
	}
	return int(v)
}

// Fixed reads n bytes into a new slice.
func (d *Decoder) Fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.Fail("truncated")
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b[:n])
	d.b = d.b[n:]
	return out
}

// Bytes reads a length-prefixed byte string of at most max bytes into a new slice.
func (d *Decoder) Bytes(max int, what string) []byte {
	v, ok := d.uvarint()
	if !ok {
		return nil
	}
	if v > uint64(max) || v > uint64(len(d.b)) {
		d.Fail("%s: %d bytes (limit %d, %d bytes left)", what, v, max, len(d.b))
		return nil
	}
	return d.Fixed(int(v))
}

// Str reads a length-prefixed string of at most max bytes.
func (d *Decoder) Str(max int, what string) string { return string(d.Bytes(max, what)) }

// Bool reads a boolean; a byte other than 0 or 1 is an error.
func (d *Decoder) Bool() bool {
	switch d.U8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.Fail("bad bool")
	return false
}

// Time reads a time written by Encoder.Time, in UTC.
func (d *Decoder) Time() time.Time {
	v := d.Varint()
	if d.err != nil || v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// PeerOpt reads a peer ID that may be empty.
func (d *Decoder) PeerOpt() peer.ID {
	b := d.Bytes(MaxPeerIDLen, "peer ID")
	if d.err != nil || len(b) == 0 {
		return ""
	}
	p, err := peer.IDFromBytes(b)
	if err != nil {
		d.Fail("peer ID: %v", err)
		return ""
	}
	return p
}

// Peer reads a peer ID that must be present.
func (d *Decoder) Peer() peer.ID {
	p := d.PeerOpt()
	if d.err == nil && p == "" {
		d.Fail("empty peer ID")
	}
	return p
}

// Peers reads a list of at most max peer IDs, none empty.
func (d *Decoder) Peers(max int, what string) []peer.ID {
	n := d.Count(max, what)
	if n == 0 {
		return nil
	}
	out := make([]peer.ID, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.Peer())
	}
	return out
}

// Addrs reads a list of at most max multiaddrs of at most maxLen bytes each.
func (d *Decoder) Addrs(max, maxLen int) []ma.Multiaddr {
	n := d.Count(max, "addrs")
	if n == 0 {
		return nil
	}
	out := make([]ma.Multiaddr, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		b := d.Bytes(maxLen, "addr")
		if d.err != nil {
			break
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			d.Fail("addr: %v", err)
			break
		}
		out = append(out, a)
	}
	return out
}

// Uint32s reads a list of at most max integers, each below max (slice indexes of a resource
// of at most max slices).
func (d *Decoder) Uint32s(max int, what string) []uint32 {
	n := d.Count(max, what)
	if n == 0 {
		return nil
	}
	out := make([]uint32, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		v := d.Uvarint()
		if d.err == nil && v >= uint64(max) {
			d.Fail("%s: %d out of range (limit %d)", what, v, max)
			return nil
		}
		out = append(out, uint32(v))
	}
	return out
}
