// Command udpmeas measures UDP datagram sizes between two network namespaces: the
// measurement behind mcast.DefaultDatagram (see the mcast package doc). Run as root:
//
//	go build -o /tmp/udpmeas ./transfer/mcast/internal/udpmeas
//	ip netns add rcx-a; ip netns add rcx-b
//	ip link add rcxa type veth peer name rcxb
//	ip link set rcxa netns rcx-a; ip link set rcxb netns rcx-b
//	ip -n rcx-a addr add 198.18.77.1/24 dev rcxa; ip -n rcx-b addr add 198.18.77.2/24 dev rcxb
//	ip -n rcx-a link set rcxa up mtu 1500; ip -n rcx-b link set rcxb up mtu 1500
//	# optional 1% loss per packet (fragment), before reassembly:
//	ip netns exec rcx-b nft 'add table ip l; add chain ip l c { type filter hook prerouting priority -500; }; add rule ip l c ip saddr 198.18.77.1 numgen random mod 100 < 1 drop'
//	ip netns exec rcx-b /tmp/udpmeas -mode recv -addr 198.18.77.2:9999 &
//	ip netns exec rcx-a /tmp/udpmeas -mode send -addr 198.18.77.2:9999 -size 1400 -total 67108864 -rate 20971520
//	ip netns del rcx-a; ip netns del rcx-b
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	mode := flag.String("mode", "send", "send|recv")
	addr := flag.String("addr", "198.18.0.2:9999", "")
	size := flag.Int("size", 1400, "datagram payload")
	total := flag.Int64("total", 256<<20, "bytes")
	rate := flag.Int64("rate", 0, "bytes/s pacing (0 none)")
	flag.Parse()
	if *mode == "recv" {
		pc, err := net.ListenPacket("udp4", *addr)
		if err != nil {
			panic(err)
		}
		pc.(*net.UDPConn).SetReadBuffer(64 << 20)
		buf := make([]byte, 65536)
		var got, n int64
		var start time.Time
		c0 := cpu()
		for {
			pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			if n == 0 {
				start = time.Now()
			}
			n++
			got += int64(k)
		}
		el := time.Since(start) - 2*time.Second
		fmt.Printf("recv datagrams=%d bytes=%d MB/s=%.1f cpu-s/GB=%.2f\n", n, got, float64(got)/el.Seconds()/1e6, (cpu()-c0).Seconds()/(float64(got)/1e9))
		os.Exit(0)
	}
	c, err := net.Dial("udp4", *addr)
	if err != nil {
		panic(err)
	}
	buf := make([]byte, *size)
	c0, t0 := cpu(), time.Now()
	var sent int64
	for sent < *total {
		if *rate > 0 {
			want := time.Duration(float64(sent) / float64(*rate) * 1e9)
			if d := want - time.Since(t0); d > 0 {
				time.Sleep(d)
			}
		}
		if _, err := c.Write(buf); err != nil {
			continue
		}
		sent += int64(len(buf))
	}
	el := time.Since(t0)
	fmt.Printf("send size=%d datagrams=%d MB/s=%.1f cpu-s/GB=%.2f\n", *size, sent/int64(*size), float64(sent)/el.Seconds()/1e6, (cpu()-c0).Seconds()/(float64(sent)/1e9))
}
