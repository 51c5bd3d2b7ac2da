package pipes_test

import (
	"context"
	"fmt"
	"io"
	"os"
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

// benchRatio runs raw and pipe transfers of total bytes alternately b.N times and reports the
// pipe's throughput and its ratio to the raw stream's, in wall time and in process CPU time.
// RAFTCAST_BENCH_PIPE_ONLY=1 skips the raw transfers (for profiling the pipe alone).
func benchRatio(b *testing.B, total int, raw, pipe func(total int)) {
	if os.Getenv("RAFTCAST_BENCH_PIPE_ONLY") != "" {
		raw = func(int) {}
	}
	raw(total) // warm up both paths
	pipe(total)
	var tRaw, tPipe, cRaw, cPipe time.Duration
	b.SetBytes(int64(total))
	b.ResetTimer()
	for range b.N {
		t0, c0 := time.Now(), cpuTime()
		raw(total)
		t1, c1 := time.Now(), cpuTime()
		pipe(total)
		tRaw += t1.Sub(t0)
		tPipe += time.Since(t1)
		cRaw += c1 - c0
		cPipe += cpuTime() - c1
	}
	b.StopTimer()
	mb := float64(total) * float64(b.N) / 1e6
	b.ReportMetric(mb/tRaw.Seconds(), "raw-MB/s")
	b.ReportMetric(mb/tPipe.Seconds(), "pipe-MB/s")
	b.ReportMetric(tRaw.Seconds()/tPipe.Seconds(), "ratio")
	// CPU seconds per GB (both ends, one process): steadier than wall time on a shared machine.
	b.ReportMetric(cRaw.Seconds()/(mb/1e3), "raw-cpu-s/GB")
	b.ReportMetric(cPipe.Seconds()/(mb/1e3), "pipe-cpu-s/GB")
	b.ReportMetric(cRaw.Seconds()/cPipe.Seconds(), "cpu-ratio")
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
			benchRatio(b, 64<<20, rawStreamSender(b, nodes, size), pipe)
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
	benchRatio(b, 64<<20, rawStreamSender(b, nodes, chunk), pipe)
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
