package pipes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// propagator owns the gossipsub topics of propagate pipes, their validators and the per-sender
// replay and de-duplication windows, and delivers messages from both carriers.
type propagator struct {
	s  *Service
	sg *signer

	mu     sync.Mutex // guards topics, closed
	topics map[string]*propTopic
	closed bool
}

// propTopic is one propagate pipe on this node: its gossipsub topic (joined once, kept until
// the service closes), the subscription while an input end is bound, the sequence counter of
// this node's messages and the windows of the senders heard.
type propTopic struct {
	p     *propagator
	spec  PipeSpec
	name  string
	topic *pubsub.Topic
	seq   atomic.Uint64 // last sequence number used by this node; starts at the clock in ns

	subMu  sync.Mutex // guards sub, cancel
	sub    *pubsub.Subscription
	cancel context.CancelFunc

	wmu     sync.Mutex // guards senders
	senders map[peer.ID]*senderWindows
}

// senderWindows are one sender's windows: replay detection per carrier (a carrier never
// legitimately brings the same message twice) and de-duplication of delivery across carriers.
type senderWindows struct {
	multicast, gossip, delivered seqWindow
	last                         time.Time
}

func newPropagator(s *Service) *propagator {
	return &propagator{s: s, topics: make(map[string]*propTopic)}
}

// topic returns the pipe's topic, joining it (and registering its validator) on first use.
func (pp *propagator) topic(spec PipeSpec) (*propTopic, error) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.closed {
		return nil, ErrClosed
	}
	if pt, ok := pp.topics[spec.ID]; ok {
		return pt, nil
	}
	if pp.sg == nil {
		sg, err := newSigner(pp.s.self, pp.s.priv)
		if err != nil {
			return nil, err
		}
		pp.sg = sg
	}
	ps := pp.s.ov.PubSub()
	if ps == nil {
		return nil, errors.New("pipes: the overlay has no PubSub")
	}
	pt := &propTopic{p: pp, spec: spec, name: TopicPrefix + spec.Group + "/" + spec.ID, senders: make(map[peer.ID]*senderWindows)}
	pt.seq.Store(uint64(pp.s.now().UnixNano()))
	if err := ps.RegisterTopicValidator(pt.name, pt.validate, pubsub.WithValidatorInline(true)); err != nil {
		return nil, fmt.Errorf("pipes: register validator for %s: %w", pt.name, err)
	}
	t, err := ps.Join(pt.name)
	if err != nil {
		_ = ps.UnregisterTopicValidator(pt.name)
		return nil, fmt.Errorf("pipes: join %s: %w", pt.name, err)
	}
	pt.topic = t
	pp.topics[spec.ID] = pt
	return pt, nil
}

// lookup returns the pipe's topic if joined.
func (pp *propagator) lookup(id string) *propTopic {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.topics[id]
}

// listen subscribes the input end p to its pipe's topic.
func (pp *propagator) listen(p *InputPipe) error {
	pt, err := pp.topic(p.spec)
	if err != nil {
		return err
	}
	pt.subMu.Lock()
	defer pt.subMu.Unlock()
	if pt.sub != nil {
		return nil
	}
	sub, err := pt.topic.Subscribe(pubsub.WithBufferSize(pp.s.cfg.GossipBuffer))
	if err != nil {
		return fmt.Errorf("pipes: subscribe %s: %w", pt.name, err)
	}
	ctx, cancel := context.WithCancel(pp.s.ctx)
	pt.sub, pt.cancel = sub, cancel
	if !pp.s.goFunc(func() { pt.readSub(ctx, sub) }) {
		cancel()
		sub.Cancel()
		pt.sub, pt.cancel = nil, nil
		return ErrClosed
	}
	return nil
}

// unlisten cancels the subscription of the pipe's topic.
func (pp *propagator) unlisten(p *InputPipe) {
	pt := pp.lookup(p.spec.ID)
	if pt == nil {
		return
	}
	pt.subMu.Lock()
	sub, cancel := pt.sub, pt.cancel
	pt.sub, pt.cancel = nil, nil
	pt.subMu.Unlock()
	if sub != nil {
		cancel()
		sub.Cancel()
	}
}

// close leaves every topic; called by Service.Close after its goroutines ended.
func (pp *propagator) close() {
	pp.mu.Lock()
	pp.closed = true
	topics := pp.topics
	pp.topics = nil
	pp.mu.Unlock()
	ps := pp.s.ov.PubSub()
	for _, pt := range topics {
		pt.subMu.Lock()
		if pt.sub != nil {
			pt.cancel()
			pt.sub.Cancel()
			pt.sub = nil
		}
		pt.subMu.Unlock()
		_ = pt.topic.Close()
		_ = ps.UnregisterTopicValidator(pt.name)
	}
}

// windows returns the sender's windows, creating them (and evicting the stalest sender when
// MaxSenders are remembered). Call with wmu held.
func (pt *propTopic) windowsLocked(sender peer.ID) *senderWindows {
	now := pt.p.s.now()
	w, ok := pt.senders[sender]
	if !ok {
		if len(pt.senders) >= pt.p.s.cfg.MaxSenders {
			var oldest peer.ID
			var ot time.Time
			for id, sw := range pt.senders {
				if oldest == "" || sw.last.Before(ot) {
					oldest, ot = id, sw.last
				}
			}
			delete(pt.senders, oldest)
		}
		n := pt.p.s.cfg.ReplayWindow
		w = &senderWindows{multicast: newSeqWindow(n), gossip: newSeqWindow(n), delivered: newSeqWindow(n)}
		pt.senders[sender] = w
	}
	w.last = now
	return w
}

// arrival records a verified message's arrival on carrier c and reports a replay.
func (pt *propTopic) arrival(m *signedMsg, c Carrier) seqVerdict {
	pt.wmu.Lock()
	defer pt.wmu.Unlock()
	w := pt.windowsLocked(m.Sender)
	if c == CarrierGossip {
		return w.gossip.observe(m.Seq)
	}
	return w.multicast.observe(m.Seq)
}

// validate is the topic's gossipsub validator: forged and replayed messages are rejected (the
// router penalises the peer that forwarded them); messages too old to judge are ignored.
func (pt *propTopic) validate(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	s := pt.p.s
	if from == s.self && msg.ReceivedFrom == s.self {
		return pubsub.ValidationAccept // our own publication
	}
	m, err := decodeSigned(msg.Data, s.cfg.MaxPropagateSize)
	if err == nil && (m.Type != msgPropagate || m.Pipe != pt.spec.ID) {
		err = fmt.Errorf("%w: not a message of pipe %s", ErrMalformed, pt.spec.ID)
	}
	if err != nil {
		s.stats.rejMalformed.Add(1)
		s.log.Debug("gossip message rejected", "pipe", pt.spec.ID, "from", from, "err", err)
		return pubsub.ValidationReject
	}
	if !s.cfg.TrustGossipAuthor || peer.ID(msg.GetFrom()) != m.Sender {
		if err := m.verify(); err != nil {
			s.stats.rejForged.Add(1)
			s.log.Debug("gossip message rejected", "pipe", pt.spec.ID, "from", from, "err", err)
			return pubsub.ValidationReject
		}
	}
	if m.Sender == s.self {
		s.stats.rejReplayed.Add(1) // our own message coming back in a new envelope
		return pubsub.ValidationReject
	}
	switch pt.arrival(m, CarrierGossip) {
	case seqDup:
		s.stats.rejReplayed.Add(1)
		s.log.Debug("gossip message rejected", "pipe", pt.spec.ID, "from", from, "err", ErrReplayed, "sender", m.Sender, "seq", m.Seq)
		return pubsub.ValidationReject
	case seqOld:
		s.stats.rejReplayed.Add(1)
		return pubsub.ValidationIgnore
	}
	msg.ValidatorData = m
	return pubsub.ValidationAccept
}

// readSub reads the subscription and delivers what the validator accepted.
func (pt *propTopic) readSub(ctx context.Context, sub *pubsub.Subscription) {
	s := pt.p.s
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			return
		}
		m, ok := msg.ValidatorData.(*signedMsg)
		if !ok {
			continue // our own publication (delivered locally when sent)
		}
		s.stats.propRecvGS.Add(1)
		s.stats.propRecvGSBytes.Add(uint64(len(m.Payload)))
		pt.deliver(m, CarrierGossip, false)
	}
}

// onDatagram handles a propagate message that arrived by native multicast.
func (pp *propagator) onDatagram(m *signedMsg) {
	s := pp.s
	pt := pp.lookup(m.Pipe)
	if pt == nil || s.input(m.Pipe) == nil {
		s.stats.propNoListener.Add(1)
		return
	}
	if err := m.verify(); err != nil {
		s.stats.rejForged.Add(1)
		s.log.Debug("multicast message rejected", "pipe", m.Pipe, "err", err)
		return
	}
	if v := pt.arrival(m, CarrierMulticast); v != seqNew {
		s.stats.rejReplayed.Add(1)
		s.log.Debug("multicast message rejected", "pipe", m.Pipe, "err", ErrReplayed, "sender", m.Sender, "seq", m.Seq)
		return
	}
	s.stats.propRecvMC.Add(1)
	s.stats.propRecvMCBytes.Add(uint64(len(m.Payload)))
	pt.deliver(m, CarrierMulticast, true)
}

// deliver hands a verified message to the input end once, whichever carrier brings it first.
func (pt *propTopic) deliver(m *signedMsg, c Carrier, copyPayload bool) {
	s := pt.p.s
	in := s.input(pt.spec.ID)
	if in == nil || in.spec.Kind != Propagate {
		s.stats.propNoListener.Add(1)
		return
	}
	pt.wmu.Lock()
	v := pt.windowsLocked(m.Sender).delivered.observe(m.Seq)
	pt.wmu.Unlock()
	if v != seqNew {
		s.stats.propDup.Add(1)
		return
	}
	data := m.Payload
	if copyPayload {
		data = slices.Clone(data)
	}
	if data == nil {
		data = []byte{}
	}
	if !in.deliverNow(Message{Pipe: pt.spec.ID, From: m.Sender, Seq: m.Seq, Data: data, Carrier: c}) {
		s.stats.propDrop.Add(1)
		return
	}
	if c == CarrierGossip {
		s.stats.propDelivGS.Add(1)
	} else {
		s.stats.propDelivMC.Add(1)
	}
}

// propagateOut is the output end of a propagate pipe.
type propagateOut struct {
	s    *Service
	spec PipeSpec
	pt   *propTopic

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sent   atomic.Uint64

	mu        sync.Mutex // guards bound, boundAt, resolving
	bound     []peer.ID
	boundAt   time.Time // zero until the first resolution
	resolving bool
}

var _ OutputPipe = (*propagateOut)(nil)

func newPropagateOut(s *Service, spec PipeSpec) (*propagateOut, error) {
	pt, err := s.prop.topic(spec)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(s.ctx)
	o := &propagateOut{s: s, spec: spec, pt: pt, ctx: ctx, cancel: cancel}
	o.refreshBound()
	return o, nil
}

func (o *propagateOut) Spec() PipeSpec              { return o.spec }
func (o *propagateOut) Delivered() uint64           { return o.sent.Load() }
func (o *propagateOut) Flush(context.Context) error { return nil }

func (o *propagateOut) Close() error {
	o.cancel()
	o.wg.Wait()
	o.s.removeOutput(o)
	return nil
}

// refreshBound resolves the bound peers in the background when the last answer is older than
// ResolveTTL (Send never waits for the overlay).
func (o *propagateOut) refreshBound() {
	o.mu.Lock()
	if o.resolving || (!o.boundAt.IsZero() && o.s.now().Sub(o.boundAt) < o.s.cfg.ResolveTTL) || o.ctx.Err() != nil {
		o.mu.Unlock()
		return
	}
	o.resolving = true
	o.wg.Add(1)
	o.mu.Unlock()
	go func() {
		defer o.wg.Done()
		ctx, cancel := context.WithTimeout(o.ctx, o.s.cfg.HandshakeTimeout)
		defer cancel()
		peers, err := o.s.res.resolve(ctx, o.spec, true)
		o.mu.Lock()
		o.resolving = false
		if err == nil {
			o.bound, o.boundAt = peers, o.s.now()
		}
		o.mu.Unlock()
		if err != nil {
			o.s.log.Debug("propagate pipe: resolve", "pipe", o.spec.ID, "err", err)
		}
	}()
}

// plan decides the carriers of one message: the interfaces to multicast on (with the address
// families to use) and whether to publish on gossipsub.
func (o *propagateOut) plan(size int) (ifaces []mcTarget, gossip bool) {
	o.refreshBound()
	o.mu.Lock()
	bound, known := o.bound, !o.boundAt.IsZero()
	o.mu.Unlock()
	mc := o.s.mc
	if mc == nil || size > o.s.cfg.Multicast.MaxDatagram {
		return nil, true
	}
	targets := bound
	if !known {
		targets = nil // unknown: multicast to whoever is in the domain, and gossip
	}
	ifaces, covered := mc.targets(targets, !known, false)
	if !known {
		return ifaces, true
	}
	for _, p := range bound {
		if p != o.s.self && !covered[p] {
			return ifaces, true
		}
	}
	for _, p := range o.pt.topic.ListPeers() {
		if !covered[p] {
			return ifaces, true
		}
	}
	return ifaces, len(ifaces) == 0 && len(bound) == 0
}

// SendNoCopy is Send: a propagate message is signed into a new buffer at once.
func (o *propagateOut) SendNoCopy(ctx context.Context, b []byte) error { return o.Send(ctx, b) }

// Send signs b and sends it to every peer bound to the pipe: by native multicast on each
// interface whose domain holds a bound peer, and by gossipsub when some bound or subscribed
// peer is outside this node's domains (or the bindings are not resolved yet, or b is too large
// for a datagram). A local input end of the same pipe gets it directly.
func (o *propagateOut) Send(ctx context.Context, b []byte) error {
	if len(b) > o.s.cfg.MaxPropagateSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(b), o.s.cfg.MaxPropagateSize)
	}
	if o.ctx.Err() != nil {
		return ErrClosed
	}
	seq := o.pt.seq.Add(1)
	data, err := o.s.prop.sg.propagate(o.spec.ID, seq, b)
	if err != nil {
		return err
	}
	if in := o.s.input(o.spec.ID); in != nil && in.spec.Kind == Propagate {
		o.pt.wmu.Lock()
		o.pt.windowsLocked(o.s.self).delivered.observe(seq)
		o.pt.wmu.Unlock()
		if in.deliverNow(Message{Pipe: o.spec.ID, From: o.s.self, Seq: seq, Data: slices.Clone(b), Carrier: CarrierLocal}) {
			o.s.stats.propDelivLocal.Add(1)
		} else {
			o.s.stats.propDrop.Add(1)
		}
	}
	ifaces, gossip := o.plan(len(data))
	var errs []error
	for _, t := range ifaces {
		n, err := o.s.mc.sendCtl(t, data)
		if err != nil {
			errs = append(errs, err)
		}
		o.s.stats.propSentMC.Add(uint64(n))
		o.s.stats.propSentMCBytes.Add(uint64(n * len(b)))
	}
	if gossip {
		if err := o.pt.topic.Publish(ctx, data); err != nil {
			errs = append(errs, fmt.Errorf("pipes: gossipsub publish: %w", err))
		} else {
			o.s.stats.propSentGS.Add(1)
			o.s.stats.propSentGSBytes.Add(uint64(len(b)))
		}
	}
	if len(errs) > 0 && (gossip && len(errs) == len(ifaces)+1 || !gossip && len(errs) == len(ifaces)) {
		return errors.Join(errs...) // every carrier failed
	}
	o.sent.Add(1)
	return nil
}
