package advert

import (
	"bufio"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// CacheConfig configures a Cache.
type CacheConfig struct {
	// Path is the file the cache is loaded from and saved to; "" keeps it in memory only.
	Path string
	// MaxEntries bounds the number of advertisements kept (default 10000). When full, the
	// entry that expires soonest is evicted.
	MaxEntries int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives load and eviction events (default: discard).
	Logger *slog.Logger
}

// DefaultCacheConfig returns a memory-only configuration with the defaults filled in.
func DefaultCacheConfig() CacheConfig {
	return CacheConfig{
		MaxEntries: 10000,
		Now:        time.Now,
		Logger:     slog.New(slog.DiscardHandler),
	}
}

func (c *CacheConfig) validate() error {
	d := DefaultCacheConfig()
	if c.MaxEntries == 0 {
		c.MaxEntries = d.MaxEntries
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.MaxEntries < 0 {
		return fmt.Errorf("advert: cache MaxEntries %d is negative", c.MaxEntries)
	}
	return nil
}

// Stats counts what a Cache accepted and rejected.
type Stats struct {
	// Entries is the number of advertisements held (expired ones not yet dropped included).
	Entries int
	// Accepted counts advertisements stored by Put and Add.
	Accepted uint64
	// Rejected counts rejections by Put and Add, keyed by Reason.
	Rejected map[string]uint64
}

// Cache holds verified advertisements: the highest Seq per Key, at most MaxEntries of them,
// optionally persisted to a file. It is safe for concurrent use.
type Cache struct {
	cfg CacheConfig

	// saveMu serialises Save, so an older snapshot never replaces a newer one on disk.
	saveMu sync.Mutex

	// mu guards entries, the indexes (byKind, byPublisher, byID, byExpiry), accepted and
	// rejected. No I/O is done while it is held.
	mu          sync.RWMutex
	entries     map[Key]*cacheEntry
	byKind      map[Kind]map[Key]*cacheEntry
	byPublisher map[peer.ID]map[Key]*cacheEntry
	byID        map[string]map[Key]*cacheEntry
	byExpiry    expiryHeap
	accepted    uint64
	rejected    map[string]uint64
}

type cacheEntry struct {
	s     *Signed
	index int // position in byExpiry
}

// NewCache returns a cache and, when cfg.Path names an existing file, loads it: every entry
// is re-verified with Open; bad, expired or stale entries are skipped and logged, and a
// truncated or corrupted file yields the entries before the damage. Only an unreadable file
// (other than a missing one) is an error.
func NewCache(cfg CacheConfig) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Cache{
		cfg:         cfg,
		entries:     make(map[Key]*cacheEntry),
		byKind:      make(map[Kind]map[Key]*cacheEntry),
		byPublisher: make(map[peer.ID]map[Key]*cacheEntry),
		byID:        make(map[string]map[Key]*cacheEntry),
		rejected:    make(map[string]uint64),
	}
	if cfg.Path != "" {
		if err := c.load(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Put stores a verified advertisement (from Open or Seal; Put does not re-verify it). It
// returns true if stored; false with ErrExpired if s has expired, or with ErrStale if the
// cache holds the same Key with an equal or higher Seq. When the cache is full, the entry
// expiring soonest is evicted.
func (c *Cache) Put(s *Signed) (stored bool, err error) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	err = c.putLocked(s, now)
	c.countLocked(err)
	return err == nil, err
}

// Add opens data (see Open) at the cache's clock and stores the result (see Put). Every
// rejection is counted in Stats under its Reason.
func (c *Cache) Add(data []byte) (*Signed, error) {
	now := c.cfg.Now()
	s, err := Open(data, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		err = c.putLocked(s, now)
	}
	c.countLocked(err)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (c *Cache) countLocked(err error) {
	if err == nil {
		c.accepted++
	} else {
		c.rejected[Reason(err)]++
	}
}

func (c *Cache) putLocked(s *Signed, now time.Time) error {
	if s == nil || s.Advert == nil {
		return fmt.Errorf("%w: nil signed advert", ErrMalformed)
	}
	a := s.Advert
	if a.Expired(now) {
		return fmt.Errorf("%w: %s expired at %v", ErrExpired, a.Key(), a.Expires)
	}
	k := a.Key()
	if e, ok := c.entries[k]; ok {
		if old := e.s.Advert; old.Seq >= a.Seq && !old.Expired(now) {
			return fmt.Errorf("%w: %s seq %d, have %d", ErrStale, k, a.Seq, old.Seq)
		}
		e.s = s
		heap.Fix(&c.byExpiry, e.index)
		return nil
	}
	if len(c.entries) >= c.cfg.MaxEntries {
		c.expireLocked(now)
	}
	for len(c.entries) >= c.cfg.MaxEntries {
		e := c.byExpiry[0]
		c.deleteLocked(e)
		c.cfg.Logger.Debug("advert cache full: evicted", "key", e.s.Key().String(), "expires", e.s.Advert.Expires)
	}
	c.insertLocked(&cacheEntry{s: s})
	return nil
}

// insertLocked adds e, whose key must not be present, to the map and every index.
func (c *Cache) insertLocked(e *cacheEntry) {
	k := e.s.Key()
	c.entries[k] = e
	addIndex(c.byKind, k.Kind, k, e)
	addIndex(c.byPublisher, k.Publisher, k, e)
	addIndex(c.byID, k.ID, k, e)
	heap.Push(&c.byExpiry, e)
}

// deleteLocked removes e from the map and every index.
func (c *Cache) deleteLocked(e *cacheEntry) {
	k := e.s.Key()
	delete(c.entries, k)
	delIndex(c.byKind, k.Kind, k)
	delIndex(c.byPublisher, k.Publisher, k)
	delIndex(c.byID, k.ID, k)
	heap.Remove(&c.byExpiry, e.index)
}

func addIndex[T comparable](idx map[T]map[Key]*cacheEntry, v T, k Key, e *cacheEntry) {
	m, ok := idx[v]
	if !ok {
		m = make(map[Key]*cacheEntry)
		idx[v] = m
	}
	m[k] = e
}

func delIndex[T comparable](idx map[T]map[Key]*cacheEntry, v T, k Key) {
	if m, ok := idx[v]; ok {
		delete(m, k)
		if len(m) == 0 {
			delete(idx, v)
		}
	}
}

// candidatesLocked returns the smallest set of entries that holds every match of q.
func (c *Cache) candidatesLocked(q Query) map[Key]*cacheEntry {
	best := c.entries
	if q.Kind != 0 {
		if m := c.byKind[q.Kind]; len(m) < len(best) {
			best = m
		}
	}
	if q.Publisher != "" {
		if m := c.byPublisher[q.Publisher]; len(m) < len(best) {
			best = m
		}
	}
	if q.ID != "" {
		if m := c.byID[q.ID]; len(m) < len(best) {
			best = m
		}
	}
	return best
}

// Get returns the live advertisement stored under k.
func (c *Cache) Get(k Key) (*Signed, bool) {
	now := c.cfg.Now()
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.entries[k]
	if !ok || e.s.Advert.Expired(now) {
		return nil, false
	}
	return e.s, true
}

// Query returns the live advertisements matching q, sorted by kind, name, ID and publisher,
// at most q.Limit of them (all if 0).
func (c *Cache) Query(q Query) []*Signed {
	now := c.cfg.Now()
	var out []*Signed
	c.mu.RLock()
	for _, e := range c.candidatesLocked(q) {
		if a := e.s.Advert; q.Match(a) && !a.Expired(now) {
			out = append(out, e.s)
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(out, compareSigned)
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit:q.Limit]
	}
	return out
}

// compareSigned orders advertisements by kind, name, ID and publisher.
func compareSigned(x, y *Signed) int {
	a, b := x.Advert, y.Advert
	if a.Kind != b.Kind {
		return cmp.Compare(a.Kind, b.Kind)
	}
	if a.Name != b.Name {
		return cmp.Compare(a.Name, b.Name)
	}
	if a.ID != b.ID {
		return cmp.Compare(a.ID, b.ID)
	}
	return cmp.Compare(a.Publisher, b.Publisher)
}

// Remove drops the advertisement stored under k, if any.
func (c *Cache) Remove(k Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		c.deleteLocked(e)
	}
}

// Expire drops every expired advertisement and returns how many it dropped.
func (c *Cache) Expire() int {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expireLocked(now)
}

func (c *Cache) expireLocked(now time.Time) int {
	n := 0
	for len(c.byExpiry) > 0 && c.byExpiry[0].s.Advert.Expired(now) {
		c.deleteLocked(c.byExpiry[0])
		n++
	}
	return n
}

// Len returns the number of advertisements held, expired ones not yet dropped included.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Stats returns a copy of the cache's counters.
func (c *Cache) Stats() Stats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r := make(map[string]uint64, len(c.rejected))
	for k, v := range c.rejected {
		r[k] = v
	}
	return Stats{Entries: len(c.entries), Accepted: c.accepted, Rejected: r}
}

// The cache file: fileMagic, then for each advertisement a uvarint length and that many
// bytes of signed envelope.
const fileMagic = "raftcast-adverts/1\n"

// Save writes every live advertisement to the configured Path atomically (a temporary file in
// the same directory, fsynced, renamed over Path, mode 0600). Without a Path it does nothing.
func (c *Cache) Save() error {
	if c.cfg.Path == "" {
		return nil
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()

	now := c.cfg.Now()
	c.mu.RLock()
	snap := make([]*Signed, 0, len(c.entries))
	for _, e := range c.entries {
		if !e.s.Advert.Expired(now) {
			snap = append(snap, e.s)
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(snap, func(x, y *Signed) int { return cmp.Compare(x.Key().String(), y.Key().String()) })

	dir := filepath.Dir(c.cfg.Path)
	f, err := os.CreateTemp(dir, filepath.Base(c.cfg.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("advert: save cache: %w", err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("advert: save cache: %w", err)
	}
	w := bufio.NewWriter(f)
	_, _ = w.WriteString(fileMagic)
	var lenBuf [binary.MaxVarintLen64]byte
	for _, s := range snap {
		_, _ = w.Write(binary.AppendUvarint(lenBuf[:0], uint64(len(s.Envelope))))
		_, _ = w.Write(s.Envelope)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("advert: save cache: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("advert: save cache: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("advert: save cache: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, c.cfg.Path); err != nil {
		_ = os.Remove(tmp)
		done = true
		return fmt.Errorf("advert: save cache: %w", err)
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// load reads cfg.Path into the cache; see NewCache.
func (c *Cache) load() error {
	f, err := os.Open(c.cfg.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("advert: load cache: %w", err)
	}
	defer f.Close()
	log := c.cfg.Logger.With("path", c.cfg.Path)
	r := bufio.NewReader(f)
	magic := make([]byte, len(fileMagic))
	if _, err := io.ReadFull(r, magic); err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return fmt.Errorf("advert: load cache: %w", err)
	} else if err != nil || string(magic) != fileMagic {
		log.Warn("advert cache file has no valid header; starting empty", "err", err)
		return nil
	}
	now := c.cfg.Now()
	var loaded, skipped int
	buf := make([]byte, MaxEnvelopeSize)
	for {
		n, err := binary.ReadUvarint(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Warn("advert cache file truncated or corrupted; keeping the entries before it", "loaded", loaded, "err", err)
			break
		}
		if n == 0 || n > MaxEnvelopeSize {
			log.Warn("advert cache file corrupted: bad entry length; keeping the entries before it", "loaded", loaded, "length", n)
			break
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			log.Warn("advert cache file truncated; keeping the entries before it", "loaded", loaded, "err", err)
			break
		}
		s, err := Open(buf[:n], now)
		if err == nil {
			c.mu.Lock()
			err = c.putLocked(s, now)
			c.mu.Unlock()
		}
		if err != nil {
			skipped++
			log.Debug("advert cache entry skipped", "reason", Reason(err), "err", err)
			continue
		}
		loaded++
	}
	log.Info("advert cache loaded", "loaded", loaded, "skipped", skipped)
	return nil
}

// expiryHeap is a min-heap of entries by expiry time, for eviction and expiry.
type expiryHeap []*cacheEntry

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	return h[i].s.Advert.Expires.Before(h[j].s.Advert.Expires)
}
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*cacheEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}
