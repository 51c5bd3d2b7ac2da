package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/internal/api"
	"github.com/raftcast/raftcast/pipes"
)

// pipeSpec builds a pipe spec from the API's name, group and kind; a group this node is in is
// named by its ID so that every member derives the same pipe.
func (d *Daemon) pipeSpec(name, group, kind string) (pipes.PipeSpec, error) {
	if name == "" {
		return pipes.PipeSpec{}, usagef("a pipe name is required")
	}
	k := pipes.Unicast
	if kind != "" {
		var err error
		if k, err = pipes.ParseKind(kind); err != nil {
			return pipes.PipeSpec{}, usageError{err}
		}
		if k == pipes.Bidi {
			return pipes.PipeSpec{}, usagef("--kind: the command line speaks unicast or propagate pipes")
		}
	}
	if group != "" {
		if g, ok := d.groups.m.Group(group); ok {
			group = g.ID()
		}
	}
	spec, err := pipes.PipeSpec{Name: name, Kind: k, Group: group}.Normalize()
	if err != nil {
		return spec, usageError{err}
	}
	return spec, nil
}

func (d *Daemon) pipeSend(r *http.Request) (any, error) {
	var req api.PipeSend
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	spec, err := d.pipeSpec(req.Name, req.Group, req.Kind)
	if err != nil {
		return nil, err
	}
	timeout := timeoutOr(req.Timeout, 30*time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	out, err := d.pipes.Output(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	for _, m := range req.Messages {
		if err := out.Send(ctx, []byte(m)); err != nil {
			return nil, fmt.Errorf("sending on pipe %s: %w", req.Name, err)
		}
	}
	if err := out.Flush(ctx); err != nil {
		return nil, fmt.Errorf("pipe %s: %w", req.Name, err)
	}
	return api.PipeSent{Delivered: int(out.Delivered())}, nil
}

// pipeListen binds the input end of a pipe and streams each message as one JSON line until
// count messages were sent or the client goes away.
func (d *Daemon) pipeListen(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	spec, err := d.pipeSpec(q.Get("name"), q.Get("group"), q.Get("kind"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Usage: true})
		return
	}
	count := 0
	if s := q.Get("count"); s != "" {
		if count, err = strconv.Atoi(s); err != nil || count < 0 {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "count: want a whole number", Usage: true})
			return
		}
	}
	in, err := d.pipes.Listen(r.Context(), spec)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, api.Error{Error: err.Error()})
		return
	}
	defer in.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush() // the client knows the pipe is bound
	}
	enc := json.NewEncoder(w)
	for n := 0; count == 0 || n < count; n++ {
		m, err := in.Recv(r.Context())
		if err != nil {
			return
		}
		pm := api.PipeMessage{From: m.From.String(), Carrier: m.Carrier.String(), Data: string(m.Data)}
		m.Release() // Data was copied into pm: its buffer can carry a later message
		if s, ok := d.node.Cache().Get(advert.Key{Kind: advert.KindPeer, ID: m.From.String(), Publisher: m.From}); ok {
			pm.Name = s.Advert.Name
		}
		if err := enc.Encode(pm); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
}
