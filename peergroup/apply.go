package peergroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// applyEnqueueTimeout bounds how long raft.Apply waits to enqueue a command.
const applyEnqueueTimeout = 5 * time.Second

// Apply commits a command to the group's log. On the leader it is applied directly; on a
// follower it is forwarded to the leader (ApplyProtocol), retried across leader changes until
// ctx ends, and Apply returns once this node's state has applied it. An error wrapping
// ErrMalformed, ErrStale, ErrInvalid, ErrNotMember, ErrBanned or ErrForbidden means the
// command was rejected and changed nothing.
func (g *Group) Apply(ctx context.Context, cmd Command) error {
	b, err := EncodeCommand(cmd)
	if err != nil {
		return err
	}
	backoff := 20 * time.Millisecond
	for {
		var idx uint64
		var err error
		leader := g.Leader()
		switch {
		case g.IsLeader():
			idx, err = g.applyLocal(ctx, cmd, b, g.self)
		case leader == "" || leader == g.self:
			err = ErrNoLeader
		default:
			idx, err = g.forward(ctx, leader, b)
		}
		if err == nil {
			return g.waitApplied(ctx, idx)
		}
		if !retryable(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("apply %s: %w (last error: %v)", cmd.Kind(), ctx.Err(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apply %s: %w (last error: %v)", cmd.Kind(), ctx.Err(), err)
		case <-g.ctx.Done():
			return ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// retryable reports whether an apply may be retried: leadership moved, no leader yet, or the
// leader could not be reached. Rejections are final.
func retryable(err error) bool {
	for _, final := range []error{ErrMalformed, ErrStale, ErrInvalid, ErrForbidden, ErrNotMember, ErrBanned, ErrUnknownGroup, ErrClosed, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, final) {
			return false
		}
	}
	return true
}

// waitApplied waits until this node's state has applied the command at log index idx
// (raft's AppliedIndex runs ahead of the FSM, so the FSM's own index is used).
func (g *Group) waitApplied(ctx context.Context, idx uint64) error {
	if g.fsm.index() >= idx {
		return nil
	}
	ch, stop := g.Watch()
	defer stop()
	for g.fsm.index() < idx {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d to apply: %w", idx, ctx.Err())
		case _, ok := <-ch:
			if !ok {
				return ErrClosed
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// waitFuture waits for a raft future or ctx. The goroutine it starts ends when raft resolves
// the future, which raft does at the latest when it shuts down.
func (g *Group) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	g.waits.Add(1)
	go func() {
		defer g.waits.Done()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// raftErr maps raft's leadership errors to ErrNotLeader.
func raftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return err
}

// applyLocal authorizes cmd from the sender and commits it on this node, which must be the
// leader. It returns the log index of the command.
func (g *Group) applyLocal(ctx context.Context, cmd Command, b []byte, from peer.ID) (uint64, error) {
	if err := g.authorize(cmd, from); err != nil {
		return 0, err
	}
	f := g.raft.Apply(b, applyEnqueueTimeout)
	if err := g.waitFuture(ctx, f); err != nil {
		return 0, raftErr(err)
	}
	if resp := f.Response(); resp != nil {
		if err, ok := resp.(error); ok {
			return 0, err
		}
	}
	return f.Index(), nil
}

// authorize decides who may send what. The leader's own commands are always allowed (it is
// the node's own application code); from other members:
//
//   - GroupInit, MemberAdd, MemberLive, TaskAssign: leader only (admission, liveness and
//     arrangement are leader duties);
//   - MemberUpdate and MemberRemove(leave): about the sender itself only;
//   - MemberRemove(expel): from a Raft voter (an expelled leader hands over and drops out);
//   - TaskAdd: the sender is the requester; TaskRemove: the task's requester;
//   - SlicesDone: the member that delivered them or the task's requester;
//   - ContentAdd: the sender is the source; ContentRemove: the entry's source;
//   - ProxySet, ProxyDrop: the sender names itself.
func (g *Group) authorize(cmd Command, from peer.ID) error {
	if from == g.self {
		return nil
	}
	v := g.fsm.view(nil)
	if !v.IsMember(from) {
		return fmt.Errorf("%w: %s", ErrNotMember, from)
	}
	deny := func(why string) error { return fmt.Errorf("%w: %s: %s", ErrForbidden, cmd.Kind(), why) }
	switch c := cmd.(type) {
	case *GroupInit, *MemberAdd, *MemberLive, *TaskAssign:
		return deny("leader only")
	case *MemberUpdate:
		if c.PeerID != from {
			return deny("a member updates only itself")
		}
	case *MemberRemove:
		switch c.Reason {
		case ReasonLeave:
			if c.PeerID != from {
				return deny("a member leaves only itself")
			}
		case ReasonExpel:
			conf, err := g.configuration()
			if err != nil {
				return err
			}
			if !conf[from] {
				return deny("only voters may expel")
			}
		}
	case *TaskAdd:
		if c.Task.Requester != from {
			return deny("the sender must be the requester")
		}
	case *TaskRemove:
		if t, ok := v.Tasks[c.TaskID]; ok && t.Requester != from {
			return deny("only the requester removes a task")
		}
	case *SlicesDone:
		if t, ok := v.Tasks[c.TaskID]; ok && c.Member != from && t.Requester != from {
			return deny("reported by the member or the requester only")
		}
	case *ContentAdd:
		if c.Content.Source != from {
			return deny("the sender must be the source")
		}
	case *ContentRemove:
		if ct, ok := v.Catalogue[c.ContentID]; ok && ct.Source != from {
			return deny("only the source removes its entry")
		}
	case *ProxySet:
		if c.Proxy != from {
			return deny("a member names only itself proxy")
		}
	case *ProxyDrop:
		if c.Proxy != from {
			return deny("a member withdraws only itself as proxy")
		}
	}
	return nil
}

// forward sends a command to the leader and returns its log index.
func (g *Group) forward(ctx context.Context, leader peer.ID, b []byte) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, applyStreamTimeout)
	defer cancel()
	s, err := g.m.h.NewStream(network.WithAllowLimitedConn(ctx, "group-apply"), leader, ApplyProtocol)
	if err != nil {
		return 0, fmt.Errorf("open apply stream to leader %s: %w", leader, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := writeFrame(s, msgApplyRequest, bincodec.Encode((&applyRequest{GroupID: g.id, Cmd: b}).encode)); err != nil {
		s.Reset()
		return 0, err
	}
	_ = s.CloseWrite()
	var resp applyResponse
	if err := expectFrame(bufio.NewReader(s), maxJoinFrame, msgApplyResponse, resp.decode); err != nil {
		s.Reset()
		return 0, err
	}
	return resp.Index, nil
}

// handleApply serves ApplyProtocol: the leader's side of command forwarding, and any
// member's answer to a member-list request.
func (m *Manager) handleApply(s network.Stream) {
	from := s.Conn().RemotePeer()
	_ = s.SetDeadline(time.Now().Add(applyStreamTimeout))
	r := bufio.NewReader(s)
	typ, payload, err := readFrame(r, maxApplyFrame)
	if err != nil {
		s.Reset()
		return
	}
	var out []byte
	outType := msgError
	switch typ {
	case msgApplyRequest:
		var req applyRequest
		if err = decodeMsg(payload, req.decode); err == nil {
			var idx uint64
			if idx, err = m.serveApply(&req, from); err == nil {
				outType, out = msgApplyResponse, bincodec.Encode((&applyResponse{Index: idx}).encode)
			}
		}
	case msgMembersRequest:
		var req membersRequest
		if err = decodeMsg(payload, req.decode); err == nil {
			var ps []peer.ID
			if ps, err = m.serveMembers(&req, from); err == nil {
				outType, out = msgMembersResponse, bincodec.Encode((&membersResponse{Peers: ps}).encode)
			}
		}
	default:
		s.Reset()
		return
	}
	if err != nil {
		out = bincodec.Encode(newErrorMsg(err).encode)
	}
	if err := writeFrame(s, outType, out); err != nil {
		s.Reset()
		return
	}
	_ = s.Close()
}

// serveMembers answers a member with the member list and the Raft servers this node knows.
func (m *Manager) serveMembers(req *membersRequest, from peer.ID) ([]peer.ID, error) {
	g, ok := m.Group(req.GroupID)
	if !ok || g.id != req.GroupID {
		return nil, ErrUnknownGroup
	}
	v := g.fsm.view(nil)
	if !v.IsMember(from) {
		return nil, fmt.Errorf("%w: %s", ErrNotMember, from)
	}
	set := make(map[peer.ID]bool)
	for _, mb := range v.Members {
		set[mb.PeerID] = true
	}
	if conf, err := g.configuration(); err == nil {
		for p := range conf {
			set[p] = true
		}
	}
	out := make([]peer.ID, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	return out, nil
}

func (m *Manager) serveApply(req *applyRequest, from peer.ID) (uint64, error) {
	g, ok := m.Group(req.GroupID)
	if !ok || g.id != req.GroupID {
		return 0, ErrUnknownGroup
	}
	if !g.IsLeader() {
		return 0, ErrNotLeader
	}
	cmd, err := DecodeCommand(req.Cmd)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(g.ctx, applyStreamTimeout-time.Second)
	defer cancel()
	return g.applyLocal(ctx, cmd, req.Cmd, from)
}
