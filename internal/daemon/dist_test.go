package daemon

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/internal/linkrate"
	"github.com/raftcast/raftcast/peergroup"
	"github.com/raftcast/raftcast/transfer/content"
)

func TestFromCatalogue(t *testing.T) {
	idA, idB := content.ID{1}, content.ID{2}
	t0 := time.Unix(1_700_000_000, 0)
	cat := map[string]peergroup.Content{
		idA.String(): {ID: idA.String(), Name: "f.bin", Source: peer.ID("a"), Added: t0},
		idB.String(): {ID: idB.String(), Name: "f.bin", Source: peer.ID("b"), Added: t0.Add(time.Minute)},
		"bad":        {ID: "not-an-id", Name: "broken", Source: peer.ID("c"), Added: t0},
	}
	for _, tc := range []struct {
		name string
		q    advert.Query
		id   content.ID
		src  peer.ID
		ok   bool
	}{
		{"by ID", advert.Query{ID: idA.String()}, idA, "a", true},
		{"by name: the newest", advert.Query{Name: "f.bin"}, idB, "b", true},
		{"unknown ID", advert.Query{ID: content.ID{3}.String()}, content.ID{}, "", false},
		{"unknown name", advert.Query{Name: "g.bin"}, content.ID{}, "", false},
		{"an entry with a bad ID", advert.Query{Name: "broken"}, content.ID{}, "", false},
	} {
		id, src, ok := fromCatalogue(cat, tc.q)
		if ok != tc.ok || id != tc.id || src != tc.src {
			t.Errorf("%s: got %s %q %v, want %s %q %v", tc.name, id, src, ok, tc.id, tc.src, tc.ok)
		}
	}
}

// A want carries the sender's link rate; a want from an older node (no rate) still decodes,
// and anything else is refused.
func TestCoordMessage(t *testing.T) {
	id := content.ID{1, 2, 3}
	op, got, link, err := decodeCoord(encodeCoord(opWant, id, 100_000_000))
	if err != nil || op != opWant || got != id || link != 100_000_000 {
		t.Fatalf("round trip: %c %v %d %v", op, got, link, err)
	}
	if op, got, _, err := decodeCoord(encodeCoord(opDone, id, 0)); err != nil || op != opDone || got != id {
		t.Fatalf("done: %c %v %v", op, got, err)
	}
	old := append([]byte{opWant}, id[:]...)
	if _, got, link, err = decodeCoord(old); err != nil || got != id || link != 0 {
		t.Fatalf("want without a rate: %v %d %v", got, link, err)
	}
	huge := encodeCoord(opWant, id, 0)
	for i := len(huge) - 8; i < len(huge); i++ {
		huge[i] = 0xff
	}
	if _, _, link, err = decodeCoord(huge); err != nil || link <= 0 {
		t.Fatalf("rate 2^64-1: %d %v, want a positive rate", link, err)
	}
	if _, _, link, err = decodeCoord(encodeCoord(opWant, id, 1)); err != nil || link != 0 {
		t.Fatalf("a 1 bit/s link: %d %v, want 0 (unknown)", link, err)
	}
	for name, b := range map[string][]byte{
		"empty":    nil,
		"short":    old[:10],
		"odd tail": append(old, 1, 2, 3),
		"other op": append([]byte{'X'}, id[:]...),
		"too long": append(encodeCoord(opWant, id, 1), 0),
	} {
		if _, _, _, err := decodeCoord(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// A pass is paced at 96 % of the slowest known link, DefaultRate when none is known.
func TestPaceAt(t *testing.T) {
	for _, c := range []struct {
		r    linkrate.Rate
		want int64
		from string
	}{
		{linkrate.Rate{}, DefaultRate, "default"},
		{linkrate.Rate{Bits: 100_000_000, Source: "shaper"}, 12_000_000, "shaper"},
		{linkrate.Rate{Bits: 1_000_000_000, Source: "link"}, 120_000_000, "link"},
	} {
		if got, from := paceAt(c.r, linkShare); got != c.want || from != c.from {
			t.Errorf("paceAt(%+v, linkShare) = %d %s, want %d %s", c.r, got, from, c.want, c.from)
		}
	}
	// A proxy's relay: 92 %, and DefaultRate scaled alike when no link is known.
	if got, from := paceAt(linkrate.Rate{Bits: 100_000_000, Source: "shaper"}, relayShare); got != 11_500_000 || from != "shaper" {
		t.Errorf("relay pace on 100 Mbit/s = %d %s, want 11500000 shaper", got, from)
	}
	if got, from := paceAt(linkrate.Rate{}, relayShare); got >= DefaultRate || got < DefaultRate*9/10 || from != "default" {
		t.Errorf("relay pace with no link known = %d %s, want a little under DefaultRate %d", got, from, DefaultRate)
	}
}

// The source starts a pass early once every other member of its domain wants the content.
func TestAllWant(t *testing.T) {
	self, a, b, far := peer.ID("self"), peer.ID("a"), peer.ID("b"), peer.ID("far")
	members := []peer.ID{self, a, b, far}
	inDomain := func(p peer.ID) bool { return p != far }
	for _, c := range []struct {
		name  string
		wants map[peer.ID]int64
		want  bool
	}{
		{"nobody", nil, false},
		{"one of two", map[peer.ID]int64{a: 0, self: 0}, false},
		{"both (one link unknown)", map[peer.ID]int64{a: 0, b: 100e6}, true},
		{"only the one outside the domain", map[peer.ID]int64{far: 0}, false},
	} {
		if got := allWant(members, self, inDomain, c.wants); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if allWant([]peer.ID{self, far}, self, inDomain, map[peer.ID]int64{far: 0}) {
		t.Error("no other member in the domain: true, want false (wait out the window)")
	}
}
