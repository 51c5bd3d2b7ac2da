package pipes_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/raftcast/raftcast/pipes"
	"golang.org/x/net/nettest"
)

// bidiPair binds a bidi pipe on nodes[0] and dials it from nodes[1].
func bidiPair(t *testing.T, nodes []*node, name string) (dialed, accepted *pipes.BidiConn) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	spec := pipes.PipeSpec{Name: name, Kind: pipes.Bidi}
	l, err := nodes[0].svc.ListenBidi(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	c1, err := nodes[1].svc.DialBidi(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := l.AcceptBidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c1, c2
}

// 64 MiB each way at once, intact.
func TestBidi64MiBEachWay(t *testing.T) {
	nodes := newNodes(t, 2, testConfig())
	a, b := bidiPair(t, nodes, "bulk")
	defer a.Close()
	defer b.Close()
	const size = 64 << 20
	var wg sync.WaitGroup
	send := func(c *pipes.BidiConn, seed uint64) {
		defer wg.Done()
		r := io.LimitReader(rand.NewChaCha8(seedBytes(seed)), size)
		if _, err := io.Copy(c, r); err != nil {
			t.Errorf("write: %v", err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Errorf("close write: %v", err)
		}
	}
	recv := func(c *pipes.BidiConn, seed uint64) {
		defer wg.Done()
		want := sha256.New()
		_, _ = io.Copy(want, io.LimitReader(rand.NewChaCha8(seedBytes(seed)), size))
		got := sha256.New()
		n, err := io.Copy(got, c)
		if err != nil {
			t.Errorf("read: %v", err)
			return
		}
		if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Errorf("received %d bytes (want %d), digest match %v", n, size, bytes.Equal(got.Sum(nil), want.Sum(nil)))
		}
	}
	wg.Add(4)
	go send(a, 1)
	go send(b, 2)
	go recv(b, 1)
	go recv(a, 2)
	wg.Wait()
}

func seedBytes(s uint64) [32]byte {
	var b [32]byte
	b[0] = byte(s)
	return b
}

func TestBidiMessages(t *testing.T) {
	nodes := newNodes(t, 2, testConfig())
	a, b := bidiPair(t, nodes, "msgs")
	defer a.Close()
	defer b.Close()
	msgs := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte{7}, 3<<20), []byte("last")}
	go func() {
		for _, m := range msgs {
			if err := a.WriteMsg(m); err != nil {
				t.Errorf("WriteMsg: %v", err)
			}
		}
	}()
	for i, want := range msgs {
		got, err := b.ReadMsg()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("message %d: %d bytes, %v; want %d bytes", i, len(got), err, len(want))
		}
	}
	if a.RemotePeer() != nodes[0].h.ID() || b.RemotePeer() != nodes[1].h.ID() {
		t.Fatal("wrong remote peers")
	}
}

// BidiConn satisfies the net.Conn contract (x/net/nettest).
func TestBidiNetConn(t *testing.T) {
	nodes := newNodes(t, 2, testConfig())
	nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) {
		a, b := bidiPair(t, nodes, "conn-"+time.Now().String())
		return a, b, func() { _ = a.Close(); _ = b.Close() }, nil
	})
}
