package pipes

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/zeebo/blake3"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// multicast runs native UDP multicast on the chosen interfaces: beacons that discover the
// multicast domain, the propagate carrier, and the raw data channel.
//
// Sockets: per family, one receiving socket on Port (beacons, propagate) and one on DataPort
// (raw data), bound to the wildcard address with SO_REUSEADDR and IP(V6)_MULTICAST_ALL off,
// joined to the group on each interface (per-interface joins); per interface and family one
// control sending socket (ephemeral port, multicast interface set, hop limit 1, loopback on so
// that several nodes on one host hear each other's beacons) and one data sending socket, whose
// loopback is on only while a peer is heard from one of this host's own addresses (another
// node on the same host): otherwise every datagram sent would come back to this node's own
// data socket, to be received and dropped. The data sockets are batched and kept out of Go's
// netpoller (mmsg.go).
type multicast struct {
	s       *Service
	cfg     MulticastConfig
	sg      *signer
	ifaces  []*mcIface // fixed at start
	byIndex map[int]*mcIface
	ctl4    *ipv4.PacketConn
	data4   *dataSock
	ctl6    *ipv6.PacketConn
	data6   *dataSock
	own     map[netip.AddrPort]bool // local addresses of the sending sockets (fixed at start)
	ownPort map[uint16]bool
	ownAddr map[netip.Addr]bool // this node's interface addresses (fixed at start)
	channel *MulticastChannel
	dataQ   chan *DatagramBatch
	queued  atomic.Int64  // datagrams in dataQ
	room    chan struct{} // signalled (capacity 1) when RecvBatch takes a batch
	batches sync.Pool     // of *DatagramBatch
	done    chan struct{}
	once    sync.Once

	mu         sync.Mutex // guards members, bySrc, domainAttr
	members    map[int]map[peer.ID]*member
	bySrc      map[netip.AddrPort]peer.ID
	domainAttr string

	loopMu sync.Mutex // guards loopOn and serialises setting it on the data sending sockets
	loopOn bool       // the data sending sockets loop datagrams back to this host

	recvMu  sync.Mutex // guards pending
	pending []Datagram // received in a batch by Recv, not yet returned

	memberMu  sync.Mutex // guards receiving and serialises joining and leaving the data group
	receiving bool       // the data sockets are members of the data group
}

// mcIface is one interface taking part in native multicast.
type mcIface struct {
	ifi      net.Interface
	v4, v6   bool // the control group is joined and a sending socket is open
	dv4, dv6 bool // the data group is joined
	send4    *ipv4.PacketConn
	send6    *ipv6.PacketConn
	dsend4   *dataSock // data sending sockets
	dsend6   *dataSock
	dw4, dw6 *mmsgWriter // to the data group through dsend4, dsend6
	ownAddrs []netip.Addr
}

// member is a peer heard on one interface.
type member struct {
	last4, last6 time.Time
	src4, src6   netip.AddrPort
	local        bool // heard from one of this node's own addresses: it runs on this host
}

// mcTarget is one interface to send on and the address families to use.
type mcTarget struct {
	ifindex int
	v4, v6  bool
}

const maxUDP = 65535

func startMulticast(s *Service) (*multicast, error) {
	cfg := s.cfg.Multicast
	sg, err := newSigner(s.self, s.priv)
	if err != nil {
		return nil, err
	}
	m := &multicast{
		s: s, cfg: cfg, sg: sg,
		byIndex: make(map[int]*mcIface),
		own:     make(map[netip.AddrPort]bool),
		ownPort: make(map[uint16]bool),
		ownAddr: make(map[netip.Addr]bool),
		dataQ:   make(chan *DatagramBatch, cfg.DataQueue),
		room:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		members: make(map[int]map[peer.ID]*member),
		bySrc:   make(map[netip.AddrPort]peer.ID),
	}
	m.channel = &MulticastChannel{m: m}
	m.receiving = true
	m.batches.New = func() any { return &DatagramBatch{m: m} }
	ifis, err := chooseInterfaces(cfg.Interfaces)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			m.closeSockets()
		}
	}()
	var has4, has6 []*mcIface
	for _, ifi := range ifis {
		mi := &mcIface{ifi: ifi}
		addrs, _ := ifi.Addrs()
		var a4, a6 bool
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil {
				ip := pfx.Addr()
				mi.ownAddrs = append(mi.ownAddrs, ip)
				m.ownAddr[ip.WithZone("")] = true
				a4 = a4 || ip.Is4()
				a6 = a6 || (ip.Is6() && !ip.Is4In6())
			}
		}
		if a4 {
			has4 = append(has4, mi)
		}
		if a6 {
			has6 = append(has6, mi)
		}
		m.ifaces = append(m.ifaces, mi)
		m.byIndex[ifi.Index] = mi
	}
	if len(has6) > 0 {
		m.ctl6 = m.open6(cfg.Port, has6, func(mi *mcIface) { mi.v6 = true })
		m.data6 = m.openData(true, has6, func(mi *mcIface) { mi.dv6 = true })
	}
	if len(has4) > 0 {
		m.ctl4 = m.open4(cfg.Port, has4, func(mi *mcIface) { mi.v4 = true })
		m.data4 = m.openData(false, has4, func(mi *mcIface) { mi.dv4 = true })
	}
	any := false
	for _, mi := range m.ifaces {
		if mi.v4 {
			if mi.send4, err = m.sender4(mi); err == nil {
				mi.dsend4, mi.dw4, err = m.dataSender(mi, false, mi.send4.LocalAddr())
			}
			if err != nil {
				s.log.Warn("multicast: IPv4 sending socket", "iface", mi.ifi.Name, "err", err)
				mi.v4 = false
			}
		}
		if mi.v6 {
			if mi.send6, err = m.sender6(mi); err == nil {
				mi.dsend6, mi.dw6, err = m.dataSender(mi, true, mi.send6.LocalAddr())
			}
			if err != nil {
				s.log.Warn("multicast: IPv6 sending socket", "iface", mi.ifi.Name, "err", err)
				mi.v6 = false
			}
		}
		any = any || mi.v4 || mi.v6
	}
	if !any {
		return nil, fmt.Errorf("%w: no interface joined (%d candidates)", ErrNoMulticast, len(ifis))
	}
	ok = true
	if m.ctl4 != nil {
		s.goFunc(func() { m.readLoop4(m.ctl4, m.onCtl) })
	}
	if m.ctl6 != nil {
		s.goFunc(func() { m.readLoop6(m.ctl6, m.onCtl) })
	}
	if m.data4 != nil {
		s.goFunc(func() { m.dataLoop(m.data4) })
	}
	if m.data6 != nil {
		s.goFunc(func() { m.dataLoop(m.data6) })
	}
	s.goFunc(m.beaconLoop)
	var names []string
	for _, mi := range m.ifaces {
		if mi.v4 || mi.v6 {
			names = append(names, fmt.Sprintf("%s(v4=%t,v6=%t)", mi.ifi.Name, mi.v4, mi.v6))
		}
	}
	s.log.Info("native multicast up", "ifaces", strings.Join(names, " "), "group4", cfg.Group4, "group6", cfg.Group6, "port", cfg.Port, "data_port", cfg.DataPort)
	return m, nil
}

// chooseInterfaces returns the named interfaces, or every up, multicast-capable, non-loopback
// interface when names is empty.
func chooseInterfaces(names []string) ([]net.Interface, error) {
	if len(names) > 0 {
		var out []net.Interface
		for _, n := range names {
			ifi, err := net.InterfaceByName(n)
			if err != nil {
				return nil, fmt.Errorf("%w: interface %q: %v", ErrNoMulticast, n, err)
			}
			if ifi.Flags&net.FlagMulticast == 0 || ifi.Flags&net.FlagUp == 0 {
				return nil, fmt.Errorf("%w: interface %q is down or not multicast-capable", ErrNoMulticast, n)
			}
			out = append(out, *ifi)
		}
		return out, nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoMulticast, err)
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
			out = append(out, ifi)
		}
	}
	return out, nil
}

// listenUDP opens a UDP socket with SO_REUSEADDR, the multicast-all option off (so it hears
// only the groups it joined) and large buffers (forced when allowed).
func (m *multicast) listenUDP(network, addr string) (net.PacketConn, error) {
	buf := m.cfg.SocketBuffer
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if network == "udp4" {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
			} else {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
			}
			setSockBuffers(int(fd), buf)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.ListenPacket(context.Background(), network, addr)
}

func (m *multicast) open4(port int, ifs []*mcIface, joined func(*mcIface)) *ipv4.PacketConn {
	c, err := m.listenUDP("udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		m.s.log.Warn("multicast: IPv4 socket", "port", port, "err", err)
		return nil
	}
	p := ipv4.NewPacketConn(c)
	if err := p.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true); err != nil {
		m.s.log.Warn("multicast: IPv4 control messages", "err", err)
		_ = p.Close()
		return nil
	}
	if m.joinAll("IPv4", m.cfg.Group4, p.JoinGroup, ifs, joined) == 0 {
		_ = p.Close()
		return nil
	}
	return p
}

func (m *multicast) open6(port int, ifs []*mcIface, joined func(*mcIface)) *ipv6.PacketConn {
	c, err := m.listenUDP("udp6", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		m.s.log.Warn("multicast: IPv6 socket", "port", port, "err", err)
		return nil
	}
	p := ipv6.NewPacketConn(c)
	if err := p.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
		m.s.log.Warn("multicast: IPv6 control messages", "err", err)
		_ = p.Close()
		return nil
	}
	if m.joinAll("IPv6", m.cfg.Group6, p.JoinGroup, ifs, joined) == 0 {
		_ = p.Close()
		return nil
	}
	return p
}

// joinAll joins group on each interface with join (an ipv4 or ipv6 PacketConn's JoinGroup),
// calling joined for each success, and returns how many succeeded.
func (m *multicast) joinAll(fam string, group netip.Addr, join func(*net.Interface, net.Addr) error, ifs []*mcIface, joined func(*mcIface)) int {
	ga := &net.UDPAddr{IP: group.AsSlice()}
	n := 0
	for _, mi := range ifs {
		if err := join(&mi.ifi, ga); err != nil {
			m.s.log.Warn("multicast: "+fam+" join", "iface", mi.ifi.Name, "group", group, "err", err)
			continue
		}
		n++
		joined(mi)
		m.s.stats.mcJoins.Add(1)
	}
	return n
}

// openData opens the data receiving socket of a family on DataPort and joins the data group
// on each interface (nil if no join succeeded).
func (m *multicast) openData(v6 bool, ifs []*mcIface, joined func(*mcIface)) *dataSock {
	fam, group := "IPv4", m.cfg.Group4
	if v6 {
		fam, group = "IPv6", m.cfg.Group6
	}
	ds, err := openDataSock(v6, m.cfg.DataPort, m.cfg.DataSocketBuffer)
	if err != nil {
		m.s.log.Warn("multicast: "+fam+" data socket", "port", m.cfg.DataPort, "err", err)
		return nil
	}
	n := 0
	for _, mi := range ifs {
		if err := ds.join(group, mi.ifi.Index); err != nil {
			m.s.log.Warn("multicast: "+fam+" join", "iface", mi.ifi.Name, "group", group, "err", err)
			continue
		}
		n++
		joined(mi)
		m.s.stats.mcJoins.Add(1)
	}
	if n == 0 {
		_ = ds.close()
		return nil
	}
	return ds
}

// dataSender opens the data sending socket of a family on one interface, loopback as
// currently chosen, and its writer to the data group. It shares the control sending socket's
// port (ctl, both with SO_REUSEADDR), so that receivers tell the sender of a datagram by the
// source its beacons come from.
func (m *multicast) dataSender(mi *mcIface, v6 bool, ctl net.Addr) (*dataSock, *mmsgWriter, error) {
	ua, _ := ctl.(*net.UDPAddr)
	if ua == nil {
		return nil, nil, fmt.Errorf("control socket address %v is not UDP", ctl)
	}
	ds, err := openDataSock(v6, ua.Port, m.cfg.SocketBuffer)
	if err != nil {
		return nil, nil, err
	}
	m.loopMu.Lock()
	loop := m.loopOn
	m.loopMu.Unlock()
	if err := ds.setSender(mi.ifi.Index, max(1, m.cfg.HopLimit), loop); err != nil {
		_ = ds.close()
		return nil, nil, err
	}
	dst := netip.AddrPortFrom(m.cfg.Group4, uint16(m.cfg.DataPort))
	if v6 {
		dst = netip.AddrPortFrom(m.cfg.Group6, uint16(m.cfg.DataPort))
	}
	hdr := 28
	if v6 {
		hdr = 48
	}
	return ds, newMmsgWriter(ds, dst, mi.ifi.Index, mi.ifi.MTU-hdr), nil
}

// setDataLoop turns the loopback of the data sending sockets on or off.
func (m *multicast) setDataLoop(on bool) {
	m.loopMu.Lock()
	defer m.loopMu.Unlock()
	if m.loopOn == on {
		return
	}
	m.loopOn = on
	for _, mi := range m.ifaces {
		for _, ds := range []*dataSock{mi.dsend4, mi.dsend6} {
			if ds != nil {
				if err := ds.setLoop(on); err != nil && !m.closing() {
					m.s.log.Warn("multicast: data loopback", "iface", mi.ifi.Name, "on", on, "err", err)
				}
			}
		}
	}
	m.s.log.Debug("multicast: data loopback", "on", on)
}

func (m *multicast) sender4(mi *mcIface) (*ipv4.PacketConn, error) {
	c, err := m.listenUDP("udp4", "0.0.0.0:0")
	if err != nil {
		return nil, err
	}
	p := ipv4.NewPacketConn(c)
	if err := errors.Join(p.SetMulticastInterface(&mi.ifi), p.SetMulticastTTL(max(1, m.cfg.HopLimit)), p.SetMulticastLoopback(true)); err != nil {
		_ = p.Close()
		return nil, err
	}
	m.addOwn(mi, c.LocalAddr())
	return p, nil
}

func (m *multicast) sender6(mi *mcIface) (*ipv6.PacketConn, error) {
	c, err := m.listenUDP("udp6", "[::]:0")
	if err != nil {
		return nil, err
	}
	p := ipv6.NewPacketConn(c)
	if err := errors.Join(p.SetMulticastInterface(&mi.ifi), p.SetMulticastHopLimit(max(1, m.cfg.HopLimit)), p.SetMulticastLoopback(true)); err != nil {
		_ = p.Close()
		return nil, err
	}
	m.addOwn(mi, c.LocalAddr())
	return p, nil
}

func (m *multicast) addOwn(mi *mcIface, la net.Addr) {
	ap := la.(*net.UDPAddr).AddrPort()
	m.ownPort[ap.Port()] = true
	for _, a := range mi.ownAddrs {
		m.own[netip.AddrPortFrom(a, ap.Port())] = true
	}
}

// isOwn reports whether src is one of this node's sending sockets.
func (m *multicast) isOwn(src netip.AddrPort) bool {
	if !m.ownPort[src.Port()] {
		return false
	}
	return m.own[netip.AddrPortFrom(src.Addr().WithZone(""), src.Port())]
}

func (m *multicast) closeSockets() {
	for _, c := range []interface{ Close() error }{m.ctl4, m.ctl6} {
		if c != nil && !isNilConn(c) {
			_ = c.Close()
		}
	}
	var socks []*dataSock
	for _, mi := range m.ifaces {
		if mi.send4 != nil {
			_ = mi.send4.Close()
		}
		if mi.send6 != nil {
			_ = mi.send6.Close()
		}
		socks = append(socks, mi.dsend4, mi.dsend6)
	}
	socks = append(socks, m.data4, m.data6)
	for _, ds := range socks {
		if ds != nil {
			ds.shutdown()
		}
	}
	for _, ds := range socks {
		if ds != nil {
			_ = ds.close()
		}
	}
}

func isNilConn(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case *ipv4.PacketConn:
		return v == nil
	case *ipv6.PacketConn:
		return v == nil
	}
	return false
}

func (m *multicast) close() {
	m.once.Do(func() {
		close(m.done)
		m.closeSockets()
	})
}

func (m *multicast) closing() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

type dgramHandler func(b []byte, ifindex int, dst netip.Addr, src netip.AddrPort, v6 bool)

func (m *multicast) readLoop4(p *ipv4.PacketConn, h dgramHandler) {
	buf := make([]byte, maxUDP)
	for {
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if m.closing() || errors.Is(err, net.ErrClosed) {
				return
			}
			m.s.log.Debug("multicast read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if cm == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(cm.Dst)
		h(buf[:n], cm.IfIndex, dst.Unmap(), udpAddrPort(src), false)
	}
}

func (m *multicast) readLoop6(p *ipv6.PacketConn, h dgramHandler) {
	buf := make([]byte, maxUDP)
	for {
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if m.closing() || errors.Is(err, net.ErrClosed) {
				return
			}
			m.s.log.Debug("multicast read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if cm == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(cm.Dst)
		h(buf[:n], cm.IfIndex, dst, udpAddrPort(src), true)
	}
}

func udpAddrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// onCtl handles a datagram on the control port: a beacon or a propagate message.
func (m *multicast) onCtl(b []byte, ifindex int, dst netip.Addr, src netip.AddrPort, v6 bool) {
	if m.byIndex[ifindex] == nil || (dst != m.cfg.Group4 && dst != m.cfg.Group6) {
		return
	}
	msg, err := decodeSigned(b, m.s.cfg.MaxPropagateSize)
	if err != nil {
		m.s.stats.rejMalformed.Add(1)
		m.s.log.Debug("multicast datagram rejected", "src", src, "err", err)
		return
	}
	if msg.Sender == m.s.self {
		return
	}
	switch msg.Type {
	case msgBeacon:
		m.onBeacon(msg, ifindex, src, v6)
	case msgPropagate:
		m.s.prop.onDatagram(msg)
	}
}

// beaconMaxSkew bounds the difference between a beacon's clock and ours.
const beaconMaxSkew = time.Minute

func (m *multicast) onBeacon(msg *signedMsg, ifindex int, src netip.AddrPort, v6 bool) {
	if err := msg.verify(); err != nil {
		m.s.stats.rejForged.Add(1)
		m.s.log.Debug("beacon rejected", "src", src, "err", err)
		return
	}
	now := m.s.now()
	if d := now.Sub(time.UnixMilli(int64(msg.Seq))); d > beaconMaxSkew || d < -beaconMaxSkew {
		m.s.stats.rejReplayed.Add(1)
		return
	}
	m.s.stats.mcBeaconsRecv.Add(1)
	m.mu.Lock()
	local := m.noteMemberLocked(ifindex, msg, src, v6, now)
	m.mu.Unlock()
	if local {
		m.setDataLoop(true) // a node on this host: our data must loop back to it
	}
}

// noteMemberLocked records a beacon's sender as a member heard on the interface, and reports
// whether it runs on this host.
func (m *multicast) noteMemberLocked(ifindex int, msg *signedMsg, src netip.AddrPort, v6 bool, now time.Time) bool {
	ms := m.members[ifindex]
	if ms == nil {
		ms = make(map[peer.ID]*member)
		m.members[ifindex] = ms
	}
	mb := ms[msg.Sender]
	if mb == nil {
		mb = &member{}
		ms[msg.Sender] = mb
	}
	if v6 {
		mb.last6, mb.src6 = now, src
	} else {
		mb.last4, mb.src4 = now, src
	}
	mb.local = m.ownAddr[src.Addr().WithZone("")]
	if len(m.bySrc) > 65536 {
		clear(m.bySrc)
	}
	m.bySrc[src] = msg.Sender
	return mb.local
}

// The data reader lets datagrams gather in the socket buffer between reads: at a pace well
// below what it can take, reading each datagram as it lands costs a wake-up (and a hop to the
// consumer) per datagram; gathering makes it one per batch. The pause adapts so that a read
// finds about dataTarget datagrams, within [dataMinPause, dataMaxPause]: at 100 Mbit/s that
// is about 6 ms and 70 KB of the socket buffer; at the rates where the socket buffer could
// not hold a pause, reads fill whole batches and the reader does not pause at all.
const (
	dataTarget   = mmsgBatch * 3 / 4
	dataMinPause = 500 * time.Microsecond
	dataMaxPause = 8 * time.Millisecond
)

// dataPollFor is how long the data reader keeps polling after the last datagram before it
// blocks in the socket again.
const dataPollFor = 100 * time.Millisecond

// dataLoop reads the data socket in batches until the channel closes. While datagrams flow it
// polls the socket (non-blocking reads, paused as above unless a read fills a batch); after
// dataPollFor without any it blocks in the socket until the next arrives.
func (m *multicast) dataLoop(ds *dataSock) {
	r := newMmsgReader(ds, mmsgBatch, maxUDP)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pause := 2 * time.Millisecond
	var last time.Time // of the last datagram
	for !m.closing() {
		polling := time.Since(last) < dataPollFor
		n, err := r.read(!polling)
		if err != nil {
			if m.closing() || errors.Is(err, ErrClosed) {
				return
			}
			m.s.log.Debug("multicast data read", "err", err)
			n = 0
		}
		if n > 0 {
			last = time.Now()
			m.onData(r, n)
		}
		switch {
		case err != nil:
			timer.Reset(10 * time.Millisecond)
		case n == mmsgBatch:
			pause = max(dataMinPause, pause*3/4)
			continue // more may be waiting
		case !polling:
			continue // blocked a quiet sockTimeout, or the first datagram arrived
		default:
			if n >= dataTarget {
				pause = max(dataMinPause, pause*7/8)
			} else if n < dataTarget/2 {
				pause = min(dataMaxPause, pause*5/4)
			}
			timer.Reset(pause)
		}
		select {
		case <-m.done:
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// onData queues the datagrams of one read that come from peers of the domain, as one batch.
func (m *multicast) onData(r *mmsgReader, n int) {
	b := m.batches.Get().(*DatagramBatch)
	b.buf, b.Datagrams = b.buf[:0], b.Datagrams[:0]
	for i := range n {
		data, src, ifindex, dst := r.datagram(i)
		if data == nil || m.byIndex[ifindex] == nil || (dst != m.cfg.Group4 && dst != m.cfg.Group6) || m.isOwn(src) {
			continue
		}
		// Data is set below, once buf has stopped growing.
		b.buf = append(b.buf, data...)
		b.Datagrams = append(b.Datagrams, Datagram{Data: data[:0:len(data)], From: src, IfIndex: ifindex})
	}
	k := len(b.Datagrams)
	if k == 0 {
		m.batches.Put(b)
		return
	}
	off := 0
	m.mu.Lock()
	for i := range b.Datagrams {
		d := &b.Datagrams[i]
		l := cap(d.Data)
		d.Data = b.buf[off : off+l : off+l]
		off += l
		d.Peer = m.bySrc[d.From]
	}
	m.mu.Unlock()
	if !m.waitRoom(k) {
		m.s.stats.mcDataDropped.Add(uint64(k))
		m.batches.Put(b)
		return
	}
	select {
	case m.dataQ <- b:
		m.s.stats.mcDataRecv.Add(uint64(k))
		m.s.stats.mcDataRecvBytes.Add(uint64(off))
	default: // cannot happen: at least one datagram per batch in the queue
		m.queued.Add(-int64(k))
		m.s.stats.mcDataDropped.Add(uint64(k))
		m.batches.Put(b)
	}
}

// DataQueueWait bounds how long the data reader waits for room in the queue for one read's
// datagrams (the consumer is behind; the socket buffer holds what arrives meanwhile) before
// it drops them.
const DataQueueWait = 2 * time.Second

// waitRoom reserves room for k datagrams in the data queue, waiting while it is full (an
// empty queue always takes a batch). It returns false if the wait timed out or the channel
// closed.
func (m *multicast) waitRoom(k int) bool {
	var deadline time.Time
	var tick *time.Timer
	for {
		if q := m.queued.Add(int64(k)); q <= int64(m.cfg.DataQueue) || q == int64(k) {
			return true
		}
		m.queued.Add(-int64(k))
		// Look again every 10 ms even without a signal: the other family's reader may take it.
		if tick == nil {
			deadline = time.Now().Add(DataQueueWait)
			tick = time.NewTimer(10 * time.Millisecond)
			defer tick.Stop()
		} else if time.Now().After(deadline) {
			return false
		} else {
			tick.Reset(10 * time.Millisecond)
		}
		select {
		case <-m.room:
		case <-tick.C:
		case <-m.done:
			return false
		}
	}
}

func (m *multicast) beaconLoop() {
	t := time.NewTicker(m.cfg.BeaconInterval)
	defer t.Stop()
	for {
		m.sendBeacons()
		m.updateDomains()
		select {
		case <-m.done:
			return
		case <-m.s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *multicast) sendBeacons() {
	b, err := m.sg.beacon(uint64(m.s.now().UnixMilli()))
	if err != nil {
		m.s.log.Warn("beacon", "err", err)
		return
	}
	for _, mi := range m.ifaces {
		n, err := m.send(mi, true, true, m.cfg.Port, b)
		m.s.stats.mcBeaconsSent.Add(uint64(n))
		if err != nil {
			m.s.log.Debug("beacon send", "iface", mi.ifi.Name, "err", err)
		}
	}
}

// send writes b to the group on one interface by the families asked for that are available;
// it returns the datagrams sent.
func (m *multicast) send(mi *mcIface, v4, v6 bool, port int, b []byte) (int, error) {
	n := 0
	var errs []error
	if v6 && mi.send6 != nil {
		_, err := mi.send6.WriteTo(b, nil, &net.UDPAddr{IP: m.cfg.Group6.AsSlice(), Port: port, Zone: mi.ifi.Name})
		if err != nil {
			errs = append(errs, err)
		} else {
			n++
		}
	}
	if v4 && mi.send4 != nil {
		_, err := mi.send4.WriteTo(b, nil, &net.UDPAddr{IP: m.cfg.Group4.AsSlice(), Port: port})
		if err != nil {
			errs = append(errs, err)
		} else {
			n++
		}
	}
	if len(errs) > 0 {
		m.s.stats.mcSendErrors.Add(uint64(len(errs)))
	}
	return n, errors.Join(errs...)
}

// sendCtl sends a propagate datagram on one target interface.
func (m *multicast) sendCtl(t mcTarget, b []byte) (int, error) {
	mi := m.byIndex[t.ifindex]
	if mi == nil {
		return 0, nil
	}
	return m.send(mi, t.v4, t.v6, m.cfg.Port, b)
}

// targets returns the interfaces to multicast on to reach the given peers (all members when
// all is set), with the families to use (IPv6 when every target there was heard on IPv6, else
// IPv4 when every one was heard on IPv4, else both; IPv4 first when preferV4), and the peers
// they reach.
func (m *multicast) targets(peers []peer.ID, all, preferV4 bool) ([]mcTarget, map[peer.ID]bool) {
	now := m.s.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	covered := make(map[peer.ID]bool)
	var out []mcTarget
	for _, mi := range m.ifaces {
		if !mi.v4 && !mi.v6 {
			continue
		}
		all6, all4, n := true, true, 0
		for p, mb := range m.members[mi.ifi.Index] {
			if !all && !slices.Contains(peers, p) {
				continue
			}
			h6 := now.Sub(mb.last6) < m.cfg.BeaconExpiry
			h4 := now.Sub(mb.last4) < m.cfg.BeaconExpiry
			if !h6 && !h4 {
				continue
			}
			n++
			covered[p] = true
			all6 = all6 && h6
			all4 = all4 && h4
		}
		if n == 0 {
			continue
		}
		t := mcTarget{ifindex: mi.ifi.Index}
		switch {
		case preferV4 && all4 && mi.v4:
			t.v4 = true
		case all6 && mi.v6:
			t.v6 = true
		case all4 && mi.v4:
			t.v4 = true
		default:
			t.v4, t.v6 = mi.v4, mi.v6
		}
		out = append(out, t)
	}
	return out, covered
}

// updateDomains forgets peers not heard for BeaconExpiry and publishes a changed domain list
// in the peer advertisement.
func (m *multicast) updateDomains() {
	now := m.s.now()
	local := false
	m.mu.Lock()
	for idx, ms := range m.members {
		for p, mb := range ms {
			if now.Sub(mb.last4) < m.cfg.BeaconExpiry || now.Sub(mb.last6) < m.cfg.BeaconExpiry {
				local = local || mb.local
			} else {
				delete(ms, p)
				for src, sp := range m.bySrc {
					if sp == p && (src == mb.src4 || src == mb.src6) {
						delete(m.bySrc, src)
					}
				}
			}
		}
		if len(ms) == 0 {
			delete(m.members, idx)
		}
	}
	m.mu.Unlock()
	m.setDataLoop(local)
	var ids []string
	for _, d := range m.domains() {
		if !slices.Contains(ids, d.ID) {
			ids = append(ids, d.ID)
		}
	}
	attr := strings.Join(ids, ",")
	m.mu.Lock()
	changed := attr != m.domainAttr
	m.domainAttr = attr
	m.mu.Unlock()
	if changed {
		m.s.ov.SetPeerAttr(PeerAttrDomains, attr)
	}
}

// Domain is this node's multicast domain on one interface.
type Domain struct {
	IfName  string
	IfIndex int
	// ID is the domain ID: the first 16 hex digits of BLAKE3("raftcast/mcast-domain\x00" ||
	// smallest peer ID), the smallest of this node and the peers it hears on the interface.
	ID     string
	Peers  []peer.ID // the other peers heard, sorted
	V4, V6 bool      // families joined
}

// DomainID returns the domain ID of a segment whose smallest peer ID is min.
func DomainID(min peer.ID) string {
	d := blake3.Sum256(append([]byte("raftcast/mcast-domain\x00"), min...))
	return hex.EncodeToString(d[:8])
}

func (m *multicast) domains() []Domain {
	now := m.s.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Domain
	for _, mi := range m.ifaces {
		if !mi.v4 && !mi.v6 {
			continue
		}
		d := Domain{IfName: mi.ifi.Name, IfIndex: mi.ifi.Index, V4: mi.v4, V6: mi.v6}
		lowest := m.s.self
		for p, mb := range m.members[mi.ifi.Index] {
			if now.Sub(mb.last4) < m.cfg.BeaconExpiry || now.Sub(mb.last6) < m.cfg.BeaconExpiry {
				d.Peers = append(d.Peers, p)
				lowest = min(lowest, p)
			}
		}
		slices.Sort(d.Peers)
		d.ID = DomainID(lowest)
		out = append(out, d)
	}
	return out
}

// Datagram is one datagram received on the raw multicast data channel.
type Datagram struct {
	Data    []byte
	From    netip.AddrPort
	Peer    peer.ID // the sender as learnt from its beacons ("" if not known); not authenticated
	IfIndex int
}

// MulticastChannel is the raw native-multicast data channel for bulk data and the view of this
// node's multicast domains. Datagrams are neither signed nor acknowledged: verify contents
// upstream (slices against their hashes).
type MulticastChannel struct {
	m *multicast
}

// Send sends b (at most MaxDatagram bytes) to the data group on every interface where a peer of
// the domain is heard (or on every joined interface when none is), and returns the number of
// datagrams sent. It blocks while the socket's send buffer is full (a shaped link slows the
// sender instead of dropping). It prefers IPv4 when every member was heard on it: the smaller
// header carries 97.2% payload at MTU 1500 (1472-byte datagrams) against 95.9% for IPv6.
func (c *MulticastChannel) Send(b []byte) (int, error) {
	return c.SendBatch([][]byte{b})
}

// SendBatch sends each datagram of bs in order as Send does, with one system call per up to 64
// datagrams per interface and family (sendmmsg). It returns the number of datagrams sent
// (one per datagram and interface); a datagram the kernel refuses is skipped, the others are
// still sent, and the first error is returned.
func (c *MulticastChannel) SendBatch(bs [][]byte) (int, error) {
	m := c.m
	size := 0
	for _, b := range bs {
		if len(b) > c.MaxDatagram() {
			return 0, fmt.Errorf("%w: datagram of %d bytes, limit %d", ErrMessageTooLarge, len(b), c.MaxDatagram())
		}
		size += len(b)
	}
	if m.closing() {
		return 0, ErrClosed
	}
	ts, _ := m.targets(nil, true, true)
	if len(ts) == 0 {
		for _, mi := range m.ifaces {
			if mi.dv4 && mi.dw4 != nil {
				ts = append(ts, mcTarget{ifindex: mi.ifi.Index, v4: true})
			} else if mi.dv6 && mi.dw6 != nil {
				ts = append(ts, mcTarget{ifindex: mi.ifi.Index, v6: true})
			}
		}
	}
	total, bytes := 0, 0
	var errs []error
	for _, t := range ts {
		mi := m.byIndex[t.ifindex]
		for _, w := range []*mmsgWriter{pick(t.v6, mi.dw6), pick(t.v4, mi.dw4)} {
			if w == nil {
				continue
			}
			n, err := w.write(bs)
			total += n
			if n == len(bs) {
				bytes += size
			} else {
				bytes += n * size / max(1, len(bs)) // approximate: some were refused
			}
			if err != nil {
				m.s.stats.mcSendErrors.Add(uint64(len(bs) - n))
				errs = append(errs, err)
			}
		}
	}
	m.s.stats.mcDataSent.Add(uint64(total))
	m.s.stats.mcDataSentBytes.Add(uint64(bytes))
	if total == 0 && len(bs) > 0 {
		if m.closing() {
			return 0, ErrClosed
		}
		if len(errs) == 0 {
			return 0, ErrNoMulticast
		}
		return 0, errors.Join(errs...)
	}
	return total, errors.Join(errs...)
}

func pick(ok bool, w *mmsgWriter) *mmsgWriter {
	if ok {
		return w
	}
	return nil
}

// SetReceiving joins (on) or leaves (off) the data group on every interface where it was
// joined at start. The channel starts joined. While it is off no datagram reaches this node
// (no CPU is spent on a stream nobody reads, and a snooping switch stops forwarding it here)
// and Recv waits; sending is not affected.
func (c *MulticastChannel) SetReceiving(on bool) error {
	m := c.m
	m.memberMu.Lock()
	defer m.memberMu.Unlock()
	if m.receiving == on {
		return nil
	}
	var errs []error
	for _, mi := range m.ifaces {
		for _, f := range []struct {
			ok    bool
			ds    *dataSock
			group netip.Addr
		}{{mi.dv4, m.data4, m.cfg.Group4}, {mi.dv6, m.data6, m.cfg.Group6}} {
			if !f.ok || f.ds == nil {
				continue
			}
			var err error
			if on {
				err = f.ds.join(f.group, mi.ifi.Index)
			} else {
				err = f.ds.leave(f.group, mi.ifi.Index)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %v: %w", mi.ifi.Name, f.group, err))
			}
		}
	}
	m.receiving = on
	m.s.log.Debug("multicast data group", "receiving", on)
	return errors.Join(errs...)
}

// DatagramBatch is datagrams from peers of the domain that arrived together on the data
// channel. Their Data share one buffer: Release the batch when done with them.
type DatagramBatch struct {
	Datagrams []Datagram
	buf       []byte
	m         *multicast
}

// Release returns the batch for reuse; neither it nor its datagrams' Data may be used after.
func (b *DatagramBatch) Release() {
	if b != nil && b.m != nil {
		clear(b.Datagrams)
		b.m.batches.Put(b)
	}
}

// RecvBatch waits for the next batch of datagrams from peers of the domain (this node's own
// are skipped): those one read took from the socket (up to 64).
func (c *MulticastChannel) RecvBatch(ctx context.Context) (*DatagramBatch, error) {
	select {
	case b := <-c.m.dataQ:
		c.m.queued.Add(-int64(len(b.Datagrams)))
		select {
		case c.m.room <- struct{}{}:
		default:
		}
		return b, nil
	case <-c.m.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Recv returns the next datagram from a peer of the domain (this node's own are skipped).
func (c *MulticastChannel) Recv(ctx context.Context) (Datagram, error) {
	m := c.m
	for {
		m.recvMu.Lock()
		if len(m.pending) > 0 {
			d := m.pending[0]
			m.pending[0] = Datagram{}
			m.pending = m.pending[1:]
			m.recvMu.Unlock()
			return d, nil
		}
		m.recvMu.Unlock()
		b, err := c.RecvBatch(ctx)
		if err != nil {
			return Datagram{}, err
		}
		m.recvMu.Lock()
		for _, d := range b.Datagrams {
			d.Data = slices.Clone(d.Data)
			m.pending = append(m.pending, d)
		}
		m.recvMu.Unlock()
		b.Release()
	}
}

// MaxDatagram is the largest datagram Send accepts (Multicast.MaxDatagram). Datagrams above
// the path MTU are fragmented by IP: losing one fragment loses the datagram.
func (c *MulticastChannel) MaxDatagram() int { return c.m.cfg.MaxDatagram }

// UnfragmentedSize is the largest datagram that Send delivers without IP fragmentation on every
// joined interface (MTU minus the IPv4 and UDP headers, or the IPv6 ones when an interface has
// no IPv4 join).
func (c *MulticastChannel) UnfragmentedSize() int {
	size := c.m.cfg.MaxDatagram
	for _, mi := range c.m.ifaces {
		if !mi.dv4 && !mi.dv6 {
			continue
		}
		hdr := 28
		if !mi.dv4 {
			hdr = 48
		}
		size = min(size, mi.ifi.MTU-hdr)
	}
	return size
}

// RecvBuffer is the receive buffer the kernel granted the data sockets, in bytes (the smallest
// of the families; 0 without a data socket): how much backlog waits there while the consumer
// is behind. Without the privilege to force it, net.core.rmem_max caps it.
func (c *MulticastChannel) RecvBuffer() int {
	least := 0
	for _, ds := range []*dataSock{c.m.data4, c.m.data6} {
		if ds == nil {
			continue
		}
		if n := ds.recvBuffer(); least == 0 || n < least {
			least = n
		}
	}
	return least
}

// Domains returns this node's domain on each joined interface.
func (c *MulticastChannel) Domains() []Domain { return c.m.domains() }

// Members returns the peers that share a multicast domain with this node (heard on any
// interface within BeaconExpiry), sorted.
func (c *MulticastChannel) Members() []peer.ID {
	var out []peer.ID
	for _, d := range c.m.domains() {
		for _, p := range d.Peers {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out
}

// InDomain reports whether p shares a multicast domain with this node.
func (c *MulticastChannel) InDomain(p peer.ID) bool { return slices.Contains(c.Members(), p) }

// Interfaces returns the names of the interfaces whose data group this node joined: where its
// multicast data is sent and received.
func (c *MulticastChannel) Interfaces() []string {
	var out []string
	for _, mi := range c.m.ifaces {
		if mi.dv4 || mi.dv6 {
			out = append(out, mi.ifi.Name)
		}
	}
	return out
}
