package peergroup

import "errors"

// Sentinel errors. Every error this package returns for a rejected operation wraps exactly one
// of them, so callers can test with errors.Is; wire error codes map to them one to one.
var (
	// ErrMalformed: bytes that do not decode, or a command that breaks a structural rule.
	ErrMalformed = errors.New("peergroup: malformed")
	// ErrStale: an assignment whose term is older than the task's current term.
	ErrStale = errors.New("peergroup: stale term")
	// ErrInvalid: a well-formed command that does not fit the current state
	// (unknown task, unknown member, slice out of range, ...).
	ErrInvalid = errors.New("peergroup: invalid for the current state")
	// ErrForbidden: the sender may not issue this command.
	ErrForbidden = errors.New("peergroup: not allowed")
	// ErrNotLeader: the operation needs the group's leader.
	ErrNotLeader = errors.New("peergroup: not the leader")
	// ErrNoLeader: the group has no leader right now (election in progress); retry.
	ErrNoLeader = errors.New("peergroup: no leader")
	// ErrNotMember: the peer is not a member of the group.
	ErrNotMember = errors.New("peergroup: not a member")
	// ErrWrongSecret: the joiner's proof of the group secret did not verify.
	ErrWrongSecret = errors.New("peergroup: wrong secret")
	// ErrBadInvitation: the invitation is missing, expired, for someone else or badly signed.
	ErrBadInvitation = errors.New("peergroup: bad invitation")
	// ErrBanned: the peer was expelled from the group and may not rejoin.
	ErrBanned = errors.New("peergroup: banned from the group")
	// ErrUnknownGroup: this node is not in a group with that ID or name.
	ErrUnknownGroup = errors.New("peergroup: unknown group")
	// ErrExists: this node is already in that group.
	ErrExists = errors.New("peergroup: already a member")
	// ErrNoMembers: the arranger has no eligible member to give slices to.
	ErrNoMembers = errors.New("peergroup: no eligible member")
	// ErrClosed: the manager or group is closed.
	ErrClosed = errors.New("peergroup: closed")
	// ErrBadLeader: the peer answering as the group leader could not prove it knows the secret.
	ErrBadLeader = errors.New("peergroup: leader failed to prove the group secret")
)
