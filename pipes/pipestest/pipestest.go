// Package pipestest provides an in-memory fake of the overlay node for tests of package pipes
// and of packages built on it: plain libp2p hosts on loopback, one gossipsub each, and a
// shared advertisement directory (in memory, or in a directory of files so that processes in
// network namespaces can share it). Advertisements are really sealed with the host's key and
// opened (verified) on discovery.
package pipestest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/raftcast/raftcast/advert"
	"github.com/zeebo/blake3"
)

// Directory stores sealed advertisements shared by fake nodes.
type Directory interface {
	Put(s *advert.Signed) error
	Find(q advert.Query, now time.Time) ([]*advert.Signed, error)
}

// MemDirectory is an in-memory Directory; the highest Seq per key wins.
type MemDirectory struct {
	mu  sync.Mutex // guards ads
	ads map[advert.Key]*advert.Signed
}

// NewMemDirectory returns an empty in-memory directory.
func NewMemDirectory() *MemDirectory {
	return &MemDirectory{ads: make(map[advert.Key]*advert.Signed)}
}

// Put stores s unless a newer advert with its key is stored.
func (d *MemDirectory) Put(s *advert.Signed) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.ads[s.Key()]; ok && old.Advert.Seq >= s.Advert.Seq {
		return nil
	}
	d.ads[s.Key()] = s
	return nil
}

// Find returns the unexpired adverts matching q.
func (d *MemDirectory) Find(q advert.Query, now time.Time) ([]*advert.Signed, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*advert.Signed
	for _, s := range d.ads {
		if q.Match(s.Advert) && !s.Advert.Expired(now) {
			out = append(out, s)
		}
	}
	return out, nil
}

// FileDirectory is a Directory in a file-system directory: one file per advert key holding
// its envelope, re-verified on every Find. Usable across processes.
type FileDirectory struct {
	Dir string
	mu  sync.Mutex // serialises writers in this process
}

// Put writes s's envelope atomically (newest Seq wins within one process).
func (d *FileDirectory) Put(s *advert.Signed) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := blake3.Sum256([]byte(s.Key().String()))
	name := filepath.Join(d.Dir, hex.EncodeToString(k[:16])+".adv")
	if b, err := os.ReadFile(name); err == nil {
		if old, err := advert.Open(b, time.Now()); err == nil && old.Advert.Seq >= s.Advert.Seq {
			return nil
		}
	}
	tmp := name + fmt.Sprintf(".%d.tmp", os.Getpid())
	if err := os.WriteFile(tmp, s.Envelope, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// Find opens every stored envelope and returns the valid, unexpired ones matching q.
func (d *FileDirectory) Find(q advert.Query, now time.Time) ([]*advert.Signed, error) {
	names, err := filepath.Glob(filepath.Join(d.Dir, "*.adv"))
	if err != nil {
		return nil, err
	}
	var out []*advert.Signed
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		s, err := advert.Open(b, now)
		if err != nil {
			continue
		}
		if q.Match(s.Advert) {
			out = append(out, s)
		}
	}
	return out, nil
}

// Node is a fake overlay node (it implements pipes.Overlay).
type Node struct {
	h   host.Host
	ps  *pubsub.PubSub
	dir Directory

	mu    sync.Mutex // guards attrs
	attrs map[string]string
}

// NewNode returns a fake node over h, ps and dir.
func NewNode(h host.Host, ps *pubsub.PubSub, dir Directory) *Node {
	return &Node{h: h, ps: ps, dir: dir, attrs: make(map[string]string)}
}

func (n *Node) Host() host.Host        { return n.h }
func (n *Node) PubSub() *pubsub.PubSub { return n.ps }

// Publish fills the publisher, times and Seq, seals a with the host's key and stores it.
func (n *Node) Publish(_ context.Context, a *advert.Advert) (*advert.Signed, error) {
	key := n.h.Peerstore().PrivKey(n.h.ID())
	if key == nil {
		return nil, errors.New("pipestest: no private key")
	}
	now := time.Now()
	c := *a
	c.Publisher = n.h.ID()
	if c.Created.IsZero() {
		c.Created = now
	}
	if c.Expires.IsZero() {
		c.Expires = now.Add(time.Hour)
	}
	c.Created = c.Created.Truncate(time.Millisecond)
	c.Expires = c.Expires.Truncate(time.Millisecond)
	c.Seq = uint64(now.UnixNano())
	s, err := advert.Seal(&c, key)
	if err != nil {
		return nil, err
	}
	return s, n.dir.Put(s)
}

// Discover queries the directory (remote makes no difference here).
func (n *Node) Discover(_ context.Context, q advert.Query, _ bool) ([]*advert.Signed, error) {
	return n.dir.Find(q, time.Now())
}

// SetPeerAttr records a peer attribute (see PeerAttr).
func (n *Node) SetPeerAttr(key, value string) {
	n.mu.Lock()
	n.attrs[key] = value
	n.mu.Unlock()
}

// PeerAttr returns an attribute set through SetPeerAttr.
func (n *Node) PeerAttr(key string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.attrs[key]
}

// NewHost returns a libp2p host listening on 127.0.0.1 (TCP, port 0), closed at the end of
// the test.
func NewHost(tb testing.TB, opts ...libp2p.Option) host.Host {
	tb.Helper()
	opts = append([]libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")}, opts...)
	h, err := libp2p.New(opts...)
	if err != nil {
		tb.Fatalf("libp2p host: %v", err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	return h
}

// PubSubOptions are the gossipsub options the overlay is expected to use: a 2 MiB maximum
// message size and queues that do not drop bursts.
func PubSubOptions() []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithMaxMessageSize(2 << 20),
		pubsub.WithPeerOutboundQueueSize(8192),
		pubsub.WithValidateQueueSize(8192),
	}
}

// NewPubSub returns a gossipsub on h with PubSubOptions and opts.
func NewPubSub(tb testing.TB, h host.Host, opts ...pubsub.Option) *pubsub.PubSub {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	ps, err := pubsub.NewGossipSub(ctx, h, append(PubSubOptions(), opts...)...)
	if err != nil {
		tb.Fatalf("gossipsub: %v", err)
	}
	return ps
}

// Connect connects a to b.
func Connect(tb testing.TB, a, b host.Host) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		tb.Fatalf("connect %s to %s: %v", a.ID(), b.ID(), err)
	}
}
