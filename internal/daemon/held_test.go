package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raftcast/raftcast/transfer"
	"github.com/raftcast/raftcast/transfer/content"
)

func testManifest(t *testing.T, name string) *content.Manifest {
	t.Helper()
	m, err := content.Build(strings.NewReader(strings.Repeat(name, 100_000)), name, content.MinSliceSize)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Records written are read back; a malformed one, one whose manifest is another content's
// and one without its manifest are reported and left in place while the others load.
func TestHeldStore(t *testing.T) {
	h := heldStore{dir: filepath.Join(t.TempDir(), heldDir)}
	if es, errs := h.load(); len(es) != 0 || len(errs) != 0 {
		t.Fatalf("no dir yet: %v %v", es, errs)
	}
	a, b, c, d := testManifest(t, "a"), testManifest(t, "b"), testManifest(t, "c"), testManifest(t, "d")
	recA := heldRecord{Kind: transfer.KindShare, Path: "/data/a", Group: "g", Rate: 1000}
	recB := heldRecord{Kind: transfer.KindGet, Path: "/data/b", Group: "g", Proxy: true}
	for _, x := range []struct {
		m   *content.Manifest
		rec heldRecord
	}{{a, recA}, {b, recB}, {c, recA}, {d, recA}} {
		if err := h.put(x.m, x.rec); err != nil {
			t.Fatal(err)
		}
	}
	if !h.has(a.ID()) || !h.has(c.ID()) {
		t.Fatal("has: recorded contents missing")
	}
	mc, rc := h.paths(c.ID())
	if err := os.WriteFile(rc, []byte(`{"kind":`), 0o600); err != nil { // malformed
		t.Fatal(err)
	}
	md, _ := h.paths(d.ID())
	if err := os.WriteFile(md, a.Encode(), 0o600); err != nil { // another content's manifest
		t.Fatal(err)
	}
	if err := os.Remove(mc); err != nil {
		t.Fatal(err)
	}
	es, errs := h.load()
	if len(es) != 2 || len(errs) != 2 {
		t.Fatalf("load: %d entries, errors %v", len(es), errs)
	}
	got := map[content.ID]heldRecord{}
	for _, e := range es {
		got[e.m.ID()] = e.rec
	}
	if got[a.ID()] != recA || got[b.ID()] != recB {
		t.Fatalf("records read back: %+v", got)
	}
	if !h.has(c.ID()) || !h.has(d.ID()) {
		t.Fatal("unreadable records were removed")
	}
	if err := h.drop(a.ID()); err != nil {
		t.Fatal(err)
	}
	if err := h.drop(a.ID()); err != nil {
		t.Fatalf("dropping twice: %v", err)
	}
	if h.has(a.ID()) {
		t.Fatal("dropped record still there")
	}
	if ma, _ := h.paths(a.ID()); fileExists(ma) {
		t.Fatal("dropped record's manifest still there")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
