package peergroup

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Snapshots are taken, the log is compacted, a late joiner catches up through a snapshot sent
// over the group's Raft protocol, and a restarted node recovers from its own snapshot.
func TestSnapshotsCompactAndCatchUp(t *testing.T) {
	small := func(c *Config) {
		c.SnapshotThreshold = 16
		c.TrailingLogs = 4
		c.SnapshotInterval = 100 * time.Millisecond
	}
	a, b := startNode(t, "a", small), startNode(t, "b", small)
	ga, err := a.m.Create(ctxT(t, 20*time.Second), "snap", PolicyOpen, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.Join(ctxT(t, 20*time.Second), ga.Info(), Credential{}); err != nil {
		t.Fatal(err)
	}
	const n = 120
	for i := 0; i < n; i++ {
		c := &ContentAdd{Content: Content{ID: fmt.Sprintf("c%03d", i), Name: "x", Size: int64(i), Source: a.id()}}
		if err := ga.Apply(ctxT(t, 10*time.Second), c); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "snapshot taken and log compacted", func() error {
		snaps, _ := os.ReadDir(filepath.Join(a.dir, "groups", ga.ID(), "snapshots"))
		first, _ := ga.store.FirstIndex()
		if len(snaps) == 0 || first <= 1 {
			return fmt.Errorf("%d snapshots, first log index %d", len(snaps), first)
		}
		return nil
	})

	c := startNode(t, "c", small)
	gc, err := c.m.Join(ctxT(t, 30*time.Second), ga.Info(), Credential{})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(gc.State().Catalogue); got != n {
		t.Fatalf("late joiner has %d catalogue entries, want %d", got, n)
	}

	b.stop()
	b.start(t, small)
	eventually(t, 20*time.Second, "restarted node recovers", func() error {
		g, ok := b.m.Group(ga.ID())
		if !ok {
			return fmt.Errorf("not reopened")
		}
		if got := len(g.State().Catalogue); got != n {
			return fmt.Errorf("%d entries", got)
		}
		return agree(ga.ID(), 3, a, b, c)
	})
}
