package daemon

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/internal/api"
)

func (d *Daemon) status(*http.Request) (any, error) {
	n := d.node
	st := api.Status{
		PeerID: n.ID().String(),
		Name:   n.Name(),
		Role:   string(n.Role()),
		Groups: []api.GroupRef{},
	}
	for _, g := range d.groups.m.Groups() {
		st.Groups = append(st.Groups, groupRef(g))
	}
	for _, a := range n.Addrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	stats := n.Stats()
	st.Uptime = stats.Uptime.Seconds()
	st.Rejected = map[string]uint64{}
	for k, v := range stats.Cache.Rejected {
		st.Rejected["advert_"+k] += v
	}
	for k, v := range stats.Rejected {
		st.Rejected[k] += v
	}
	return st, nil
}

func (d *Daemon) peers(*http.Request) (any, error) {
	out := []api.Peer{}
	for _, p := range d.node.Peers() {
		addrs := p.Addrs
		if addrs == nil {
			addrs = []string{}
		}
		out = append(out, api.Peer{PeerID: p.ID.String(), Name: p.Name, Role: p.Role, Addrs: addrs, Connected: p.Connected})
	}
	return out, nil
}

func (d *Daemon) adverts(r *http.Request) (any, error) {
	v := r.URL.Query()
	var q advert.Query
	if t := v.Get("type"); t != "" {
		k, err := advert.ParseKind(t)
		if err != nil {
			return nil, usageError{err}
		}
		q.Kind = k
	}
	q.Name = v.Get("name")
	remote := false
	if s := v.Get("remote"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, usagef("remote: %v", err)
		}
		remote = b
	}
	timeout := 10 * time.Second
	if s := v.Get("timeout"); s != "" {
		t, err := time.ParseDuration(s)
		if err != nil || t <= 0 {
			return nil, usagef("timeout: want a positive duration like 5s, got %q", s)
		}
		timeout = t
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res, err := d.node.Discover(ctx, q, remote)
	if err != nil {
		return nil, usageError{err}
	}
	out := make([]api.Advert, 0, len(res))
	for _, s := range res {
		out = append(out, toAPIAdvert(s.Advert))
	}
	return out, nil
}

func toAPIAdvert(a *advert.Advert) api.Advert {
	out := api.Advert{
		Type: a.Kind.String(), ID: a.ID, Name: a.Name, Publisher: a.Publisher.String(),
		Seq: a.Seq, Expires: a.Expires.UTC(), Attrs: a.Attrs,
	}
	for _, m := range a.Addrs {
		out.Addrs = append(out.Addrs, m.String())
	}
	return out
}
