package overlay

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/internal/wire"
)

// MaxResolverMessage bounds a resolver request or response.
const MaxResolverMessage = 1 << 20

// resolver wire: the request is one frame holding uvarint(len(name)) name payload; the
// response is one frame holding a status byte and either the payload (statusOK) or an error
// text (statusErr, statusNoHandler).
const (
	statusOK        = 0
	statusErr       = 1
	statusNoHandler = 2
)

// Errors a resolver query can end with.
var (
	ErrNoHandler   = errors.New("resolver: no such handler at the remote peer")
	ErrRemote      = errors.New("resolver: remote handler failed")
	ErrMalformedRq = errors.New("resolver: malformed message")
)

// HandlerFunc answers one resolver query. from is the authenticated remote peer.
type HandlerFunc func(ctx context.Context, from peer.ID, req []byte) ([]byte, error)

// Resolver is JXTA's Peer Resolver Protocol: a generic query/response between peers, routed
// to named handlers. One stream carries one query and its response.
type Resolver struct {
	h       host.Host
	log     *slog.Logger
	timeout time.Duration

	mu       sync.RWMutex // guards handlers
	handlers map[string]HandlerFunc

	served, failed, rejected atomic.Uint64
}

func newResolver(h host.Host, timeout time.Duration, log *slog.Logger) *Resolver {
	r := &Resolver{h: h, log: log, timeout: timeout, handlers: map[string]HandlerFunc{}}
	h.SetStreamHandler(ResolverProtocol, r.handleStream)
	return r
}

// Handle registers (or, with a nil h, removes) the handler for name.
func (r *Resolver) Handle(name string, h HandlerFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h == nil {
		delete(r.handlers, name)
		return
	}
	r.handlers[name] = h
}

// Query sends req to p's handler name and returns its response.
func (r *Resolver) Query(ctx context.Context, p peer.ID, name string, req []byte) ([]byte, error) {
	if len(name) > 255 || len(req)+len(name)+2 > MaxResolverMessage {
		return nil, fmt.Errorf("resolver: request too large (%d bytes)", len(req))
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	s, err := r.h.NewStream(ctx, p, ResolverProtocol)
	if err != nil {
		return nil, fmt.Errorf("resolver: open stream to %s: %w", p, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	msg := binary.AppendUvarint(make([]byte, 0, len(name)+len(req)+2), uint64(len(name)))
	msg = append(append(msg, name...), req...)
	if err := wire.WriteFrame(s, msg); err != nil {
		s.Reset()
		return nil, fmt.Errorf("resolver: send to %s: %w", p, err)
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, err
	}
	resp, err := wire.ReadFrame(bufio.NewReader(s), MaxResolverMessage)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("resolver: response from %s: %w", p, err)
	}
	if len(resp) == 0 {
		return nil, fmt.Errorf("%w: empty response", ErrMalformedRq)
	}
	switch resp[0] {
	case statusOK:
		return resp[1:], nil
	case statusNoHandler:
		return nil, fmt.Errorf("%w: %q", ErrNoHandler, name)
	default:
		return nil, fmt.Errorf("%w: %s", ErrRemote, resp[1:])
	}
}

func (r *Resolver) handleStream(s network.Stream) {
	defer s.Close()
	if err := s.Scope().SetService("raftcast.resolver"); err != nil {
		s.Reset()
		return
	}
	_ = s.SetDeadline(time.Now().Add(r.timeout))
	msg, err := wire.ReadFrame(bufio.NewReader(s), MaxResolverMessage)
	if err != nil {
		r.rejected.Add(1)
		r.log.Debug("resolver: bad request", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	n, k := binary.Uvarint(msg)
	if k <= 0 || n > uint64(len(msg)-k) {
		r.rejected.Add(1)
		s.Reset()
		return
	}
	name := string(msg[k : k+int(n)])
	req := msg[k+int(n):]
	r.mu.RLock()
	h := r.handlers[name]
	r.mu.RUnlock()
	var out []byte
	if h == nil {
		out = append([]byte{statusNoHandler}, name...)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		resp, err := h(ctx, s.Conn().RemotePeer(), req)
		cancel()
		switch {
		case err != nil:
			r.failed.Add(1)
			out = append([]byte{statusErr}, err.Error()...)
		case len(resp)+1 > MaxResolverMessage:
			r.failed.Add(1)
			out = append([]byte{statusErr}, "response too large"...)
		default:
			r.served.Add(1)
			out = append([]byte{statusOK}, resp...)
		}
	}
	if err := wire.WriteFrame(s, out); err != nil {
		s.Reset()
	}
}
