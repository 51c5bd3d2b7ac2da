package swarm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/transfer/content"
)

// ServiceName is the resource-manager service of the transfer protocol's streams.
const ServiceName = "raftcast.transfer"

// Source is what a server reads slices from: a store.Store (receiving or source) fits.
type Source interface {
	Has(i int) bool
	HaveBytes() []byte
	ReadSlice(i int, buf []byte) ([]byte, error)
}

// ServerConfig tunes a Server.
type ServerConfig struct {
	IdleTimeout  time.Duration // a stream with no request for this long is closed
	WriteTimeout time.Duration // per response frame
	MaxStreams   int           // concurrent streams served; more are reset
	// SeedWindow: for content added with AddSeed, a slice sent to one peer is, for this
	// long, not sent to another one that speaks 1.1.0 (ELSEWHERE instead): the source's
	// uplink carries each slice about once and the receivers pass it on among themselves.
	SeedWindow time.Duration
}

// DefaultServerConfig returns the defaults.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{IdleTimeout: time.Minute, WriteTimeout: 30 * time.Second, MaxStreams: 256, SeedWindow: 2 * time.Second}
}

func (c ServerConfig) validate() error {
	if c.IdleTimeout <= 0 || c.WriteTimeout <= 0 || c.MaxStreams <= 0 || c.SeedWindow < 0 {
		return fmt.Errorf("swarm: bad server config %+v", c)
	}
	return nil
}

// ServerStats are cumulative counters of a server.
type ServerStats struct {
	Requests     int64 // requests of any kind
	SliceFrames  int64 // slices sent
	SliceBytes   int64
	Refused      int64 // streams reset because MaxStreams were busy
	NotFound     int64 // requests for unknown content
	SliceNotHave int64
	Elsewhere    int64 // slices a seeding server sent to another peer instead
	Streams      int   // streams being served now
}

type served struct {
	m    *content.Manifest
	enc  []byte
	src  Source
	seed *seeding // nil unless added with AddSeed
}

// seeding remembers, per slice, the peer a seeding server last sent it to and when.
type seeding struct {
	mu   sync.Mutex // guards to, at
	to   []peer.ID
	at   []time.Time
	wind time.Duration
}

// elsewhere reports whether slice i should be taken from the peer it was sent to within the
// window instead of being sent to p now; if not, it records p as the slice's last recipient.
func (sd *seeding) elsewhere(i int, p peer.ID, now time.Time) bool {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if sd.to[i] != "" && sd.to[i] != p && now.Sub(sd.at[i]) < sd.wind {
		return true
	}
	sd.to[i], sd.at[i] = p, now
	return false
}

// Server answers the transfer protocol for the content added to it.
type Server struct {
	h   host.Host
	cfg ServerConfig
	log *slog.Logger

	mu       sync.Mutex // guards contents, streams, closed
	contents map[content.ID]*served
	streams  map[network.Stream]struct{}
	closed   bool

	wg sync.WaitGroup // running handlers

	requests, frames, bytes, refused, notFound, notHave, elsewhere atomic.Int64
}

// NewServer registers the protocol handler on h.
func NewServer(h host.Host, cfg ServerConfig, log *slog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{h: h, cfg: cfg, log: log, contents: make(map[content.ID]*served), streams: make(map[network.Stream]struct{})}
	h.SetStreamHandler(ProtocolID, s.handle)
	h.SetStreamHandler(ProtocolID11, s.handle)
	return s, nil
}

// Add serves m's content from src (replacing an earlier source of the same content).
func (s *Server) Add(m *content.Manifest, src Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.contents[m.ID()] = &served{m: m, enc: m.Encode(), src: src}
}

// AddSeed serves m's content from src as its source (seeding): a slice sent to one peer is
// not sent to another for ServerConfig.SeedWindow, which is told to take it from the peers
// (1.1.0 clients; 1.0.0 clients are served as by Add).
func (s *Server) AddSeed(m *content.Manifest, src Source) {
	sv := &served{m: m, enc: m.Encode(), src: src}
	if s.cfg.SeedWindow > 0 {
		n := m.NumSlices()
		sv.seed = &seeding{to: make([]peer.ID, n), at: make([]time.Time, n), wind: s.cfg.SeedWindow}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.contents[m.ID()] = sv
}

// Remove stops serving id.
func (s *Server) Remove(id content.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.contents, id)
}

// Serving reports whether id is served.
func (s *Server) Serving(id content.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.contents[id] != nil
}

// Stats returns the cumulative counters and the number of streams being served.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	streams := len(s.streams)
	s.mu.Unlock()
	return ServerStats{
		Requests: s.requests.Load(), SliceFrames: s.frames.Load(), SliceBytes: s.bytes.Load(),
		Refused: s.refused.Load(), NotFound: s.notFound.Load(), SliceNotHave: s.notHave.Load(),
		Elsewhere: s.elsewhere.Load(), Streams: streams,
	}
}

// Close unregisters the handler, resets the streams being served and waits for their
// handlers to return.
func (s *Server) Close() error {
	s.h.RemoveStreamHandler(ProtocolID)
	s.h.RemoveStreamHandler(ProtocolID11)
	s.mu.Lock()
	s.closed = true
	for st := range s.streams {
		st.Reset()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) admit(st network.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.streams) >= s.cfg.MaxStreams {
		return false
	}
	s.streams[st] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) lookup(id content.ID) *served {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.contents[id]
}

func (s *Server) handle(st network.Stream) {
	if !s.admit(st) {
		s.refused.Add(1)
		st.Reset()
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
		s.wg.Done()
	}()
	if err := st.Scope().SetService(ServiceName); err != nil {
		s.log.Debug("transfer stream refused by resource manager", "peer", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	if err := s.serve(st); err != nil {
		if !errors.Is(err, io.EOF) {
			s.log.Debug("transfer stream failed", "peer", st.Conn().RemotePeer(), "err", err)
			st.Reset()
			return
		}
	}
	st.Close()
}

// serve answers requests until the client closes its side (io.EOF) or an error.
func (s *Server) serve(st network.Stream) error {
	remote := st.Conn().RemotePeer()
	v11 := st.Protocol() == ProtocolID11
	br := bufio.NewReaderSize(st, 4<<10)
	bw := bufio.NewWriterSize(st, 64<<10)
	var (
		rbuf     [reqSize]byte
		hbuf     [hdrSize]byte
		sliceBuf []byte
		reserved int
	)
	defer func() { st.Scope().ReleaseMemory(reserved) }()
	frame := func(h wireHdr, payload []byte) error {
		if err := st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)); err != nil {
			return err
		}
		h.length = uint32(len(payload))
		h.put(hbuf[:])
		if _, err := bw.Write(hbuf[:]); err != nil {
			return err
		}
		_, err := bw.Write(payload)
		return err
	}
	for {
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if err := st.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout)); err != nil {
			return err
		}
		q, err := readReq(br, &rbuf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				if ferr := bw.Flush(); ferr != nil {
					return ferr
				}
			}
			return err
		}
		s.requests.Add(1)
		c := s.lookup(q.id)
		if c == nil {
			s.notFound.Add(1)
			if err := frame(wireHdr{status: stNotFound}, nil); err != nil {
				return err
			}
			continue
		}
		switch q.op {
		case opManifest:
			err = frame(wireHdr{status: stOK}, c.enc)
		case opHave:
			err = frame(wireHdr{status: stOK, index: uint32(c.m.NumSlices())}, c.src.HaveBytes())
		case opSlices:
			n := uint64(c.m.NumSlices())
			if q.count == 0 || q.count > MaxRun || uint64(q.start)+uint64(q.count) > n {
				_ = frame(wireHdr{status: stBadReq, index: q.start}, nil)
				_ = bw.Flush()
				return fmt.Errorf("%w: slices [%d,+%d) of %d", ErrProtocol, q.start, q.count, n)
			}
			if need := c.m.SliceSize; cap(sliceBuf) < need {
				if err := st.Scope().ReserveMemory(need-reserved, network.ReservationPriorityMedium); err != nil {
					return fmt.Errorf("swarm: reserve slice buffer: %w", err)
				}
				reserved = need
				sliceBuf = make([]byte, need)
			}
			for i := q.start; i < q.start+q.count && err == nil; i++ {
				if !c.src.Has(int(i)) {
					s.notHave.Add(1)
					err = frame(wireHdr{status: stNotHave, index: i}, nil)
					continue
				}
				if v11 && c.seed != nil && c.seed.elsewhere(int(i), remote, time.Now()) {
					s.elsewhere.Add(1)
					err = frame(wireHdr{status: stElsewhere, index: i}, nil)
					continue
				}
				data, rerr := c.src.ReadSlice(int(i), sliceBuf)
				if rerr != nil {
					s.log.Warn("cannot read slice to serve it", "content", q.id, "slice", i, "err", rerr)
					err = frame(wireHdr{status: stError, index: i}, nil)
					continue
				}
				s.frames.Add(1)
				s.bytes.Add(int64(len(data)))
				err = frame(wireHdr{status: stOK, index: i}, data)
			}
		case opParts:
			if q.count == 0 || uint64(q.start) >= uint64(c.m.NumSlices()) {
				_ = frame(wireHdr{status: stBadReq, index: q.start}, nil)
				_ = bw.Flush()
				return fmt.Errorf("%w: parts %b of slice %d", ErrProtocol, q.count, q.start)
			}
			if need := c.m.SliceSize; cap(sliceBuf) < need {
				if err := st.Scope().ReserveMemory(need-reserved, network.ReservationPriorityMedium); err != nil {
					return fmt.Errorf("swarm: reserve slice buffer: %w", err)
				}
				reserved = need
				sliceBuf = make([]byte, need)
			}
			err = s.serveParts(c, q, sliceBuf, frame)
		default:
			_ = frame(wireHdr{status: stBadReq}, nil)
			_ = bw.Flush()
			return fmt.Errorf("%w: unknown op %d", ErrProtocol, q.op)
		}
		if err != nil {
			return err
		}
	}
}

// serveParts answers a parts request: one frame per requested part, in ascending order, or a
// single NOT_HAVE or ERROR frame for the whole request.
func (s *Server) serveParts(c *served, q wireReq, buf []byte, frame func(wireHdr, []byte) error) error {
	i := int(q.start)
	if !c.src.Has(i) {
		s.notHave.Add(1)
		return frame(wireHdr{status: stNotHave, index: q.start}, nil)
	}
	data, err := c.src.ReadSlice(i, buf)
	if err != nil {
		s.log.Warn("cannot read slice to serve it", "content", q.id, "slice", i, "err", err)
		return frame(wireHdr{status: stError, index: q.start}, nil)
	}
	s.frames.Add(1)
	for k := 0; k < content.Parts; k++ {
		if q.count&(1<<k) == 0 {
			continue
		}
		off, end := content.PartBounds(len(data), k)
		s.bytes.Add(int64(end - off))
		if err := frame(wireHdr{status: stOK, index: q.start}, data[off:end]); err != nil {
			return err
		}
	}
	return nil
}
