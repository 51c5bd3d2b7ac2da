package coop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/raftcast/raftcast/transfer/store"
)

// TestExporterOutOfOrder: slices landing in any order end up at their place in the output,
// and the SHA-256 covers the whole file in order, whether the exporter ran along or not.
func TestExporterOutOfOrder(t *testing.T) {
	for _, along := range []bool{true, false} {
		dir := t.TempDir()
		c, err := newCache(filepath.Join(dir, "cache"), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		const ss = 4 << 10
		data := randomData(t, 37*ss+123)
		layout := store.Layout{Size: int64(len(data)), SliceSize: ss}
		e, err := c.open("kexport", layout)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out")
		x, err := newExporter(e, out, "t1")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		if along {
			go func() { done <- x.run(ctx) }()
		}
		order := rand.Perm(layout.NumSlices())
		for _, i := range order {
			off := layout.Offset(i)
			if _, err := e.st.Put(i, data[off:off+int64(layout.SliceLen(i))]); err != nil {
				t.Fatal(err)
			}
			e.notify()
		}
		if along {
			// Let the exporter see some of it, then stop it as the listener does.
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if fi, err := os.Stat(x.tmp); err == nil && fi.Size() > 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		want := sha256.Sum256(data)
		sum, err := x.finish(hex.EncodeToString(want[:]))
		if err != nil {
			t.Fatalf("along=%v: %v", along, err)
		}
		if sum != hex.EncodeToString(want[:]) {
			t.Fatalf("along=%v: sum %s", along, sum)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("along=%v: output differs (err %v, %d bytes)", along, err, len(got))
		}
		if _, err := os.Stat(x.tmp); !os.IsNotExist(err) {
			t.Fatalf("temporary file left: %v", err)
		}
		c.release(e)
	}
}

// TestDownloadAgainAtOnce: the finished task leaves the table in the background; the same
// node downloading the URL again right away gets a new, complete download (not the old task
// being removed), and the table ends empty.
func TestDownloadAgainAtOnce(t *testing.T) {
	id, nodes := newGroup(t, 3, nil)
	data := randomData(t, 5<<20+77)
	o := newTestOrigin(t, data, nil)
	a := nodes[(leaderOf(t, id, nodes)+1)%len(nodes)]
	for i := range 3 {
		out := filepath.Join(t.TempDir(), "f.bin")
		res, err := a.svc.Download(ctxT(t, 60*time.Second), a.group(t, id), Request{URL: o.url("again"), Out: out, SHA256: sha(data)}, nil)
		if err != nil {
			t.Fatalf("download %d: %v", i, err)
		}
		checkFile(t, out, data)
		if res.SHA256 != sha(data) {
			t.Fatalf("download %d: sum %s", i, res.SHA256)
		}
	}
	eventually(t, 15*time.Second, "tasks removed", func() error {
		if n := len(a.group(t, id).State().Tasks); n != 0 {
			return fmt.Errorf("%d tasks left in the table", n)
		}
		return nil
	})
}
