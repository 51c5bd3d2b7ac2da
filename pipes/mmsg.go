package pipes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched UDP sockets for the raw multicast data channel.
//
// The data channel moves thousands of datagrams a second, and per datagram the usual path
// costs a system call, a wake-up of Go's netpoller (every arrival and every freed send
// buffer signals the epoll instance the socket is registered with) and a goroutine hand-off.
// A dataSock is a plain blocking socket that Go's netpoller never sees: its reader blocks in
// recvmmsg on its own thread and takes up to mmsgBatch datagrams per call; senders hand
// sendmmsg up to mmsgBatch datagrams per call. SO_RCVTIMEO and SO_SNDTIMEO bound every call,
// so a closing channel is noticed within sockTimeout.

// mmsgBatch is the most datagrams one recvmmsg or sendmmsg moves.
const mmsgBatch = 64

// sockTimeout bounds one blocking system call on a dataSock.
const sockTimeout = 200 * time.Millisecond

// oobSize holds the IP_PKTINFO or IPV6_PKTINFO control message of one datagram.
const oobSize = 64

// mmsghdr is struct mmsghdr (Go adds the same trailing padding as C).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// dataSock is a blocking UDP socket used with recvmmsg/sendmmsg.
type dataSock struct {
	fd int
	v6 bool

	// closing is set first by close, so that calls retrying a full or empty socket give up.
	closing atomic.Bool
	// mu guards fd's lifetime: held for reading across every system call on fd, so that
	// close cannot close it (and the number be reused) underneath one.
	mu     sync.RWMutex
	closed bool
}

// openDataSock opens a UDP socket of the family bound to port on the wildcard address, with
// SO_REUSEADDR, the multicast-all option off, packet info on, buffers of buf bytes (forced
// when allowed) and blocking calls bounded by sockTimeout.
func openDataSock(v6 bool, port, buf int) (*dataSock, error) {
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	s := &dataSock{fd: fd, v6: v6}
	tv := unix.NsecToTimeval(sockTimeout.Nanoseconds())
	errs := []error{
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv),
	}
	if v6 {
		errs = append(errs,
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1),
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1))
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
	} else {
		errs = append(errs, unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1))
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
	}
	setSockBuffers(fd, buf)
	if v6 {
		errs = append(errs, unix.Bind(fd, &unix.SockaddrInet6{Port: port}))
	} else {
		errs = append(errs, unix.Bind(fd, &unix.SockaddrInet4{Port: port}))
	}
	if err := errors.Join(errs...); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return s, nil
}

// join joins group on the interface.
func (s *dataSock) join(group netip.Addr, ifindex int) error {
	return s.membership(group, ifindex, true)
}

// leave leaves group on the interface.
func (s *dataSock) leave(group netip.Addr, ifindex int) error {
	return s.membership(group, ifindex, false)
}

// membership joins or leaves group on the interface.
func (s *dataSock) membership(group netip.Addr, ifindex int, join bool) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.v6 {
		opt := unix.IPV6_LEAVE_GROUP
		if join {
			opt = unix.IPV6_JOIN_GROUP
		}
		mreq := &unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(ifindex)}
		return unix.SetsockoptIPv6Mreq(s.fd, unix.IPPROTO_IPV6, opt, mreq)
	}
	opt := unix.IP_DROP_MEMBERSHIP
	if join {
		opt = unix.IP_ADD_MEMBERSHIP
	}
	mreq := &unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(ifindex)}
	return unix.SetsockoptIPMreqn(s.fd, unix.IPPROTO_IP, opt, mreq)
}

// setSender makes the socket send multicast out of the interface with the hop limit, looping
// a copy back to this host's members when loop is set.
func (s *dataSock) setSender(ifindex, hops int, loop bool) error {
	if s.v6 {
		return errors.Join(
			unix.SetsockoptInt(s.fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifindex),
			unix.SetsockoptInt(s.fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, hops),
			s.setLoop(loop))
	}
	return errors.Join(
		unix.SetsockoptIPMreqn(s.fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifindex)}),
		unix.SetsockoptInt(s.fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, hops),
		s.setLoop(loop))
}

// setLoop turns the multicast loopback of sent datagrams on or off.
func (s *dataSock) setLoop(loop bool) error {
	v := 0
	if loop {
		v = 1
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.v6 {
		return unix.SetsockoptInt(s.fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, v)
	}
	return unix.SetsockoptInt(s.fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, v)
}

// close closes the socket once no call is in progress (every call returns within
// sockTimeout). Idempotent.
func (s *dataSock) close() error {
	s.closing.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return unix.Close(s.fd)
}

// mmsgReader receives batches of datagrams from one dataSock. It is used by one goroutine.
type mmsgReader struct {
	s     *dataSock
	hs    []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	oob   []byte
	bufs  [][]byte
}

// newMmsgReader returns a reader of up to n datagrams of up to size bytes per call. The
// buffers are allocated once; only the pages datagrams touch become resident.
func newMmsgReader(s *dataSock, n, size int) *mmsgReader {
	r := &mmsgReader{
		s: s, hs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n), oob: make([]byte, n*oobSize), bufs: make([][]byte, n),
	}
	for i := range n {
		r.bufs[i] = make([]byte, size)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
	}
	return r
}

// read returns the datagrams waiting in the socket, up to the reader's batch. With wait it
// blocks until one arrives (at most sockTimeout; 0 and no error after a quiet sockTimeout);
// without, it returns 0 at once when there is none.
//
// A blocking call parks an OS thread and makes Go's sysmon hand the P off, so while data
// flows the reader polls without waiting (a short call that does not leave the scheduler).
func (r *mmsgReader) read(wait bool) (int, error) {
	for i := range r.hs {
		h := &r.hs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Control = &r.oob[i*oobSize]
		h.SetControllen(oobSize)
		h.Flags = 0
		r.hs[i].n = 0
	}
	r.s.mu.RLock()
	defer r.s.mu.RUnlock()
	if r.s.closed {
		return 0, ErrClosed
	}
	for {
		var n uintptr
		var e syscall.Errno
		if wait {
			n, _, e = unix.Syscall6(unix.SYS_RECVMMSG, uintptr(r.s.fd), uintptr(unsafe.Pointer(&r.hs[0])),
				uintptr(len(r.hs)), unix.MSG_WAITFORONE, 0, 0)
		} else {
			n, _, e = unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(r.s.fd), uintptr(unsafe.Pointer(&r.hs[0])),
				uintptr(len(r.hs)), unix.MSG_DONTWAIT, 0, 0)
		}
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, e
		}
	}
}

// datagram returns datagram i of the last read: its bytes (nil if truncated), source, arrival
// interface and destination address.
func (r *mmsgReader) datagram(i int) (b []byte, src netip.AddrPort, ifindex int, dst netip.Addr) {
	h := &r.hs[i]
	if h.hdr.Flags&unix.MSG_TRUNC == 0 {
		b = r.bufs[i][:h.n]
	}
	src = sockaddrAddrPort(&r.names[i])
	ifindex, dst = parsePktinfo(r.oob[i*oobSize : i*oobSize+int(h.hdr.Controllen)])
	return b, src, ifindex, dst
}

// sockaddrAddrPort decodes a sockaddr_in or sockaddr_in6 (IPv4-mapped addresses unmapped).
func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// parsePktinfo returns the interface index and destination address of an IP_PKTINFO or
// IPV6_PKTINFO control message (0 and the zero address if there is none).
func parsePktinfo(oob []byte) (int, netip.Addr) {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		oob = rest
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr }
			return int(int32(binary.NativeEndian.Uint32(data[0:4]))), netip.AddrFrom4([4]byte(data[8:12]))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr addr; int ifindex }
			return int(int32(binary.NativeEndian.Uint32(data[16:20]))), netip.AddrFrom16([16]byte(data[0:16]))
		}
	}
	return 0, netip.Addr{}
}

// mmsgWriter sends batches of datagrams to one destination through one dataSock. It is safe
// for concurrent use (each call takes its headers from a pool).
//
// With UDP segmentation offload (UDP_SEGMENT, Linux 4.18+), a run of equal-sized datagrams
// (the last may be shorter) goes down the stack as one message of up to gsoMaxSegs datagrams
// and 64 KB, split into datagrams at the device (or by the kernel just before it): one pass
// through UDP, IP, routing and netfilter instead of one per datagram. If the kernel refuses
// it, the writer falls back to one message per datagram for good.
type mmsgWriter struct {
	s    *dataSock
	name unix.RawSockaddrInet6 // the destination, either family
	nlen uint32
	mtu  int // largest datagram that leaves unfragmented (GSO segments must fit)

	gso  atomic.Bool
	pool sync.Pool // of *mmsgScratch
	// fails counts datagrams the kernel refused (the batch goes on without them).
	fails atomic.Uint64
}

// gsoMaxSegs and gsoMaxBytes bound one UDP_SEGMENT message (the kernel's UDP_MAX_SEGMENTS is
// 64 on older kernels; an IP packet holds at most 65535 bytes).
const (
	gsoMaxSegs  = 64
	gsoMaxBytes = 65535 - 48 - 8
)

// mmsgMaxDgrams bounds the datagrams one sendmmsg carries.
const mmsgMaxDgrams = 1024

type mmsgScratch struct {
	hs   []mmsghdr
	iovs []unix.Iovec
	oob  []byte // a UDP_SEGMENT control message per message
	segs []int  // datagrams in each message
}

var gsoCmsgSpace = unix.CmsgSpace(2)

// newMmsgWriter returns a writer to dst (scope: the interface index for IPv6) on a path whose
// largest unfragmented datagram is mtu bytes (0: do not use segmentation offload).
func newMmsgWriter(s *dataSock, dst netip.AddrPort, ifindex, mtu int) *mmsgWriter {
	w := &mmsgWriter{s: s, mtu: mtu}
	w.gso.Store(mtu > 0)
	w.pool.New = func() any {
		return &mmsgScratch{
			hs: make([]mmsghdr, mmsgBatch), iovs: make([]unix.Iovec, mmsgMaxDgrams),
			oob: make([]byte, mmsgBatch*gsoCmsgSpace), segs: make([]int, mmsgBatch),
		}
	}
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], dst.Port())
	if dst.Addr().Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&w.name))
		sa4.Family = unix.AF_INET
		sa4.Port = *(*uint16)(unsafe.Pointer(&port))
		sa4.Addr = dst.Addr().As4()
		w.nlen = unix.SizeofSockaddrInet4
	} else {
		w.name.Family = unix.AF_INET6
		w.name.Port = *(*uint16)(unsafe.Pointer(&port))
		w.name.Addr = dst.Addr().As16()
		w.name.Scope_id = uint32(ifindex)
		w.nlen = unix.SizeofSockaddrInet6
	}
	return w
}

// pack fills sc with up to mmsgBatch messages for the datagrams of bs, grouping runs for
// segmentation offload when gso is set, and returns the number of messages.
func (w *mmsgWriter) pack(sc *mmsgScratch, bs [][]byte, gso bool) int {
	nm, iv := 0, 0
	for d := 0; d < len(bs) && nm < mmsgBatch && iv < len(sc.iovs); nm++ {
		k, size := 1, len(bs[d])
		if gso && size > 0 && size <= w.mtu {
			total := size
			for d+k < len(bs) && k < gsoMaxSegs && iv+k < len(sc.iovs) {
				l := len(bs[d+k])
				if l == 0 || l > size || total+l > gsoMaxBytes {
					break
				}
				total += l
				k++
				if l < size {
					break // a shorter datagram ends the run
				}
			}
		}
		h := &sc.hs[nm].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&w.name)), Namelen: w.nlen, Iov: &sc.iovs[iv]}
		h.SetIovlen(k)
		for _, b := range bs[d : d+k] {
			sc.iovs[iv] = unix.Iovec{}
			if len(b) > 0 {
				sc.iovs[iv].Base = &b[0]
			}
			sc.iovs[iv].SetLen(len(b))
			iv++
		}
		if k > 1 {
			c := sc.oob[nm*gsoCmsgSpace : (nm+1)*gsoCmsgSpace]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(size))
			h.Control = &c[0]
			h.SetControllen(gsoCmsgSpace)
		}
		sc.hs[nm].n = 0
		sc.segs[nm] = k
		d += k
	}
	return nm
}

// write sends every datagram of bs in order, blocking while the socket's send buffer is full.
// A datagram the kernel refuses is skipped and counted; write returns how many were sent and
// the first error.
func (w *mmsgWriter) write(bs [][]byte) (int, error) {
	sc := w.pool.Get().(*mmsgScratch)
	defer func() {
		clear(sc.iovs) // do not keep the caller's buffers alive
		w.pool.Put(sc)
	}()
	w.s.mu.RLock()
	defer w.s.mu.RUnlock()
	if w.s.closed {
		return 0, ErrClosed
	}
	sent := 0
	var first error
	for len(bs) > 0 {
		gso := w.gso.Load()
		n := w.pack(sc, bs, gso)
		// Without waiting first (a short call that does not leave the scheduler); blocking
		// only when the send buffer is full.
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(w.s.fd), uintptr(unsafe.Pointer(&sc.hs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			r, _, e = unix.Syscall6(unix.SYS_SENDMMSG, uintptr(w.s.fd), uintptr(unsafe.Pointer(&sc.hs[0])), uintptr(n), 0, 0, 0)
		}
		switch {
		case e == 0:
			for _, k := range sc.segs[:r] {
				sent += k
				bs = bs[k:]
			}
		case e == unix.EINTR || e == unix.EAGAIN:
			// Interrupted, or the send buffer stayed full for sockTimeout: try again.
			if w.s.closing.Load() {
				return sent, ErrClosed
			}
		case gso && sc.segs[0] > 1 && (e == unix.EIO || e == unix.EINVAL || e == unix.ENOPROTOOPT || e == unix.EOPNOTSUPP):
			w.gso.Store(false) // no segmentation offload here: one message per datagram from now on
		default:
			// The first message was refused: skip its datagrams.
			k := sc.segs[0]
			w.fails.Add(uint64(k))
			if first == nil {
				first = e
			}
			bs = bs[k:]
		}
	}
	return sent, first
}

// shutdown wakes a call blocked on the socket (a reader waiting for datagrams); close still
// has to be called.
func (s *dataSock) shutdown() {
	s.closing.Store(true)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed {
		_ = unix.Shutdown(s.fd, unix.SHUT_RDWR)
	}
}

// recvBuffer returns the socket's receive buffer (SO_RCVBUF halved: the kernel reports twice
// what it grants to data, the rest being its bookkeeping); 0 once closed or on error.
func (s *dataSock) recvBuffer() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0
	}
	n, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		return 0
	}
	return n / 2
}

// setSockBuffers sets a socket's receive and send buffers to buf bytes: forced past
// rmem_max/wmem_max when the process may (root), else as far as the limits allow.
func setSockBuffers(fd, buf int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, buf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, buf)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, buf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, buf)
	}
}
