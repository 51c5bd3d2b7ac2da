package swarm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/raftcast/raftcast/transfer/content"
)

// Request ops.
const (
	opManifest byte = 1
	opHave     byte = 2
	opSlices   byte = 3
	opParts    byte = 4 // start = slice index, count = mask of content.Parts parts
)

// Response statuses.
const (
	stOK       byte = 0
	stNotFound byte = 1 // content unknown to the server
	stNotHave  byte = 2 // the server does not hold this slice
	stBadReq   byte = 3 // malformed request; the server closes the stream
	stError    byte = 4 // the server failed to read this slice
	// stElsewhere (1.1.0): the server, seeding, has just sent this slice to another peer:
	// take it from that peer; ask the server again later if no one else has it.
	stElsewhere byte = 5
)

const (
	reqSize = 1 + content.HashSize + 4 + 4 // op | content ID | start | count
	hdrSize = 1 + 4 + 4                    // status | index | length
	// MaxRun is the largest number of slices one request may ask for.
	MaxRun = 64
)

// Errors mapped from wire statuses and framing.
var (
	ErrNotFound = errors.New("swarm: content not found at peer")
	ErrNotHave  = errors.New("swarm: peer does not hold the slice")
	ErrRemote   = errors.New("swarm: peer failed")
	ErrProtocol = errors.New("swarm: protocol violation")
)

type wireReq struct {
	op    byte
	id    content.ID
	start uint32
	count uint32
}

func (r wireReq) append(b []byte) []byte {
	b = append(b, r.op)
	b = append(b, r.id[:]...)
	b = binary.BigEndian.AppendUint32(b, r.start)
	return binary.BigEndian.AppendUint32(b, r.count)
}

func readReq(r io.Reader, buf *[reqSize]byte) (wireReq, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return wireReq{}, err
	}
	var q wireReq
	q.op = buf[0]
	copy(q.id[:], buf[1:1+content.HashSize])
	q.start = binary.BigEndian.Uint32(buf[1+content.HashSize:])
	q.count = binary.BigEndian.Uint32(buf[5+content.HashSize:])
	return q, nil
}

type wireHdr struct {
	status byte
	index  uint32
	length uint32
}

func (h wireHdr) put(b []byte) {
	b[0] = h.status
	binary.BigEndian.PutUint32(b[1:], h.index)
	binary.BigEndian.PutUint32(b[5:], h.length)
}

func readHdr(r io.Reader, buf *[hdrSize]byte) (wireHdr, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return wireHdr{}, err
	}
	return wireHdr{status: buf[0], index: binary.BigEndian.Uint32(buf[1:]), length: binary.BigEndian.Uint32(buf[5:])}, nil
}

func statusErr(st byte) error {
	switch st {
	case stNotFound:
		return ErrNotFound
	case stNotHave:
		return ErrNotHave
	case stError:
		return ErrRemote
	case stBadReq:
		return fmt.Errorf("%w: peer refused our request", ErrProtocol)
	}
	return fmt.Errorf("%w: unknown status %d", ErrProtocol, st)
}
