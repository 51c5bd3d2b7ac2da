package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// rcnet serve: an HTTP origin for the cooperative-download scenarios, local or over ssh on
// machines that have no nginx. It serves the files of -dir with Range support
// (http.FileServer), caps what it sends to each client IP at -ip-rate whatever the number of
// connections (one token bucket per IP, so a client opening 8 connections gets no more than
// one), writes its "HOST:PORT" to -ready once listening, and on SIGINT/SIGTERM or -timeout
// prints one JSON document: requests, bytes sent and bytes sent per client IP. SIGUSR1
// prints the same document so far (stopped: "running") and keeps serving.

type serveResult struct {
	Addr     string           `json:"addr"`
	Requests int64            `json:"requests"`
	Bytes    int64            `json:"bytes"`
	ByClient map[string]int64 `json:"bytes_by_client"`
	IPRate   float64          `json:"ip_rate_bits"`
	Seconds  float64          `json:"seconds"`
	Stopped  string           `json:"stopped"`
}

// origin counts and paces what the file server sends.
type origin struct {
	files  http.Handler
	ipRate float64 // bytes/s per client IP; 0 = unlimited

	mu       sync.Mutex // guards the fields below
	limiters map[string]*rate.Limiter
	byClient map[string]int64
	requests int64
	bytes    int64
}

// chunk is the most a paced write sends at once (and the token bucket's burst).
const chunk = 32 << 10

func (o *origin) limiter(ip string) *rate.Limiter {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.requests++
	if o.ipRate <= 0 {
		return nil
	}
	l, ok := o.limiters[ip]
	if !ok {
		l = rate.NewLimiter(rate.Limit(o.ipRate), chunk)
		o.limiters[ip] = l
	}
	return l
}

func (o *origin) count(ip string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.bytes += int64(n)
	o.byClient[ip] += int64(n)
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	pw := &pacedWriter{ResponseWriter: w, ctx: r.Context(), lim: o.limiter(ip), count: func(n int) { o.count(ip, n) }}
	o.files.ServeHTTP(pw, r)
}

// pacedWriter writes the body in chunks, waiting for the client IP's tokens before each.
// It hides the ResponseWriter's io.ReaderFrom, so sendfile is not used and every byte passes
// through the bucket.
type pacedWriter struct {
	http.ResponseWriter
	ctx   context.Context
	lim   *rate.Limiter
	count func(int)
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n := min(len(b)-done, chunk)
		if p.lim != nil {
			if err := p.lim.WaitN(p.ctx, n); err != nil {
				return done, err
			}
		}
		m, err := p.ResponseWriter.Write(b[done : done+n])
		done += m
		p.count(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to serve (required)")
	addr := fs.String("addr", "0.0.0.0:0", "listen address")
	ipRate := fs.String("ip-rate", "0", "cap per client IP, bits/s (e.g. 25mbit; 0: none)")
	ready := fs.String("ready", "", "write HOST:PORT here once listening")
	timeout := fs.Duration("timeout", time.Hour, "stop after this long")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("-dir is required")
	}
	if st, err := os.Stat(*dir); err != nil || !st.IsDir() {
		return fmt.Errorf("-dir %s: not a directory", *dir)
	}
	bits, err := parseRate(*ipRate)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	o := &origin{
		files: http.FileServer(http.Dir(*dir)), ipRate: bits / 8,
		limiters: map[string]*rate.Limiter{}, byClient: map[string]int64{},
	}
	srv := &http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second}
	if *ready != "" {
		if err := writeFileAtomic(*ready, ln.Addr().String()+"\n"); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	report := func(stopped string) error {
		res := serveResult{Addr: ln.Addr().String(), IPRate: bits, Stopped: stopped, ByClient: map[string]int64{}}
		o.mu.Lock()
		res.Requests, res.Bytes = o.requests, o.bytes
		for k, v := range o.byClient {
			res.ByClient[k] = v
		}
		o.mu.Unlock()
		res.Seconds = time.Since(start).Seconds()
		return printJSON(res)
	}
	stopAt := time.NewTimer(*timeout)
	defer stopAt.Stop()
	stopped := "timeout"
loop:
	for {
		select {
		case <-ctx.Done():
			stopped = "signal"
			break loop
		case <-stopAt.C:
			break loop
		case <-usr1:
			if err := report("running"); err != nil {
				return err
			}
		case err := <-errc:
			return err
		}
	}
	_ = srv.Close()
	<-errc
	return report(stopped)
}

// writeFileAtomic writes s to path through a temporary file, so a poller never reads half.
func writeFileAtomic(path, s string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// rcnet fetch: one plain HTTP GET of -url to -out (one connection, like curl), for the
// single-client baseline of a cooperative download on hosts without curl.
type fetchResult struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Status  int     `json:"status"`
}

func runFetch(args []string) error {
	fs := flag.NewFlagSet("fetch", flag.ExitOnError)
	url := fs.String("url", "", "URL to fetch (required)")
	out := fs.String("out", "", "file to write (required)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	if *url == "" || *out == "" {
		return errors.New("-url and -out are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	req, err := http.NewRequestWithContext(ctx, "GET", *url, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", *url, resp.Status)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return printJSON(fetchResult{Bytes: n, Seconds: time.Since(start).Seconds(), Status: resp.StatusCode})
}
