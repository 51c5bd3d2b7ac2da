package content

import (
	"fmt"
	"testing"
)

// BenchmarkHashSlice measures BLAKE3 per slice size (bytes/s in the MB/s column).
func BenchmarkHashSlice(b *testing.B) {
	for _, size := range []int{256 << 10, 1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			buf := randBytes(1, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				_ = HashSlice(buf)
			}
		})
	}
}
