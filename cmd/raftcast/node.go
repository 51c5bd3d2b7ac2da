package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/raftcast/raftcast/internal/daemon"
	"github.com/raftcast/raftcast/overlay"
)

// newNodeCmd builds `raftcast node` and `raftcast rendezvous`.
func newNodeCmd(g *globals, use string) *cobra.Command {
	var (
		listen, bootstrap, ifaces []string
		name, cpuProfile          string
		mdns                      bool
	)
	short := "run a raftcast node in the foreground"
	if use == "rendezvous" {
		short = "run a rendezvous node (bootstrap, DHT server, relay, advert index, tracker) in the foreground"
	}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir := g.data()
			fc, err := loadFileConfig(dir)
			if err != nil {
				return err
			}
			l := layered{flags: c.Flags()}
			cfg := overlay.DefaultConfig()
			if use == "rendezvous" {
				cfg.Role = overlay.RoleRendezvous
			}
			for _, s := range l.strings("listen", "RAFTCAST_LISTEN", fc.Listen, listen) {
				m, err := ma.NewMultiaddr(s)
				if err != nil {
					return usagef("--listen %q: %v", s, err)
				}
				cfg.ListenAddrs = append(cfg.ListenAddrs, m)
			}
			for _, s := range l.strings("bootstrap", "RAFTCAST_BOOTSTRAP", fc.Bootstrap, bootstrap) {
				m, err := ma.NewMultiaddr(s)
				if err != nil {
					return usagef("--bootstrap %q: %v", s, err)
				}
				cfg.Bootstrap = append(cfg.Bootstrap, m)
			}
			cfg.Name = l.str("name", "RAFTCAST_NAME", fc.Name, name)
			if cfg.MDNS, err = l.boolean("mdns", "RAFTCAST_MDNS", fc.MDNS, mdns); err != nil {
				return err
			}
			mcIfaces := l.strings("multicast-iface", "RAFTCAST_MULTICAST_IFACE", fc.MulticastIface, ifaces)
			apiAddr := l.str("api", "RAFTCAST_API", fc.API, g.apiAddr)
			logger, err := g.logger(l.str("log-level", "RAFTCAST_LOG_LEVEL", fc.LogLevel, g.logLevel))
			if err != nil {
				return err
			}
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			err = daemon.Run(c.Context(), daemon.Config{
				DataDir: dir,
				APIAddr: apiAddr,
				Node:    cfg,
				Logger:  logger,

				MulticastIfaces: mcIfaces,
			})
			if err != nil {
				return fmt.Errorf("%s: %w", use, err)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&listen, "listen", nil, "listen multiaddr (repeatable; default TCP and QUIC on all interfaces, free ports)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "bootstrap/rendezvous peer, a full multiaddr with /p2p/ (repeatable)")
	f.StringVar(&name, "name", "", "human name published in this node's peer advertisement")
	f.BoolVar(&mdns, "mdns", true, "discover peers on the LAN with mDNS")
	f.StringArrayVar(&ifaces, "multicast-iface", nil, "interface for native multicast (repeatable; default every multicast-capable interface)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) of the node's whole run to this file")
	return c
}

func newIDCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "print this data dir's peer ID, creating the identity if missing",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			id, err := overlay.PeerIDOf(g.data())
			if err != nil {
				return err
			}
			return g.emit(map[string]string{"peer_id": id.String()}, func() { printf("%s\n", id) })
		},
	}
}

// startCPUProfile profiles the process's CPU into path until the returned stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "raftcast: --cpuprofile: "+err.Error())
		}
	}, nil
}
