package mcast_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/mcast"
	"github.com/raftcast/raftcast/transfer/mcast/mcasttest"
	"github.com/raftcast/raftcast/transfer/store"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMulticastPath pushes 32 MiB through the sender, the in-memory domain and the
// receiver (chunking, pacing bookkeeping, reassembly, verification, store writes): the cost
// of the engine's side of multicast, without the kernel's.
func BenchmarkMulticastPath(b *testing.B) {
	const size = 32 << 20
	for b.Loop() {
		b.StopTimer()
		_, _, m, src := fixtureB(b, size, content.DefaultSliceSize)
		d := mcasttest.NewDomain(1500)
		tx, rx := d.Join(0, 1, 16), d.Join(0, 2, 1<<16)
		st, err := store.Open(store.ForManifest(b.TempDir(), m))
		if err != nil {
			b.Fatal(err)
		}
		recv, _ := mcast.NewReceiver(rx, m, st, mcast.DefaultReceiverConfig(), nil)
		snd, _ := mcast.NewSender(tx, m, mcast.DefaultSenderConfig(1<<40))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		done := make(chan error, 1)
		b.StartTimer()
		c0 := cpuTime()
		go func() { done <- recv.Run(ctx) }()
		if err := snd.SendAll(ctx, src); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric((cpuTime()-c0).Seconds()/(size/1e9), "cpu-s/GB")
		b.StopTimer()
		cancel()
		st.Close()
		src.Close()
		b.StartTimer()
	}
	b.SetBytes(size)
}
