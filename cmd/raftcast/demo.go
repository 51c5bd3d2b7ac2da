package main

import (
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftcast/raftcast/internal/demo"
)

func newDemoCmd(g *globals) *cobra.Command {
	var o demo.Options
	c := &cobra.Command{
		Use:   "demo",
		Short: "run the whole story on this machine: a rendezvous and nodes on loopback, discovery, groups, distribution, download",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			logger, err := g.logger(g.logLevel)
			if err != nil {
				return err
			}
			if g.logLevel == "" {
				logger = nil // quiet unless asked
			}
			o.Logger = logger
			var w io.Writer = os.Stdout
			if g.json {
				w = os.Stderr
			}
			rep, err := demo.Run(c.Context(), w, o)
			if err != nil {
				return err
			}
			if g.json {
				return g.emit(rep, nil)
			}
			return nil
		},
	}
	c.Flags().IntVar(&o.Nodes, "nodes", 5, "ordinary nodes besides the rendezvous")
	c.Flags().DurationVar(&o.Timeout, "timeout", 3*time.Minute, "bound on the whole demo")
	return c
}
