package overlay

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/advert"
)

// testNode starts a node on loopback with mDNS off; mod may change its config.
func testNode(t *testing.T, mod func(*Config)) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.MDNS = false
	cfg.QueryTimeout = 10 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func rendezvous(t *testing.T) *Node {
	return testNode(t, func(c *Config) { c.Role = RoleRendezvous })
}

func bootstrapFrom(r *Node) func(*Config) {
	return func(c *Config) { c.Bootstrap = r.Addrs() }
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func discover(t *testing.T, n *Node, q advert.Query) []*advert.Signed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := n.Discover(ctx, q, true)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func publishers(ss []*advert.Signed) map[peer.ID]bool {
	m := map[peer.ID]bool{}
	for _, s := range ss {
		m[s.Advert.Publisher] = true
	}
	return m
}

func TestDiscoveryThroughRendezvous(t *testing.T) {
	r := rendezvous(t)
	nodes := []*Node{testNode(t, bootstrapFrom(r)), testNode(t, bootstrapFrom(r)), testNode(t, bootstrapFrom(r))}
	for _, n := range nodes {
		eventually(t, 30*time.Second, "all peer adverts", func() bool {
			got := publishers(discover(t, n, advert.Query{Kind: advert.KindPeer}))
			for _, m := range append(nodes, r) {
				if !got[m.ID()] {
					return false
				}
			}
			return true
		})
	}
	// The rendezvous index holds the nodes' adverts, each under its publisher.
	if got := r.index.cache.Query(advert.Query{Kind: advert.KindPeer}); len(got) < 3 {
		t.Fatalf("rendezvous index holds %d peer adverts, want >= 3", len(got))
	}
	// Peer adverts carry addresses: the peers learn how to reach each other.
	ps := nodes[0].Peers()
	if len(ps) < 3 {
		t.Fatalf("node knows %d peers, want >= 3", len(ps))
	}
	// A named advert published by one node is found by name by another.
	a := advert.New(advert.KindContent, "c1", "movie.mkv", nodes[0].PrivateKey(), time.Minute, time.Now())
	a.Attrs["size"] = "1024"
	if _, err := nodes[0].Publish(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	got := discover(t, nodes[2], advert.Query{Kind: advert.KindContent, Name: "movie.*"})
	if len(got) != 1 || got[0].Advert.Attrs["size"] != "1024" || got[0].Advert.Publisher != nodes[0].ID() {
		t.Fatalf("content query by name: got %d adverts", len(got))
	}
}

func TestDiscoveryThroughDHT(t *testing.T) {
	// No rendezvous role anywhere: a plain DHT server bootstraps four nodes.
	b := testNode(t, func(c *Config) { c.DHTServer = true })
	var nodes []*Node
	for i := 0; i < 4; i++ {
		nodes = append(nodes, testNode(t, func(c *Config) { c.DHTServer = true; c.Bootstrap = b.Addrs() }))
	}
	pub, seeker := nodes[0], nodes[3]
	a := advert.New(advert.KindContent, "dht-content", "dht-only.bin", pub.PrivateKey(), time.Minute, time.Now())
	if _, err := pub.Publish(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	// The seeker is not connected to the publisher: the advert can only come through the DHT's
	// provider records (the bootstrap node's cache does not hold it).
	if seeker.Host().Network().Connectedness(pub.ID()) == 1 {
		seeker.Host().Network().ClosePeer(pub.ID())
	}
	if _, ok := b.Cache().Get(a.Key()); ok {
		t.Fatal("bootstrap node should not hold the content advert in its cache")
	}
	eventually(t, 45*time.Second, "content advert through the DHT", func() bool {
		got := discover(t, seeker, advert.Query{Kind: advert.KindContent, Name: "dht-only.bin"})
		return len(got) == 1 && got[0].Advert.Publisher == pub.ID()
	})
}

func TestAdvertRefreshAndExpiry(t *testing.T) {
	r := rendezvous(t)
	n := testNode(t, func(c *Config) { c.Bootstrap = r.Addrs(); c.AdvertTTL = 2 * time.Second })
	first, ok := n.Cache().Get(advert.Key{Kind: advert.KindPeer, ID: n.ID().String(), Publisher: n.ID()})
	if !ok {
		t.Fatal("own peer advert not in cache")
	}
	// Refreshed before it expires: the index keeps seeing a live, newer advert.
	eventually(t, 10*time.Second, "a refreshed peer advert", func() bool {
		s, ok := r.index.cache.Get(first.Advert.Key())
		return ok && s.Advert.Seq > first.Advert.Seq
	})
	time.Sleep(2500 * time.Millisecond) // longer than the TTL
	if _, ok := r.index.cache.Get(first.Advert.Key()); !ok {
		t.Fatal("refreshed advert expired from the index")
	}
	// Once the node stops, its advert expires everywhere.
	n.Close()
	eventually(t, 10*time.Second, "expiry after the publisher stops", func() bool {
		r.index.cache.Expire()
		_, ok := r.index.cache.Get(first.Advert.Key())
		return !ok
	})
}

// badAdverts returns envelopes that must all be rejected, by reason.
func badAdverts(t *testing.T, victim peer.ID) map[string][]byte {
	t.Helper()
	now := time.Now()
	k1, _, _ := crypto.GenerateEd25519Key(nil)
	k2, _, _ := crypto.GenerateEd25519Key(nil)
	id1, _ := peer.IDFromPrivateKey(k1)
	out := map[string][]byte{}

	good := advert.New(advert.KindContent, "x", "good.bin", k1, time.Minute, now)
	s, err := advert.Seal(good, k1)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(s.Envelope)
	i := bytes.Index(tampered, []byte("good.bin"))
	tampered[i] = 'G'
	out["bad_signature"] = tampered

	// Forged: claims id1 as publisher but is sealed by k2. Seal refuses that, so build the
	// envelope by hand from the record type.
	forged := advert.New(advert.KindContent, "y", "forged.bin", k1, time.Minute, now)
	out["publisher_mismatch"] = sealWithKey(t, forged, k2)

	expired := advert.New(advert.KindContent, "z", "old.bin", k1, time.Minute, now.Add(-2*time.Hour))
	out["expired"] = mustSeal(t, expired, k1)

	out["too_large"] = bytes.Repeat([]byte{1}, advert.MaxEnvelopeSize+1)
	_ = id1
	_ = victim
	return out
}

func mustSeal(t *testing.T, a *advert.Advert, k crypto.PrivKey) []byte {
	t.Helper()
	s, err := advert.Seal(a, k)
	if err != nil {
		t.Fatal(err)
	}
	return s.Envelope
}

func TestBadAdvertsRejectedAndCounted(t *testing.T) {
	r := rendezvous(t)
	evil := testNode(t, bootstrapFrom(r))
	victim := testNode(t, bootstrapFrom(r))
	bad := badAdverts(t, victim.ID())
	var envs [][]byte
	for reason, e := range bad {
		if reason != "too_large" { // an oversized envelope spoils the whole message; sent alone below
			envs = append(envs, e)
		}
	}
	if err := victim.Host().Connect(context.Background(), peer.AddrInfo{ID: evil.ID(), Addrs: evil.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	// The evil peer answers discovery queries with bad envelopes only.
	evil.Resolver().Handle(HandlerAdverts, func(context.Context, peer.ID, []byte) ([]byte, error) {
		return encodeEnvelopes(envs), nil
	})
	discover(t, victim, advert.Query{Kind: advert.KindContent})
	st := victim.Stats().Cache
	for _, reason := range []string{"bad_signature", "publisher_mismatch", "expired"} {
		if st.Rejected[reason] == 0 {
			t.Errorf("victim did not count a %s rejection: %v", reason, st.Rejected)
		}
	}
	if got := victim.Cache().Query(advert.Query{Kind: advert.KindContent}); len(got) != 0 {
		t.Fatalf("victim cached %d bad adverts", len(got))
	}
	// The rendezvous index refuses them too, and adverts of other publishers.
	for reason, e := range bad {
		_, err := evil.Resolver().Query(context.Background(), r.ID(), HandlerIndexPublish, encodeEnvelopes([][]byte{e}))
		if reason == "too_large" {
			// encodeEnvelopes drops what does not fit; send it raw instead.
			_, err = evil.Resolver().Query(context.Background(), r.ID(), HandlerIndexPublish, append([]byte{1, 0x81, 0x80, 0x01}, e...))
		}
		if err == nil || !errors.Is(err, ErrRemote) {
			t.Errorf("index accepted a %s advert (err %v)", reason, err)
		}
	}
	// Garbage on the resolver stream: rejected, the node keeps running.
	if _, err := evil.Resolver().Query(context.Background(), r.ID(), HandlerIndexQuery, []byte{0xff, 0xff}); err == nil {
		t.Error("index answered a malformed query")
	}
	if _, err := evil.Resolver().Query(context.Background(), r.ID(), "no-such-handler", nil); !errors.Is(err, ErrNoHandler) {
		t.Errorf("unknown handler: %v", err)
	}
	if rej := r.Stats().Rejected; rej["index_malformed"] == 0 || rej["index_too_large"] == 0 || rej["index_expired"] == 0 ||
		rej["index_publisher_mismatch"] == 0 || rej["index_bad_signature"] == 0 {
		t.Errorf("index rejections not counted: %v", rej)
	}
	got := discover(t, victim, advert.Query{Kind: advert.KindPeer})
	if !publishers(got)[r.ID()] {
		t.Fatal("rendezvous stopped answering after bad input")
	}
}

func TestIndexRefusesOthersAdverts(t *testing.T) {
	r := rendezvous(t)
	a := testNode(t, bootstrapFrom(r))
	b := testNode(t, bootstrapFrom(r))
	s, _ := b.Cache().Get(advert.Key{Kind: advert.KindPeer, ID: b.ID().String(), Publisher: b.ID()})
	_, err := a.Resolver().Query(context.Background(), r.ID(), HandlerIndexPublish, encodeEnvelopes([][]byte{s.Envelope}))
	if err == nil || !strings.Contains(err.Error(), "only its own") {
		t.Fatalf("index took another peer's advert: %v", err)
	}
}

func TestIndexQuota(t *testing.T) {
	r := testNode(t, func(c *Config) { c.Role = RoleRendezvous; c.IndexQuota = 3 })
	n := testNode(t, bootstrapFrom(r)) // its peer advert takes one slot
	for i := 0; i < 5; i++ {
		a := advert.New(advert.KindContent, string(rune('a'+i)), "q", n.PrivateKey(), time.Minute, time.Now())
		if _, err := n.Publish(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.index.cache.Query(advert.Query{Publisher: n.ID()}); len(got) != 3 {
		t.Fatalf("index holds %d adverts of one peer, quota 3", len(got))
	}
	if r.Stats().Rejected["index_quota"] == 0 {
		t.Fatal("quota rejections not counted")
	}
}

func TestIdentityKept(t *testing.T) {
	dir := t.TempDir()
	id1, err := PeerIDOf(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := testNode(t, func(c *Config) { c.DataDir = dir })
	if n.ID() != id1 {
		t.Fatalf("node on the same data dir has ID %s, want %s", n.ID(), id1)
	}
	n.Close()
	n2 := testNode(t, func(c *Config) { c.DataDir = dir })
	if n2.ID() != id1 {
		t.Fatalf("restarted node has ID %s, want %s", n2.ID(), id1)
	}
	// The advert cache was persisted and reloaded.
	if _, ok := n2.Cache().Get(advert.Key{Kind: advert.KindPeer, ID: id1.String(), Publisher: id1}); !ok {
		t.Fatal("own peer advert not reloaded")
	}
}

func TestPeerInfo(t *testing.T) {
	r := rendezvous(t)
	n := testNode(t, bootstrapFrom(r))
	var info PeerInfo
	eventually(t, 10*time.Second, "traffic counted", func() bool {
		var err error
		info, err = n.PeerInfoOf(context.Background(), r.ID())
		if err != nil {
			t.Fatal(err)
		}
		return info.Total.In > 0
	})
	if info.PeerID != r.ID().String() || info.Role != "rendezvous" || info.Uptime <= 0 || len(info.Addrs) == 0 {
		t.Fatalf("peer info: %+v", info)
	}
	if info.Total.In == 0 || len(info.ByProtocol) == 0 {
		t.Fatalf("no traffic accounted: %+v", info)
	}
}

// sealWithKey signs a with k whatever a's publisher says: a forgery.
func sealWithKey(t *testing.T, a *advert.Advert, k crypto.PrivKey) []byte {
	t.Helper()
	env, err := record.Seal(&advert.Record{Advert: *a}, k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
