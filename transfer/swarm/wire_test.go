package swarm

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/raftcast/raftcast/transfer/content"
)

// TestWireGolden pins the request and frame-header layouts.
func TestWireGolden(t *testing.T) {
	var id content.ID
	for i := range id {
		id[i] = byte(i)
	}
	q := wireReq{op: opSlices, id: id, start: 0x01020304, count: 0x40}
	got := hex.EncodeToString(q.append(nil))
	want := "03" + "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" + "01020304" + "00000040"
	if got != want {
		t.Fatalf("request\n got %s\nwant %s", got, want)
	}
	var rb [reqSize]byte
	back, err := readReq(bytes.NewReader(q.append(nil)), &rb)
	if err != nil || back != q {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	var hb [hdrSize]byte
	wireHdr{status: stNotHave, index: 7, length: 0x00100000}.put(hb[:])
	if got := hex.EncodeToString(hb[:]); got != "02"+"00000007"+"00100000" {
		t.Fatalf("header %s", got)
	}
	var hb2 [hdrSize]byte
	h, err := readHdr(bytes.NewReader(hb[:]), &hb2)
	if err != nil || h != (wireHdr{status: stNotHave, index: 7, length: 0x00100000}) {
		t.Fatalf("header round trip: %+v %v", h, err)
	}
}

// FuzzReadReq: arbitrary bytes never panic the request reader, and what it reads re-encodes
// to the same bytes.
func FuzzReadReq(f *testing.F) {
	f.Add(wireReq{op: opHave}.append(nil))
	f.Add(wireReq{op: opParts, start: 3, count: 0xffffffff}.append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rb [reqSize]byte
		q, err := readReq(bytes.NewReader(b), &rb)
		if err != nil {
			return
		}
		if !bytes.Equal(q.append(nil), b[:reqSize]) {
			t.Fatal("not canonical")
		}
	})
}
