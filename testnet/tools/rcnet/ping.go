package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

type pingResult struct {
	Addr     string  `json:"addr"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	RTTms    float64 `json:"rtt_ms_min"`
	OK       bool    `json:"ok"`
}

// runPing sends ICMP echo requests over a raw socket (needs root or
// CAP_NET_RAW) and counts matching replies. It exits 1 if none came back, so on
// lossy links give a -count well above -replies.
func runPing(args []string) error {
	fs := flag.NewFlagSet("ping", flag.ExitOnError)
	addr := fs.String("addr", "", "IPv4 or IPv6 address to ping")
	count := fs.Int("count", 3, "echo requests to send at most")
	replies := fs.Int("replies", 0, "stop once this many replies came (0: send all -count)")
	timeout := fs.Duration("timeout", 2*time.Second, "wait for each reply at most this long")
	_ = fs.Parse(args)

	dst := net.ParseIP(*addr)
	if dst == nil || *count < 1 || *timeout <= 0 {
		return errors.New("need -addr IP, -count >= 1 and -timeout > 0")
	}
	v6 := dst.To4() == nil
	network, laddr, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, repType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if v6 {
		network, laddr, proto = "ip6:ipv6-icmp", "::", 58
		reqType, repType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		return fmt.Errorf("raw socket (root needed): %w", err)
	}
	defer c.Close()

	id := os.Getpid() & 0xffff
	res := pingResult{Addr: dst.String(), RTTms: -1}
	buf := make([]byte, 1500)
	for seq := 1; seq <= *count; seq++ {
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("raftcast-testnet")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst}); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		res.Sent++
		deadline := start.Add(*timeout)
		for {
			if err := c.SetReadDeadline(deadline); err != nil {
				return err
			}
			n, peer, err := c.ReadFrom(buf)
			if err != nil {
				break // timed out: this request is lost
			}
			rm, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || rm.Type != repType {
				continue
			}
			echo, ok := rm.Body.(*icmp.Echo)
			if !ok || echo.ID != id || echo.Seq != seq {
				continue
			}
			if ip, ok := peer.(*net.IPAddr); !ok || !ip.IP.Equal(dst) {
				continue
			}
			rtt := float64(time.Since(start).Microseconds()) / 1000
			if res.RTTms < 0 || rtt < res.RTTms {
				res.RTTms = rtt
			}
			res.Received++
			break
		}
		if *replies > 0 && res.Received >= *replies {
			break
		}
		if seq < *count {
			time.Sleep(100 * time.Millisecond)
		}
	}
	res.OK = res.Received > 0
	if err := printJSON(res); err != nil {
		return err
	}
	if !res.OK {
		return fmt.Errorf("no reply from %s", dst)
	}
	return nil
}
