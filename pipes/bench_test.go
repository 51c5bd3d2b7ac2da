package pipes_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/raftcast/raftcast/pipes"
)

// cpuTime returns the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const benchProto = "/raftcast/bench/raw/1.0.0"

// A benchmark round moves roundBytes over the raw stream and over the pipe; each iteration of a
// throughput benchmark is roundsPerOp rounds. Many short rounds make a steadier median on a
// loaded machine than a few long ones: comparing the raw stream with itself this way gave
// medians of 0.96-1.04 over ten runs under a load average of 20-30 (16 MiB x 4: 0.88-1.05).
const (
	roundBytes  = 8 << 20
	roundsPerOp = 8
)

// rawSink handles the raw benchmark protocol: it reads everything and answers one byte for
// every roundBytes received, so one stream carries every round (as a pipe keeps its stream).
func rawSink(s network.Stream) {
	defer s.Close()
	buf := make([]byte, 64<<10)
	var n int
	for {
		k, err := s.Read(buf)
		n += k
		for ; n >= roundBytes; n -= roundBytes {
			if _, err := s.Write([]byte{1}); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// rawSender returns a function that sends roundBytes in writes of len(chunk) over one raw
// stream from h to p (opened on first use, kept for the following rounds) and waits until
// the sink has received them all.
func rawSender(b *testing.B, h host.Host, p peer.ID, chunk []byte) func() {
	var s network.Stream
	b.Cleanup(func() {
		if s != nil {
			_ = s.Reset()
		}
	})
	var one [1]byte
	return func() {
		if s == nil {
			var err error
			if s, err = h.NewStream(context.Background(), p, benchProto); err != nil {
				b.Fatal(err)
			}
		}
		for sent := 0; sent < roundBytes; sent += len(chunk) {
			if _, err := s.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := io.ReadFull(s, one[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRatio measures a pipe against a raw libp2p stream: each iteration is roundsPerOp
// rounds, and each round moves roundBytes over both, one after the other (the order
// alternates between rounds so neither always runs first), and takes the ratio of their
// times: a noisy moment on a shared machine spoils a round, not the figure. It reports the
// median, lowest and highest per-round ratio ("ratio", "ratio-min", "ratio-max"; above 1 the
// pipe is faster), the throughputs over all rounds, the CPU seconds per GB and system calls per
// MB of this process and procs (the child of a two-process run), and their CPU ratio over all
// rounds ("cpu-ratio"). The per-round ratios are logged. RAFTCAST_BENCH_PIPE_ONLY=1 skips the
// raw transfers and RAFTCAST_BENCH_RAW_ONLY=1 the pipe transfers (to profile one alone).
func benchRatio(b *testing.B, procs benchProcs, raw, pipe func()) {
	pipeOnly := os.Getenv("RAFTCAST_BENCH_PIPE_ONLY") != ""
	rawOnly := os.Getenv("RAFTCAST_BENCH_RAW_ONLY") != ""
	if pipeOnly {
		raw = func() {}
	}
	if rawOnly {
		pipe = func() {}
	}
	raw() // warm up both paths
	pipe()
	var sRaw, sPipe uint64 // system calls
	var tRaw, tPipe, cRaw, cPipe time.Duration
	measure := func(f func(), t, c *time.Duration, sys *uint64) time.Duration {
		t0, c0, s0 := time.Now(), procs.cpu(), procs.syscalls()
		f()
		d := time.Since(t0)
		*t += d
		*c += procs.cpu() - c0
		*sys += procs.syscalls() - s0
		return d
	}
	ratios := make([]float64, 0, b.N*roundsPerOp)
	b.SetBytes(roundBytes * roundsPerOp)
	b.ResetTimer()
	for i := range b.N * roundsPerOp {
		var tr, tp time.Duration
		if i%2 == 0 {
			tr = measure(raw, &tRaw, &cRaw, &sRaw)
			tp = measure(pipe, &tPipe, &cPipe, &sPipe)
		} else {
			tp = measure(pipe, &tPipe, &cPipe, &sPipe)
			tr = measure(raw, &tRaw, &cRaw, &sRaw)
		}
		ratios = append(ratios, tr.Seconds()/tp.Seconds())
	}
	b.StopTimer()
	mb := float64(roundBytes) * float64(b.N*roundsPerOp) / 1e6
	if !rawOnly {
		b.ReportMetric(mb/tPipe.Seconds(), "pipe-MB/s")
		b.ReportMetric(cPipe.Seconds()/(mb/1e3), "pipe-cpu-s/GB")
		b.ReportMetric(float64(sPipe)/mb, "pipe-syscalls/MB")
	}
	if !pipeOnly {
		b.ReportMetric(mb/tRaw.Seconds(), "raw-MB/s")
		b.ReportMetric(cRaw.Seconds()/(mb/1e3), "raw-cpu-s/GB")
		b.ReportMetric(float64(sRaw)/mb, "raw-syscalls/MB")
	}
	if pipeOnly || rawOnly {
		return
	}
	b.ReportMetric(median(slices.Clone(ratios)), "ratio")
	b.ReportMetric(slices.Min(ratios), "ratio-min")
	b.ReportMetric(slices.Max(ratios), "ratio-max")
	if cPipe > 0 {
		b.ReportMetric(cRaw.Seconds()/cPipe.Seconds(), "cpu-ratio")
	}
	if b.N > 1 {
		b.Logf("per-round ratio (raw time / pipe time): %s", fmtRatios(ratios))
	}
}

// benchProcs are the processes besides this one whose CPU time and system calls a benchmark
// counts (by PID).
type benchProcs []int

// cpu returns the user+system CPU time of this process and procs.
func (p benchProcs) cpu() time.Duration {
	t := cpuTime()
	for _, pid := range p {
		t += procCPU(pid)
	}
	return t
}

// syscalls returns the read and write system calls made so far by this process and procs
// (from /proc/PID/io; 0 where it cannot be read).
func (p benchProcs) syscalls() uint64 {
	n := procSyscalls("self")
	for _, pid := range p {
		n += procSyscalls(strconv.Itoa(pid))
	}
	return n
}

func procSyscalls(pid string) uint64 {
	b, err := os.ReadFile("/proc/" + pid + "/io")
	if err != nil {
		return 0
	}
	var n uint64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok && (k == "syscr" || k == "syscw") {
			x, _ := strconv.ParseUint(v, 10, 64)
			n += x
		}
	}
	return n
}

// procCPU returns the user+system CPU time of process pid (from /proc, in clock ticks of
// 10 ms), or 0 when it cannot be read.
func procCPU(pid int) time.Duration {
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

// median returns the median of xs (not empty); it sorts xs in place.
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func fmtRatios(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, " ")
}

// Unicast pipe throughput against a raw libp2p stream between the same two hosts.
func BenchmarkUnicastThroughput(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("msg=%dKiB", size>>10), func(b *testing.B) {
			nodes := newNodes(b, 2, testConfig())
			ctx := context.Background()
			spec := pipes.PipeSpec{Name: "bench-unicast", Kind: pipes.Unicast}
			in, err := nodes[0].svc.Listen(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			var got atomic.Int64
			go func() {
				for {
					m, err := in.Recv(ctx)
					if err != nil {
						return
					}
					got.Add(int64(len(m.Data)))
					m.Release()
				}
			}()
			out, err := nodes[1].svc.Output(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			msg := make([]byte, size)
			pipe := func() {
				start := got.Load()
				for sent := 0; sent < roundBytes; sent += size {
					if err := out.Send(ctx, msg); err != nil {
						b.Fatal(err)
					}
				}
				for got.Load()-start < roundBytes {
					time.Sleep(100 * time.Microsecond)
				}
			}
			nodes[0].h.SetStreamHandler(benchProto, rawSink)
			benchRatio(b, nil, rawSender(b, nodes[1].h, nodes[0].h.ID(), msg), pipe)
		})
	}
}

// Bidirectional pipe throughput (net.Conn writes of 256 KiB) against a raw libp2p stream.
func BenchmarkBidiThroughput(b *testing.B) {
	const chunk = 256 << 10
	nodes := newNodes(b, 2, testConfig())
	ctx := context.Background()
	spec := pipes.PipeSpec{Name: "bench-bidi", Kind: pipes.Bidi}
	l, err := nodes[0].svc.ListenBidi(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	c, err := nodes[1].svc.DialBidi(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	s, err := l.AcceptBidi(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	go func() {
		buf := make([]byte, chunk)
		for {
			n, err := s.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, chunk)
	pipe := func() {
		start := got.Load()
		for sent := 0; sent < roundBytes; sent += chunk {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		for got.Load()-start < roundBytes {
			time.Sleep(100 * time.Microsecond)
		}
	}
	nodes[0].h.SetStreamHandler(benchProto, rawSink)
	benchRatio(b, nil, rawSender(b, nodes[1].h, nodes[0].h.ID(), buf), pipe)
	_ = c.Close()
	_ = s.Close()
}

// Propagate pipe to 8 listeners on loopback (gossipsub carrier): a burst per iteration;
// reports the fraction of (message, listener) deliveries made, the delivery rate and the CPU
// per delivery. RAFTCAST_BENCH_TRUST_AUTHOR=1 sets Config.TrustGossipAuthor.
func BenchmarkPropagate8(b *testing.B) {
	for _, tc := range []struct {
		size, burst int
	}{{1 << 10, 2000}, {64 << 10, 200}} {
		b.Run(fmt.Sprintf("msg=%dKiB", tc.size>>10), func(b *testing.B) {
			const listeners = 8
			cfg := testConfig()
			cfg.TrustGossipAuthor = os.Getenv("RAFTCAST_BENCH_TRUST_AUTHOR") != ""
			nodes := newNodes(b, listeners+1, cfg)
			ctx := context.Background()
			spec := pipes.PipeSpec{Name: "bench-propagate", Kind: pipes.Propagate}
			var delivered atomic.Int64
			var ins []*node
			for _, n := range nodes[:listeners] {
				in, err := n.svc.Listen(ctx, spec)
				if err != nil {
					b.Fatal(err)
				}
				ins = append(ins, n)
				go func() {
					for {
						if _, err := in.Recv(ctx); err != nil {
							return
						}
						delivered.Add(1)
					}
				}()
			}
			sender := nodes[listeners]
			out, err := sender.svc.Output(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			waitTopicPeers(b, sender, spec, ins...)
			msg := make([]byte, tc.size)
			var elapsed, cpu time.Duration
			var sent int64
			b.SetBytes(int64(tc.size * tc.burst))
			b.ResetTimer()
			for range b.N {
				start := delivered.Load()
				want := int64(tc.burst * listeners)
				t0, c0 := time.Now(), cpuTime()
				for range tc.burst {
					if err := out.Send(ctx, msg); err != nil {
						b.Fatal(err)
					}
				}
				sent += int64(tc.burst)
				// Wait until everything arrived or nothing moved for 2 s.
				last, lastChange := delivered.Load(), time.Now()
				for delivered.Load()-start < want && time.Since(lastChange) < 2*time.Second {
					time.Sleep(time.Millisecond)
					if d := delivered.Load(); d != last {
						last, lastChange = d, time.Now()
					}
				}
				if delivered.Load()-start >= want {
					elapsed += time.Since(t0)
				} else {
					elapsed += lastChange.Sub(t0)
				}
				cpu += cpuTime() - c0
			}
			b.StopTimer()
			d := delivered.Load()
			b.ReportMetric(float64(d)/float64(sent*listeners), "delivery-ratio")
			b.ReportMetric(float64(d)/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(d)*float64(tc.size)/1e6/elapsed.Seconds(), "delivered-MB/s")
			var drops uint64
			for _, n := range nodes[:listeners] {
				st := n.svc.Stats().Propagate
				drops += st.QueueDrops
			}
			b.ReportMetric(float64(drops), "queue-drops")
			b.ReportMetric(cpu.Seconds()*1e6/float64(d), "cpu-us/delivery")
		})
	}
}
