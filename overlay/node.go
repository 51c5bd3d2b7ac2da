package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/advert"
)

// CacheFile is the name of the advert cache file in a data directory.
const CacheFile = "adverts.db"

// PubSubMaxMessageSize is the gossipsub message size limit every raftcast host uses.
const PubSubMaxMessageSize = 4 << 20

// Node is one raftcast peer: a libp2p host with discovery (DHT, mDNS, rendezvous index),
// the resolver, peer information and, for rendezvous nodes, the rendezvous services.
type Node struct {
	cfg     Config
	log     *slog.Logger
	key     crypto.PrivKey
	h       host.Host
	dht     *dht.IpfsDHT
	ps      *pubsub.PubSub
	cache   *advert.Cache
	res     *Resolver
	bw      *metrics.BandwidthCounter
	mdns    mdns.Service
	index   *index // nil unless RoleRendezvous
	start   time.Time
	rdv     []peer.AddrInfo
	stats   *rejectStats
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Mutex // guards closed
	closed  bool

	mu        sync.Mutex // guards peerAttrs, own, lastSeq
	peerAttrs map[string]string
	own       map[advert.Key]*advert.Advert // adverts this node publishes and refreshes
	lastSeq   map[advert.Key]uint64
}

// New builds and starts a node's host and services. Call Start to join the overlay.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var key crypto.PrivKey
	var err error
	if cfg.DataDir != "" {
		key, err = LoadOrCreateKey(cfg.DataDir)
	} else {
		key, _, err = crypto.GenerateEd25519Key(nil)
	}
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger,
		key:       key,
		start:     cfg.Now(),
		stats:     newRejectStats(),
		peerAttrs: map[string]string{},
		own:       map[advert.Key]*advert.Advert{},
		lastSeq:   map[advert.Key]uint64{},
	}
	for _, a := range cfg.Bootstrap {
		ai, _ := peerInfo(a)
		n.rdv = append(n.rdv, ai)
	}
	n.rdv = mergeAddrInfos(n.rdv)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.build(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) build() error {
	cfg := n.cfg
	cacheCfg := advert.DefaultCacheConfig()
	cacheCfg.MaxEntries = cfg.CacheEntries
	cacheCfg.Now = cfg.Now
	cacheCfg.Logger = n.log
	if cfg.DataDir != "" {
		cacheCfg.Path = filepath.Join(cfg.DataDir, CacheFile)
	}
	var err error
	if n.cache, err = advert.NewCache(cacheCfg); err != nil {
		return fmt.Errorf("advert cache: %w", err)
	}

	limiter := rcmgr.NewFixedLimiter(rcmgr.DefaultLimits.AutoScale())
	rm, err := rcmgr.NewResourceManager(limiter)
	if err != nil {
		return fmt.Errorf("resource manager: %w", err)
	}
	n.bw = metrics.NewBandwidthCounter()
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		for _, s := range []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1", "/ip6/::/tcp/0", "/ip6/::/udp/0/quic-v1"} {
			listen = append(listen, ma.StringCast(s))
		}
	}
	opts := []libp2p.Option{
		libp2p.Identity(n.key),
		libp2p.ListenAddrs(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		// TLS first: TLS 1.3 negotiates AES-GCM, which AES-NI makes cheaper than Noise's
		// ChaCha20-Poly1305 (about 15% fewer CPU-seconds per GB on one stream between two
		// hosts here); Noise stays for peers that prefer it.
		libp2p.Security(tls.ID, tls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.BandwidthReporter(n.bw),
		libp2p.UserAgent("raftcast/0.1"),
		libp2p.DisableMetrics(),
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(),
	}
	if cfg.Role == RoleRendezvous {
		opts = append(opts, libp2p.EnableRelayService(), libp2p.EnableNATService(), libp2p.ForceReachabilityPublic())
	} else if len(n.rdv) > 0 {
		opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(n.rdv))
	}
	if n.h, err = libp2p.New(opts...); err != nil {
		return fmt.Errorf("libp2p host: %w", err)
	}

	mode := dht.ModeAutoServer
	if cfg.DHTServer || cfg.Role == RoleRendezvous {
		mode = dht.ModeServer
	}
	if n.dht, err = dht.New(n.h,
		dht.ProtocolPrefix(DHTPrefix),
		dht.Mode(mode),
		dht.NamespacedValidator(DHTNamespace, dhtValidator{now: cfg.Now, stats: n.stats}),
		dht.BootstrapPeers(n.rdv...),
	); err != nil {
		return fmt.Errorf("kad-dht: %w", err)
	}
	if n.ps, err = pubsub.NewGossipSub(n.ctx, n.h,
		pubsub.WithMaxMessageSize(PubSubMaxMessageSize),
		pubsub.WithPeerOutboundQueueSize(1024),
		pubsub.WithValidateQueueSize(1024),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		// A node that publishes right after joining a topic reaches its peers before its
		// mesh forms (pipes' propagate messages, chat).
		pubsub.WithFloodPublish(true),
	); err != nil {
		return fmt.Errorf("gossipsub: %w", err)
	}
	n.res = newResolver(n.h, cfg.QueryTimeout, n.log)
	n.res.Handle(HandlerAdverts, n.handleAdverts)
	n.res.Handle(HandlerPeerInfo, n.handlePeerInfo)
	if cfg.Role == RoleRendezvous {
		n.index, err = newIndex(cfg, n.stats)
		if err != nil {
			return err
		}
		n.res.Handle(HandlerIndexPublish, n.index.handlePublish)
		n.res.Handle(HandlerIndexQuery, n.index.handleQuery)
	}
	if cfg.MDNS {
		n.mdns = mdns.NewMdnsService(n.h, MDNSService, mdnsNotifee{n})
		if err := n.mdns.Start(); err != nil {
			n.log.Warn("mDNS not started", "err", err)
			n.mdns = nil
		}
	}
	return nil
}

// Start joins the overlay: connects to the bootstrap peers, bootstraps the DHT, publishes the
// peer advertisement and starts refreshing it. It returns once the peer advertisement is in the
// local cache and was offered to the reachable rendezvous nodes.
func (n *Node) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, ai := range n.rdv {
		wg.Add(1)
		go func(ai peer.AddrInfo) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, n.cfg.QueryTimeout)
			defer cancel()
			if err := n.h.Connect(cctx, ai); err != nil {
				n.log.Warn("bootstrap peer unreachable", "peer", ai.ID, "err", err)
			}
		}(ai)
	}
	wg.Wait()
	if err := n.dht.Bootstrap(ctx); err != nil {
		n.log.Warn("DHT bootstrap", "err", err)
	}
	if _, err := n.publishPeerAdvert(ctx); err != nil {
		return fmt.Errorf("publishing peer advertisement: %w", err)
	}
	n.goFunc(n.refreshLoop)
	return nil
}

// goFunc runs f in a goroutine owned by the node; Close waits for it.
func (n *Node) goFunc(f func(ctx context.Context)) {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if n.closed {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
}

// Host returns the libp2p host.
func (n *Node) Host() host.Host { return n.h }

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.h.ID() }

// PrivateKey returns the node's identity key.
func (n *Node) PrivateKey() crypto.PrivKey { return n.key }

// PubSub returns the node's one gossipsub router.
func (n *Node) PubSub() *pubsub.PubSub { return n.ps }

// DHT returns the node's kad-DHT.
func (n *Node) DHT() *dht.IpfsDHT { return n.dht }

// Resolver returns the node's resolver (PRP).
func (n *Node) Resolver() *Resolver { return n.res }

// Cache returns the node's advert cache.
func (n *Node) Cache() *advert.Cache { return n.cache }

// Role returns the node's role.
func (n *Node) Role() Role { return n.cfg.Role }

// Name returns the node's human name.
func (n *Node) Name() string {
	if n.cfg.Name != "" {
		return n.cfg.Name
	}
	s := n.h.ID().String()
	return s[len(s)-8:]
}

// Rendezvous returns the node's bootstrap (rendezvous) peers.
func (n *Node) Rendezvous() []peer.AddrInfo { return append([]peer.AddrInfo(nil), n.rdv...) }

// Addrs returns the node's addresses as full multiaddrs with /p2p/.
func (n *Node) Addrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// Close shuts the node down: background work, discovery, DHT, host, then the stores.
func (n *Node) Close() error {
	n.closeMu.Lock()
	if n.closed {
		n.closeMu.Unlock()
		return nil
	}
	n.closed = true
	n.closeMu.Unlock()
	n.cancel()
	n.wg.Wait()
	var errs []error
	if n.mdns != nil {
		errs = append(errs, n.mdns.Close())
	}
	if n.dht != nil {
		errs = append(errs, n.dht.Close())
	}
	if n.h != nil {
		errs = append(errs, n.h.Close())
	}
	if n.index != nil {
		errs = append(errs, n.index.close())
	}
	if n.cache != nil && n.cfg.DataDir != "" {
		errs = append(errs, n.cache.Save())
	}
	return errors.Join(errs...)
}

// peerInfo parses a full multiaddr with /p2p/.
func peerInfo(a ma.Multiaddr) (peer.AddrInfo, error) {
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("want a full address ending in /p2p/<peer id>: %w", err)
	}
	return *ai, nil
}

func mergeAddrInfos(in []peer.AddrInfo) []peer.AddrInfo {
	idx := map[peer.ID]int{}
	var out []peer.AddrInfo
	for _, ai := range in {
		if i, ok := idx[ai.ID]; ok {
			out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
			continue
		}
		idx[ai.ID] = len(out)
		out = append(out, ai)
	}
	return out
}

type mdnsNotifee struct{ n *Node }

func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	n := m.n
	if ai.ID == n.h.ID() {
		return
	}
	n.goFunc(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, n.cfg.QueryTimeout)
		defer cancel()
		if err := n.h.Connect(ctx, ai); err != nil {
			n.log.Debug("mDNS peer unreachable", "peer", ai.ID, "err", err)
			return
		}
		n.log.Info("found peer on the LAN", "peer", ai.ID)
		// Learn its advertisements (its peer advert at least).
		n.queryPeer(ctx, ai.ID, HandlerAdverts, advert.Query{Kind: advert.KindPeer, ID: ai.ID.String()})
	})
}
