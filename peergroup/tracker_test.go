package peergroup

import "testing"

func TestTrackerPick(t *testing.T) {
	p := DefaultTrackerPolicy()
	cases := []struct {
		name   string
		pol    TrackerPolicy
		groups []GroupLoad
		j      Joiner
		want   string
		ok     bool
	}{
		{name: "none", pol: p, ok: false},
		{name: "all full", pol: p, groups: []GroupLoad{{ID: "a", Members: 8}, {ID: "b", Members: 9}}, ok: false},
		{name: "fewest members", pol: p, groups: []GroupLoad{{ID: "a", Members: 5}, {ID: "b", Members: 2}, {ID: "c", Members: 3}}, want: "b", ok: true},
		{name: "full skipped", pol: p, groups: []GroupLoad{{ID: "a", Members: 8}, {ID: "b", Members: 7}}, want: "b", ok: true},
		{name: "same domain on tie", pol: p, j: Joiner{Domain: "lan1"},
			groups: []GroupLoad{{ID: "a", Members: 3, Domains: []string{"lan2"}}, {ID: "b", Members: 3, Domains: []string{"lan1"}}}, want: "b", ok: true},
		{name: "fewer members beat domain", pol: p, j: Joiner{Domain: "lan1"},
			groups: []GroupLoad{{ID: "a", Members: 2, Domains: []string{"lan2"}}, {ID: "b", Members: 3, Domains: []string{"lan1"}}}, want: "a", ok: true},
		{name: "domain slack", pol: TrackerPolicy{MaxMembers: 8, DomainSlack: 1}, j: Joiner{Domain: "lan1"},
			groups: []GroupLoad{{ID: "a", Members: 2, Domains: []string{"lan2"}}, {ID: "b", Members: 3, Domains: []string{"lan1"}}}, want: "b", ok: true},
		{name: "capacity tie-break", pol: p,
			groups: []GroupLoad{{ID: "a", Members: 3, Capacity: 100}, {ID: "b", Members: 3, Capacity: 50}}, want: "b", ok: true},
		{name: "id tie-break", pol: p, groups: []GroupLoad{{ID: "z", Members: 1}, {ID: "m", Members: 1}}, want: "m", ok: true},
		{name: "no domain joiner ignores domains", pol: p,
			groups: []GroupLoad{{ID: "a", Members: 1, Domains: []string{""}}, {ID: "b", Members: 1, Capacity: 0}}, want: "a", ok: true},
		{name: "no cap", pol: TrackerPolicy{}, groups: []GroupLoad{{ID: "a", Members: 100}}, want: "a", ok: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := c.pol.Pick(c.groups, c.j)
			if got != c.want || ok != c.ok {
				t.Fatalf("Pick = %q, %v; want %q, %v", got, ok, c.want, c.ok)
			}
		})
	}
}
