package pipes

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/raftcast/raftcast/advert"
)

// bind publishes the binding of spec by this node and keeps it refreshed until unbind.
func (s *Service) bind(ctx context.Context, spec PipeSpec) error {
	if err := s.publishBinding(ctx, spec, true); err != nil {
		return fmt.Errorf("pipes: publish binding of %q: %w", spec.Name, err)
	}
	s.mu.Lock()
	s.bindings[spec.ID] = spec
	s.mu.Unlock()
	return nil
}

// unbind stops refreshing the binding and publishes its withdrawal in the background (bounded
// by HandshakeTimeout; Service.Close waits for it).
func (s *Service) unbind(spec PipeSpec) {
	s.mu.Lock()
	_, ok := s.bindings[spec.ID]
	delete(s.bindings, spec.ID)
	s.mu.Unlock()
	if !ok {
		return
	}
	s.res.invalidate(spec.ID)
	s.goFunc(func() {
		// Not s.ctx: the withdrawal should still go out while the service closes.
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
		defer cancel()
		if err := s.publishBinding(ctx, spec, false); err != nil {
			s.log.Debug("withdraw binding", "pipe", spec.ID, "err", err)
		}
	})
}

func (s *Service) publishBinding(ctx context.Context, spec PipeSpec, bound bool) error {
	a := spec.Advert(bound)
	now := s.now()
	a.Created = now
	// A withdrawal lives as long as the binding it replaces, so it supersedes cached copies.
	a.Expires = now.Add(s.cfg.BindingTTL)
	_, err := s.ov.Publish(ctx, a)
	return err
}

// refreshLoop re-publishes the live bindings every BindingTTL/2.
func (s *Service) refreshLoop() {
	t := time.NewTicker(s.cfg.BindingTTL / 2)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		specs := make([]PipeSpec, 0, len(s.bindings))
		for _, sp := range s.bindings {
			specs = append(specs, sp)
		}
		s.mu.Unlock()
		for _, sp := range specs {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
			if err := s.publishBinding(ctx, sp, true); err != nil {
				s.log.Warn("refresh binding", "pipe", sp.ID, "err", err)
			}
			cancel()
		}
	}
}

// resolver finds the peers bound to a pipe through the overlay's Discover and caches them.
type resolver struct {
	s *Service

	mu    sync.Mutex // guards cache
	cache map[string]resolved
}

type resolved struct {
	peers []peer.ID
	at    time.Time
}

// maxCachedPipes bounds the resolver cache.
const maxCachedPipes = 4096

func newResolver(s *Service) *resolver {
	return &resolver{s: s, cache: make(map[string]resolved)}
}

// resolve returns the bound peers of spec, sorted, from the cache unless fresh or expired.
func (r *resolver) resolve(ctx context.Context, spec PipeSpec, fresh bool) ([]peer.ID, error) {
	now := r.s.now()
	if !fresh {
		r.mu.Lock()
		c, ok := r.cache[spec.ID]
		r.mu.Unlock()
		if ok && now.Sub(c.at) < r.s.cfg.ResolveTTL {
			return c.peers, nil
		}
	}
	// No attribute filter: the newest advert per publisher decides, so a withdrawal
	// (pipe.bound=false) hides an older binding still held by a remote index.
	q := advert.Query{Kind: advert.KindPipe, ID: spec.ID}
	found, err := r.s.ov.Discover(ctx, q, true)
	if err != nil && len(found) == 0 {
		return nil, fmt.Errorf("pipes: resolve %q: %w", spec.Name, err)
	}
	type best struct {
		seq   uint64
		bound bool
	}
	latest := make(map[peer.ID]best)
	for _, sa := range found {
		a := sa.Advert
		if a == nil || a.Kind != advert.KindPipe || a.ID != spec.ID || a.Expired(now) {
			continue
		}
		b, ok := latest[a.Publisher]
		if ok && b.seq >= a.Seq {
			continue
		}
		latest[a.Publisher] = best{seq: a.Seq, bound: a.Attrs[AttrBound] == "true" && a.Attrs[AttrKind] == spec.Kind.String()}
	}
	peers := make([]peer.ID, 0, len(latest))
	for p, b := range latest {
		if b.bound {
			peers = append(peers, p)
		}
	}
	slices.Sort(peers)
	r.mu.Lock()
	if len(r.cache) >= maxCachedPipes {
		for k, v := range r.cache {
			if now.Sub(v.at) >= r.s.cfg.ResolveTTL {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= maxCachedPipes {
			clear(r.cache)
		}
	}
	r.cache[spec.ID] = resolved{peers: peers, at: now}
	r.mu.Unlock()
	return peers, nil
}

func (r *resolver) invalidate(id string) {
	r.mu.Lock()
	delete(r.cache, id)
	r.mu.Unlock()
}
