package advert_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/raftcast/raftcast/advert"
)

// rawRecord signs arbitrary payload bytes as if they were an advert, to build what Seal
// refuses to build (forged publishers, unknown kinds, oversized payloads).
type rawRecord struct{ payload []byte }

func (r *rawRecord) Domain() string                 { return advert.EnvelopeDomain }
func (r *rawRecord) Codec() []byte                  { return []byte(advert.EnvelopeCodec) }
func (r *rawRecord) MarshalRecord() ([]byte, error) { return r.payload, nil }
func (r *rawRecord) UnmarshalRecord(b []byte) error { r.payload = b; return nil }

func sealRaw(t testing.TB, payload []byte, key crypto.PrivKey) []byte {
	t.Helper()
	env, err := record.Seal(&rawRecord{payload}, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpenEveryKind(t *testing.T) {
	key, pid := testKey(t, 1)
	for _, k := range allKinds {
		t.Run(k.String(), func(t *testing.T) {
			a := fullAdvert(t, k, key)
			s := mustSeal(t, a, key)
			if len(s.Envelope) > advert.MaxEnvelopeSize {
				t.Fatalf("envelope %d bytes", len(s.Envelope))
			}
			got, err := advert.Open(s.Envelope, t0.Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			assertSameAdvert(t, a, got.Advert)
			if got.Advert.Publisher != pid || got.Key() != a.Key() {
				t.Fatalf("key %v, want %v", got.Key(), a.Key())
			}
			if !bytes.Equal(got.Envelope, s.Envelope) {
				t.Fatal("opened envelope bytes differ")
			}
			// libp2p's generic path understands our envelopes through the registered type.
			_, rec, err := record.ConsumeEnvelope(s.Envelope, advert.EnvelopeDomain)
			if err != nil {
				t.Fatalf("record.ConsumeEnvelope: %v", err)
			}
			r, ok := rec.(*advert.Record)
			if !ok || r.Advert.Key() != a.Key() {
				t.Fatalf("ConsumeEnvelope gave %T %v", rec, rec)
			}
		})
	}
}

func TestOpenDoesNotAliasInput(t *testing.T) {
	key, _ := testKey(t, 1)
	s := mustSeal(t, fullAdvert(t, advert.KindContent, key), key)
	buf := bytes.Clone(s.Envelope)
	got, err := advert.Open(buf, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 0
	}
	if !bytes.Equal(got.Envelope, s.Envelope) || !bytes.Equal(got.Advert.Body, []byte{0, 1, 2, 3, 0xff}) {
		t.Fatal("Open kept a reference to its input")
	}
}

func TestNew(t *testing.T) {
	key, pid := testKey(t, 1)
	now := t0.Add(123456 * time.Nanosecond)
	a := advert.New(advert.KindPeer, "", "me", key, 10*time.Minute, now)
	if a.ID != pid.String() || a.Publisher != pid || a.Attrs == nil || len(a.Attrs) != 0 {
		t.Fatalf("New = %+v", a)
	}
	if !a.Created.Equal(t0) || !a.Expires.Equal(t0.Add(10*time.Minute)) || a.Seq != uint64(t0.UnixMilli()) {
		t.Fatalf("times/seq: %v %v %d", a.Created, a.Expires, a.Seq)
	}
	b := advert.New(advert.KindPeer, "", "me", key, 10*time.Minute, now.Add(time.Millisecond))
	if b.Seq <= a.Seq {
		t.Fatal("a later New has no higher Seq")
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSealRejectsWrongKey(t *testing.T) {
	key, _ := testKey(t, 1)
	other, _ := testKey(t, 2)
	a := fullAdvert(t, advert.KindGroup, key)
	if _, err := advert.Seal(a, other); !errors.Is(err, advert.ErrPublisherMismatch) {
		t.Fatalf("Seal with another key = %v", err)
	}
}

func TestSealRejectsOversizedEnvelope(t *testing.T) {
	key, _ := testKey(t, 1)
	a := fullAdvert(t, advert.KindContent, key)
	a.Body = make([]byte, advert.MaxBodySize)
	for i := range advert.MaxAttrs - len(a.Attrs) {
		a.Attrs[strings.Repeat("k", i+1)] = strings.Repeat("v", advert.MaxAttrValueLen)
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("every field is within its own limit: %v", err)
	}
	if _, err := advert.Seal(a, key); !errors.Is(err, advert.ErrTooLarge) {
		t.Fatalf("Seal = %v, want ErrTooLarge", err)
	}
}

// badEnvelopes returns one rejected input per rejection reason, with the sentinel expected.
func badEnvelopes(t testing.TB) []struct {
	name string
	data []byte
	want error
} {
	key, _ := testKey(t, 1)
	attacker, _ := testKey(t, 2)
	good := mustSeal(t, fullAdvert(t, advert.KindContent, key), key)

	// Forged: a valid signature, by the attacker, over an advert claiming key's peer as publisher.
	forged := sealRaw(t, mustMarshal(t, fullAdvert(t, advert.KindContent, key)), attacker)

	// Tampered: one byte of the signed payload flipped (the body's last byte).
	tampered := bytes.Clone(good.Envelope)
	i := bytes.Index(tampered, []byte{0, 1, 2, 3, 0xff})
	if i < 0 {
		t.Fatal("body not found in envelope")
	}
	tampered[i+4] ^= 0x01

	expired := mustSeal(t, advert.New(advert.KindPipe, "p", "pipe", key, time.Second, t0.Add(-time.Hour)), key)

	oversized := sealRaw(t, make([]byte, advert.MaxEnvelopeSize), key)

	unknown := mustMarshal(t, fullAdvert(t, advert.KindContent, key))
	unknown[1] = 77
	unknownKind := sealRaw(t, unknown, key)

	garbage := sealRaw(t, []byte("not an advert"), key)

	nonCanonical := append(bytes.Clone(good.Envelope), 0x38, 0x01) // unknown protobuf field 7

	return []struct {
		name string
		data []byte
		want error
	}{
		{"forged", forged, advert.ErrPublisherMismatch},
		{"tampered", tampered, advert.ErrBadSignature},
		{"expired", expired.Envelope, advert.ErrExpired},
		{"oversized", oversized, advert.ErrTooLarge},
		{"unknown kind", unknownKind, advert.ErrUnknownKind},
		{"garbage payload", garbage, advert.ErrMalformed},
		{"not an envelope", []byte("hello"), advert.ErrMalformed},
		{"empty", nil, advert.ErrMalformed},
		{"non-canonical envelope", nonCanonical, advert.ErrMalformed},
	}
}

func mustMarshal(t testing.TB, a *advert.Advert) []byte {
	t.Helper()
	b, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenRejects(t *testing.T) {
	for _, c := range badEnvelopes(t) {
		t.Run(c.name, func(t *testing.T) {
			s, err := advert.Open(c.data, t0)
			if !errors.Is(err, c.want) || s != nil {
				t.Fatalf("Open = %v, %v; want %v", s, err, c.want)
			}
		})
	}
}

// Every single-byte flip of a valid envelope is rejected, and a flip inside the signed
// payload or the signature is a bad signature.
func TestOpenRejectsEveryByteFlip(t *testing.T) {
	key, _ := testKey(t, 1)
	s := mustSeal(t, fullAdvert(t, advert.KindContent, key), key)
	payload := mustMarshal(t, s.Advert)
	start := bytes.Index(s.Envelope, payload)
	for i := range s.Envelope {
		b := bytes.Clone(s.Envelope)
		b[i] ^= 0x04
		_, err := advert.Open(b, t0)
		if err == nil {
			t.Fatalf("flip at %d accepted", i)
		}
		inPayload := i >= start && i < start+len(payload)
		inSig := i >= len(s.Envelope)-64
		if (inPayload || inSig) && !errors.Is(err, advert.ErrBadSignature) {
			t.Fatalf("flip at %d (payload %v, signature %v): %v, want ErrBadSignature", i, inPayload, inSig, err)
		}
	}
}
