package coop

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/raftcast/raftcast/peergroup"
	"github.com/raftcast/raftcast/transfer/store"
)

// The cache is this node's slices of HTTP resources: one store.Store per resource version
// and slicing, shared by the member role (what it fetched) and the requester role (what it
// receives). A version with no validator cannot be recognised again, so its store is keyed
// by the task and dropped when the task ends.

// cacheKey returns the store key of a task's resource version and slicing, and whether the
// key outlives the task (the version has a validator).
func cacheKey(t *peergroup.Task) (string, bool) {
	v := validatorOf(t.Validators)
	if v == "" {
		return store.KeyFor("task", t.ID, t.URL), false
	}
	return store.KeyFor(t.URL, v, strconv.FormatInt(t.Size, 10), strconv.FormatInt(t.SliceSize, 10)), true
}

// validatorOf is Resource.Validator for the validators a task records.
func validatorOf(v peergroup.Validators) string {
	return Resource{ETag: v.ETag, LastModified: v.LastModified}.Validator()
}

func layoutOf(t *peergroup.Task) store.Layout {
	return store.Layout{Size: t.Size, SliceSize: int(t.SliceSize)}
}

// errDropping: the entry is being deleted; open it again once its last user let go.
var errDropping = errors.New("coop: cache entry being dropped")

type cache struct {
	dir string
	log *slog.Logger

	mu      sync.Mutex // guards entries
	entries map[string]*entry
}

// entry is one open store with its users.
type entry struct {
	key    string
	layout store.Layout
	st     *store.Store
	refs   int  // guarded by cache.mu
	doomed bool // guarded by cache.mu: delete the files when the last user lets go

	mu       sync.Mutex                 // guards inflight and waiters
	inflight map[int]bool               // slices some worker of this node is fetching
	waiters  map[chan struct{}]struct{} // woken when a slice lands or a fetch ends
}

func newCache(dir string, log *slog.Logger) (*cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("coop: cache directory: %w", err)
	}
	return &cache{dir: dir, log: log, entries: make(map[string]*entry)}, nil
}

// open returns the entry for key, opening its store (resuming from its bitmap) if needed.
// Each open needs one release.
func (c *cache) open(key string, layout store.Layout) (*entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil {
		if e.doomed {
			return nil, errDropping
		}
		if e.layout != layout {
			return nil, fmt.Errorf("%w: cache entry %s has layout %+v, asked %+v", ErrBadRequest, key, e.layout, layout)
		}
		e.refs++
		return e, nil
	}
	cfg := store.DefaultConfig()
	cfg.Dir, cfg.Key, cfg.Layout, cfg.Verify = c.dir, key, layout, store.LengthOnly
	cfg.ReverifyOnOpen = false // nothing to verify a manifest-less slice against
	// Persist the bitmap about every 32 MiB (at least every 32 slices): small slices would
	// otherwise fsync the part file every few megabytes (the requester also flushes before
	// each SlicesDone report, which bounds what a crash loses).
	cfg.FlushEvery = max(cfg.FlushEvery, int((32<<20)/max(layout.SliceSize, 1)))
	st, err := store.Open(cfg)
	if err != nil {
		return nil, err
	}
	e := &entry{key: key, layout: layout, st: st, refs: 1, inflight: make(map[int]bool), waiters: make(map[chan struct{}]struct{})}
	c.entries[key] = e
	return e, nil
}

// release drops one reference; the last one closes the store, keeping its files unless
// the entry was dropped.
func (c *cache) release(e *entry) { c.let(e, false) }

// drop releases e and has its files deleted once nobody uses it: for versions that changed,
// failed their checksum, or cannot be recognised again.
func (c *cache) drop(e *entry) { c.let(e, true) }

func (c *cache) let(e *entry, doom bool) {
	c.mu.Lock()
	e.refs--
	e.doomed = e.doomed || doom
	last, doomed := e.refs == 0, e.doomed
	if last {
		delete(c.entries, e.key)
	}
	c.mu.Unlock()
	if !last {
		return
	}
	var err error
	if doomed {
		err = e.st.Remove()
	} else {
		err = e.st.Close()
	}
	if err != nil {
		c.log.Warn("closing cache store", "key", e.key, "remove", doomed, "err", err)
	}
}

// have returns the bitmap (store.Bitmap bytes) of key's slices held here or being read from
// the origin now, without creating a store that does not exist. n is the slice count the
// asker expects.
func (c *cache) have(key string, n int) ([]byte, error) {
	if err := validCacheKey(key); err != nil {
		return nil, err
	}
	c.mu.Lock()
	e := c.entries[key]
	if e != nil {
		e.refs++
	}
	c.mu.Unlock()
	if e == nil { // not open: read the bitmap file of a store closed earlier, if any
		return readBitmapFile(filepath.Join(c.dir, key+".have"), n), nil
	}
	defer c.release(e)
	if e.layout.NumSlices() != n {
		return nil, nil
	}
	// The slice each fetch is reading now counts as held: it is on its way, and a steal
	// that moved it would have the origin send it twice (a fetch stops between slices, not
	// within one). The rest of a fetch's range may move: the fetch stops after its slice.
	b := e.st.Have()
	e.mu.Lock()
	for i := range e.inflight {
		if i == 0 || !e.inflight[i-1] {
			b.Set(i)
		}
	}
	e.mu.Unlock()
	return b.Bytes(), nil
}

// readBitmapFile reads a store's bitmap file ("RCBM" | version | size | slice size | bitmap |
// BLAKE3) without opening the store; a file that does not fit n slices gives nil. The store
// checks the checksum when it opens; here a damaged file only misleads the leader's plan,
// and the member then fetches from the origin instead.
func readBitmapFile(path string, n int) []byte {
	raw, err := os.ReadFile(path)
	want := 17 + (n+7)/8 + 32
	if err != nil || len(raw) != want || string(raw[:4]) != "RCBM" {
		return nil
	}
	return raw[17 : 17+(n+7)/8]
}

func validCacheKey(k string) error {
	if k == "" || len(k) > 200 {
		return fmt.Errorf("%w: cache key", ErrBadRequest)
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("%w: cache key %q", ErrBadRequest, k)
		}
	}
	return nil
}

// closeAll closes every open store (Service.Close, after every user stopped).
func (c *cache) closeAll() {
	c.mu.Lock()
	es := make([]*entry, 0, len(c.entries))
	for _, e := range c.entries {
		es = append(es, e)
	}
	clear(c.entries)
	c.mu.Unlock()
	for _, e := range es {
		_ = e.st.Close()
	}
}

// subscribe returns a channel woken (coalesced) when a slice lands in e or a fetch of e ends.
func (e *entry) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	e.mu.Lock()
	e.waiters[ch] = struct{}{}
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.waiters, ch)
		e.mu.Unlock()
	}
}

func (e *entry) notify() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.waiters {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// claim marks the slices of sp not held and not in flight as in flight, and returns them.
func (e *entry) claim(idx []int) []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []int
	for _, i := range idx {
		if !e.inflight[i] && !e.st.Has(i) {
			e.inflight[i] = true
			out = append(out, i)
		}
	}
	return out
}

func (e *entry) unclaim(i int) {
	e.mu.Lock()
	delete(e.inflight, i)
	e.mu.Unlock()
}

func (e *entry) isInflight(i int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inflight[i]
}
