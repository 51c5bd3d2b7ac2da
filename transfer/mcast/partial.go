package mcast

import (
	"sync"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/store"
)

// PartialStore keeps slices the multicast delivered only in part, so that a repair fetches
// just the missing parts (swarm.Partials). It is bounded: when full, entries for slices the
// store has meanwhile completed are dropped, and then new partials are refused (those slices
// are repaired whole).
type PartialStore struct {
	st  *store.Store
	max int

	mu      sync.Mutex // guards m, refused
	m       map[int]partial
	refused int64
}

type partial struct {
	buf  []byte
	need uint32
}

// NewPartialStore returns a store of at most max partial slices of st's content.
func NewPartialStore(st *store.Store, max int) *PartialStore {
	return &PartialStore{st: st, max: max, m: make(map[int]partial)}
}

// put keeps buf (slice i, full length) whose parts in need are missing.
func (p *PartialStore) put(i int, buf []byte, need uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.m) >= p.max {
		for j := range p.m {
			if p.st.Has(j) {
				delete(p.m, j)
			}
		}
	}
	if len(p.m) >= p.max {
		p.refused++
		return false
	}
	p.m[i] = partial{buf: buf, need: need}
	return true
}

// Take implements swarm.Partials: it removes and returns slice i's partial copy.
func (p *PartialStore) Take(i int) ([]byte, uint32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.m[i]
	if ok {
		delete(p.m, i)
	}
	return e.buf, e.need, ok
}

// Len returns the number of partial slices held.
func (p *PartialStore) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// needMask returns the parts of an assembly still missing.
func (a *assembly) needMask() uint32 {
	var need uint32
	n := len(a.buf)
	for c := 0; c < a.got.Len(); c++ {
		if !a.got.Has(c) {
			need |= content.PartMask(n, c*a.chunk, min((c+1)*a.chunk, n))
		}
	}
	return need
}
