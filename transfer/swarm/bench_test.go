package swarm

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/raftcast/raftcast/transfer/store"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const rawProto = "/raftcast/bench-raw/1.0.0"

// rawSend pushes size bytes from src to every receiver over one plain libp2p stream each
// (the same hosts, Noise and yamux as the swarm) and returns when all have read them.
func rawSend(b *testing.B, src *node, rs []*node, size int) {
	var wg sync.WaitGroup
	buf := make([]byte, 1<<20)
	for _, r := range rs {
		wg.Go(func() {
			s, err := src.h.NewStream(context.Background(), r.h.ID(), rawProto)
			if err != nil {
				b.Error(err)
				return
			}
			for sent := 0; sent < size; sent += len(buf) {
				if _, err := s.Write(buf[:min(len(buf), size-sent)]); err != nil {
					b.Error(err)
					return
				}
			}
			s.CloseWrite()
			io.Copy(io.Discard, s)
			s.Close()
		})
	}
	wg.Wait()
}

// BenchmarkSwarmVsRaw delivers a 64 MiB file from a source to R receivers through the swarm
// and, in the same iteration, the same number of bytes over one raw stream per receiver; it
// reports both throughputs (aggregate delivered MB/s), their ratio, and CPU-seconds per
// delivered GB for each (the whole process: senders and receivers share it).
func BenchmarkSwarmVsRaw(b *testing.B) {
	const size = 64 << 20
	sizes := []int{256 << 10, 1 << 20, 4 << 20}
	if v := os.Getenv("RAFTCAST_BENCH_SLICE"); v != "" {
		var ss int
		fmt.Sscan(v, &ss)
		sizes = []int{ss}
	}
	for _, ss := range sizes {
		for _, nr := range []int{1, 4} {
			b.Run(fmt.Sprintf("slice=%dKiB/receivers=%d", ss>>10, nr), func(b *testing.B) {
				src := newNode(b)
				rs := make([]*node, nr)
				for i := range rs {
					rs[i] = newNode(b)
					rs[i].h.SetStreamHandler(rawProto, func(s network.Stream) {
						io.Copy(io.Discard, s)
						s.Close()
					})
				}
				connectNodes(b, append([]*node{src}, rs...)...)
				path, _ := randomFile(b, b.TempDir(), size, 7)
				m := src.share(b, path, ss)
				var rawDur, swDur, rawCPU, swCPU time.Duration
				for b.Loop() {
					c0, t0 := cpuTime(), time.Now()
					rawSend(b, src, rs, size)
					rawDur += time.Since(t0)
					rawCPU += cpuTime() - c0

					b.StopTimer()
					stores := make([]*store.Store, nr)
					sessions := make([]*Session, nr)
					for i, r := range rs {
						st, err := store.Open(store.ForManifest(benchDir(b), m))
						if err != nil {
							b.Fatal(err)
						}
						stores[i] = st
						r.srv.Add(m, st)
						cfg := testConfig(src.h.ID(), ids(rs...))
						if w := os.Getenv("RAFTCAST_BENCH_WINDOW"); w != "" {
							fmt.Sscan(w, &cfg.Planner.MaxInflightPerPeer)
							cfg.Planner.MaxInflightSource = cfg.Planner.MaxInflightPerPeer
						}
						sessions[i], _ = NewSession(r.h, m, st, cfg, nil)
					}
					b.StartTimer()
					c0, t0 = cpuTime(), time.Now()
					var wg sync.WaitGroup
					for _, s := range sessions {
						wg.Go(func() {
							ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
							defer cancel()
							if err := s.Run(ctx); err != nil {
								b.Error(err)
							}
						})
					}
					wg.Wait()
					swDur += time.Since(t0)
					swCPU += cpuTime() - c0
					b.StopTimer()
					for i, r := range rs {
						r.srv.Remove(m.ID())
						stores[i].Remove()
					}
					b.StartTimer()
				}
				delivered := float64(b.N) * float64(size) * float64(nr)
				b.ReportMetric(delivered/rawDur.Seconds()/1e6, "raw-MB/s")
				b.ReportMetric(delivered/swDur.Seconds()/1e6, "swarm-MB/s")
				b.ReportMetric(rawDur.Seconds()/swDur.Seconds(), "swarm/raw")
				b.ReportMetric(rawCPU.Seconds()/(delivered/1e9), "raw-cpu-s/GB")
				b.ReportMetric(swCPU.Seconds()/(delivered/1e9), "swarm-cpu-s/GB")
			})
		}
	}
}

// benchDir returns a directory for receiver stores: under $RAFTCAST_BENCH_DIR if set (for
// example /dev/shm, to leave the disk out of the measurement), else the test's temp dir.
func benchDir(b *testing.B) string {
	base := os.Getenv("RAFTCAST_BENCH_DIR")
	if base == "" {
		return b.TempDir()
	}
	d, err := os.MkdirTemp(base, "raftcast-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}
