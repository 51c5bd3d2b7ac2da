package demo

import (
	"context"
	"io"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	rep, err := Run(context.Background(), io.Discard, Options{Nodes: 5, FileSize: 8 << 20, Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Peers != 6 || !rep.DiscoveredAll {
		t.Fatalf("discovery: %+v", rep)
	}
	for i, n := range rep.AdvertsPerPeer {
		if n < 6 {
			t.Fatalf("peer %d saw %d peer adverts, want 6", i, n)
		}
	}
	if rep.Members != 5 || rep.Leader == "" {
		t.Fatalf("group: %+v", rep)
	}
	if rep.DownloadMembers < 3 || rep.OriginRatio > 1.1 {
		t.Fatalf("download: %+v", rep)
	}
	if rep.Receivers != 4 || rep.ReceivedOK != 4 || rep.BytesPeers+rep.BytesSource+rep.BytesMcast != 4*rep.FileSize {
		t.Fatalf("distribution: %+v", rep)
	}
}
