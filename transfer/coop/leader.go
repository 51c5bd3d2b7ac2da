package coop

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"
	"github.com/raftcast/raftcast/transfer/store"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// The leader's duties (seed: fullDownLoad, partDownLoad, taskArrange). The leader probes the
// origin, commits the task and its plan to the group's log, and re-plans missing slices when
// asked. It never sees a slice: completions reach the load map through SlicesDone batches
// committed by requesters.

func newTaskID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

func (s *Service) maxFetchers() int { return s.cfg.GroupOriginConns / s.cfg.OriginConns }

// leaderGroup returns the group, checking this node leads it.
func (s *Service) leaderGroup(id string) (*peergroup.Group, error) {
	g, ok := s.group(id)
	if !ok {
		return nil, fmt.Errorf("%w: this node is not in group %q", ErrNotMember, id)
	}
	if !g.IsLeader() {
		return nil, &notLeaderError{leader: g.Leader()}
	}
	return g, nil
}

func validatorsOf(r Resource) peergroup.Validators {
	return peergroup.Validators{ETag: r.ETag, LastModified: r.LastModified}
}

func answerFor(t *peergroup.Task, r Resource, resumed bool) *startAnswer {
	return &startAnswer{
		TaskID: t.ID, Size: uint64(t.Size), SliceSize: uint64(t.SliceSize),
		ETag: t.Validators.ETag, LastModified: t.Validators.LastModified, Ranges: r.Ranges, Resumed: resumed,
	}
}

// serveStart is the leader's fullDownLoad: probe, commit the task, plan, commit the plan.
// A request from a requester that already has a task for the URL of the same version
// resumes that task.
func (s *Service) serveStart(ctx context.Context, from peer.ID, req *startRequest) (*startAnswer, error) {
	g, err := s.leaderGroup(req.GroupID)
	if err != nil {
		return nil, err
	}
	v := g.State()
	if !v.IsMember(from) {
		return nil, fmt.Errorf("%w: %s", ErrNotMember, from)
	}
	if _, err := ParseURL(req.URL); err != nil {
		return nil, err
	}
	if req.SliceSize != 0 && (req.SliceSize < minSliceSize || req.SliceSize > maxSliceSize) {
		return nil, fmt.Errorf("%w: slice size %d outside [%d, %d]", ErrBadRequest, req.SliceSize, minSliceSize, maxSliceSize)
	}
	res, err := s.origin.Probe(ctx, req.URL)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", req.URL, err)
	}
	if res.Size == 0 {
		return &startAnswer{Ranges: res.Ranges, ETag: res.ETag, LastModified: res.LastModified}, nil
	}
	if len(res.ETag) > maxShortLen || len(res.LastModified) > maxShortLen {
		return nil, fmt.Errorf("%w: the origin's validators are too long", ErrBadRequest)
	}

	// Resume this requester's task for the URL, or retire it if the version changed.
	for _, id := range slices.Sorted(maps.Keys(v.Tasks)) {
		t := v.Tasks[id]
		if t.Kind != peergroup.TaskDownload || t.URL != req.URL || t.Requester != from {
			continue
		}
		if t.Size == res.Size && t.Validators == validatorsOf(res) && (req.SliceSize == 0 || uint64(t.SliceSize) == req.SliceSize) {
			s.setNoRanges(t.ID, !res.Ranges)
			s.log.Info("download resumed", "task", t.ID, "url", req.URL, "requester", from)
			return answerFor(&t, res, true), nil
		}
		if err := g.Apply(ctx, &peergroup.TaskRemove{TaskID: t.ID}); err != nil && !errors.Is(err, peergroup.ErrInvalid) {
			return nil, err
		}
	}

	sliceSize := int64(req.SliceSize)
	if sliceSize == 0 {
		sliceSize = s.cfg.SliceSize
		for peergroup.NumSlices(res.Size, sliceSize) > planSlices && sliceSize < maxSliceSize {
			sliceSize *= 2
		}
	}
	if peergroup.NumSlices(res.Size, sliceSize) > maxSlices {
		return nil, fmt.Errorf("%w: %d bytes in %d-byte slices is more than %d slices", ErrBadRequest, res.Size, sliceSize, maxSlices)
	}
	task := peergroup.Task{
		ID: newTaskID(), Kind: peergroup.TaskDownload, URL: req.URL, Size: res.Size, SliceSize: sliceSize,
		Validators: validatorsOf(res), Requester: from, Created: s.cfg.Now(),
	}
	if err := g.Apply(ctx, &peergroup.TaskAdd{Task: task}); err != nil {
		// An apply retried across a leader change may find its first attempt committed.
		if _, ok := g.State().Tasks[task.ID]; !ok {
			return nil, fmt.Errorf("commit task: %w", err)
		}
	}
	s.setNoRanges(task.ID, !res.Ranges)
	s.planMu.Lock()
	defer s.planMu.Unlock()
	key, durable := cacheKey(&task)
	var holders map[uint32][]peer.ID
	if durable {
		holders = s.holders(ctx, g, g.State(), &task, key)
	}
	all := make([]uint32, peergroup.NumSlices(task.Size, task.SliceSize))
	for i := range all {
		all[i] = uint32(i)
	}
	v = g.State()
	plan, err := Plan(PlanInput{
		Slices: all, Members: g.LiveMembers(), Load: v.Load, Holders: holders,
		NoRanges: !res.Ranges, Prefer: from, MaxFetchers: s.maxFetchers(), Stripe: stripeSlices(s.cfg.Stripe, sliceSize),
	})
	if err != nil {
		_ = g.Apply(ctx, &peergroup.TaskRemove{TaskID: task.ID})
		return nil, err
	}
	if err := g.Apply(ctx, &peergroup.TaskAssign{TaskID: task.ID, Term: g.Term(), Assignments: plan}); err != nil {
		if !g.IsLeader() {
			// Leadership moved while planning (the new leader refuses a plan from a
			// follower): the requester asks the new leader, which plans the task again.
			return nil, &notLeaderError{leader: g.Leader()}
		}
		return nil, fmt.Errorf("commit plan: %w", err)
	}
	cached := 0
	for _, a := range plan {
		if slices.Contains(holders[a.Slice], a.Member) {
			cached++
		}
	}
	s.log.Info("download planned", "task", task.ID, "url", req.URL, "size", task.Size, "slices", len(all),
		"from_cache", cached, "ranges", res.Ranges, "requester", from)
	return answerFor(&task, res, false), nil
}

func (s *Service) setNoRanges(task string, v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v {
		s.noRanges[task] = s.cfg.Now()
	} else {
		delete(s.noRanges, task)
	}
}

// holders returns, per slice of task, the members that hold it (their caches, asked with
// the have request) or will soon (they fetch it for another running task of the same
// version and slicing, or requested that task and hold its done slices).
func (s *Service) holders(ctx context.Context, g *peergroup.Group, v peergroup.StateView, task *peergroup.Task, key string) map[uint32][]peer.ID {
	n := peergroup.NumSlices(task.Size, task.SliceSize)
	out := make(map[uint32][]peer.ID)
	add := func(i uint32, p peer.ID) {
		if p != "" && !slices.Contains(out[i], p) {
			out[i] = append(out[i], p)
		}
	}
	for _, t := range v.Tasks {
		if t.ID == task.ID || t.Kind != peergroup.TaskDownload {
			continue
		}
		if k, _ := cacheKey(&t); k != key || len(t.Slices) != n {
			continue
		}
		for i, sl := range t.Slices {
			if sl.State == peergroup.SliceDone {
				add(uint32(i), t.Requester)
			} else {
				add(uint32(i), sl.Assignee)
			}
		}
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.HaveTimeout)
	defer cancel()
	var mu sync.Mutex // guards out while the answers come in
	var wg sync.WaitGroup
	for _, p := range g.LiveMembers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := s.haveOf(ctx, p, key, n)
			if err != nil {
				s.log.Debug("have request failed", "peer", p, "err", err)
				return
			}
			mu.Lock()
			for i := range n {
				if b.Has(i) {
					add(uint32(i), p)
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// haveOf asks member p which slices of key it holds (an empty bitmap when none).
func (s *Service) haveOf(ctx context.Context, p peer.ID, key string, n int) (store.Bitmap, error) {
	var bm []byte
	if p == s.h.ID() {
		var err error
		if bm, err = s.cache.have(key, n); err != nil {
			return store.Bitmap{}, err
		}
	} else {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.HaveTimeout)
		defer cancel()
		var a haveAnswer
		if err := s.control(ctx, p, msgHave, bincodec.Encode((&haveRequest{Key: key, Slices: uint64(n)}).encode), msgHaveAnswer, a.decode); err != nil {
			return store.Bitmap{}, err
		}
		bm = a.Bitmap
	}
	if len(bm) == 0 {
		return store.NewBitmap(n), nil
	}
	return store.BitmapFromBytes(n, bm)
}

// serveRearrange is the leader's partDownLoad: it re-plans missing slices of a task. The
// requester may exclude any member and ask to avoid any (a steal); any other member may
// only give back its own slices and exclude itself (it failed at the origin).
func (s *Service) serveRearrange(ctx context.Context, from peer.ID, req *rearrangeRequest) error {
	g, err := s.leaderGroup(req.GroupID)
	if err != nil {
		return err
	}
	v := g.State()
	if !v.IsMember(from) {
		return fmt.Errorf("%w: %s", ErrNotMember, from)
	}
	t, ok := v.Tasks[req.TaskID]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTask, req.TaskID)
	}
	if from != t.Requester {
		for _, p := range append(slices.Clone(req.Exclude), req.Avoid...) {
			if p != from {
				return fmt.Errorf("%w: a member may only exclude itself", ErrBadRequest)
			}
		}
	}
	var todo []uint32
	for _, i := range req.Slices {
		if int(i) >= len(t.Slices) || t.Slices[i].State == peergroup.SliceDone {
			continue
		}
		if from != t.Requester && t.Slices[i].Assignee != from {
			continue
		}
		todo = append(todo, i)
	}
	// A steal moves only what the slow member does not hold yet: what it holds it pushes
	// from its cache, which the origin would otherwise send again. If it cannot say, no steal.
	if len(req.Avoid) > 0 && len(todo) > 0 {
		key, _ := cacheKey(&t)
		for _, p := range req.Avoid {
			b, err := s.haveOf(ctx, p, key, len(t.Slices))
			if err != nil {
				s.log.Debug("steal skipped: the slow member does not say what it holds", "task", t.ID, "peer", p, "err", err)
				return nil
			}
			todo = slices.DeleteFunc(todo, func(i uint32) bool { return b.Has(int(i)) })
		}
	}
	if len(todo) == 0 {
		return nil
	}
	s.mu.Lock()
	_, known := s.noRanges[t.ID]
	noRanges := req.NoRanges || known
	s.mu.Unlock()
	exclude := slices.Concat(t.Excluded, req.Exclude, req.Avoid)
	plan, err := Plan(PlanInput{
		Slices: todo, Members: g.LiveMembers(), Load: v.Load, Exclude: exclude,
		NoRanges: noRanges, Prefer: t.Requester, MaxFetchers: s.maxFetchers(),
	})
	if err != nil {
		return err
	}
	if err := g.Apply(ctx, &peergroup.TaskAssign{TaskID: t.ID, Term: g.Term(), Assignments: plan, Exclude: req.Exclude}); err != nil {
		return fmt.Errorf("commit re-plan: %w", err)
	}
	s.log.Info("download re-planned", "task", t.ID, "slices", len(todo), "by", from, "exclude", req.Exclude, "avoid", req.Avoid)
	return nil
}

// collect removes download tasks whose requester left the group or that are older than
// TaskTTL (leader only).
func (s *Service) collect(ctx context.Context, g *peergroup.Group, v peergroup.StateView) {
	now := s.cfg.Now()
	for id, t := range v.Tasks {
		if t.Kind != peergroup.TaskDownload {
			continue
		}
		if v.IsMember(t.Requester) && now.Sub(t.Created) < s.cfg.TaskTTL {
			continue
		}
		if err := g.Apply(ctx, &peergroup.TaskRemove{TaskID: id}); err != nil {
			s.log.Debug("removing orphaned task", "task", id, "err", err)
			continue
		}
		s.mu.Lock()
		delete(s.noRanges, id)
		s.mu.Unlock()
		s.log.Info("removed orphaned download task", "task", id, "requester", t.Requester)
	}
	s.mu.Lock()
	for id, since := range s.noRanges {
		if _, ok := v.Tasks[id]; !ok && now.Sub(since) > time.Minute { // not a task being added now
			delete(s.noRanges, id)
		}
	}
	s.mu.Unlock()
}

// stripeSlices is a stripe of the given bytes in whole slices (at least one); 0 stays 0.
func stripeSlices(stripe, sliceSize int64) int {
	if stripe <= 0 {
		return 0
	}
	return int(max(stripe/sliceSize, 1))
}
