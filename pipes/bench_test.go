package pipes_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/raftcast/raftcast/pipes"
)

// cpuTime returns the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const benchProto = "/raftcast/bench/raw/1.0.0"

// rawStreamSender sets up a sink on nodes[0] and returns a function that sends total bytes in
// chunks of size over a fresh raw libp2p stream from nodes[1] and waits until all arrived.
func rawStreamSender(b *testing.B, nodes []*node, chunk int) func(total int) {
	nodes[0].h.SetStreamHandler(benchProto, func(s network.Stream) {
		_, _ = io.Copy(io.Discard, s)
		_, _ = s.Write([]byte{1})
		_ = s.Close()
	})
	buf := make([]byte, chunk)
	return func(total int) {
		ctx := context.Background()
		s, err := nodes[1].h.NewStream(ctx, nodes[0].h.ID(), benchProto)
		if err != nil {
			b.Fatal(err)
		}
		for sent := 0; sent < total; sent += chunk {
			if _, err := s.Write(buf); err != nil {
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

// benchRatio measures a pipe against a raw libp2p stream in b.N rounds. Each round moves total
// bytes over both, one after the other (the order alternates between rounds so neither always
// runs first), and takes the ratio of the two times: a noisy moment on a shared machine
// spoils one round, not the figure. It reports the median, lowest and highest per-round ratio
// ("ratio", "ratio-min", "ratio-max"), the throughputs over all rounds, and CPU seconds per GB
// as measured by cpu (this process, or both processes of a two-process run) with their median
// per-round ratio. The per-round ratios are logged. RAFTCAST_BENCH_PIPE_ONLY=1 skips the raw
// transfers and RAFTCAST_BENCH_RAW_ONLY=1 the pipe transfers (for profiling one alone).
func benchRatio(b *testing.B, total int, cpu func() time.Duration, raw, pipe func(total int)) {
	pipeOnly := os.Getenv("RAFTCAST_BENCH_PIPE_ONLY") != ""
	rawOnly := os.Getenv("RAFTCAST_BENCH_RAW_ONLY") != ""
	if pipeOnly {
		raw = func(int) {}
	}
	if rawOnly {
		pipe = func(int) {}
	}
	raw(total) // warm up both paths
	pipe(total)
	measure := func(f func(int)) (time.Duration, time.Duration) {
		t0, c0 := time.Now(), cpu()
		f(total)
		return time.Since(t0), cpu() - c0
	}
	var tRaw, tPipe, cRaw, cPipe time.Duration
	ratios := make([]float64, 0, b.N)
	cpuRatios := make([]float64, 0, b.N)
	b.SetBytes(int64(total))
	b.ResetTimer()
	for i := range b.N {
		var tr, cr, tp, cp time.Duration
		if i%2 == 0 {
			tr, cr = measure(raw)
			tp, cp = measure(pipe)
		} else {
			tp, cp = measure(pipe)
			tr, cr = measure(raw)
		}
		tRaw, cRaw, tPipe, cPipe = tRaw+tr, cRaw+cr, tPipe+tp, cPipe+cp
		ratios = append(ratios, tr.Seconds()/tp.Seconds())
		if cp > 0 {
			cpuRatios = append(cpuRatios, cr.Seconds()/cp.Seconds())
		}
	}
	b.StopTimer()
	mb := float64(total) * float64(b.N) / 1e6
	if !rawOnly {
		b.ReportMetric(mb/tPipe.Seconds(), "pipe-MB/s")
		b.ReportMetric(cPipe.Seconds()/(mb/1e3), "pipe-cpu-s/GB")
	}
	if !pipeOnly {
		b.ReportMetric(mb/tRaw.Seconds(), "raw-MB/s")
		b.ReportMetric(cRaw.Seconds()/(mb/1e3), "raw-cpu-s/GB")
	}
	if pipeOnly || rawOnly {
		return
	}
	b.ReportMetric(median(slices.Clone(ratios)), "ratio")
	b.ReportMetric(slices.Min(ratios), "ratio-min")
	b.ReportMetric(slices.Max(ratios), "ratio-max")
	if len(cpuRatios) > 0 {
		b.ReportMetric(median(cpuRatios), "cpu-ratio")
	}
	if b.N > 1 {
		b.Logf("per-round ratio (raw time / pipe time): %s", fmtRatios(ratios))
	}
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
			pipe := func(total int) {
				start := got.Load()
				for sent := 0; sent < total; sent += size {
					if err := out.Send(ctx, msg); err != nil {
						b.Fatal(err)
					}
				}
				for got.Load()-start < int64(total) {
					time.Sleep(100 * time.Microsecond)
				}
			}
			benchRatio(b, 64<<20, cpuTime, rawStreamSender(b, nodes, size), pipe)
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
	pipe := func(total int) {
		start := got.Load()
		for sent := 0; sent < total; sent += chunk {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		for got.Load()-start < int64(total) {
			time.Sleep(100 * time.Microsecond)
		}
	}
	benchRatio(b, 64<<20, cpuTime, rawStreamSender(b, nodes, chunk), pipe)
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
