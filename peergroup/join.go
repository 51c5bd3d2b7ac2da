package peergroup

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// The join protocol (PMP), on JoinProtocol, one stream per attempt:
//
//	joiner → member   joinRequest{group ID, joiner nonce, addrs, domain, capacity, invitation}
//	member → joiner   joinRedirect{leader, addrs}          when the member is not the leader
//	leader → joiner   joinChallenge{nonce}                  secret groups only
//	joiner → leader   joinProof{proof}                      secret groups only
//	leader → joiner   joinAccept{leader proof, header, leader, term, members} | error{code, message}
//
// The leader checks the credential, commits MemberAdd, adds the joiner to Raft as a
// non-voter and answers with the member list; the joiner then starts its Raft (empty),
// receives the log from the leader, and once its state lists it commits a MemberUpdate
// (ready), after which the leader may promote it to voter.

func raftID(p peer.ID) raft.ServerID { return raft.ServerID(p.String()) }

// maxRedirects bounds how many redirects one join round follows.
const maxRedirects = 8

// Join joins the group described by info with the credential, going through the group's
// leader (contacts that are not the leader redirect). It returns once this node has caught up
// with the group's state. A wrong secret fails with ErrWrongSecret, a bad invitation with
// ErrBadInvitation, an expelled peer with ErrBanned; without an answer it retries until ctx
// ends.
func (m *Manager) Join(ctx context.Context, info GroupInfo, cred Credential) (*Group, error) {
	if !validGroupID(info.ID) || !info.Policy.Valid() {
		return nil, fmt.Errorf("%w: group info (ID %q, policy %d)", ErrMalformed, info.ID, info.Policy)
	}
	if _, ok := m.Group(info.ID); ok {
		return nil, fmt.Errorf("%w: group %s", ErrExists, info.ID)
	}
	var key []byte
	switch info.Policy {
	case PolicySecret:
		k, err := deriveGroupKey(cred.Secret, info.ID)
		if err != nil {
			return nil, err
		}
		key = k
	case PolicyInvite:
		if len(cred.Invitation) == 0 {
			return nil, fmt.Errorf("%w: the group admits by invitation only", ErrBadInvitation)
		}
	}
	acc, err := m.requestAdmission(ctx, info, key, cred)
	if err != nil {
		return nil, err
	}
	if acc.Header.ID != info.ID {
		return nil, fmt.Errorf("%w: admitted to group %q, asked for %q", ErrMalformed, acc.Header.ID, info.ID)
	}
	seed := make([]peer.AddrInfo, 0, len(acc.Members))
	for _, w := range acc.Members {
		seed = append(seed, peer.AddrInfo{ID: w.PeerID, Addrs: w.Addrs})
	}
	g, err := m.start(&groupMeta{Header: acc.Header, Key: key, AdmitIndex: acc.AdmitIndex}, false, seed)
	if err != nil {
		return nil, err
	}
	if err := g.announce(ctx); err != nil {
		m.forget(g)
		_ = g.close(true)
		return nil, fmt.Errorf("join group %s: %w", info.ID, err)
	}
	m.log.Info("joined group", "group", g.id, "name", g.Name(), "leader", g.Leader())
	return g, nil
}

// finalJoinError reports errors that another attempt will not fix.
func finalJoinError(err error) bool {
	for _, e := range []error{ErrWrongSecret, ErrBadInvitation, ErrBanned, ErrBadLeader, ErrForbidden} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// requestAdmission tries the contacts, following redirects to the leader, until admitted, a
// final refusal, or ctx ends.
func (m *Manager) requestAdmission(ctx context.Context, info GroupInfo, key []byte, cred Credential) (*joinAccept, error) {
	var lastErr error = fmt.Errorf("%w: no contact to join through", ErrNoLeader)
	for {
		queue := make([]peer.ID, 0, len(info.Contacts))
		for _, c := range info.Contacts {
			if c.ID != m.h.ID() {
				m.h.Peerstore().AddAddrs(c.ID, c.Addrs, memberAddrTTL)
				queue = append(queue, c.ID)
			}
		}
		redirects := 0
		for len(queue) > 0 {
			target := queue[0]
			queue = queue[1:]
			acc, redirect, err := m.joinOnce(ctx, target, info, key, cred)
			switch {
			case err == nil && redirect == nil:
				return acc, nil
			case err == nil:
				m.h.Peerstore().AddAddrs(redirect.Leader, redirect.Addrs, memberAddrTTL)
				if redirects < maxRedirects && redirect.Leader != m.h.ID() {
					redirects++
					queue = append([]peer.ID{redirect.Leader}, queue...)
				}
			case finalJoinError(err):
				return nil, err
			default:
				m.log.Debug("join attempt failed", "group", info.ID, "via", target, "err", err)
				lastErr = err
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("join group %s: %w (last error: %v)", info.ID, ctx.Err(), lastErr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// joinOnce runs one join attempt through target.
func (m *Manager) joinOnce(ctx context.Context, target peer.ID, info GroupInfo, key []byte, cred Credential) (*joinAccept, *joinRedirect, error) {
	ctx, cancel := context.WithTimeout(ctx, joinStreamTimeout)
	defer cancel()
	s, err := m.h.NewStream(network.WithAllowLimitedConn(ctx, "group-join"), target, JoinProtocol)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	nonce := make([]byte, nonceLen)
	_, _ = rand.Read(nonce)
	addrs := m.h.Addrs()
	req := &joinRequest{GroupID: info.ID, Nonce: nonce, Addrs: addrs[:min(len(addrs), maxAddrs)], Domain: m.cfg.Domain, Capacity: m.cfg.Capacity, Invitation: cred.Invitation}
	if err := writeFrame(s, msgJoinRequest, bincodec.Encode(req.encode)); err != nil {
		s.Reset()
		return nil, nil, err
	}
	r := bufio.NewReader(s)
	typ, payload, err := readFrame(r, maxJoinFrame)
	if err != nil {
		s.Reset()
		return nil, nil, err
	}
	challenged := false
	switch typ {
	case msgJoinRedirect:
		var red joinRedirect
		if err := decodeMsg(payload, red.decode); err != nil {
			s.Reset()
			return nil, nil, err
		}
		return nil, &red, nil
	case msgJoinChallenge:
		var ch joinChallenge
		if err := decodeMsg(payload, ch.decode); err != nil {
			s.Reset()
			return nil, nil, err
		}
		if key == nil {
			s.Reset()
			return nil, nil, fmt.Errorf("%w: the group asks for a secret", ErrWrongSecret)
		}
		pr := &joinProofMsg{Proof: joinProof(key, ch.Nonce, m.h.ID(), info.ID)}
		if err := writeFrame(s, msgJoinProof, bincodec.Encode(pr.encode)); err != nil {
			s.Reset()
			return nil, nil, err
		}
		challenged = true
		typ, payload, err = readFrame(r, maxJoinFrame)
		if err != nil {
			s.Reset()
			return nil, nil, err
		}
	}
	switch typ {
	case msgError:
		var em errorMsg
		if err := decodeMsg(payload, em.decode); err != nil {
			return nil, nil, err
		}
		return nil, nil, codeErr(em.Code, em.Msg)
	case msgJoinAccept:
		var acc joinAccept
		if err := decodeMsg(payload, acc.decode); err != nil {
			return nil, nil, err
		}
		if key != nil {
			if !challenged {
				return nil, nil, fmt.Errorf("%w: %s admitted us without checking the secret", ErrBadLeader, target)
			}
			if !hmac.Equal(acc.LeaderProof, leaderProof(key, nonce, target, info.ID)) {
				return nil, nil, fmt.Errorf("%w: %s", ErrBadLeader, target)
			}
		}
		return &acc, nil, nil
	}
	s.Reset()
	return nil, nil, fmt.Errorf("%w: unexpected join frame %d", ErrMalformed, typ)
}

// handleJoin serves JoinProtocol: a non-leader redirects, the leader admits.
func (m *Manager) handleJoin(s network.Stream) {
	from := s.Conn().RemotePeer()
	_ = s.SetDeadline(time.Now().Add(joinStreamTimeout))
	r := bufio.NewReader(s)
	var req joinRequest
	if err := expectFrame(r, maxJoinFrame, msgJoinRequest, req.decode); err != nil {
		s.Reset()
		return
	}
	reply := func(typ uint8, b []byte) {
		if err := writeFrame(s, typ, b); err != nil {
			s.Reset()
			return
		}
		_ = s.Close()
	}
	g, ok := m.Group(req.GroupID)
	if !ok || g.id != req.GroupID {
		reply(msgError, bincodec.Encode(newErrorMsg(fmt.Errorf("%w: %s", ErrUnknownGroup, req.GroupID)).encode))
		return
	}
	if !g.IsLeader() {
		leader := g.Leader()
		if leader == "" || leader == g.self {
			reply(msgError, bincodec.Encode(newErrorMsg(ErrNoLeader).encode))
			return
		}
		reply(msgJoinRedirect, bincodec.Encode((&joinRedirect{Leader: leader, Addrs: capAddrs(g.addrsOf(leader))}).encode))
		return
	}
	acc, err := g.admit(s, r, from, &req)
	if err != nil {
		g.log.Info("join refused", "peer", from, "err", err)
		reply(msgError, bincodec.Encode(newErrorMsg(err).encode))
		return
	}
	reply(msgJoinAccept, bincodec.Encode(acc.encode))
}

// admit is the leader's side of a join: check the credential, commit the member, add it to
// Raft as a non-voter, and build the answer.
func (g *Group) admit(s network.Stream, r *bufio.Reader, from peer.ID, req *joinRequest) (*joinAccept, error) {
	ctx, cancel := context.WithTimeout(g.ctx, joinStreamTimeout-5*time.Second)
	defer cancel()
	v := g.fsm.view(nil)
	if slicesContains(v.Banned, from) {
		return nil, fmt.Errorf("%w: %s", ErrBanned, from)
	}
	switch g.meta.Header.Policy {
	case PolicySecret:
		if len(req.Nonce) != nonceLen {
			return nil, fmt.Errorf("%w: join nonce of %d bytes", ErrMalformed, len(req.Nonce))
		}
		nonce := make([]byte, nonceLen)
		_, _ = rand.Read(nonce)
		ch := &joinChallenge{Nonce: nonce}
		if err := writeFrame(s, msgJoinChallenge, bincodec.Encode(ch.encode)); err != nil {
			return nil, err
		}
		var pr joinProofMsg
		if err := expectFrame(r, maxJoinFrame, msgJoinProof, pr.decode); err != nil {
			return nil, err
		}
		if !hmac.Equal(pr.Proof, joinProof(g.meta.Key, nonce, from, g.id)) {
			return nil, fmt.Errorf("%w for group %q", ErrWrongSecret, g.meta.Header.Name)
		}
	case PolicyInvite:
		inv, err := OpenInvitation(req.Invitation)
		if err != nil {
			return nil, err
		}
		if err := inv.check(g.id, from, g.m.cfg.Now()); err != nil {
			return nil, err
		}
		if !v.IsMember(inv.Issuer) {
			return nil, fmt.Errorf("%w: issuer %s is not a member", ErrBadInvitation, inv.Issuer)
		}
	}
	addrs := capAddrs(req.Addrs)
	g.m.h.Peerstore().AddAddrs(from, addrs, memberAddrTTL)
	add := &MemberAdd{Member: Member{PeerID: from, Addrs: addrs, Domain: req.Domain, Capacity: req.Capacity, Joined: g.m.cfg.Now()}}
	b, err := EncodeCommand(add)
	if err != nil {
		return nil, err
	}
	admitIdx, err := g.applyLocal(ctx, add, b, g.self)
	if err != nil {
		return nil, err
	}
	conf, err := g.configuration()
	if err != nil {
		return nil, err
	}
	if _, ok := conf[from]; !ok {
		if err := g.waitFuture(ctx, g.raft.AddNonvoter(raftID(from), raft.ServerAddress(from.String()), 0, configChangeTimeout)); err != nil {
			return nil, raftErr(err)
		}
		conf[from] = false
	}
	g.signal(g.changed)
	v = g.fsm.view(nil)
	acc := &joinAccept{Header: g.meta.Header, Leader: g.self, Term: g.raft.CurrentTerm(), AdmitIndex: admitIdx}
	if g.meta.Header.Policy == PolicySecret {
		acc.LeaderProof = leaderProof(g.meta.Key, req.Nonce, g.self, g.id)
	}
	for _, mb := range v.Members {
		addrs := mb.Addrs
		if mb.PeerID == g.self {
			addrs = g.m.h.Addrs()
		}
		acc.Members = append(acc.Members, wireMember{PeerID: mb.PeerID, Addrs: capAddrs(addrs), Voter: conf[mb.PeerID]})
	}
	g.log.Info("admitted member", "peer", from)
	return acc, nil
}

func capAddrs[T any](as []T) []T { return as[:min(len(as), maxAddrs)] }

func slicesContains(ps []peer.ID, p peer.ID) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}
