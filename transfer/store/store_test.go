package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/raftcast/raftcast/transfer/content"
)

const ss = content.MinSliceSize

func fixture(t *testing.T, size int) ([]byte, *content.Manifest) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(size), 7))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	m, err := content.Build(bytes.NewReader(data), "f.bin", ss)
	if err != nil {
		t.Fatal(err)
	}
	return data, m
}

func slice(data []byte, m *content.Manifest, i int) []byte {
	off := m.Offset(i)
	return data[off : off+int64(m.SliceLen(i))]
}

func TestPutGetFinalize(t *testing.T) {
	data, m := fixture(t, 5*ss+123)
	dir := t.TempDir()
	s, err := Open(ForManifest(dir, m))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := filepath.Join(dir, "out", "f.bin")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	// Put in a scrambled order; one duplicate.
	for _, i := range []int{3, 0, 5, 1, 3} {
		if _, err := s.Put(i, slice(data, m, i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Missing(); len(got) != 2 || got[0] != 2 || got[1] != 4 {
		t.Fatalf("Missing = %v", got)
	}
	if err := s.Finalize(out); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Finalize incomplete: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("out exists after refused Finalize: %v", err)
	}
	if _, err := s.Get(2); !errors.Is(err, ErrMissing) {
		t.Fatalf("Get missing: %v", err)
	}
	for _, i := range []int{2, 4} {
		if added, err := s.Put(i, slice(data, m, i)); err != nil || !added {
			t.Fatal(added, err)
		}
	}
	if !s.Complete() {
		t.Fatal("not complete")
	}
	got, err := s.Get(5)
	if err != nil || !bytes.Equal(got, slice(data, m, 5)) {
		t.Fatalf("Get: %v", err)
	}
	if err := s.Finalize(out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("output differs: %v", err)
	}
	for _, p := range []string{m.ID().String() + ".part", m.ID().String() + ".have"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	// Still serves after Finalize.
	if got, err := s.Get(0); err != nil || !bytes.Equal(got, slice(data, m, 0)) {
		t.Fatalf("Get after Finalize: %v", err)
	}
	if _, err := s.Put(0, slice(data, m, 0)); err != nil {
		t.Fatalf("duplicate Put after Finalize should be a no-op: %v", err)
	}
}

func TestCorruptNeverStored(t *testing.T) {
	data, m := fixture(t, 3*ss)
	dir := t.TempDir()
	s, err := Open(ForManifest(dir, m))
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), slice(data, m, 1)...)
	bad[100] ^= 0x40
	if _, err := s.Put(1, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt Put: %v", err)
	}
	if _, err := s.Put(1, bad[:10]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short Put: %v", err)
	}
	if _, err := s.Put(3, bad); !errors.Is(err, ErrRange) {
		t.Fatalf("range Put: %v", err)
	}
	if s.Has(1) {
		t.Fatal("corrupt slice marked held")
	}
	s.Close()
	// The bytes on disk at slice 1 are still zero: nothing unverified was written.
	raw, err := os.ReadFile(filepath.Join(dir, m.ID().String()+".part"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw[ss:2*ss], make([]byte, ss)) {
		t.Fatal("unverified data written")
	}
}

func TestResumeAfterReopen(t *testing.T) {
	data, m := fixture(t, 10*ss)
	dir := t.TempDir()
	cfg := ForManifest(dir, m)
	cfg.FlushEvery = 3
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2, 4, 6, 8} {
		if _, err := s.Put(i, slice(data, m, i)); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			s.bg.Wait() // the background flush started after 3 slices
		}
	}
	// Simulate a crash: no Close. Only the flush after 3 slices is on disk.
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Count(); got != 3 || !s2.Has(0) || !s2.Has(2) || !s2.Has(4) {
		t.Fatalf("after crash: %d held, bitmap %v", got, s2.Have().Bytes())
	}
	s2.Close()
	s.Close() // clean close of the first writes everything it has
	s3, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if got := s3.Count(); got != 5 {
		t.Fatalf("after clean close: %d held", got)
	}
	if got, err := s3.Get(8); err != nil || !bytes.Equal(got, slice(data, m, 8)) {
		t.Fatalf("resumed Get: %v", err)
	}
}

func TestReverifyDropsDamagedSlices(t *testing.T) {
	data, m := fixture(t, 4*ss)
	dir := t.TempDir()
	s, err := Open(ForManifest(dir, m))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, err := s.Put(i, slice(data, m, i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	part := filepath.Join(dir, m.ID().String()+".part")
	f, err := os.OpenFile(part, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xde, 0xad}, 2*ss+5)
	f.Close()
	s, err = Open(ForManifest(dir, m))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Has(2) || s.Count() != 3 {
		t.Fatalf("damaged slice kept: %v", s.Missing())
	}
}

func TestBitmapFileDamageIgnored(t *testing.T) {
	data, m := fixture(t, 2*ss)
	dir := t.TempDir()
	s, _ := Open(ForManifest(dir, m))
	s.Put(0, slice(data, m, 0))
	s.Close()
	hp := filepath.Join(dir, m.ID().String()+".have")
	raw, _ := os.ReadFile(hp)
	raw[len(raw)-1] ^= 1
	os.WriteFile(hp, raw, 0o644)
	s, err := Open(ForManifest(dir, m))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Count() != 0 {
		t.Fatal("damaged bitmap trusted")
	}
}

func TestConcurrentPut(t *testing.T) {
	data, m := fixture(t, 64*ss+1)
	s, err := Open(ForManifest(t.TempDir(), m))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := w; i < m.NumSlices(); i += 2 { // overlapping: duplicates on purpose
				if _, err := s.Put(i, slice(data, m, i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if !s.Complete() {
		t.Fatal("incomplete")
	}
}

type faultFile struct {
	file
	writeErr error
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	return f.file.WriteAt(p, off)
}

func TestDiskFullReported(t *testing.T) {
	data, m := fixture(t, 2*ss)
	cfg := ForManifest(t.TempDir(), m)
	cfg.openFile = func(name string, flag int, perm os.FileMode) (file, error) {
		f, err := os.OpenFile(name, flag, perm)
		return &faultFile{file: f, writeErr: syscall.ENOSPC}, err
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Put(0, slice(data, m, 0))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("disk full not reported: %v", err)
	}
	if s.Has(0) {
		t.Fatal("failed write marked held")
	}
}

func TestOpenErrorsReported(t *testing.T) {
	_, m := fixture(t, ss)
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o644)
	if _, err := Open(ForManifest(filepath.Join(blocker, "sub"), m)); err == nil {
		t.Fatal("opening under a file succeeded")
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o555)
		if _, err := Open(ForManifest(ro, m)); !errors.Is(err, os.ErrPermission) {
			t.Fatalf("permission error not reported: %v", err)
		}
	}
	cfg := ForManifest(dir, m)
	cfg.Key = "../escape"
	if _, err := Open(cfg); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("bad key accepted: %v", err)
	}
}

func TestFinalizeFailureLeavesNothing(t *testing.T) {
	data, m := fixture(t, ss)
	dir := t.TempDir()
	s, _ := Open(ForManifest(dir, m))
	defer s.Close()
	s.Put(0, data)
	out := filepath.Join(dir, "missing-dir", "out.bin")
	if err := s.Finalize(out); err == nil {
		t.Fatal("Finalize into a missing directory succeeded")
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("output exists")
	}
	// The slices are still there for a retry.
	if err := s.Finalize(filepath.Join(dir, "out.bin")); err != nil {
		t.Fatal(err)
	}
}

func TestKeyedLengthOnly(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Key = KeyFor("http://example/x", `"etag1"`, "1048576")
	if KeyFor("a", "bc") == KeyFor("ab", "c") {
		t.Fatal("KeyFor collides on concatenation")
	}
	cfg.Layout = Layout{Size: 10000, SliceSize: 4096}
	cfg.Verify = LengthOnly
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Put(2, make([]byte, 10000-8192)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(1, make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong length accepted: %v", err)
	}
}

func TestSourceStore(t *testing.T) {
	data, m := fixture(t, 3*ss+1)
	p := filepath.Join(t.TempDir(), "src")
	os.WriteFile(p, data, 0o644)
	old := time.Now().Add(-time.Hour) // so that the write below surely changes the mtime
	os.Chtimes(p, old, old)
	s, err := OpenSource(p, Layout{m.Size, m.SliceSize}, m.Verify)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Complete() {
		t.Fatal("source incomplete")
	}
	for range 2 { // the second read is checked by fstat only
		if got, err := s.Get(0); err != nil || !bytes.Equal(got, slice(data, m, 0)) {
			t.Fatal(err)
		}
	}
	// A source file changed after slicing is not passed on.
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt([]byte{1, 2, 3}, 10)
	f.Close()
	if _, err := s.Get(0); !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrChanged) {
		t.Fatalf("changed source served: %v", err)
	}
	// One whose size changed is refused at once.
	os.Truncate(p, m.Size-1)
	if _, err := OpenSource(p, Layout{m.Size, m.SliceSize}, m.Verify); !errors.Is(err, ErrChanged) {
		t.Fatalf("source of another size opened: %v", err)
	}
}

func TestBitmapCodec(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 63, 64, 65, 200} {
		b := NewBitmap(n)
		for i := 0; i < n; i += 3 {
			b.Set(i)
		}
		got, err := BitmapFromBytes(n, b.Bytes())
		if err != nil || !bytes.Equal(got.Bytes(), b.Bytes()) || got.Count() != b.Count() {
			t.Fatalf("n=%d: %v", n, err)
		}
		if f := FullBitmap(n); !f.Full() || f.Count() != n {
			t.Fatalf("FullBitmap(%d)", n)
		}
	}
	if _, err := BitmapFromBytes(3, []byte{0xff}); err == nil {
		t.Fatal("padding bits accepted")
	}
	if _, err := BitmapFromBytes(9, []byte{0xff}); err == nil {
		t.Fatal("short encoding accepted")
	}
}

func TestFinalizeAcrossFileSystems(t *testing.T) {
	other, err := os.MkdirTemp("/dev/shm", "raftcast-store-test-")
	if err != nil {
		t.Skip("no /dev/shm:", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	var a, b syscall.Stat_t
	dir := t.TempDir()
	if syscall.Stat(dir, &a) != nil || syscall.Stat(other, &b) != nil || a.Dev == b.Dev {
		t.Skip("temp dir and /dev/shm are on the same file system")
	}
	data, m := fixture(t, 2*ss+9)
	s, _ := Open(ForManifest(dir, m))
	defer s.Close()
	for i := 0; i < m.NumSlices(); i++ {
		s.Put(i, slice(data, m, i))
	}
	out := filepath.Join(other, "out.bin")
	if err := s.Finalize(out); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("copied output differs")
	}
	if _, err := os.Stat(filepath.Join(dir, m.ID().String()+".part")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("part file left behind")
	}
	if got, err := s.Get(2); err != nil || !bytes.Equal(got, slice(data, m, 2)) {
		t.Fatalf("serving after copy: %v", err)
	}
}

func TestPermissionErrorReported(t *testing.T) {
	data, m := fixture(t, ss)
	cfg := ForManifest(t.TempDir(), m)
	cfg.openFile = func(name string, flag int, perm os.FileMode) (file, error) {
		f, err := os.OpenFile(name, flag, perm)
		return &faultFile{file: f, writeErr: &os.PathError{Op: "write", Path: name, Err: syscall.EACCES}}, err
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Put(0, data)
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "no permission") {
		t.Fatalf("permission error not reported: %v", err)
	}
}

func TestBitmapMinus(t *testing.T) {
	a, b := NewBitmap(130), NewBitmap(130)
	for _, i := range []int{0, 3, 63, 64, 100, 129} {
		a.Set(i)
	}
	for _, i := range []int{3, 64, 128} {
		b.Set(i)
	}
	if got, want := a.Minus(b), []int{0, 63, 100, 129}; !slices.Equal(got, want) {
		t.Fatalf("Minus = %v, want %v", got, want)
	}
	if got := b.Minus(b); len(got) != 0 {
		t.Fatalf("b minus itself = %v", got)
	}
}

// aligned returns a copy of b in a buffer aligned for O_DIRECT.
func aligned(b []byte) []byte {
	buf := make([]byte, len(b)+directAlign)
	off := (directAlign - int(uintptr(unsafe.Pointer(&buf[0]))%directAlign)) % directAlign
	return append(buf[off:off:off+len(b)], b...)
}

// slowFile delays each write by delay, or fails it with EINVAL when refuse is set: a direct
// file descriptor on a slow disk, or on a file system that takes O_DIRECT at open only.
type slowFile struct {
	file
	delay  time.Duration
	refuse bool
	writes atomic.Int64
}

func (f *slowFile) WriteAt(p []byte, off int64) (int, error) {
	f.writes.Add(1)
	if f.refuse {
		return 0, syscall.EINVAL
	}
	time.Sleep(f.delay)
	return f.file.WriteAt(p, off)
}

// TestDirectWrites: whole slices in aligned buffers go to disk with O_DIRECT (where the file
// system takes it), the shorter last slice and unaligned buffers through the page cache, and
// every byte reads back, survives a reopen (re-verified) and ends up in the output.
func TestDirectWrites(t *testing.T) {
	data, m := fixture(t, 8*ss+100)
	dir := t.TempDir()
	s, err := Open(ForManifest(dir, m))
	if err != nil {
		t.Fatal(err)
	}
	_, supported := s.DirectWrites()
	if !supported {
		t.Logf("%s does not take O_DIRECT: checking the page-cache path only", dir)
	}
	for _, i := range []int{5, 0, 8, 2, 7} {
		if _, err := s.Put(i, aligned(slice(data, m, i))); err != nil {
			t.Fatal(err)
		}
	}
	// An unaligned buffer: one byte into an aligned one.
	b := aligned(append([]byte{0}, slice(data, m, 1)...))[1:]
	if _, err := s.Put(1, b); err != nil {
		t.Fatal(err)
	}
	n, on := s.DirectWrites()
	if supported && (n != 4 || !on) {
		t.Fatalf("direct writes = %d (on %v), want the 4 whole aligned slices", n, on)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ForManifest(dir, m)) // re-verifies what the bitmap claims
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Missing(); !slices.Equal(got, []int{3, 4, 6}) {
		t.Fatalf("after reopen Missing = %v, want [3 4 6]", got)
	}
	for _, i := range []int{3, 4, 6} {
		if _, err := s.Put(i, aligned(slice(data, m, i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range m.NumSlices() {
		if got, err := s.Get(i); err != nil || !bytes.Equal(got, slice(data, m, i)) {
			t.Fatalf("slice %d reads back wrong: %v", i, err)
		}
	}
	out := filepath.Join(dir, "f.bin")
	if err := s.Finalize(out); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("output differs: %v", err)
	}
}

// TestDirectWritesTurnOff: a direct write that is refused (EINVAL) turns direct writes off for
// the store, as do directAvgN of them slower than directSlow on average; the slice is stored
// all the same and later ones go through the page cache.
func TestDirectWritesTurnOff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		df     *slowFile
		writes int64
	}{
		{"refused", &slowFile{refuse: true}, 1},
		{"slow", &slowFile{delay: directSlow + 5*time.Millisecond}, directAvgN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, m := fixture(t, (directAvgN+4)*ss)
			cfg := ForManifest(t.TempDir(), m)
			cfg.openFile = func(name string, flag int, perm os.FileMode) (file, error) {
				f, err := os.OpenFile(name, flag&^syscall.O_DIRECT, perm)
				if flag&syscall.O_DIRECT != 0 {
					tc.df.file = f
					return tc.df, err
				}
				return f, err
			}
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range m.NumSlices() {
				if added, err := s.Put(i, aligned(slice(data, m, i))); err != nil || !added {
					t.Fatalf("Put %d: %v %v", i, added, err)
				}
			}
			if w := tc.df.writes.Load(); w != tc.writes {
				t.Fatalf("%d writes reached the direct descriptor, want %d", w, tc.writes)
			}
			if _, on := s.DirectWrites(); on {
				t.Fatal("direct writes still on")
			}
			for i := range m.NumSlices() {
				if got, err := s.Get(i); err != nil || !bytes.Equal(got, slice(data, m, i)) {
					t.Fatalf("slice %d reads back wrong: %v", i, err)
				}
			}
		})
	}
}
