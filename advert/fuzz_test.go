package advert_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/raftcast/raftcast/advert"
)

// sentinels are the errors every rejection must wrap.
var sentinels = []error{advert.ErrUnknownKind, advert.ErrMalformed, advert.ErrTooLarge, advert.ErrBadSignature,
	advert.ErrPublisherMismatch, advert.ErrExpired, advert.ErrStale}

func wrapsSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func FuzzUnmarshal(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var a advert.Advert
		err := a.UnmarshalBinary(b)
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("decoded advert does not validate: %v", err)
		}
		out, err := a.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded advert does not re-encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, out)
		}
	})
}

func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := advert.Open(b, t0)
		if err != nil {
			if s != nil {
				t.Fatal("Signed returned with an error")
			}
			if !wrapsSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if !bytes.Equal(s.Envelope, b) {
			t.Fatal("Envelope is not the input")
		}
		if s.Advert.Expired(t0) {
			t.Fatal("expired advert opened")
		}
		payload, err := s.Advert.MarshalBinary()
		if err != nil {
			t.Fatalf("opened advert does not re-encode: %v", err)
		}
		if !bytes.Contains(b, payload) {
			t.Fatal("re-encoded advert is not the signed payload")
		}
		var r advert.Record
		if err := r.UnmarshalRecord(payload); err != nil {
			t.Fatal(err)
		}
		if again, err := advert.Open(s.Envelope, t0); err != nil || again.Key() != s.Key() {
			t.Fatalf("re-open: %v", err)
		}
	})
}

func FuzzQueryUnmarshal(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var q advert.Query
		err := q.UnmarshalBinary(b)
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		out, err := q.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded query does not re-encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, out)
		}
	})
}
