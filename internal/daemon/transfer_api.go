package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/raftcast/raftcast/internal/api"
	"github.com/raftcast/raftcast/transfer"
)

func (d *Daemon) share(r *http.Request) (any, error) {
	var req api.Share
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Path == "" {
		return nil, usagef("a file path is required")
	}
	if !filepath.IsAbs(req.Path) {
		return nil, usagef("the path must be absolute (the client makes it so)")
	}
	if req.Rate < 0 {
		return nil, usagef("--rate must be positive")
	}
	name := req.Name
	if name == "" {
		name = filepath.Base(req.Path)
	}
	m, g, err := d.dist.share(r.Context(), req.Path, req.Group, name, req.Rate)
	if err != nil {
		return nil, err
	}
	return api.Shared{ContentID: m.ID().String(), Name: m.Name, Size: m.Size, Slices: len(m.Hashes), Group: g.Name()}, nil
}

// streamer writes newline-delimited JSON lines to a streaming answer.
type streamer struct {
	mu  sync.Mutex // guards w
	w   http.ResponseWriter
	enc *json.Encoder
	fl  http.Flusher
}

func newStreamer(w http.ResponseWriter) *streamer {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	return &streamer{w: w, enc: json.NewEncoder(w), fl: fl}
}

func (s *streamer) line(l api.StreamLine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.enc.Encode(l)
	if s.fl != nil {
		s.fl.Flush()
	}
}

// progressEvery bounds how often progress lines are sent.
const progressEvery = 200 * time.Millisecond

func (s *streamer) progress() func(done, size int64) {
	var mu sync.Mutex
	var last time.Time
	return func(done, size int64) {
		mu.Lock()
		now := time.Now()
		if now.Sub(last) < progressEvery && done < size {
			mu.Unlock()
			return
		}
		last = now
		mu.Unlock()
		s.line(api.StreamLine{Progress: &api.Progress{DoneBytes: done, Size: size}})
	}
}

func (s *streamer) fail(err error) {
	s.line(api.StreamLine{Error: &api.Error{Error: err.Error(), Usage: isUsage(err)}})
}

func (s *streamer) result(v any) {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	s.line(api.StreamLine{Result: m})
}

func (d *Daemon) get(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	var req api.Get
	if err := decodeBody(r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Usage: true})
		return
	}
	if req.Content == "" {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "a content ID or name is required", Usage: true})
		return
	}
	if !checkOut(w, req.Out) {
		return
	}
	timeout := timeoutOr(req.Timeout, 10*time.Minute)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	st := newStreamer(w)
	prog := st.progress()
	res, proxy, err := d.dist.get(ctx, req.Content, req.Out, req.Group, func(p transfer.Progress) { prog(p.DoneBytes, p.Size) })
	if err != nil {
		st.fail(err)
		return
	}
	st.result(api.GetResult{
		ContentID: res.ID.String(), Name: res.Name, Size: res.Size, Seconds: res.Seconds,
		BytesMulticast: res.BytesMulticast, BytesPeers: res.BytesPeers, BytesSource: res.BytesSource,
		BytesResumed: res.BytesResumed, Proxy: proxy, Started: started, Finished: time.Now(),
	})
}

func (d *Daemon) transfers(*http.Request) (any, error) {
	out := []api.Transfer{}
	for _, t := range d.engine.Transfers() {
		out = append(out, api.Transfer{
			ID: t.ID.String(), Kind: string(t.Kind), Name: t.Name, DoneBytes: t.DoneBytes,
			Size: t.Size, State: string(t.State), Error: t.Err,
		})
	}
	return out, nil
}
