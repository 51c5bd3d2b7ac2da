package peergroup

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// The compact binary codec shared by commands, snapshots, the group info and the wire frames:
// unsigned varints, zigzag varints, length-prefixed byte strings, peer IDs as their bytes,
// times as Unix milliseconds (0 = the zero time), multiaddrs as their binary form.
// The decoder is bounded everywhere (every length is checked against a limit and against the
// bytes left) and sticky: after the first error every read returns a zero value.

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

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)       { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(b []byte)   { e.uvarint(uint64(len(b))); e.b = append(e.b, b...) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) peer(p peer.ID)   { e.str(string(p)) }
func (e *encoder) fixed(b []byte)   { e.b = append(e.b, b...) }
func (e *encoder) count(n int)      { e.uvarint(uint64(n)) }

func (e *encoder) boolean(v bool) {
	if v {
		e.u8(1)
		return
	}
	e.u8(0)
}

func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.varint(0)
		return
	}
	e.varint(t.UnixMilli())
}

func (e *encoder) addrs(as []ma.Multiaddr) {
	e.count(len(as))
	for _, a := range as {
		e.bytes(a.Bytes())
	}
}

func (e *encoder) peers(ps []peer.ID) {
	e.count(len(ps))
	for _, p := range ps {
		e.peer(p)
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	d.b = nil
}

func (d *decoder) u8() uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a list length bounded by max and by the bytes left (each element takes at least
// one byte), so a hostile length cannot make the caller allocate much.
func (d *decoder) count(max int, what string) int {
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(max) || v > uint64(len(d.b)) {
		d.fail("%s: %d elements (limit %d, %d bytes left)", what, v, max, len(d.b))
		return 0
	}
	return int(v)
}

func (d *decoder) fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b[:n])
	d.b = d.b[n:]
	return out
}

func (d *decoder) bytes(max int, what string) []byte {
	v := d.uvarint()
	if d.err != nil {
		return nil
	}
	if v > uint64(max) {
		d.fail("%s: %d bytes (limit %d)", what, v, max)
		return nil
	}
	return d.fixed(int(v))
}

func (d *decoder) str(max int, what string) string { return string(d.bytes(max, what)) }

func (d *decoder) boolean() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("bad bool")
		return false
	}
}

func (d *decoder) time() time.Time {
	v := d.varint()
	if d.err != nil || v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// peerOpt reads a peer ID that may be empty.
func (d *decoder) peerOpt() peer.ID {
	b := d.bytes(maxPeerIDLen, "peer ID")
	if d.err != nil || len(b) == 0 {
		return ""
	}
	p, err := peer.IDFromBytes(b)
	if err != nil {
		d.fail("peer ID: %v", err)
		return ""
	}
	return p
}

// peer reads a peer ID that must be present.
func (d *decoder) peer() peer.ID {
	p := d.peerOpt()
	if d.err == nil && p == "" {
		d.fail("empty peer ID")
	}
	return p
}

func (d *decoder) peers(max int, what string) []peer.ID {
	n := d.count(max, what)
	if n == 0 {
		return nil
	}
	out := make([]peer.ID, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.peer())
	}
	return out
}

func (d *decoder) addrs() []ma.Multiaddr {
	n := d.count(maxAddrs, "addrs")
	if n == 0 {
		return nil
	}
	out := make([]ma.Multiaddr, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		b := d.bytes(maxAddrLen, "addr")
		if d.err != nil {
			break
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			d.fail("addr: %v", err)
			break
		}
		out = append(out, a)
	}
	return out
}

// finish reports the first error, or an error if bytes are left over.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}
