package peergroup

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// Wire messages of the join and apply protocols. A stream carries frames:
//
//	uvarint length | type (1 byte) | payload (length-1 bytes, the compact codec)
//
// bounded per protocol (maxJoinFrame, maxApplyFrame). Wire types are separate from the
// domain types and converted explicitly.

// Frame types.
const (
	msgJoinRequest uint8 = 1 + iota
	msgJoinRedirect
	msgJoinChallenge
	msgJoinProof
	msgJoinAccept
	msgError
	msgApplyRequest
	msgApplyResponse
	msgMembersRequest
	msgMembersResponse
)

func writeFrame(w io.Writer, typ uint8, payload []byte) error {
	b := binary.AppendUvarint(make([]byte, 0, len(payload)+11), uint64(len(payload)+1))
	b = append(b, typ)
	b = append(b, payload...)
	_, err := w.Write(b)
	return err
}

// readFrame reads one frame of at most max bytes.
func readFrame(r *bufio.Reader, max int) (uint8, []byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, err
	}
	if n == 0 || n > uint64(max) {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes (limit %d)", ErrMalformed, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, err
	}
	return b[0], b[1:], nil
}

// expectFrame reads a frame and decodes it as want; an error frame becomes its error.
func expectFrame(r *bufio.Reader, max int, want uint8, dec func(*bincodec.Decoder)) error {
	typ, payload, err := readFrame(r, max)
	if err != nil {
		return err
	}
	if typ == msgError {
		var m errorMsg
		if err := decodeMsg(payload, m.decode); err != nil {
			return err
		}
		return codeErr(m.Code, m.Msg)
	}
	if typ != want {
		return fmt.Errorf("%w: frame type %d, want %d", ErrMalformed, typ, want)
	}
	return decodeMsg(payload, dec)
}

// decodeMsg decodes a frame's payload; malformed input is ErrMalformed.
func decodeMsg(b []byte, dec func(*bincodec.Decoder)) error {
	return bincodec.Decode(b, ErrMalformed, dec)
}

type errorMsg struct {
	Code uint8
	Msg  string
}

func (m *errorMsg) encode(e *bincodec.Encoder) { e.U8(m.Code); e.Str(m.Msg) }
func (m *errorMsg) decode(d *bincodec.Decoder) {
	m.Code = d.U8()
	m.Msg = d.Str(maxShortLen, "message")
}

// newErrorMsg builds the error frame for err (message truncated to the wire limit).
func newErrorMsg(err error) *errorMsg {
	msg := err.Error()
	if len(msg) > maxShortLen {
		msg = msg[:maxShortLen]
	}
	return &errorMsg{Code: errCode(err), Msg: msg}
}

type joinRequest struct {
	GroupID    string
	Nonce      []byte
	Addrs      []ma.Multiaddr
	Domain     string
	Capacity   uint64
	Invitation []byte
}

func (m *joinRequest) encode(e *bincodec.Encoder) {
	e.Str(m.GroupID)
	e.Bytes(m.Nonce)
	e.Addrs(m.Addrs)
	e.Str(m.Domain)
	e.Uvarint(m.Capacity)
	e.Bytes(m.Invitation)
}
func (m *joinRequest) decode(d *bincodec.Decoder) {
	m.GroupID = d.Str(maxIDLen, "group ID")
	m.Nonce = d.Bytes(nonceLen, "nonce")
	m.Addrs = d.Addrs(maxAddrs, maxAddrLen)
	m.Domain = d.Str(maxNameLen, "domain")
	m.Capacity = d.Uvarint()
	m.Invitation = d.Bytes(8<<10, "invitation")
}

type joinRedirect struct {
	Leader peer.ID
	Addrs  []ma.Multiaddr
}

func (m *joinRedirect) encode(e *bincodec.Encoder) { e.Peer(m.Leader); e.Addrs(m.Addrs) }
func (m *joinRedirect) decode(d *bincodec.Decoder) {
	m.Leader = d.Peer()
	m.Addrs = d.Addrs(maxAddrs, maxAddrLen)
}

type joinChallenge struct{ Nonce []byte }

func (m *joinChallenge) encode(e *bincodec.Encoder) { e.Bytes(m.Nonce) }
func (m *joinChallenge) decode(d *bincodec.Decoder) { m.Nonce = d.Bytes(nonceLen, "nonce") }

type joinProofMsg struct{ Proof []byte }

func (m *joinProofMsg) encode(e *bincodec.Encoder) { e.Bytes(m.Proof) }
func (m *joinProofMsg) decode(d *bincodec.Decoder) { m.Proof = d.Bytes(64, "proof") }

type wireMember struct {
	PeerID peer.ID
	Addrs  []ma.Multiaddr
	Voter  bool
}

type joinAccept struct {
	Header      Header
	Leader      peer.ID
	Term        uint64
	Members     []wireMember
	LeaderProof []byte // secret groups: the leader's proof over the joiner's nonce
	AdmitIndex  uint64 // log index of the joiner's MemberAdd (optional: older leaders omit it)
}

func (m *joinAccept) encode(e *bincodec.Encoder) {
	e.Bytes(m.LeaderProof)
	(&GroupInit{Header: m.Header}).encode(e)
	e.Peer(m.Leader)
	e.Uvarint(m.Term)
	e.Count(len(m.Members))
	for _, w := range m.Members {
		e.Peer(w.PeerID)
		e.Addrs(w.Addrs)
		e.Bool(w.Voter)
	}
	e.Uvarint(m.AdmitIndex)
}
func (m *joinAccept) decode(d *bincodec.Decoder) {
	m.LeaderProof = d.Bytes(64, "proof")
	var gi GroupInit
	gi.decode(d)
	m.Header = gi.Header
	m.Leader = d.Peer()
	m.Term = d.Uvarint()
	n := d.Count(maxListLen, "members")
	for i := 0; i < n && d.Err() == nil; i++ {
		m.Members = append(m.Members, wireMember{PeerID: d.Peer(), Addrs: d.Addrs(maxAddrs, maxAddrLen), Voter: d.Bool()})
	}
	if d.Err() == nil && d.Len() > 0 {
		m.AdmitIndex = d.Uvarint()
	}
}

type applyRequest struct {
	GroupID string
	Cmd     []byte
}

func (m *applyRequest) encode(e *bincodec.Encoder) { e.Str(m.GroupID); e.Bytes(m.Cmd) }
func (m *applyRequest) decode(d *bincodec.Decoder) {
	m.GroupID = d.Str(maxIDLen, "group ID")
	m.Cmd = d.Bytes(maxCommandSize, "command")
}

type applyResponse struct {
	Index uint64
}

func (m *applyResponse) encode(e *bincodec.Encoder) { e.Uvarint(m.Index) }
func (m *applyResponse) decode(d *bincodec.Decoder) { m.Index = d.Uvarint() }

// Wire error codes (one byte) used by the join and apply protocols.
const (
	codeOK uint8 = iota
	codeMalformed
	codeStale
	codeInvalid
	codeForbidden
	codeNotLeader
	codeNoLeader
	codeNotMember
	codeWrongSecret
	codeBadInvitation
	codeBanned
	codeUnknownGroup
	codeInternal
)

var codeErrs = map[uint8]error{
	codeMalformed:     ErrMalformed,
	codeStale:         ErrStale,
	codeInvalid:       ErrInvalid,
	codeForbidden:     ErrForbidden,
	codeNotLeader:     ErrNotLeader,
	codeNoLeader:      ErrNoLeader,
	codeNotMember:     ErrNotMember,
	codeWrongSecret:   ErrWrongSecret,
	codeBadInvitation: ErrBadInvitation,
	codeBanned:        ErrBanned,
	codeUnknownGroup:  ErrUnknownGroup,
}

// errCode maps an error to its wire code.
func errCode(err error) uint8 {
	if err == nil {
		return codeOK
	}
	for c, e := range codeErrs {
		if errors.Is(err, e) {
			return c
		}
	}
	return codeInternal
}

// codeErr maps a wire code to an error; msg is the remote's explanation (bounded, untrusted).
func codeErr(code uint8, msg string) error {
	if code == codeOK {
		return nil
	}
	base, ok := codeErrs[code]
	if !ok {
		base = errors.New("peergroup: remote error")
	}
	if msg == "" {
		return base
	}
	return &remoteError{base: base, msg: msg}
}

// remoteError carries a remote peer's message while matching the sentinel with errors.Is.
type remoteError struct {
	base error
	msg  string
}

func (e *remoteError) Error() string { return e.base.Error() + " (remote: " + e.msg + ")" }
func (e *remoteError) Unwrap() error { return e.base }

// membersRequest asks a member for the group's member list (and Raft servers): a node that
// gets Raft RPCs from a peer it does not know yet checks with the members it knows.
type membersRequest struct{ GroupID string }

func (m *membersRequest) encode(e *bincodec.Encoder) { e.Str(m.GroupID) }
func (m *membersRequest) decode(d *bincodec.Decoder) { m.GroupID = d.Str(maxIDLen, "group ID") }

type membersResponse struct{ Peers []peer.ID }

func (m *membersResponse) encode(e *bincodec.Encoder) { e.Peers(m.Peers) }
func (m *membersResponse) decode(d *bincodec.Decoder) { m.Peers = d.Peers(maxListLen, "members") }
