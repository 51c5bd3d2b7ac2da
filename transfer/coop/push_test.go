package coop

import (
	"bufio"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/raftcast/raftcast/internal/bincodec"
	"github.com/raftcast/raftcast/peergroup"
)

// TestPushRefusals: the requester reads a push stream ahead of its store; a good slice is
// stored and acknowledged, and a slice of the wrong length or index after it is refused with
// ErrBadRequest (the refusal follows the acknowledgements already due).
func TestPushRefusals(t *testing.T) {
	id, nodes := newGroup(t, 2, nil)
	a, b := nodes[0], nodes[1]
	const ss = 64 << 10
	task := peergroup.Task{
		ID: newTaskID(), Kind: peergroup.TaskDownload, URL: "http://127.0.0.1:1/f", Size: 3*ss + 5, SliceSize: ss,
		Validators: peergroup.Validators{ETag: `"v1"`}, Requester: a.id(), Created: time.Now(),
	}
	if err := a.group(t, id).Apply(ctxT(t, 20*time.Second), &peergroup.TaskAdd{Task: task}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "task seen by both", func() error {
		for _, n := range nodes {
			if _, ok := n.group(t, id).State().Tasks[task.ID]; !ok {
				return errors.New(n.name + " lacks the task")
			}
		}
		return nil
	})
	for _, bad := range []struct {
		name  string
		index int
		n     int
	}{{"short slice", 1, ss - 1}, {"index out of range", 9, ss}} {
		st, err := b.h.NewStream(network.WithAllowLimitedConn(ctxT(t, 10*time.Second), "test"), a.id(), PushProtocol)
		if err != nil {
			t.Fatal(err)
		}
		_ = st.SetDeadline(time.Now().Add(30 * time.Second))
		if err := writeFrame(st, msgPushHeader, bincodec.Encode((&pushHeader{GroupID: id, TaskID: task.ID}).encode)); err != nil {
			t.Fatal(err)
		}
		if err := writeSliceFrame(st, 0, flagFromOrigin, make([]byte, ss)); err != nil {
			t.Fatal(err)
		}
		if err := writeSliceFrame(st, bad.index, 0, make([]byte, bad.n)); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(st)
		typ, body, err := readFrame(r, 1<<10)
		if err != nil || typ != msgAck {
			t.Fatalf("%s: first answer type %d, err %v (want an ack)", bad.name, typ, err)
		}
		d := bincodec.NewDecoder(body, ErrBadRequest)
		if i := d.Uvarint(); i != 0 {
			t.Fatalf("%s: ack for slice %d", bad.name, i)
		}
		typ, body, err = readFrame(r, 1<<10)
		if err != nil || typ != msgPushRefused {
			t.Fatalf("%s: second answer type %d, err %v (want a refusal)", bad.name, typ, err)
		}
		var em errorMsg
		d = bincodec.NewDecoder(body, ErrBadRequest)
		em.decode(&d)
		if err := em.err(); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("%s: refusal %v, want ErrBadRequest", bad.name, err)
		}
		st.Reset()
	}
}

// TestPushStreamsShareQueue: members pushing over several streams at once, each with a
// window of one slice, still deliver every slice once into a byte-identical file.
func TestPushStreamsShareQueue(t *testing.T) {
	id, nodes := newGroup(t, 3, func(c *Config) {
		c.SliceSize = 64 << 10
		c.Stripe = 128 << 10
		c.PushStreams = 3
		c.PushWindow = 1
	})
	data := randomData(t, 6<<20+999)
	o := newTestOrigin(t, data, nil)
	a := nodes[(leaderOf(t, id, nodes)+1)%len(nodes)]
	out := filepath.Join(t.TempDir(), "f.bin")
	res, err := a.svc.Download(ctxT(t, 60*time.Second), a.group(t, id), Request{URL: o.url("streams"), Out: out, SHA256: sha(data)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if n := fetchers(res); n < 2 {
		t.Fatalf("%d members fetched (want ≥ 2): %v", n, res.BytesByPeer)
	}
	if body := o.body.Load(); body > int64(len(data))*11/10 {
		t.Fatalf("origin sent %d body bytes for %d", body, len(data))
	}
}
