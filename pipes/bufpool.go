package pipes

import (
	"math/bits"
	"sync"
)

// bufPool recycles message buffers in power-of-two size classes from 1 KiB to maxFrameLimit
// (fewer allocations, less garbage and warmer caches at high message rates): the copies an
// output end keeps of its unacknowledged messages, and the buffers of received unicast
// messages that the receiver hands back with Message.Release. It has no mutable state of its
// own beyond the sync.Pools.
type bufPool struct {
	classes [bufClasses]sync.Pool
}

const (
	minBufShift = 10 // 1 KiB
	bufClasses  = 27 - minBufShift
)

func bufClass(n int) (int, bool) {
	if n <= 1<<minBufShift {
		return 0, true
	}
	c := bits.Len(uint(n-1)) - minBufShift
	return c, c < bufClasses
}

// get returns a slice of length n (contents undefined).
func (p *bufPool) get(n int) []byte {
	c, ok := bufClass(n)
	if !ok {
		return make([]byte, n)
	}
	if v := p.classes[c].Get(); v != nil {
		return (*(v.(*[]byte)))[:n]
	}
	return make([]byte, n, 1<<(c+minBufShift))
}

// put recycles b (which must not be used afterwards).
func (p *bufPool) put(b []byte) {
	c, ok := bufClass(cap(b))
	if !ok || cap(b) != 1<<(c+minBufShift) {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}
