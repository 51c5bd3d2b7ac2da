package pipes

import (
	"encoding/binary"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/zeebo/blake3"
)

// Signed messages: propagate-pipe messages (over multicast and gossipsub alike) and multicast
// beacons.
//
//	version  byte     = 1
//	type     byte     (1 propagate, 2 beacon)
//	propagate: pipe bytes, sender bytes, seq uvarint, key bytes, payload bytes
//	beacon:    sender bytes, unix-ms uvarint, key bytes
//	sig      bytes    signature by sender's key over context || BLAKE3-256(all bytes above)
//
// "bytes" is a uvarint length and the bytes. key is empty when the sender's public key is
// inlined in its peer ID (Ed25519); otherwise it is the marshalled public key, which must
// hash to sender. Signing a 32-byte digest keeps the cost per message independent of size.
const (
	msgPropagate byte = 1
	msgBeacon    byte = 2
)

const (
	propagateSigContext = "raftcast/pipe/propagate/v1\x00"
	beaconSigContext    = "raftcast/pipe/beacon/v1\x00"
	maxSigSize          = 1024
	maxKeySize          = 1024
	maxPeerIDSize       = 128
)

// signedMsg is a decoded signed message; its fields alias the received bytes.
type signedMsg struct {
	Type    byte
	Pipe    string
	Sender  peer.ID
	Seq     uint64 // propagate: sequence number; beacon: sender's clock in Unix milliseconds
	Key     []byte
	Payload []byte
	signed  []byte // the bytes the signature covers
	sig     []byte
}

// signer signs messages as this node.
type signer struct {
	self peer.ID
	priv crypto.PrivKey
	key  []byte // marshalled public key when not inlined in the peer ID
}

func newSigner(self peer.ID, priv crypto.PrivKey) (*signer, error) {
	sg := &signer{self: self, priv: priv}
	if _, err := self.ExtractPublicKey(); err != nil {
		k, err := crypto.MarshalPublicKey(priv.GetPublic())
		if err != nil {
			return nil, fmt.Errorf("pipes: marshal public key: %w", err)
		}
		sg.key = k
	}
	return sg, nil
}

// propagate encodes and signs a propagate message.
func (sg *signer) propagate(pipe string, seq uint64, payload []byte) ([]byte, error) {
	b := make([]byte, 0, len(payload)+len(pipe)+len(sg.self)+len(sg.key)+128)
	b = append(b, wireVersion, msgPropagate)
	b = appendBytes(b, []byte(pipe))
	b = appendBytes(b, []byte(sg.self))
	b = binary.AppendUvarint(b, seq)
	b = appendBytes(b, sg.key)
	b = appendBytes(b, payload)
	return sg.seal(b, propagateSigContext)
}

// beacon encodes and signs a beacon.
func (sg *signer) beacon(unixMilli uint64) ([]byte, error) {
	b := make([]byte, 0, 256)
	b = append(b, wireVersion, msgBeacon)
	b = appendBytes(b, []byte(sg.self))
	b = binary.AppendUvarint(b, unixMilli)
	b = appendBytes(b, sg.key)
	return sg.seal(b, beaconSigContext)
}

func (sg *signer) seal(b []byte, context string) ([]byte, error) {
	sig, err := sg.priv.Sign(sigInput(context, b))
	if err != nil {
		return nil, fmt.Errorf("pipes: sign: %w", err)
	}
	return appendBytes(b, sig), nil
}

func sigInput(context string, signed []byte) []byte {
	d := blake3.Sum256(signed)
	return append([]byte(context), d[:]...)
}

// decodeSigned parses a signed message without verifying it; maxPayload bounds the payload.
func decodeSigned(b []byte, maxPayload int) (*signedMsg, error) {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != wireVersion {
		return nil, fmt.Errorf("%w: version %d", ErrMalformed, v)
	}
	m := &signedMsg{Type: d.byte()}
	switch m.Type {
	case msgPropagate:
		m.Pipe = string(d.bytes(256))
		m.Sender = peer.ID(d.bytes(maxPeerIDSize))
		m.Seq = d.uvarint()
		m.Key = d.bytes(maxKeySize)
		m.Payload = d.bytes(maxPayload)
	case msgBeacon:
		m.Sender = peer.ID(d.bytes(maxPeerIDSize))
		m.Seq = d.uvarint()
		m.Key = d.bytes(maxKeySize)
	default:
		if d.err == nil {
			return nil, fmt.Errorf("%w: message type %d", ErrMalformed, m.Type)
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	m.signed = b[:len(b)-len(d.b)]
	m.sig = d.bytes(maxSigSize)
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	if err := m.Sender.Validate(); err != nil {
		return nil, fmt.Errorf("%w: sender: %v", ErrMalformed, err)
	}
	if m.Type == msgPropagate && m.Pipe == "" {
		return nil, fmt.Errorf("%w: empty pipe ID", ErrMalformed)
	}
	return m, nil
}

// verify checks the signature and that the signing key is the sender's.
func (m *signedMsg) verify() error {
	var pub crypto.PubKey
	var err error
	if len(m.Key) > 0 {
		if pub, err = crypto.UnmarshalPublicKey(m.Key); err != nil {
			return fmt.Errorf("%w: public key: %v", ErrForged, err)
		}
		if !m.Sender.MatchesPublicKey(pub) {
			return fmt.Errorf("%w: key is not the sender's", ErrForged)
		}
	} else if pub, err = m.Sender.ExtractPublicKey(); err != nil {
		return fmt.Errorf("%w: no key for sender %s: %v", ErrForged, m.Sender, err)
	}
	context := propagateSigContext
	if m.Type == msgBeacon {
		context = beaconSigContext
	}
	ok, err := pub.Verify(sigInput(context, m.signed), m.sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: from %s", ErrForged, m.Sender)
	}
	return nil
}
