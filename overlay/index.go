package overlay

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/advert"
)

// IndexFile is the name of a rendezvous node's advertisement index in its data directory.
const IndexFile = "index.db"

// index is a rendezvous node's advertisement index (JXTA's SRDI): peers publish their own
// advertisements to it and anyone queries it. Each publisher holds at most quota entries.
type index struct {
	cache *advert.Cache
	quota int
	stats *rejectStats
	save  bool
	now   func() time.Time

	mu sync.Mutex // serialises quota checks with insertions
}

func newIndex(cfg Config, stats *rejectStats) (*index, error) {
	c := advert.DefaultCacheConfig()
	c.MaxEntries = cfg.CacheEntries
	c.Now = cfg.Now
	c.Logger = cfg.Logger
	if cfg.DataDir != "" {
		c.Path = filepath.Join(cfg.DataDir, IndexFile)
	}
	cache, err := advert.NewCache(c)
	if err != nil {
		return nil, fmt.Errorf("rendezvous index: %w", err)
	}
	return &index{cache: cache, quota: cfg.IndexQuota, stats: stats, save: cfg.DataDir != "", now: cfg.Now}, nil
}

// ErrQuota is returned when a peer publishes more adverts than the index keeps for one peer.
var ErrQuota = errors.New("index: publisher over quota")

// handlePublish stores the caller's own advertisements. Adverts of other publishers are
// refused: each peer speaks for itself.
func (x *index) handlePublish(_ context.Context, from peer.ID, req []byte) ([]byte, error) {
	envs, err := decodeEnvelopes(req)
	if err != nil {
		if errors.Is(err, advert.ErrTooLarge) {
			x.stats.count("index_too_large")
		} else {
			x.stats.count("index_malformed")
		}
		return nil, err
	}
	stored := 0
	var firstErr error
	for _, e := range envs {
		if err := x.add(from, e); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		stored++
	}
	if stored == 0 && firstErr != nil {
		return nil, firstErr
	}
	return nil, nil
}

func (x *index) add(from peer.ID, env []byte) error {
	s, err := advert.Open(env, x.now())
	if err != nil {
		x.stats.count("index_" + advert.Reason(err))
		return err
	}
	if s.Advert.Publisher != from {
		x.stats.count("index_not_own")
		return fmt.Errorf("index: %s may publish only its own advertisements", from)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.cache.Get(s.Advert.Key()); !ok && len(x.cache.Query(advert.Query{Publisher: from, Limit: x.quota})) >= x.quota {
		x.stats.count("index_quota")
		return fmt.Errorf("%w (%d)", ErrQuota, x.quota)
	}
	_, err = x.cache.Put(s)
	if err != nil && !errors.Is(err, advert.ErrStale) {
		return err
	}
	return nil
}

func (x *index) handleQuery(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
	var q advert.Query
	if err := q.UnmarshalBinary(req); err != nil {
		x.stats.count("index_malformed")
		return nil, err
	}
	x.cache.Expire()
	return encodeEnvelopes(envelopesOf(x.cache.Query(q))), nil
}

func (x *index) close() error {
	if x.save {
		return x.cache.Save()
	}
	return nil
}

// IndexQuery queries this rendezvous node's advertisement index; it returns nil on a node
// that is not a rendezvous.
func (n *Node) IndexQuery(q advert.Query) []*advert.Signed {
	if n.index == nil {
		return nil
	}
	n.index.cache.Expire()
	return n.index.cache.Query(q)
}
