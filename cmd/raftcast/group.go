package main

import (
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftcast/raftcast/internal/api"
)

func newGroupCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "group",
		Short: "peer groups: create, join, leave, status, list",
		Args:  cobra.ArbitraryArgs,
		RunE: func(*cobra.Command, []string) error {
			return usagef("group needs a subcommand: create, join, leave, status or list")
		},
	}
	var secret string
	var timeout time.Duration
	var any bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "create a group with this node as its first member and leader",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var ref api.GroupRef
			if err := g.call(c.Context(), "POST", "/v1/groups", api.GroupCreate{Name: args[0], Secret: secret}, &ref); err != nil {
				return err
			}
			return g.emit(ref, func() { printf("created group %s (%s)\n", ref.Name, ref.ID) })
		},
	}
	create.Flags().StringVar(&secret, "secret", "", "admit only peers that prove they know this secret")
	join := &cobra.Command{
		Use:   "join [NAME]",
		Short: "find a group's advertisement and join it with the credential, or --any to be given one",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if (len(args) == 1) == any {
				return usagef("give a group NAME or --any")
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			req := api.GroupJoin{Any: any, Secret: secret, Timeout: timeout.Seconds()}
			if len(args) == 1 {
				req.Name = args[0]
			}
			var ref api.GroupRef
			if err := g.call(c.Context(), "POST", "/v1/groups/join", req, &ref); err != nil {
				return err
			}
			return g.emit(ref, func() { printf("joined group %s (%s), leader %s\n", ref.Name, ref.ID, ref.Leader) })
		},
	}
	join.Flags().StringVar(&secret, "secret", "", "the group's secret")
	join.Flags().BoolVar(&any, "any", false, "ask the rendezvous tracker for a group")
	join.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long finding and joining may take")
	leave := &cobra.Command{
		Use:   "leave NAME",
		Short: "leave a group cleanly",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var out map[string]string
			if err := g.call(c.Context(), "POST", "/v1/groups/leave", api.GroupLeave{Name: args[0]}, &out); err != nil {
				return err
			}
			return g.emit(out, func() { printf("left group %s\n", out["id"]) })
		},
	}
	status := &cobra.Command{
		Use:   "status NAME",
		Short: "the group's replicated view: leader, term, members",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var st api.GroupStatus
			if err := g.call(c.Context(), "GET", "/v1/groups/"+url.PathEscape(args[0]), nil, &st); err != nil {
				return err
			}
			return g.emit(st, func() {
				printf("group   %s (%s), policy %s\nleader  %s (term %d)\nself    %s (%s)\n", st.Name, st.ID, st.Policy, st.Leader, st.Term, st.Self, st.State)
				for _, m := range st.Members {
					role := "member"
					if m.Voter {
						role = "voter"
					}
					alive := "alive"
					if !m.Alive {
						alive = "down"
					}
					printf("member  %s  %-6s %s\n", m.PeerID, role, alive)
				}
				for _, id := range slices.Sorted(maps.Keys(st.Proxies)) {
					printf("proxies %s  %s\n", id, strings.Join(st.Proxies[id], " "))
				}
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "groups this node is in",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var refs []api.GroupRef
			if err := g.call(c.Context(), "GET", "/v1/groups", nil, &refs); err != nil {
				return err
			}
			return g.emit(refs, func() {
				for _, r := range refs {
					printf("%-20s %s  leader %s\n", r.Name, r.ID, r.Leader)
				}
			})
		},
	}
	c.AddCommand(create, join, leave, status, list)
	return c
}
