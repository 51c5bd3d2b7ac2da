package coop

import "errors"

// Sentinel errors. Errors returned by this package wrap at most one of them; the control
// protocol's error codes map to them one to one.
var (
	// ErrChanged: the resource changed at the origin during the download (a 200 answer to an
	// If-Range request with other validators, 412, 416, a different size). No mixed file is
	// ever produced; the download restarts (Config.ChangeRestarts) or fails with this error.
	ErrChanged = errors.New("coop: the resource changed at the origin")
	// ErrOrigin: the origin failed (5xx, 429, reset, timeout, truncated body). Another member
	// may succeed.
	ErrOrigin = errors.New("coop: origin error")
	// ErrNoSize: the origin does not say how large the resource is; a cooperative download
	// needs the size to split it.
	ErrNoSize = errors.New("coop: the origin does not tell the resource's size")
	// ErrChecksum: the finished file does not have the SHA-256 asked for. Nothing is left at
	// the output path, and the slices are dropped from this node's cache.
	ErrChecksum = errors.New("coop: SHA-256 mismatch")
	// ErrNoMembers: every member failed or was excluded; nobody is left to fetch the rest.
	ErrNoMembers = errors.New("coop: no member left to fetch from the origin")
	// ErrUnknownTask: the task is not (or no longer) in the group's task table.
	ErrUnknownTask = errors.New("coop: unknown task")
	// ErrNotLeader: the peer asked is not the group's leader (retry with the leader).
	ErrNotLeader = errors.New("coop: not the group's leader")
	// ErrNotMember: the peer asking is not a member of the group.
	ErrNotMember = errors.New("coop: not a member of the group")
	// ErrBadRequest: a malformed request or frame, or one that breaks a rule.
	ErrBadRequest = errors.New("coop: bad request")
	// ErrClosed: the service is closed.
	ErrClosed = errors.New("coop: closed")
)
