package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/zeebo/blake3"

	"github.com/raftcast/raftcast/transfer/content"
)

// Sentinel errors.
var (
	// ErrCorrupt: the data failed verification and was not stored. It is content.ErrCorrupt, so
	// errors.Is works with either name.
	ErrCorrupt    = content.ErrCorrupt
	ErrRange      = errors.New("store: slice index out of range")
	ErrMissing    = errors.New("store: slice not held")
	ErrIncomplete = errors.New("store: content incomplete")
	ErrClosed     = errors.New("store: closed")
	ErrReadOnly   = errors.New("store: read-only (source or finalized)")
	ErrBadConfig  = errors.New("store: bad config")
	ErrChanged    = errors.New("store: source file changed since it was sliced")
)

// Layout is the geometry of the stored content.
type Layout struct {
	Size      int64
	SliceSize int
}

// NumSlices returns the number of slices.
func (l Layout) NumSlices() int { return content.NumSlices(l.Size, l.SliceSize) }

// SliceLen returns the length of slice i, or 0 if i is out of range.
func (l Layout) SliceLen(i int) int { return content.SliceLen(l.Size, l.SliceSize, i) }

// Offset returns the byte offset of slice i.
func (l Layout) Offset(i int) int64 { return int64(i) * int64(l.SliceSize) }

// Verifier checks a slice before it is stored. It returns an error wrapping ErrCorrupt if the
// data must not be stored. The store has already checked the index and the length.
type Verifier func(index int, data []byte) error

// LengthOnly is the verifier of manifest-less content (the cooperative HTTP download): the
// store checks the length; the download checks the whole file (sizes, validators, --sha256).
func LengthOnly(int, []byte) error { return nil }

// ManifestVerifier verifies slices against a manifest's hashes.
func ManifestVerifier(m *content.Manifest) Verifier { return m.Verify }

// KeyFor derives a store key from parts that identify a slicing of a resource, for example a
// URL, its validator (ETag or Last-Modified) and the slice size. Each part is length-prefixed,
// so different part lists never collide.
func KeyFor(parts ...string) string {
	h := blake3.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		_, _ = h.Write(n[:])
		_, _ = h.WriteString(p)
	}
	return fmt.Sprintf("k%x", h.Sum(nil))
}

// Config configures a Store.
type Config struct {
	Dir    string // where <Key>.part and <Key>.have live; created if missing
	Key    string // file name stem: letters, digits, '.', '_', '-'; e.g. a content ID or KeyFor(...)
	Layout Layout
	Verify Verifier // required; LengthOnly for manifest-less content

	// FlushEvery persists the bitmap, in the background, after this many newly stored slices
	// (and synchronously on Flush, Finalize and Close). A crash loses about this many
	// verified slices. Default 32.
	FlushEvery int
	// ReverifyOnOpen re-reads and re-verifies every slice the saved bitmap claims when a
	// store is reopened, dropping those that fail (a damaged disk, a hand-edited file).
	// Default true; costs one read and hash of what was already received.
	ReverifyOnOpen bool
	// DirectWrites writes whole, aligned slices with O_DIRECT where the file system takes it:
	// the bytes go from the receiver's buffer to the disk without filling the page cache
	// (see directSlow for when the store goes back to ordinary writes). Default true.
	DirectWrites bool

	openFile func(name string, flag int, perm os.FileMode) (file, error) // tests inject faults
}

// DefaultConfig returns a config with the defaults; fill in Dir, Key, Layout and Verify.
func DefaultConfig() Config { return Config{FlushEvery: 32, ReverifyOnOpen: true, DirectWrites: true} }

// ForManifest returns the default config for receiving content described by m into dir.
func ForManifest(dir string, m *content.Manifest) Config {
	c := DefaultConfig()
	c.Dir, c.Key = dir, m.ID().String()
	c.Layout = Layout{Size: m.Size, SliceSize: m.SliceSize}
	c.Verify = m.Verify
	return c
}

func (c *Config) validate() error {
	if c.Dir == "" {
		return fmt.Errorf("%w: empty Dir", ErrBadConfig)
	}
	if err := validKey(c.Key); err != nil {
		return err
	}
	if c.Layout.Size < 0 || c.Layout.SliceSize <= 0 || c.Layout.NumSlices() > content.MaxSlices {
		return fmt.Errorf("%w: layout %+v", ErrBadConfig, c.Layout)
	}
	if c.Verify == nil {
		return fmt.Errorf("%w: no Verify (use LengthOnly for manifest-less content)", ErrBadConfig)
	}
	if c.FlushEvery <= 0 {
		return fmt.Errorf("%w: FlushEvery %d", ErrBadConfig, c.FlushEvery)
	}
	if c.openFile == nil {
		c.openFile = func(name string, flag int, perm os.FileMode) (file, error) { return os.OpenFile(name, flag, perm) }
	}
	return nil
}

func validKey(k string) error {
	if k == "" || len(k) > 200 || k == "." || k == ".." {
		return fmt.Errorf("%w: key %q", ErrBadConfig, k)
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: key %q has %q", ErrBadConfig, k, r)
		}
	}
	return nil
}

type file interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(int64) error
	Close() error
}

// Store holds the slices of one piece of content: a sparse file written in place plus a
// bitmap of verified slices. It is safe for concurrent use; Put verifies outside any lock and
// slices are written with positioned writes, so several receivers may Put at once.
type Store struct {
	cfg      Config
	layout   Layout
	partPath string
	havePath string

	flushMu sync.Mutex // serialises Flush, Finalize and Close; held across disk I/O

	mu        sync.Mutex  // guards the fields below (never held across I/O)
	f         file        // the data file (part file, source file or finalized file)
	df        file        // the part file opened with O_DIRECT for writes; nil if not taken
	have      Bitmap      // verified slices whose bytes are written (maybe not yet synced)
	held      int         // have.Count(), kept up to date
	sinceSave int         // slices stored since the bitmap was last saved
	dirty     bool        // have differs from the saved bitmap
	readOnly  bool        // source store, or finalized
	verifyRd  bool        // source store: verify slices read (see srcChecked)
	srcInfo   os.FileInfo // source store: the file's size and mtime when opened
	srcOK     Bitmap      // source store: slices verified once while the file was unchanged
	srcMoved  bool        // source store: the file changed since it was opened: verify every read
	closed    bool
	closing   bool          // Close has begun: no new background flush
	finalPath string        // set once finalized
	directN   int64         // slices written through df
	directAvg time.Duration // moving average of their durations (see directSlow)
	flushErr  error         // the last background flush failure, returned by the next Put, Flush or Close

	bg sync.WaitGroup // the background flush, if running

	directOff atomic.Bool // df is no longer used (a slow or refused direct write)
}

// Open opens (or creates) the store for cfg, loading the saved bitmap so a restarted
// receiver resumes where it stopped.
func Open(cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: create directory: %w", err)
	}
	s := &Store{
		cfg:      cfg,
		layout:   cfg.Layout,
		partPath: filepath.Join(cfg.Dir, cfg.Key+".part"),
		havePath: filepath.Join(cfg.Dir, cfg.Key+".have"),
		have:     NewBitmap(cfg.Layout.NumSlices()),
	}
	f, err := cfg.openFile(s.partPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", s.partPath, err)
	}
	s.f = f
	if err := s.sizePart(); err != nil {
		f.Close()
		return nil, err
	}
	if cfg.DirectWrites {
		// EINVAL from file systems without O_DIRECT (older tmpfs, some FUSE): write as usual.
		if df, err := cfg.openFile(s.partPath, os.O_WRONLY|syscall.O_DIRECT, 0); err == nil {
			s.df = df
		}
	}
	if b, ok := s.loadBitmap(); ok {
		s.have = b
		s.held = b.Count()
		if cfg.ReverifyOnOpen {
			s.reverify()
		}
	}
	return s, nil
}

// OpenSource opens an existing, complete file (a source peer's original) as a read-only
// store. A slice is verified the first time it is read; later reads are checked with an
// fstat (size and modification time), and once the file has changed every read is verified
// again, so a file changed after it was sliced is never passed on.
func OpenSource(path string, layout Layout, verify Verifier) (*Store, error) {
	if verify == nil || layout.SliceSize <= 0 || layout.Size < 0 {
		return nil, fmt.Errorf("%w: source layout %+v", ErrBadConfig, layout)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("store: open source: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: stat source: %w", err)
	}
	if st.Size() != layout.Size {
		f.Close()
		return nil, fmt.Errorf("%w: %s is %d bytes, its manifest says %d", ErrChanged, path, st.Size(), layout.Size)
	}
	return &Store{
		cfg:       Config{Verify: verify},
		layout:    layout,
		f:         readOnlyFile{f},
		have:      FullBitmap(layout.NumSlices()),
		held:      layout.NumSlices(),
		readOnly:  true,
		verifyRd:  true,
		srcInfo:   st,
		srcOK:     NewBitmap(layout.NumSlices()),
		finalPath: path,
	}, nil
}

// sourceChanged reports (and remembers) whether a source file's size or modification time
// differs from when it was opened.
func (s *Store) sourceChanged(f file) bool {
	rf, ok := f.(readOnlyFile)
	if !ok {
		return true
	}
	st, err := rf.Stat()
	changed := err != nil || st.Size() != s.srcInfo.Size() || !st.ModTime().Equal(s.srcInfo.ModTime())
	if changed {
		s.mu.Lock()
		s.srcMoved = true
		s.mu.Unlock()
	}
	return changed
}

type readOnlyFile struct{ *os.File }

func (readOnlyFile) WriteAt([]byte, int64) (int, error) { return 0, ErrReadOnly }
func (readOnlyFile) Truncate(int64) error               { return ErrReadOnly }

func (s *Store) sizePart() error {
	st, err := os.Stat(s.partPath)
	if err == nil && st.Size() == s.layout.Size {
		return nil
	}
	if err := s.f.Truncate(s.layout.Size); err != nil {
		return fmt.Errorf("store: size %s to %d bytes: %w", s.partPath, s.layout.Size, err)
	}
	return nil
}

// Layout returns the store's geometry.
func (s *Store) Layout() Layout { return s.layout }

// Put verifies data as slice index and writes it in place. It returns added=false and no
// error if the slice was already held. Data that fails verification is never written: the
// error wraps ErrCorrupt. Write errors (disk full, permissions) are returned with context.
func (s *Store) Put(index int, data []byte) (added bool, err error) {
	if index < 0 || index >= s.layout.NumSlices() {
		return false, fmt.Errorf("%w: %d of %d", ErrRange, index, s.layout.NumSlices())
	}
	if want := s.layout.SliceLen(index); len(data) != want {
		return false, fmt.Errorf("%w: slice %d is %d bytes, want %d", ErrCorrupt, index, len(data), want)
	}
	s.mu.Lock()
	held, closed, ro := s.have.Has(index), s.closed, s.readOnly
	s.mu.Unlock()
	switch {
	case closed:
		return false, ErrClosed
	case held:
		return false, nil
	case ro:
		return false, ErrReadOnly
	}
	if err := s.cfg.Verify(index, data); err != nil {
		if !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return false, err
	}
	if err := s.write(data, s.layout.Offset(index)); err != nil {
		return false, fmt.Errorf("store: write slice %d to %s: %w%s", index, s.partPath, err, hint(err))
	}
	s.mu.Lock()
	if s.closed || s.readOnly {
		s.mu.Unlock()
		return false, ErrClosed
	}
	added = s.have.Set(index)
	if added {
		s.held++
		s.sinceSave++
		s.dirty = true
	}
	ferr := s.flushErr
	// Persist in the background: an fsync of many megabytes must not stall the receiver.
	// Started under mu so that Close, which sets closing under mu, waits for it.
	flush := s.sinceSave >= s.cfg.FlushEvery && !s.closing && s.flushMu.TryLock()
	if flush {
		s.bg.Add(1)
	}
	s.mu.Unlock()
	if ferr != nil {
		return added, ferr
	}
	if flush {
		go func() {
			defer s.bg.Done()
			defer s.flushMu.Unlock()
			if err := s.flushLocked(); err != nil {
				s.mu.Lock()
				s.flushErr = err
				s.mu.Unlock()
			}
		}()
	}
	return added, nil
}

func hint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return " (the disk is full: free space or choose another data directory)"
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EROFS):
		return " (no permission to write there)"
	}
	return ""
}

// directAlign is the alignment O_DIRECT asks of a write's offset, length and buffer here: the
// page size, a multiple of every logical block size in use.
const directAlign = 4096

// directSlow is how long direct writes may take on average (over about the last directAvgN,
// once that many were made) before the store writes through the page cache from then on. A
// receiver writes each slice as it completes, between reads of its socket (its queue and the
// socket's buffer absorb a wait): on a disk that answers in milliseconds writing directly
// spares the CPU the copy into fresh page-cache pages, the largest single cost of a receiver
// on this testnet's virtual machine (16-20 % of the two cores in the two-domain bench, `perf
// record -a`); on a slow disk (a busy hard disk, network storage) it would stall the
// receiver, which the page cache absorbs. Measured in that bench (ten receivers writing to
// one virtual disk): 256 KiB took 1-10 ms on average, single writes up to 80 ms, and 200-300
// ms near the end while other receivers fsynced their files (where one receiver in two runs
// turned them off).
const (
	directSlow = 50 * time.Millisecond
	directAvgN = 16
)

// write writes one verified slice at off: directly if the store can (whole pages from an
// aligned buffer), else through the page cache. The last, shorter slice and unaligned buffers
// take the page cache; a direct write that is refused or slow turns direct writes off.
func (s *Store) write(data []byte, off int64) error {
	if s.df == nil || s.directOff.Load() || len(data)%directAlign != 0 || off%directAlign != 0 ||
		uintptr(unsafe.Pointer(unsafe.SliceData(data)))%directAlign != 0 {
		_, err := s.f.WriteAt(data, off)
		return err
	}
	start := time.Now()
	_, err := s.df.WriteAt(data, off)
	if errors.Is(err, syscall.EINVAL) { // a file system that opens with O_DIRECT but refuses it
		s.directOff.Store(true)
		_, err = s.f.WriteAt(data, off)
		return err
	}
	if err == nil {
		took := time.Since(start)
		s.mu.Lock()
		if s.directN++; s.directN == 1 {
			s.directAvg = took
		} else {
			s.directAvg += (took - s.directAvg) / directAvgN
		}
		slow := s.directN >= directAvgN && s.directAvg > directSlow
		s.mu.Unlock()
		if slow {
			s.directOff.Store(true)
		}
	}
	return err
}

// DirectWrites reports how many slices were written with O_DIRECT, and whether the store
// still writes that way.
func (s *Store) DirectWrites() (n int64, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.directN, s.df != nil && !s.directOff.Load()
}

// Get returns a copy of slice index, which must be held.
func (s *Store) Get(index int) ([]byte, error) { return s.ReadSlice(index, nil) }

// ReadSlice reads slice index into buf (reallocated if too small) and returns it. Slices of a
// source store are verified on the way out.
func (s *Store) ReadSlice(index int, buf []byte) ([]byte, error) {
	n := s.layout.SliceLen(index)
	if index < 0 || index >= s.layout.NumSlices() {
		return nil, fmt.Errorf("%w: %d of %d", ErrRange, index, s.layout.NumSlices())
	}
	s.mu.Lock()
	held, closed, f, verify := s.have.Has(index), s.closed, s.f, s.verifyRd
	if verify && !s.srcMoved && s.srcOK.Has(index) {
		verify = false // verified before; fstat below catches a change of the file
	}
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if !held {
		return nil, fmt.Errorf("%w: %d", ErrMissing, index)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := f.ReadAt(buf, s.layout.Offset(index)); err != nil {
		return nil, fmt.Errorf("store: read slice %d: %w", index, err)
	}
	if s.verifyRd && !verify && s.sourceChanged(f) {
		verify = true
	}
	if verify {
		if err := s.cfg.Verify(index, buf); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrChanged, err)
		}
		if s.verifyRd {
			s.mu.Lock()
			s.srcOK.Set(index)
			s.mu.Unlock()
		}
	}
	return buf, nil
}

// Has reports whether slice index is held.
func (s *Store) Has(index int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.Has(index)
}

// Have returns a copy of the bitmap of held slices.
func (s *Store) Have() Bitmap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.Clone()
}

// HaveBytes returns the held slices encoded as Bitmap.Bytes.
func (s *Store) HaveBytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.Bytes()
}

// Missing returns the indices of the slices not held.
func (s *Store) Missing() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.Missing()
}

// Count returns the number of slices held.
func (s *Store) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// Complete reports whether every slice is held.
func (s *Store) Complete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held == s.have.Len()
}

// Path returns the file the slices are read from: the part file, or after Finalize the output
// file, or a source store's original.
func (s *Store) Path() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finalPath != "" {
		return s.finalPath
	}
	return s.partPath
}

// Flush makes every stored slice durable and then saves the bitmap atomically (temporary
// file, fsync, rename, fsync of the directory). A bitmap on disk never claims a slice whose
// bytes are not durable.
func (s *Store) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	return s.flushLocked()
}

// flushLocked requires flushMu.
func (s *Store) flushLocked() error {
	s.mu.Lock()
	if s.closed || s.readOnly || !s.dirty {
		err := s.flushErr
		s.mu.Unlock()
		return err
	}
	snap := s.have.Clone()
	s.sinceSave, s.dirty = 0, false
	s.mu.Unlock()
	fail := func(err error) error {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return err
	}
	if err := s.f.Sync(); err != nil {
		return fail(fmt.Errorf("store: fsync %s: %w%s", s.partPath, err, hint(err)))
	}
	if err := writeAtomic(s.havePath, s.encodeBitmap(snap)); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	s.flushErr = nil
	s.mu.Unlock()
	return nil
}

// Bitmap file: "RCBM" | version u8 | size u64 | slice size u32 | bitmap bytes | BLAKE3-256 of
// everything before it.
func (s *Store) encodeBitmap(b Bitmap) []byte {
	out := append([]byte("RCBM"), 1)
	out = binary.BigEndian.AppendUint64(out, uint64(s.layout.Size))
	out = binary.BigEndian.AppendUint32(out, uint32(s.layout.SliceSize))
	out = append(out, b.Bytes()...)
	sum := blake3.Sum256(out)
	return append(out, sum[:]...)
}

func (s *Store) loadBitmap() (Bitmap, bool) {
	raw, err := os.ReadFile(s.havePath)
	n := s.layout.NumSlices()
	if err != nil || len(raw) != 17+(n+7)/8+32 {
		return Bitmap{}, false
	}
	body, sum := raw[:len(raw)-32], raw[len(raw)-32:]
	if blake3.Sum256(body) != [32]byte(sum) || string(body[:4]) != "RCBM" || body[4] != 1 ||
		binary.BigEndian.Uint64(body[5:13]) != uint64(s.layout.Size) ||
		binary.BigEndian.Uint32(body[13:17]) != uint32(s.layout.SliceSize) {
		return Bitmap{}, false
	}
	b, err := BitmapFromBytes(n, body[17:])
	return b, err == nil
}

func (s *Store) reverify() {
	buf := make([]byte, s.layout.SliceSize)
	for i := 0; i < s.have.Len(); i++ {
		if !s.have.Has(i) {
			continue
		}
		p := buf[:s.layout.SliceLen(i)]
		if _, err := s.f.ReadAt(p, s.layout.Offset(i)); err != nil || s.cfg.Verify(i, p) != nil {
			s.have.Clear(i)
			s.held--
			s.dirty = true
		}
	}
}

func writeAtomic(path string, data []byte) error { return WriteFileAtomic(path, data, 0o600) }

// WriteFileAtomic writes data to path with permissions perm so that path is either as it
// was or holds all of data: a temporary file beside it, fsync, rename, fsync of the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("store: create temporary file in %s: %w%s", dir, err, hint(err))
	}
	name := tmp.Name()
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("store: save %s: %w%s", path, err, hint(err))
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, so that a rename in it is durable (EINVAL, a file system that
// cannot, is not an error).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("store: fsync directory %s: %w", dir, err)
	}
	return nil
}

// Finalize makes the complete content appear at out: the part file is fsynced and renamed to
// out (or, across file systems, copied to a temporary file beside out, fsynced and renamed),
// so out is either absent or whole. It fails with ErrIncomplete, leaving out untouched, if any
// slice is missing. The store keeps serving slices from out afterwards.
func (s *Store) Finalize(out string) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	closed, ro, full, missing := s.closed, s.readOnly, s.held == s.have.Len(), s.have.Len()-s.held
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case ro:
		return ErrReadOnly
	case !full:
		return fmt.Errorf("%w: %d of %d slices missing", ErrIncomplete, missing, s.layout.NumSlices())
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("store: output path: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("store: fsync %s: %w%s", s.partPath, err, hint(err))
	}
	var newF file
	if err := os.Rename(s.partPath, out); err != nil {
		if !errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("store: move %s to %s: %w%s", s.partPath, out, err, hint(err))
		}
		if newF, err = s.copyTo(out); err != nil {
			return err
		}
	}
	if err := SyncDir(filepath.Dir(out)); err != nil {
		return err
	}
	os.Remove(s.havePath)
	s.mu.Lock()
	if newF != nil {
		old := s.f
		s.f = newF
		defer old.Close()
		defer os.Remove(s.partPath)
	}
	s.readOnly, s.finalPath, s.dirty = true, out, false
	s.mu.Unlock()
	return nil
}

// copyTo copies the part file to a temporary file beside out, fsyncs it and renames it to
// out. It returns out opened for reading.
func (s *Store) copyTo(out string) (file, error) {
	src, err := os.Open(s.partPath)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer src.Close()
	dir := filepath.Dir(out)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(out)+".raftcast-*")
	if err != nil {
		return nil, fmt.Errorf("store: create file beside %s: %w%s", out, err, hint(err))
	}
	name := tmp.Name()
	_, err = io.Copy(tmp, src)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, out)
	}
	if err != nil {
		os.Remove(name)
		return nil, fmt.Errorf("store: copy to %s: %w%s", out, err, hint(err))
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, fmt.Errorf("store: reopen %s: %w", out, err)
	}
	return readOnlyFile{f}, nil
}

// Remove closes the store and deletes its part and bitmap files (not a finalized output):
// for content the user abandons.
func (s *Store) Remove() error {
	err := s.Close()
	for _, p := range []string{s.partPath, s.havePath} {
		if p == "" {
			continue
		}
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = fmt.Errorf("store: %w", rerr)
		}
	}
	return err
}

// Close waits for a background flush, saves the bitmap and closes the file. Slices stay on
// disk for a later Open.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.bg.Wait()
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	err := s.flushLocked()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return err
	}
	s.closed = true
	f, df := s.f, s.df
	s.mu.Unlock()
	if df != nil {
		df.Close() // its writes are the inode's: f's fsync (in flushLocked) made them durable
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("store: close: %w", cerr)
	}
	return err
}
