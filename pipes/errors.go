package pipes

import "errors"

// Sentinel errors; errors returned by this package wrap one of them where it applies.
var (
	// ErrBadSpec: a PipeSpec without ID and name, or with fields too long.
	ErrBadSpec = errors.New("pipes: bad pipe spec")
	// ErrClosed: the pipe, connection or service is closed.
	ErrClosed = errors.New("pipes: closed")
	// ErrAlreadyBound: this service already has the input end of the pipe bound.
	ErrAlreadyBound = errors.New("pipes: pipe already bound here")
	// ErrNoListener: no bound peer could be resolved or reached before the context ended.
	ErrNoListener = errors.New("pipes: no reachable peer is bound to the pipe")
	// ErrMessageTooLarge: a message larger than the configured maximum.
	ErrMessageTooLarge = errors.New("pipes: message too large")
	// ErrFrameTooLarge: a peer sent a frame larger than the maximum; the stream was reset.
	ErrFrameTooLarge = errors.New("pipes: frame too large")
	// ErrMalformed: bytes on a stream or datagram that do not decode; the stream was reset.
	ErrMalformed = errors.New("pipes: malformed message")
	// ErrUnknownPipe: the remote peer has no input end bound for the pipe.
	ErrUnknownPipe = errors.New("pipes: unknown pipe")
	// ErrRefused: the remote peer refused the stream (busy, bad version).
	ErrRefused = errors.New("pipes: refused by peer")
	// ErrForged: a propagate message or beacon whose signature does not verify.
	ErrForged = errors.New("pipes: bad signature")
	// ErrReplayed: a propagate message whose (sender, sequence) was already seen.
	ErrReplayed = errors.New("pipes: replayed message")
	// ErrNoMulticast: native multicast is disabled or no interface joined.
	ErrNoMulticast = errors.New("pipes: native multicast unavailable")
)
