package peergroup

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// openGroup3 builds a 3-member open group whose members are all voters.
func openGroup3(b *testing.B, mod func(*Config)) (string, []*testNode) {
	b.Helper()
	a := startNode(b, "a", mod)
	ga, err := a.m.Create(ctxT(b, 20*time.Second), "bench", PolicyOpen, "")
	if err != nil {
		b.Fatal(err)
	}
	nodes := []*testNode{a}
	for _, name := range []string{"b", "c"} {
		n := startNode(b, name, mod)
		if _, err := n.m.Join(ctxT(b, 20*time.Second), ga.Info(), Credential{}); err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	waitVoters(b, ga.ID(), 3, nodes...)
	return ga.ID(), nodes
}

func waitVoters(b testing.TB, id string, want int, nodes ...*testNode) {
	eventually(b, 30*time.Second, "voters", func() error {
		for _, n := range nodes {
			v := 0
			for _, m := range n.group(b, id).Status().Members {
				if m.Voter {
					v++
				}
			}
			if v != want {
				return fmt.Errorf("%s sees %d voters", n.name, v)
			}
		}
		return agree(id, want, nodes...)
	})
}

// waitAddrs waits until every node's state lists every node's current addresses.
func waitAddrs(b testing.TB, id string, nodes ...*testNode) {
	eventually(b, 30*time.Second, "addresses announced", func() error {
		for _, n := range nodes {
			st := n.group(b, id).State()
			for _, o := range nodes {
				m, _ := st.Member(o.id())
				if len(m.Addrs) == 0 || len(o.h.Addrs()) == 0 || !m.Addrs[0].Equal(o.h.Addrs()[0]) {
					return fmt.Errorf("%s has stale addresses for %s", n.name, o.name)
				}
			}
		}
		return nil
	})
}

// pollUntil polls cond every 5ms (fine-grained, for timing) until it holds or timeout.
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// BenchmarkElectionAfterStart: a 3-member group's managers all stop and restart on their
// data dirs; time from the restart until all three agree on a leader.
func BenchmarkElectionAfterStart(b *testing.B) {
	id, nodes := openGroup3(b, nil)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		for _, n := range nodes {
			_ = n.m.Close()
		}
		start := time.Now()
		for _, n := range nodes {
			m, err := NewManager(n.h, n.key, testConfig(n.dir, n.name))
			if err != nil {
				b.Fatal(err)
			}
			n.m = m
		}
		if !pollUntil(30*time.Second, func() bool { return agree(id, 3, nodes...) == nil }) {
			b.Fatal("no leader after restart")
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/election")
}

// BenchmarkFailover: the leader of a 3-member group dies (manager and host closed); time
// until the two others agree on a new leader. The dead node then restarts and catches up
// (not timed) before the next round.
func BenchmarkFailover(b *testing.B) {
	id, nodes := openGroup3(b, nil)
	var total, worst time.Duration
	for i := 0; i < b.N; i++ {
		var leader *testNode
		var others []*testNode
		for _, n := range nodes {
			if n.group(b, id).IsLeader() {
				leader = n
			} else {
				others = append(others, n)
			}
		}
		if leader == nil {
			b.Fatal("no leader")
		}
		term := leader.group(b, id).Term()
		start := time.Now()
		leader.stop()
		ok := pollUntil(30*time.Second, func() bool {
			if agree(id, 3, others...) != nil {
				return false
			}
			st := others[0].group(b, id).Status()
			return st.Leader != leader.id() && st.Term > term
		})
		if !ok {
			for _, o := range others {
				st := o.group(b, id).Status()
				b.Logf("%s: state %s leader %s term %d members %d", o.name, st.State, st.Leader, st.Term, len(st.Members))
				for _, m := range st.Members {
					b.Logf("   %s voter %v alive %v", m.PeerID, m.Voter, m.Alive)
				}
			}
			b.Fatalf("round %d: no new leader after %s died", i, leader.name)
		}
		d := time.Since(start)
		total += d
		worst = max(worst, d)
		leader.start(b, nil)
		waitVoters(b, id, 3, nodes...)
		// The restarted node listens on a new port: wait until every member's state has
		// its new address (in a deployment, peer routing would also find it).
		waitAddrs(b, id, nodes...)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/failover")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
}

// BenchmarkCommit: small commands (ContentAdd, ~60 bytes) committed in a 3-member group,
// from the leader or forwarded from a follower, one at a time or 16 concurrently, with the
// Raft log fsynced (sync) or not.
func BenchmarkCommit(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, from := range []string{"leader", "follower"} {
			for _, par := range []int{1, 16} {
				name := fmt.Sprintf("fsync=%v/from=%s/concurrent=%d", sync, from, par)
				b.Run(name, func(b *testing.B) {
					id, nodes := openGroup3(b, func(c *Config) { c.NoSync = !sync })
					var g *Group
					for _, n := range nodes {
						if n.group(b, id).IsLeader() == (from == "leader") {
							g = n.group(b, id)
							break
						}
					}
					benchCommit(b, g, par)
				})
			}
		}
	}
}

func benchCommit(b *testing.B, g *Group, par int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, par)
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				c := &ContentAdd{Content: Content{ID: fmt.Sprintf("c%d", i), Name: "x", Size: i, Source: g.self}}
				if err := g.Apply(ctx, c); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "cmds/s")
}

// BenchmarkMemoryPerGroup: heap and goroutines one node spends per group it is in, for
// single-member groups (Raft, stores, loops; no replication).
func BenchmarkMemoryPerGroup(b *testing.B) {
	const k = 20
	for i := 0; i < b.N; i++ {
		n := startNode(b, fmt.Sprintf("m%d", i), nil)
		heap0, gor0 := heapInUse()
		for j := 0; j < k; j++ {
			if _, err := n.m.Create(ctxT(b, 30*time.Second), fmt.Sprintf("g%d", j), PolicyOpen, ""); err != nil {
				b.Fatal(err)
			}
		}
		heap1, gor1 := heapInUse()
		b.ReportMetric(float64(heap1-heap0)/k/1024, "KiB/group")
		b.ReportMetric(float64(gor1-gor0)/k, "goroutines/group")
		n.stop()
	}
}

// BenchmarkMemoryPerGroup3: the same with every group replicated on 3 nodes (heap of all
// three processes' worth, divided by groups × nodes).
func BenchmarkMemoryPerGroup3(b *testing.B) {
	const k = 10
	for i := 0; i < b.N; i++ {
		nodes := []*testNode{startNode(b, "x", nil), startNode(b, "y", nil), startNode(b, "z", nil)}
		heap0, gor0 := heapInUse()
		for j := 0; j < k; j++ {
			g, err := nodes[0].m.Create(ctxT(b, 30*time.Second), fmt.Sprintf("g%d", j), PolicyOpen, "")
			if err != nil {
				b.Fatal(err)
			}
			for _, n := range nodes[1:] {
				if _, err := n.m.Join(ctxT(b, 30*time.Second), g.Info(), Credential{}); err != nil {
					b.Fatal(err)
				}
			}
			waitVoters(b, g.ID(), 3, nodes...)
		}
		time.Sleep(time.Second) // let replication settle
		heap1, gor1 := heapInUse()
		b.ReportMetric(float64(heap1-heap0)/(3*k)/1024, "KiB/member")
		b.ReportMetric(float64(gor1-gor0)/(3*k), "goroutines/member")
		for _, n := range nodes {
			n.stop()
		}
	}
}

func heapInUse() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, runtime.NumGoroutine()
}

// BenchmarkIdleCPU: CPU time an idle 3-member group costs (heartbeats every
// HeartbeatTimeout/10, each a new stream with go-libp2p-raft's transport; commit-index
// propagation every CommitTimeout), for the three members together, per second.
func BenchmarkIdleCPU(b *testing.B) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"default", nil},
		{"pool=2", func(c *Config) { c.RaftStreamPool = 2 }},
		{"commit=100ms", func(c *Config) { c.CommitTimeout = 100 * time.Millisecond }},
		{"heartbeat=600ms", func(c *Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 600*time.Millisecond, 600*time.Millisecond, 300*time.Millisecond
			c.CommitTimeout = 100 * time.Millisecond
		}},
	} {
		b.Run(tc.name, func(b *testing.B) { benchIdle(b, tc.mod, 5) })
	}
}

// benchIdle reports the CPU per second of 3 idle hosts in k groups, minus the same hosts in
// no group, divided by k.
func benchIdle(b *testing.B, mod func(*Config), k int) {
	nodes := []*testNode{startNode(b, "x", mod), startNode(b, "y", mod), startNode(b, "z", mod)}
	for _, n := range nodes[1:] {
		if err := n.h.Connect(ctxT(b, 5*time.Second), peer.AddrInfo{ID: nodes[0].id(), Addrs: nodes[0].h.Addrs()}); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	base0, t0 := cpuTime(), time.Now()
	time.Sleep(3 * time.Second)
	base := float64((cpuTime() - base0).Milliseconds()) / time.Since(t0).Seconds()
	b.ReportMetric(base, "cpu-ms/s-hosts-alone")
	for j := 0; j < k; j++ {
		g, err := nodes[0].m.Create(ctxT(b, 30*time.Second), fmt.Sprintf("g%d", j), PolicyOpen, "")
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range nodes[1:] {
			if _, err := n.m.Join(ctxT(b, 30*time.Second), g.Info(), Credential{}); err != nil {
				b.Fatal(err)
			}
		}
		waitVoters(b, g.ID(), 3, nodes...)
	}
	time.Sleep(time.Second)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c0 := cpuTime()
		t0 := time.Now()
		time.Sleep(5 * time.Second)
		b.ReportMetric((float64((cpuTime()-c0).Milliseconds())/time.Since(t0).Seconds()-base)/float64(k), "cpu-ms/s/group")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
