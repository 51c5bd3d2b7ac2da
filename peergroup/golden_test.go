package peergroup

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedPeers returns n peer IDs from fixed Ed25519 seeds (stable across runs).
func fixedPeers(t testing.TB, n int) []peer.ID {
	out := make([]peer.ID, n)
	for i := range out {
		seed := bytes.Repeat([]byte{byte(i + 1)}, 32)
		_, pub, err := crypto.GenerateEd25519Key(bytes.NewReader(seed))
		if err != nil {
			t.Fatal(err)
		}
		out[i], _ = peer.IDFromPublicKey(pub)
	}
	return out
}

// TestGoldenWireFormats pins the encodings of commands, the group info and snapshots: a
// change here is a wire or disk format change and needs a version bump.
func TestGoldenWireFormats(t *testing.T) {
	ps := fixedPeers(t, 3)
	var lines []string
	for _, c := range sampleCommands(ps) {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, c.Kind().String()+" "+hex.EncodeToString(b))
	}
	gi := GroupInfo{ID: "0123456789abcdef01234567", Name: "films", Policy: PolicySecret, Creator: ps[0], Created: t0,
		Members: 3, Capacity: 30, Domains: []string{"lan1"},
		Contacts: []peer.AddrInfo{{ID: ps[0], Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")}}}}
	lines = append(lines, "group-info "+hex.EncodeToString(EncodeGroupInfo(gi)))

	f := newFSM(nil)
	for _, c := range sampleCommands(ps) {
		if c.Kind() != KindTaskRemove && c.Kind() != KindContentRemove && c.Kind() != KindProxyDrop {
			_ = applyAt(t, f, 3, c)
		}
	}
	lines = append(lines, "snapshot "+hex.EncodeToString(marshalFSM(f)))
	got := strings.Join(lines, "\n") + "\n"

	path := filepath.Join("testdata", "wire.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("wire formats changed (run with -update if intended, and bump the version):\n got:\n%s\nwant:\n%s", got, want)
	}
}

func FuzzDecodeGroupInfo(f *testing.F) {
	ps := fixedPeers(f, 1)
	f.Add(EncodeGroupInfo(GroupInfo{ID: "ab", Name: "n", Policy: PolicyOpen, Creator: ps[0], Contacts: []peer.AddrInfo{{ID: ps[0]}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		gi, err := DecodeGroupInfo(b)
		if err != nil {
			return
		}
		back, err := DecodeGroupInfo(EncodeGroupInfo(gi))
		if err != nil || back.ID != gi.ID || len(back.Contacts) != len(gi.Contacts) {
			t.Fatalf("re-encoding changed the info: %v", err)
		}
	})
}

func FuzzUnmarshalState(f *testing.F) {
	ps := fixedPeers(f, 3)
	fs := newFSM(nil)
	for _, c := range sampleCommands(ps) {
		b, _ := EncodeCommand(c)
		_ = applyRaw(fs, 3, b)
	}
	f.Add(marshalFSM(fs))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := unmarshalState(b)
		if err != nil {
			return
		}
		if _, err := unmarshalState(s.marshal()); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
	})
}

func FuzzOpenInvitation(f *testing.F) {
	k, _, _ := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{9}, 32)))
	inv, _ := SignInvitation(k, "ab", fixedPeers(f, 1)[0], t0)
	f.Add(inv)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = OpenInvitation(b) // must not panic; signature checks reject forgeries
	})
}
