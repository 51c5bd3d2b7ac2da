// Package api is the local HTTP/JSON API between a raftcast daemon and its client commands:
// the wire types, the files that tell a client where the daemon is, and the client.
//
// The daemon listens on loopback, writes "HOST:PORT" to DIR/api once it is ready and removes
// it on clean exit. Every request must carry "Authorization: Bearer <token>", the token being
// the content of DIR/api.token (mode 0600), so only users who can read the data dir can drive
// the daemon. Errors come back as {"error": "...", "usage": bool} with a 4xx/5xx status; usage
// errors (a bad value in the request) make a client exit 2, others exit 1.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files in the data directory.
const (
	AddrFile  = "api"
	TokenFile = "api.token"
)

// Status is `raftcast status`.
type Status struct {
	PeerID string     `json:"peer_id"`
	Name   string     `json:"name"`
	Role   string     `json:"role"`
	Addrs  []string   `json:"addrs"`
	Groups []GroupRef `json:"groups"`
	Uptime float64    `json:"uptime_seconds"`
	// Rejected counts rejected input (advertisements, messages) by reason.
	Rejected map[string]uint64 `json:"rejected"`
}

// GroupRef names a group.
type GroupRef struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Leader string `json:"leader"`
}

// Peer is one row of `raftcast peers`.
type Peer struct {
	PeerID    string   `json:"peer_id"`
	Name      string   `json:"name,omitempty"`
	Role      string   `json:"role,omitempty"`
	Addrs     []string `json:"addrs"`
	Connected bool     `json:"connected"`
}

// Advert is one row of `raftcast adverts`.
type Advert struct {
	Type      string            `json:"type"`
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Publisher string            `json:"publisher"`
	Seq       uint64            `json:"seq"`
	Expires   time.Time         `json:"expires"`
	Attrs     map[string]string `json:"attrs,omitempty"`
	Addrs     []string          `json:"addrs,omitempty"`
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
	Usage bool   `json:"usage,omitempty"`
}

// RequestError is a failed request as the client sees it.
type RequestError struct {
	Msg   string
	Usage bool
}

func (e *RequestError) Error() string { return e.Msg }

// ErrNoDaemon says that no daemon runs for the data dir.
var ErrNoDaemon = errors.New("no raftcast daemon is running for this data dir (start one with `raftcast node`)")

// Client talks to one daemon.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient finds the daemon of dataDir (or at addr, when addr is not empty) and reads the
// token from dataDir.
func NewClient(dataDir, addr string) (*Client, error) {
	if addr == "" {
		b, err := os.ReadFile(filepath.Join(dataDir, AddrFile))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w: %s has no %s file", ErrNoDaemon, dataDir, AddrFile)
			}
			return nil, err
		}
		addr = strings.TrimSpace(string(b))
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, TokenFile))
	if err != nil {
		return nil, fmt.Errorf("reading the API token: %w", err)
	}
	return &Client{
		base:  "http://" + addr,
		token: strings.TrimSpace(string(tok)),
		hc:    &http.Client{Transport: &http.Transport{Proxy: nil}},
	}, nil
}

// Do sends a request with an optional JSON body and decodes the JSON response into out.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.Open(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding the daemon's answer: %w", err)
	}
	return nil
}

// Open sends a request and returns the response of a successful request for the caller to
// read (streaming endpoints); a failed request becomes a *RequestError.
func (c *Client) Open(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w (%v)", ErrNoDaemon, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("daemon answered %s", resp.Status)
		}
		return nil, &RequestError{Msg: e.Error, Usage: e.Usage}
	}
	return resp, nil
}

// GroupCreate is the body of POST /v1/groups.
type GroupCreate struct {
	Name   string `json:"name"`
	Secret string `json:"secret,omitempty"`
}

// GroupJoin is the body of POST /v1/groups/join.
type GroupJoin struct {
	Name    string  `json:"name,omitempty"`
	Any     bool    `json:"any,omitempty"`
	Secret  string  `json:"secret,omitempty"`
	Timeout float64 `json:"timeout_seconds,omitempty"`
}

// GroupLeave is the body of POST /v1/groups/leave.
type GroupLeave struct {
	Name string `json:"name"`
}

// GroupMember is one member in a group's status.
type GroupMember struct {
	PeerID string `json:"peer_id"`
	Voter  bool   `json:"voter"`
	Alive  bool   `json:"alive"`
	Domain string `json:"domain,omitempty"`
}

// GroupStatus is `raftcast group status NAME`.
type GroupStatus struct {
	ID      string        `json:"id"`
	Name    string        `json:"name"`
	Policy  string        `json:"policy"`
	Leader  string        `json:"leader"`
	Term    uint64        `json:"term"`
	State   string        `json:"state"`
	Self    string        `json:"self"`
	Members []GroupMember `json:"members"`
	// Proxies: content ID → the proxy peers recorded for it, one per multicast domain.
	Proxies map[string][]string `json:"proxies,omitempty"`
}

// PipeSend is the body of POST /v1/pipes/send.
type PipeSend struct {
	Name     string   `json:"name"`
	Group    string   `json:"group,omitempty"`
	Kind     string   `json:"kind,omitempty"`
	Messages []string `json:"messages"`
	Timeout  float64  `json:"timeout_seconds,omitempty"`
}

// PipeSent is the answer to a PipeSend.
type PipeSent struct {
	Delivered int `json:"delivered"`
}

// PipeMessage is one line of GET /v1/pipes/listen (newline-delimited JSON).
type PipeMessage struct {
	From    string `json:"from"`
	Name    string `json:"name,omitempty"`
	Carrier string `json:"carrier"`
	Data    string `json:"data"`
}

// Share is the body of POST /v1/share.
type Share struct {
	Path  string `json:"path"`
	Group string `json:"group,omitempty"`
	Name  string `json:"name,omitempty"`
	Rate  int64  `json:"rate,omitempty"` // bytes/s of the multicast pass; 0 = default
}

// Shared is the answer to a Share.
type Shared struct {
	ContentID string `json:"content_id"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	Slices    int    `json:"slices"`
	Group     string `json:"group"`
}

// Get is the body of POST /v1/get.
type Get struct {
	Content string  `json:"content"` // content ID or name
	Out     string  `json:"out"`
	Group   string  `json:"group,omitempty"`
	Timeout float64 `json:"timeout_seconds,omitempty"`
}

// GetResult is the summary of a completed get.
type GetResult struct {
	ContentID      string  `json:"content_id"`
	Name           string  `json:"name"`
	Size           int64   `json:"size"`
	Seconds        float64 `json:"seconds"`
	BytesMulticast int64   `json:"bytes_multicast"`
	BytesPeers     int64   `json:"bytes_peers"`
	BytesSource    int64   `json:"bytes_source"`
	BytesResumed   int64   `json:"bytes_resumed"`
	Proxy          bool    `json:"proxy"`
	// Started and Finished are the daemon's clock when it took the request and when the
	// file was whole and verified at its path: the gets of one distribution, on hosts with
	// synchronised clocks, span from the first Started to the last Finished.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
}

// Progress is one progress report of a running transfer.
type Progress struct {
	DoneBytes int64 `json:"done_bytes"`
	Size      int64 `json:"size"`
}

// StreamLine is one line of a streaming answer (get, download): progress reports, then
// exactly one of Result or Error.
type StreamLine struct {
	Progress *Progress      `json:"progress,omitempty"`
	Result   map[string]any `json:"result,omitempty"`
	Error    *Error         `json:"error,omitempty"`
}

// Transfer is one row of `raftcast transfers`.
type Transfer struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	DoneBytes int64  `json:"done_bytes"`
	Size      int64  `json:"size"`
	State     string `json:"state"`
	Error     string `json:"error,omitempty"`
}

// Download is the body of POST /v1/download.
type Download struct {
	URL       string  `json:"url"`
	Out       string  `json:"out"`
	Group     string  `json:"group,omitempty"`
	SliceSize int64   `json:"slice_size,omitempty"`
	SHA256    string  `json:"sha256,omitempty"`
	Timeout   float64 `json:"timeout_seconds,omitempty"`
}

// DownloadResult is the summary of a cooperative download.
type DownloadResult struct {
	Size           int64            `json:"size"`
	Seconds        float64          `json:"seconds"`
	Slices         int              `json:"slices"`
	BytesByPeer    map[string]int64 `json:"bytes_by_peer"`
	BytesFromCache int64            `json:"bytes_from_cache"`
	BytesResumed   int64            `json:"bytes_resumed"`
	SHA256         string           `json:"sha256"`
}
