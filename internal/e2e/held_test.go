package e2e

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A daemon that restarts serves again what it shared and what it received: the source's
// share (every byte from it, no one else holds it), then a receiver's copy once the source is
// gone for good. A share whose file changed while the daemon was down is no longer served,
// and the daemon says so in its log.
func TestRestartServesHeld(t *testing.T) {
	root := t.TempDir()
	rdv := startDaemon(t, "rendezvous", filepath.Join(root, "r"))
	var rs status
	rcJSON(t, &rs, "status", "--data", rdv.data)
	args := func(n string) []string { return []string{"--bootstrap", rs.Addrs[0], "--name", n} }
	src := startDaemon(t, "node", filepath.Join(root, "src"), args("src")...)
	r1 := startDaemon(t, "node", filepath.Join(root, "r1"), args("r1")...)
	r2 := startDaemon(t, "node", filepath.Join(root, "r2"), args("r2")...)
	var ref groupRef
	rcJSON(t, &ref, "group", "create", "keep", "--data", src.data)
	for _, d := range []*daemon{r1, r2} {
		rcJSON(t, &ref, "group", "join", "keep", "--data", d.data)
	}
	agree(t, 30*time.Second, "keep", 3, src, r1, r2)

	write := func(name string, n int) (string, []byte) {
		b := make([]byte, n)
		rand.Read(b)
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p, b
	}
	kept, data := write("kept.bin", 4<<20)
	changed, _ := write("changed.bin", 1<<20)
	var shared struct {
		ContentID string `json:"content_id"`
	}
	rcJSON(t, &shared, "share", kept, "--data", src.data)
	rcJSON(t, &struct{}{}, "share", changed, "--data", src.data)

	src.stop(syscall.SIGTERM)
	if err := os.Truncate(changed, 1000); err != nil {
		t.Fatal(err)
	}
	src = startDaemon(t, "node", src.data, args("src")...)
	var ts []map[string]any
	rcJSON(t, &ts, "transfers", "--data", src.data)
	if len(ts) != 1 || ts[0]["id"] != shared.ContentID || ts[0]["kind"] != "share" || ts[0]["state"] != "serving" {
		t.Fatalf("transfers of the restarted source: %+v", ts)
	}
	if l := src.log.String(); !strings.Contains(l, "no longer serving held content") || !strings.Contains(l, "changed.bin") {
		t.Fatalf("the restarted source did not say it dropped the changed share:\n%s", l)
	}
	agree(t, 30*time.Second, "keep", 3, src, r1, r2)

	get := func(d *daemon, name string) getResult {
		t.Helper()
		out := filepath.Join(root, name)
		r := rc(t, 2*time.Minute, "get", shared.ContentID, "--out", out, "--timeout", "90s", "--data", d.data, "--json")
		if r.code != 0 {
			t.Fatalf("get on %s: exit %d: %s", d.data, r.code, r.stderr)
		}
		var res getResult
		if err := jsonUnmarshal(r.stdout, &res); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the copy at %s differs from the source (%v)", out, err)
		}
		return res
	}
	// Only the restarted source holds the content.
	if res := get(r1, "r1.bin"); res.BytesSource == 0 || res.BytesSource+res.BytesPeers != res.Size {
		t.Fatalf("r1's get: %+v", res)
	}

	// r1 restarts, the source leaves for good: r2 gets every byte from r1.
	r1.stop(syscall.SIGTERM)
	r1 = startDaemon(t, "node", r1.data, args("r1")...)
	rcJSON(t, &ts, "transfers", "--data", r1.data)
	if len(ts) != 1 || ts[0]["kind"] != "get" || ts[0]["state"] != "serving" {
		t.Fatalf("transfers of the restarted receiver: %+v", ts)
	}
	src.stop(syscall.SIGTERM)
	if res := get(r2, "r2.bin"); res.BytesPeers != res.Size {
		t.Fatalf("r2's get: %+v", res)
	}
}
