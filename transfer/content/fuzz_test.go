package content

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Decode: it must never panic, and whatever it accepts
// must re-encode to the same bytes, hash to the same ID and carry a safe name.
func FuzzDecode(f *testing.F) {
	for _, size := range []int{0, 1, MinSliceSize, 3*MinSliceSize + 9} {
		m, err := Build(bytes.NewReader(randBytes(uint64(size), size)), "seed.bin", MinSliceSize)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if !bytes.Equal(m.Encode(), b) {
			t.Fatalf("accepted a non-canonical encoding")
		}
		if err := ValidateName(m.Name); err != nil {
			t.Fatalf("accepted a bad name: %v", err)
		}
		if m2, err := DecodeWithID(b, m.ID()); err != nil || m2.ID() != m.ID() {
			t.Fatalf("ID not stable: %v", err)
		}
	})
}
