package coop

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/peergroup"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// Groups is where the service finds the groups this node is in (*peergroup.Manager fits).
type Groups interface {
	Groups() []*peergroup.Group
}

var _ Groups = (*peergroup.Manager)(nil)

// Service is one node's part in cooperative downloads, in every group it is in: the member
// role (fetch assigned slices, push them to requesters), the leader role (plan and re-plan
// tasks) and the requester role (Download). Run one per node.
type Service struct {
	h      host.Host
	groups Groups
	origin *Origin
	cfg    Config
	log    *slog.Logger
	cache  *cache

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // group runs, the scan loop, stream handlers, downloads

	// planMu serialises the leader's planning of new tasks, so that a task's plan sees the
	// assignments of the tasks planned before it (requests for one URL that arrive together
	// share the fetches instead of each planning the whole file).
	planMu sync.Mutex

	pushStreams atomic.Int32 // incoming push streams being served
	ctlStreams  atomic.Int32 // incoming control streams being served

	mu        sync.Mutex               // guards the fields below
	runs      map[string]*groupRun     // member/leader role per group ID
	listeners map[string]*listener     // downloads this node requests, by task ID
	progress  map[string]*progress     // what arrived for tasks this node requests, by task ID
	noRanges  map[string]time.Time     // leader: tasks whose origin ignores Range (since when)
	removals  map[string]chan struct{} // finished tasks of this node being removed, by URL; closed when done
	closed    bool
}

// New starts the service on h for the groups groups has (and those it gets later), fetching
// from origins with client (never http.DefaultClient).
func New(h host.Host, groups Groups, client *http.Client, log *slog.Logger, cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if h == nil || groups == nil {
		return nil, fmt.Errorf("%w: a host and a group source are required", ErrBadRequest)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	origin, err := NewOrigin(client, cfg.OriginConns, cfg.UserAgent)
	if err != nil {
		return nil, err
	}
	c, err := newCache(cfg.Dir, log)
	if err != nil {
		return nil, err
	}
	s := &Service{
		h: h, groups: groups, origin: origin, cfg: cfg, log: log.With("component", "coop"), cache: c,
		runs: make(map[string]*groupRun), listeners: make(map[string]*listener), progress: make(map[string]*progress), noRanges: make(map[string]time.Time),
		removals: make(map[string]chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(ControlProtocol, s.handleControl)
	h.SetStreamHandler(PushProtocol, s.handlePush)
	s.wg.Add(1)
	go s.scanLoop()
	return s, nil
}

// Origin returns the service's origin client (its BodyBytes counts what this node fetched).
func (s *Service) Origin() *Origin { return s.origin }

// Close stops serving, cancels downloads in progress (they fail, leaving nothing at their
// output; their slices stay cached), stops every group's member role and closes the cache.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.h.RemoveStreamHandler(ControlProtocol)
	s.h.RemoveStreamHandler(PushProtocol)
	s.cancel()
	s.wg.Wait()
	s.cache.closeAll()
	return nil
}

// enter registers a goroutine with the service unless it is closed; the caller calls
// s.wg.Done when it ends.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// scanLoop attaches groups as they appear.
func (s *Service) scanLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.GroupScan)
	defer t.Stop()
	for {
		for _, g := range s.groups.Groups() {
			s.attach(g)
		}
		s.pruneProgress()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// attach starts the member role for g if it is not running.
func (s *Service) attach(g *peergroup.Group) *groupRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if r := s.runs[g.ID()]; r != nil && r.g == g {
		return r
	}
	r := newGroupRun(s, g)
	s.runs[g.ID()] = r
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.loop()
		s.mu.Lock()
		if s.runs[g.ID()] == r {
			delete(s.runs, g.ID())
		}
		s.mu.Unlock()
	}()
	return r
}

// group returns the group with that ID this node is in.
func (s *Service) group(id string) (*peergroup.Group, bool) {
	for _, g := range s.groups.Groups() {
		if g.ID() == id {
			return g, true
		}
	}
	return nil, false
}

// control sends one request to p on the control protocol and decodes the answer.
func (s *Service) control(ctx context.Context, p peer.ID, typ uint8, req []byte, want uint8, decode func(*bincodec.Decoder)) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ControlTimeout)
	defer cancel()
	st, err := s.h.NewStream(network.WithAllowLimitedConn(ctx, "coop"), p, ControlProtocol)
	if err != nil {
		return fmt.Errorf("coop: open stream to %s: %w", p, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	if err := writeFrame(st, typ, req); err != nil {
		st.Reset()
		return fmt.Errorf("coop: send to %s: %w", p, err)
	}
	_ = st.CloseWrite()
	if err := expectFrame(bufio.NewReader(st), maxControl, want, decode); err != nil {
		st.Reset()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	_ = st.Close()
	return nil
}

// handleControl serves one control request.
func (s *Service) handleControl(st network.Stream) {
	if n := s.ctlStreams.Add(1); n > maxCtlStreams {
		s.ctlStreams.Add(-1)
		st.Reset()
		return
	}
	defer s.ctlStreams.Add(-1)
	if err := st.Scope().SetService(ServiceName); err != nil {
		st.Reset()
		return
	}
	if !s.enter() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	from := st.Conn().RemotePeer()
	_ = st.SetDeadline(time.Now().Add(s.cfg.ControlTimeout))
	typ, body, err := readFrame(bufio.NewReader(st), maxControl)
	if err != nil {
		st.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ControlTimeout-time.Second)
	defer cancel()
	stop := context.AfterFunc(s.ctx, func() { st.Reset() })
	defer stop()
	d := bincodec.NewDecoder(body, ErrBadRequest)
	var answerType uint8
	var answer []byte
	switch typ {
	case msgStart:
		var req startRequest
		req.decode(&d)
		if err = d.Finish(); err == nil {
			var a *startAnswer
			if a, err = s.serveStart(ctx, from, &req); err == nil {
				answerType, answer = msgAccept, bincodec.Encode(a.encode)
			}
		}
	case msgRearrange:
		var req rearrangeRequest
		req.decode(&d)
		if err = d.Finish(); err == nil {
			if err = s.serveRearrange(ctx, from, &req); err == nil {
				answerType = msgOK
			}
		}
	case msgHave:
		var req haveRequest
		req.decode(&d)
		if err = d.Finish(); err == nil && !s.sharesGroup(from) {
			err = fmt.Errorf("%w: %s shares no group with this node", ErrNotMember, from)
		}
		if err == nil {
			var b []byte
			if b, err = s.cache.have(req.Key, int(min(req.Slices, maxSlices))); err == nil {
				answerType, answer = msgHaveAnswer, bincodec.Encode((&haveAnswer{Bitmap: b}).encode)
			}
		}
	case msgNotice:
		var req notice
		req.decode(&d)
		if err = d.Finish(); err == nil {
			if err = s.serveNotice(from, &req); err == nil {
				answerType = msgOK
			}
		}
	default:
		err = fmt.Errorf("%w: unknown request type %d", ErrBadRequest, typ)
	}
	if err != nil {
		em := newErrorMsg(err)
		var nl *notLeaderError
		if errors.As(err, &nl) {
			em.Leader = nl.leader
		}
		_ = writeFrame(st, msgError, bincodec.Encode(em.encode))
	} else {
		_ = writeFrame(st, answerType, answer)
	}
	_ = st.Close()
}

// sharesGroup reports whether p is a member of a group this node is in.
func (s *Service) sharesGroup(p peer.ID) bool {
	for _, g := range s.groups.Groups() {
		if g.State().IsMember(p) {
			return true
		}
	}
	return false
}

// notLeaderError carries the leader this node knows.
type notLeaderError struct{ leader peer.ID }

func (e *notLeaderError) Error() string {
	return fmt.Sprintf("%v (leader: %q)", ErrNotLeader, e.leader)
}
func (e *notLeaderError) Unwrap() error { return ErrNotLeader }

// serveNotice takes a member's notice about a task this node requests.
func (s *Service) serveNotice(from peer.ID, n *notice) error {
	g, ok := s.group(n.GroupID)
	if !ok {
		return ErrUnknownTask
	}
	v := g.State()
	if !v.IsMember(from) {
		return ErrNotMember
	}
	if t, ok := v.Tasks[n.TaskID]; !ok || t.Requester != s.h.ID() {
		return ErrUnknownTask
	}
	if n.Code == noticeChanged {
		s.progressOf(n.TaskID).setChanged(fmt.Errorf("%w (seen by %s: %s)", ErrChanged, from, n.Detail))
	}
	return nil
}

// pruneProgress drops progress records of tasks that left every group's table and that no
// download follows.
func (s *Service) pruneProgress() {
	s.mu.Lock()
	ids := make([]string, 0, len(s.progress))
	for id := range s.progress {
		if s.listeners[id] == nil {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	live := make(map[string]bool)
	for _, g := range s.groups.Groups() {
		for id := range g.State().Tasks {
			live[id] = true
		}
	}
	s.mu.Lock()
	for _, id := range ids {
		if !live[id] && s.listeners[id] == nil {
			delete(s.progress, id)
		}
	}
	s.mu.Unlock()
}
