package e2e

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// origin serves files from memory, capping each connection's rate, and counts body bytes.
type origin struct {
	files map[string][]byte
	rate  int64 // bytes/s per response
	sent  atomic.Int64
	srv   *httptest.Server
}

func newOrigin(t *testing.T, rate int64, files map[string][]byte) *origin {
	o := &origin{files: files, rate: rate}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := o.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(&throttled{ResponseWriter: w, o: o, start: time.Now()}, r, r.URL.Path, time.Unix(1700000000, 0), bytes.NewReader(b))
	}))
	t.Cleanup(o.srv.Close)
	return o
}

type throttled struct {
	http.ResponseWriter
	o     *origin
	start time.Time
	n     int64
}

func (w *throttled) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), 32<<10)]
		n, err := w.ResponseWriter.Write(chunk)
		total += n
		w.n += int64(n)
		w.o.sent.Add(int64(n))
		if err != nil {
			return total, err
		}
		p = p[n:]
		if ahead := time.Duration(float64(w.n)/float64(w.o.rate)*float64(time.Second)) - time.Since(w.start); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	return total, nil
}

type downloadResult struct {
	Size           int64            `json:"size"`
	Slices         int              `json:"slices"`
	BytesByPeer    map[string]int64 `json:"bytes_by_peer"`
	BytesFromCache int64            `json:"bytes_from_cache"`
}

// TestDownloadProcesses is issue 6's loopback acceptance with real processes.
func TestDownloadProcesses(t *testing.T) {
	root := t.TempDir()
	rdv := startDaemon(t, "rendezvous", filepath.Join(root, "r"))
	var rs status
	rcJSON(t, &rs, "status", "--data", rdv.data)
	names := []string{"a", "b", "c", "d"}
	ds := map[string]*daemon{}
	var all []*daemon
	for _, n := range names {
		ds[n] = startDaemon(t, "node", filepath.Join(root, n), "--bootstrap", rs.Addrs[0], "--name", n)
		all = append(all, ds[n])
	}
	var ref groupRef
	rcJSON(t, &ref, "group", "create", "dl", "--data", ds["a"].data)
	for _, n := range names[1:] {
		rcJSON(t, &ref, "group", "join", "dl", "--data", ds[n].data)
	}
	agree(t, 30*time.Second, "dl", 4, all...)

	mk := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	files := map[string][]byte{"/big.bin": mk(48 << 20), "/f2.bin": mk(24 << 20), "/f3.bin": mk(24 << 20), "/f4.bin": mk(4 << 20)}
	o := newOrigin(t, 4<<20, files)

	download := func(d *daemon, path, out string, extra ...string) (downloadResult, result) {
		args := append([]string{"download", o.srv.URL + path, "--out", out, "--data", d.data, "--json", "--timeout", "120s"}, extra...)
		r := rc(t, 3*time.Minute, args...)
		var res downloadResult
		if r.code == 0 {
			if err := jsonUnmarshal(r.stdout, &res); err != nil {
				t.Fatal(err)
			}
		}
		return res, r
	}
	same := func(out, path string) {
		t.Helper()
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, files[path]) {
			t.Fatalf("%s differs from the origin's %s (%v)", out, path, err)
		}
	}

	// 48 MiB: byte-identical, >= 3 members fetched, the origin sent it about once.
	out := filepath.Join(root, "big.bin")
	res, r := download(ds["d"], "/big.bin", out)
	if r.code != 0 {
		t.Fatalf("download: exit %d: %s", r.code, r.stderr)
	}
	same(out, "/big.bin")
	fetchers := 0
	for _, b := range res.BytesByPeer {
		if b > 0 {
			fetchers++
		}
	}
	if fetchers < 3 {
		t.Fatalf("%d members fetched slices, want >= 3: %v", fetchers, res.BytesByPeer)
	}
	size := int64(len(files["/big.bin"]))
	if sent := o.sent.Load(); sent > size*11/10 {
		t.Fatalf("the origin sent %d bytes for a %d-byte file", sent, size)
	}

	// A second download of the same URL by another member costs the origin <= 0.5 x size.
	before := o.sent.Load()
	out2 := filepath.Join(root, "big-again.bin")
	if _, r := download(ds["b"], "/big.bin", out2); r.code != 0 {
		t.Fatalf("second download: exit %d: %s", r.code, r.stderr)
	}
	same(out2, "/big.bin")
	if sent := o.sent.Load() - before; sent > size/2 {
		t.Fatalf("the second download took %d bytes from the origin, want <= %d", sent, size/2)
	}

	// A wrong --sha256 fails with nothing at --out.
	bad := filepath.Join(root, "bad.bin")
	if _, r := download(ds["c"], "/f4.bin", bad, "--sha256", strings.Repeat("0", 64)); r.code != 1 {
		t.Fatalf("wrong sha256: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatal("a failed download left a file at --out")
	}

	// A member killed mid-download, then the leader killed mid-download: both complete.
	kill := func(d *daemon, after time.Duration) {
		go func() {
			time.Sleep(after)
			d.stop(syscall.SIGKILL)
		}()
	}
	kill(ds["b"], 1500*time.Millisecond)
	out3 := filepath.Join(root, "f2.bin")
	if _, r := download(ds["d"], "/f2.bin", out3); r.code != 0 {
		t.Fatalf("download with a member killed: exit %d: %s", r.code, r.stderr)
	}
	same(out3, "/f2.bin")
	// Separately from that: b comes back (a Raft group of four voters needs three alive), then
	// the leader dies mid-download.
	ds["b"] = startDaemon(t, "node", ds["b"].data, "--bootstrap", rs.Addrs[0])
	eventually(t, 30*time.Second, "b to rejoin as a follower", func() bool {
		sb, ok := groupStatusOf(t, ds["b"], "dl")
		return ok && sb.State == "follower" && sb.Leader != ""
	})
	st, _ := groupStatusOf(t, ds["d"], "dl")
	leader := ds["a"]
	for _, n := range []string{"a", "b", "c"} {
		var s status
		rcJSON(t, &s, "status", "--data", ds[n].data)
		if s.PeerID == st.Leader {
			leader = ds[n]
		}
	}
	kill(leader, 1500*time.Millisecond)
	out4 := filepath.Join(root, "f3.bin")
	if _, r := download(ds["d"], "/f3.bin", out4); r.code != 0 {
		t.Fatalf("download with the leader killed: exit %d: %s", r.code, r.stderr)
	}
	same(out4, "/f3.bin")
	_ = io.Discard
}
