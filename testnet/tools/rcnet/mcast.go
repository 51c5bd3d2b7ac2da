package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const (
	hdrLen   = 16
	magic    = "RCMC"
	maxSeq   = 1 << 28 // bitmap bound per sender: 256 Mi datagrams
	pollStep = 100 * time.Millisecond
	batchLen = 32 // datagrams per sendmmsg/recvmmsg
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share (their Message types
// are the same type).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// cpuSeconds is this process's user+system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

type mcastFlags struct {
	group string
	port  int
	iface string
}

func (m *mcastFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.group, "group", "", "multicast group (IPv4 or IPv6)")
	fs.IntVar(&m.port, "port", 0, "UDP port")
	fs.StringVar(&m.iface, "iface", "", "interface to join/send on")
}

func (m *mcastFlags) resolve() (net.IP, *net.Interface, bool, error) {
	g := net.ParseIP(m.group)
	if g == nil || !g.IsMulticast() || m.port <= 0 || m.port > 65535 || m.iface == "" {
		return nil, nil, false, errors.New("need -group MULTICAST-IP, -port 1..65535 and -iface NAME")
	}
	ifi, err := net.InterfaceByName(m.iface)
	if err != nil {
		return nil, nil, false, fmt.Errorf("interface %s: %w", m.iface, err)
	}
	return g, ifi, g.To4() == nil, nil
}

type senderStats struct {
	seen     []uint64 // bitmap of sequence numbers received
	received int64
	maxSeq   int64
}

func (s *senderStats) mark(seq uint64) (fresh bool) {
	w := seq / 64
	for uint64(len(s.seen)) <= w {
		s.seen = append(s.seen, make([]uint64, len(s.seen)+16)...)
	}
	bit := uint64(1) << (seq % 64)
	if s.seen[w]&bit != 0 {
		return false
	}
	s.seen[w] |= bit
	s.received++
	if int64(seq) > s.maxSeq {
		s.maxSeq = int64(seq)
	}
	return true
}

type recvResult struct {
	Group   string  `json:"group"`
	Port    int     `json:"port"`
	Iface   string  `json:"iface"`
	Packets int64   `json:"packets"`
	Bytes   int64   `json:"bytes"`
	Dups    int64   `json:"dups"`
	Foreign int64   `json:"foreign"`
	Senders int     `json:"senders"`
	Lost    int64   `json:"lost"`
	Seconds float64 `json:"seconds"`
	Mbps    float64 `json:"mbps"`
	Stopped string  `json:"stopped"`
	CPUSec  float64 `json:"cpu_seconds"`
}

// runRecv joins the group on one interface and counts datagrams until told to
// stop; see the package comment for the stop conditions.
func runRecv(args []string) error {
	fs := flag.NewFlagSet("mrecv", flag.ExitOnError)
	var mf mcastFlags
	mf.register(fs)
	ready := fs.String("ready", "", "create this file once the group is joined")
	expect := fs.Int64("expect", 0, "stop after this many distinct datagrams (0: no limit)")
	idle := fs.Duration("idle", 0, "stop after this long without data once data came (0: never)")
	timeout := fs.Duration("timeout", 60*time.Second, "stop after this long in any case")
	_ = fs.Parse(args)
	group, ifi, v6, err := mf.resolve()
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	network := "udp4"
	if v6 {
		network = "udp6"
	}
	// Binding to the group address (not the wildcard) keeps other groups on
	// the same port out of this socket.
	c, err := net.ListenPacket(network, net.JoinHostPort(group.String(), strconv.Itoa(mf.port)))
	if err != nil {
		return err
	}
	defer c.Close()
	if uc, ok := c.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(8 << 20)
	}
	gaddr := &net.UDPAddr{IP: group}
	var bc batchConn
	if v6 {
		p := ipv6.NewPacketConn(c)
		err, bc = p.JoinGroup(ifi, gaddr), p
	} else {
		p := ipv4.NewPacketConn(c)
		err, bc = p.JoinGroup(ifi, gaddr), p
	}
	if err != nil {
		return fmt.Errorf("join %s on %s: %w", group, ifi.Name, err)
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte("joined\n"), 0o644); err != nil {
			return err
		}
	}

	res := recvResult{Group: group.String(), Port: mf.port, Iface: ifi.Name}
	senders := map[uint32]*senderStats{}
	msgs := make([]ipv4.Message, batchLen)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 65536)}
	}
	start := time.Now()
	var first, last time.Time
	for res.Stopped == "" {
		now := time.Now()
		switch {
		case ctx.Err() != nil:
			res.Stopped = "signal"
			continue
		case now.Sub(start) >= *timeout:
			res.Stopped = "timeout"
			continue
		case *idle > 0 && !last.IsZero() && now.Sub(last) >= *idle:
			res.Stopped = "idle"
			continue
		}
		if err := c.SetReadDeadline(now.Add(pollStep)); err != nil {
			return err
		}
		for res.Stopped == "" {
			k, err := bc.ReadBatch(msgs, 0)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return err
			}
			if k > 0 {
				last = time.Now()
			}
			for _, m := range msgs[:k] {
				b := m.Buffers[0][:m.N]
				if len(b) < hdrLen || string(b[:4]) != magic {
					res.Foreign++
					continue
				}
				tag := binary.BigEndian.Uint32(b[4:8])
				seq := binary.BigEndian.Uint64(b[8:16])
				if seq >= maxSeq {
					res.Foreign++
					continue
				}
				st := senders[tag]
				if st == nil {
					st = &senderStats{maxSeq: -1}
					senders[tag] = st
				}
				if !st.mark(seq) {
					res.Dups++
					continue
				}
				if first.IsZero() {
					first = last
				}
				res.Packets++
				res.Bytes += int64(len(b))
				if *expect > 0 && res.Packets >= *expect {
					res.Stopped = "expect"
					break
				}
			}
		}
	}
	res.CPUSec = cpuSeconds()
	res.Senders = len(senders)
	for _, st := range senders {
		res.Lost += st.maxSeq + 1 - st.received
	}
	if res.Packets > 1 {
		res.Seconds = last.Sub(first).Seconds()
		// Goodput over the interval between the first and last datagram: the
		// first datagram's bytes arrived before the interval started.
		if res.Seconds > 0 {
			res.Mbps = float64(res.Bytes-res.Bytes/res.Packets) * 8 / res.Seconds / 1e6
		}
	}
	return printJSON(res)
}

type sendResult struct {
	Group      string  `json:"group"`
	Port       int     `json:"port"`
	Iface      string  `json:"iface"`
	Packets    int64   `json:"packets"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	Mbps       float64 `json:"mbps"`
	RateMbps   float64 `json:"rate_mbps"`
	NoBufWait  int64   `json:"nobuf_waits"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// runSend sends numbered datagrams to the group with sendmmsg, paced at -rate
// (payload bits per second; 0 sends as fast as the socket accepts them, which on
// a shaped link is the link's rate). A full qdisc (ENOBUFS) makes it wait and
// retry, never skip a datagram.
func runSend(args []string) error {
	fs := flag.NewFlagSet("msend", flag.ExitOnError)
	var mf mcastFlags
	mf.register(fs)
	count := fs.Int64("count", 0, "datagrams to send")
	bytesFlag := fs.String("bytes", "", "payload bytes to send instead of -count (e.g. 64MiB)")
	size := fs.Int("size", 0, "UDP payload per datagram (default: fill a 1500-byte MTU)")
	rateFlag := fs.String("rate", "0", "payload rate, e.g. 95mbit (0: unpaced)")
	ttl := fs.Int("ttl", 8, "multicast TTL / hop limit (routers need > 1)")
	_ = fs.Parse(args)
	group, ifi, v6, err := mf.resolve()
	if err != nil {
		return err
	}
	rate, err := parseRate(*rateFlag)
	if err != nil {
		return err
	}
	if *size == 0 {
		*size = 1500 - 20 - 8
		if v6 {
			*size = 1500 - 40 - 8
		}
	}
	if *size < hdrLen || *size > 65000 {
		return fmt.Errorf("-size must be %d..65000", hdrLen)
	}
	if *bytesFlag != "" {
		b, err := parseSize(*bytesFlag)
		if err != nil {
			return err
		}
		*count = (b + int64(*size) - 1) / int64(*size)
	}
	if *count <= 0 || *count >= maxSeq {
		return fmt.Errorf("need -count or -bytes, at most %d datagrams", maxSeq-1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	network := "udp4"
	if v6 {
		network = "udp6"
	}
	c, err := net.ListenPacket(network, ":0")
	if err != nil {
		return err
	}
	defer c.Close()
	var bc batchConn
	if v6 {
		p := ipv6.NewPacketConn(c)
		err, bc = errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastHopLimit(*ttl), p.SetMulticastLoopback(false)), p
	} else {
		p := ipv4.NewPacketConn(c)
		err, bc = errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastTTL(*ttl), p.SetMulticastLoopback(false)), p
	}
	if err != nil {
		return fmt.Errorf("multicast options on %s: %w", ifi.Name, err)
	}

	dst := &net.UDPAddr{IP: group, Port: mf.port}
	var tag [4]byte
	_, _ = rand.Read(tag[:])
	msgs := make([]ipv4.Message, batchLen)
	for i := range msgs {
		buf := make([]byte, *size)
		copy(buf, magic)
		copy(buf[4:8], tag[:])
		for j := hdrLen; j < len(buf); j++ {
			buf[j] = byte(j)
		}
		msgs[i] = ipv4.Message{Buffers: [][]byte{buf}, Addr: dst}
	}

	res := sendResult{Group: group.String(), Port: mf.port, Iface: ifi.Name, RateMbps: rate / 1e6}
	var nsPerPacket float64
	if rate > 0 {
		nsPerPacket = float64(*size) * 8 / rate * 1e9
	}
	start := time.Now()
	for seq := int64(0); seq < *count && ctx.Err() == nil; {
		// Send what is due by now (all of it when unpaced), at most batchLen at once.
		n := min(int64(batchLen), *count-seq)
		if nsPerPacket > 0 {
			due := int64(float64(time.Since(start).Nanoseconds())/nsPerPacket) + 1
			if due <= seq {
				time.Sleep(time.Until(start.Add(time.Duration(float64(seq) * nsPerPacket))))
				continue
			}
			n = min(n, due-seq)
		}
		for i := range n {
			binary.BigEndian.PutUint64(msgs[i].Buffers[0][8:16], uint64(seq+i))
		}
		k, err := bc.WriteBatch(msgs[:n], 0)
		if err != nil && (!errors.Is(err, syscall.ENOBUFS) || ctx.Err() != nil) {
			return fmt.Errorf("send datagram %d: %w", seq+int64(k), err)
		}
		if k <= 0 {
			// The qdisc is full (ENOBUFS): wait, then resend from the first unsent datagram.
			res.NoBufWait++
			time.Sleep(200 * time.Microsecond)
			continue
		}
		seq += int64(k)
		res.Packets += int64(k)
		res.Bytes += int64(k) * int64(*size)
	}
	res.CPUSeconds = cpuSeconds()
	res.Seconds = time.Since(start).Seconds()
	if res.Seconds > 0 {
		res.Mbps = float64(res.Bytes) * 8 / res.Seconds / 1e6
	}
	return printJSON(res)
}
