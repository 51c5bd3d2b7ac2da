package bincodec

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

var errTest = errors.New("test: malformed")

func testPeer(t testing.TB) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRoundTrip(t *testing.T) {
	p1, p2 := testPeer(t), testPeer(t)
	addr := ma.StringCast("/ip4/198.18.0.1/tcp/4001")
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()

	var e Encoder
	e.U8(7)
	e.Uvarint(1 << 40)
	e.Varint(-12345)
	e.Bytes([]byte("abc"))
	e.Str("name")
	e.Peer(p1)
	e.Peer("")
	e.Fixed([]byte("MAGI"))
	e.Bool(true)
	e.Bool(false)
	e.Time(now)
	e.Time(time.Time{})
	e.Addrs([]ma.Multiaddr{addr})
	e.Peers([]peer.ID{p1, p2})
	e.Uint32s([]uint32{0, 5, 999})
	e.Fixed([]byte("tail"))

	d := NewDecoder(e.B, errTest)
	if v := d.U8(); v != 7 {
		t.Errorf("U8 = %d", v)
	}
	if v := d.Uvarint(); v != 1<<40 {
		t.Errorf("Uvarint = %d", v)
	}
	if v := d.Varint(); v != -12345 {
		t.Errorf("Varint = %d", v)
	}
	if v := d.Bytes(8, "bytes"); string(v) != "abc" {
		t.Errorf("Bytes = %q", v)
	}
	if v := d.Str(8, "str"); v != "name" {
		t.Errorf("Str = %q", v)
	}
	if v := d.Peer(); v != p1 {
		t.Errorf("Peer = %s", v)
	}
	if v := d.PeerOpt(); v != "" {
		t.Errorf("PeerOpt = %s", v)
	}
	if v := d.Fixed(4); string(v) != "MAGI" {
		t.Errorf("Fixed = %q", v)
	}
	if a, b := d.Bool(), d.Bool(); !a || b {
		t.Errorf("Bool = %v %v", a, b)
	}
	if v := d.Time(); !v.Equal(now) {
		t.Errorf("Time = %v, want %v", v, now)
	}
	if v := d.Time(); !v.IsZero() {
		t.Errorf("zero Time = %v", v)
	}
	if v := d.Addrs(4, 64); len(v) != 1 || !v[0].Equal(addr) {
		t.Errorf("Addrs = %v", v)
	}
	if v := d.Peers(4, "peers"); !slices.Equal(v, []peer.ID{p1, p2}) {
		t.Errorf("Peers = %v", v)
	}
	if v := d.Uint32s(1000, "slices"); !slices.Equal(v, []uint32{0, 5, 999}) {
		t.Errorf("Uint32s = %v", v)
	}
	if d.Len() != 4 {
		t.Errorf("Len = %d, want 4", d.Len())
	}
	if err := d.Finish(); err == nil || !errors.Is(err, errTest) {
		t.Errorf("Finish with 4 bytes left = %v, want a trailing-bytes error wrapping the sentinel", err)
	}
	d = NewDecoder([]byte("tail"), errTest)
	if rest := d.Rest(); string(rest) != "tail" || d.Finish() != nil {
		t.Errorf("Rest = %q, Finish = %v", rest, d.Finish())
	}
}

func TestEncodeDecode(t *testing.T) {
	b := Encode(func(e *Encoder) { e.Str("x"); e.Uvarint(7) })
	var s string
	var v uint64
	if err := Decode(b, errTest, func(d *Decoder) { s, v = d.Str(4, "s"), d.Uvarint() }); err != nil || s != "x" || v != 7 {
		t.Fatalf("Decode = %q %d %v", s, v, err)
	}
	if err := Decode(b, errTest, func(d *Decoder) { d.Str(4, "s") }); !errors.Is(err, errTest) {
		t.Fatalf("Decode leaving a byte: %v, want a trailing-bytes error", err)
	}
	if err := Decode(nil, errTest, nil); err != nil {
		t.Fatalf("Decode of nothing with no decoder: %v", err)
	}
	if err := Decode(b, errTest, nil); !errors.Is(err, errTest) {
		t.Fatalf("Decode of bytes with no decoder: %v, want an error", err)
	}
}

// TestMalformed: every bound and check fails with the sentinel, sticks, and zeroes later reads.
func TestMalformed(t *testing.T) {
	var long Encoder
	long.Str("too long")
	var many Encoder
	many.Count(3) // three elements announced, none present
	var big Encoder
	big.Uint32s([]uint32{10})
	cases := []struct {
		name string
		in   []byte
		read func(d *Decoder)
	}{
		{"truncated byte", nil, func(d *Decoder) { d.U8() }},
		{"truncated varint", []byte{0x80}, func(d *Decoder) { d.Uvarint() }},
		{"non-minimal varint", []byte{0x81, 0x00}, func(d *Decoder) { d.Uvarint() }},
		{"non-minimal zigzag", []byte{0x82, 0x00}, func(d *Decoder) { d.Varint() }},
		{"overflowing varint", bytes.Repeat([]byte{0xff}, 11), func(d *Decoder) { d.Uvarint() }},
		{"string over its limit", long.B, func(d *Decoder) { d.Str(4, "name") }},
		{"string past the end", []byte{5, 'a'}, func(d *Decoder) { d.Str(64, "name") }},
		{"count past the end", many.B, func(d *Decoder) { d.Count(100, "list") }},
		{"count over its limit", []byte{3, 0, 0, 0}, func(d *Decoder) { d.Count(2, "list") }},
		{"bad bool", []byte{2}, func(d *Decoder) { d.Bool() }},
		{"empty peer", []byte{0}, func(d *Decoder) { d.Peer() }},
		{"garbage peer", []byte{3, 1, 2, 3}, func(d *Decoder) { d.PeerOpt() }},
		{"garbage addr", []byte{1, 2, 0xff, 0xff}, func(d *Decoder) { d.Addrs(4, 64) }},
		{"index out of range", big.B, func(d *Decoder) { d.Uint32s(10, "slices") }},
	}
	for _, c := range cases {
		d := NewDecoder(c.in, errTest)
		c.read(&d)
		err := d.Err()
		if err == nil || !errors.Is(err, errTest) {
			t.Errorf("%s: error %v, want one wrapping the sentinel", c.name, err)
			continue
		}
		if d.Len() != 0 || d.U8() != 0 || d.Str(8, "x") != "" || d.Err() != err || d.Finish() != err {
			t.Errorf("%s: the decoder did not stick to its first error", c.name)
		}
	}
}

// FuzzDecoder: any input decodes to values or an error, never a panic or a large allocation.
func FuzzDecoder(f *testing.F) {
	var e Encoder
	e.Str("seed")
	e.Peers(nil)
	e.Uint32s([]uint32{1, 2})
	f.Add(e.B)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewDecoder(b, errTest)
		_ = d.Str(64, "s")
		_ = d.Peers(16, "peers")
		_ = d.Uint32s(1<<20, "slices")
		_ = d.Addrs(4, 256)
		_ = d.Time()
		if err := d.Finish(); err != nil && !errors.Is(err, errTest) {
			t.Fatalf("error %v does not wrap the sentinel", err)
		}
	})
}
