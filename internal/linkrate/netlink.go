package linkrate

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dumpTC asks the kernel for every qdisc (typ rtmGetQdisc) or class (rtmGetTclass) of
// interface index and returns those of that interface.
func dumpTC(typ uint16, index int) ([]tcObject, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("%w: socket: %w", ErrNetlink, err)
	}
	defer unix.Close(fd)
	// A kernel that never answers must not hang the caller.
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNetlink, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("%w: bind: %w", ErrNetlink, err)
	}
	const seq = 1
	req := make([]byte, unix.NLMSG_HDRLEN+tcmsgLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], typ)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], seq)
	binary.NativeEndian.PutUint32(req[unix.NLMSG_HDRLEN+4:], uint32(int32(index)))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("%w: send: %w", ErrNetlink, err)
	}
	var out []tcObject
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: receive: %w", ErrNetlink, err)
		}
		msgs, err := parseMessages(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
						return nil, fmt.Errorf("%w: %w", ErrNetlink, unix.Errno(-code))
					}
				}
				return out, nil
			}
			o, idx, err := parseTC(m.Data)
			if err != nil {
				return nil, err
			}
			if int(idx) == index {
				out = append(out, o)
			}
		}
	}
}

// parseMessages splits a netlink datagram into its messages (syscall.ParseNetlinkMessage; an
// error wraps ErrNetlink).
func parseMessages(b []byte) ([]syscall.NetlinkMessage, error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNetlink, err)
	}
	return msgs, nil
}
