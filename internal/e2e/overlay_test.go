package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type status struct {
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs"`
	Role   string   `json:"role"`
	Groups []any    `json:"groups"`
}

type advertRow struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Name      string `json:"name"`
	Publisher string `json:"publisher"`
}

type peerRow struct {
	PeerID    string   `json:"peer_id"`
	Addrs     []string `json:"addrs"`
	Connected bool     `json:"connected"`
}

// TestOverlayProcesses is issue 2's acceptance run: a rendezvous and three nodes, each a
// process with its own data dir, discover each other through the CLI; bad requests fail
// clearly and leave the daemon running; a restarted node keeps its peer ID.
func TestOverlayProcesses(t *testing.T) {
	root := t.TempDir()
	rdv := startDaemon(t, "rendezvous", filepath.Join(root, "r"))
	var rs status
	rcJSON(t, &rs, "status", "--data", rdv.data)
	if rs.Role != "rendezvous" || len(rs.Addrs) == 0 || !strings.Contains(rs.Addrs[0], "/p2p/"+rs.PeerID) {
		t.Fatalf("rendezvous status: %+v", rs)
	}
	var nodes []*daemon
	ids := map[string]bool{}
	for _, name := range []string{"a", "b", "c"} {
		d := startDaemon(t, "node", filepath.Join(root, name), "--bootstrap", rs.Addrs[0], "--name", name)
		nodes = append(nodes, d)
		var st status
		rcJSON(t, &st, "status", "--data", d.data)
		ids[st.PeerID] = true
	}
	start := time.Now()
	for _, d := range nodes {
		eventually(t, 30*time.Second-time.Since(start), "every node lists the three peer adverts", func() bool {
			var ads []advertRow
			rcJSON(t, &ads, "adverts", "--type", "peer", "--remote", "--data", d.data)
			seen := 0
			for _, a := range ads {
				if a.Type == "peer" && ids[a.Publisher] {
					seen++
				}
			}
			return seen == 3
		})
		var ps []peerRow
		rcJSON(t, &ps, "peers", "--data", d.data)
		others := 0
		for _, p := range ps {
			if ids[p.PeerID] {
				others++
			}
		}
		if others != 2 {
			t.Fatalf("peers of %s lists %d of the other nodes: %+v", d.data, others, ps)
		}
	}

	// Bad requests: exit 2 or 1 with one clear line, and the daemon keeps running.
	a := nodes[0]
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"adverts", "--type", "bogus", "--data", a.data}, 2, "unknown kind"},
		{[]string{"adverts", "--frobnicate", "--data", a.data}, 2, "unknown flag"},
		{[]string{"adverts", "--timeout", "soon", "--data", a.data}, 2, "invalid"},
		{[]string{"nosuchcommand"}, 2, "unknown command"},
		{[]string{"status", "--data", filepath.Join(root, "nobody")}, 1, "no raftcast daemon"},
	} {
		r := rc(t, 30*time.Second, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("raftcast %v: exit %d stderr %q, want exit %d mentioning %q on one line", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	if !a.alive() {
		t.Fatal("daemon died after bad requests")
	}

	// Restart on the same data dir: same peer ID; the API file is removed on clean exit.
	var before status
	rcJSON(t, &before, "status", "--data", a.data)
	a.stop(syscall.SIGTERM)
	if r := rc(t, 10*time.Second, "status", "--data", a.data); r.code != 1 {
		t.Fatalf("status after clean exit: exit %d (api file left behind?)", r.code)
	}
	a2 := startDaemon(t, "node", a.data, "--bootstrap", rs.Addrs[0])
	var after status
	rcJSON(t, &after, "status", "--data", a2.data)
	if after.PeerID != before.PeerID {
		t.Fatalf("restarted node has peer ID %s, want %s", after.PeerID, before.PeerID)
	}
	var id map[string]string
	rcJSON(t, &id, "id", "--data", a2.data)
	if id["peer_id"] != before.PeerID {
		t.Fatalf("raftcast id says %s, want %s", id["peer_id"], before.PeerID)
	}
}
