package peergroup

import (
	"context"
	"io"
	"log"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter hands hashicorp/raft's log lines to a *slog.Logger, one level down (raft's
// errors are mostly a peer being unreachable, which a group survives: slog Warn; its info
// lines are routine: slog Debug; its debug and trace lines are dropped), and repeats of the
// same message at most once per logRepeatEvery (a dead peer makes raft log every heartbeat).
type hclogAdapter struct {
	l     *slog.Logger
	name  string
	args  []any
	quiet *quietState
}

const logRepeatEvery = 10 * time.Second

type quietState struct {
	mu   sync.Mutex           // guards last
	last map[string]time.Time // message → when it was last logged
}

func newHclogAdapter(l *slog.Logger) *hclogAdapter {
	return &hclogAdapter{l: l, quiet: &quietState{last: make(map[string]time.Time)}}
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	var sl slog.Level
	switch level {
	case hclog.Error:
		sl = slog.LevelWarn
	case hclog.Warn, hclog.Info, hclog.NoLevel:
		sl = slog.LevelDebug
	default:
		return
	}
	if !a.l.Enabled(context.Background(), sl) {
		return
	}
	now := time.Now()
	a.quiet.mu.Lock()
	last, seen := a.quiet.last[msg]
	if seen && now.Sub(last) < logRepeatEvery {
		a.quiet.mu.Unlock()
		return
	}
	if len(a.quiet.last) > 256 {
		clear(a.quiet.last)
	}
	a.quiet.last[msg] = now
	a.quiet.mu.Unlock()
	all := append(append([]any{"component", "raft" + a.name}, a.args...), args...)
	a.l.Log(context.Background(), sl, msg, all...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) IsTrace() bool                 { return false }
func (a *hclogAdapter) IsDebug() bool                 { return false }
func (a *hclogAdapter) IsInfo() bool                  { return true }
func (a *hclogAdapter) IsWarn() bool                  { return true }
func (a *hclogAdapter) IsError() bool                 { return true }
func (a *hclogAdapter) ImpliedArgs() []any            { return a.args }
func (a *hclogAdapter) Name() string                  { return a.name }
func (a *hclogAdapter) SetLevel(hclog.Level)          {}
func (a *hclogAdapter) GetLevel() hclog.Level         { return hclog.Info }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(append([]any{}, a.args...), args...)
	return &c
}

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	c.name = a.name + "." + name
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = "." + name
	return &c
}

func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(io.Discard, "", 0)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return io.Discard }
