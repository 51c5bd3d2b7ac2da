package peergroup

import "testing"

func BenchmarkDeriveGroupKey(b *testing.B) {
	for b.Loop() {
		if _, err := deriveGroupKey("secret", "0123456789abcdef01234567"); err != nil {
			b.Fatal(err)
		}
	}
}
