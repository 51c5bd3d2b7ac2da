package mcast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/store"
)

// ReceiverConfig tunes a Receiver.
type ReceiverConfig struct {
	// MaxAssembling bounds the slices being reassembled at once (memory: this many slice
	// buffers). When full, the lowest slice is given up (reported lost). Default 16.
	MaxAssembling int
	// MaxPartial bounds the slices kept in part for partial repair (memory: this many slice
	// buffers). Default 64; 0 after defaults disables partial repair.
	MaxPartial int
	// Lag: a slice is reported lost once datagrams of a slice this far beyond it have
	// arrived (the sender goes in ascending order). Default 4.
	Lag int
	// IdleTimeout: no datagram for this long calls OnIdle (the sender finished or is gone).
	// Default 2s.
	IdleTimeout time.Duration
	// StartTimeout replaces IdleTimeout until the first datagram of the content arrives (a
	// sender or proxy may start late). Default 5s.
	StartTimeout time.Duration
	// GoneTimeout: no datagram for this long calls OnIdle again (once): a sender silent this
	// long in the middle of a pass is taken for gone. A shorter silence may be a sender
	// starved of CPU. Default 5 × IdleTimeout.
	GoneTimeout time.Duration
	// OnStored is called when a slice reassembled from multicast is verified and stored new.
	OnStored func(index, n int)
	// OnLost is called with slices multicast will not deliver in this pass: repair them.
	OnLost func(index []int)
	// OnIdle is called (from another goroutine) when the channel has been idle IdleTimeout
	// (StartTimeout before the first datagram) and again at GoneTimeout, and when an END
	// arrives. After END, before any datagram, or once Gone, every missing slice should be
	// repaired; after a shorter silence in the middle of a pass (Front >= 0, not Ended), only
	// those up to Front: the sender has not sent the others yet.
	OnIdle func()
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// DefaultReceiverConfig returns the defaults.
func DefaultReceiverConfig() ReceiverConfig {
	return ReceiverConfig{MaxAssembling: 16, MaxPartial: 64, Lag: 4, IdleTimeout: 2 * time.Second, StartTimeout: 5 * time.Second}
}

// ReceiverStats counts what a receiver saw.
type ReceiverStats struct {
	Datagrams   int64 // for this content
	Foreign     int64 // for other content, or not ours at all
	Malformed   int64 // bad offsets or lengths
	SlicesNew   int64 // verified and new to the store
	BytesNew    int64 // their bytes: the summary's bytes_multicast
	SlicesDup   int64 // complete but already held
	Corrupt     int64 // reassembled slices that failed verification (dropped)
	Evicted     int64 // incomplete slices given up (memory bound or lag)
	Partial     int64 // of those, kept for partial repair
	LostReports int64 // slices reported lost
}

type assembly struct {
	buf    []byte
	chunk  int
	got    store.Bitmap // chunks received
	remain int          // chunks still missing
}

// Receiver reassembles slices from a Channel, verifies and stores them, and reports which
// slices are lost so they can be repaired from peers. Run owns all state except the counters.
type Receiver struct {
	ch  Channel
	m   *content.Manifest
	st  *store.Store
	cfg ReceiverConfig
	log *slog.Logger
	tag tag

	// Owned by Run.
	asm      map[int]*assembly
	free     [][]byte     // slice buffers to reuse
	front    int          // highest slice seen in this pass
	behind   int          // slices below this were examined by reportBehind in this pass
	ended    bool         // an END arrived and no DATA since
	reported store.Bitmap // slices reported lost (once per pass)
	partials *PartialStore

	lastRecv atomic.Int64 // unix nanos of the last datagram for us; read by the watchdog
	started  atomic.Bool  // a datagram for us has arrived
	frontA   atomic.Int64 // front, for Front
	endedA   atomic.Bool  // ended, for Ended

	acc ReceiverStats // counted by Run since the last flush (owned by Run)

	statsMu sync.Mutex // guards stats
	stats   ReceiverStats
}

// NewReceiver returns a receiver of m's content from ch into st.
func NewReceiver(ch Channel, m *content.Manifest, st *store.Store, cfg ReceiverConfig, log *slog.Logger) (*Receiver, error) {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = cfg.IdleTimeout
	}
	if cfg.MaxAssembling <= 0 || cfg.Lag <= 0 || cfg.IdleTimeout <= 0 {
		return nil, fmt.Errorf("mcast: bad receiver config %+v", cfg)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GoneTimeout <= 0 {
		cfg.GoneTimeout = 5 * cfg.IdleTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{
		ch: ch, m: m, st: st, cfg: cfg, log: log, tag: tagOf(m.ID()),
		asm: make(map[int]*assembly), front: -1, reported: store.NewBitmap(m.NumSlices()),
		partials: NewPartialStore(st, cfg.MaxPartial),
	}
	r.frontA.Store(-1)
	return r, nil
}

// Front returns the highest slice seen in the current pass (-1 before any).
func (r *Receiver) Front() int { return int(r.frontA.Load()) }

// Ended reports whether the current pass ended (an END arrived, no DATA since).
func (r *Receiver) Ended() bool { return r.endedA.Load() }

// Gone reports whether no datagram arrived for GoneTimeout.
func (r *Receiver) Gone() bool {
	return r.cfg.Now().Sub(time.Unix(0, r.lastRecv.Load())) >= r.cfg.GoneTimeout
}

// Stats returns a snapshot of the counters.
func (r *Receiver) Stats() ReceiverStats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	return r.stats
}

// flush adds what Run counted since the last flush to the counters Stats returns.
func (r *Receiver) flush() {
	a := &r.acc
	r.statsMu.Lock()
	s := &r.stats
	s.Datagrams += a.Datagrams
	s.Foreign += a.Foreign
	s.Malformed += a.Malformed
	s.SlicesNew += a.SlicesNew
	s.BytesNew += a.BytesNew
	s.SlicesDup += a.SlicesDup
	s.Corrupt += a.Corrupt
	s.Evicted += a.Evicted
	s.Partial += a.Partial
	s.LostReports += a.LostReports
	r.statsMu.Unlock()
	*a = ReceiverStats{}
}

// Run receives until the store is complete (nil; also when another carrier completed it), ctx
// ends (its error) or the channel or the store fails.
func (r *Receiver) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	defer r.flush()
	r.lastRecv.Store(r.cfg.Now().UnixNano())
	outer := ctx
	wg.Go(func() { r.watchdog(ctx, cancel) })
	br, batched := r.ch.(BatchReceiver)
	var buf []byte
	if !batched {
		buf = make([]byte, 65536)
	}
	b := new(Batch)
	for !r.st.Complete() {
		var err error
		if batched {
			err = br.RecvBatch(ctx, b)
		} else {
			var n int
			if n, err = r.ch.Recv(ctx, buf); err == nil {
				b.Reset()
				b.Append(buf[:n])
			}
		}
		if err != nil {
			if r.st.Complete() {
				return nil // completed by another carrier while we waited
			}
			if ctx.Err() != nil {
				return outer.Err()
			}
			return fmt.Errorf("mcast: receive: %w", err)
		}
		for i := range b.Len() {
			if err := r.handle(b.At(i)); err != nil {
				return err
			}
		}
		r.flush()
	}
	return nil
}

// watchdog calls OnIdle once per idle period, and stops Run (stop) when the store was
// completed by another carrier.
func (r *Receiver) watchdog(ctx context.Context, stop context.CancelFunc) {
	t := time.NewTicker(min(r.cfg.IdleTimeout/4, r.cfg.StartTimeout/4, 250*time.Millisecond))
	defer t.Stop()
	idle, gone := false, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.st.Complete() {
			stop()
			return
		}
		limit := r.cfg.IdleTimeout
		if !r.started.Load() {
			limit = r.cfg.StartTimeout
		}
		q := r.cfg.Now().Sub(time.Unix(0, r.lastRecv.Load()))
		quiet := q >= limit
		long := q >= max(limit, r.cfg.GoneTimeout)
		if r.cfg.OnIdle != nil && ((quiet && !idle) || (long && !gone)) {
			r.cfg.OnIdle()
		}
		idle, gone = quiet, long
	}
}

func (r *Receiver) handle(b []byte) error {
	h, payload, err := parse(b)
	if err != nil || h.tag != r.tag {
		r.acc.Foreign++
		return nil
	}
	r.lastRecv.Store(r.cfg.Now().UnixNano())
	r.started.Store(true)
	r.acc.Datagrams++
	i := int(h.slice)
	switch h.typ {
	case typeEnd:
		if !r.ended {
			r.endOfPass()
		}
		return nil
	case typeData:
		if r.ended { // a new pass
			r.ended, r.front, r.behind = false, -1, 0
			r.endedA.Store(false)
			r.frontA.Store(-1)
			r.reported = store.NewBitmap(r.m.NumSlices())
		}
	default:
		r.acc.Malformed++
		return nil
	}
	sliceLen := r.m.SliceLen(i)
	chunk := int(h.chunk)
	off := int(h.offset)
	if sliceLen == 0 || chunk == 0 || off%chunk != 0 || off >= sliceLen || len(payload) != min(chunk, sliceLen-off) {
		r.acc.Malformed++
		return nil
	}
	if i > r.front {
		r.front = i
		r.frontA.Store(int64(i))
		r.reportBehind()
	}
	if r.st.Has(i) {
		return nil
	}
	a := r.asm[i]
	if a != nil && a.chunk != chunk {
		r.drop(i) // another sender with another chunking: start over with this one
		a = nil
	}
	if a == nil {
		if len(r.asm) >= r.cfg.MaxAssembling {
			r.evictLowest()
		}
		nchunks := (sliceLen + chunk - 1) / chunk
		a = &assembly{buf: r.buffer()[:sliceLen], chunk: chunk, got: store.NewBitmap(nchunks), remain: nchunks}
		r.asm[i] = a
	}
	if !a.got.Set(off / chunk) {
		return nil // duplicate chunk
	}
	copy(a.buf[off:], payload)
	if a.remain--; a.remain > 0 {
		return nil
	}
	delete(r.asm, i)
	added, err := r.st.Put(i, a.buf)
	r.free = append(r.free, a.buf[:cap(a.buf)])
	switch {
	case errors.Is(err, store.ErrCorrupt):
		r.log.Warn("multicast slice failed verification", "slice", i)
		r.acc.Corrupt++
		r.lost(i)
	case err != nil:
		return fmt.Errorf("mcast: store slice %d: %w", i, err)
	case added:
		r.acc.SlicesNew++
		r.acc.BytesNew += int64(sliceLen)
		if r.cfg.OnStored != nil {
			r.flush() // callbacks see counters that include what they are told
			r.cfg.OnStored(i, sliceLen)
		}
	default:
		r.acc.SlicesDup++
	}
	return nil
}

func (r *Receiver) buffer() []byte {
	if n := len(r.free); n > 0 {
		b := r.free[n-1]
		r.free = r.free[:n-1]
		return b
	}
	return make([]byte, r.m.SliceSize)
}

func (r *Receiver) drop(i int) {
	if a := r.asm[i]; a != nil {
		delete(r.asm, i)
		r.free = append(r.free, a.buf[:cap(a.buf)])
	}
}

// giveUp abandons the assembly of slice i, keeping it for partial repair when that saves
// something.
func (r *Receiver) giveUp(i int) {
	a := r.asm[i]
	if a == nil {
		return
	}
	delete(r.asm, i)
	r.acc.Evicted++
	need := a.needMask()
	all := content.PartMask(len(a.buf), 0, len(a.buf))
	if r.cfg.MaxPartial > 0 && need != 0 && need != all && r.partials.put(i, a.buf, need) {
		r.acc.Partial++
		return // the partial store owns the buffer now
	}
	r.free = append(r.free, a.buf[:cap(a.buf)])
}

// Partials returns the slices kept in part, for the repair (swarm.Config.Partials).
func (r *Receiver) Partials() *PartialStore { return r.partials }

func (r *Receiver) evictLowest() {
	low := -1
	for i := range r.asm {
		if low < 0 || i < low {
			low = i
		}
	}
	if low >= 0 {
		r.giveUp(low)
		r.lost(low)
	}
}

// reportBehind reports every missing slice at least Lag below the front as lost.
func (r *Receiver) reportBehind() {
	var lost []int
	for ; r.behind <= r.front-r.cfg.Lag; r.behind++ {
		i := r.behind
		if r.reported.Has(i) || r.st.Has(i) {
			continue
		}
		r.giveUp(i)
		r.reported.Set(i)
		lost = append(lost, i)
	}
	r.reportLost(lost)
}

func (r *Receiver) lost(i int) {
	if !r.reported.Has(i) {
		r.reported.Set(i)
		r.reportLost([]int{i})
	}
}

func (r *Receiver) reportLost(lost []int) {
	if len(lost) == 0 {
		return
	}
	r.acc.LostReports += int64(len(lost))
	r.flush()
	if r.cfg.OnLost != nil {
		r.cfg.OnLost(lost)
	}
}

// endOfPass: the sender finished; everything missing is lost. A later pass may still fill
// slices in (they are stored if they arrive before a peer delivers them).
func (r *Receiver) endOfPass() {
	var lost []int
	for i := 0; i < r.m.NumSlices(); i++ {
		if !r.st.Has(i) && !r.reported.Has(i) && r.asm[i] == nil {
			r.reported.Set(i)
			lost = append(lost, i)
		}
	}
	for i := range r.asm {
		r.giveUp(i)
		if !r.reported.Has(i) {
			r.reported.Set(i)
			lost = append(lost, i)
		}
	}
	r.reportLost(lost)
	r.ended = true
	r.endedA.Store(true)
	r.flush()
	if r.cfg.OnIdle != nil {
		r.cfg.OnIdle()
	}
}
