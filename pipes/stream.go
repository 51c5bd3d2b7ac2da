package pipes

import (
	"bufio"
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// openPipeStream opens a stream to p for pipe id, of the first of protos that p speaks, sends
// the hello and reads the status, all within HandshakeTimeout. Relayed (limited) connections
// are allowed.
func (s *Service) openPipeStream(ctx context.Context, p peer.ID, id string, protos ...protocol.ID) (network.Stream, *bufio.Reader, *bufio.Writer, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	ctx = network.WithAllowLimitedConn(ctx, "raftcast pipe")
	st, err := s.h.NewStream(ctx, p, protos...)
	if err != nil {
		return nil, nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	w := bufio.NewWriterSize(st, s.cfg.StreamBuffer)
	r := bufio.NewReaderSize(st, s.cfg.StreamBuffer)
	fail := func(err error) (network.Stream, *bufio.Reader, *bufio.Writer, error) {
		_ = st.Reset()
		return nil, nil, nil, err
	}
	if err := writeFrame(w, hello{Version: wireVersion, Pipe: id}.marshal()); err != nil {
		return fail(err)
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	b, err := readFrame(r, maxStatusSize)
	if err != nil {
		return fail(fmt.Errorf("pipes: reading status from %s: %w", p, err))
	}
	stt, err := unmarshalStatus(b)
	if err != nil {
		return fail(err)
	}
	if err := stt.err(); err != nil {
		return fail(fmt.Errorf("%s: %w", p, err))
	}
	_ = st.SetDeadline(time.Time{})
	return st, r, w, nil
}

// acceptHello reads and checks the hello of an incoming pipe stream within HandshakeTimeout.
// On failure the stream has been answered (when possible), reset and counted.
func (s *Service) acceptHello(st network.Stream) (*bufio.Reader, hello, bool) {
	_ = st.SetDeadline(s.now().Add(s.cfg.HandshakeTimeout))
	r := bufio.NewReaderSize(st, s.cfg.StreamBuffer)
	b, err := readFrame(r, maxHelloSize)
	if err != nil {
		s.rejectStream(st, fmt.Errorf("pipes: hello: %w", err))
		return nil, hello{}, false
	}
	h, err := unmarshalHello(b)
	if err != nil {
		_ = writeStatus(st, statusBadRequest, err.Error())
		s.rejectStream(st, err)
		return nil, hello{}, false
	}
	if h.Version != wireVersion {
		s.stats.rejMalformed.Add(1)
		_ = writeStatus(st, statusBadVersion, fmt.Sprintf("unsupported version %d (want %d)", h.Version, wireVersion))
		_ = st.Close()
		return nil, hello{}, false
	}
	return r, h, true
}

// refuseUnknown answers a stream for a pipe that is not bound here.
func (s *Service) refuseUnknown(st network.Stream, id string) {
	s.stats.rejUnknownPipe.Add(1)
	s.log.Debug("stream for unknown pipe", "peer", st.Conn().RemotePeer(), "pipe", id)
	_ = writeStatus(st, statusUnknownPipe, "pipe "+id+" is not bound here")
	_ = st.Close()
}

// writeStatus writes a status frame straight to the stream.
func writeStatus(st network.Stream, code uint8, msg string) error {
	body := status{Code: code, Msg: msg}.marshal()
	b := appendFrameHeader(make([]byte, 0, len(body)+2), len(body))
	_, err := st.Write(append(b, body...))
	return err
}
