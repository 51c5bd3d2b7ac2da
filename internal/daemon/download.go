package daemon

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/raftcast/raftcast/internal/api"
	"github.com/raftcast/raftcast/transfer/coop"
)

// download runs a cooperative HTTP download through the group (issue 6), streaming progress.
func (d *Daemon) download(w http.ResponseWriter, r *http.Request) {
	var req api.Download
	if err := decodeBody(r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Usage: true})
		return
	}
	u, err := url.Parse(req.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "want an http or https URL, got " + req.URL, Usage: true})
		return
	}
	if !checkOut(w, req.Out) {
		return
	}
	g, err := d.dist.group(req.Group)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Usage: isUsage(err)})
		return
	}
	timeout := timeoutOr(req.Timeout, 30*time.Minute)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	st := newStreamer(w)
	res, err := d.coop.Download(ctx, g, coop.Request{
		URL: req.URL, Out: req.Out, SliceSize: req.SliceSize, SHA256: req.SHA256, Timeout: timeout,
	}, st.progress())
	if err != nil {
		st.fail(err)
		return
	}
	st.result(api.DownloadResult{
		Size: res.Size, Seconds: res.Seconds, Slices: res.Slices, BytesByPeer: res.BytesByPeer,
		BytesFromCache: res.BytesFromCache, BytesResumed: res.BytesResumed, SHA256: res.SHA256,
	})
}
