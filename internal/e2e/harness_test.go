// Package e2e drives the raftcast binary as users and scripts do: real processes on loopback,
// each with its own data dir, through the command-line contract of CLI.md.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// binary builds ./cmd/raftcast once per test process.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "raftcast-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "raftcast")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/raftcast/raftcast/cmd/raftcast")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// daemon is a raftcast daemon process.
type daemon struct {
	t    *testing.T
	data string
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{}
}

// logBuffer collects a daemon's output; exec copies into it from its own goroutine while a
// test may read it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startDaemon starts `raftcast <role> --data dir args...` and waits until its API is up.
func startDaemon(t *testing.T, role, dir string, args ...string) *daemon {
	t.Helper()
	// A daemon killed with SIGKILL leaves its api file: wait for the new daemon's, not that one.
	_ = os.Remove(filepath.Join(dir, "api"))
	full := append([]string{role, "--data", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--multicast-iface", "none"}, args...)
	cmd := exec.Command(binary(t), full...)
	d := &daemon{t: t, data: dir, cmd: cmd, log: &logBuffer{}, done: make(chan struct{})}
	cmd.Stdout = d.log
	cmd.Stderr = d.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(syscall.SIGKILL) })
	// A daemon is ready in well under a second; the bound leaves room for a machine that
	// stalls (a CI run once saw daemons take about 30 s).
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "api")); err == nil {
			return d
		}
		select {
		case <-d.done:
			t.Fatalf("%s exited early: %s", role, d.log)
		default:
		}
		if time.Now().After(deadline) {
			// SIGQUIT makes the Go runtime print every goroutine's stack: where it is stuck.
			d.stop(syscall.SIGQUIT)
			t.Fatalf("%s did not become ready within 60 s: %s", role, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop signals the daemon and waits (bounded) for it to exit.
func (d *daemon) stop(sig syscall.Signal) {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// result of one client command.
type result struct {
	code           int
	stdout, stderr string
}

// rc runs a client command with a timeout.
func rc(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("raftcast %s: %v", strings.Join(args, " "), err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// rcJSON runs a client command with --json, requires exit 0 and decodes stdout into v.
func rcJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	r := rc(t, 60*time.Second, append(args, "--json")...)
	if r.code != 0 {
		t.Fatalf("raftcast %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("raftcast %s: stdout is not one JSON document: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
