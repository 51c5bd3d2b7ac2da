package pipes

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMmsgPack: runs of equal datagrams (the last may be shorter) become one segmentation
// offload message each, within the segment and byte limits; without offload, one message per
// datagram.
func TestMmsgPack(t *testing.T) {
	w := newMmsgWriter(&dataSock{}, netip.MustParseAddrPort("239.1.2.3:4000"), 1, 1472)
	sizes := func(ns ...int) [][]byte {
		var bs [][]byte
		for _, n := range ns {
			bs = append(bs, make([]byte, n))
		}
		return bs
	}
	rep := func(n, size int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = size
		}
		return s
	}
	for _, tc := range []struct {
		name string
		bs   [][]byte
		gso  bool
		want []int // datagrams per message
	}{
		{"one", sizes(1472), true, []int{1}},
		{"run with a short tail", sizes(1472, 1472, 1472, 100), true, []int{4}},
		{"short one ends the run", sizes(1472, 100, 1472, 1472), true, []int{2, 2}},
		{"a longer one starts a run", sizes(100, 1472, 1472), true, []int{1, 2}},
		{"44 of 1472 fit in 64 KB", sizes(rep(50, 1472)...), true, []int{44, 6}},
		{"at most 64 segments", sizes(rep(70, 100)...), true, []int{64, 6}},
		{"empty datagrams alone", sizes(0, 0, 22), true, []int{1, 1, 1}},
		{"above the MTU alone", sizes(2000, 2000), true, []int{1, 1}},
		{"without offload", sizes(1472, 1472, 1472), false, []int{1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := w.pool.Get().(*mmsgScratch)
			defer w.pool.Put(sc)
			n := w.pack(sc, tc.bs, tc.gso)
			if got := sc.segs[:n]; fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("messages %v, want %v", got, tc.want)
			}
			for i := range n {
				if ctl := sc.hs[i].hdr.Controllen; (sc.segs[i] > 1) != (ctl > 0) {
					t.Errorf("message %d of %d datagrams has %d bytes of control", i, sc.segs[i], ctl)
				}
			}
		})
	}
}

const envMmsgNS = "RAFTCAST_PIPES_MMSG_NETNS"

// TestMmsgMulticast sends batches over real sockets (in a network namespace of its own: root
// or unprivileged user namespaces), with and without segmentation offload, and checks that
// every datagram arrives intact, in order, with its source, interface and group.
func TestMmsgMulticast(t *testing.T) {
	if os.Getenv(envMmsgNS) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMmsgMulticast$", "-test.v", "-test.timeout=60s")
		cmd.Env = append(os.Environ(), envMmsgNS+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		if os.Geteuid() != 0 {
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
			cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
			cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		}
		out, err := cmd.CombinedOutput()
		if err != nil && (strings.Contains(err.Error(), "operation not permitted") || strings.Contains(string(out), "SKIP-NETNS")) {
			t.Skipf("no network namespace here: %v %s", err, out)
		}
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestMmsgMulticast")) {
			t.Fatalf("in a namespace: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "gso=") {
				t.Log(strings.TrimSpace(l))
			}
		}
		return
	}
	// Inside the namespace: both ends of a veth pair, everything on mc0.
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "mc0", "type", "veth", "peer", "name", "mc1"},
		{"link", "set", "mc1", "up"},
		{"link", "set", "mc0", "mtu", "1500", "up"},
		{"addr", "add", "198.18.98.1/24", "dev", "mc0"},
		{"route", "add", "224.0.0.0/4", "dev", "mc0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Skipf("SKIP-NETNS ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	ifi, err := net.InterfaceByName("mc0")
	if err != nil {
		t.Fatal(err)
	}
	group := netip.MustParseAddr("239.255.98.1")
	const port = 45999
	rs, err := openDataSock(false, port, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.close()
	if err := rs.join(group, ifi.Index); err != nil {
		t.Fatal(err)
	}
	ss, err := openDataSock(false, 0, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.close()
	if err := ss.setSender(ifi.Index, 1, true); err != nil {
		t.Fatal(err)
	}
	r := newMmsgReader(rs, mmsgBatch, maxUDP)
	for _, gso := range []bool{true, false} {
		w := newMmsgWriter(ss, netip.AddrPortFrom(group, port), ifi.Index, ifi.MTU-28)
		w.gso.Store(gso)
		// 150 full datagrams, a short one, more full ones, one of 22 bytes: numbered.
		var bs [][]byte
		for i := range 300 {
			size := 1472
			switch {
			case i == 150:
				size = 700
			case i == 299:
				size = 22
			}
			b := bytes.Repeat([]byte{byte(i)}, size)
			b[0], b[1] = byte(i>>8), byte(i)
			bs = append(bs, b)
		}
		n, err := w.write(bs)
		if err != nil || n != len(bs) {
			t.Fatalf("gso=%v: wrote %d of %d: %v", gso, n, len(bs), err)
		}
		got := 0
		deadline := time.Now().Add(10 * time.Second)
		for got < len(bs) && time.Now().Before(deadline) {
			k, err := r.read(true)
			if err != nil {
				t.Fatal(err)
			}
			for i := range k {
				b, src, ifindex, dst := r.datagram(i)
				if !bytes.Equal(b, bs[got]) {
					t.Fatalf("gso=%v: datagram %d: %d bytes starting %x, want %d starting %x", gso, got, len(b), b[:min(4, len(b))], len(bs[got]), bs[got][:4])
				}
				if ifindex != ifi.Index || dst != group || src.Addr() != netip.MustParseAddr("198.18.98.1") {
					t.Fatalf("gso=%v: datagram %d from %v on %d to %v", gso, got, src, ifindex, dst)
				}
				got++
			}
		}
		if got != len(bs) {
			t.Fatalf("gso=%v: received %d of %d", gso, got, len(bs))
		}
		t.Logf("gso=%v (still on: %v): %d datagrams", gso, w.gso.Load(), got)
	}

	// Out of the group nothing arrives; back in, datagrams do again.
	w := newMmsgWriter(ss, netip.AddrPortFrom(group, port), ifi.Index, ifi.MTU-28)
	one := [][]byte{[]byte("after leaving")}
	if err := rs.leave(group, ifi.Index); err != nil {
		t.Fatal(err)
	}
	if _, err := w.write(one); err != nil {
		t.Fatal(err)
	}
	if k, err := r.read(true); k != 0 || err != nil {
		t.Fatalf("out of the group: read %d datagrams (%v)", k, err)
	}
	if err := rs.join(group, ifi.Index); err != nil {
		t.Fatal(err)
	}
	if _, err := w.write(one); err != nil {
		t.Fatal(err)
	}
	if k, err := r.read(true); k != 1 || err != nil {
		t.Fatalf("back in the group: read %d datagrams (%v)", k, err)
	}
}
