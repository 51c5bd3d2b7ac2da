package peergroup

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// Credential is what a joiner presents: the group secret (PolicySecret) or an invitation
// (PolicyInvite); nothing for PolicyOpen.
type Credential struct {
	Secret     string
	Invitation []byte // as returned by Group.Invite
}

// Secret groups. The secret is stretched into a 32-byte group key with PBKDF2-HMAC-SHA256
// salted with the group ID, so equal secrets give unrelated keys in different groups and a
// guess costs secretKDFIterations hashes. Only members hold the key (in their group.meta file,
// mode 0600); neither the secret nor the key is ever sent, replicated or advertised, and the
// advertisement carries nothing derived from them. Admission is a challenge–response with
// HMACs bound to the nonce, the joiner's peer ID (authenticated by the libp2p connection) and
// the group ID, so a proof cannot be replayed by another peer, in another group or later. The
// joiner proves first and the leader proves back in its acceptance, so an outsider cannot make
// a member hand out anything checkable offline; the residual risk is that a peer the joiner
// chooses to contact (e.g. from a forged advertisement) can run an offline guessing attack on
// the joiner's proof, slowed by the key stretching: use secrets that are hard to guess.
const (
	secretKDFIterations = 100_000
	keyLen              = 32
	nonceLen            = 32
)

func deriveGroupKey(secret, groupID string) ([]byte, error) {
	if secret == "" {
		return nil, fmt.Errorf("%w: empty group secret", ErrWrongSecret)
	}
	return pbkdf2.Key(sha256.New, secret, []byte("raftcast/group-key/v1/"+groupID), secretKDFIterations, keyLen)
}

func proof(key []byte, role string, nonce []byte, who peer.ID, groupID string) []byte {
	m := hmac.New(sha256.New, key)
	var e bincodec.Encoder
	e.Str("raftcast/group-" + role + "-proof/v1")
	e.Bytes(nonce)
	e.Peer(who)
	e.Str(groupID)
	m.Write(e.B)
	return m.Sum(nil)
}

// joinProof is what the joiner answers to the leader's nonce.
func joinProof(key, nonce []byte, joiner peer.ID, groupID string) []byte {
	return proof(key, "join", nonce, joiner, groupID)
}

// leaderProof is what the leader answers to the joiner's nonce, so a joiner never believes it
// joined a group run by someone who does not know the secret.
func leaderProof(key, nonce []byte, leader peer.ID, groupID string) []byte {
	return proof(key, "leader", nonce, leader, groupID)
}

// Invitation admits one peer to one group until it expires. It is signed with the libp2p key
// of the member who issued it; the leader checks the signature, that the issuer is a member,
// that the invitee is the peer at the other end of the join stream, the group and the expiry.
type Invitation struct {
	GroupID string
	Invitee peer.ID
	Expires time.Time
	Issuer  peer.ID
}

const invitationDomain = "raftcast/group-invitation/v1"

func (inv *Invitation) signedBytes() []byte {
	var e bincodec.Encoder
	e.Str(invitationDomain)
	e.Str(inv.GroupID)
	e.Peer(inv.Invitee)
	e.Time(inv.Expires)
	e.Peer(inv.Issuer)
	return e.B
}

// SignInvitation returns an invitation signed with key (whose peer ID becomes the issuer).
func SignInvitation(key crypto.PrivKey, groupID string, invitee peer.ID, expires time.Time) ([]byte, error) {
	issuer, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	inv := Invitation{GroupID: groupID, Invitee: invitee, Expires: expires.UTC().Truncate(time.Millisecond), Issuer: issuer}
	sig, err := key.Sign(inv.signedBytes())
	if err != nil {
		return nil, err
	}
	pub, err := crypto.MarshalPublicKey(key.GetPublic())
	if err != nil {
		return nil, err
	}
	e := bincodec.Encoder{B: inv.signedBytes()}
	e.Bytes(pub)
	e.Bytes(sig)
	return e.B, nil
}

// OpenInvitation decodes an invitation and verifies its signature against the issuer's key.
// It does not check expiry, group, invitee or membership: see check.
func OpenInvitation(b []byte) (*Invitation, error) {
	if len(b) > 8<<10 {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadInvitation, len(b))
	}
	d := bincodec.NewDecoder(b, ErrMalformed)
	if dom := d.Str(64, "domain"); d.Err() == nil && dom != invitationDomain {
		return nil, fmt.Errorf("%w: not an invitation", ErrBadInvitation)
	}
	inv := &Invitation{GroupID: d.Str(maxIDLen, "group ID"), Invitee: d.Peer(), Expires: d.Time(), Issuer: d.Peer()}
	pubBytes := d.Bytes(2<<10, "public key")
	sig := d.Bytes(2<<10, "signature")
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadInvitation, err)
	}
	pub, err := crypto.UnmarshalPublicKey(pubBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: issuer key: %v", ErrBadInvitation, err)
	}
	if !inv.Issuer.MatchesPublicKey(pub) {
		return nil, fmt.Errorf("%w: key is not the issuer's", ErrBadInvitation)
	}
	if ok, err := pub.Verify(inv.signedBytes(), sig); err != nil || !ok {
		return nil, fmt.Errorf("%w: bad signature", ErrBadInvitation)
	}
	return inv, nil
}

// check verifies an opened invitation for a join of joiner to groupID at now.
func (inv *Invitation) check(groupID string, joiner peer.ID, now time.Time) error {
	switch {
	case inv.GroupID != groupID:
		return fmt.Errorf("%w: for group %q, not %q", ErrBadInvitation, inv.GroupID, groupID)
	case inv.Invitee != joiner:
		return fmt.Errorf("%w: for peer %s, not %s", ErrBadInvitation, inv.Invitee, joiner)
	case !now.Before(inv.Expires):
		return fmt.Errorf("%w: expired at %s", ErrBadInvitation, inv.Expires.Format(time.RFC3339))
	}
	return nil
}
