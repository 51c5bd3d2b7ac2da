package main

import (
	"fmt"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/internal/api"
)

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "show this node",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var st api.Status
			if err := g.call(c.Context(), "GET", "/v1/status", nil, &st); err != nil {
				return err
			}
			return g.emit(st, func() {
				printf("peer    %s (%s)\nrole    %s\nuptime  %s\n", st.PeerID, st.Name, st.Role, time.Duration(st.Uptime*float64(time.Second)).Round(time.Second))
				for _, a := range st.Addrs {
					printf("addr    %s\n", a)
				}
				for _, gr := range st.Groups {
					printf("group   %s (%s) leader %s\n", gr.Name, gr.ID, gr.Leader)
				}
			})
		},
	}
}

func newPeersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "peers",
		Short: "list connected and known peers",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var ps []api.Peer
			if err := g.call(c.Context(), "GET", "/v1/peers", nil, &ps); err != nil {
				return err
			}
			return g.emit(ps, func() {
				for _, p := range ps {
					state := "known"
					if p.Connected {
						state = "connected"
					}
					printf("%s  %-9s  %-10s %s\n", p.PeerID, state, p.Role, p.Name)
				}
			})
		},
	}
}

func newAdvertsCmd(g *globals) *cobra.Command {
	var (
		typ, name string
		remote    bool
		timeout   time.Duration
	)
	c := &cobra.Command{
		Use:   "adverts",
		Short: "list advertisements in the local cache, or across the overlay with --remote",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if typ != "" {
				if _, err := advert.ParseKind(typ); err != nil {
					return usageError{fmt.Errorf("--type: %w", err)}
				}
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			v := url.Values{}
			v.Set("type", typ)
			v.Set("name", name)
			v.Set("remote", fmt.Sprint(remote))
			v.Set("timeout", timeout.String())
			var ads []api.Advert
			if err := g.call(c.Context(), "GET", "/v1/adverts?"+v.Encode(), nil, &ads); err != nil {
				return err
			}
			return g.emit(ads, func() {
				for _, a := range ads {
					printf("%-10s %-24s %s  by %s  expires %s\n", a.Type, trunc(a.Name, 24), a.ID, a.Publisher, a.Expires.Local().Format(time.TimeOnly))
				}
			})
		},
	}
	f := c.Flags()
	f.StringVar(&typ, "type", "", "only this type: peer, group, pipe, content or rendezvous")
	f.StringVar(&name, "name", "", "only this name (glob patterns allowed)")
	f.BoolVar(&remote, "remote", false, "also ask the overlay (rendezvous indexes, DHT, peers)")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "how long a remote query may take")
	return c
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
