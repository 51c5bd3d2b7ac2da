package e2e

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type getResult struct {
	ContentID      string    `json:"content_id"`
	Size           int64     `json:"size"`
	Seconds        float64   `json:"seconds"`
	BytesMulticast int64     `json:"bytes_multicast"`
	BytesPeers     int64     `json:"bytes_peers"`
	BytesSource    int64     `json:"bytes_source"`
	BytesResumed   int64     `json:"bytes_resumed"`
	Started        time.Time `json:"started"`
	Finished       time.Time `json:"finished"`
}

// TestDistributionProcesses is issue 5's loopback acceptance: a source and three receivers
// (processes), 64 MiB, every copy byte-identical, summaries adding up, get by name, and an
// unknown content failing within its timeout with nothing at --out.
func TestDistributionProcesses(t *testing.T) {
	root := t.TempDir()
	rdv := startDaemon(t, "rendezvous", filepath.Join(root, "r"))
	var rs status
	rcJSON(t, &rs, "status", "--data", rdv.data)
	var ds []*daemon
	for _, n := range []string{"src", "r1", "r2", "r3"} {
		ds = append(ds, startDaemon(t, "node", filepath.Join(root, n), "--bootstrap", rs.Addrs[0], "--name", n))
	}
	var ref groupRef
	rcJSON(t, &ref, "group", "create", "dist", "--data", ds[0].data)
	for _, d := range ds[1:] {
		rcJSON(t, &ref, "group", "join", "dist", "--data", d.data)
	}
	agree(t, 30*time.Second, "dist", 4, ds...)

	data := make([]byte, 64<<20)
	rand.Read(data)
	src := filepath.Join(root, "movie.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var shared struct {
		ContentID string `json:"content_id"`
		Name      string `json:"name"`
		Size      int64  `json:"size"`
		Slices    int    `json:"slices"`
	}
	rcJSON(t, &shared, "share", src, "--data", ds[0].data)
	if shared.Size != int64(len(data)) || shared.Slices == 0 || len(shared.ContentID) != 64 || shared.Name != "movie.bin" {
		t.Fatalf("share: %+v", shared)
	}

	var wg sync.WaitGroup
	before := time.Now()
	results := make([]getResult, 3)
	errs := make([]string, 3)
	for i, d := range ds[1:] {
		wg.Add(1)
		go func(i int, d *daemon) {
			defer wg.Done()
			what := shared.ContentID
			if i == 0 {
				what = "movie.bin" // by name
			}
			out := filepath.Join(root, "out", d.data[len(root):])
			os.MkdirAll(filepath.Dir(out), 0o755)
			r := rc(t, 3*time.Minute, "get", what, "--out", out, "--timeout", "150s", "--data", d.data, "--json")
			if r.code != 0 {
				errs[i] = r.stderr
				return
			}
			if err := jsonUnmarshal(r.stdout, &results[i]); err != nil {
				errs[i] = err.Error()
				return
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, data) {
				errs[i] = "the received file differs from the source"
			}
		}(i, d)
	}
	wg.Wait()
	after := time.Now()
	for i, e := range errs {
		if e != "" {
			t.Fatalf("receiver %d: %s", i+1, e)
		}
		r := results[i]
		if r.ContentID != shared.ContentID || r.Size != shared.Size ||
			r.BytesMulticast+r.BytesPeers+r.BytesSource+r.BytesResumed != r.Size {
			t.Fatalf("receiver %d summary does not add up: %+v", i+1, r)
		}
		// The daemon's timestamps frame its own timer, within the client's run.
		if span := r.Finished.Sub(r.Started).Seconds(); r.Started.Before(before) || r.Finished.After(after) || span < r.Seconds {
			t.Fatalf("receiver %d: started %v, finished %v (%.3f s) for a get of %.3f s between %v and %v", i+1, r.Started, r.Finished, span, r.Seconds, before, after)
		}
	}
	// Receivers that completed serve others: a late receiver gets bytes from peers too.
	var ts []map[string]any
	rcJSON(t, &ts, "transfers", "--data", ds[1].data)
	if len(ts) != 1 || ts[0]["kind"] != "get" {
		t.Fatalf("transfers: %+v", ts)
	}

	// Unknown content: exit 1 within the timeout, nothing at --out.
	out := filepath.Join(root, "nothing.bin")
	start := time.Now()
	r := rc(t, time.Minute, "get", strings.Repeat("ab", 32), "--out", out, "--timeout", "3s", "--data", ds[2].data)
	if r.code != 1 || time.Since(start) > 20*time.Second {
		t.Fatalf("unknown content: exit %d after %s: %s", r.code, time.Since(start), r.stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("something was left at --out: %v", err)
	}
}
