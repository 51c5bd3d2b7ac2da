package mcast

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/raftcast/raftcast/transfer/content"
)

// SenderConfig tunes a Sender.
type SenderConfig struct {
	// Rate is the pacing rate in bytes per second on the channel (headers included).
	Rate int64
	// Burst is how many bytes may leave at once after an idle moment. Default: max(64 KiB,
	// Rate/20) — 50 ms worth, so that a sender starved of the CPU for that long catches up
	// (testnet/bench one domain, 256 MiB at load 6: passes took 0.7-1.2 % longer than their
	// rate with 20 ms, 0-0.2 % with 50 ms, without more loss; the shaped link's queue of
	// 1000 packets holds 50 ms at 100 Mbit/s twice over).
	Burst int
	// Datagram is the datagram size (header included). 0: the channel's UnfragmentedSize if
	// it has that method, else DefaultDatagram; capped at the channel's MaxDatagram.
	Datagram int
	// EndRepeats is how many END datagrams close a pass (they can be lost too). Default 3.
	EndRepeats int
	// Batch is the most datagrams paced and sent together (one sendmmsg when the channel is a
	// BatchSender): pacing sleeps once per batch, not once per datagram. Default
	// DefaultBatch, capped so that a batch fits in Burst.
	Batch int
}

// DefaultBatch is the default SenderConfig.Batch: 64 datagrams of 1472 bytes are 94 KB, 7.5 ms
// at 100 Mbit/s.
const DefaultBatch = 64

// DefaultDatagram fits an Ethernet MTU with IPv6 and UDP headers (1500-40-8 = 1452) with room
// to spare; see doc.go for why fragmenting larger datagrams is not worth it.
const DefaultDatagram = 1400

// DefaultSenderConfig returns the defaults for a rate.
func DefaultSenderConfig(rate int64) SenderConfig {
	return SenderConfig{Rate: rate, EndRepeats: 3}
}

// SliceReader reads a slice; store.Store fits.
type SliceReader interface {
	ReadSlice(i int, buf []byte) ([]byte, error)
}

// SenderStats counts what a sender sent.
type SenderStats struct {
	Datagrams int64
	Bytes     int64 // on the channel, headers included
	Slices    int64
}

// Sender multicasts the slices of one piece of content, chunked into datagrams and paced by
// a token bucket. It is safe for concurrent use (sends are serialised by the limiter's
// order, not by a lock; concurrent SendSlice calls interleave datagrams).
type Sender struct {
	ch    Channel
	m     *content.Manifest
	cfg   SenderConfig
	tag   tag
	lim   *rate.Limiter
	batch int // datagrams per paced burst

	datagrams, bytes, slices atomic.Int64
}

// NewSender returns a sender of m's slices on ch.
func NewSender(ch Channel, m *content.Manifest, cfg SenderConfig) (*Sender, error) {
	if cfg.Rate <= 0 {
		return nil, fmt.Errorf("mcast: rate %d must be positive", cfg.Rate)
	}
	if cfg.Datagram == 0 {
		cfg.Datagram = DefaultDatagram
		if u, ok := ch.(interface{ UnfragmentedSize() int }); ok && u.UnfragmentedSize() >= HeaderSize+64 {
			cfg.Datagram = u.UnfragmentedSize()
		}
	}
	cfg.Datagram = min(cfg.Datagram, ch.MaxDatagram(), HeaderSize+65535)
	if cfg.Datagram < HeaderSize+64 {
		return nil, fmt.Errorf("mcast: datagram size %d too small", cfg.Datagram)
	}
	if cfg.Burst == 0 {
		cfg.Burst = max(64<<10, int(cfg.Rate/20))
	}
	cfg.Burst = max(cfg.Burst, cfg.Datagram)
	if cfg.EndRepeats <= 0 {
		cfg.EndRepeats = 3
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	batch := max(1, min(cfg.Batch, cfg.Burst/cfg.Datagram))
	cfg.EndRepeats = min(cfg.EndRepeats, cfg.Burst/HeaderSize)
	return &Sender{ch: ch, m: m, cfg: cfg, tag: tagOf(m.ID()), lim: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst), batch: batch}, nil
}

// Stats returns the counters.
func (s *Sender) Stats() SenderStats {
	return SenderStats{Datagrams: s.datagrams.Load(), Bytes: s.bytes.Load(), Slices: s.slices.Load()}
}

// SendSlice multicasts slice i (data must be its verified bytes), paced.
func (s *Sender) SendSlice(ctx context.Context, i int, data []byte) error {
	if len(data) != s.m.SliceLen(i) {
		return fmt.Errorf("mcast: slice %d is %d bytes, want %d", i, len(data), s.m.SliceLen(i))
	}
	chunk := s.cfg.Datagram - HeaderSize
	buf := make([]byte, s.batch*s.cfg.Datagram)
	ps := make([][]byte, 0, s.batch)
	h := header{typ: typeData, tag: s.tag, slice: uint32(i), chunk: uint16(chunk)}
	for off := 0; off < len(data); {
		ps = ps[:0]
		for k := 0; k < s.batch && off < len(data); k++ {
			n := min(chunk, len(data)-off)
			d := buf[k*s.cfg.Datagram : k*s.cfg.Datagram+HeaderSize+n]
			h.offset = uint32(off)
			h.put(d)
			copy(d[HeaderSize:], data[off:off+n])
			ps = append(ps, d)
			off += n
		}
		if err := s.send(ctx, ps); err != nil {
			return err
		}
	}
	s.slices.Add(1)
	return nil
}

// send paces the datagrams as one burst, then sends them in one call when the channel takes
// batches.
func (s *Sender) send(ctx context.Context, ps [][]byte) error {
	size := 0
	for _, p := range ps {
		size += len(p)
	}
	if err := s.lim.WaitN(ctx, size); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("mcast: pacing: %w", err)
	}
	if err := sendBatch(ctx, s.ch, ps); err != nil {
		return fmt.Errorf("mcast: send: %w", err)
	}
	s.datagrams.Add(int64(len(ps)))
	s.bytes.Add(int64(size))
	return nil
}

// sendBatch sends ps on ch: in one call if ch is a BatchSender, else one by one.
func sendBatch(ctx context.Context, ch Channel, ps [][]byte) error {
	if bs, ok := ch.(BatchSender); ok {
		return bs.SendBatch(ctx, ps)
	}
	for _, p := range ps {
		if err := ch.Send(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// SendEnd announces the end of a pass (EndRepeats times).
func (s *Sender) SendEnd(ctx context.Context) error {
	var buf [HeaderSize]byte
	header{typ: typeEnd, tag: s.tag, slice: uint32(s.m.NumSlices())}.put(buf[:])
	ps := make([][]byte, s.cfg.EndRepeats)
	for i := range ps {
		ps[i] = buf[:]
	}
	return s.send(ctx, ps)
}

// SendAll multicasts every slice src holds, in order, then the end of the pass.
func (s *Sender) SendAll(ctx context.Context, src SliceReader) error {
	buf := make([]byte, s.m.SliceSize)
	for i := 0; i < s.m.NumSlices(); i++ {
		data, err := src.ReadSlice(i, buf)
		if err != nil {
			return fmt.Errorf("mcast: read slice %d: %w", i, err)
		}
		if err := s.SendSlice(ctx, i, data); err != nil {
			return err
		}
	}
	return s.SendEnd(ctx)
}
