package pipes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Service binds pipes on one overlay node: it owns the stream handlers, the bindings this node
// published, the propagate topics and the native multicast sockets.
type Service struct {
	ov   Overlay
	h    host.Host
	self peer.ID
	priv crypto.PrivKey
	cfg  Config
	log  *slog.Logger
	now  func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stats counters
	bufs  bufPool
	res   *resolver
	prop  *propagator
	mc    *multicast // nil when multicast is disabled or no interface joined

	mu       sync.Mutex // guards inputs, bidi, outputs, bindings, closed, stopped, and wg.Add
	inputs   map[string]*InputPipe
	bidi     map[string]*BidiListener
	outputs  map[io.Closer]struct{}
	bindings map[string]PipeSpec // published bindings, re-published every BindingTTL/2
	closed   bool
	stopped  bool // Close is waiting for the goroutines: no new ones
}

// New starts the pipe service on the overlay node n: it registers the stream handlers and,
// unless cfg.Multicast.Disabled, joins the multicast groups and starts beaconing. A
// multicast set-up failure is logged and leaves propagate pipes on gossipsub.
func New(n Overlay, cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := n.Host()
	priv := h.Peerstore().PrivKey(h.ID())
	if priv == nil {
		return nil, errors.New("pipes: the host's peerstore has no private key for its own peer ID")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		ov: n, h: h, self: h.ID(), priv: priv, cfg: cfg,
		log: cfg.Logger.With("component", "pipes"), now: cfg.Now,
		ctx: ctx, cancel: cancel,
		inputs:   make(map[string]*InputPipe),
		bidi:     make(map[string]*BidiListener),
		outputs:  make(map[io.Closer]struct{}),
		bindings: make(map[string]PipeSpec),
	}
	s.res = newResolver(s)
	s.prop = newPropagator(s)
	if !cfg.Multicast.Disabled {
		mc, err := startMulticast(s)
		if err != nil {
			s.log.Warn("native multicast unavailable; propagate pipes use gossipsub only", "err", err)
		} else {
			s.mc = mc
		}
	}
	h.SetStreamHandler(ProtocolUnicast, s.handleUnicast)
	h.SetStreamHandler(ProtocolUnicastV1, s.handleUnicast)
	h.SetStreamHandler(ProtocolBidi, s.handleBidi)
	s.goFunc(s.refreshLoop)
	return s, nil
}

// goFunc runs f in a goroutine owned by the service (Close waits for it). It returns false,
// running nothing, once Close has started waiting.
func (s *Service) goFunc(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// Self returns this node's peer ID.
func (s *Service) Self() peer.ID { return s.self }

// Stats returns a snapshot of the counters.
func (s *Service) Stats() Stats { return s.stats.snapshot() }

// Multicast returns the raw native multicast data channel and domain view, or nil when native
// multicast is disabled or no interface could join.
func (s *Service) Multicast() *MulticastChannel {
	if s.mc == nil {
		return nil
	}
	return s.mc.channel
}

// Close closes every pipe and connection of the service, withdraws its bindings (best effort,
// bounded by HandshakeTimeout), leaves the multicast groups and waits for its goroutines.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var closers []io.Closer
	for _, p := range s.inputs {
		closers = append(closers, p)
	}
	for _, l := range s.bidi {
		closers = append(closers, l)
	}
	for c := range s.outputs {
		closers = append(closers, c)
	}
	s.mu.Unlock()

	s.h.RemoveStreamHandler(ProtocolUnicast)
	s.h.RemoveStreamHandler(ProtocolUnicastV1)
	s.h.RemoveStreamHandler(ProtocolBidi)
	for _, c := range closers {
		_ = c.Close()
	}
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	if s.mc != nil {
		s.mc.close()
	}
	s.wg.Wait()
	s.prop.close()
	return nil
}

// Listen binds the input end of a unicast or propagate pipe on this node and publishes the
// binding. One input end per pipe per node (ErrAlreadyBound).
func (s *Service) Listen(ctx context.Context, spec PipeSpec) (*InputPipe, error) {
	spec, err := spec.Normalize()
	if err != nil {
		return nil, err
	}
	if spec.Kind == Bidi {
		return nil, fmt.Errorf("pipes: Listen on bidi pipe %q: use ListenBidi: %w", spec.Name, ErrBadSpec)
	}
	p := newInputPipe(s, spec)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := s.inputs[spec.ID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s (%s)", ErrAlreadyBound, spec.Name, spec.ID)
	}
	s.inputs[spec.ID] = p
	s.mu.Unlock()

	if spec.Kind == Propagate {
		if err := s.prop.listen(p); err != nil {
			s.dropInput(p)
			return nil, err
		}
	}
	if err := s.bind(ctx, spec); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// Output binds the output end of a unicast or propagate pipe. It does not wait for a bound
// peer: messages wait in the send window until one is resolved (see OutputPipe).
func (s *Service) Output(ctx context.Context, spec PipeSpec) (OutputPipe, error) {
	spec, err := spec.Normalize()
	if err != nil {
		return nil, err
	}
	var o OutputPipe
	switch spec.Kind {
	case Unicast:
		o = newUnicastOut(s, spec)
	case Propagate:
		po, err := newPropagateOut(s, spec)
		if err != nil {
			return nil, err
		}
		o = po
	default:
		return nil, fmt.Errorf("pipes: Output on %s pipe %q: use DialBidi: %w", spec.Kind, spec.Name, ErrBadSpec)
	}
	if !s.addOutput(o) {
		_ = o.Close()
		return nil, ErrClosed
	}
	return o, nil
}

func (s *Service) addOutput(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.outputs[c] = struct{}{}
	return true
}

func (s *Service) removeOutput(c io.Closer) {
	s.mu.Lock()
	delete(s.outputs, c)
	s.mu.Unlock()
}

func (s *Service) input(id string) *InputPipe {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inputs[id]
}

func (s *Service) dropInput(p *InputPipe) {
	s.mu.Lock()
	if s.inputs[p.spec.ID] == p {
		delete(s.inputs, p.spec.ID)
	}
	s.mu.Unlock()
}

// Resolve returns the peers currently bound to the pipe (cached for ResolveTTL unless fresh).
func (s *Service) Resolve(ctx context.Context, spec PipeSpec, fresh bool) ([]peer.ID, error) {
	spec, err := spec.Normalize()
	if err != nil {
		return nil, err
	}
	return s.res.resolve(ctx, spec, fresh)
}

// ctxErr describes why a wait ended: ErrClosed when the service or pipe closed, otherwise the
// context's error, wrapping last when there is one.
func waitErr(ctx context.Context, last error) error {
	err := ctx.Err()
	if err == nil {
		return ErrClosed
	}
	if last != nil {
		return fmt.Errorf("%w (%w): %v", ErrNoListener, err, last)
	}
	return err
}

// resetStream resets st and records why.
func (s *Service) rejectStream(st network.Stream, err error) {
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		s.stats.rejOversized.Add(1)
	case errors.Is(err, ErrMalformed):
		s.stats.rejMalformed.Add(1)
	}
	s.log.Debug("stream rejected", "peer", st.Conn().RemotePeer(), "proto", st.Protocol(), "err", err)
	_ = st.Reset()
}
