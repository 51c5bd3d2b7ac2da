package content

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteCorpus regenerates testdata/fuzz/FuzzDecode when GEN_CORPUS is set: valid
// manifests, and manifests with traversal names, truncated, or with a wrong root.
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("GEN_CORPUS") == "" {
		t.Skip("set GEN_CORPUS=1 to regenerate the fuzz corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var entries [][]byte
	for i, size := range []int{0, 1, MinSliceSize, 5*MinSliceSize + 3} {
		m, err := Build(bytes.NewReader(randBytes(uint64(i), size)), fmt.Sprintf("file%d.bin", i), MinSliceSize)
		if err != nil {
			t.Fatal(err)
		}
		enc := m.Encode()
		entries = append(entries, enc, enc[:len(enc)/2])
		bad := append([]byte(nil), enc...)
		bad[len(bad)-1] ^= 0xff
		entries = append(entries, bad)
	}
	for _, name := range []string{"../escape", "/etc/passwd", "..", "a\x00b", "ok\\..\\x"} {
		m := &Manifest{Name: name, Size: 1, SliceSize: MinSliceSize, Hashes: []Hash{HashSlice([]byte{7})}}
		m.Root = MerkleRoot(m.Hashes)
		entries = append(entries, m.Encode())
	}
	for i, e := range entries {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", e)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
