package mcast

import (
	"encoding/binary"
	"errors"

	"github.com/raftcast/raftcast/transfer/content"
)

// Datagram header, big-endian:
//
//	magic "RM" | version 1 (u8) | type (u8) | content tag (8: first bytes of the content ID) |
//	slice (u32) | offset in the slice (u32) | chunk size (u16) | payload
//
// A DATA datagram carries bytes [offset, offset+len(payload)) of a slice; every chunk of a
// slice but the last is exactly chunk size long and offset is a multiple of it. An END
// datagram (no payload; slice = number of slices sent) says the sender finished its pass.
const (
	HeaderSize = 22
	tagSize    = 8
	version    = 1
	typeData   = 1
	typeEnd    = 2
)

var errBadDatagram = errors.New("mcast: malformed datagram")

type tag [tagSize]byte

func tagOf(id content.ID) (t tag) { copy(t[:], id[:tagSize]); return t }

type header struct {
	typ    byte
	tag    tag
	slice  uint32
	offset uint32
	chunk  uint16
}

func (h header) put(b []byte) {
	b[0], b[1], b[2], b[3] = 'R', 'M', version, h.typ
	copy(b[4:12], h.tag[:])
	binary.BigEndian.PutUint32(b[12:], h.slice)
	binary.BigEndian.PutUint32(b[16:], h.offset)
	binary.BigEndian.PutUint16(b[20:], h.chunk)
}

func parse(b []byte) (header, []byte, error) {
	if len(b) < HeaderSize || b[0] != 'R' || b[1] != 'M' || b[2] != version {
		return header{}, nil, errBadDatagram
	}
	h := header{typ: b[3], slice: binary.BigEndian.Uint32(b[12:]), offset: binary.BigEndian.Uint32(b[16:]), chunk: binary.BigEndian.Uint16(b[20:])}
	copy(h.tag[:], b[4:12])
	return h, b[HeaderSize:], nil
}
