package pipes

import (
	"math/bits"
	"sync"
)

// bufPool recycles message buffers in power-of-two size classes from 1 KiB to maxFrameLimit
// (fewer allocations, less garbage and warmer caches at high message rates): the frames an
// output end keeps of its unacknowledged messages, and the buffers of received unicast
// messages that the receiver hands back with Message.Release. Each class holds bufSlack bytes
// more than its power of two, so a message of 2^k bytes and its frame (with its length
// prefix) share one class. It has no mutable state of its own beyond the sync.Pools.
type bufPool struct {
	classes [bufClasses]sync.Pool
}

const (
	minBufShift = 10 // 1 KiB
	bufClasses  = 27 - minBufShift
	bufSlack    = 16 // at least binary.MaxVarintLen64
)

// bufClass returns the class of an n-byte buffer, false if n is above every class.
func bufClass(n int) (int, bool) {
	if n <= 1<<minBufShift+bufSlack {
		return 0, true
	}
	c := bits.Len(uint(n-bufSlack-1)) - minBufShift
	return c, c < bufClasses
}

// classCap is the capacity of the buffers of class c.
func classCap(c int) int { return 1<<(c+minBufShift) + bufSlack }

// get returns a slice of length n (contents undefined).
func (p *bufPool) get(n int) []byte {
	c, ok := bufClass(n)
	if !ok {
		return make([]byte, n)
	}
	if v := p.classes[c].Get(); v != nil {
		return (*(v.(*[]byte)))[:n]
	}
	return make([]byte, n, classCap(c))
}

// put recycles b (which must not be used afterwards). Buffers that get did not make are
// left to the garbage collector.
func (p *bufPool) put(b []byte) {
	c, ok := bufClass(cap(b))
	if !ok || cap(b) != classCap(c) {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}
