package content

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestBuildSlicing(t *testing.T) {
	const ss = MinSliceSize
	for _, size := range []int{0, 1, ss - 1, ss, ss + 1, 3 * ss, 3*ss + 17} {
		data := randBytes(uint64(size), size)
		m, err := Build(bytes.NewReader(data), "f.bin", ss)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if m.Size != int64(size) || m.NumSlices() != NumSlices(int64(size), ss) {
			t.Fatalf("size %d: got size %d slices %d", size, m.Size, m.NumSlices())
		}
		var total int
		for i := 0; i < m.NumSlices(); i++ {
			off, l := int(m.Offset(i)), m.SliceLen(i)
			total += l
			if err := m.Verify(i, data[off:off+l]); err != nil {
				t.Fatalf("size %d slice %d: %v", size, i, err)
			}
		}
		if total != size {
			t.Fatalf("size %d: slices add up to %d", size, total)
		}
		if m.Root != MerkleRoot(m.Hashes) {
			t.Fatalf("root mismatch")
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	data := randBytes(1, 3*MinSliceSize+5)
	m, err := Build(bytes.NewReader(data), "x", MinSliceSize)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data[:MinSliceSize]...)
	bad[10] ^= 1
	for name, f := range map[string]func() error{
		"flipped":   func() error { return m.Verify(0, bad) },
		"wrong idx": func() error { return m.Verify(1, data[:MinSliceSize]) },
		"short":     func() error { return m.Verify(0, data[:MinSliceSize-1]) },
		"range":     func() error { return m.Verify(4, data[:5]) },
		"negative":  func() error { return m.Verify(-1, data[:5]) },
	} {
		if err := f(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	data := randBytes(2, 5*MinSliceSize+100)
	m, err := Build(bytes.NewReader(data), "hello wörld.txt", MinSliceSize)
	if err != nil {
		t.Fatal(err)
	}
	enc := m.Encode()
	got, err := DecodeWithID(enc, m.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != m.Name || got.Size != m.Size || got.SliceSize != m.SliceSize || got.Root != m.Root || got.ID() != m.ID() {
		t.Fatalf("mismatch: %+v vs %+v", got, m)
	}
	if !bytes.Equal(got.Encode(), enc) {
		t.Fatal("re-encoding differs")
	}
	id, err := ParseID(m.ID().String())
	if err != nil || id != m.ID() {
		t.Fatalf("ParseID: %v %v", id, err)
	}
	if _, err := DecodeWithID(enc, ID{}); !errors.Is(err, ErrBadID) {
		t.Fatalf("wrong id accepted: %v", err)
	}
}

// TestGolden pins the wire format: a fixed manifest must encode to the bytes in testdata.
func TestGolden(t *testing.T) {
	data := make([]byte, 2*MinSliceSize+1)
	for i := range data {
		data[i] = byte(i * 7)
	}
	m, err := Build(bytes.NewReader(data), "golden.bin", MinSliceSize)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "golden.manifest.hex")
	got := hex.EncodeToString(m.Encode()) + "\n" + m.ID().String() + "\n"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
}

func TestValidateName(t *testing.T) {
	good := []string{"a", "file.txt", "..hidden", "a..b", "名前.bin", "x y", string(bytes.Repeat([]byte("a"), MaxNameLen))}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	bad := []string{"", ".", "..", "../etc/passwd", "/etc/passwd", "a/b", `..\x`, `C:\x`, "a\x00b", "a\nb", "\xff", string(bytes.Repeat([]byte("a"), MaxNameLen+1))}
	for _, n := range bad {
		if err := ValidateName(n); !errors.Is(err, ErrBadName) {
			t.Errorf("%q: got %v, want ErrBadName", n, err)
		}
	}
}

// TestDecodeRefusesTraversal builds an otherwise valid encoding whose name tries to escape.
func TestDecodeRefusesTraversal(t *testing.T) {
	for _, name := range []string{"../../x", "/abs", "..", "a\x00"} {
		m := &Manifest{Name: name, Size: 10, SliceSize: MinSliceSize, Hashes: []Hash{HashSlice(make([]byte, 10))}}
		m.Root = MerkleRoot(m.Hashes)
		if _, err := Decode(m.Encode()); !errors.Is(err, ErrBadName) {
			t.Errorf("%q: got %v, want ErrBadName", name, err)
		}
	}
	if _, err := New("../x", 0, MinSliceSize, nil); !errors.Is(err, ErrBadName) {
		t.Errorf("New accepted traversal: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	m, err := Build(bytes.NewReader(randBytes(3, 2*MinSliceSize)), "n", MinSliceSize)
	if err != nil {
		t.Fatal(err)
	}
	enc := m.Encode()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), enc...)) }
	cases := map[string][]byte{
		"empty":      nil,
		"truncated":  enc[:len(enc)-1],
		"trailing":   append(append([]byte(nil), enc...), 0),
		"magic":      mut(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version":    mut(func(b []byte) []byte { b[4] = 2; return b }),
		"root":       mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }),
		"hash":       mut(func(b []byte) []byte { b[headerSize+1] ^= 1; return b }),
		"slice 0":    mut(func(b []byte) []byte { b[15], b[16], b[17], b[18] = 0, 0, 0, 0; return b }),
		"slice huge": mut(func(b []byte) []byte { b[15] = 0xff; return b }),
		"size huge":  mut(func(b []byte) []byte { b[7] = 0x7f; return b }),
		"name len":   mut(func(b []byte) []byte { b[5], b[6] = 0xff, 0xff; return b }),
	}
	for name, b := range cases {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMerkleRoot(t *testing.T) {
	h := func(b byte) Hash { return HashSlice([]byte{b}) }
	if MerkleRoot([]Hash{h(1)}) != h(1) {
		t.Fatal("single leaf root should be the leaf")
	}
	r2 := MerkleRoot([]Hash{h(1), h(2)})
	r3 := MerkleRoot([]Hash{h(1), h(2), h(3)})
	if r2 == r3 || r2 == MerkleRoot([]Hash{h(2), h(1)}) {
		t.Fatal("root must depend on every leaf and their order")
	}
	if MerkleRoot(nil) == MerkleRoot([]Hash{{}}) {
		t.Fatal("empty root collides")
	}
}

func TestParts(t *testing.T) {
	for _, l := range []int{1, 31, 32, 33, 1000, 256 << 10, 1<<20 - 7} {
		covered := 0
		for k := 0; k < Parts; k++ {
			off, end := PartBounds(l, k)
			if off != covered && end > off {
				t.Fatalf("len %d part %d starts at %d, want %d", l, k, off, covered)
			}
			covered = max(covered, end)
			if end > off && PartMask(l, off, end) != 1<<k {
				t.Fatalf("len %d part %d: mask %b", l, k, PartMask(l, off, end))
			}
		}
		if covered != l {
			t.Fatalf("len %d: parts cover %d", l, covered)
		}
		var want uint32
		for k := 0; k < Parts; k++ {
			if off, end := PartBounds(l, k); end > off {
				want |= 1 << k
			}
		}
		if PartMask(l, 0, l) != want {
			t.Fatalf("len %d: whole mask %b, want %b", l, PartMask(l, 0, l), want)
		}
	}
}

func TestSliceSizeFor(t *testing.T) {
	if got := SliceSizeFor(1<<30, DefaultSliceSize); got != DefaultSliceSize {
		t.Fatalf("1 GiB: %d", got)
	}
	if got := SliceSizeFor(1<<40, DefaultSliceSize); got != 1<<20 || NumSlices(1<<40, got) > MaxSlices {
		t.Fatalf("1 TiB: %d", got)
	}
	if got := SliceSizeFor(10, 1000); got != 4096 {
		t.Fatalf("small want: %d", got)
	}
}
