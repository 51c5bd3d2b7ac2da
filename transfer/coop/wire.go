package coop

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// Wire format. Every frame is
//
//	type (1 byte) | body length (uvarint) | body
//
// and bodies use internal/bincodec (bounded, sticky decoding; errors wrap ErrBadRequest). Wire
// messages are separate from the domain types; decode checks structure, the handlers check
// meaning.

// Frame types.
const (
	msgStart       = 1  // requester → leader: startRequest
	msgAccept      = 2  // leader → requester: startAnswer
	msgRearrange   = 3  // requester or member → leader: rearrangeRequest
	msgOK          = 4  // empty answer
	msgHave        = 5  // leader → member: haveRequest
	msgHaveAnswer  = 6  // member → leader: haveAnswer
	msgNotice      = 7  // member → requester: notice
	msgError       = 8  // any answer: errorMsg
	msgPushHeader  = 9  // member → requester, first frame of a push stream: pushHeader
	msgSlice       = 10 // member → requester: index | flags | data
	msgAck         = 11 // requester → member: index
	msgPushRefused = 12 // requester → member: errorMsg, then the stream ends
)

// Error codes of errorMsg, one per sentinel.
const (
	codeInternal = iota
	codeNotLeader
	codeNotMember
	codeUnknownTask
	codeOrigin
	codeChanged
	codeNoMembers
	codeBadRequest
	codeNoSize
	codeClosed
)

var codeErrs = map[uint8]error{
	codeNotLeader: ErrNotLeader, codeNotMember: ErrNotMember, codeUnknownTask: ErrUnknownTask,
	codeOrigin: ErrOrigin, codeChanged: ErrChanged, codeNoMembers: ErrNoMembers,
	codeBadRequest: ErrBadRequest, codeNoSize: ErrNoSize, codeClosed: ErrClosed,
}

// Messages.

type startRequest struct {
	GroupID   string
	URL       string
	SliceSize uint64 // 0: the leader's default
}

func (m *startRequest) encode(e *bincodec.Encoder) {
	e.Str(m.GroupID)
	e.Str(m.URL)
	e.Uvarint(m.SliceSize)
}
func (m *startRequest) decode(d *bincodec.Decoder) {
	m.GroupID, m.URL, m.SliceSize = d.Str(maxIDLen, "group ID"), d.Str(maxURLLen, "URL"), d.Uvarint()
}

type startAnswer struct {
	TaskID       string // "" for an empty resource (no task)
	Size         uint64
	SliceSize    uint64
	ETag         string
	LastModified string
	Ranges       bool
	Resumed      bool // an existing task of this requester for this URL continues
}

func (m *startAnswer) encode(e *bincodec.Encoder) {
	e.Str(m.TaskID)
	e.Uvarint(m.Size)
	e.Uvarint(m.SliceSize)
	e.Str(m.ETag)
	e.Str(m.LastModified)
	e.Bool(m.Ranges)
	e.Bool(m.Resumed)
}
func (m *startAnswer) decode(d *bincodec.Decoder) {
	m.TaskID = d.Str(maxIDLen, "task ID")
	m.Size, m.SliceSize = d.Uvarint(), d.Uvarint()
	m.ETag, m.LastModified = d.Str(maxShortLen, "etag"), d.Str(maxShortLen, "last-modified")
	m.Ranges, m.Resumed = d.Bool(), d.Bool()
}

type rearrangeRequest struct {
	GroupID string
	TaskID  string
	Slices  []uint32
	Exclude []peer.ID // members excluded from the task for good
	Avoid   []peer.ID // members not to give these slices to (a steal's victim)
	// NoRanges: the origin ignores Range (known to the requester from the start answer).
	NoRanges bool
}

func (m *rearrangeRequest) encode(e *bincodec.Encoder) {
	e.Str(m.GroupID)
	e.Str(m.TaskID)
	e.Uint32s(m.Slices)
	e.Peers(m.Exclude)
	e.Peers(m.Avoid)
	e.Bool(m.NoRanges)
}
func (m *rearrangeRequest) decode(d *bincodec.Decoder) {
	m.GroupID, m.TaskID = d.Str(maxIDLen, "group ID"), d.Str(maxIDLen, "task ID")
	m.Slices, m.Exclude, m.Avoid = d.Uint32s(maxSlices, "slices"), d.Peers(maxListLen, "peers"), d.Peers(maxListLen, "peers")
	m.NoRanges = d.Bool()
}

type haveRequest struct {
	Key    string
	Slices uint64
}

func (m *haveRequest) encode(e *bincodec.Encoder) { e.Str(m.Key); e.Uvarint(m.Slices) }
func (m *haveRequest) decode(d *bincodec.Decoder) {
	m.Key, m.Slices = d.Str(maxIDLen, "key"), d.Uvarint()
}

type haveAnswer struct{ Bitmap []byte }

func (m *haveAnswer) encode(e *bincodec.Encoder) { e.Bytes(m.Bitmap) }
func (m *haveAnswer) decode(d *bincodec.Decoder) { m.Bitmap = d.Bytes(maxSlices/8+8, "bitmap") }

// Notice codes.
const (
	noticeChanged = 1 // the resource changed at the origin
)

type notice struct {
	GroupID string
	TaskID  string
	Code    uint8
	Detail  string
}

func (m *notice) encode(e *bincodec.Encoder) {
	e.Str(m.GroupID)
	e.Str(m.TaskID)
	e.U8(m.Code)
	e.Str(m.Detail)
}
func (m *notice) decode(d *bincodec.Decoder) {
	m.GroupID, m.TaskID, m.Code, m.Detail = d.Str(maxIDLen, "group ID"), d.Str(maxIDLen, "task ID"), d.U8(), d.Str(maxShortLen, "detail")
}

type errorMsg struct {
	Code   uint8
	Msg    string
	Leader peer.ID // with codeNotLeader: the leader as the answering peer knows it, maybe ""
}

func (m *errorMsg) encode(e *bincodec.Encoder) {
	e.U8(m.Code)
	e.Str(m.Msg)
	e.Bool(m.Leader != "")
	if m.Leader != "" {
		e.Peer(m.Leader)
	}
}
func (m *errorMsg) decode(d *bincodec.Decoder) {
	m.Code, m.Msg = d.U8(), d.Str(maxShortLen, "message")
	if d.Bool() {
		m.Leader = d.Peer()
	}
}

// newErrorMsg maps an error to its wire form.
func newErrorMsg(err error) *errorMsg {
	code := uint8(codeInternal)
	for c, e := range codeErrs {
		if errors.Is(err, e) {
			code = c
			break
		}
	}
	if errors.Is(err, peergroup.ErrNotLeader) || errors.Is(err, peergroup.ErrNoLeader) {
		code = codeNotLeader
	}
	if errors.Is(err, peergroup.ErrNotMember) {
		code = codeNotMember
	}
	msg := err.Error()
	if len(msg) > maxShortLen {
		msg = msg[:maxShortLen]
	}
	return &errorMsg{Code: code, Msg: msg}
}

// remoteError is an error answered by a peer.
type remoteError struct {
	sentinel error
	msg      string
	leader   peer.ID
}

func (e *remoteError) Error() string { return "remote: " + e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func (m *errorMsg) err() error {
	s := codeErrs[m.Code]
	if s == nil {
		s = errRemote
	}
	return &remoteError{sentinel: s, msg: m.Msg, leader: m.Leader}
}

var errRemote = errors.New("coop: the peer failed")

type pushHeader struct {
	GroupID string
	TaskID  string
}

func (m *pushHeader) encode(e *bincodec.Encoder) { e.Str(m.GroupID); e.Str(m.TaskID) }
func (m *pushHeader) decode(d *bincodec.Decoder) {
	m.GroupID, m.TaskID = d.Str(maxIDLen, "group ID"), d.Str(maxIDLen, "task ID")
}

// Slice frame flags.
const (
	flagFromOrigin = 1 << 0 // the pushing member fetched this slice from the origin for this task
)

// Framing.

// writeFrame writes one frame.
func writeFrame(w io.Writer, typ uint8, body []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := binary.PutUvarint(hdr[1:], uint64(len(body)))
	if len(body) < 4096 { // one write for small frames
		_, err := w.Write(append(hdr[:1+n:1+n], body...))
		return err
	}
	if _, err := w.Write(hdr[:1+n]); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// writeSliceFrame writes a slice frame (index | flags | data) without copying data.
func writeSliceFrame(w io.Writer, index int, flags uint8, data []byte) error {
	var pre [1 + 2*binary.MaxVarintLen64 + 1]byte
	var ix [binary.MaxVarintLen64]byte
	nix := binary.PutUvarint(ix[:], uint64(index))
	pre[0] = msgSlice
	n := 1 + binary.PutUvarint(pre[1:], uint64(nix+1+len(data)))
	n += copy(pre[n:], ix[:nix])
	pre[n] = flags
	n++
	if _, err := w.Write(pre[:n]); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// readFrameHeader reads a frame's type and length, refusing lengths over limit.
func readFrameHeader(r *bufio.Reader, limit int) (uint8, int, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: frame length: %v", ErrBadRequest, err)
	}
	if n > uint64(limit) {
		return 0, 0, fmt.Errorf("%w: frame of %d bytes (limit %d)", ErrBadRequest, n, limit)
	}
	return typ, int(n), nil
}

// readFrame reads one whole frame of at most limit bytes.
func readFrame(r *bufio.Reader, limit int) (uint8, []byte, error) {
	typ, n, err := readFrameHeader(r, limit)
	if err != nil {
		return 0, nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, err
	}
	return typ, b, nil
}

// expectFrame reads a frame of type want and decodes it; an error frame becomes its error.
func expectFrame(r *bufio.Reader, limit int, want uint8, decode func(*bincodec.Decoder)) error {
	typ, b, err := readFrame(r, limit)
	if err != nil {
		return err
	}
	d := bincodec.NewDecoder(b, ErrBadRequest)
	switch typ {
	case want:
		if decode != nil {
			decode(&d)
		}
		return d.Finish()
	case msgError, msgPushRefused:
		var em errorMsg
		em.decode(&d)
		if err := d.Finish(); err != nil {
			return err
		}
		return em.err()
	}
	return fmt.Errorf("%w: frame type %d, want %d", ErrBadRequest, typ, want)
}
