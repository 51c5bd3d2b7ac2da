package overlay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	mh "github.com/multiformats/go-multihash"

	"github.com/raftcast/raftcast/advert"
)

// maxPeersAsked bounds how many peers one remote query fans out to.
const maxPeersAsked = 16

// Publish signs a as this node and publishes it: the local cache, the rendezvous indexes
// (synchronously, best effort) and the DHT (in the background). Publisher, Seq and, when zero,
// Created and Expires are filled in. The node republishes it before it expires until
// Unpublish.
func (n *Node) Publish(ctx context.Context, a *advert.Advert) (*advert.Signed, error) {
	s, err := n.seal(a)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.own[a.Key()] = a
	n.mu.Unlock()
	n.pushRemote(ctx, s)
	return s, nil
}

// Unpublish stops refreshing the advertisement and drops it from the local cache; copies
// elsewhere expire on their own.
func (n *Node) Unpublish(k advert.Key) {
	n.mu.Lock()
	delete(n.own, k)
	n.mu.Unlock()
	n.cache.Remove(k)
}

// seal fills in a's publisher fields, signs it and stores it in the local cache.
func (n *Node) seal(a *advert.Advert) (*advert.Signed, error) {
	now := n.cfg.Now()
	a.Publisher = n.h.ID()
	if a.Kind == advert.KindPeer {
		a.ID = a.Publisher.String()
	}
	ttl := n.cfg.AdvertTTL
	if !a.Created.IsZero() && !a.Expires.IsZero() && a.Expires.After(a.Created) {
		ttl = a.Expires.Sub(a.Created)
	}
	a.Created = now
	a.Expires = now.Add(ttl)
	n.mu.Lock()
	seq := uint64(now.UnixMilli())
	if last := n.lastSeq[a.Key()]; seq <= last {
		seq = last + 1
	}
	n.lastSeq[a.Key()] = seq
	n.mu.Unlock()
	a.Seq = seq
	s, err := advert.Seal(a, n.key)
	if err != nil {
		return nil, err
	}
	if _, err := n.cache.Put(s); err != nil {
		return nil, err
	}
	return s, nil
}

// pushRemote offers s to every reachable rendezvous index and, in the background, to the DHT.
func (n *Node) pushRemote(ctx context.Context, s *advert.Signed) {
	if n.index != nil {
		if err := n.index.add(n.h.ID(), s.Envelope); err != nil {
			n.log.Warn("own index refused an advert", "advert", s.Advert.Key(), "err", err)
		}
	}
	msg := encodeEnvelopes([][]byte{s.Envelope})
	var wg sync.WaitGroup
	for _, r := range n.rendezvousPeers() {
		wg.Add(1)
		go func(p peer.ID) {
			defer wg.Done()
			if _, err := n.res.Query(ctx, p, HandlerIndexPublish, msg); err != nil {
				n.log.Debug("index publish failed", "rendezvous", p, "err", err)
			}
		}(r)
	}
	wg.Wait()
	n.goFunc(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if len(n.dht.RoutingTable().ListPeers()) == 0 {
			return
		}
		a := s.Advert
		if err := n.dht.PutValue(ctx, dhtKey(a.Key()), s.Envelope); err != nil {
			n.log.Debug("DHT put failed", "advert", a.Key(), "err", err)
		}
		for _, ns := range providerKeys(a) {
			if err := n.dht.Provide(ctx, ns, true); err != nil {
				n.log.Debug("DHT provide failed", "advert", a.Key(), "err", err)
			}
		}
	})
}

// rendezvousPeers lists the rendezvous nodes this node is connected to (bootstrap peers and
// peers that advertise the rendezvous role), never itself.
func (n *Node) rendezvousPeers() []peer.ID {
	seen := map[peer.ID]bool{n.h.ID(): true}
	var out []peer.ID
	for _, ai := range n.rdv {
		if !seen[ai.ID] {
			seen[ai.ID] = true
			out = append(out, ai.ID)
		}
	}
	for _, s := range n.cache.Query(advert.Query{Kind: advert.KindRendezvous}) {
		p := s.Advert.Publisher
		if !seen[p] && n.h.Network().Connectedness(p) == network.Connected {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// Discover returns the advertisements matching q: from the local cache and, when remote is
// true, also from the rendezvous indexes, the DHT and connected peers (Peer Discovery
// Protocol). Every remote result is verified before it is cached and returned.
func (n *Node) Discover(ctx context.Context, q advert.Query, remote bool) ([]*advert.Signed, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	n.cache.Expire()
	if remote {
		n.discoverRemote(ctx, q)
	}
	return n.cache.Query(q), nil
}

func (n *Node) discoverRemote(ctx context.Context, q advert.Query) {
	wire := q
	wire.Limit = 0
	var wg sync.WaitGroup
	ask := func(p peer.ID, handler string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.queryPeer(ctx, p, handler, wire)
		}()
	}
	asked := map[peer.ID]bool{n.h.ID(): true}
	for _, p := range n.rendezvousPeers() {
		asked[p] = true
		ask(p, HandlerIndexQuery)
	}
	// Connected peers answer from their own caches (JXTA's propagated discovery query).
	peers := n.h.Network().Peers()
	sort.Slice(peers, func(i, j int) bool { return peers[i] < peers[j] })
	for _, p := range peers {
		if len(asked) > maxPeersAsked {
			break
		}
		if !asked[p] {
			asked[p] = true
			ask(p, HandlerAdverts)
		}
	}
	// The DHT: providers of the query's namespace, then ask them.
	if len(n.dht.RoutingTable().ListPeers()) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, n.cfg.QueryTimeout)
			defer cancel()
			for ai := range n.dht.FindProvidersAsync(dctx, queryProviderKey(q), maxPeersAsked) {
				if asked[ai.ID] || len(ai.Addrs) == 0 && n.h.Network().Connectedness(ai.ID) != network.Connected {
					continue
				}
				asked[ai.ID] = true
				n.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
				n.queryPeer(dctx, ai.ID, HandlerAdverts, wire)
			}
		}()
	}
	wg.Wait()
}

// queryPeer asks p's handler for adverts matching q and caches every verified result.
func (n *Node) queryPeer(ctx context.Context, p peer.ID, handler string, q advert.Query) {
	req, err := q.MarshalBinary()
	if err != nil {
		return
	}
	resp, err := n.res.Query(ctx, p, handler, req)
	if err != nil {
		if !errors.Is(err, ErrNoHandler) {
			n.log.Debug("remote query failed", "peer", p, "handler", handler, "err", err)
		}
		return
	}
	envs, err := decodeEnvelopes(resp)
	if err != nil {
		n.stats.count("malformed_response")
		n.log.Warn("malformed discovery response", "peer", p, "err", err)
		return
	}
	for _, e := range envs {
		n.accept(e, p)
	}
}

// accept verifies and caches one envelope received from p; peer adverts teach addresses.
func (n *Node) accept(env []byte, from peer.ID) {
	s, err := n.cache.Add(env)
	if err != nil {
		if !errors.Is(err, advert.ErrStale) {
			n.log.Info("advertisement rejected", "from", from, "reason", advert.Reason(err), "err", err)
		}
		return
	}
	a := s.Advert
	if (a.Kind == advert.KindPeer || a.Kind == advert.KindRendezvous) && a.Publisher != n.h.ID() && len(a.Addrs) > 0 {
		ttl := time.Until(a.Expires)
		if ttl > 0 {
			n.h.Peerstore().AddAddrs(a.Publisher, a.Addrs, ttl)
		}
	}
}

// handleAdverts answers a remote discovery query from the local cache.
func (n *Node) handleAdverts(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
	var q advert.Query
	if err := q.UnmarshalBinary(req); err != nil {
		n.stats.count("malformed_query")
		return nil, err
	}
	return encodeEnvelopes(envelopesOf(n.cache.Query(q))), nil
}

func envelopesOf(ss []*advert.Signed) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = s.Envelope
	}
	return out
}

// SetPeerAttr sets an attribute of this node's peer advertisement and republishes it.
func (n *Node) SetPeerAttr(key, value string) {
	n.mu.Lock()
	if n.peerAttrs[key] == value {
		n.mu.Unlock()
		return
	}
	n.peerAttrs[key] = value
	n.mu.Unlock()
	n.goFunc(func(ctx context.Context) {
		if _, err := n.publishPeerAdvert(ctx); err != nil {
			n.log.Warn("republishing peer advertisement", "err", err)
		}
	})
}

func (n *Node) peerAdvert() *advert.Advert {
	now := n.cfg.Now()
	a := advert.New(advert.KindPeer, n.h.ID().String(), n.Name(), n.key, n.cfg.AdvertTTL, now)
	a.Attrs["role"] = string(n.cfg.Role)
	n.mu.Lock()
	for k, v := range n.peerAttrs {
		a.Attrs[k] = v
	}
	n.mu.Unlock()
	addrs := n.h.Addrs()
	if len(addrs) > advert.MaxAddrs {
		addrs = addrs[:advert.MaxAddrs]
	}
	a.Addrs = addrs
	return a
}

func (n *Node) publishPeerAdvert(ctx context.Context) (*advert.Signed, error) {
	if n.cfg.Role == RoleRendezvous {
		r := n.peerAdvert()
		r.Kind, r.ID = advert.KindRendezvous, n.h.ID().String()
		if _, err := n.Publish(ctx, r); err != nil {
			return nil, err
		}
	}
	return n.Publish(ctx, n.peerAdvert())
}

// refreshLoop republishes this node's adverts at half their lifetime, and its peer advert
// whenever its addresses change.
func (n *Node) refreshLoop(ctx context.Context) {
	every := n.cfg.AdvertTTL / 2
	t := time.NewTicker(every)
	defer t.Stop()
	sub, err := n.h.EventBus().Subscribe(new(eventLocalAddrs))
	var addrCh <-chan any
	if err == nil {
		defer sub.Close()
		addrCh = sub.Out()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-addrCh:
			if _, err := n.publishPeerAdvert(ctx); err != nil {
				n.log.Warn("republishing peer advertisement", "err", err)
			}
		case <-t.C:
			n.cache.Expire()
			n.mu.Lock()
			var own []*advert.Advert
			for _, a := range n.own {
				own = append(own, a)
			}
			n.mu.Unlock()
			for _, a := range own {
				if a.Kind == advert.KindPeer || a.Kind == advert.KindRendezvous {
					continue
				}
				if _, err := n.Publish(ctx, a); err != nil {
					n.log.Warn("refreshing advertisement", "advert", a.Key(), "err", err)
				}
			}
			if _, err := n.publishPeerAdvert(ctx); err != nil {
				n.log.Warn("refreshing peer advertisement", "err", err)
			}
			if n.cfg.DataDir != "" {
				if err := n.cache.Save(); err != nil {
					n.log.Warn("saving advert cache", "err", err)
				}
			}
		}
	}
}

// dhtKey is the DHT record key of an advertisement: /rcadv/<sha256 of kind/id/publisher>.
func dhtKey(k advert.Key) string {
	sum := sha256.Sum256([]byte(k.String()))
	return "/" + DHTNamespace + "/" + hex.EncodeToString(sum[:])
}

// nsCID turns a discovery namespace into the CID whose providers are the peers holding
// adverts of that namespace.
func nsCID(ns string) cid.Cid {
	h, _ := mh.Sum([]byte("raftcast:"+ns), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}

// providerKeys are the namespaces an advert is provided under: its kind, and its kind+name.
func providerKeys(a *advert.Advert) []cid.Cid {
	return []cid.Cid{nsCID(a.Kind.String()), nsCID(a.Kind.String() + "/" + a.Name)}
}

// queryProviderKey is the namespace whose providers can answer q.
func queryProviderKey(q advert.Query) cid.Cid {
	kind := "any"
	if q.Kind != 0 {
		kind = q.Kind.String()
	}
	if q.Name != "" && !strings.ContainsAny(q.Name, "*?[\\") {
		return nsCID(kind + "/" + q.Name)
	}
	return nsCID(kind)
}

// dhtValidator accepts only verified, unexpired advert envelopes stored under their own key,
// and selects the highest sequence number.
type dhtValidator struct {
	now   func() time.Time
	stats *rejectStats
}

func (v dhtValidator) Validate(key string, value []byte) error {
	s, err := advert.Open(value, v.now())
	if err != nil {
		v.stats.count("dht_" + advert.Reason(err))
		return err
	}
	if dhtKey(s.Advert.Key()) != key {
		v.stats.count("dht_wrong_key")
		return fmt.Errorf("advert %s stored under the wrong DHT key", s.Advert.Key())
	}
	return nil
}

func (v dhtValidator) Select(_ string, values [][]byte) (int, error) {
	best, bestSeq := -1, uint64(0)
	for i, val := range values {
		s, err := advert.Open(val, v.now())
		if err != nil {
			continue
		}
		if best < 0 || s.Advert.Seq > bestSeq {
			best, bestSeq = i, s.Advert.Seq
		}
	}
	if best < 0 {
		return 0, errors.New("no valid advertisement among the DHT values")
	}
	return best, nil
}

// rejectStats counts rejections the node saw outside the advert cache (DHT, malformed
// messages), by reason.
type rejectStats struct {
	mu sync.Mutex // guards m
	m  map[string]uint64
}

func newRejectStats() *rejectStats { return &rejectStats{m: map[string]uint64{}} }

func (r *rejectStats) count(reason string) {
	r.mu.Lock()
	r.m[reason]++
	r.mu.Unlock()
}

func (r *rejectStats) snapshot() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]uint64, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}

// eventLocalAddrs is the event that tells this node its addresses changed.
type eventLocalAddrs = event.EvtLocalAddressesUpdated
