package demo

import (
	"context"
	"io"
	"testing"
	"time"
)

func TestDemoDiscovery(t *testing.T) {
	rep, err := Run(context.Background(), io.Discard, Options{Nodes: 5, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Peers != 6 || !rep.DiscoveredAll {
		t.Fatalf("demo report: %+v", rep)
	}
	for i, n := range rep.AdvertsPerPeer {
		if n < 6 {
			t.Fatalf("peer %d saw %d peer adverts, want 6", i, n)
		}
	}
}
