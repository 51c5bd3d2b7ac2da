package pipes

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Stream framing: every frame is uvarint(length) followed by length bytes. The wire types
// below are separate from the domain types and converted explicitly.

// appendFrameHeader appends the uvarint length prefix of an n-byte frame.
func appendFrameHeader(b []byte, n int) []byte { return binary.AppendUvarint(b, uint64(n)) }

// writeFrame writes one frame to w (not flushed).
func writeFrame(w *bufio.Writer, p []byte) error {
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(p)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// readFrameLen reads a frame's length prefix and checks it against max. io.EOF means the
// stream ended cleanly between frames.
func readFrameLen(r io.ByteReader, max int) (int, error) {
	v, err := readPrefix(r)
	if err != nil {
		return 0, err
	}
	if v > uint64(max) {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, v, max)
	}
	return int(v), nil
}

// readMsgPrefix reads the length prefix of a unicast message frame and checks the length
// against max. With acks (ProtocolUnicast) the prefix is uvarint(length<<1 | ackNow), and
// ackNow asks for an acknowledgement at once; without (ProtocolUnicastV1) it is the length.
// io.EOF means the stream ended cleanly between frames.
func readMsgPrefix(r io.ByteReader, max int, acks bool) (n int, ackNow bool, err error) {
	v, err := readPrefix(r)
	if err != nil {
		return 0, false, err
	}
	if acks {
		v, ackNow = v>>1, v&1 == 1
	}
	if v > uint64(max) {
		return 0, false, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, v, max)
	}
	return int(v), ackNow, nil
}

// appendMsgPrefix appends the length prefix of an n-byte unicast message frame (see
// readMsgPrefix).
func appendMsgPrefix(b []byte, n int, acks, ackNow bool) []byte {
	v := uint64(n)
	if acks {
		v <<= 1
		if ackNow {
			v |= 1
		}
	}
	return binary.AppendUvarint(b, v)
}

// readPrefix reads a uvarint length prefix. io.EOF means the stream ended before it.
func readPrefix(r io.ByteReader) (uint64, error) {
	var v uint64
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && c > 1 || i >= binary.MaxVarintLen64 {
			return 0, fmt.Errorf("%w: length prefix overflows", ErrMalformed)
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, nil
		}
	}
}

// readFrame reads one whole frame of at most max bytes into a new slice.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	n, err := readFrameLen(r, max)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// frameReader reads the frames of a unicast stream with as few copies as it can. Small
// frames come through its buffer, many per stream read. The payload of a large frame
// (directReadMin or more) is read straight from the stream into its destination, and after
// one the next length prefix is read with a short read, so that when large frames follow each
// other their payloads are never copied through the buffer. Not safe for concurrent use.
type frameReader struct {
	st    io.Reader
	buf   []byte
	r, w  int  // buf[r:w] is read from st and not yet consumed
	short bool // the last payload was large: fill with a short read
}

const (
	directReadMin = 4 << 10 // the least payload read straight from the stream
	shortRead     = 16      // a fill after a large payload: a length prefix and a little more
)

// newFrameReader returns a frameReader over st with a buffer of size bytes, starting with
// what r (a buffered reader over st, no longer used afterwards) holds.
func newFrameReader(st io.Reader, r *bufio.Reader, size int) *frameReader {
	f := &frameReader{st: st, buf: make([]byte, max(size, shortRead, r.Buffered()))}
	b, _ := r.Peek(r.Buffered())
	f.w = copy(f.buf, b)
	return f
}

// Buffered returns the number of bytes read from the stream and not yet consumed.
func (f *frameReader) Buffered() int { return f.w - f.r }

// fill reads more of the stream into the empty buffer.
func (f *frameReader) fill() error {
	f.r, f.w = 0, 0
	n := len(f.buf)
	if f.short {
		n = shortRead
	}
	for range 100 { // as bufio: a reader that keeps returning nothing is broken
		k, err := f.st.Read(f.buf[:n])
		f.w = k
		if k > 0 {
			return nil // an error with data comes back at the next read
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// ReadByte reads one byte (io.ByteReader, for readMsgPrefix).
func (f *frameReader) ReadByte() (byte, error) {
	if f.r == f.w {
		if err := f.fill(); err != nil {
			return 0, err
		}
	}
	c := f.buf[f.r]
	f.r++
	return c, nil
}

// readFull fills p with the next bytes of the stream: first what the buffer holds, then a
// large remainder straight from the stream, a small one through the buffer.
func (f *frameReader) readFull(p []byte) error {
	k := copy(p, f.buf[f.r:f.w])
	f.r += k
	rest := p[k:]
	f.short = len(p) >= directReadMin
	if len(rest) >= directReadMin {
		_, err := io.ReadFull(f.st, rest) // the buffer is empty: the stream's bytes come next
		return noEOF(err)
	}
	for len(rest) > 0 {
		if err := f.fill(); err != nil {
			return noEOF(err)
		}
		k := copy(rest, f.buf[f.r:f.w])
		f.r += k
		rest = rest[k:]
	}
	return nil
}

// noEOF turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// hello is the first frame on a pipe stream, sent by the opener.
type hello struct {
	Version uint8
	Pipe    string
}

func (h hello) marshal() []byte {
	b := []byte{h.Version}
	b = binary.AppendUvarint(b, uint64(len(h.Pipe)))
	return append(b, h.Pipe...)
}

func unmarshalHello(b []byte) (hello, error) {
	var h hello
	if len(b) < 2 {
		return h, fmt.Errorf("%w: short hello", ErrMalformed)
	}
	h.Version = b[0]
	d := decoder{b: b[1:]}
	h.Pipe = string(d.bytes(maxHelloSize))
	if d.err != nil || len(d.b) != 0 || h.Pipe == "" {
		return h, fmt.Errorf("%w: bad hello", ErrMalformed)
	}
	return h, nil
}

// Status codes of the reply to a hello.
const (
	statusOK          uint8 = 0
	statusUnknownPipe uint8 = 1
	statusBadRequest  uint8 = 2
	statusBusy        uint8 = 3
	statusBadVersion  uint8 = 4
)

// status is the reply to a hello.
type status struct {
	Code uint8
	Msg  string
}

func (s status) marshal() []byte {
	b := []byte{s.Code}
	msg := s.Msg
	if len(msg) > maxStatusSize-16 {
		msg = msg[:maxStatusSize-16]
	}
	b = binary.AppendUvarint(b, uint64(len(msg)))
	return append(b, msg...)
}

func unmarshalStatus(b []byte) (status, error) {
	var s status
	if len(b) < 2 {
		return s, fmt.Errorf("%w: short status", ErrMalformed)
	}
	s.Code = b[0]
	d := decoder{b: b[1:]}
	s.Msg = string(d.bytes(maxStatusSize))
	if d.err != nil || len(d.b) != 0 {
		return s, fmt.Errorf("%w: bad status", ErrMalformed)
	}
	return s, nil
}

// err maps a status to a sentinel error (nil for statusOK).
func (s status) err() error {
	var base error
	switch s.Code {
	case statusOK:
		return nil
	case statusUnknownPipe:
		base = ErrUnknownPipe
	case statusBadRequest:
		base = ErrMalformed
	default:
		base = ErrRefused
	}
	if s.Msg == "" {
		return base
	}
	return fmt.Errorf("%w: %s", base, s.Msg)
}

// decoder reads length-prefixed fields; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrMalformed)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a uvarint length and that many bytes (aliasing the input), at most max.
func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: field of %d bytes (limit %d, %d left)", ErrMalformed, n, max, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("%w: truncated", ErrMalformed)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}
