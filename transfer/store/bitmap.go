package store

import (
	"errors"
	"fmt"
	"math/bits"
)

// ErrBadBitmap is returned when a bitmap's encoding does not fit its length.
var ErrBadBitmap = errors.New("store: malformed bitmap")

// Bitmap is a fixed-length set of slice indices. The zero value is an empty bitmap of length 0.
// A Bitmap is not safe for concurrent use.
type Bitmap struct {
	n int
	w []uint64
}

// NewBitmap returns an empty bitmap of n bits.
func NewBitmap(n int) Bitmap { return Bitmap{n: n, w: make([]uint64, (n+63)/64)} }

// FullBitmap returns a bitmap of n bits, all set.
func FullBitmap(n int) Bitmap {
	b := NewBitmap(n)
	for i := range b.w {
		b.w[i] = ^uint64(0)
	}
	b.clearPadding()
	return b
}

func (b *Bitmap) clearPadding() {
	if r := b.n % 64; r != 0 {
		b.w[len(b.w)-1] &= (uint64(1) << r) - 1
	}
}

// Len returns the number of bits.
func (b Bitmap) Len() int { return b.n }

// Has reports whether bit i is set; out-of-range bits are never set.
func (b Bitmap) Has(i int) bool {
	return i >= 0 && i < b.n && b.w[i/64]&(1<<(uint(i)%64)) != 0
}

// Set sets bit i and reports whether it was newly set. Out-of-range indices are ignored.
func (b Bitmap) Set(i int) bool {
	if i < 0 || i >= b.n || b.Has(i) {
		return false
	}
	b.w[i/64] |= 1 << (uint(i) % 64)
	return true
}

// Clear clears bit i.
func (b Bitmap) Clear(i int) {
	if i >= 0 && i < b.n {
		b.w[i/64] &^= 1 << (uint(i) % 64)
	}
}

// Count returns the number of set bits.
func (b Bitmap) Count() int {
	c := 0
	for _, w := range b.w {
		c += bits.OnesCount64(w)
	}
	return c
}

// Full reports whether every bit is set.
func (b Bitmap) Full() bool { return b.Count() == b.n }

// Clone returns an independent copy.
func (b Bitmap) Clone() Bitmap { return Bitmap{n: b.n, w: append([]uint64(nil), b.w...)} }

// Missing returns the indices of the clear bits in increasing order.
func (b Bitmap) Missing() []int {
	var out []int
	for i := 0; i < b.n; i++ {
		if !b.Has(i) {
			out = append(out, i)
		}
	}
	return out
}

// Minus returns, in increasing order, the indices set in b and clear in o (of the same
// length), a word of 64 at a time.
func (b Bitmap) Minus(o Bitmap) []int {
	var out []int
	for k, w := range b.w {
		if k < len(o.w) {
			w &^= o.w[k]
		}
		for ; w != 0; w &= w - 1 {
			out = append(out, k*64+bits.TrailingZeros64(w))
		}
	}
	return out
}

// Bytes encodes the bitmap in (Len+7)/8 bytes: bit i is bit i%8 (least significant first) of
// byte i/8; padding bits are zero.
func (b Bitmap) Bytes() []byte {
	out := make([]byte, (b.n+7)/8)
	for i := range out {
		out[i] = byte(b.w[i/8] >> (8 * (uint(i) % 8)))
	}
	return out
}

// BitmapFromBytes decodes a bitmap of n bits encoded by Bytes. It is strict: the length must
// be exactly (n+7)/8 and the padding bits zero.
func BitmapFromBytes(n int, p []byte) (Bitmap, error) {
	if n < 0 || len(p) != (n+7)/8 {
		return Bitmap{}, fmt.Errorf("%w: %d bytes for %d bits", ErrBadBitmap, len(p), n)
	}
	b := NewBitmap(n)
	for i, c := range p {
		b.w[i/8] |= uint64(c) << (8 * (uint(i) % 8))
	}
	if r := n % 8; r != 0 && p[len(p)-1]>>r != 0 {
		return Bitmap{}, fmt.Errorf("%w: padding bits set", ErrBadBitmap)
	}
	return b, nil
}
