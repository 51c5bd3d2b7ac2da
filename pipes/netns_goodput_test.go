package pipes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/pipes/internal/netnstest"
	"github.com/raftcast/raftcast/pipes/pipestest"
)

const (
	envGoodputRole = "RAFTCAST_PIPES_GOODPUT_ROLE"
	envGoodputSize = "RAFTCAST_PIPES_GOODPUT_SIZE"
	goodputSeconds = 6
)

type goodputResult struct {
	Datagrams, Bytes int64
	Seconds          float64 // receiver: first to last datagram; sender: sending time
}

// BenchmarkNetnsMulticastGoodput measures the raw multicast data channel between two hosts on a
// bridge, the sender's link shaped to 100 Mbit/s (tbf), for a few datagram sizes. It reports
// payload Mbit/s received and the loss. Needs root; run with -benchtime 1x (each run takes
// about 10 s).
func BenchmarkNetnsMulticastGoodput(b *testing.B) {
	if os.Getenv(envGoodputRole) != "" {
		b.Skip("inside a role process")
	}
	netnstest.Skip(b)
	for _, size := range []int{1472, 8192} {
		b.Run(fmt.Sprintf("datagram=%d", size), func(b *testing.B) {
			for range b.N {
				recv, sent := runGoodput(b, size)
				mbit := float64(recv.Bytes) * 8 / 1e6 / recv.Seconds
				b.ReportMetric(mbit, "payload-Mbit/s")
				b.ReportMetric(1-float64(recv.Datagrams)/float64(sent.Datagrams), "loss")
				b.ReportMetric(float64(sent.Bytes)*8/1e6/sent.Seconds, "sent-Mbit/s")
			}
		})
	}
}

func runGoodput(b *testing.B, size int) (recv, sent goodputResult) {
	prefix := fmt.Sprintf("rcg%d", os.Getpid())
	nt := netnstest.New(b, prefix)
	defer nt.Close()
	for _, ns := range []string{"sw", "s", "r"} {
		nt.AddNS(ns)
	}
	nt.Bridge("sw", "br0")
	nt.Link("s", "eth0", "sw", "ps", "br0")
	nt.Link("r", "eth0", "sw", "pr", "br0")
	nt.Addr("s", "eth0", "198.18.7.1/24")
	nt.Addr("r", "eth0", "198.18.7.2/24")
	// The sender's link: 100 Mbit/s; the queue is longer than the socket buffer, so a full
	// queue blocks the sender instead of dropping.
	nt.In("s", "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "100mbit", "burst", "64kb", "limit", "64mb")
	nt.WaitLinkLocal("s", "eth0")
	nt.WaitLinkLocal("r", "eth0")
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(role, ns, addr string) chan error {
		done := make(chan error, 1)
		f, err := os.Create(filepath.Join(dir, role+".log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd := nt.Command(ctx, ns, exe, "-test.run=^TestNetnsGoodputRole$", "-test.v", "-test.timeout=100s")
		cmd.Env = append(os.Environ(), envGoodputRole+"="+role, envDir+"="+dir, envAddr+"="+addr, envGoodputSize+"="+strconv.Itoa(size))
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		go func() { done <- cmd.Wait(); _ = f.Close() }()
		return done
	}
	dr := run("recv", "r", "198.18.7.2")
	ds := run("send", "s", "198.18.7.1")
	for role, d := range map[string]chan error{"send": ds, "recv": dr} {
		if err := <-d; err != nil {
			out, _ := os.ReadFile(filepath.Join(dir, role+".log"))
			b.Fatalf("%s: %v\n%s", role, err, out)
		}
	}
	read := func(role string) goodputResult {
		var r goodputResult
		buf, err := os.ReadFile(filepath.Join(dir, role+".json"))
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(buf, &r); err != nil {
			b.Fatal(err)
		}
		return r
	}
	return read("recv"), read("send")
}

// TestNetnsGoodputRole is one end of BenchmarkNetnsMulticastGoodput (run only by it).
func TestNetnsGoodputRole(t *testing.T) {
	role := os.Getenv(envGoodputRole)
	if role == "" {
		t.Skip("run by BenchmarkNetnsMulticastGoodput")
	}
	dir, addr := os.Getenv(envDir), os.Getenv(envAddr)
	size, _ := strconv.Atoi(os.Getenv(envGoodputSize))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/" + addr + "/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cfg := pipes.DefaultConfig()
	cfg.Multicast.Interfaces = []string{"eth0"}
	cfg.Multicast.BeaconInterval = 200 * time.Millisecond
	cfg.Multicast.DataQueue = 1 << 16
	svc, err := pipes.New(pipestest.NewNode(h, pipestest.NewPubSub(t, h), pipestest.NewMemDirectory()), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	mc := svc.Multicast()
	if mc == nil {
		t.Fatal("no multicast")
	}
	write := func(r goodputResult) {
		buf, _ := json.Marshal(r)
		if err := os.WriteFile(filepath.Join(dir, role+".json"), buf, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for len(mc.Members()) == 0 {
		if ctx.Err() != nil {
			t.Fatal("no peer heard")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if role == "send" {
		if err := os.WriteFile(filepath.Join(dir, "sending"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, size)
		var r goodputResult
		start := time.Now()
		for time.Since(start) < goodputSeconds*time.Second {
			n, err := mc.Send(buf)
			if err != nil {
				t.Fatal(err)
			}
			r.Datagrams += int64(n)
			r.Bytes += int64(n * size)
		}
		r.Seconds = time.Since(start).Seconds()
		write(r)
		t.Logf("sent %d datagrams, %.1f Mbit/s, stats %+v", r.Datagrams, float64(r.Bytes)*8/1e6/r.Seconds, svc.Stats().Multicast)
		return
	}
	var r goodputResult
	var first, last time.Time
	for {
		wait := 10 * time.Second
		if r.Datagrams > 0 {
			wait = 2 * time.Second
		}
		rctx, rc := context.WithTimeout(ctx, wait)
		d, err := mc.Recv(rctx)
		rc()
		if err != nil {
			break
		}
		if len(d.Data) != size {
			continue
		}
		if r.Datagrams == 0 {
			first = time.Now()
		}
		last = time.Now()
		r.Datagrams++
		r.Bytes += int64(len(d.Data))
	}
	if r.Datagrams < 2 {
		t.Fatalf("received %d datagrams", r.Datagrams)
	}
	// The first datagram's own time is not covered by [first, last]: count from the second.
	r.Seconds = last.Sub(first).Seconds()
	r.Bytes -= int64(size)
	r.Datagrams--
	write(r)
	t.Logf("received %d datagrams in %.2f s; stats %+v", r.Datagrams, r.Seconds, svc.Stats().Multicast)
}
