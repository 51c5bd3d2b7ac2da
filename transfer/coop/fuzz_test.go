package coop

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// FuzzControlFrames feeds arbitrary bytes to the frame reader and every message decoder: they
// must fail cleanly (never panic, never allocate past the limits), and whatever decodes must
// encode back to the same bytes.
func FuzzControlFrames(f *testing.F) {
	f.Add(bincodec.Encode((&startRequest{GroupID: "g", URL: "http://x/", SliceSize: 4096}).encode))
	f.Add(bincodec.Encode((&rearrangeRequest{GroupID: "g", TaskID: "t", Slices: []uint32{1, 2}}).encode))
	f.Add(bincodec.Encode((&startAnswer{TaskID: "t", Size: 9, SliceSize: 4096, Ranges: true}).encode))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = readFrame(bufio.NewReader(bytes.NewReader(b)), 1<<16)
		type msg interface {
			encode(*bincodec.Encoder)
			decode(*bincodec.Decoder)
		}
		for _, m := range []msg{&startRequest{}, &startAnswer{}, &rearrangeRequest{}, &haveRequest{}, &haveAnswer{}, &notice{}, &errorMsg{}, &pushHeader{}} {
			d := bincodec.NewDecoder(b, ErrBadRequest)
			m.decode(&d)
			if d.Finish() != nil {
				continue
			}
			if got := bincodec.Encode(m.encode); !bytes.Equal(got, b) {
				// Varints have one canonical form here; booleans only 0 and 1.
				t.Fatalf("%T: decoded %x, re-encoded %x", m, b, got)
			}
		}
	})
}
