package advert_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/advert"
)

var allKinds = []advert.Kind{advert.KindPeer, advert.KindGroup, advert.KindPipe, advert.KindContent, advert.KindRendezvous}

func TestRoundTripEveryKind(t *testing.T) {
	key, _ := testKey(t, 1)
	for _, k := range allKinds {
		t.Run(k.String(), func(t *testing.T) {
			a := fullAdvert(t, k, key)
			b, err := a.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got advert.Advert
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			assertSameAdvert(t, a, &got)
			b2, err := got.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatal("re-encoding differs")
			}
		})
	}
}

func TestRoundTripMinimal(t *testing.T) {
	key, _ := testKey(t, 1)
	a := advert.New(advert.KindGroup, "g", "", key, time.Minute, t0)
	b, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got advert.Advert
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	assertSameAdvert(t, a, &got)
}

func assertSameAdvert(t *testing.T, want, got *advert.Advert) {
	t.Helper()
	if got.Kind != want.Kind || got.ID != want.ID || got.Name != want.Name || got.Publisher != want.Publisher || got.Seq != want.Seq {
		t.Fatalf("header differs: got %+v want %+v", got, want)
	}
	if !got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) {
		t.Fatalf("times differ: got %v..%v want %v..%v", got.Created, got.Expires, want.Created, want.Expires)
	}
	if len(got.Attrs) != len(want.Attrs) || (len(want.Attrs) > 0 && !reflect.DeepEqual(got.Attrs, want.Attrs)) {
		t.Fatalf("attrs differ: got %v want %v", got.Attrs, want.Attrs)
	}
	if len(got.Addrs) != len(want.Addrs) {
		t.Fatalf("addrs differ: got %v want %v", got.Addrs, want.Addrs)
	}
	for i := range want.Addrs {
		if !got.Addrs[i].Equal(want.Addrs[i]) {
			t.Fatalf("addr %d differs: got %v want %v", i, got.Addrs[i], want.Addrs[i])
		}
	}
	if !bytes.Equal(got.Body, want.Body) {
		t.Fatalf("body differs")
	}
}

func TestMarshalTruncatesToMilliseconds(t *testing.T) {
	key, _ := testKey(t, 1)
	a := advert.New(advert.KindPipe, "p", "n", key, time.Hour, t0)
	a.Created = a.Created.Add(999 * time.Microsecond)
	b, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got advert.Advert
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(t0) {
		t.Fatalf("created %v, want %v", got.Created, t0)
	}
}

func TestValidateRejects(t *testing.T) {
	key, _ := testKey(t, 1)
	other, otherID := testKey(t, 2)
	_ = other
	cases := []struct {
		name   string
		mutate func(a *advert.Advert)
		want   error
		field  string
	}{
		{"unknown kind", func(a *advert.Advert) { a.Kind = 9 }, advert.ErrUnknownKind, "kind"},
		{"zero kind", func(a *advert.Advert) { a.Kind = 0 }, advert.ErrUnknownKind, "kind"},
		{"empty id", func(a *advert.Advert) { a.ID = "" }, advert.ErrMalformed, "id"},
		{"long id", func(a *advert.Advert) { a.ID = strings.Repeat("x", advert.MaxIDLen+1) }, advert.ErrTooLarge, "id"},
		{"long name", func(a *advert.Advert) { a.Name = strings.Repeat("x", advert.MaxNameLen+1) }, advert.ErrTooLarge, "name"},
		{"bad utf8 name", func(a *advert.Advert) { a.Name = "a\xffb" }, advert.ErrMalformed, "name"},
		{"bad utf8 id", func(a *advert.Advert) { a.ID = "\xc0" }, advert.ErrMalformed, "id"},
		{"empty publisher", func(a *advert.Advert) { a.Publisher = "" }, advert.ErrMalformed, "publisher"},
		{"bogus publisher", func(a *advert.Advert) { a.Publisher = "notamultihash" }, advert.ErrMalformed, "publisher"},
		{"peer id mismatch", func(a *advert.Advert) { a.Kind = advert.KindPeer; a.ID = otherID.String() }, advert.ErrMalformed, "peer ID"},
		{"zero created", func(a *advert.Advert) { a.Created = time.Time{} }, advert.ErrMalformed, "created"},
		{"expires before created", func(a *advert.Advert) { a.Expires = a.Created.Add(-time.Second) }, advert.ErrMalformed, "expires"},
		{"expires equals created", func(a *advert.Advert) { a.Expires = a.Created }, advert.ErrMalformed, "expires"},
		{"lifetime too long", func(a *advert.Advert) { a.Expires = a.Created.Add(advert.MaxLifetime + time.Millisecond) }, advert.ErrMalformed, "lifetime"},
		{"too many attrs", func(a *advert.Advert) {
			for i := range advert.MaxAttrs + 1 {
				a.Attrs[string(rune('a'+i%26))+strings.Repeat("k", i)] = "v"
			}
		}, advert.ErrTooLarge, "attrs"},
		{"empty attr key", func(a *advert.Advert) { a.Attrs[""] = "v" }, advert.ErrMalformed, "attr key"},
		{"long attr key", func(a *advert.Advert) { a.Attrs[strings.Repeat("k", advert.MaxAttrKeyLen+1)] = "v" }, advert.ErrTooLarge, "attr key"},
		{"long attr value", func(a *advert.Advert) { a.Attrs["k"] = strings.Repeat("v", advert.MaxAttrValueLen+1) }, advert.ErrTooLarge, "attr k"},
		{"bad utf8 attr value", func(a *advert.Advert) { a.Attrs["k"] = "\xff" }, advert.ErrMalformed, "attr k"},
		{"too many addrs", func(a *advert.Advert) {
			for range advert.MaxAddrs + 1 {
				a.Addrs = append(a.Addrs, ma.StringCast("/ip4/1.2.3.4/tcp/1"))
			}
		}, advert.ErrTooLarge, "addrs"},
		{"big body", func(a *advert.Advert) { a.Body = make([]byte, advert.MaxBodySize+1) }, advert.ErrTooLarge, "body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := fullAdvert(t, advert.KindContent, key)
			c.mutate(a)
			err := a.Validate()
			if !errors.Is(err, c.want) {
				t.Fatalf("Validate = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %q does not name field %q", err, c.field)
			}
			if _, err := a.MarshalBinary(); !errors.Is(err, c.want) {
				t.Fatalf("MarshalBinary = %v, want %v", err, c.want)
			}
			if _, err := advert.Seal(a, key); !errors.Is(err, c.want) {
				t.Fatalf("Seal = %v, want %v", err, c.want)
			}
		})
	}
}

// encodeRaw builds a wire encoding by hand so the decoder can be fed what the encoder
// refuses to produce.
type rawAdvert struct {
	version, kind byte
	id, name, pub string
	seq, cr, ex   uint64
	attrs         [][2]string
	addrs         [][]byte
	body          []byte
}

func (r rawAdvert) encode() []byte {
	str := func(b []byte, s string) []byte { return append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	b := []byte{r.version, r.kind}
	b = str(b, r.id)
	b = str(b, r.name)
	b = str(b, r.pub)
	b = binary.AppendUvarint(b, r.seq)
	b = binary.AppendUvarint(b, r.cr)
	b = binary.AppendUvarint(b, r.ex)
	b = binary.AppendUvarint(b, uint64(len(r.attrs)))
	for _, kv := range r.attrs {
		b = str(b, kv[0])
		b = str(b, kv[1])
	}
	b = binary.AppendUvarint(b, uint64(len(r.addrs)))
	for _, m := range r.addrs {
		b = str(b, string(m))
	}
	return str(b, string(r.body))
}

func TestUnmarshalStrict(t *testing.T) {
	key, pid := testKey(t, 1)
	_ = key
	ms := uint64(t0.UnixMilli())
	good := rawAdvert{version: 1, kind: byte(advert.KindContent), id: "c1", name: "n", pub: string(pid), seq: 7, cr: ms, ex: ms + 1000,
		attrs: [][2]string{{"a", "1"}, {"b", "2"}}, addrs: [][]byte{ma.StringCast("/ip4/127.0.0.1/tcp/1").Bytes()}, body: []byte("x")}
	var a advert.Advert
	if err := a.UnmarshalBinary(good.encode()); err != nil {
		t.Fatalf("good encoding rejected: %v", err)
	}
	cases := []struct {
		name string
		b    func() []byte
		want error
	}{
		{"empty", func() []byte { return nil }, advert.ErrMalformed},
		{"bad version", func() []byte { r := good; r.version = 2; return r.encode() }, advert.ErrMalformed},
		{"unknown kind", func() []byte { r := good; r.kind = 42; return r.encode() }, advert.ErrUnknownKind},
		{"trailing byte", func() []byte { return append(good.encode(), 0) }, advert.ErrMalformed},
		{"truncated", func() []byte { b := good.encode(); return b[:len(b)-1] }, advert.ErrMalformed},
		{"unsorted attrs", func() []byte { r := good; r.attrs = [][2]string{{"b", "2"}, {"a", "1"}}; return r.encode() }, advert.ErrMalformed},
		{"duplicate attrs", func() []byte { r := good; r.attrs = [][2]string{{"a", "1"}, {"a", "2"}}; return r.encode() }, advert.ErrMalformed},
		{"bad utf8 name", func() []byte { r := good; r.name = "\xff"; return r.encode() }, advert.ErrMalformed},
		{"long name", func() []byte { r := good; r.name = strings.Repeat("n", advert.MaxNameLen+1); return r.encode() }, advert.ErrTooLarge},
		{"huge body length", func() []byte {
			b := good.encode()
			b = b[:len(b)-2] // drop body length and body
			return binary.AppendUvarint(b, 1<<62)
		}, advert.ErrTooLarge},
		{"huge attr count", func() []byte {
			r := good
			r.attrs = nil
			b := r.encode()
			i := bytes.LastIndex(b, []byte{0, 1}) // attrs count 0, addrs count 1
			return append(append(append([]byte{}, b[:i]...), binary.AppendUvarint(nil, 1<<40)...), b[i+1:]...)
		}, advert.ErrTooLarge},
		{"non-minimal varint", func() []byte {
			r := good
			r.id = ""
			b := r.encode()
			// replace the id length 0x00 by the non-minimal 0x80 0x00
			return append(append(append([]byte{}, b[:2]...), 0x80, 0x00), b[3:]...)
		}, advert.ErrMalformed},
		{"bad multiaddr", func() []byte { r := good; r.addrs = [][]byte{{0xff, 0xff}}; return r.encode() }, advert.ErrMalformed},
		{"empty multiaddr", func() []byte { r := good; r.addrs = [][]byte{{}}; return r.encode() }, advert.ErrMalformed},
		{"zero created", func() []byte { r := good; r.cr = 0; return r.encode() }, advert.ErrMalformed},
		{"time overflow", func() []byte { r := good; r.ex = 1 << 63; return r.encode() }, advert.ErrMalformed},
		{"expires before created", func() []byte { r := good; r.ex = r.cr - 1; return r.encode() }, advert.ErrMalformed},
		{"bogus publisher", func() []byte { r := good; r.pub = "xyz"; return r.encode() }, advert.ErrMalformed},
		{"empty id", func() []byte { r := good; r.id = ""; return r.encode() }, advert.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := a
			err := a.UnmarshalBinary(c.b())
			if !errors.Is(err, c.want) {
				t.Fatalf("UnmarshalBinary = %v, want %v", err, c.want)
			}
			if !reflect.DeepEqual(before, a) {
				t.Fatal("advert modified by a failed UnmarshalBinary")
			}
		})
	}
}

func TestReason(t *testing.T) {
	for err, want := range map[error]string{
		nil:                         "",
		advert.ErrMalformed:         "malformed",
		advert.ErrTooLarge:          "too_large",
		advert.ErrBadSignature:      "bad_signature",
		advert.ErrPublisherMismatch: "publisher_mismatch",
		advert.ErrExpired:           "expired",
		advert.ErrStale:             "stale",
		advert.ErrUnknownKind:       "unknown_kind",
		errors.New("x"):             "other",
	} {
		wrapped := err
		if err != nil {
			wrapped = errors.Join(errors.New("ctx"), err)
		}
		if got := advert.Reason(wrapped); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}
