package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/raftcast/raftcast/internal/api"
)

// globals are the flags every command takes.
type globals struct {
	dataDir  string
	apiAddr  string
	json     bool
	logLevel string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "raftcast",
		Short:         "raftcast: a peer-to-peer overlay that distributes files to groups of peers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.dataDir, "data", "", "data directory (default $RAFTCAST_DATA, else ~/.raftcast)")
	pf.StringVar(&g.apiAddr, "api", "", "daemon API address HOST:PORT (daemons: listen there; clients: talk to it)")
	pf.BoolVar(&g.json, "json", false, "print one JSON document on stdout")
	pf.StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default info)")
	root.AddCommand(
		newNodeCmd(g, "node"), newNodeCmd(g, "rendezvous"), newIDCmd(g),
		newStatusCmd(g), newPeersCmd(g), newAdvertsCmd(g), newGroupCmd(g), newPipeCmd(g), newChatCmd(g), newShareCmd(g), newGetCmd(g), newTransfersCmd(g), newDownloadCmd(g), newDemoCmd(g),
	)
	for _, c := range root.Commands() {
		wrapArgs(c)
	}
	return root
}

// wrapArgs makes cobra's positional-argument errors usage errors.
func wrapArgs(c *cobra.Command) {
	if c.Args != nil {
		inner := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := inner(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// data returns the data directory: --data, else $RAFTCAST_DATA, else ~/.raftcast.
func (g *globals) data() string {
	if g.dataDir != "" {
		return g.dataDir
	}
	if d := os.Getenv("RAFTCAST_DATA"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".raftcast"
	}
	return filepath.Join(home, ".raftcast")
}

func (g *globals) logger(level string) (*slog.Logger, error) {
	var l slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, usagef("--log-level: want debug, info, warn or error, got %q", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func (g *globals) client() (*api.Client, error) {
	return api.NewClient(g.data(), g.apiAddr)
}

// call sends one request to the daemon and decodes its JSON answer into out.
func (g *globals) call(ctx context.Context, method, path string, in, out any) error {
	cl, err := g.client()
	if err != nil {
		return err
	}
	return cl.Do(ctx, method, path, in, out)
}

// emit prints v as JSON with --json, else calls human to print it for people.
func (g *globals) emit(v any, human func()) error {
	if g.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human()
	return nil
}

func printf(format string, args ...any) { fmt.Fprintf(os.Stdout, format, args...) }
