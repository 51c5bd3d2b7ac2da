package pipes_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/pipes/pipestest"
)

// The two-process benchmark: the receiving node runs in a child process (this test binary
// re-run as TestTwoProcessChild), so pipe and raw-stream throughput are measured across a
// process boundary, on loopback TCP.
const childEnv = "RAFTCAST_PIPES_BENCH_CHILD"

var (
	uniSpec  = pipes.PipeSpec{Name: "bench-2p", Kind: pipes.Unicast}
	bidiSpec = pipes.PipeSpec{Name: "bench-2p-bidi", Kind: pipes.Bidi}
)

// TestTwoProcessChild is the receiving side of BenchmarkTwoProcesses; it does nothing unless
// started by it.
func TestTwoProcessChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("helper process of BenchmarkTwoProcesses")
	}
	ctx := context.Background()
	h := pipestest.NewHost(t)
	ov := pipestest.NewNode(h, pipestest.NewPubSub(t, h), &pipestest.FileDirectory{Dir: filepath.Join(dir, "adverts")})
	svc, err := pipes.New(ov, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	h.SetStreamHandler(benchProto, rawSink)
	in, err := svc.Listen(ctx, uniSpec)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			m, err := in.Recv(ctx)
			if err != nil {
				return
			}
			m.Release()
		}
	}()
	l, err := svc.ListenBidi(ctx, bidiSpec)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.AcceptBidi(ctx)
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 1<<20)
				var n int64
				for {
					k, err := c.Read(buf)
					n += int64(k)
					for n >= roundBytes { // one byte back per round
						n -= roundBytes
						if _, err := c.Write([]byte{1}); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	addr := h.ID().String() + "\n" + h.Addrs()[0].String()
	if err := os.WriteFile(filepath.Join(dir, "child.addr.tmp"), []byte(addr), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "child.addr.tmp"), filepath.Join(dir, "child.addr")); err != nil {
		t.Fatal(err)
	}
	// Run until the parent closes stdin (bounded).
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
	}
}

// BenchmarkTwoProcesses: unicast (64 KiB and 1 MiB messages, by Send and by SendNoCopy) and
// bidi (1 MiB writes) pipe throughput from this process to a node in a child process, each as a ratio to one raw
// libp2p stream between the same two processes written in chunks of the same size (see
// benchRatio: every round moves 8 MiB over each, in alternating order; "ratio" is the median
// per-round ratio). CPU and system-call figures count both processes.
// RAFTCAST_BENCH_CHILD_PROFILE=/abs/prefix writes the child's CPU and memory profiles to
// prefix.cpu and prefix.mem.
func BenchmarkTwoProcesses(b *testing.B) {
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "adverts"), 0o700); err != nil {
		b.Fatal(err)
	}
	args := []string{"-test.run=^TestTwoProcessChild$", "-test.timeout=11m"}
	if p := os.Getenv("RAFTCAST_BENCH_CHILD_PROFILE"); p != "" {
		args = append(args, "-test.cpuprofile="+p+".cpu", "-test.memprofile="+p+".mem")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill() // by PID: the child this benchmark started
			<-done
		}
	})
	procs := benchProcs{cmd.Process.Pid}
	var addrFile []byte
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if addrFile, err = os.ReadFile(filepath.Join(dir, "child.addr")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the child process did not start its node")
		}
	}
	f := strings.SplitN(string(addrFile), "\n", 2)
	child, err := peer.Decode(f[0])
	if err != nil {
		b.Fatal(err)
	}
	h := pipestest.NewHost(b)
	ov := pipestest.NewNode(h, pipestest.NewPubSub(b, h), &pipestest.FileDirectory{Dir: filepath.Join(dir, "adverts")})
	svc, err := pipes.New(ov, testConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Close() })
	ctx := context.Background()
	if err := h.Connect(ctx, peer.AddrInfo{ID: child, Addrs: []ma.Multiaddr{ma.StringCast(f[1])}}); err != nil {
		b.Fatal(err)
	}
	for _, noCopy := range []bool{false, true} {
		for _, size := range []int{64 << 10, 1 << 20} {
			name := fmt.Sprintf("unicast/msg=%dKiB", size>>10)
			if noCopy {
				name = fmt.Sprintf("unicast-nocopy/msg=%dKiB", size>>10)
			}
			b.Run(name, func(b *testing.B) {
				out, err := svc.Output(ctx, uniSpec)
				if err != nil {
					b.Fatal(err)
				}
				defer out.Close()
				msg := make([]byte, size)
				send := out.Send
				if noCopy {
					send = out.SendNoCopy // msg never changes
				}
				benchRatio(b, procs, rawSender(b, h, child, msg), func() {
					for sent := 0; sent < roundBytes; sent += len(msg) {
						if err := send(ctx, msg); err != nil {
							b.Fatal(err)
						}
					}
					if err := out.Flush(ctx); err != nil { // every message acknowledged by the child
						b.Fatal(err)
					}
				})
			})
		}
	}
	b.Run("bidi", func(b *testing.B) {
		c, err := svc.DialBidi(ctx, bidiSpec)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		chunk := make([]byte, 1<<20)
		var one [1]byte
		benchRatio(b, procs, rawSender(b, h, child, chunk), func() {
			for sent := 0; sent < roundBytes; sent += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := io.ReadFull(c, one[:]); err != nil { // the child received it all
				b.Fatal(err)
			}
		})
	})
}
