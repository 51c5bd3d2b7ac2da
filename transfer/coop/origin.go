package coop

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Resource is one version of an HTTP resource as its origin describes it.
type Resource struct {
	URL          string
	Size         int64
	ETag         string // as the origin sent it (quoted; "W/" prefix when weak); "" when none
	LastModified string // as the origin sent it; "" when none
	Ranges       bool   // the origin answers byte ranges with 206
}

// StrongETag returns the ETag if it is a strong one (usable in If-Range), else "".
func (r Resource) StrongETag() string {
	if r.ETag == "" || strings.HasPrefix(r.ETag, "W/") {
		return ""
	}
	return r.ETag
}

// Validator returns what pins this version: the strong ETag, else Last-Modified, else "".
// Slices cached under one validator are never mixed with another's.
func (r Resource) Validator() string {
	if e := r.StrongETag(); e != "" {
		return "etag:" + e
	}
	if r.LastModified != "" {
		return "lm:" + r.LastModified
	}
	return ""
}

// ifRange returns the If-Range value for this version ("" when it has no validator).
func (r Resource) ifRange() string {
	if e := r.StrongETag(); e != "" {
		return e
	}
	return r.LastModified
}

// sameVersion reports whether a response's validators are those of r. A response that
// carries no validator at all agrees when r has none either.
func (r Resource) sameVersion(h http.Header) bool {
	etag, lm := h.Get("ETag"), h.Get("Last-Modified")
	if r.ETag != "" || etag != "" {
		if etag != r.ETag {
			return false
		}
	}
	if r.LastModified != "" && lm != "" && lm != r.LastModified {
		return false
	}
	return true
}

// Origin fetches from HTTP origins with a handed-in client, at most conns requests at once
// per origin (scheme, host and port). It never uses http.DefaultClient.
type Origin struct {
	client *http.Client
	conns  int
	ua     string

	mu   sync.Mutex               // guards sems
	sems map[string]chan struct{} // per origin: a slot per request in progress

	body atomic.Int64 // body bytes read from origins
}

// NewOrigin returns an Origin using client with at most conns concurrent requests per origin.
func NewOrigin(client *http.Client, conns int, userAgent string) (*Origin, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: an http.Client is required", ErrBadRequest)
	}
	if client == http.DefaultClient {
		return nil, fmt.Errorf("%w: pass a client of your own, not http.DefaultClient", ErrBadRequest)
	}
	if conns < 1 {
		return nil, fmt.Errorf("%w: conns must be at least 1", ErrBadRequest)
	}
	return &Origin{client: client, conns: conns, ua: userAgent, sems: make(map[string]chan struct{})}, nil
}

// OriginRecvBuf is the receive buffer (SO_RCVBUF, capped by the kernel's net.core.rmem_max)
// of a connection NewHTTPClient opens. An origin that caps each client IP paces the data, so
// the kernel's receive-buffer autotuning, which grows the buffer with what the reader takes
// per round trip, keeps it near its initial 128 KiB: 50 ms of a 20 Mbit/s cap. A member
// starved of the CPU for longer (a busy machine) closes the window, the origin idles, and
// the paced rate cannot catch up afterwards. 2 MiB (the kernel doubles it for its
// bookkeeping) lets the kernel take the origin's data for most of a second while the member
// does not run.
const OriginRecvBuf = 2 << 20

// NewHTTPClient returns a client suited to range downloads: keep-alive with up to conns idle
// connections per host, receive buffers of OriginRecvBuf, proxies from the environment,
// dial/TLS/header timeouts, no overall timeout (bodies are long; requests are bounded by
// their context).
func NewHTTPClient(conns int) *http.Client {
	dialer := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second, Control: setRecvBuf}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   max(conns, 2),
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr}
}

// setRecvBuf sets a TCP socket's receive buffer to OriginRecvBuf before it connects (the
// window scale is fixed by the SYN); failing to is not fatal (the kernel's default stays).
func setRecvBuf(network, _ string, c syscall.RawConn) error {
	if !strings.HasPrefix(network, "tcp") {
		return nil
	}
	return c.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, OriginRecvBuf)
	})
}

// BodyBytes returns the body bytes read from origins so far.
func (o *Origin) BodyBytes() int64 { return o.body.Load() }

func originKey(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// acquire takes a request slot for u's origin.
func (o *Origin) acquire(ctx context.Context, u *url.URL) (func(), error) {
	k := originKey(u)
	o.mu.Lock()
	sem := o.sems[k]
	if sem == nil {
		sem = make(chan struct{}, o.conns)
		o.sems[k] = sem
	}
	o.mu.Unlock()
	select {
	case sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-sem }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ParseURL checks that raw is an absolute http or https URL.
func ParseURL(raw string) (*url.URL, error) {
	if len(raw) > maxURLLen {
		return nil, fmt.Errorf("%w: URL longer than %d bytes", ErrBadRequest, maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: %q is not an http or https URL", ErrBadRequest, raw)
	}
	return u, nil
}

func (o *Origin) newRequest(ctx context.Context, method, raw string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, raw, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	req.Header.Set("Accept-Encoding", "identity") // ranges of the identity encoding only
	if o.ua != "" {
		req.Header.Set("User-Agent", o.ua)
	}
	return req, nil
}

// statusErr maps an unexpected status to an error: 5xx and 429 are ErrOrigin (another try or
// another member may succeed); anything else is a plain error naming the status.
func statusErr(resp *http.Response) error {
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		return fmt.Errorf("%w: %s answered %s", ErrOrigin, resp.Request.URL.Host, resp.Status)
	}
	return fmt.Errorf("coop: %s answered %s", resp.Request.URL.Host, resp.Status)
}

// netErr wraps a transport error as ErrOrigin unless the context ended.
func netErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %v", ErrOrigin, err)
}

// Probe learns the resource's size, validators and range support: a HEAD first; when HEAD
// fails, gives no size or does not advertise "Accept-Ranges: bytes", a GET of bytes 0-0
// (206 → ranges; 200 → the origin ignores Range).
func (o *Origin) Probe(ctx context.Context, raw string) (Resource, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return Resource{}, err
	}
	release, err := o.acquire(ctx, u)
	if err != nil {
		return Resource{}, err
	}
	defer release()
	r := Resource{URL: raw, Size: -1}

	req, err := o.newRequest(ctx, http.MethodHead, raw)
	if err != nil {
		return Resource{}, err
	}
	if resp, err := o.client.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			r.Size = resp.ContentLength
			r.ETag, r.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
			if r.Size >= 0 && strings.EqualFold(strings.TrimSpace(resp.Header.Get("Accept-Ranges")), "bytes") {
				r.Ranges = true
				return r, nil
			}
		} else if resp.StatusCode >= 400 && resp.StatusCode < 500 &&
			resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotImplemented &&
			resp.StatusCode != http.StatusForbidden {
			return Resource{}, statusErr(resp) // 404 and the like: GET will not do better
		}
	} else if ctx.Err() != nil {
		return Resource{}, ctx.Err()
	}

	req, err = o.newRequest(ctx, http.MethodGet, raw)
	if err != nil {
		return Resource{}, err
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := o.client.Do(req)
	if err != nil {
		return Resource{}, netErr(ctx, err)
	}
	defer resp.Body.Close() // a 200 body is not read: closing drops that connection
	switch resp.StatusCode {
	case http.StatusPartialContent:
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || total < 0 {
			return Resource{}, fmt.Errorf("%w: probe: Content-Range %q", ErrNoSize, resp.Header.Get("Content-Range"))
		}
		n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 2))
		o.body.Add(n)
		r.Size, r.Ranges = total, true
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			r.Size = resp.ContentLength
		}
		r.Ranges = false
	case http.StatusRequestedRangeNotSatisfiable: // an empty resource
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || total != 0 {
			return Resource{}, fmt.Errorf("%w: probe: 416 with Content-Range %q", ErrNoSize, resp.Header.Get("Content-Range"))
		}
		r.Size, r.Ranges = 0, true
	default:
		return Resource{}, statusErr(resp)
	}
	r.ETag, r.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if r.Size < 0 {
		return Resource{}, fmt.Errorf("%w (%s)", ErrNoSize, u.Host)
	}
	return r, nil
}

// parseContentRange parses "bytes first-last/total" (total may be "*": -1) or "bytes */total"
// (first = last = -1).
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("%w: Content-Range %q", ErrOrigin, s)
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, bad
		}
	}
	if rng == "*" {
		return -1, -1, total, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first || (total >= 0 && last >= total) {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// Body is an origin response body positioned at Start, the absolute offset of its first byte.
type Body struct {
	io.Reader
	// Start is off for a 206 answer, 0 when the origin ignored Range and sent the whole
	// resource (Whole).
	Start int64
	Whole bool
	close func() error
}

// Close closes the body and gives back the request slot.
func (b *Body) Close() error { return b.close() }

// countingReader counts bytes and turns a short body into ErrOrigin.
type countingReader struct {
	r    io.Reader
	left int64
	n    *atomic.Int64
	ctx  context.Context
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	c.n.Add(int64(n))
	switch {
	case err == io.EOF && c.left > 0:
		return n, fmt.Errorf("%w: body ended %d bytes early", ErrOrigin, c.left)
	case err != nil && err != io.EOF:
		return n, netErr(c.ctx, err)
	}
	return n, err
}

// Open requests bytes [off, off+n) of r, with Range and (when r has a validator) If-Range, so
// every byte comes from r's version. The answer is checked: a 206 must carry exactly the
// range asked and r's size and validators; a 200 means either the version changed
// (validators differ: ErrChanged) or the origin ignores Range (validators agree: the body
// is the whole resource, Whole is set); 412 and 416 mean the version changed. The caller
// reads the body and closes it. It holds one of the origin's request slots until closed.
func (o *Origin) Open(ctx context.Context, r Resource, off, n int64) (*Body, error) {
	if off < 0 || n <= 0 || off+n > r.Size {
		return nil, fmt.Errorf("%w: range %d+%d of a %d-byte resource", ErrBadRequest, off, n, r.Size)
	}
	u, err := ParseURL(r.URL)
	if err != nil {
		return nil, err
	}
	release, err := o.acquire(ctx, u)
	if err != nil {
		return nil, err
	}
	req, err := o.newRequest(ctx, http.MethodGet, r.URL)
	if err != nil {
		release()
		return nil, err
	}
	whole := off == 0 && n == r.Size
	if r.Ranges || !whole {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
		if ir := r.ifRange(); ir != "" {
			req.Header.Set("If-Range", ir)
		}
	}
	resp, err := o.client.Do(req)
	if err != nil {
		release()
		return nil, netErr(ctx, err)
	}
	fail := func(err error) (*Body, error) {
		resp.Body.Close()
		release()
		return nil, err
	}
	var start, length int64
	switch resp.StatusCode {
	case http.StatusPartialContent:
		first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fail(err)
		}
		if total >= 0 && total != r.Size {
			return fail(fmt.Errorf("%w: size %d, was %d", ErrChanged, total, r.Size))
		}
		if !r.sameVersion(resp.Header) {
			return fail(fmt.Errorf("%w: validators %q %q, were %q %q", ErrChanged,
				resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), r.ETag, r.LastModified))
		}
		if first != off || last != off+n-1 {
			return fail(fmt.Errorf("%w: asked bytes %d-%d, got %d-%d", ErrOrigin, off, off+n-1, first, last))
		}
		start, length = off, n
	case http.StatusOK:
		if !r.sameVersion(resp.Header) || (resp.ContentLength >= 0 && resp.ContentLength != r.Size) {
			return fail(fmt.Errorf("%w: a full answer to a range request, validators %q %q size %d (were %q %q size %d)", ErrChanged,
				resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), resp.ContentLength, r.ETag, r.LastModified, r.Size))
		}
		start, length, whole = 0, r.Size, true
	case http.StatusPreconditionFailed, http.StatusRequestedRangeNotSatisfiable:
		return fail(fmt.Errorf("%w: origin answered %s", ErrChanged, resp.Status))
	default:
		return fail(statusErr(resp))
	}
	var once sync.Once
	var cerr error
	return &Body{
		Reader: &countingReader{r: resp.Body, left: length, n: &o.body, ctx: ctx},
		Start:  start,
		Whole:  whole && resp.StatusCode == http.StatusOK,
		close: func() error {
			once.Do(func() {
				cerr = resp.Body.Close()
				release()
			})
			return cerr
		},
	}, nil
}
