package swarm

import (
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/transfer/store"
)

func benchPlanner(n int) (*Planner, []Request) {
	pl := testPlanner(n)
	pl.AddPeer("src", true)
	pl.SetHave("src", store.FullBitmap(n))
	for k := 0; k < 4; k++ {
		p := peer.ID(fmt.Sprint("p", k))
		pl.AddPeer(p, false)
		h := store.NewBitmap(n)
		for i := k; i < n; i += 3 {
			h.Set(i)
		}
		pl.SetHave(p, h)
	}
	for i := 0; i < n/2; i++ {
		pl.Have(i)
	}
	return pl, pl.Next(t0)
}

// BenchmarkPlannerNext measures answering one slice and planning the next request, half way
// through a transfer of n slices from a source and four peers.
func BenchmarkPlannerNext(b *testing.B) {
	for _, n := range []int{1024, 40960} {
		b.Run(fmt.Sprintf("slices=%d", n), func(b *testing.B) {
			pl, reqs := benchPlanner(n)
			for b.Loop() {
				if len(reqs) == 0 {
					b.StopTimer()
					pl, reqs = benchPlanner(n)
					b.StartTimer()
				}
				r := reqs[0]
				pl.Done(r.Peer, r.Index)
				reqs = append(reqs[1:], pl.Next(t0)...)
			}
		})
	}
}
