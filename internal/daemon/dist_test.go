package daemon

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/advert"
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
