package coop

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sys/unix"

	"github.com/raftcast/raftcast/peergroup"
	"github.com/raftcast/raftcast/transfer/store"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// Request is one cooperative download (raftcast download URL --out PATH ...).
type Request struct {
	URL string
	// Out is where the file appears once whole and verified (atomically: absent or whole).
	Out string
	// SliceSize asks for a slice size (0: the leader's default). Requests for the same URL
	// with the same slice size share cached slices.
	SliceSize int64
	// SHA256 is the expected SHA-256 of the whole file, hex (optional).
	SHA256 string
	// Timeout bounds the whole download (0: only ctx).
	Timeout time.Duration
}

// Result summarises a finished download.
type Result struct {
	TaskID  string
	Size    int64
	Seconds float64
	Slices  int
	// BytesByPeer: peer ID → bytes of this download it fetched from the origin.
	BytesByPeer map[string]int64
	// BytesFromCache: bytes members pushed from their caches (no origin traffic).
	BytesFromCache int64
	// BytesResumed: bytes this node already held when the download started (resume).
	BytesResumed int64
	// SHA256 of the file, hex.
	SHA256 string
	// Restarts: how often the download started over because the resource changed.
	Restarts int
	// Warnings worth showing the user (e.g. the origin ignores Range).
	Warnings []string
}

// errRestart asks Download to start the task over (slices lost, see CheckResult.Lost).
var errRestart = errors.New("coop: restart the task")

func (r *Request) check() error {
	if _, err := ParseURL(r.URL); err != nil {
		return err
	}
	if r.Out == "" {
		return fmt.Errorf("%w: no output path", ErrBadRequest)
	}
	if st, err := os.Stat(r.Out); err == nil && st.IsDir() {
		return fmt.Errorf("%w: output %s is a directory", ErrBadRequest, r.Out)
	}
	if st, err := os.Stat(filepath.Dir(r.Out)); err != nil || !st.IsDir() {
		return fmt.Errorf("%w: the output's directory %s does not exist", ErrBadRequest, filepath.Dir(r.Out))
	}
	if r.SliceSize != 0 && (r.SliceSize < minSliceSize || r.SliceSize > maxSliceSize) {
		return fmt.Errorf("%w: slice size %d outside [%d, %d]", ErrBadRequest, r.SliceSize, minSliceSize, maxSliceSize)
	}
	if r.SHA256 != "" {
		r.SHA256 = strings.ToLower(r.SHA256)
		if b, err := hex.DecodeString(r.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("%w: --sha256 must be 64 hex digits", ErrBadRequest)
		}
	}
	if r.Timeout < 0 {
		return fmt.Errorf("%w: negative timeout", ErrBadRequest)
	}
	return nil
}

// Download fetches req.URL through group g (seed: fullDownLoad + TaskListener): the leader
// plans, the members fetch and push, this node assembles, verifies and writes req.Out. It
// returns once the file is at req.Out, whole and verified; on failure nothing is at req.Out.
// progress, if not nil, is called with the bytes held and the size as slices arrive.
func (s *Service) Download(ctx context.Context, g *peergroup.Group, req Request, progress func(done, total int64)) (Result, error) {
	if err := req.check(); err != nil {
		return Result{}, err
	}
	if g == nil {
		return Result{}, fmt.Errorf("%w: no group", ErrBadRequest)
	}
	if !s.enter() {
		return Result{}, ErrClosed
	}
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	if req.Timeout > 0 {
		var c context.CancelFunc
		ctx, c = context.WithTimeout(ctx, req.Timeout)
		defer c()
	}
	if s.attach(g) == nil {
		return Result{}, ErrClosed
	}
	start := time.Now()
	// This node's previous task for the URL may still be leaving the table: the leader would
	// resume it.
	s.mu.Lock()
	removing := s.removals[req.URL]
	s.mu.Unlock()
	if removing != nil {
		select {
		case <-removing:
		case <-ctx.Done():
			return Result{}, s.ctxErr(ctx, ctx.Err())
		}
	}
	restarts, lostRestarts := 0, 0
	for {
		ans, err := s.requestStart(ctx, g, req)
		if err != nil {
			return Result{}, s.ctxErr(ctx, err)
		}
		var res Result
		if ans.TaskID == "" { // empty resource
			res.SHA256, err = exportEmpty(req.Out, req.SHA256)
		} else {
			res, err = s.runTask(ctx, g, req, ans, progress)
		}
		res.Seconds, res.Restarts = time.Since(start).Seconds(), restarts
		switch {
		case errors.Is(err, errRestart) && lostRestarts < 8:
			lostRestarts++
			continue
		case errors.Is(err, ErrChanged) && restarts < s.cfg.ChangeRestarts:
			restarts++
			s.log.Warn("the resource changed during the download; starting over", "url", req.URL, "err", err)
			continue
		}
		if err != nil {
			return res, s.ctxErr(ctx, err)
		}
		return res, nil
	}
}

// ctxErr explains a context error.
func (s *Service) ctxErr(ctx context.Context, err error) error {
	switch {
	case s.ctx.Err() != nil:
		return fmt.Errorf("%w: %v", ErrClosed, err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("download timed out: %w", err)
	}
	return err
}

// requestStart asks the leader to start (or resume) the task.
func (s *Service) requestStart(ctx context.Context, g *peergroup.Group, req Request) (*startAnswer, error) {
	sr := &startRequest{GroupID: g.ID(), URL: req.URL, SliceSize: uint64(req.SliceSize)}
	var ans startAnswer
	err := s.callLeader(ctx, g, msgStart, sr, func(ctx context.Context) error {
		a, err := s.serveStart(ctx, s.h.ID(), sr)
		if err == nil {
			ans = *a
		}
		return err
	}, msgAccept, ans.decode)
	if err != nil {
		return nil, err
	}
	if ans.TaskID != "" && (ans.Size == 0 || ans.SliceSize < minSliceSize || ans.SliceSize > maxSliceSize ||
		peergroup.NumSlices(int64(ans.Size), int64(ans.SliceSize)) > maxSlices) {
		return nil, fmt.Errorf("%w: leader answered size %d, slice size %d", ErrBadRequest, ans.Size, ans.SliceSize)
	}
	return &ans, nil
}

// finalLeaderErr reports errors another attempt with the (next) leader will not fix.
func finalLeaderErr(err error) bool {
	for _, e := range []error{ErrOrigin, ErrChanged, ErrNoSize, ErrBadRequest, ErrNotMember, ErrNoMembers, ErrUnknownTask, ErrClosed, ErrChecksum} {
		if errors.Is(err, e) {
			return true
		}
	}
	for _, e := range []error{peergroup.ErrMalformed, peergroup.ErrInvalid, peergroup.ErrForbidden, peergroup.ErrNotMember, peergroup.ErrBanned} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// callLeader sends a request to the group's leader (or runs local when this node leads),
// retrying across leader changes, elections and unreachable leaders until ctx ends.
func (s *Service) callLeader(ctx context.Context, g *peergroup.Group, typ uint8, req interface{ encode(*bincodec.Encoder) },
	local func(context.Context) error, want uint8, decode func(*bincodec.Decoder)) error {
	body := bincodec.Encode(req.encode)
	backoff := 50 * time.Millisecond
	var last error
	for {
		var err error
		switch leader := g.Leader(); {
		case leader == "":
			err = peergroup.ErrNoLeader
		case leader == s.h.ID():
			err = local(ctx)
		default:
			err = s.control(ctx, leader, typ, body, want, decode)
		}
		if err == nil || finalLeaderErr(err) {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// listener is the requester's view of one task (seed: TaskListener).
type listener struct {
	s        *Service
	g        *peergroup.Group
	groupID  string
	task     peergroup.Task // immutable fields
	noRanges bool
	e        *entry
	done     chan struct{} // closed when the download ends
	*progress
}

// progress is what arrives for a task this node requests; it exists from the first slice on,
// which may come before the start answer does.
type progress struct {
	wake chan struct{} // cap 1: a slice arrived or a notice came

	mu          sync.Mutex // guards the fields below
	since       map[peer.ID]time.Time
	first       map[peer.ID]time.Time // when each member's current stretch of work started
	delivered   map[peer.ID]int64     // bytes each member delivered since first
	by          map[int]peer.ID       // who delivered each slice
	bytesByPeer map[peer.ID]int64
	fromCache   int64
	duplicate   int64 // bytes of slices delivered again (held already): a steal's overlap
	changed     error
}

func newProgress() *progress {
	return &progress{
		wake:  make(chan struct{}, 1),
		since: make(map[peer.ID]time.Time), by: make(map[int]peer.ID), bytesByPeer: make(map[peer.ID]int64),
		first: make(map[peer.ID]time.Time), delivered: make(map[peer.ID]int64),
	}
}

// progressOf returns the progress record of a task this node requests, creating it.
func (s *Service) progressOf(task string) *progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.progress[task]
	if p == nil {
		p = newProgress()
		s.progress[task] = p
	}
	return p
}

// onSlice records a stored slice.
func (l *progress) onSlice(now time.Time, from peer.ID, i, n int, fromOrigin bool) {
	l.mu.Lock()
	l.since[from] = now
	if _, ok := l.first[from]; !ok {
		l.first[from] = now
	}
	l.delivered[from] += int64(n)
	l.by[i] = from
	if fromOrigin {
		l.bytesByPeer[from] += int64(n)
	} else {
		l.fromCache += int64(n)
	}
	l.mu.Unlock()
	signal(l.wake)
}

// duplicateOf records n bytes of a slice of task that reached this node's store again (it was
// held already: a member and the idle member that took its slices over both delivered it),
// if the task is still running here.
func (s *Service) duplicateOf(task string, n int) {
	s.mu.Lock()
	p := s.progress[task]
	s.mu.Unlock()
	if p != nil {
		p.mu.Lock()
		p.duplicate += int64(n)
		p.mu.Unlock()
	}
}

func (l *progress) setChanged(err error) {
	l.mu.Lock()
	if l.changed == nil {
		l.changed = err
	}
	l.mu.Unlock()
	signal(l.wake)
}

// runTask follows one task to its end: the heartbeat re-plans what is missing, completions are
// reported in batches, and the finished file is verified and written out. The task is removed
// from the table at the end, whatever the outcome (unless the service is closing: a restarted
// node resumes it).
func (s *Service) runTask(ctx context.Context, g *peergroup.Group, req Request, ans *startAnswer, progress func(done, total int64)) (Result, error) {
	task := peergroup.Task{
		ID: ans.TaskID, Kind: peergroup.TaskDownload, URL: req.URL, Size: int64(ans.Size), SliceSize: int64(ans.SliceSize),
		Validators: peergroup.Validators{ETag: ans.ETag, LastModified: ans.LastModified},
	}
	key, keep := cacheKey(&task)
	layout := layoutOf(&task)
	res := Result{TaskID: task.ID, Size: task.Size, Slices: layout.NumSlices(), BytesByPeer: make(map[string]int64)}
	if !ans.Ranges {
		res.Warnings = append(res.Warnings, "the origin ignores Range requests: one member fetched the whole resource")
		s.log.Warn("the origin ignores Range: one member fetches the whole resource", "url", req.URL)
	}

	// The cache entry: a failed download's slices of this version may be on their way out.
	var e *entry
	for {
		var err error
		e, err = s.cache.open(key, layout)
		if err == nil {
			break
		}
		if !errors.Is(err, errDropping) {
			return res, err
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	s.mu.Lock()
	if other := s.listeners[task.ID]; other != nil {
		// The same node already downloads this task: wait for it, then start again (served
		// from this node's cache).
		s.mu.Unlock()
		s.cache.release(e)
		select {
		case <-other.done:
			return res, errRestart
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	l := &listener{s: s, g: g, groupID: g.ID(), task: task, noRanges: !ans.Ranges, e: e, done: make(chan struct{})}
	s.listeners[task.ID] = l
	s.mu.Unlock()
	l.progress = s.progressOf(task.ID)
	res.BytesResumed = int64(e.st.Count()) * task.SliceSize
	if e.st.Complete() {
		res.BytesResumed = task.Size
	}
	dropCache := !keep

	defer func() {
		s.mu.Lock()
		delete(s.listeners, task.ID)
		delete(s.progress, task.ID)
		s.mu.Unlock()
		close(l.done)
		if dropCache {
			s.cache.drop(e)
		} else {
			s.cache.release(e)
		}
	}()

	// The output is written while the slices arrive (exporter).
	x, err := newExporter(e, req.Out, task.ID)
	if err != nil {
		return res, err
	}
	xctx, xstop := context.WithCancel(ctx)
	xdone := make(chan error, 1)
	go func() { xdone <- x.run(xctx) }()
	err = l.run(ctx, progress)
	finishAt := time.Now() // the last slice landed: what is left is the file's rest, its hash and fsync
	xstop()
	if xerr := <-xdone; xerr != nil && err == nil {
		err = xerr
	}
	l.mu.Lock()
	for p, n := range l.bytesByPeer {
		res.BytesByPeer[p.String()] = n
	}
	if err == nil && s.log.Enabled(ctx, slog.LevelDebug) {
		last := make([]any, 0, 2*len(l.since))
		for _, p := range slices.Sorted(maps.Keys(l.since)) {
			last = append(last, p.ShortString(), finishAt.Sub(l.since[p]).Round(time.Millisecond).String())
		}
		s.log.Debug("last delivery per member, before the end", append([]any{"task", task.ID}, last...)...)
	}
	res.BytesFromCache = l.fromCache
	duplicate := l.duplicate
	l.mu.Unlock()
	exportAt := time.Now()
	if err == nil {
		res.SHA256, err = x.finish(req.SHA256)
		if errors.Is(err, ErrChecksum) {
			dropCache = true
		}
	} else {
		x.abort()
	}
	if errors.Is(err, ErrChanged) {
		dropCache = true
	}
	if err == nil {
		s.log.Info("download complete", "task", task.ID, "url", req.URL, "size", task.Size, "from_cache", res.BytesFromCache,
			"duplicate", duplicate,
			"after_last_slice", time.Since(finishAt), "export_wait", exportAt.Sub(finishAt), "export", x.timing)
		// The file is in place: the task leaves the table in the background (the next download
		// of the URL from this node waits for it), so the answer does not wait for a commit.
		s.removeTask(ctx, g, req.URL, task.ID)
	} else if s.ctx.Err() == nil { // a closing service leaves the task for a restarted node to resume
		s.removeTaskNow(context.WithoutCancel(ctx), g, task.ID)
	}
	return res, err
}

// removeTaskNow removes a task of this node from the table (until ctx ends), bounded tighter
// than other control requests: amid an election waiting for a leader would only delay the answer.
func (s *Service) removeTaskNow(ctx context.Context, g *peergroup.Group, id string) {
	rctx, cancel := context.WithTimeout(ctx, min(s.cfg.ControlTimeout/3, removeTimeout))
	defer cancel()
	t0 := time.Now()
	if err := g.Apply(rctx, &peergroup.TaskRemove{TaskID: id}); err != nil && !errors.Is(err, peergroup.ErrInvalid) {
		s.log.Warn("could not remove the task (the leader collects it later)", "task", id, "err", err)
		return
	}
	s.log.Debug("task removed", "task", id, "took", time.Since(t0))
}

// removeTask removes a finished task in the background, registered in s.removals under url.
func (s *Service) removeTask(ctx context.Context, g *peergroup.Group, url, id string) {
	if !s.enter() {
		return // closing: a restarted node resumes the task (and finds it complete)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.removals[url] = done
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			if s.removals[url] == done {
				delete(s.removals, url)
			}
			s.mu.Unlock()
			close(done)
		}()
		if s.ctx.Err() == nil {
			s.removeTaskNow(s.ctx, g, id)
		}
	}()
}

// removeTimeout bounds the requester's removal of its finished task.
const removeTimeout = 5 * time.Second

// run is the heartbeat loop (TaskListener): it ends when every slice is held, or with an
// error.
func (l *listener) run(ctx context.Context, progress func(done, total int64)) error {
	s := l.s
	n := l.e.layout.NumSlices()
	watch, stopWatch := l.g.Watch()
	defer stopWatch()
	landed, unsub := l.e.subscribe() // a slice landed in the store (pushed or fetched here)
	defer unsub()
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()

	var wg sync.WaitGroup // the reporter and re-plan calls
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	hb := &heartbeat{l: l, started: s.cfg.Now(), reporting: make(map[int]bool), prevOut: make(map[peer.ID]int), lastReport: s.cfg.Now(),
		stoleFrom: make(map[peer.ID]stealRecord)}
	calls := make(chan callResult, 4)
	// A report and a steal may run at once: a report waits for an fsync, which a busy disk
	// can stretch to seconds, and the end game must not wait for it.
	busy := make(map[string]bool) // by lane (laneOf): a call of that lane is running
	lastDone := int64(-1)
	for {
		count := l.e.st.Count()
		if progress != nil {
			done := int64(count) * l.task.SliceSize
			if count == n {
				done = l.task.Size
			}
			if done != lastDone {
				progress(done, l.task.Size)
				lastDone = done
			}
		}
		if count == n {
			return nil
		}
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if changed != nil {
			return changed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.wake:
		case <-landed:
		case _, ok := <-watch:
			if !ok {
				return fmt.Errorf("%w: the group closed", ErrClosed)
			}
		case <-tick.C:
			if busy[laneReport] && busy[lanePlan] {
				continue
			}
			act, err := hb.check(busy)
			if err != nil {
				return err
			}
			if act != nil {
				busy[laneOf(act.kind)] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					calls <- callResult{kind: act.kind, err: act.do(ctx), slices: act.slices}
				}()
			}
		case r := <-calls:
			busy[laneOf(r.kind)] = false
			hb.finished(r)
			if r.err != nil && errors.Is(r.err, ErrNoMembers) && r.kind == actRearrange {
				return fmt.Errorf("%w: %d slices missing", ErrNoMembers, n-l.e.st.Count())
			}
			if r.err != nil && ctx.Err() == nil {
				s.log.Debug("task call failed", "task", l.task.ID, "kind", r.kind, "err", r.err)
			}
		}
	}
}

// stealCooldown: heartbeats before the same member may be stolen from again; futileCooldown
// when the last steal from it moved nothing (it held or was reading every slice asked for:
// its pushes lag, its fetches do not).
const (
	stealCooldown  = 6
	futileCooldown = 20
)

// stealRecord is the last steal from a member.
type stealRecord struct {
	at     time.Time
	slices []uint32 // the slices asked for
}

// Heartbeat actions.
const (
	actReport    = "report"
	actRearrange = "rearrange"
	actSteal     = "steal"
)

// Lanes: calls of one lane run one at a time; the two lanes run side by side.
const (
	laneReport = "report"
	lanePlan   = "plan"
)

func laneOf(kind string) string {
	if kind == actReport {
		return laneReport
	}
	return lanePlan
}

type callResult struct {
	kind   string
	err    error
	slices []int // report: the slices reported
}

type action struct {
	kind string
	do   func(context.Context) error
	// report: the slices being reported
	slices []int
}

// heartbeat is the listener's bookkeeping between checks; touched only by run.
type heartbeat struct {
	l          *listener
	started    time.Time
	reporting  map[int]bool // slices in a SlicesDone call now
	lastReport time.Time
	lastReplan time.Time
	lastSteal  time.Time
	stoleFrom  map[peer.ID]stealRecord // the last steal from each member
	prevOut    map[peer.ID]int         // outstanding slices per member at the previous check
}

func (h *heartbeat) finished(r callResult) {
	if r.kind == actReport {
		for _, i := range r.slices {
			delete(h.reporting, i)
		}
		if r.err == nil {
			h.lastReport = h.l.s.cfg.Now()
		}
	}
}

// check looks at the task once and returns at most one call to make, of a lane not busy.
func (h *heartbeat) check(busy map[string]bool) (*action, error) {
	l, s := h.l, h.l.s
	now := s.cfg.Now()
	v := l.g.State()
	t, ok := v.Tasks[l.task.ID]
	if !ok {
		if now.Sub(h.started) < s.cfg.ControlTimeout { // this node's state may lag the leader's
			return nil, nil
		}
		return nil, fmt.Errorf("%w: task %s left the group's table", ErrUnknownTask, l.task.ID)
	}
	if t.Term == 0 && now.Sub(h.started) < s.cfg.SliceTimeout {
		return nil, nil // the plan is not committed yet, or not applied here yet
	}
	live := make(map[peer.ID]bool)
	liveList := l.g.LiveMembers()
	for _, p := range liveList {
		live[p] = true
	}
	held := l.e.st.Have()

	// A member that newly has outstanding slices starts its silence clock now.
	out := make(map[peer.ID]int)
	for i, sl := range t.Slices {
		if sl.Assignee != "" && sl.State != peergroup.SliceDone && !held.Has(i) {
			out[sl.Assignee]++
		}
	}
	l.mu.Lock()
	for p, c := range out {
		if c > 0 && h.prevOut[p] == 0 {
			l.since[p] = now
			l.first[p] = now // the rate counts from here
			l.delivered[p] = 0
		}
	}
	eta := make(map[peer.ID]time.Duration)
	for p, c := range out {
		if b := l.delivered[p]; b > 0 {
			rate := float64(b) / now.Sub(l.first[p]).Seconds()
			eta[p] = time.Duration(float64(c) * float64(l.task.SliceSize) / rate * float64(time.Second))
		}
	}
	since := make(map[peer.ID]time.Time, len(l.since))
	for p, at := range l.since {
		since[p] = at
	}
	l.mu.Unlock()
	h.prevOut = out

	res := CheckSlices(CheckInput{
		Now: now, Slices: t.Slices, Held: held.Has, Live: live, Excluded: t.Excluded,
		Since: since, Timeout: s.cfg.SliceTimeout,
	})
	if len(res.Lost) > 0 {
		s.log.Warn("slices marked done are not held here (cache lost?): starting the task over", "task", t.ID, "lost", len(res.Lost))
		rctx, cancel := context.WithTimeout(s.ctx, s.cfg.ControlTimeout/3)
		_ = l.g.Apply(rctx, &peergroup.TaskRemove{TaskID: t.ID})
		cancel()
		return nil, errRestart
	}

	// Re-plan the slices of silent, dead or failed members (partDownLoad).
	// (Not while a report runs, as before the lanes: a requester slow to report is likely
	// slow to take in pushes too, and its members are not to blame.)
	if !busy[lanePlan] && !busy[laneReport] && len(res.Missing) > 0 && now.Sub(h.lastReplan) >= s.cfg.SliceTimeout/4 {
		h.lastReplan = now
		req := &rearrangeRequest{GroupID: l.groupID, TaskID: t.ID, Slices: res.Missing, Exclude: res.Exclude, NoRanges: l.noRanges}
		s.log.Info("re-planning missing slices", "task", t.ID, "missing", len(res.Missing), "exclude", res.Exclude)
		l.mu.Lock()
		for _, p := range res.Exclude {
			delete(l.since, p)
		}
		l.mu.Unlock()
		return &action{kind: actRearrange, do: func(ctx context.Context) error { return l.rearrange(ctx, req) }}, nil
	}

	// Endgame: move the tail of a slow member's share to idle members (before reporting: a
	// report can wait a heartbeat, the tail cannot). A member stolen from within the last
	// stealCooldown heartbeats is skipped, futileCooldown if nothing moved, so a member
	// whose pushes lag (it holds its outstanding slices) does not hide the slowest fetcher.
	if !busy[lanePlan] && s.cfg.Steal && len(res.Missing) == 0 && now.Sub(h.lastSteal) >= 2*s.cfg.Heartbeat {
		slicesOf := func(p peer.ID) []uint32 {
			var own []uint32
			for i, sl := range t.Slices {
				if sl.Assignee == p && sl.State != peergroup.SliceDone && !held.Has(i) {
					own = append(own, uint32(i))
				}
			}
			return own
		}
		etaOf := func(p peer.ID) (time.Duration, bool) { d, ok := eta[p]; return d, ok }
		skip := make(map[peer.ID]bool)
		for p, r := range h.stoleFrom {
			cool := time.Duration(stealCooldown)
			if !slices.ContainsFunc(r.slices, func(i uint32) bool { return int(i) >= len(t.Slices) || t.Slices[i].Assignee != p }) {
				cool = futileCooldown // nothing moved (or not yet applied here: no harm)
			}
			if now.Sub(r.at) < cool*s.cfg.Heartbeat {
				skip[p] = true
			}
		}
		if victim, stolen := PlanSteal(res.Outstanding, slicesOf, liveList, t.Excluded, skip, etaOf, s.cfg.StealAfter); victim != "" {
			h.lastSteal = now
			h.stoleFrom[victim] = stealRecord{at: now, slices: stolen}
			req := &rearrangeRequest{GroupID: l.groupID, TaskID: t.ID, Slices: stolen, Avoid: []peer.ID{victim}, NoRanges: l.noRanges}
			s.log.Info("moving a slow member's last slices to idle members", "task", t.ID, "victim", victim, "slices", len(stolen), "eta", eta[victim])
			return &action{kind: actSteal, do: func(ctx context.Context) error { return l.rearrange(ctx, req) }}, nil
		}
	}

	// Report delivered slices in batches (SlicesDone), after making them durable.
	var unreported []int
	for _, i := range res.Unreported {
		if !h.reporting[int(i)] {
			unreported = append(unreported, int(i))
		}
	}
	if !busy[laneReport] && (len(unreported) >= s.cfg.DoneBatch || (len(unreported) > 0 && now.Sub(h.lastReport) >= s.cfg.DoneInterval)) {
		for _, i := range unreported {
			h.reporting[i] = true
		}
		l.mu.Lock()
		byMember := make(map[peer.ID][]uint32)
		for _, i := range unreported {
			p := l.by[i]
			if p == "" {
				p = s.h.ID()
			}
			byMember[p] = append(byMember[p], uint32(i))
		}
		l.mu.Unlock()
		return &action{kind: actReport, slices: unreported, do: func(ctx context.Context) error { return l.report(ctx, byMember) }}, nil
	}
	return nil, nil
}

// rearrange asks the leader to re-plan slices (partDownLoad).
func (l *listener) rearrange(ctx context.Context, req *rearrangeRequest) error {
	ctx, cancel := context.WithTimeout(ctx, l.s.cfg.ControlTimeout)
	defer cancel()
	return l.s.callLeader(ctx, l.g, msgRearrange, req, func(ctx context.Context) error {
		return l.s.serveRearrange(ctx, l.s.h.ID(), req)
	}, msgOK, nil)
}

// report makes the store durable, then commits SlicesDone per delivering member, so a slice
// marked done is never lost by a crash.
func (l *listener) report(ctx context.Context, byMember map[peer.ID][]uint32) error {
	if err := l.e.st.Flush(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.s.cfg.ControlTimeout)
	defer cancel()
	for _, p := range slices.Sorted(maps.Keys(byMember)) {
		ss := byMember[p]
		slices.Sort(ss)
		if err := l.g.Apply(ctx, &peergroup.SlicesDone{TaskID: l.task.ID, Member: p, Slices: ss}); err != nil {
			return err
		}
	}
	return nil
}

// exporter writes the output while the download runs: every slice held goes, as soon as it
// lands and in any order, to its place in a temporary file beside the output, and the
// contiguous prefix written so far goes, in order, through SHA-256. Once the last slice lands
// only the slices not yet written, the hash of the rest and an fsync are left before the
// rename. The output is thus absent or whole; the temporary file is removed on failure (a
// crash may leave it; the next attempt of the same task truncates and reuses it).
type exporter struct {
	e       *entry
	out     string
	tmp     string
	f       *os.File
	h       hash.Hash
	buf     []byte
	written store.Bitmap // slices written to tmp
	nw      int          // slices written
	hashed  int          // slices 0..hashed-1 went through h
	dirty   int64        // bytes written since the last fdatasync
	stopped bool
	timing  string // how finish spent its time, for the log
	// Time spent by advance, for the log: reading slices from the store, writing them out,
	// hashing, and handing dirty pages to writeback.
	tRead, tWrite, tHash, tSync time.Duration
}

// exportSyncEvery: the output's dirty bytes are handed to writeback (asynchronously) every
// this many bytes, so the final fsync is short.
const exportSyncEvery = 16 << 20

func newExporter(e *entry, out, task string) (*exporter, error) {
	tmp := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".raftcast-"+task)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("coop: create file beside %s: %w", out, err)
	}
	n := e.layout.NumSlices()
	return &exporter{e: e, out: out, tmp: tmp, f: f, h: sha256.New(), buf: make([]byte, e.layout.SliceSize),
		written: store.NewBitmap(n)}, nil
}

// advance writes the slices held and not yet written, each at its offset, and hashes the
// written prefix; it stops early (nil) once ctx ends.
func (x *exporter) advance(ctx context.Context) error {
	n := x.e.layout.NumSlices()
	if x.nw < n {
		for _, i := range x.e.st.Have().Minus(x.written) {
			if ctx.Err() != nil {
				return nil
			}
			t0 := time.Now()
			b, err := x.e.st.ReadSlice(i, x.buf)
			if err != nil {
				return err
			}
			t1 := time.Now()
			if _, err := x.f.WriteAt(b, x.e.layout.Offset(i)); err != nil {
				return fmt.Errorf("coop: write %s: %w", x.tmp, err)
			}
			t2 := time.Now()
			x.tRead, x.tWrite = x.tRead+t1.Sub(t0), x.tWrite+t2.Sub(t1)
			x.written.Set(i)
			x.nw++
			if i == x.hashed { // in order: hash it now rather than read it back
				x.h.Write(b)
				x.hashed++
				x.tHash += time.Since(t2)
			}
			if x.dirty += int64(len(b)); x.dirty >= exportSyncEvery {
				// Start writing back without waiting (an fsync here would stall the writes
				// and the hash behind them); the final fsync finds little left to do.
				t3 := time.Now()
				_ = unix.SyncFileRange(int(x.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
				x.tSync += time.Since(t3)
				x.dirty = 0
			}
		}
	}
	for x.hashed < n && x.written.Has(x.hashed) {
		if ctx.Err() != nil {
			return nil
		}
		t0 := time.Now()
		b := x.buf[:x.e.layout.SliceLen(x.hashed)]
		if _, err := x.f.ReadAt(b, x.e.layout.Offset(x.hashed)); err != nil {
			return fmt.Errorf("coop: read back %s: %w", x.tmp, err)
		}
		x.h.Write(b)
		x.hashed++
		x.tHash += time.Since(t0)
	}
	return nil
}

// run advances as slices land until ctx ends.
func (x *exporter) run(ctx context.Context) error {
	landed, unsub := x.e.subscribe()
	defer unsub()
	for {
		if err := x.advance(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-landed:
		}
	}
}

// finish writes the rest (every slice must be held), checks the checksum against want,
// fsyncs and renames to the output. It returns the SHA-256, hex.
func (x *exporter) finish(want string) (string, error) {
	t0, h0, w0 := time.Now(), x.hashed, x.nw
	if err := x.advance(context.Background()); err != nil {
		x.abort()
		return "", err
	}
	if x.hashed != x.e.layout.NumSlices() {
		x.abort()
		return "", fmt.Errorf("coop: output incomplete at slice %d of %d", x.hashed, x.e.layout.NumSlices())
	}
	sum := hex.EncodeToString(x.h.Sum(nil))
	if want != "" && sum != want {
		x.abort()
		return "", fmt.Errorf("%w: got %s, want %s", ErrChecksum, sum, want)
	}
	t1 := time.Now()
	err := x.f.Chmod(0o644)
	if err == nil {
		err = x.f.Sync()
	}
	if cerr := x.f.Close(); err == nil {
		err = cerr
	}
	x.stopped = true
	x.timing = fmt.Sprintf("%d slices written and %d hashed at the end in %s, fsync %s; in all: read %s, write %s, hash %s, writeback %s",
		x.nw-w0, x.hashed-h0, t1.Sub(t0), time.Since(t1), x.tRead.Round(time.Millisecond), x.tWrite.Round(time.Millisecond),
		x.tHash.Round(time.Millisecond), x.tSync.Round(time.Millisecond))
	if err == nil {
		err = os.Rename(x.tmp, x.out)
	}
	if err != nil {
		os.Remove(x.tmp)
		return "", fmt.Errorf("coop: write %s: %w", x.out, err)
	}
	_ = store.SyncDir(filepath.Dir(x.out)) // best effort: the rename is done; a crash may lose it, never half of it
	return sum, nil
}

// abort removes the temporary file.
func (x *exporter) abort() {
	if x.stopped {
		return
	}
	x.stopped = true
	x.f.Close()
	os.Remove(x.tmp)
}

// exportEmpty writes an empty resource.
func exportEmpty(out, want string) (string, error) {
	sum := hex.EncodeToString(sha256.New().Sum(nil))
	if want != "" && sum != want {
		return "", fmt.Errorf("%w: got %s (empty), want %s", ErrChecksum, sum, want)
	}
	if err := store.WriteFileAtomic(out, nil, 0o644); err != nil {
		return "", err
	}
	return sum, nil
}
