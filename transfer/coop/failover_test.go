package coop

import (
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftcast/raftcast/peergroup"
)

// killMidDownload downloads 16 MiB through a 4-member group and kills one node (chosen by
// pick from the leader's and the requester's indexes) once some slices have arrived.
func killMidDownload(t *testing.T, pick func(leader, requester int) int) {
	id, nodes := newGroup(t, 4, nil)
	li := leaderOf(t, id, nodes)
	ri := (li + 1) % len(nodes)
	vi := pick(li, ri)
	if vi == ri {
		t.Fatal("test bug: would kill the requester")
	}
	const size = 16 << 20
	data := randomData(t, size)
	o := newTestOrigin(t, data, func(o *testOrigin) { o.rate = 1 << 20 })
	req := nodes[ri]
	out := filepath.Join(t.TempDir(), "f.bin")
	var got atomic.Int64
	done := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(done)
		res, err = req.svc.Download(ctxT(t, 90*time.Second), req.group(t, id), Request{URL: o.url("f"), Out: out},
			func(d, _ int64) { got.Store(d) })
	}()
	eventually(t, 30*time.Second, "first slices", func() error {
		if got.Load() < 2<<20 {
			return errors.New("not yet")
		}
		return nil
	})
	victim := nodes[vi]
	victimID := victim.id()
	t.Logf("killing %s (leader %v) with %d bytes held", victim.name, vi == li, got.Load())
	victim.stop()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if b := o.body.Load(); b > size*3/2 {
		t.Fatalf("origin sent %.2f× the size", float64(b)/size)
	}
	t.Logf("done in %.2fs; origin sent %.3f× the size; victim fetched %d bytes; by peer %v",
		res.Seconds, float64(o.body.Load())/size, res.BytesByPeer[victimID.String()], res.BytesByPeer)
	eventually(t, 15*time.Second, "task removed", func() error {
		if n := len(req.group(t, id).State().Tasks); n != 0 {
			return errors.New("task left in the table")
		}
		return nil
	})
}

func TestMemberKilledMidDownload(t *testing.T) {
	killMidDownload(t, func(leader, requester int) int {
		for i := range 4 {
			if i != leader && i != requester {
				return i
			}
		}
		return -1
	})
}

func TestLeaderKilledMidDownload(t *testing.T) {
	killMidDownload(t, func(leader, _ int) int { return leader })
}

// TestRequesterNodeRestartResumes kills the requester's whole node (host, group, service)
// mid-download, restarts it on its data directory, and asks again: the task resumes from the
// slices its store kept, and the file is whole.
func TestRequesterNodeRestartResumes(t *testing.T) {
	id, nodes := newGroup(t, 3, nil)
	li := leaderOf(t, id, nodes)
	req := nodes[(li+1)%3]
	const size = 12 << 20
	data := randomData(t, size)
	o := newTestOrigin(t, data, func(o *testOrigin) { o.rate = 1 << 20 })
	out := filepath.Join(t.TempDir(), "f.bin")
	var got atomic.Int64
	done := make(chan error, 1)
	go func() {
		_, err := req.svc.Download(ctxT(t, 60*time.Second), req.group(t, id), Request{URL: o.url("f"), Out: out},
			func(d, _ int64) { got.Store(d) })
		done <- err
	}()
	eventually(t, 30*time.Second, "some slices", func() error {
		if got.Load() < 3<<20 {
			return errors.New("not yet")
		}
		return nil
	})
	req.stop()
	if err := <-done; err == nil {
		t.Fatal("download survived its node")
	}
	noOutput(t, out)
	req.start(t, nil)
	var g *peergroup.Group
	eventually(t, 30*time.Second, "group reopened", func() error {
		for _, gg := range req.m.Groups() {
			if gg.ID() == id && gg.Leader() != "" {
				g = gg
				return nil
			}
		}
		return errors.New("not yet")
	})
	res, err := req.svc.Download(ctxT(t, 60*time.Second), g, Request{URL: o.url("f"), Out: out}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if res.BytesResumed == 0 {
		t.Fatal("nothing resumed")
	}
	t.Logf("resumed %d bytes after a node restart; origin sent %.3f× the size", res.BytesResumed, float64(o.body.Load())/size)
}
