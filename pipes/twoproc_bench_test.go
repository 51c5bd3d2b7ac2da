package pipes_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/pipes/pipestest"
)

// The two-process benchmark: the receiving node runs in a child process (this test binary
// re-run as TestTwoProcessChild), so pipe and raw-stream throughput are measured across a
// process boundary, on loopback TCP.
const (
	childEnv     = "RAFTCAST_PIPES_BENCH_CHILD"
	rawProto2    = "/raftcast/bench/raw2/1.0.0"
	twoProcTotal = 64 << 20
	twoProcChunk = 1 << 20
)

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
	// Raw stream sink: read everything, answer one byte.
	h.SetStreamHandler(rawProto2, func(s network.Stream) {
		_, _ = io.Copy(io.Discard, s)
		_, _ = s.Write([]byte{1})
		_ = s.Close()
	})
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
				buf := make([]byte, twoProcChunk)
				var n int64
				for {
					k, err := c.Read(buf)
					n += int64(k)
					for n >= twoProcTotal { // one byte back per whole transfer
						n -= twoProcTotal
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

// childCPU returns the user+system CPU time of process pid (from /proc, in clock ticks of
// 10 ms), or 0 when it cannot be read.
func childCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state): utime is field 14
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// BenchmarkTwoProcesses: unicast (64 KiB and 1 MiB messages) and bidi pipe throughput from
// this process to a node in a child process, each as a ratio to a raw libp2p stream between
// the same two processes, written in chunks of the same size (see benchRatio: rounds
// alternate raw and pipe transfers of 64 MiB; the median per-round ratio is "ratio"). CPU
// figures count both processes. RAFTCAST_BENCH_CHILD_PROFILE=/abs/prefix writes the child's
// CPU and memory profiles to prefix.cpu and prefix.mem.
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
	pid := cmd.Process.Pid
	cpu := func() time.Duration { return cpuTime() + childCPU(pid) }
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
	// raw sends total bytes in writes of len(chunk) over a fresh raw stream and waits for the
	// child's answer that all arrived.
	raw := func(chunk []byte) func(total int) {
		return func(total int) {
			s, err := h.NewStream(ctx, child, rawProto2)
			if err != nil {
				b.Fatal(err)
			}
			for sent := 0; sent < total; sent += len(chunk) {
				if _, err := s.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			_ = s.CloseWrite()
			if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
				b.Fatal(err)
			}
			_ = s.Close()
		}
	}
	for _, size := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("unicast/msg=%dKiB", size>>10), func(b *testing.B) {
			out, err := svc.Output(ctx, uniSpec)
			if err != nil {
				b.Fatal(err)
			}
			defer out.Close()
			msg := make([]byte, size)
			benchRatio(b, twoProcTotal, cpu, raw(msg), func(total int) {
				for sent := 0; sent < total; sent += len(msg) {
					if err := out.Send(ctx, msg); err != nil {
						b.Fatal(err)
					}
				}
				if err := out.Flush(ctx); err != nil { // every message acknowledged by the child
					b.Fatal(err)
				}
			})
		})
	}
	b.Run("bidi", func(b *testing.B) {
		c, err := svc.DialBidi(ctx, bidiSpec)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		chunk := make([]byte, twoProcChunk)
		var one [1]byte
		benchRatio(b, twoProcTotal, cpu, raw(chunk), func(total int) {
			for sent := 0; sent < total; sent += len(chunk) {
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
