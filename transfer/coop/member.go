package coop

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// The member role (seed: dealDownLoad). Every node runs one groupRun per group it is in: it
// watches the replicated task table and keeps one worker per task with slices assigned to
// this node and not yet done. A worker fetches its slices from the origin (contiguous slices
// coalesced into one Range request, at most OriginConns at once), keeps them in the cache,
// and pushes them to the task's requester, which acknowledges each one once stored. A slice
// re-assigned elsewhere (re-plan, steal) is not fetched any more; a task removed from the
// table stops its worker. The table is the committed Raft state, so assignments from a
// deposed leader never reach a worker: peergroup rejects a TaskAssign older than the task's
// term.

type groupRun struct {
	s    *Service
	g    *peergroup.Group
	self peer.ID

	workers map[string]*worker // by task ID; touched only by loop
	lastGC  time.Time          // touched only by loop
}

func newGroupRun(s *Service, g *peergroup.Group) *groupRun {
	return &groupRun{s: s, g: g, self: s.h.ID(), workers: make(map[string]*worker)}
}

func (r *groupRun) loop() {
	ch, stop := r.g.Watch()
	defer stop()
	t := time.NewTicker(r.s.cfg.GroupScan)
	defer t.Stop()
	defer func() {
		for id, w := range r.workers {
			w.stop(false)
			delete(r.workers, id)
		}
	}()
	for {
		r.sync()
		select {
		case <-r.s.ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return // the group closed (this node left)
			}
		case <-t.C:
		}
	}
}

// sync brings the workers in line with the task table.
func (r *groupRun) sync() {
	v := r.g.State()
	for id, t := range v.Tasks {
		if t.Kind != peergroup.TaskDownload {
			continue
		}
		var mine []int
		done := make(map[int]bool)
		for i, sl := range t.Slices {
			switch {
			case sl.State == peergroup.SliceDone:
				done[i] = true
			case sl.Assignee == r.self:
				mine = append(mine, i)
			}
		}
		w := r.workers[id]
		if w == nil && len(mine) == 0 {
			continue
		}
		if w == nil {
			var err error
			if w, err = r.startWorker(t); err != nil {
				lvl := slog.LevelWarn
				if errors.Is(err, errDropping) { // retried at the next change or scan
					lvl = slog.LevelDebug
				}
				r.s.log.Log(r.s.ctx, lvl, "cannot work on task", "task", id, "err", err)
				continue
			}
			r.workers[id] = w
		}
		w.update(mine, done)
		if len(mine) == 0 && w.idle() { // nothing assigned, nothing left to push
			w.stop(false)
			delete(r.workers, id)
		}
	}
	for id, w := range r.workers {
		if _, ok := v.Tasks[id]; !ok {
			w.stop(true)
			delete(r.workers, id)
		}
	}
	if now := r.s.cfg.Now(); r.g.IsLeader() && now.Sub(r.lastGC) >= r.s.cfg.GroupScan {
		r.lastGC = now
		ctx, cancel := context.WithTimeout(r.s.ctx, r.s.cfg.ControlTimeout)
		r.s.collect(ctx, r.g, v)
		cancel()
	}
}

type worker struct {
	s    *Service
	g    *peergroup.Group
	self peer.ID
	task peergroup.Task // the immutable fields
	res  Resource
	e    *entry
	keep bool // the cache key outlives the task

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // run, fetches, the pusher
	wake   chan struct{}  // cap 1: re-plan the work

	mu       sync.Mutex    // guards the fields below
	assigned map[int]bool  // missing slices assigned to this node, as of the latest table view
	done     map[int]bool  // slices done, as of the latest table view
	fetching map[int]bool  // claimed by one of this worker's fetches
	fetched  map[int]bool  // fetched from the origin by this worker
	queue    map[int]bool  // held, to push
	sent     map[int]bool  // pushed, not yet acknowledged (by any of the push streams)
	kick     chan struct{} // closed (and replaced) when the push streams have something to do
	acked    map[int]bool  // acknowledged by the requester (or delivered locally)
	fetchers int           // fetch goroutines running
	pusher   bool          // push goroutine running
	gaveUp   bool          // the origin failed for this node: slices given back
	changed  bool          // the resource changed: nothing more to do
	warned   bool          // logged that the origin ignores Range
}

func (r *groupRun) startWorker(t peergroup.Task) (*worker, error) {
	key, keep := cacheKey(&t)
	e, err := r.s.cache.open(key, layoutOf(&t))
	if err != nil {
		return nil, err
	}
	w := &worker{
		s: r.s, g: r.g, self: r.self, task: t, e: e, keep: keep,
		res:      Resource{URL: t.URL, Size: t.Size, ETag: t.Validators.ETag, LastModified: t.Validators.LastModified, Ranges: true},
		wake:     make(chan struct{}, 1),
		kick:     make(chan struct{}),
		assigned: make(map[int]bool), done: make(map[int]bool), fetching: make(map[int]bool), fetched: make(map[int]bool),
		queue: make(map[int]bool), sent: make(map[int]bool), acked: make(map[int]bool),
	}
	w.task.Slices, w.task.Excluded = nil, nil
	w.ctx, w.cancel = context.WithCancel(r.s.ctx)
	w.wg.Add(1)
	go w.run()
	return w, nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// update sets the missing slices assigned to this node and the slices done.
func (w *worker) update(mine []int, done map[int]bool) {
	w.mu.Lock()
	clear(w.assigned)
	for _, i := range mine {
		w.assigned[i] = true
	}
	w.done = done
	for i := range w.queue { // delivered by now (maybe by another member): no need to push
		if done[i] {
			delete(w.queue, i)
		}
	}
	w.mu.Unlock()
	signal(w.wake)
}

// idle reports whether the worker has nothing assigned, fetching or waiting to be pushed.
func (w *worker) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.assigned) == 0 && len(w.queue) == 0 && len(w.sent) == 0 && w.fetchers == 0 && !w.pusher
}

// stop cancels the worker and waits for it; gone says the task left the table, so a cache
// entry that cannot be recognised again is deleted.
func (w *worker) stop(gone bool) {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	changed := w.changed
	w.mu.Unlock()
	if changed || (gone && !w.keep) {
		w.s.cache.drop(w.e)
	} else {
		w.s.cache.release(w.e)
	}
}

func (w *worker) run() {
	defer w.wg.Done()
	ch, unsub := w.e.subscribe()
	defer unsub()
	for {
		w.step()
		select {
		case <-w.ctx.Done():
			return
		case <-w.wake:
		case <-ch:
		}
	}
}

// step queues held slices for the pusher and starts fetches for the others.
func (w *worker) step() {
	w.mu.Lock()
	var want []int
	newPush := false
	// Slices this worker fetched are pushed even if re-assigned meanwhile (a steal): the
	// origin already sent them.
	for i := range w.fetched {
		if !w.assigned[i] && !w.acked[i] && !w.sent[i] && !w.queue[i] && !w.done[i] {
			w.queue[i] = true
			newPush = true
		}
	}
	for i := range w.assigned {
		if w.acked[i] || w.sent[i] || w.queue[i] || w.fetching[i] {
			continue
		}
		if w.e.st.Has(i) {
			w.queue[i] = true
			newPush = true
			continue
		}
		if w.gaveUp || w.changed || w.e.isInflight(i) { // in flight: another task's worker fetches it
			continue
		}
		want = append(want, i)
	}
	startPusher := len(w.queue) > 0 && !w.pusher
	if startPusher {
		w.pusher = true
	}
	slots := w.s.cfg.OriginConns - w.fetchers
	w.mu.Unlock()
	if startPusher {
		w.wg.Add(1)
		go w.push()
	} else if newPush {
		w.kickPushers()
	}
	if slots <= 0 || len(want) == 0 {
		return
	}
	maxSlices := int(max(w.s.cfg.MaxRange/w.task.SliceSize, 1))
	for _, sp := range coalesce(want, maxSlices, slots) {
		if slots == 0 {
			break
		}
		idx := make([]int, 0, sp.Last-sp.First+1)
		for i := sp.First; i <= sp.Last; i++ {
			idx = append(idx, i)
		}
		got := w.e.claim(idx)
		if len(got) == 0 {
			continue
		}
		run := span{got[0], got[0]}
		for _, i := range got[1:] {
			if i != run.Last+1 {
				break
			}
			run.Last = i
		}
		for _, i := range got {
			if i > run.Last {
				w.e.unclaim(i)
			}
		}
		w.mu.Lock()
		for i := run.First; i <= run.Last; i++ {
			w.fetching[i] = true
		}
		w.fetchers++
		w.mu.Unlock()
		slots--
		w.wg.Add(1)
		go w.fetch(run)
	}
}

// wanted reports whether slice i is still assigned here and not yet held.
func (w *worker) wanted(i int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.assigned[i] && !w.e.st.Has(i)
}

// fetch fetches a run of slices, retrying origin failures; on a final failure the slices
// are given back (the member excludes itself), on a changed resource the requester is told.
func (w *worker) fetch(sp span) {
	defer w.wg.Done()
	defer func() {
		w.mu.Lock()
		w.fetchers--
		for i := sp.First; i <= sp.Last; i++ {
			delete(w.fetching, i)
		}
		w.mu.Unlock()
		for i := sp.First; i <= sp.Last; i++ {
			w.e.unclaim(i)
		}
		w.e.notify()
		signal(w.wake)
		w.kickPushers() // idle push streams close when nothing more is being fetched
	}()
	next := sp.First
	backoff := w.s.cfg.RetryBackoff
	for attempt := 0; ; attempt++ {
		var err error
		next, err = w.fetchOnce(next, sp.Last)
		switch {
		case err == nil, w.ctx.Err() != nil:
			return
		case errors.Is(err, ErrChanged):
			w.resourceChanged(err)
			return
		case !errors.Is(err, ErrOrigin) || attempt >= w.s.cfg.FetchRetries:
			w.giveUp(err)
			return
		}
		w.s.log.Debug("origin fetch failed, retrying", "task", w.task.ID, "slice", next, "err", err)
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// fetchOnce fetches slices first..last (skipping those no longer wanted) with one request
// and returns the first slice not fetched.
func (w *worker) fetchOnce(first, last int) (int, error) {
	for first <= last && !w.wanted(first) {
		first++
	}
	for last >= first && !w.wanted(last) {
		last--
	}
	if first > last {
		return first, nil
	}
	ss := w.task.SliceSize
	off := int64(first) * ss
	end := min(int64(last+1)*ss, w.task.Size)
	t0 := time.Now()
	body, err := w.s.origin.Open(w.ctx, w.res, off, end-off)
	if err != nil {
		return first, err
	}
	defer body.Close()
	w.s.log.Debug("fetching", "task", w.task.ID, "first", first, "last", last, "ttfb", time.Since(t0))
	defer func() {
		w.s.log.Debug("fetch ended", "task", w.task.ID, "first", first, "last", last, "took", time.Since(t0))
	}()
	if body.Whole {
		w.mu.Lock()
		warn := !w.warned
		w.warned = true
		w.mu.Unlock()
		if warn {
			w.s.log.Warn("the origin ignores Range: this member reads the whole resource", "task", w.task.ID, "url", w.task.URL)
		}
	}
	layout := layoutOf(&w.task)
	i := int(body.Start / ss)
	for i <= last {
		buf := make([]byte, layout.SliceLen(i))
		if _, err := io.ReadFull(body, buf); err != nil {
			return max(i, first), err
		}
		added, err := w.e.st.Put(i, buf)
		if err != nil {
			return max(i, first), fmt.Errorf("cache slice %d: %w", i, err)
		}
		if !added && w.task.Requester == w.self {
			w.s.duplicateOf(w.task.ID, len(buf))
		}
		w.mu.Lock()
		if added && i >= first {
			w.fetched[i] = true
		}
		delete(w.fetching, i) // held now: step queues it for the pusher
		w.mu.Unlock()
		w.e.unclaim(i)
		w.e.notify()
		i++
		if i >= first && i <= last && !w.anyWanted(i, last) {
			return last + 1, nil // the rest was re-assigned (steal, re-plan)
		}
	}
	return last + 1, nil
}

func (w *worker) anyWanted(from, to int) bool {
	for i := from; i <= to; i++ {
		if w.wanted(i) {
			return true
		}
	}
	return false
}

// giveUp reports that this node cannot fetch its slices: the leader re-plans them without it.
func (w *worker) giveUp(cause error) {
	w.mu.Lock()
	if w.gaveUp {
		w.mu.Unlock()
		return
	}
	w.gaveUp = true
	var back []uint32
	for i := range w.assigned {
		if !w.e.st.Has(i) {
			back = append(back, uint32(i))
		}
	}
	w.mu.Unlock()
	slices.Sort(back)
	w.s.log.Warn("origin failed for this member; giving its slices back", "task", w.task.ID, "slices", len(back), "err", cause)
	if len(back) == 0 {
		return
	}
	req := &rearrangeRequest{GroupID: w.g.ID(), TaskID: w.task.ID, Slices: back, Exclude: []peer.ID{w.self}}
	ctx, cancel := context.WithTimeout(w.ctx, w.s.cfg.ControlTimeout)
	defer cancel()
	if err := w.s.callLeader(ctx, w.g, msgRearrange, req, func(ctx context.Context) error {
		return w.s.serveRearrange(ctx, w.self, req)
	}, msgOK, nil); err != nil {
		w.s.log.Warn("could not give slices back (the requester will time them out)", "task", w.task.ID, "err", err)
	}
}

// resourceChanged stops the worker's fetching and tells the requester.
func (w *worker) resourceChanged(cause error) {
	w.mu.Lock()
	already := w.changed
	w.changed = true
	w.mu.Unlock()
	if already {
		return
	}
	w.s.log.Warn("the resource changed at the origin", "task", w.task.ID, "url", w.task.URL, "err", cause)
	n := &notice{GroupID: w.g.ID(), TaskID: w.task.ID, Code: noticeChanged, Detail: truncate(cause.Error(), maxShortLen)}
	if w.task.Requester == w.self {
		_ = w.s.serveNotice(w.self, n)
		return
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.s.cfg.ControlTimeout)
	defer cancel()
	if err := w.s.control(ctx, w.task.Requester, msgNotice, bincodec.Encode(n.encode), msgOK, nil); err != nil {
		w.s.log.Debug("could not tell the requester", "task", w.task.ID, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// push delivers queued slices to the requester until none are left, reconnecting with
// back-off; unacknowledged slices of a broken stream are sent again.
func (w *worker) push() {
	defer w.wg.Done()
	defer func() {
		w.mu.Lock()
		w.pusher = false
		w.mu.Unlock()
		signal(w.wake)
	}()
	if w.task.Requester == w.self {
		w.pushLocal()
		return
	}
	var wg sync.WaitGroup
	for range w.s.cfg.PushStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.pushLoop()
		}()
	}
	wg.Wait()
}

// kickPushers wakes every push stream waiting for work.
func (w *worker) kickPushers() {
	w.mu.Lock()
	close(w.kick)
	w.kick = make(chan struct{})
	w.mu.Unlock()
}

// pushLoop runs one push stream after another until the queue is empty, with back-off;
// the slices a broken stream had in flight go back to the queue.
func (w *worker) pushLoop() {
	backoff := 100 * time.Millisecond
	for w.ctx.Err() == nil {
		inflight := make(map[int]bool)
		err := w.pushStream(inflight)
		w.mu.Lock()
		back := len(inflight)
		for i := range inflight {
			delete(w.sent, i)
			w.queue[i] = true
		}
		clear(inflight) // a late ack of the broken stream changes nothing now
		w.mu.Unlock()
		if err == nil {
			return
		}
		if back > 0 {
			w.kickPushers() // the other streams may take them meanwhile
		}
		if w.ctx.Err() != nil {
			return
		}
		w.s.log.Debug("push to requester failed", "task", w.task.ID, "requester", w.task.Requester, "err", err)
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, pushBackoffMax)
	}
}

// pushLocal delivers to this node's own download: the slices are already in the shared store.
func (w *worker) pushLocal() {
	w.mu.Lock()
	q := make(map[int]bool, len(w.queue))
	for i := range w.queue {
		q[i] = w.fetched[i]
		w.acked[i] = true
	}
	clear(w.queue)
	w.mu.Unlock()
	for i, fromOrigin := range q {
		w.s.deliverLocal(w.task.ID, i, w.e.layout.SliceLen(i), fromOrigin)
	}
}

// pushStream sends queued slices over one stream, PushWindow unacknowledged at most, and
// returns nil once the queue is empty and everything it sent was acknowledged. inflight
// holds the slices it sent and that are not yet acknowledged (guarded by w.mu); the other
// push streams of the worker take other slices from the same queue.
func (w *worker) pushStream(inflight map[int]bool) error {
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	dctx, dcancel := context.WithTimeout(ctx, w.s.cfg.ControlTimeout)
	st, err := w.s.h.NewStream(network.WithAllowLimitedConn(dctx, "coop-push"), w.task.Requester, PushProtocol)
	dcancel()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	ok := false
	defer func() {
		if !ok {
			st.Reset()
		}
	}()
	_ = st.SetWriteDeadline(time.Now().Add(w.s.cfg.IOTimeout))
	if err := writeFrame(st, msgPushHeader, bincodec.Encode((&pushHeader{GroupID: w.g.ID(), TaskID: w.task.ID}).encode)); err != nil {
		return err
	}

	readErr := make(chan error, 1)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		readErr <- w.readAcks(st, inflight)
	}()

	buf := make([]byte, w.task.SliceSize)
	var tWait, tRead, tWrite time.Duration
	nSlices := 0
	defer func() {
		w.s.log.Debug("push timing", "task", w.task.ID, "slices", nSlices, "wait", tWait, "read", tRead, "write", tWrite)
	}()
	for {
		w.mu.Lock()
		// The stream stays open while this worker fetches: the next slice is on its way.
		if len(w.queue) == 0 && len(inflight) == 0 && w.fetchers == 0 {
			w.mu.Unlock()
			_ = st.CloseWrite()
			select {
			case err := <-readErr: // the requester closes its side after our EOF
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				ok = true
				_ = st.Close()
				return nil
			case <-time.After(w.s.cfg.IOTimeout):
				return errors.New("coop: requester did not close the push stream")
			}
		}
		next := -1
		if len(inflight) < w.s.cfg.PushWindow {
			for i := range w.queue {
				if next < 0 || i < next {
					next = i
				}
			}
		}
		var fromOrigin bool
		if next >= 0 {
			delete(w.queue, next)
			w.sent[next] = true
			inflight[next] = true
			fromOrigin = w.fetched[next]
		}
		kick := w.kick
		w.mu.Unlock()
		if next < 0 {
			ta := time.Now()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-readErr:
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return err
			case <-kick:
			case <-time.After(time.Second): // look again (kicks are not the only way work ends)
			}
			tWait += time.Since(ta)
			continue
		}
		ta := time.Now()
		data, err := w.e.st.ReadSlice(next, buf)
		tRead += time.Since(ta)
		if err != nil {
			return fmt.Errorf("read slice %d from the cache: %w", next, err)
		}
		var flags uint8
		if fromOrigin {
			flags |= flagFromOrigin
		}
		_ = st.SetWriteDeadline(time.Now().Add(w.s.cfg.IOTimeout))
		tb := time.Now()
		if err := writeSliceFrame(st, next, flags, data); err != nil {
			return err
		}
		tWrite += time.Since(tb)
		nSlices++
	}
}

// readAcks reads the requester's acknowledgements until the stream ends.
func (w *worker) readAcks(st network.Stream, inflight map[int]bool) error {
	r := bufio.NewReader(st)
	for {
		_ = st.SetReadDeadline(time.Now().Add(pushIdle))
		typ, b, err := readFrame(r, 1<<10)
		if err != nil {
			return err
		}
		d := bincodec.NewDecoder(b, ErrBadRequest)
		switch typ {
		case msgAck:
			i := int(d.Uvarint())
			if err := d.Finish(); err != nil {
				return err
			}
			w.mu.Lock()
			if inflight[i] {
				delete(inflight, i)
				delete(w.sent, i)
				w.acked[i] = true
			}
			w.mu.Unlock()
			w.kickPushers()
		case msgPushRefused:
			var em errorMsg
			em.decode(&d)
			if err := d.Finish(); err != nil {
				return err
			}
			return em.err()
		default:
			return fmt.Errorf("%w: frame type %d on a push stream", ErrBadRequest, typ)
		}
	}
}

// handlePush is the requester's side of a push stream: it stores each slice (length
// checked against the task) and acknowledges it.
func (s *Service) handlePush(st network.Stream) {
	if n := s.pushStreams.Add(1); n > maxPushStreams {
		s.pushStreams.Add(-1)
		st.Reset()
		return
	}
	defer s.pushStreams.Add(-1)
	if err := st.Scope().SetService(ServiceName); err != nil {
		st.Reset()
		return
	}
	if !s.enter() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	stop := context.AfterFunc(s.ctx, func() { st.Reset() })
	defer stop()
	t0 := time.Now()
	if err := s.servePush(st); err != nil {
		s.log.Debug("push stream failed", "from", st.Conn().RemotePeer(), "err", err)
		if errors.As(err, new(refused)) {
			// Let the refusal (and the acknowledgements before it) reach the member before
			// the reset, which would discard what it has not read yet.
			_ = st.CloseWrite()
			_ = st.SetReadDeadline(time.Now().Add(refuseLinger))
			_, _ = io.Copy(io.Discard, io.LimitReader(st, maxSliceSize+64))
		}
		st.Reset()
		return
	}
	s.log.Debug("push stream served", "from", st.Conn().RemotePeer(), "took", time.Since(t0))
	_ = st.Close()
}

func (s *Service) servePush(st network.Stream) error {
	from := st.Conn().RemotePeer()
	refuse := func(err error) error {
		_ = st.SetWriteDeadline(time.Now().Add(s.cfg.IOTimeout))
		_ = writeFrame(st, msgPushRefused, bincodec.Encode(newErrorMsg(err).encode))
		return refused{err}
	}
	_ = st.SetReadDeadline(time.Now().Add(headerTimeout))
	r := bufio.NewReaderSize(st, 64<<10)
	var h pushHeader
	if err := expectFrame(r, 1<<10, msgPushHeader, h.decode); err != nil {
		return err
	}
	g, ok := s.group(h.GroupID)
	if !ok {
		return refuse(fmt.Errorf("%w: not in group %q", ErrUnknownTask, h.GroupID))
	}
	v := g.State()
	if !v.IsMember(from) {
		return refuse(fmt.Errorf("%w: %s", ErrNotMember, from))
	}
	t, ok := v.Tasks[h.TaskID]
	if !ok || t.Requester != s.h.ID() || t.Kind != peergroup.TaskDownload {
		return refuse(fmt.Errorf("%w: %q", ErrUnknownTask, h.TaskID))
	}
	key, _ := cacheKey(&t)
	layout := layoutOf(&t)
	e, err := s.cache.open(key, layout)
	if err != nil {
		return refuse(err)
	}
	defer s.cache.release(e)
	// The stream is read ahead of the store: a storing goroutine writes each slice and
	// acknowledges it while the next frames are read, so the stream's flow-control window
	// (the muxer's, a few hundred KiB) drains as fast as the data comes rather than one slice
	// per store write, and a member's pushes keep up with its origin fetch.
	nbuf := int(min(max(pushReadAhead/t.SliceSize, 2), 16))
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, t.SliceSize+16)
	}
	type frame struct {
		idx   uint64
		flags uint8
		data  []byte
		buf   []byte
	}
	full := make(chan frame, nbuf)
	stored := make(chan error, 1) // the storing goroutine's end: nil, or why it stopped
	go func() {
		err := func() error {
			for f := range full {
				added, err := e.st.Put(int(f.idx), f.data)
				if err != nil {
					return refusal{fmt.Errorf("%w: slice %d: %v", ErrBadRequest, f.idx, err)}
				}
				if added {
					e.notify()
					s.progressOf(t.ID).onSlice(s.cfg.Now(), from, int(f.idx), len(f.data), f.flags&flagFromOrigin != 0)
				} else {
					s.duplicateOf(t.ID, len(f.data))
				}
				_ = st.SetWriteDeadline(time.Now().Add(s.cfg.IOTimeout))
				if err := writeFrame(st, msgAck, binaryUvarint(f.idx)); err != nil {
					return err
				}
				free <- f.buf
			}
			return nil
		}()
		if err != nil {
			_ = st.CloseRead() // the reader may be waiting for frames that will not be acknowledged
		}
		stored <- err
	}()
	// finish ends the storing goroutine after what was read and returns its error, else err;
	// a refusal is written once nothing else writes to the stream.
	finish := func(err error) error {
		close(full)
		if serr := <-stored; serr != nil {
			err = serr
		}
		var rf refusal
		if errors.As(err, &rf) {
			return refuse(rf.error)
		}
		return err
	}
	for {
		var buf []byte
		select {
		case buf = <-free:
		case err := <-stored: // it stopped early: nothing more is acknowledged
			stored <- err
			return finish(nil)
		}
		_ = st.SetReadDeadline(time.Now().Add(pushIdle))
		typ, n, err := readFrameHeader(r, int(t.SliceSize)+16)
		if errors.Is(err, io.EOF) {
			return finish(nil)
		}
		if err != nil {
			return finish(err)
		}
		if typ != msgSlice {
			return finish(refusal{fmt.Errorf("%w: frame type %d on a push stream", ErrBadRequest, typ)})
		}
		body := buf[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return finish(err)
		}
		d := bincodec.NewDecoder(body, ErrBadRequest)
		idx, flags := d.Uvarint(), d.U8()
		if d.Err() != nil || idx >= uint64(layout.NumSlices()) {
			return finish(refusal{fmt.Errorf("%w: bad slice frame", ErrBadRequest)})
		}
		full <- frame{idx: idx, flags: flags, data: d.Rest(), buf: buf}
	}
}

// refusal marks an error the requester reports to the member (msgPushRefused) before
// resetting the stream.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

// refused is an error the requester reported to the member (the refusal is written).
type refused struct{ error }

func (r refused) Unwrap() error { return r.error }

func binaryUvarint(v uint64) []byte { return binary.AppendUvarint(nil, v) }

// deliverLocal records a slice this node fetched for its own download.
func (s *Service) deliverLocal(task string, i, n int, fromOrigin bool) {
	s.progressOf(task).onSlice(s.cfg.Now(), s.h.ID(), i, n, fromOrigin)
}
