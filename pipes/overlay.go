package pipes

import (
	"context"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/raftcast/raftcast/advert"
)

// Overlay is what the pipe service needs from the overlay node (*overlay.Node implements it;
// pipestest.Node is an in-memory fake for tests).
type Overlay interface {
	// Host is the node's libp2p host; its peerstore holds the node's private key.
	Host() host.Host
	// PubSub is the node's one gossipsub, with its maximum message size raised above
	// Config.MaxPropagateSize plus 8 KiB and queues sized for bursts.
	PubSub() *pubsub.PubSub
	// Publish seals and publishes an advertisement (fills Publisher, Created, Expires if zero
	// and Seq).
	Publish(ctx context.Context, a *advert.Advert) (*advert.Signed, error)
	// Discover returns verified advertisements matching q, from the local cache and, when
	// remote is true, from the rest of the overlay.
	Discover(ctx context.Context, q advert.Query, remote bool) ([]*advert.Signed, error)
	// SetPeerAttr sets an attribute of this node's peer advertisement and republishes it.
	SetPeerAttr(key, value string)
}
