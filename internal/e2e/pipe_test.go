package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listener runs `raftcast pipe listen` in the background and returns its output when done.
func listener(t *testing.T, args ...string) (wait func() (string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, binary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cancel() })
	return func() (string, error) {
		err := <-done
		cancel()
		if err != nil {
			return out.String(), &exec.ExitError{}
		}
		return out.String(), nil
	}
}

// TestPipeProcesses: propagate and unicast pipes and chat-style group pipes across processes.
func TestPipeProcesses(t *testing.T) {
	root := t.TempDir()
	rdv := startDaemon(t, "rendezvous", filepath.Join(root, "r"))
	var rs status
	rcJSON(t, &rs, "status", "--data", rdv.data)
	a := startDaemon(t, "node", filepath.Join(root, "a"), "--bootstrap", rs.Addrs[0])
	b := startDaemon(t, "node", filepath.Join(root, "b"), "--bootstrap", rs.Addrs[0])
	c := startDaemon(t, "node", filepath.Join(root, "c"), "--bootstrap", rs.Addrs[0])

	// Two listeners of a propagate pipe both get every message the third sends.
	wa := listener(t, "pipe", "listen", "news", "--kind", "propagate", "--count", "3", "--data", a.data)
	wb := listener(t, "pipe", "listen", "news", "--kind", "propagate", "--count", "3", "--data", b.data)
	time.Sleep(2 * time.Second) // bindings published, gossipsub meshes formed
	for i, msg := range []string{"one", "two", "three"} {
		var sent struct{ Delivered int }
		rcJSON(t, &sent, "pipe", "send", "news", msg, "--kind", "propagate", "--data", c.data)
		if sent.Delivered < 1 {
			t.Fatalf("message %d: delivered %d", i, sent.Delivered)
		}
	}
	for name, w := range map[string]func() (string, error){"a": wa, "b": wb} {
		out, err := w()
		if err != nil || strings.TrimSpace(out) != "one\ntwo\nthree" {
			t.Fatalf("listener %s: %v, got %q", name, err, out)
		}
	}

	// A unicast pipe delivers lines of stdin to its one listener.
	wu := listener(t, "pipe", "listen", "jobs", "--count", "2", "--data", a.data)
	time.Sleep(time.Second)
	cmd := exec.Command(binary(t), "pipe", "send", "jobs", "--data", b.data, "--json")
	cmd.Stdin = strings.NewReader("job-1\njob-2\n")
	var serr bytes.Buffer
	cmd.Stderr = &serr
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), `"delivered": 2`) {
		t.Fatalf("unicast send: %v %s %s", err, out, serr.String())
	}
	if got, err := wu(); err != nil || strings.TrimSpace(got) != "job-1\njob-2" {
		t.Fatalf("unicast listener: %v %q", err, got)
	}

	// Bad input: an unknown kind is a usage error; the daemon keeps running.
	if r := rc(t, 20*time.Second, "pipe", "send", "x", "hi", "--kind", "smoke", "--data", b.data); r.code != 2 {
		t.Fatalf("bad kind: exit %d %s", r.code, r.stderr)
	}
	if !b.alive() {
		t.Fatal("daemon died")
	}
}
