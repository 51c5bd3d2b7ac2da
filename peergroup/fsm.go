package peergroup

import (
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
)

// maxSnapshotSize bounds what Restore reads.
const maxSnapshotSize = 1 << 30

// fsm is the group's raft.FSM: it decodes, validates and applies commands to the state.
// Every replica applies the same log to the same state and so reaches the same decisions;
// the FSM never reads the clock or the network.
type fsm struct {
	mu sync.RWMutex // guards st
	st *state

	// onApply is called after each command (cmd nil when it was rejected, or after a
	// restore), outside the lock, from raft's FSM goroutine. It must not block.
	onApply func(Command)
}

var _ raft.FSM = (*fsm)(nil)

func newFSM(onApply func(Command)) *fsm {
	return &fsm{st: newState(), onApply: onApply}
}

// Apply implements raft.FSM. It returns nil when the command was applied and an error
// (wrapping ErrMalformed, ErrStale, ErrInvalid, ...) when it was rejected.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := DecodeCommand(l.Data)
	f.mu.Lock()
	if err == nil {
		err = f.st.apply(cmd, l.Term)
	}
	f.st.index = max(f.st.index, l.Index)
	f.mu.Unlock()
	if f.onApply != nil {
		if err != nil {
			cmd = nil
		}
		f.onApply(cmd)
	}
	if err != nil {
		return err
	}
	return nil
}

// index returns the log index of the last command this replica applied.
func (f *fsm) index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.index
}

// Snapshot implements raft.FSM; the state is encoded while the lock is held (the encoding is
// fast and the bytes are then immutable).
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{b: f.st.marshal()}, nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSnapshotSize+1))
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	if len(b) > maxSnapshotSize {
		return fmt.Errorf("%w: snapshot larger than %d bytes", ErrMalformed, maxSnapshotSize)
	}
	st, err := unmarshalState(b)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	if f.onApply != nil {
		f.onApply(nil)
	}
	return nil
}

// proxies returns a copy of the proxy peers recorded for a content.
func (f *fsm) proxies(contentID string) []peer.ID {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.st.proxies[contentID])
}

// view returns a copy of the state.
func (f *fsm) view(voter func(peer.ID) bool) StateView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.view(voter)
}

// read runs fn with the state read-locked; fn must not keep references or block.
func (f *fsm) read(fn func(*state)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.st)
}

type fsmSnapshot struct{ b []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.b); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
