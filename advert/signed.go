package advert

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	recpb "github.com/libp2p/go-libp2p/core/record/pb"
	"google.golang.org/protobuf/proto"
)

func init() {
	record.RegisterType(&Record{})
}

// Record adapts an Advert to libp2p's record.Record so it can travel in a signed envelope
// (record.Seal, record.ConsumeEnvelope). Most code should use Seal and Open instead, which
// add the publisher binding, limits and expiry checks.
type Record struct {
	Advert Advert
}

var _ record.Record = (*Record)(nil)

// Domain returns EnvelopeDomain.
func (r *Record) Domain() string { return EnvelopeDomain }

// Codec returns EnvelopeCodec as bytes.
func (r *Record) Codec() []byte { return []byte(EnvelopeCodec) }

// MarshalRecord returns the advert's canonical encoding.
func (r *Record) MarshalRecord() ([]byte, error) { return r.Advert.MarshalBinary() }

// UnmarshalRecord decodes the advert's canonical encoding strictly.
func (r *Record) UnmarshalRecord(b []byte) error { return r.Advert.UnmarshalBinary(b) }

// Signed is a verified (or freshly sealed) advertisement and the exact envelope bytes that
// carry it, which is what goes on the wire and to disk. Both are shared: do not modify them.
type Signed struct {
	Advert   *Advert
	Envelope []byte
}

// Key returns the key of the signed advertisement.
func (s *Signed) Key() Key { return s.Advert.Key() }

// New returns an advertisement of the given kind published by key's peer, created at now
// (truncated to the millisecond) and expiring ttl later, with Seq set to now in Unix
// milliseconds so that a republished advertisement supersedes the previous one, and empty
// Attrs. For KindPeer pass id "" (or the peer ID): the ID is set to the publisher's peer ID.
// It panics only if key is unusable (no peer ID can be derived from it).
func New(kind Kind, id, name string, key crypto.PrivKey, ttl time.Duration, now time.Time) *Advert {
	pid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		panic(fmt.Sprintf("advert.New: no peer ID from key: %v", err))
	}
	if kind == KindPeer && id == "" {
		id = pid.String()
	}
	created := time.UnixMilli(now.UnixMilli()).UTC()
	return &Advert{
		Kind:      kind,
		ID:        id,
		Name:      name,
		Publisher: pid,
		Seq:       uint64(created.UnixMilli()),
		Created:   created,
		Expires:   created.Add(ttl.Truncate(time.Millisecond)),
		Attrs:     map[string]string{},
	}
}

// Seal validates a, checks that key belongs to a.Publisher and signs a's canonical encoding
// in a libp2p envelope. The returned Signed holds the advert as a receiver will decode it
// (times truncated to milliseconds), not a itself.
func Seal(a *Advert, key crypto.PrivKey) (*Signed, error) {
	payload, err := a.MarshalBinary()
	if err != nil {
		return nil, err
	}
	pid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("advert: seal: peer ID of signing key: %w", err)
	}
	if pid != a.Publisher {
		return nil, fmt.Errorf("%w: signing key is %s, publisher is %s", ErrPublisherMismatch, pid, a.Publisher)
	}
	decoded, err := decodeAdvert(payload)
	if err != nil {
		return nil, fmt.Errorf("advert: seal: own encoding does not decode (bug): %w", err)
	}
	env, err := record.Seal(&Record{Advert: *decoded}, key)
	if err != nil {
		return nil, fmt.Errorf("advert: seal: %w", err)
	}
	data, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("advert: seal: marshal envelope: %w", err)
	}
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: envelope is %d bytes (max %d)", ErrTooLarge, len(data), MaxEnvelopeSize)
	}
	return &Signed{Advert: decoded, Envelope: data}, nil
}

// Open verifies a signed envelope received from anywhere and returns the advertisement in it.
// It checks, in this order: the size (ErrTooLarge), that the envelope parses and carries an
// advertisement (ErrMalformed), the signature over the received payload (ErrBadSignature),
// that the envelope is in canonical form (ErrMalformed), that the signer is the advert's
// publisher (ErrPublisherMismatch), the advert's structure and limits (ErrMalformed,
// ErrTooLarge, ErrUnknownKind) and its expiry at now (ErrExpired). It never panics and never
// keeps a reference to data.
func Open(data []byte, now time.Time) (s *Signed, err error) {
	defer func() {
		if p := recover(); p != nil {
			s, err = nil, fmt.Errorf("%w: envelope: decoder panic: %v", ErrMalformed, p)
		}
	}()
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: envelope is %d bytes (max %d)", ErrTooLarge, len(data), MaxEnvelopeSize)
	}
	var env recpb.Envelope
	if err := proto.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.PublicKey == nil {
		return nil, fmt.Errorf("%w: envelope: no public key", ErrMalformed)
	}
	pub, err := crypto.PublicKeyFromProto(env.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: envelope: public key: %v", ErrMalformed, err)
	}
	if string(env.PayloadType) != EnvelopeCodec {
		return nil, fmt.Errorf("%w: envelope: payload type %q is not %q", ErrMalformed, env.PayloadType, EnvelopeCodec)
	}
	ok, err := pub.Verify(signedBytes(env.PayloadType, env.Payload), env.Signature)
	if err != nil || !ok {
		return nil, fmt.Errorf("%w (verify: %v)", ErrBadSignature, err)
	}
	canon, err := proto.Marshal(&recpb.Envelope{
		PublicKey:   env.PublicKey,
		PayloadType: env.PayloadType,
		Payload:     env.Payload,
		Signature:   env.Signature,
	})
	if err != nil || !bytes.Equal(canon, data) {
		return nil, fmt.Errorf("%w: envelope is not in canonical form", ErrMalformed)
	}
	signer, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: envelope: signer peer ID: %v", ErrMalformed, err)
	}
	a, err := decodeAdvert(env.Payload)
	if err != nil {
		return nil, err
	}
	if signer != a.Publisher {
		return nil, fmt.Errorf("%w: signed by %s, publisher claims %s", ErrPublisherMismatch, signer, a.Publisher)
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	if a.Expired(now) {
		return nil, fmt.Errorf("%w: %s expired at %v (now %v)", ErrExpired, a.Key(), a.Expires, now.UTC())
	}
	return &Signed{Advert: a, Envelope: bytes.Clone(data)}, nil
}

// signedBytes is what a libp2p envelope signature covers: the domain, the payload type and
// the payload, each prefixed with its uvarint length (see core/record's makeUnsigned).
func signedBytes(payloadType, payload []byte) []byte {
	b := make([]byte, 0, 3*binary.MaxVarintLen64+len(EnvelopeDomain)+len(payloadType)+len(payload))
	b = appendString(b, EnvelopeDomain)
	b = appendBytes(b, payloadType)
	return appendBytes(b, payload)
}
