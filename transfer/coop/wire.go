package coop

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"
)

// Wire format. Every frame is
//
//	type (1 byte) | body length (uvarint) | body
//
// and bodies use a compact binary codec: unsigned varints, length-prefixed byte strings, peer
// IDs as their bytes. Decoding is bounded (every length is checked against a limit and the
// bytes left) and sticky (after the first error every read returns zero). Wire messages are
// separate from the domain types; decode checks structure, the handlers check meaning.

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

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)       { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) bytes(b []byte)   { e.uvarint(uint64(len(b))); e.b = append(e.b, b...) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) peer(p peer.ID)   { e.str(string(p)) }
func (e *encoder) boolean(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}
func (e *encoder) slices(s []uint32) {
	e.uvarint(uint64(len(s)))
	for _, i := range s {
		e.uvarint(uint64(i))
	}
}
func (e *encoder) peers(ps []peer.ID) {
	e.uvarint(uint64(len(ps)))
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
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
	}
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
	if n <= 0 || (n > 1 && d.b[n-1] == 0) { // overflow, truncated, or not the shortest form
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(limit int, what string) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail("%s of %d bytes (limit %d, %d left)", what, n, limit, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str(limit int, what string) string { return string(d.bytes(limit, what)) }

func (d *decoder) boolean() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad boolean")
	return false
}

func (d *decoder) peer() peer.ID {
	b := d.bytes(128, "peer ID")
	if d.err != nil {
		return ""
	}
	p, err := peer.IDFromBytes(b)
	if err != nil {
		d.fail("bad peer ID")
		return ""
	}
	return p
}

func (d *decoder) slices() []uint32 {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > maxSlices || n > uint64(len(d.b)) {
		d.fail("%d slices", n)
		return nil
	}
	out := make([]uint32, 0, n)
	for range n {
		v := d.uvarint()
		if v >= maxSlices {
			d.fail("slice %d out of range", v)
			return nil
		}
		out = append(out, uint32(v))
	}
	return out
}

func (d *decoder) peers() []peer.ID {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > maxListLen || n > uint64(len(d.b)) {
		d.fail("%d peers", n)
		return nil
	}
	out := make([]peer.ID, 0, n)
	for range n {
		out = append(out, d.peer())
	}
	return out
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// Messages.

type startRequest struct {
	GroupID   string
	URL       string
	SliceSize uint64 // 0: the leader's default
}

func (m *startRequest) encode(e *encoder) { e.str(m.GroupID); e.str(m.URL); e.uvarint(m.SliceSize) }
func (m *startRequest) decode(d *decoder) {
	m.GroupID, m.URL, m.SliceSize = d.str(maxIDLen, "group ID"), d.str(maxURLLen, "URL"), d.uvarint()
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

func (m *startAnswer) encode(e *encoder) {
	e.str(m.TaskID)
	e.uvarint(m.Size)
	e.uvarint(m.SliceSize)
	e.str(m.ETag)
	e.str(m.LastModified)
	e.boolean(m.Ranges)
	e.boolean(m.Resumed)
}
func (m *startAnswer) decode(d *decoder) {
	m.TaskID = d.str(maxIDLen, "task ID")
	m.Size, m.SliceSize = d.uvarint(), d.uvarint()
	m.ETag, m.LastModified = d.str(maxShortLen, "etag"), d.str(maxShortLen, "last-modified")
	m.Ranges, m.Resumed = d.boolean(), d.boolean()
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

func (m *rearrangeRequest) encode(e *encoder) {
	e.str(m.GroupID)
	e.str(m.TaskID)
	e.slices(m.Slices)
	e.peers(m.Exclude)
	e.peers(m.Avoid)
	e.boolean(m.NoRanges)
}
func (m *rearrangeRequest) decode(d *decoder) {
	m.GroupID, m.TaskID = d.str(maxIDLen, "group ID"), d.str(maxIDLen, "task ID")
	m.Slices, m.Exclude, m.Avoid = d.slices(), d.peers(), d.peers()
	m.NoRanges = d.boolean()
}

type haveRequest struct {
	Key    string
	Slices uint64
}

func (m *haveRequest) encode(e *encoder) { e.str(m.Key); e.uvarint(m.Slices) }
func (m *haveRequest) decode(d *decoder) { m.Key, m.Slices = d.str(maxIDLen, "key"), d.uvarint() }

type haveAnswer struct{ Bitmap []byte }

func (m *haveAnswer) encode(e *encoder) { e.bytes(m.Bitmap) }
func (m *haveAnswer) decode(d *decoder) { m.Bitmap = d.bytes(maxSlices/8+8, "bitmap") }

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

func (m *notice) encode(e *encoder) { e.str(m.GroupID); e.str(m.TaskID); e.u8(m.Code); e.str(m.Detail) }
func (m *notice) decode(d *decoder) {
	m.GroupID, m.TaskID, m.Code, m.Detail = d.str(maxIDLen, "group ID"), d.str(maxIDLen, "task ID"), d.u8(), d.str(maxShortLen, "detail")
}

type errorMsg struct {
	Code   uint8
	Msg    string
	Leader peer.ID // with codeNotLeader: the leader as the answering peer knows it, maybe ""
}

func (m *errorMsg) encode(e *encoder) {
	e.u8(m.Code)
	e.str(m.Msg)
	e.boolean(m.Leader != "")
	if m.Leader != "" {
		e.peer(m.Leader)
	}
}
func (m *errorMsg) decode(d *decoder) {
	m.Code, m.Msg = d.u8(), d.str(maxShortLen, "message")
	if d.boolean() {
		m.Leader = d.peer()
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

func (m *pushHeader) encode(e *encoder) { e.str(m.GroupID); e.str(m.TaskID) }
func (m *pushHeader) decode(d *decoder) {
	m.GroupID, m.TaskID = d.str(maxIDLen, "group ID"), d.str(maxIDLen, "task ID")
}

// Slice frame flags.
const (
	flagFromOrigin = 1 << 0 // the pushing member fetched this slice from the origin for this task
)

// Framing.

func encodeMsg(f func(*encoder)) []byte {
	e := encoder{b: make([]byte, 0, 64)}
	f(&e)
	return e.b
}

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
func expectFrame(r *bufio.Reader, limit int, want uint8, decode func(*decoder)) error {
	typ, b, err := readFrame(r, limit)
	if err != nil {
		return err
	}
	d := decoder{b: b}
	switch typ {
	case want:
		if decode != nil {
			decode(&d)
		}
		return d.finish()
	case msgError, msgPushRefused:
		var em errorMsg
		em.decode(&d)
		if err := d.finish(); err != nil {
			return err
		}
		return em.err()
	}
	return fmt.Errorf("%w: frame type %d, want %d", ErrBadRequest, typ, want)
}
