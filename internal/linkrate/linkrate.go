// Package linkrate tells how fast a network interface can send, as its host knows it: the rate
// of a traffic shaper on its egress (a tc htb or tbf root qdisc), else the speed its physical
// link negotiated. The multicast source paces a pass at a share of the slowest such rate among
// itself and the receivers that want the content, when the user gives no --rate.
//
// It does not probe the path: a bottleneck beyond the hosts' own links (a slower switch uplink)
// is not seen. Virtual interfaces (veth, bridges, tunnels) report speeds that mean nothing and
// count as unknown unless shaped.
package linkrate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Rate is what is known of an interface's sending rate.
type Rate struct {
	Bits   int64  // bits per second; 0 when unknown
	Source string // "shaper", "link" or "" (unknown)
}

// Of returns the rate of the interface named name: its egress shaper's, else its physical
// link's speed. An interface with neither has Rate{} and no error; errors are for reading.
func Of(name string) (Rate, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return Rate{}, fmt.Errorf("linkrate: %w", err)
	}
	shaper, err := shaperRate(ifi.Index)
	if err != nil {
		return Rate{}, err
	}
	nic := linkSpeed(name)
	switch {
	case shaper > 0 && (nic == 0 || shaper <= nic):
		return Rate{Bits: shaper, Source: "shaper"}, nil
	case nic > 0:
		return Rate{Bits: nic, Source: "link"}, nil
	}
	return Rate{}, nil
}

// Min returns the slowest of the known rates among rs (Rate{} if none is known).
func Min(rs ...Rate) Rate {
	var out Rate
	for _, r := range rs {
		if r.Bits > 0 && (out.Bits == 0 || r.Bits < out.Bits) {
			out = r
		}
	}
	return out
}

// sysNet is where Linux describes network interfaces.
const sysNet = "/sys/class/net"

// linkSpeed is the negotiated speed of a physical interface in bits/s (0: virtual, down or
// unknown). Only interfaces backed by a device count: a veth says 10000 Mbit/s whatever
// carries it.
func linkSpeed(name string) int64 {
	if _, err := os.Stat(filepath.Join(sysNet, name, "device")); err != nil {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(sysNet, name, "speed"))
	if err != nil { // EINVAL while the link is down
		return 0
	}
	mbit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || mbit <= 0 {
		return 0
	}
	return mbit * 1_000_000
}

// ErrNetlink wraps failures to talk to the kernel's routing netlink.
var ErrNetlink = errors.New("linkrate: netlink")

// shaperRate is the egress rate cap of interface index in bits/s from its root qdisc: a tbf's
// rate, or the largest ceiling among an htb's top-level classes (0: no such shaper).
func shaperRate(index int) (int64, error) {
	qdiscs, err := dumpTC(rtmGetQdisc, index)
	if err != nil {
		return 0, err
	}
	for _, q := range qdiscs {
		if q.parent != tcHRoot {
			continue
		}
		switch q.kind {
		case "tbf":
			return tbfRate(q.options), nil
		case "htb":
			classes, err := dumpTC(rtmGetTclass, index)
			if err != nil {
				return 0, err
			}
			var most int64
			for _, c := range classes {
				// A top-level class: the kernel reports its parent as the root.
				if c.kind == "htb" && (c.parent == tcHRoot || c.parent == q.handle) && c.handle>>16 == q.handle>>16 {
					most = max(most, htbCeil(c.options))
				}
			}
			return most, nil
		}
	}
	return 0, nil
}

// Kernel constants (linux/rtnetlink.h, linux/pkt_sched.h).
const (
	rtmGetQdisc  = 0x26
	rtmGetTclass = 0x2a
	tcaKind      = 1
	tcaOptions   = 2
	tcHRoot      = 0xffffffff

	tcaHTBParms  = 1
	tcaHTBCeil64 = 7
	tcaTBFParms  = 1
	tcaTBFRate64 = 4

	tcmsgLen     = 20 // family, pads, ifindex, handle, parent, info
	rateSpecLen  = 12 // struct tc_ratespec; its rate (u32, bytes/s) is at offset 8
	htbOptCeilAt = rateSpecLen + 8
)

// tcObject is a qdisc or class as netlink describes it.
type tcObject struct {
	handle, parent uint32
	kind           string
	options        map[uint16][]byte
}

// htbCeil is an htb class's ceiling in bits/s.
func htbCeil(opts map[uint16][]byte) int64 {
	if b := opts[tcaHTBCeil64]; len(b) >= 8 {
		return int64(binary.NativeEndian.Uint64(b)) * 8
	}
	if b := opts[tcaHTBParms]; len(b) >= htbOptCeilAt+4 {
		return int64(binary.NativeEndian.Uint32(b[htbOptCeilAt:])) * 8
	}
	return 0
}

// tbfRate is a tbf qdisc's rate in bits/s.
func tbfRate(opts map[uint16][]byte) int64 {
	if b := opts[tcaTBFRate64]; len(b) >= 8 {
		return int64(binary.NativeEndian.Uint64(b)) * 8
	}
	if b := opts[tcaTBFParms]; len(b) >= rateSpecLen {
		return int64(binary.NativeEndian.Uint32(b[8:])) * 8
	}
	return 0
}

// parseTC decodes one RTM_NEWQDISC/RTM_NEWTCLASS message body (struct tcmsg, attributes).
func parseTC(body []byte) (tcObject, int32, error) {
	if len(body) < tcmsgLen {
		return tcObject{}, 0, fmt.Errorf("%w: short tc message (%d bytes)", ErrNetlink, len(body))
	}
	o := tcObject{
		handle: binary.NativeEndian.Uint32(body[8:]),
		parent: binary.NativeEndian.Uint32(body[12:]),
	}
	index := int32(binary.NativeEndian.Uint32(body[4:]))
	attrs, err := parseAttrs(body[tcmsgLen:])
	if err != nil {
		return o, index, err
	}
	o.kind = strings.TrimRight(string(attrs[tcaKind]), "\x00")
	if b, ok := attrs[tcaOptions]; ok {
		if o.options, err = parseAttrs(b); err != nil {
			return o, index, err
		}
	}
	return o, index, nil
}

// parseAttrs decodes a run of netlink attributes (struct rtattr: length u16, type u16, data
// padded to 4 bytes). Nested and byte-order flags are cleared from the types.
func parseAttrs(b []byte) (map[uint16][]byte, error) {
	out := map[uint16][]byte{}
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & 0x3fff
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("%w: bad attribute length %d of %d", ErrNetlink, l, len(b))
		}
		out[typ] = b[4:l]
		b = b[min(len(b), (l+3)&^3):]
	}
	return out, nil
}
