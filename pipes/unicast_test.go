package pipes_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/raftcast/raftcast/pipes"
)

func TestUnicastDelivers(t *testing.T) {
	nodes := newNodes(t, 2, testConfig())
	ctx := testCtx(t, 60*time.Second)
	spec := pipes.PipeSpec{Name: "u1", Kind: pipes.Unicast}
	in := mustListen(t, ctx, nodes[0].svc, spec)
	out := mustOutput(t, ctx, nodes[1].svc, spec)
	const n = 2000
	go func() {
		for i := range n {
			if err := out.Send(ctx, fmt.Appendf(nil, "msg %d", i)); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	for i := range n {
		m, err := in.Recv(ctx)
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if want := fmt.Sprintf("msg %d", i); string(m.Data) != want || m.From != nodes[1].h.ID() || m.Carrier != pipes.CarrierStream {
			t.Fatalf("message %d: got %q from %s by %v, want %q from %s", i, m.Data, m.From, m.Carrier, want, nodes[1].h.ID())
		}
	}
	if err := out.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := out.Delivered(); got != n {
		t.Fatalf("Delivered = %d, want %d", got, n)
	}
	if st := nodes[0].svc.Stats(); st.Unicast.MessagesRecv != n {
		t.Fatalf("receiver counted %d messages, want %d", st.Unicast.MessagesRecv, n)
	}
}

// A receiver that releases every message gets each later message intact while their buffers
// are recycled (sizes vary so buffers of one class carry messages of different lengths).
func TestUnicastRelease(t *testing.T) {
	nodes := newNodes(t, 2, testConfig())
	ctx := testCtx(t, 60*time.Second)
	spec := pipes.PipeSpec{Name: "u-release", Kind: pipes.Unicast}
	in := mustListen(t, ctx, nodes[0].svc, spec)
	out := mustOutput(t, ctx, nodes[1].svc, spec)
	const n = 300
	msg := func(i int) []byte {
		b := make([]byte, 1000+(i*7919)%70000)
		for j := range b {
			b[j] = byte(i + j)
		}
		return b
	}
	go func() {
		for i := range n {
			if err := out.Send(ctx, msg(i)); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	for i := range n {
		m, err := in.Recv(ctx)
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if !bytes.Equal(m.Data, msg(i)) {
			t.Fatalf("message %d: %d bytes, not the %d sent", i, len(m.Data), len(msg(i)))
		}
		m.Release()
		if m.Data != nil {
			t.Fatal("Release left Data set")
		}
	}
	if err := out.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// failoverMsg is message i of TestUnicastFailoverInFlight: sizes on both sides of the write
// buffer and of the frame reader's direct-read threshold, contents that tell messages apart.
func failoverMsg(i int) []byte {
	b := make([]byte, []int{100, 70000, 300000, 5000, 65536}[i%5])
	for j := range b {
		b[j] = byte(i ^ j>>8 ^ j)
	}
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

// A bound peer that dies with messages in flight (queued by Send and SendNoCopy alike): the
// next bound peer gets every message it had not acknowledged, in order.
func TestUnicastFailoverInFlight(t *testing.T) {
	cfg := testConfig()
	cfg.RecvQueue = 4 // the first listener stops reading after four messages
	nodes := newNodes(t, 3, cfg)
	ctx := testCtx(t, 90*time.Second)
	spec := pipes.PipeSpec{Name: "failover-in-flight", Kind: pipes.Unicast}
	in1 := mustListen(t, ctx, nodes[0].svc, spec)
	out := mustOutput(t, ctx, nodes[2].svc, spec)
	const n = 150 // about 22 MiB: more than the send window
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			send := out.Send
			if i%2 == 1 {
				send = out.SendNoCopy // a fresh buffer, never modified
			}
			if err := send(ctx, failoverMsg(i)); err != nil {
				sent <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		sent <- nil
	}()
	eventually(t, 30*time.Second, "the first listener's queue to fill", func() bool {
		return nodes[0].svc.Stats().Unicast.MessagesRecv >= 4
	})
	time.Sleep(100 * time.Millisecond) // let the stream back up
	acked := out.Delivered()
	if acked >= n {
		t.Fatalf("all %d messages acknowledged before the listener died", acked)
	}
	_ = nodes[0].h.Close() // the first listener dies: its streams are cut

	var first []int
	for {
		m, err := in1.Recv(testCtx(t, time.Second))
		if err != nil {
			break
		}
		first = append(first, int(binary.BigEndian.Uint32(m.Data)))
	}
	in2 := mustListen(t, ctx, nodes[1].svc, spec)
	var second []int
	for len(second) == 0 || second[len(second)-1] != n-1 {
		m, err := in2.Recv(ctx)
		if err != nil {
			t.Fatalf("second listener after %v: %v", second, err)
		}
		i := int(binary.BigEndian.Uint32(m.Data))
		if !bytes.Equal(m.Data, failoverMsg(i)) {
			t.Fatalf("second listener: message %d corrupt", i)
		}
		second = append(second, i)
		m.Release()
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// The second listener starts at or before the first unacknowledged message and goes on in
	// order to the last; the first listener got a prefix.
	for k, i := range first {
		if i != k {
			t.Fatalf("first listener got %v, want a prefix of the messages", first)
		}
	}
	if second[0] > int(acked) || second[0] > len(first) {
		t.Fatalf("second listener starts at %d: %d acknowledged, %d reached the first", second[0], acked, len(first))
	}
	for k := 1; k < len(second); k++ {
		if second[k] != second[k-1]+1 {
			t.Fatalf("second listener out of order: %d after %d", second[k], second[k-1])
		}
	}
	if err := out.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := nodes[2].svc.Stats().Unicast; st.Failovers == 0 {
		t.Fatalf("no failover counted: %+v", st)
	}
}

// A bound peer that speaks only ProtocolUnicastV1 (an older build) still gets every message,
// and Flush returns once its delayed acknowledgements arrive.
func TestUnicastV1Peer(t *testing.T) {
	nodes := newNodes(t, 2, testConfig())
	ctx := testCtx(t, 60*time.Second)
	spec := pipes.PipeSpec{Name: "u-v1", Kind: pipes.Unicast}
	in := mustListen(t, ctx, nodes[0].svc, spec)
	nodes[0].h.RemoveStreamHandler(pipes.ProtocolUnicast)
	eventually(t, 20*time.Second, "the sender to learn the listener's protocols", func() bool {
		got, _ := nodes[1].h.Peerstore().SupportsProtocols(nodes[0].h.ID(), pipes.ProtocolUnicast, pipes.ProtocolUnicastV1)
		return len(got) == 1 && got[0] == pipes.ProtocolUnicastV1
	})
	out := mustOutput(t, ctx, nodes[1].svc, spec)
	for round := range 3 {
		for i := range 20 {
			if err := out.Send(ctx, fmt.Appendf(nil, "r%d m%d", round, i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := out.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			m, err := in.Recv(ctx)
			if want := fmt.Sprintf("r%d m%d", round, i); err != nil || string(m.Data) != want {
				t.Fatalf("got %q, %v; want %q", m.Data, err, want)
			}
		}
	}
	if got := out.Delivered(); got != 60 {
		t.Fatalf("Delivered = %d, want 60", got)
	}

	// And an older sender: plain length prefixes on a ProtocolUnicastV1 stream, acknowledged
	// after the receiver's short delay.
	st, err := nodes[1].h.NewStream(ctx, nodes[0].h.ID(), pipes.ProtocolUnicastV1)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	spec, _ = spec.Normalize()
	hello := append([]byte{1}, binary.AppendUvarint(nil, uint64(len(spec.ID)))...)
	hello = append(hello, spec.ID...)
	wire := append(binary.AppendUvarint(nil, uint64(len(hello))), hello...)
	for i := range 3 {
		m := fmt.Appendf(nil, "old %d", i)
		wire = append(binary.AppendUvarint(wire, uint64(len(m))), m...)
	}
	if _, err := st.Write(wire); err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(st)
	status := make([]byte, 3) // frame of {code 0, empty message}
	if _, err := io.ReadFull(r, status); err != nil || status[1] != 0 {
		t.Fatalf("status %x, %v", status, err)
	}
	if ack, err := binary.ReadUvarint(r); err != nil || ack != 3 {
		t.Fatalf("acknowledgement %d, %v; want 3", ack, err)
	}
	for i := range 3 {
		m, err := in.Recv(ctx)
		if want := fmt.Sprintf("old %d", i); err != nil || string(m.Data) != want {
			t.Fatalf("got %q, %v; want %q", m.Data, err, want)
		}
	}
}

func TestUnicastTooLarge(t *testing.T) {
	nodes := newNodes(t, 1, testConfig())
	ctx := testCtx(t, 10*time.Second)
	out, err := nodes[0].svc.Output(ctx, pipes.PipeSpec{Name: "big", Kind: pipes.Unicast})
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Send(ctx, make([]byte, pipes.DefaultConfig().MaxFrameSize+1)); !errors.Is(err, pipes.ErrMessageTooLarge) {
		t.Fatalf("Send of an oversized message: %v, want ErrMessageTooLarge", err)
	}
}

func TestUnicastNoListener(t *testing.T) {
	nodes := newNodes(t, 1, testConfig())
	ctx := testCtx(t, 10*time.Second)
	out, err := nodes[0].svc.Output(ctx, pipes.PipeSpec{Name: "nobody", Kind: pipes.Unicast})
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Send(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := out.Flush(fctx); !errors.Is(err, pipes.ErrNoListener) {
		t.Fatalf("Flush with nobody bound: %v, want ErrNoListener", err)
	}
}

// A listener stops; the sender fails over to a new listener that binds later, which gets
// every message sent after the first listener stopped.
func TestUnicastFailover(t *testing.T) {
	nodes := newNodes(t, 3, testConfig())
	ctx := testCtx(t, 90*time.Second)
	spec := pipes.PipeSpec{Name: "failover", Kind: pipes.Unicast}
	in1 := mustListen(t, ctx, nodes[0].svc, spec)
	out := mustOutput(t, ctx, nodes[2].svc, spec)
	for i := range 100 {
		if err := out.Send(ctx, fmt.Appendf(nil, "a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		m, err := in1.Recv(ctx)
		if err != nil || string(m.Data) != fmt.Sprintf("a%d", i) {
			t.Fatalf("first listener, message %d: %q, %v", i, m.Data, err)
		}
	}
	if err := in1.Close(); err != nil {
		t.Fatal(err)
	}

	// Send the second batch while nobody is bound, then bind the second listener.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 100 {
			if err := out.Send(ctx, fmt.Appendf(nil, "b%d", i)); err != nil {
				t.Errorf("send b%d: %v", i, err)
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	in2 := mustListen(t, ctx, nodes[1].svc, spec)
	wg.Wait()
	if err := out.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	for len(seen) < 100 {
		m, err := in2.Recv(ctx)
		if err != nil {
			t.Fatalf("second listener after %d messages: %v", len(seen), err)
		}
		if !bytes.HasPrefix(m.Data, []byte("b")) {
			t.Fatalf("second listener got %q", m.Data)
		}
		seen[string(m.Data)] = true
	}
	if got := out.Delivered(); got != 200 {
		t.Fatalf("Delivered = %d, want 200", got)
	}
}

// The sender's node is itself bound: messages go to the local input end.
func TestUnicastLocal(t *testing.T) {
	nodes := newNodes(t, 1, testConfig())
	ctx := testCtx(t, 20*time.Second)
	spec := pipes.PipeSpec{Name: "self", Kind: pipes.Unicast}
	in := mustListen(t, ctx, nodes[0].svc, spec)
	out := mustOutput(t, ctx, nodes[0].svc, spec)
	if err := out.Send(ctx, []byte("me")); err != nil {
		t.Fatal(err)
	}
	m, err := in.Recv(ctx)
	if err != nil || string(m.Data) != "me" || m.Carrier != pipes.CarrierLocal {
		t.Fatalf("got %q by %v, %v", m.Data, m.Carrier, err)
	}
}

// mustListen binds spec on svc, failing the test on error.
func mustListen(t *testing.T, ctx context.Context, svc *pipes.Service, spec pipes.PipeSpec) *pipes.InputPipe {
	t.Helper()
	in, err := svc.Listen(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// mustOutput opens spec's output pipe on svc, failing the test on error.
func mustOutput(t *testing.T, ctx context.Context, svc *pipes.Service, spec pipes.PipeSpec) pipes.OutputPipe {
	t.Helper()
	out, err := svc.Output(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
