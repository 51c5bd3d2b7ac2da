package advert_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/advert"
)

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func newCache(t testing.TB, clk *clock, path string, max int) *advert.Cache {
	t.Helper()
	cfg := advert.DefaultCacheConfig()
	cfg.Now = clk.Now
	cfg.Path = path
	cfg.MaxEntries = max
	c, err := advert.NewCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sealed(t testing.TB, key crypto.PrivKey, kind advert.Kind, id, name string, ttl time.Duration, now time.Time) *advert.Signed {
	t.Helper()
	return mustSeal(t, advert.New(kind, id, name, key, ttl, now), key)
}

func TestCacheAddRejectsAndCounts(t *testing.T) {
	clk := newClock(t0)
	c := newCache(t, clk, "", 0)
	key, _ := testKey(t, 1)
	good := sealed(t, key, advert.KindContent, "c1", "file", time.Hour, t0)
	if _, err := c.Add(good.Envelope); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{}
	for _, b := range badEnvelopes(t) {
		s, err := c.Add(b.data)
		if !errors.Is(err, b.want) || s != nil {
			t.Fatalf("%s: Add = %v, %v; want %v", b.name, s, err, b.want)
		}
		want[advert.Reason(b.want)]++
	}
	// The same advert again is stale.
	if _, err := c.Add(good.Envelope); !errors.Is(err, advert.ErrStale) {
		t.Fatalf("re-Add = %v, want ErrStale", err)
	}
	want["stale"]++
	st := c.Stats()
	if st.Accepted != 1 || st.Entries != 1 || fmt.Sprint(st.Rejected) != fmt.Sprint(want) {
		t.Fatalf("stats %+v, want accepted 1, entries 1, rejected %v", st, want)
	}
	for _, r := range []string{"malformed", "too_large", "bad_signature", "publisher_mismatch", "expired", "stale", "unknown_kind"} {
		if st.Rejected[r] == 0 {
			t.Errorf("no rejection counted as %q", r)
		}
	}
}

func TestCacheHighestSeqWins(t *testing.T) {
	clk := newClock(t0)
	c := newCache(t, clk, "", 0)
	key, _ := testKey(t, 1)
	v1 := sealed(t, key, advert.KindGroup, "g", "v1", time.Hour, t0)
	v2 := sealed(t, key, advert.KindGroup, "g", "v2", time.Hour, t0.Add(time.Second))
	if ok, err := c.Put(v2); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, err := c.Put(v1); ok || !errors.Is(err, advert.ErrStale) {
		t.Fatalf("older Put = %v, %v; want false, ErrStale", ok, err)
	}
	if ok, err := c.Put(v2); ok || !errors.Is(err, advert.ErrStale) {
		t.Fatalf("equal-seq Put = %v, %v; want false, ErrStale", ok, err)
	}
	got, ok := c.Get(v1.Key())
	if !ok || got.Advert.Name != "v2" {
		t.Fatalf("Get = %v, %v", got, ok)
	}
	v3 := sealed(t, key, advert.KindGroup, "g", "v3", time.Hour, t0.Add(2*time.Second))
	if _, err := c.Add(v3.Envelope); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(v1.Key()); got.Advert.Name != "v3" || c.Len() != 1 {
		t.Fatalf("after newer Add: %v, len %d", got.Advert.Name, c.Len())
	}
	if st := c.Stats(); st.Accepted != 2 || st.Rejected["stale"] != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCacheEvictsSoonestExpiring(t *testing.T) {
	clk := newClock(t0)
	const max = 50
	c := newCache(t, clk, "", max)
	key, _ := testKey(t, 1)
	// ttl i+1 minutes: entry 0 expires soonest.
	for i := range max {
		if _, err := c.Put(sealed(t, key, advert.KindPipe, fmt.Sprint("p", i), "", time.Duration(i+1)*time.Minute, t0)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 * max {
		if _, err := c.Put(sealed(t, key, advert.KindContent, fmt.Sprint("c", i), "", time.Duration(1000+i)*time.Minute, t0)); err != nil {
			t.Fatal(err)
		}
		if n := c.Len(); n > max {
			t.Fatalf("cache grew to %d > %d", n, max)
		}
		if i < max {
			if _, ok := c.Get(advert.Key{Kind: advert.KindPipe, ID: fmt.Sprint("p", i), Publisher: mustID(t, key)}); ok {
				t.Fatalf("p%d (expiring soonest) not evicted", i)
			}
			if i+1 < max {
				if _, ok := c.Get(advert.Key{Kind: advert.KindPipe, ID: fmt.Sprint("p", i+1), Publisher: mustID(t, key)}); !ok {
					t.Fatalf("p%d evicted too early", i+1)
				}
			}
		}
	}
	assertIndexesConsistent(t, c, []crypto.PrivKey{key})
	// Only the latest (longest-lived) content adverts remain.
	got := c.Query(advert.Query{})
	if len(got) != max {
		t.Fatalf("%d entries", len(got))
	}
	for _, s := range got {
		if s.Advert.Kind != advert.KindContent {
			t.Fatalf("unexpected survivor %v", s.Key())
		}
	}
}

func mustID(t testing.TB, key crypto.PrivKey) peer.ID {
	t.Helper()
	a := advert.New(advert.KindGroup, "x", "", key, time.Minute, t0)
	return a.Publisher
}

func TestCacheExpiry(t *testing.T) {
	clk := newClock(t0)
	c := newCache(t, clk, "", 0)
	key, _ := testKey(t, 1)
	short := sealed(t, key, advert.KindPipe, "short", "", time.Minute, t0)
	long := sealed(t, key, advert.KindPipe, "long", "", time.Hour, t0)
	for _, s := range []*advert.Signed{short, long} {
		if _, err := c.Put(s); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(time.Minute) // short expires exactly now
	if _, ok := c.Get(short.Key()); ok {
		t.Fatal("expired advert returned by Get")
	}
	if got := c.Query(advert.Query{}); len(got) != 1 || got[0].Advert.ID != "long" {
		t.Fatalf("Query after expiry = %v", got)
	}
	if c.Len() != 2 {
		t.Fatalf("Len before Expire = %d", c.Len())
	}
	if n := c.Expire(); n != 1 || c.Len() != 1 {
		t.Fatalf("Expire = %d, Len %d", n, c.Len())
	}
	if ok, err := c.Put(short); ok || !errors.Is(err, advert.ErrExpired) {
		t.Fatalf("Put expired = %v, %v", ok, err)
	}
	if _, err := c.Add(short.Envelope); !errors.Is(err, advert.ErrExpired) {
		t.Fatalf("Add expired = %v", err)
	}
	// An expired entry does not block a replacement with a lower Seq.
	clk.Add(2 * time.Hour)
	old := sealed(t, key, advert.KindPipe, "long", "", 4*time.Hour, t0.Add(-time.Hour)) // lower seq, still live
	if ok, err := c.Put(old); !ok || err != nil {
		t.Fatalf("Put over expired entry = %v, %v", ok, err)
	}
	c.Remove(old.Key())
	if c.Len() != 0 {
		t.Fatalf("Len after Remove = %d", c.Len())
	}
	c.Remove(old.Key()) // no-op
}

func TestCacheQuery(t *testing.T) {
	clk := newClock(t0)
	c := newCache(t, clk, "", 0)
	k1, p1 := testKey(t, 1)
	k2, p2 := testKey(t, 2)
	add := func(key crypto.PrivKey, kind advert.Kind, id, name string, attrs map[string]string) {
		a := advert.New(kind, id, name, key, time.Hour, t0)
		for k, v := range attrs {
			a.Attrs[k] = v
		}
		if _, err := c.Put(mustSeal(t, a, key)); err != nil {
			t.Fatal(err)
		}
	}
	add(k1, advert.KindPeer, "", "alice", map[string]string{"role": "node"})
	add(k2, advert.KindPeer, "", "bob", map[string]string{"role": "rendezvous"})
	add(k1, advert.KindContent, "c1", "movies/a.mkv", map[string]string{"group": "g1", "size": "10"})
	add(k2, advert.KindContent, "c2", "movies/b.mkv", map[string]string{"group": "g1"})
	add(k2, advert.KindContent, "c3", "docs/c.pdf", map[string]string{"group": "g2"})
	add(k1, advert.KindGroup, "g1", "g1", nil)
	add(k2, advert.KindGroup, "g1", "g1", nil) // same ID, other publisher: another key

	ids := func(q advert.Query) string {
		var s []string
		for _, x := range c.Query(q) {
			s = append(s, x.Advert.Kind.String()+":"+x.Advert.ID)
		}
		return fmt.Sprint(s)
	}
	for _, tc := range []struct {
		q    advert.Query
		want string
	}{
		{advert.Query{Kind: advert.KindContent}, "[content:c3 content:c1 content:c2]"},
		{advert.Query{Kind: advert.KindContent, Name: "movies/*"}, "[content:c1 content:c2]"},
		{advert.Query{Name: "*"}, "[peer:" + p1.String() + " peer:" + p2.String() + " group:g1 group:g1]"},
		{advert.Query{Name: "movies/?.mkv", Attrs: map[string]string{"group": "g1", "size": "10"}}, "[content:c1]"},
		{advert.Query{Attrs: map[string]string{"group": "g1"}}, "[content:c1 content:c2]"},
		{advert.Query{Attrs: map[string]string{"group": "g3"}}, "[]"},
		{advert.Query{Kind: advert.KindGroup, ID: "g1", Publisher: p2}, "[group:g1]"},
		{advert.Query{Publisher: p1}, "[peer:" + p1.String() + " group:g1 content:c1]"},
		{advert.Query{Kind: advert.KindPeer, ID: p2.String()}, "[peer:" + p2.String() + "]"},
		{advert.Query{Kind: advert.KindContent, Limit: 2}, "[content:c3 content:c1]"},
		{advert.Query{Name: "[", Kind: advert.KindContent}, "[]"},
	} {
		if got := ids(tc.q); got != tc.want {
			t.Errorf("Query(%+v) = %s, want %s", tc.q, got, tc.want)
		}
	}
	// Everything, deterministically ordered by kind, name, id, publisher.
	all := c.Query(advert.Query{})
	if len(all) != 7 {
		t.Fatalf("%d results", len(all))
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1].Advert, all[i].Advert
		if a.Kind > b.Kind || (a.Kind == b.Kind && a.Name > b.Name) {
			t.Fatalf("not sorted at %d: %v then %v", i, a.Key(), b.Key())
		}
	}
}

func TestCachePersistence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "adverts")
	clk := newClock(t0)
	c := newCache(t, clk, path, 0)
	key, _ := testKey(t, 1)
	var want []*advert.Signed
	for i := range 20 {
		s := sealed(t, key, advert.KindContent, fmt.Sprint("c", i), fmt.Sprint("n", i), time.Duration(i+1)*time.Minute, t0)
		if _, err := c.Put(s); err != nil {
			t.Fatal(err)
		}
		want = append(want, s)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.tmp*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}

	// Reload 5.5 minutes later: the 5 entries with ttl <= 5 min are skipped as expired.
	clk.Add(5*time.Minute + 30*time.Second)
	c2 := newCache(t, clk, path, 0)
	if c2.Len() != 15 {
		t.Fatalf("reloaded %d entries, want 15", c2.Len())
	}
	for _, s := range want[5:] {
		got, ok := c2.Get(s.Key())
		if !ok || !bytes.Equal(got.Envelope, s.Envelope) {
			t.Fatalf("%v not reloaded intact", s.Key())
		}
	}
	// A save after expiry writes only live entries.
	if err := c2.Save(); err != nil {
		t.Fatal(err)
	}
	if c3 := newCache(t, clk, path, 0); c3.Len() != 15 {
		t.Fatalf("second reload: %d", c3.Len())
	}
	// A small MaxEntries bounds what is loaded.
	if c4 := newCache(t, clk, path, 4); c4.Len() != 4 {
		t.Fatalf("bounded reload: %d", c4.Len())
	}
}

func TestCacheLoadCorrupted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "adverts")
	clk := newClock(t0)
	c := newCache(t, clk, path, 0)
	key, _ := testKey(t, 1)
	for i := range 10 {
		if _, err := c.Put(sealed(t, key, advert.KindPipe, fmt.Sprint("p", i), "", time.Hour, t0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entry := (len(good) - len("raftcast-adverts/1\n")) / 10 // all entries have the same size

	load := func(data []byte) int {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return newCache(t, clk, path, 0).Len()
	}
	if n := load(good[:len(good)-1]); n != 9 {
		t.Errorf("truncated in the last entry: loaded %d, want 9", n)
	}
	if n := load(good[:len(good)-3*entry-entry/2]); n != 6 {
		t.Errorf("truncated in the 7th entry: loaded %d, want 6", n)
	}
	flipped := bytes.Clone(good)
	flipped[len(good)-entry/2] ^= 0xff // inside the last entry's envelope
	if n := load(flipped); n != 9 {
		t.Errorf("one bad entry: loaded %d, want 9", n)
	}
	badLen := bytes.Clone(good)
	badLen[len(good)-entry] = 0xff // the last entry's length prefix becomes huge/garbled
	badLen[len(good)-entry+1] = 0xff
	if n := load(badLen); n != 9 {
		t.Errorf("bad length prefix: loaded %d, want 9", n)
	}
	if n := load([]byte("garbage")); n != 0 {
		t.Errorf("bad header: loaded %d", n)
	}
	if n := load(nil); n != 0 {
		t.Errorf("empty file: loaded %d", n)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if n := newCache(t, clk, path, 0).Len(); n != 0 {
		t.Errorf("missing file: loaded %d", n)
	}
	// Memory-only caches do not save.
	if err := newCache(t, clk, "", 0).Save(); err != nil {
		t.Fatal(err)
	}
	// A directory as Path is a configuration error.
	cfg := advert.DefaultCacheConfig()
	cfg.Path = dir
	if _, err := advert.NewCache(cfg); err == nil {
		t.Error("NewCache with a directory as Path succeeded")
	}
	cfg = advert.DefaultCacheConfig()
	cfg.MaxEntries = -1
	if _, err := advert.NewCache(cfg); err == nil {
		t.Error("NewCache with negative MaxEntries succeeded")
	}
}

func TestCacheConcurrent(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	c := newCache(t, clk, filepath.Join(dir, "adverts"), 100)
	keys := make([]crypto.PrivKey, 4)
	for i := range keys {
		keys[i], _ = testKey(t, byte(i+1))
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := keys[w%len(keys)]
			for i := range 60 {
				s := sealed(t, key, advert.KindContent, fmt.Sprint("c", i%70), "n", time.Duration(1+i)*time.Minute, t0.Add(time.Duration(w)*time.Millisecond))
				switch i % 6 {
				case 0:
					_, _ = c.Add(s.Envelope)
				case 1:
					_, _ = c.Put(s)
				case 2:
					c.Query(advert.Query{Kind: advert.KindContent, Limit: 10})
				case 3:
					c.Get(s.Key())
					c.Stats()
				case 4:
					c.Expire()
					c.Remove(s.Key())
				case 5:
					if err := c.Save(); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() > 100 {
		t.Fatalf("Len %d > MaxEntries", c.Len())
	}
	assertIndexesConsistent(t, c, keys)
	st := c.Stats()
	var rej uint64
	for _, v := range st.Rejected {
		rej += v
	}
	if st.Accepted+rej != 8*20 {
		t.Fatalf("accepted %d + rejected %d != %d puts/adds", st.Accepted, rej, 8*20)
	}
}

// assertIndexesConsistent checks that indexed queries (by kind, publisher, ID) return what a
// full scan filtered with Match returns.
func assertIndexesConsistent(t *testing.T, c *advert.Cache, keys []crypto.PrivKey) {
	t.Helper()
	all := c.Query(advert.Query{})
	var qs []advert.Query
	for _, k := range allKinds {
		qs = append(qs, advert.Query{Kind: k})
	}
	for _, k := range keys {
		qs = append(qs, advert.Query{Publisher: mustID(t, k)}, advert.Query{Publisher: mustID(t, k), Kind: advert.KindContent, ID: "c3"})
	}
	for i := range 70 {
		qs = append(qs, advert.Query{ID: fmt.Sprint("c", i)})
	}
	for _, q := range qs {
		var want []*advert.Signed
		for _, s := range all {
			if q.Match(s.Advert) {
				want = append(want, s)
			}
		}
		got := c.Query(q)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Query(%+v): %d results, full scan %d", q, len(got), len(want))
		}
	}
}
