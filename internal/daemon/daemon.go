// Package daemon runs a raftcast node or rendezvous node with its local API: it assembles the
// overlay node and the services above it and serves the HTTP/JSON API of package api.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/raftcast/raftcast/internal/api"
	"github.com/raftcast/raftcast/overlay"
	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/transfer"
	"github.com/raftcast/raftcast/transfer/coop"
)

// Config configures a daemon.
type Config struct {
	// DataDir is required: the API address and token files are written there.
	DataDir string
	// APIAddr is the API's listen address (default 127.0.0.1:0).
	APIAddr string
	// Node configures the overlay node; its DataDir and Logger are set from this Config.
	Node   overlay.Config
	Logger *slog.Logger
	// MulticastIfaces are the interfaces for native multicast (default: every
	// multicast-capable non-loopback interface; "none" turns native multicast off).
	MulticastIfaces []string
	// Ready, if set, is called with the API address once the daemon serves.
	Ready func(addr string)
}

// Daemon is a running node with its API.
type Daemon struct {
	cfg    Config
	log    *slog.Logger
	node   *overlay.Node
	groups *groups
	pipes  *pipes.Service
	engine *transfer.Engine
	dist   *dist
	coop   *coop.Service
	token  string
}

// Run starts the daemon and serves until ctx is cancelled, then shuts down cleanly.
func Run(ctx context.Context, cfg Config) error {
	if cfg.DataDir == "" {
		return errors.New("daemon: a data dir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = "127.0.0.1:0"
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	addrPath := filepath.Join(cfg.DataDir, api.AddrFile)
	if b, err := os.ReadFile(addrPath); err == nil {
		if c, err := net.DialTimeout("tcp", string(b), time.Second); err == nil {
			c.Close()
			return fmt.Errorf("a daemon already runs for %s (API at %s)", cfg.DataDir, b)
		}
		os.Remove(addrPath) // stale, from a daemon that did not exit cleanly
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger}
	tok, err := loadOrCreateToken(cfg.DataDir)
	if err != nil {
		return err
	}
	d.token = tok

	ncfg := cfg.Node
	ncfg.DataDir = cfg.DataDir
	ncfg.Logger = cfg.Logger
	node, err := overlay.New(ncfg)
	if err != nil {
		return err
	}
	d.node = node
	defer func() {
		if err := node.Close(); err != nil {
			d.log.Warn("closing node", "err", err)
		}
	}()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = node.Start(startCtx)
	cancel()
	if err != nil {
		return err
	}
	gctx, gcancel := context.WithCancel(context.Background())
	defer gcancel()
	if d.groups, err = newGroups(gctx, d, cfg.DataDir); err != nil {
		return err
	}
	defer func() {
		if err := d.groups.close(); err != nil {
			d.log.Warn("closing groups", "err", err)
		}
	}()

	pcfg := pipes.DefaultConfig()
	pcfg.Logger = d.log
	pcfg.TrustGossipAuthor = true // the overlay's gossipsub enforces StrictSign
	switch {
	case len(cfg.MulticastIfaces) == 1 && cfg.MulticastIfaces[0] == "none":
		pcfg.Multicast.Disabled = true
	default:
		pcfg.Multicast.Interfaces = cfg.MulticastIfaces
	}
	if d.pipes, err = pipes.New(node, pcfg); err != nil {
		return fmt.Errorf("pipes: %w", err)
	}
	defer d.pipes.Close()

	tcfg := transfer.DefaultConfig()
	tcfg.Dir = filepath.Join(cfg.DataDir, "transfer")
	if d.engine, err = transfer.New(node.Host(), tcfg, d.log); err != nil {
		return fmt.Errorf("transfer engine: %w", err)
	}
	defer d.engine.Close()
	ccfg := coop.DefaultConfig()
	ccfg.Dir = filepath.Join(cfg.DataDir, "downloads")
	hc := coop.NewHTTPClient(ccfg.OriginConns) // keep-alive, bounded dials, $HTTP(S)_PROXY like curl
	if d.coop, err = coop.New(node.Host(), d.groups.m, hc, d.log, ccfg); err != nil {
		return fmt.Errorf("cooperative download: %w", err)
	}
	defer d.coop.Close()
	dctx, dcancel := context.WithCancel(context.Background())
	d.dist = newDist(dctx, d, d.engine)
	d.dist.restoreHeld()
	defer d.dist.wait()
	defer dcancel()

	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("API listen on %s: %w", cfg.APIAddr, err)
	}
	srv := &http.Server{
		Handler:           d.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		// Long requests (pipe listeners, transfers) end when the daemon stops.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	addr := ln.Addr().String()
	if err := writeFile(addrPath, []byte(addr), 0o600); err != nil {
		srv.Close()
		return err
	}
	defer os.Remove(addrPath)
	d.log.Info("raftcast daemon ready", "role", ncfg.Role, "peer", node.ID(), "api", addr, "addrs", node.Addrs())
	if cfg.Ready != nil {
		cfg.Ready(addr)
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("API server: %w", err)
	}
	d.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.json(d.status))
	mux.HandleFunc("GET /v1/peers", d.json(d.peers))
	mux.HandleFunc("GET /v1/adverts", d.json(d.adverts))
	mux.HandleFunc("POST /v1/groups", d.json(d.groups.create))
	mux.HandleFunc("POST /v1/groups/join", d.json(d.groups.join))
	mux.HandleFunc("POST /v1/groups/leave", d.json(d.groups.leave))
	mux.HandleFunc("GET /v1/groups", d.json(d.groups.list))
	mux.HandleFunc("GET /v1/groups/{name}", d.json(d.groups.status))
	mux.HandleFunc("POST /v1/pipes/send", d.json(d.pipeSend))
	mux.HandleFunc("GET /v1/pipes/listen", d.auth(d.pipeListen))
	mux.HandleFunc("POST /v1/share", d.json(d.share))
	mux.HandleFunc("POST /v1/get", d.auth(d.get))
	mux.HandleFunc("GET /v1/transfers", d.json(d.transfers))
	mux.HandleFunc("POST /v1/download", d.auth(d.download))
	mux.HandleFunc("/", d.auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "unknown API path " + r.URL.Path, Usage: true})
	}))
	return mux
}

func loadOrCreateToken(dir string) (string, error) {
	path := filepath.Join(dir, api.TokenFile)
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return string(b), nil
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw[:])
	if err := writeFile(path, []byte(tok), 0o600); err != nil {
		return "", fmt.Errorf("writing API token: %w", err)
	}
	return tok, nil
}

func writeFile(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
