package pipesch_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"

	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/pipes/pipestest"
	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/mcast"
	"github.com/raftcast/raftcast/transfer/mcast/pipesch"
	"github.com/raftcast/raftcast/transfer/store"
)

// Environment of the processes BenchmarkUDPMulticast starts.
const (
	envRole = "RAFTCAST_MCBENCH_ROLE" // "net": set up the namespace and run the others; "send"; "recv"
	envDir  = "RAFTCAST_MCBENCH_DIR"
	envN    = "RAFTCAST_MCBENCH_RECEIVERS"
	envSize = "RAFTCAST_MCBENCH_SIZE"
	envRate = "RAFTCAST_MCBENCH_RATE"
)

// benchResult is what one role process reports.
type benchResult struct {
	Role      string  `json:"role"`
	CPU       float64 `json:"cpu_seconds"` // user+system of the whole process, from start to done
	Seconds   float64 `json:"seconds"`     // receiver: first datagram to complete; sender: all passes
	Bytes     int64   `json:"bytes"`
	PeakRSSKB int64   `json:"peak_rss_kib"`
	Passes    int     `json:"passes,omitempty"`
	Datagrams int64   `json:"datagrams"`
	Dropped   uint64  `json:"dropped,omitempty"`
}

// BenchmarkUDPMulticast measures the engine's multicast data path over real UDP multicast
// sockets: one sender process and N receiver processes (each a pipes.Service with its native
// multicast data channel, pipesch, a Demux and a Receiver writing a store: what a daemon
// runs), in a network namespace of their own (all on one end of a veth pair, MTU 1500, so
// every datagram reaches the receivers by multicast loopback and nothing leaves the
// namespace). It reports
// MB/s (the file over the slowest receiver's time) and CPU seconds per GB delivered: the
// sender's, the receivers' mean, and everything per delivered GB (every receiver's copy).
// Needs root or unprivileged user namespaces; the namespace ends with its processes.
//
//	go test -run '^$' -bench UDPMulticast -benchtime 1x ./transfer/mcast/pipesch/
//
// RAFTCAST_MCBENCH_RECEIVERS (3), RAFTCAST_MCBENCH_SIZE (bytes, 64 MiB) and
// RAFTCAST_MCBENCH_RATE (bytes/s, 12 MB/s: a 100 Mbit/s link) change the run.
func BenchmarkUDPMulticast(b *testing.B) {
	if os.Getenv(envRole) != "" {
		b.Skip("inside a role process")
	}
	n := envInt(envN, 3)
	size := envInt(envSize, 64<<20)
	rate := envInt(envRate, 12_000_000)
	for b.Loop() {
		dir := b.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestUDPMulticastRole$", "-test.v", "-test.timeout=4m")
		cmd.Env = append(os.Environ(), envRole+"=net", envDir+"="+dir, envN+"="+strconv.Itoa(n),
			envSize+"="+strconv.Itoa(size), envRate+"="+strconv.Itoa(rate))
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		if os.Geteuid() != 0 {
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
			cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
			cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		}
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			if strings.Contains(err.Error(), "operation not permitted") {
				b.Skipf("cannot create a network namespace: %v", err)
			}
			b.Fatalf("%v\n%s", err, out)
		}
		var snd benchResult
		var recv []benchResult
		for _, role := range roles(n) {
			r := readResult(b, dir, role)
			if role == "send" {
				snd = r
			} else {
				recv = append(recv, r)
			}
		}
		gb := float64(size) / 1e9
		var slowest, rcpu float64
		for _, r := range recv {
			slowest = max(slowest, r.Seconds)
			rcpu += r.CPU
		}
		b.ReportMetric(float64(size)/1e6/slowest, "MB/s")
		b.ReportMetric(snd.CPU/gb, "send-cpu-s/GB")
		b.ReportMetric(rcpu/float64(n)/gb, "recv-cpu-s/GB")
		b.ReportMetric((snd.CPU+rcpu)/(gb*float64(n)), "all-cpu-s/delivered-GB")
		b.ReportMetric(float64(snd.Passes), "passes")
		b.Logf("sender %+v", snd)
		for _, r := range recv {
			b.Logf("receiver %+v", r)
		}
	}
}

func roles(n int) []string {
	rs := []string{"send"}
	for i := range n {
		rs = append(rs, fmt.Sprintf("recv%d", i))
	}
	return rs
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func readResult(t testing.TB, dir, role string) benchResult {
	t.Helper()
	var r benchResult
	b, err := os.ReadFile(filepath.Join(dir, role+".json"))
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		t.Fatalf("result of %s: %v", role, err)
	}
	return r
}

// TestUDPMulticastRole is a process of BenchmarkUDPMulticast (run only by it).
func TestUDPMulticastRole(t *testing.T) {
	role, dir := os.Getenv(envRole), os.Getenv(envDir)
	switch {
	case role == "":
		t.Skip("run by BenchmarkUDPMulticast")
	case role == "net":
		runNet(t, dir)
	default:
		runRole(t, role, dir)
	}
}

// runNet sets up the namespace (it runs in a fresh one), writes the file and runs the roles.
func runNet(t *testing.T, dir string) {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "mc0", "type", "veth", "peer", "name", "mc1"},
		{"link", "set", "mc1", "up"},
		{"link", "set", "mc0", "mtu", "1500", "up"},
		{"addr", "add", "198.18.99.1/24", "dev", "mc0"},
		{"route", "add", "224.0.0.0/4", "dev", "mc0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	data := make([]byte, envInt(envSize, 64<<20))
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "file.bin"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	type proc struct {
		role string
		cmd  *exec.Cmd
		log  *os.File
	}
	var ps []proc
	for _, role := range roles(envInt(envN, 3)) {
		lf, err := os.Create(filepath.Join(dir, role+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestUDPMulticastRole$", "-test.v", "-test.timeout=4m")
		cmd.Env = append(os.Environ(), envRole+"="+role)
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, proc{role, cmd, lf})
	}
	for _, p := range ps {
		err := p.cmd.Wait()
		_ = p.log.Close()
		if err != nil {
			out, _ := os.ReadFile(p.log.Name())
			t.Errorf("%s: %v\n%s", p.role, err, out)
		}
	}
}

// runRole runs the sender or one receiver.
func runRole(t *testing.T, role, dir string) {
	n := envInt(envN, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Second)
	defer cancel()
	file := filepath.Join(dir, "file.bin")
	m, err := content.BuildFile(file, "", content.DefaultSliceSize)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/198.18.99.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cfg := pipes.DefaultConfig()
	cfg.Multicast.Interfaces = []string{"mc0"}
	cfg.Multicast.BeaconInterval = 200 * time.Millisecond
	svc, err := pipes.New(pipestest.NewNode(h, pipestest.NewPubSub(t, h), pipestest.NewMemDirectory()), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	mc := svc.Multicast()
	if mc == nil {
		t.Fatal("no native multicast on mc0")
	}
	ch := pipesch.Channel{C: mc}
	res := benchResult{Role: role}
	done := func(p string) bool { _, err := os.Stat(filepath.Join(dir, p+".json")); return err == nil }
	if role == "send" {
		for len(mc.Members()) < n {
			if ctx.Err() != nil {
				t.Fatalf("heard %d of %d receivers", len(mc.Members()), n)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second) // the receivers open their stores
		src, err := store.OpenSource(file, store.Layout{Size: m.Size, SliceSize: m.SliceSize}, m.Verify)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		snd, err := mcast.NewSender(ch, m, mcast.DefaultSenderConfig(int64(envInt(envRate, 12_000_000))))
		if err != nil {
			t.Fatal(err)
		}
		c0, start := cpuSeconds(), time.Now()
		all := func() bool {
			for _, r := range roles(n)[1:] {
				if !done(r) {
					return false
				}
			}
			return true
		}
		for res.Passes < 5 && !all() {
			if err := snd.SendAll(ctx, src); err != nil {
				t.Fatal(err)
			}
			res.Passes++
			for range 20 { // the receivers take what is queued
				if all() {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		res.CPU, res.Seconds = cpuSeconds()-c0, time.Since(start).Seconds()
		res.Bytes, res.Datagrams = snd.Stats().Bytes, snd.Stats().Datagrams
	} else {
		st, err := store.Open(store.ForManifest(filepath.Join(dir, role), m))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		demux := mcast.NewDemux(ch, 16384)
		defer demux.Close()
		var first atomic.Int64 // unix nanos of the first datagram
		rcfg := mcast.DefaultReceiverConfig()
		rcfg.IdleTimeout = time.Minute
		rcfg.StartTimeout = time.Minute
		rcfg.MaxPartial = 0
		recv, err := mcast.NewReceiver(demux.Open(m.ID()), m, st, rcfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		c0 := cpuSeconds()
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			for first.Load() == 0 && rctx.Err() == nil {
				if recv.Stats().Datagrams > 0 {
					first.Store(time.Now().UnixNano())
				}
				time.Sleep(time.Millisecond)
			}
		}()
		if err := recv.Run(ctx); err != nil {
			t.Fatal(err)
		}
		stop()
		res.CPU, res.Seconds = cpuSeconds()-c0, time.Since(time.Unix(0, first.Load())).Seconds()
		res.Bytes, res.Datagrams = m.Size, recv.Stats().Datagrams
		res.Dropped = svc.Stats().Multicast.DataDropped + uint64(demux.Dropped.Load())
	}
	res.PeakRSSKB = vmHWM()
	b, _ := json.Marshal(res)
	if err := os.WriteFile(filepath.Join(dir, role+".json.tmp"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, role+".json.tmp"), filepath.Join(dir, role+".json")); err != nil {
		t.Fatal(err)
	}
	if role != "send" {
		// Stay in the domain (the sender counts members) until the sender is done.
		for !done("send") && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// vmHWM returns the peak resident set size in KiB.
func vmHWM() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
