package advert_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/raftcast/raftcast/advert"
)

func BenchmarkMarshal(b *testing.B) {
	key, _ := testKey(b, 1)
	a := fullAdvert(b, advert.KindContent, key)
	for b.Loop() {
		if _, err := a.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	key, _ := testKey(b, 1)
	data := mustMarshal(b, fullAdvert(b, advert.KindContent, key))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var a advert.Advert
		if err := a.UnmarshalBinary(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	key, _ := testKey(b, 1)
	a := fullAdvert(b, advert.KindContent, key)
	for b.Loop() {
		if _, err := advert.Seal(a, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	key, _ := testKey(b, 1)
	s := mustSeal(b, fullAdvert(b, advert.KindContent, key), key)
	b.SetBytes(int64(len(s.Envelope)))
	for b.Loop() {
		if _, err := advert.Open(s.Envelope, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheAdd adds distinct adverts (each Open'ed and stored) to a cache bounded at
// 10000 entries, so after the first 10000 every Add also evicts.
func BenchmarkCacheAdd(b *testing.B) {
	key, _ := testKey(b, 1)
	const n = 20000
	envs := make([][]byte, n)
	for i := range envs {
		envs[i] = sealed(b, key, advert.KindContent, fmt.Sprint("c", i), "n", time.Duration(1+i%10000)*time.Minute, t0).Envelope
	}
	clk := newClock(t0)
	c := newCache(b, clk, "", 10000)
	i := 0
	for b.Loop() {
		if i == n {
			b.StopTimer()
			c = newCache(b, clk, "", 10000)
			i = 0
			b.StartTimer()
		}
		if _, err := c.Add(envs[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// fillCache returns a cache with 10000 entries: 1000 peer adverts from 1000 publishers and
// 9000 content adverts from 10 publishers with attributes.
func fillCache(b *testing.B) *advert.Cache {
	clk := newClock(t0)
	c := newCache(b, clk, "", 10000)
	keys := make([]crypto.PrivKey, 1000)
	for i := range keys {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k
		if _, err := c.Put(sealed(b, k, advert.KindPeer, "", fmt.Sprint("peer", i), time.Hour, t0)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 9000 {
		k := keys[i%10]
		a := advert.New(advert.KindContent, fmt.Sprint("c", i), fmt.Sprintf("files/%d/f%d.bin", i%100, i), k, time.Hour, t0)
		a.Attrs["group"] = fmt.Sprint("g", i%50)
		if _, err := c.Put(mustSeal(b, a, k)); err != nil {
			b.Fatal(err)
		}
	}
	if c.Len() != 10000 {
		b.Fatalf("len %d", c.Len())
	}
	return c
}

func BenchmarkQuery10k(b *testing.B) {
	c := fillCache(b)
	for _, bc := range []struct {
		name string
		q    advert.Query
		want int
	}{
		{"all-peers", advert.Query{Kind: advert.KindPeer}, 1000},
		{"attr", advert.Query{Kind: advert.KindContent, Attrs: map[string]string{"group": "g7"}}, 180},
		{"glob", advert.Query{Name: "files/7/*"}, 90},
		{"limit20", advert.Query{Kind: advert.KindContent, Limit: 20}, 20},
		{"id", advert.Query{Kind: advert.KindContent, ID: "c4242"}, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if got := c.Query(bc.q); len(got) != bc.want {
					b.Fatalf("%d results, want %d", len(got), bc.want)
				}
			}
		})
	}
}
