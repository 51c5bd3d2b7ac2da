package overlay

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/advert"
)

// Traffic counts bytes in and out.
type Traffic struct {
	In  int64 `json:"in"`
	Out int64 `json:"out"`
}

// PeerInfo is JXTA's Peer Information Protocol document: who a peer is, how long it has run,
// where it listens, and its traffic per peer and per protocol (the accounting interface).
type PeerInfo struct {
	PeerID     string             `json:"peer_id"`
	Name       string             `json:"name"`
	Role       string             `json:"role"`
	Addrs      []string           `json:"addrs"`
	Uptime     float64            `json:"uptime_seconds"`
	Total      Traffic            `json:"total"`
	ByPeer     map[string]Traffic `json:"by_peer"`
	ByProtocol map[string]Traffic `json:"by_protocol"`
}

// Info returns this node's peer information.
func (n *Node) Info() PeerInfo {
	info := PeerInfo{
		PeerID:     n.h.ID().String(),
		Name:       n.Name(),
		Role:       string(n.cfg.Role),
		Uptime:     n.cfg.Now().Sub(n.start).Seconds(),
		ByPeer:     map[string]Traffic{},
		ByProtocol: map[string]Traffic{},
	}
	for _, a := range n.Addrs() {
		info.Addrs = append(info.Addrs, a.String())
	}
	t := n.bw.GetBandwidthTotals()
	info.Total = Traffic{In: t.TotalIn, Out: t.TotalOut}
	for p, s := range n.bw.GetBandwidthByPeer() {
		info.ByPeer[p.String()] = Traffic{In: s.TotalIn, Out: s.TotalOut}
	}
	for p, s := range n.bw.GetBandwidthByProtocol() {
		info.ByProtocol[string(p)] = Traffic{In: s.TotalIn, Out: s.TotalOut}
	}
	return info
}

func (n *Node) handlePeerInfo(context.Context, peer.ID, []byte) ([]byte, error) {
	return json.Marshal(n.Info())
}

// PeerInfoOf asks p for its peer information.
func (n *Node) PeerInfoOf(ctx context.Context, p peer.ID) (PeerInfo, error) {
	var info PeerInfo
	b, err := n.res.Query(ctx, p, HandlerPeerInfo, nil)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("peer info from %s: %w", p, err)
	}
	return info, nil
}

// KnownPeer is a peer this node is connected to or holds a peer advertisement of.
type KnownPeer struct {
	ID        peer.ID
	Name      string
	Addrs     []string
	Connected bool
	Role      string
}

// Peers lists connected peers and peers known from their advertisements, sorted by ID.
func (n *Node) Peers() []KnownPeer {
	byID := map[peer.ID]*KnownPeer{}
	for _, s := range n.cache.Query(advert.Query{Kind: advert.KindPeer}) {
		a := s.Advert
		if a.Publisher == n.h.ID() {
			continue
		}
		kp := &KnownPeer{ID: a.Publisher, Name: a.Name, Role: a.Attrs["role"]}
		for _, m := range a.Addrs {
			kp.Addrs = append(kp.Addrs, m.String())
		}
		byID[a.Publisher] = kp
	}
	for _, p := range n.h.Network().Peers() {
		kp, ok := byID[p]
		if !ok {
			kp = &KnownPeer{ID: p}
			for _, m := range n.h.Peerstore().Addrs(p) {
				kp.Addrs = append(kp.Addrs, m.String())
			}
			byID[p] = kp
		}
		kp.Connected = n.h.Network().Connectedness(p) == network.Connected
	}
	out := make([]KnownPeer, 0, len(byID))
	for _, kp := range byID {
		out = append(out, *kp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Stats are the node's counters of rejected input, by reason, and of the advert cache.
type Stats struct {
	Cache    advert.Stats
	Rejected map[string]uint64
	Uptime   time.Duration
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{Cache: n.cache.Stats(), Rejected: n.stats.snapshot(), Uptime: n.cfg.Now().Sub(n.start)}
}
