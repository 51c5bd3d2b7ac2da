package pipes_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/raftcast/raftcast/pipes"
)

func frame(b []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }

func helloFrame(pipe string) []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(len(pipe)))
	return frame(append(b, pipe...))
}

// readUntilEnd reads st until it ends and returns what it read and how it ended.
func readUntilEnd(t *testing.T, st network.Stream) ([]byte, error) {
	t.Helper()
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	return io.ReadAll(st)
}

// Oversized frames, garbage and unknown pipes on the stream protocols are rejected, counted and
// the stream reset (or refused); the service keeps working.
func TestBadInputStreams(t *testing.T) {
	nodes := newNodes(t, 2, testConfig())
	victim, attacker := nodes[0], nodes[1]
	ctx := testCtx(t, 60*time.Second)
	spec, _ := pipes.PipeSpec{Name: "victim", Kind: pipes.Unicast}.Normalize()
	in, err := victim.svc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	open := func(proto protocol.ID) network.Stream {
		st, err := attacker.h.NewStream(ctx, victim.h.ID(), proto)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	okStatus := frame([]byte{0, 0})
	rejected := func() pipes.RejectStats { return victim.svc.Stats().Rejected }

	t.Run("garbage hello", func(t *testing.T) {
		for _, proto := range []protocol.ID{pipes.ProtocolUnicast, pipes.ProtocolBidi} {
			before := rejected().Malformed
			st := open(proto)
			_, _ = st.Write([]byte{5, 0xff, 0xff, 0xff, 0xff, 0xff})
			if _, err := readUntilEnd(t, st); err == nil {
				t.Fatalf("%s: garbage hello: stream ended cleanly, want reset", proto)
			}
			eventually(t, 10*time.Second, "malformed counted", func() bool { return rejected().Malformed == before+1 })
		}
	})
	t.Run("oversized hello", func(t *testing.T) {
		before := rejected().OversizedFrames
		st := open(pipes.ProtocolUnicast)
		_, _ = st.Write(binary.AppendUvarint(nil, 1<<30))
		if _, err := readUntilEnd(t, st); err == nil {
			t.Fatal("oversized hello: stream ended cleanly, want reset")
		}
		eventually(t, 10*time.Second, "oversized counted", func() bool { return rejected().OversizedFrames == before+1 })
	})
	t.Run("varint overflow", func(t *testing.T) {
		before := rejected().Malformed
		st := open(pipes.ProtocolUnicast)
		_, _ = st.Write(bytes.Repeat([]byte{0xff}, 11))
		if _, err := readUntilEnd(t, st); err == nil {
			t.Fatal("overflowing length: stream ended cleanly, want reset")
		}
		eventually(t, 10*time.Second, "malformed counted", func() bool { return rejected().Malformed == before+1 })
	})
	t.Run("oversized frame", func(t *testing.T) {
		big := uint64(pipes.DefaultConfig().MaxFrameSize + 1)
		for proto, prefix := range map[protocol.ID]uint64{
			pipes.ProtocolUnicast:   big << 1, // length<<1 | ack flag
			pipes.ProtocolUnicastV1: big,
		} {
			before := rejected().OversizedFrames
			st := open(proto)
			_, _ = st.Write(helloFrame(spec.ID))
			status := make([]byte, len(okStatus))
			if _, err := io.ReadFull(st, status); err != nil || !bytes.Equal(status, okStatus) {
				t.Fatalf("%s: status %x, %v", proto, status, err)
			}
			_, _ = st.Write(binary.AppendUvarint(nil, prefix))
			if _, err := readUntilEnd(t, st); err == nil {
				t.Fatalf("%s: oversized frame: stream ended cleanly, want reset", proto)
			}
			eventually(t, 10*time.Second, "oversized counted", func() bool { return rejected().OversizedFrames == before+1 })
		}
	})
	t.Run("unknown pipe", func(t *testing.T) {
		for _, proto := range []protocol.ID{pipes.ProtocolUnicast, pipes.ProtocolBidi} {
			before := rejected().UnknownPipe
			st := open(proto)
			_, _ = st.Write(helloFrame("pipe-nobody"))
			got, _ := readUntilEnd(t, st)
			if len(got) < 2 || got[1] != 1 {
				t.Fatalf("%s: unknown pipe: reply %x, want status 1", proto, got)
			}
			eventually(t, 10*time.Second, "unknown pipe counted", func() bool { return rejected().UnknownPipe == before+1 })
		}
	})
	t.Run("bad version", func(t *testing.T) {
		st := open(pipes.ProtocolUnicast)
		_, _ = st.Write(frame(append([]byte{9, byte(len(spec.ID))}, spec.ID...)))
		got, _ := readUntilEnd(t, st)
		if len(got) < 2 || got[1] != 4 {
			t.Fatalf("bad version: reply %x, want status 4", got)
		}
	})

	// Still working.
	out, err := attacker.svc.Output(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Send(ctx, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if m, err := in.Recv(ctx); err != nil || string(m.Data) != "still here" {
		t.Fatalf("after bad input: %q, %v", m.Data, err)
	}
}

// rejectTracer records gossipsub rejections by the peer that forwarded the message.
type rejectTracer struct {
	mu      sync.Mutex
	rejects map[peer.ID]int
}

func (r *rejectTracer) RejectMessage(msg *pubsub.Message, reason string) {
	if reason != pubsub.RejectValidationFailed {
		return
	}
	r.mu.Lock()
	r.rejects[msg.ReceivedFrom]++
	r.mu.Unlock()
}

func (r *rejectTracer) count(p peer.ID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejects[p]
}

func (r *rejectTracer) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (r *rejectTracer) OnClosedOutboundStream(peer.ID)           {}
func (r *rejectTracer) Join(string)                              {}
func (r *rejectTracer) Leave(string)                             {}
func (r *rejectTracer) Graft(peer.ID, string)                    {}
func (r *rejectTracer) Prune(peer.ID, string)                    {}
func (r *rejectTracer) ValidateMessage(*pubsub.Message)          {}
func (r *rejectTracer) DeliverMessage(*pubsub.Message)           {}
func (r *rejectTracer) DuplicateMessage(*pubsub.Message)         {}
func (r *rejectTracer) ThrottlePeer(peer.ID)                     {}
func (r *rejectTracer) RecvRPC(*pubsub.RPC)                      {}
func (r *rejectTracer) SendRPC(*pubsub.RPC, peer.ID)             {}
func (r *rejectTracer) DropRPC(*pubsub.RPC, peer.ID)             {}
func (r *rejectTracer) UndeliverableMessage(*pubsub.Message)     {}

// scoreWatch keeps the latest gossipsub scores a node holds.
type scoreWatch struct {
	mu     sync.Mutex
	scores map[peer.ID]float64
}

func (w *scoreWatch) inspect(m map[peer.ID]float64) {
	w.mu.Lock()
	w.scores = m
	w.mu.Unlock()
}

func (w *scoreWatch) score(p peer.ID) float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.scores[p]
}

// A bound peer that acknowledges more messages than it was sent is dropped as broken: nothing
// counts as delivered on its word, and the messages go, in order, to an honest bound peer.
func TestBadInputOverAck(t *testing.T) {
	nodes := newNodes(t, 3, testConfig())
	sender, liar, honest := nodes[0], nodes[1], nodes[2]
	ctx := testCtx(t, 60*time.Second)
	spec, _ := pipes.PipeSpec{Name: "over-ack", Kind: pipes.Unicast}.Normalize()
	// The liar binds the pipe (publishing its binding), then answers its streams by hand.
	if _, err := liar.svc.Listen(ctx, spec); err != nil {
		t.Fatal(err)
	}
	lied := make(chan struct{}, 16)
	liar.h.SetStreamHandler(pipes.ProtocolUnicast, func(st network.Stream) {
		defer st.Reset()
		r := bufio.NewReader(st)
		n, err := binary.ReadUvarint(r)
		if err != nil || n > 1024 {
			return
		}
		if _, err := io.ReadFull(r, make([]byte, n)); err != nil {
			return
		}
		if _, err := st.Write(frame([]byte{0, 0})); err != nil {
			return
		}
		if _, err := r.ReadByte(); err != nil { // a message has started arriving
			return
		}
		_, _ = st.Write(binary.AppendUvarint(nil, 1000)) // acknowledges 1000 messages
		lied <- struct{}{}
		_, _ = readUntilEnd(t, st)
	})
	out, err := sender.svc.Output(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		if err := out.Send(ctx, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-lied:
	case <-ctx.Done():
		t.Fatal("the sender never reached the lying peer")
	}
	eventually(t, 20*time.Second, "the lying peer dropped", func() bool { return sender.svc.Stats().Unicast.Failovers > 0 })
	if d := out.Delivered(); d != 0 {
		t.Fatalf("Delivered = %d after a false acknowledgement, want 0", d)
	}
	in, err := honest.svc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m, err := in.Recv(ctx)
		if err != nil {
			t.Fatalf("honest peer, message %d: %v", i, err)
		}
		if want := fmt.Sprintf("m%d", i); string(m.Data) != want {
			t.Fatalf("honest peer got %q, want %q", m.Data, want)
		}
	}
	if err := out.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// A forged and a replayed propagate message on gossipsub are rejected and counted; the
// validator's Reject reaches the router (the forwarding peer's score drops); the listener
// still gets the honest messages once.
func TestBadInputPropagate(t *testing.T) {
	spec, _ := pipes.PipeSpec{Name: "guarded", Kind: pipes.Propagate}.Normalize()
	topic := topicName(spec)
	tracer := &rejectTracer{rejects: make(map[peer.ID]int)}
	scores := &scoreWatch{}
	params := &pubsub.PeerScoreParams{
		SkipAtomicValidation: true,
		Topics: map[string]*pubsub.TopicScoreParams{topic: {
			SkipAtomicValidation:           true,
			TopicWeight:                    1,
			TimeInMeshQuantum:              time.Second,
			InvalidMessageDeliveriesWeight: -10,
			InvalidMessageDeliveriesDecay:  0.9,
		}},
		AppSpecificScore: func(peer.ID) float64 { return 0 },
		DecayInterval:    time.Second,
		DecayToZero:      0.01,
	}
	thresholds := &pubsub.PeerScoreThresholds{SkipAtomicValidation: true, GossipThreshold: -1e6, PublishThreshold: -2e6, GraylistThreshold: -3e6}
	nodes := newNodes(t, 3, testConfig(),
		pubsub.WithRawTracer(tracer),
		pubsub.WithPeerScore(params, thresholds),
		pubsub.WithPeerScoreInspect(scores.inspect, 100*time.Millisecond))
	victim, attacker, sender := nodes[0], nodes[1], nodes[2]
	ctx := testCtx(t, 90*time.Second)

	in, err := victim.svc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	// The attacker listens on the raw topic to capture an honest message.
	at, err := attacker.ps.Join(topic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := at.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sender.svc.Output(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitTopicPeers(t, sender, spec, victim, attacker)
	if err := out.Send(ctx, []byte("honest")); err != nil {
		t.Fatal(err)
	}
	m, err := in.Recv(ctx)
	if err != nil || string(m.Data) != "honest" {
		t.Fatalf("honest message: %q, %v", m.Data, err)
	}
	cm, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	captured := cm.Data
	sub.Cancel() // the attacker now publishes by fanout, straight to the victim

	// republish sends b from the attacker until the victim's counter moves.
	republish := func(what string, b []byte, counter func() uint64) {
		t.Helper()
		before := counter()
		rejBefore := tracer.count(attacker.h.ID())
		deadline := time.Now().Add(30 * time.Second)
		for counter() == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s: victim never counted it (stats %+v)", what, victim.svc.Stats().Rejected)
			}
			if err := at.Publish(ctx, bytes.Clone(b)); err != nil {
				t.Fatalf("%s: publish: %v", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		eventually(t, 10*time.Second, what+" rejected by the router", func() bool { return tracer.count(attacker.h.ID()) > rejBefore })
	}
	republish("replay", captured, func() uint64 { return victim.svc.Stats().Rejected.Replayed })

	forged := bytes.Clone(captured)
	i := bytes.Index(forged, []byte("honest"))
	if i < 0 {
		t.Fatal("payload not found in the captured message")
	}
	copy(forged[i:], "forged")
	republish("forgery", forged, func() uint64 { return victim.svc.Stats().Rejected.Forged })

	garbage := []byte("not a pipe message at all")
	republish("garbage", garbage, func() uint64 { return victim.svc.Stats().Rejected.Malformed })

	eventually(t, 10*time.Second, "attacker's score to drop", func() bool { return scores.score(attacker.h.ID()) < 0 })

	// Nothing forged or replayed was delivered; honest traffic still flows.
	if err := out.Send(ctx, []byte("honest2")); err != nil {
		t.Fatal(err)
	}
	m, err = in.Recv(ctx)
	if err != nil || string(m.Data) != "honest2" {
		t.Fatalf("after the attack: %q, %v", m.Data, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if m, err := in.Recv(rctx); err == nil {
		t.Fatalf("extra delivery %q", m.Data)
	}
	st := victim.svc.Stats()
	t.Logf("victim: rejected %+v, propagate %+v, score of attacker %.1f", st.Rejected, st.Propagate, scores.score(attacker.h.ID()))
	_ = fmt.Sprint()
}
