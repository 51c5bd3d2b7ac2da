package pipes

// seqWindow remembers which of the most recent sequence numbers of one sender were seen: a
// bitmap over (max-size, max]. It is pure logic, not safe for concurrent use.
type seqWindow struct {
	max  uint64
	bits []uint64
	init bool
}

type seqVerdict uint8

const (
	seqNew seqVerdict = iota // first sighting
	seqDup                   // seen before, inside the window
	seqOld                   // older than the window: cannot tell, treated as a replay
)

func newSeqWindow(size int) seqWindow {
	words := max(1, (size+63)/64)
	return seqWindow{bits: make([]uint64, words)}
}

func (w *seqWindow) size() uint64 { return uint64(len(w.bits)) * 64 }

func (w *seqWindow) set(seq uint64) {
	i := seq % w.size()
	w.bits[i/64] |= 1 << (i % 64)
}

func (w *seqWindow) has(seq uint64) bool {
	i := seq % w.size()
	return w.bits[i/64]&(1<<(i%64)) != 0
}

func (w *seqWindow) clear(seq uint64) {
	i := seq % w.size()
	w.bits[i/64] &^= 1 << (i % 64)
}

// observe records seq and says whether it is new.
func (w *seqWindow) observe(seq uint64) seqVerdict {
	n := w.size()
	switch {
	case !w.init:
		w.init = true
		w.max = seq
	case seq > w.max:
		if seq-w.max >= n {
			clear(w.bits)
		} else {
			for s := w.max + 1; s < seq; s++ {
				w.clear(s)
			}
			w.clear(seq)
		}
		w.max = seq
	case w.max-seq >= n:
		return seqOld
	case w.has(seq):
		return seqDup
	}
	w.set(seq)
	return seqNew
}
