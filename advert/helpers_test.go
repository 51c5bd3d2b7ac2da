package advert_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/advert"
)

// t0 is the fixed "now" of the tests (and of the fuzz corpus and golden files).
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// testKey returns a deterministic Ed25519 key derived from seed.
func testKey(t testing.TB, seed byte) (crypto.PrivKey, peer.ID) {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed + byte(i)
	}
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(s))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// fullAdvert returns an advert of kind k with every field set, created at t0.
func fullAdvert(t testing.TB, k advert.Kind, key crypto.PrivKey) *advert.Advert {
	t.Helper()
	a := advert.New(k, "res-"+k.String(), "files/"+k.String()+"/report.pdf", key, time.Hour, t0)
	if k == advert.KindPeer {
		a.ID = a.Publisher.String()
	}
	a.Attrs["size"] = "1048576"
	a.Attrs["group"] = "g1"
	a.Attrs["é"] = "ünïcode"
	a.Addrs = []ma.Multiaddr{
		ma.StringCast("/ip4/127.0.0.1/tcp/4001"),
		ma.StringCast("/ip6/::1/udp/4001/quic-v1"),
	}
	a.Body = []byte{0, 1, 2, 3, 0xff}
	return a
}

func mustSeal(t testing.TB, a *advert.Advert, key crypto.PrivKey) *advert.Signed {
	t.Helper()
	s, err := advert.Seal(a, key)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return s
}
