package coop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/raftcast/raftcast/internal/bincodec"
)

func newTestClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func mustOrigin(t testing.TB, conns int) *Origin {
	t.Helper()
	o, err := NewOrigin(newTestClient(t), conns, "test")
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestNewOriginRefusesDefaultClient(t *testing.T) {
	if _, err := NewOrigin(http.DefaultClient, 1, ""); err == nil {
		t.Fatal("http.DefaultClient accepted")
	}
	if _, err := NewOrigin(nil, 1, ""); err == nil {
		t.Fatal("nil client accepted")
	}
}

// serveVersion serves data with an ETag and a Last-Modified through ServeContent.
func serveVersion(data *atomic.Pointer[[]byte], headOK bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && !headOK {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		d := *data.Load()
		w.Header().Set("ETag", fmt.Sprintf("\"%x\"", d[:8]))
		http.ServeContent(w, r, "", time.Unix(1700000000, 0), bytes.NewReader(d))
	}
}

func TestProbeAndRangeFetch(t *testing.T) {
	data := randomData(t, 100_000)
	var cur atomic.Pointer[[]byte]
	cur.Store(&data)
	for _, headOK := range []bool{true, false} {
		t.Run(fmt.Sprintf("head=%v", headOK), func(t *testing.T) {
			srv := httptest.NewServer(serveVersion(&cur, headOK))
			defer srv.Close()
			o := mustOrigin(t, 2)
			ctx := ctxT(t, 10*time.Second)
			r, err := o.Probe(ctx, srv.URL+"/x")
			if err != nil {
				t.Fatal(err)
			}
			if r.Size != int64(len(data)) || !r.Ranges || r.ETag == "" || r.LastModified == "" || r.StrongETag() == "" {
				t.Fatalf("probe %+v", r)
			}
			b, err := o.Open(ctx, r, 1000, 5000)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(b)
			b.Close()
			if err != nil || b.Start != 1000 || b.Whole || !bytes.Equal(got, data[1000:6000]) {
				t.Fatalf("range: err %v start %d whole %v, %d bytes", err, b.Start, b.Whole, len(got))
			}
		})
	}
}

func TestOpenDetectsChange(t *testing.T) {
	v1, v2 := randomData(t, 50_000), randomData(t, 50_000)
	var cur atomic.Pointer[[]byte]
	cur.Store(&v1)
	srv := httptest.NewServer(serveVersion(&cur, true))
	defer srv.Close()
	o := mustOrigin(t, 2)
	ctx := ctxT(t, 10*time.Second)
	r, err := o.Probe(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cur.Store(&v2) // ServeContent answers the stale If-Range with the whole new version (200)
	if _, err := o.Open(ctx, r, 10, 100); !errors.Is(err, ErrChanged) {
		t.Fatalf("err %v, want ErrChanged", err)
	}
	// Only Last-Modified as validator (a weak ETag is useless for If-Range).
	r2 := r
	r2.ETag = "W/" + r.ETag
	if r2.ifRange() != r.LastModified || r2.Validator() != "lm:"+r.LastModified {
		t.Fatalf("weak etag: if-range %q validator %q", r2.ifRange(), r2.Validator())
	}
	// A shrunk resource: 416 (the range is past the end) → changed.
	short := v2[:5]
	cur.Store(&short)
	if _, err := o.Open(ctx, Resource{URL: srv.URL, Size: 50_000, Ranges: true}, 40_000, 100); !errors.Is(err, ErrChanged) {
		t.Fatalf("shrunk: err %v, want ErrChanged", err)
	}
}

func TestOpenOriginErrors(t *testing.T) {
	var mode atomic.Int32
	data := randomData(t, 10_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case 0:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 1: // claims the range, sends half of it
			w.Header().Set("Content-Range", "bytes 0-999/10000")
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:500])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case 2: // answers another range than asked
			w.Header().Set("Content-Range", "bytes 5-1004/10000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[5:1005])
		case 3:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	o := mustOrigin(t, 1)
	ctx := ctxT(t, 10*time.Second)
	r := Resource{URL: srv.URL, Size: 10_000, Ranges: true}
	if _, err := o.Open(ctx, r, 0, 1000); !errors.Is(err, ErrOrigin) {
		t.Fatalf("503: err %v", err)
	}
	mode.Store(1)
	b, err := o.Open(ctx, r, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(b); !errors.Is(err, ErrOrigin) {
		t.Fatalf("truncated: err %v", err)
	}
	b.Close()
	mode.Store(2)
	if _, err := o.Open(ctx, r, 0, 1000); !errors.Is(err, ErrOrigin) {
		t.Fatalf("wrong range: err %v", err)
	}
	mode.Store(3)
	if _, err := o.Probe(ctx, srv.URL); err == nil || errors.Is(err, ErrOrigin) {
		t.Fatalf("404: err %v (want a plain error)", err)
	}
}

func TestOriginIgnoringRange(t *testing.T) {
	data := randomData(t, 30_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"x"`)
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if r.Method != http.MethodHead {
			w.Write(data)
		}
	}))
	defer srv.Close()
	o := mustOrigin(t, 1)
	ctx := ctxT(t, 10*time.Second)
	r, err := o.Probe(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ranges || r.Size != int64(len(data)) {
		t.Fatalf("probe %+v", r)
	}
	b, err := o.Open(ctx, Resource{URL: srv.URL, Size: r.Size, ETag: r.ETag, Ranges: true}, 100, 200)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(b)
	b.Close()
	if !b.Whole || b.Start != 0 || !bytes.Equal(got, data) {
		t.Fatalf("whole %v start %d len %d", b.Whole, b.Start, len(got))
	}
}

func TestProbeNoSize(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush() // chunked, no Content-Length, no ranges
		w.Write([]byte("stream"))
	}))
	defer srv.Close()
	if _, err := mustOrigin(t, 1).Probe(ctxT(t, 10*time.Second), srv.URL); !errors.Is(err, ErrNoSize) {
		t.Fatalf("err %v, want ErrNoSize", err)
	}
}

func TestOriginConnectionCap(t *testing.T) {
	data := randomData(t, 10_000)
	var cur atomic.Pointer[[]byte]
	cur.Store(&data)
	srv := httptest.NewServer(serveVersion(&cur, true))
	defer srv.Close()
	o := mustOrigin(t, 1)
	r, err := o.Probe(ctxT(t, 10*time.Second), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := o.Open(ctxT(t, 10*time.Second), r, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := o.Open(ctx, r, 10, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second request with the only slot taken: err %v", err)
	}
	b.Close()
	b, err = o.Open(ctxT(t, 10*time.Second), r, 10, 10)
	if err != nil {
		t.Fatalf("slot not given back: %v", err)
	}
	b.Close()
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in               string
		first, last, tot int64
		ok               bool
	}{
		{"bytes 0-0/10", 0, 0, 10, true},
		{"bytes 5-9/10", 5, 9, 10, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes */0", -1, -1, 0, true},
		{"bytes 5-10/10", 0, 0, 0, false},
		{"bytes 9-5/10", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"bytes x-1/2", 0, 0, 0, false},
	} {
		f, l, n, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (f != tc.first || l != tc.last || n != tc.tot)) {
			t.Errorf("%q: %d %d %d %v", tc.in, f, l, n, err)
		}
	}
}

func TestWireRoundTrip(t *testing.T) {
	ps := testPeers(t, 2)
	msgs := []struct {
		enc interface{ encode(*bincodec.Encoder) }
		dec func(*bincodec.Decoder) any
	}{
		{&startRequest{GroupID: "g", URL: "http://x/y", SliceSize: 1 << 20}, func(d *bincodec.Decoder) any { var m startRequest; m.decode(d); return &m }},
		{&startAnswer{TaskID: "t1", Size: 5, SliceSize: 4096, ETag: `"e"`, LastModified: "lm", Ranges: true, Resumed: true}, func(d *bincodec.Decoder) any { var m startAnswer; m.decode(d); return &m }},
		{&rearrangeRequest{GroupID: "g", TaskID: "t", Slices: []uint32{1, 5, 900000}, Exclude: ps[:1], Avoid: ps[1:], NoRanges: true}, func(d *bincodec.Decoder) any { var m rearrangeRequest; m.decode(d); return &m }},
		{&haveRequest{Key: "kabc", Slices: 77}, func(d *bincodec.Decoder) any { var m haveRequest; m.decode(d); return &m }},
		{&haveAnswer{Bitmap: []byte{1, 2, 3}}, func(d *bincodec.Decoder) any { var m haveAnswer; m.decode(d); return &m }},
		{&notice{GroupID: "g", TaskID: "t", Code: noticeChanged, Detail: "d"}, func(d *bincodec.Decoder) any { var m notice; m.decode(d); return &m }},
		{&errorMsg{Code: codeNotLeader, Msg: "m", Leader: ps[0]}, func(d *bincodec.Decoder) any { var m errorMsg; m.decode(d); return &m }},
		{&pushHeader{GroupID: "g", TaskID: "t"}, func(d *bincodec.Decoder) any { var m pushHeader; m.decode(d); return &m }},
	}
	for _, m := range msgs {
		b := bincodec.Encode(m.enc.encode)
		d := bincodec.NewDecoder(b, ErrBadRequest)
		got := m.dec(&d)
		if err := d.Finish(); err != nil {
			t.Fatalf("%T: %v", m.enc, err)
		}
		if !reflect.DeepEqual(got, m.enc) {
			t.Fatalf("%T: round trip %+v != %+v", m.enc, got, m.enc)
		}
		// Every truncation fails cleanly.
		for n := range len(b) {
			d := bincodec.NewDecoder(b[:n], ErrBadRequest)
			m.dec(&d)
			if d.Finish() == nil {
				t.Fatalf("%T truncated to %d bytes decoded", m.enc, n)
			}
		}
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	if err := writeFrame(&buf, msgAck, []byte{7}); err != nil {
		t.Fatal(err)
	}
	em := &errorMsg{Code: codeChanged, Msg: "gone"}
	if err := writeFrame(&buf, msgError, bincodec.Encode(em.encode)); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{1}, 10_000)
	if err := writeFrame(&buf, msgSlice, big); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(&buf)
	if err := expectFrame(r, 100, msgAck, func(d *bincodec.Decoder) { d.U8() }); err != nil {
		t.Fatal(err)
	}
	if err := expectFrame(r, 100, msgOK, nil); !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("error frame: %v", err)
	}
	if _, _, err := readFrame(r, 100); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("oversized frame: %v", err)
	}
	// A slice frame written without copying reads back as one frame.
	var sb bytes.Buffer
	payload := randomData(t, 3000)
	if err := writeSliceFrame(&sb, 300, flagFromOrigin, payload); err != nil {
		t.Fatal(err)
	}
	typ, body, err := readFrame(bufio.NewReader(&sb), 4000)
	if err != nil || typ != msgSlice {
		t.Fatalf("slice frame: %d %v", typ, err)
	}
	d := bincodec.NewDecoder(body, ErrBadRequest)
	if idx, fl, rest := d.Uvarint(), d.U8(), d.Rest(); idx != 300 || fl != flagFromOrigin || !bytes.Equal(rest, payload) {
		t.Fatalf("slice frame decoded as %d %d (%d bytes)", idx, fl, len(rest))
	}
	// Errors map to codes and back.
	for code, sentinel := range codeErrs {
		if got := newErrorMsg(fmt.Errorf("x: %w", sentinel)).Code; got != code {
			t.Errorf("%v → code %d, want %d", sentinel, got, code)
		}
	}
	if (&errorMsg{Code: 200}).err() == nil {
		t.Fatal("unknown code gave no error")
	}
}

// TestHTTPClientRecvBuf: the connections NewHTTPClient opens have a receive buffer of
// OriginRecvBuf (or the kernel's cap, net.core.rmem_max), not the autotuned default.
func TestHTTPClientRecvBuf(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer srv.Close()
	c := NewHTTPClient(2)
	defer c.CloseIdleConnections()
	var rcvbuf int
	var serr error
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		sc, ok := info.Conn.(syscall.Conn)
		if !ok {
			serr = fmt.Errorf("%T is not a syscall.Conn", info.Conn)
			return
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			serr = err
			return
		}
		_ = rc.Control(func(fd uintptr) {
			rcvbuf, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		})
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctxT(t, 10*time.Second), trace), http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if serr != nil {
		t.Fatal(serr)
	}
	want := OriginRecvBuf
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err == nil {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && max < want {
			want = max
		}
	}
	// Linux reports twice the value set (its bookkeeping share).
	if rcvbuf < 2*want {
		t.Fatalf("SO_RCVBUF %d, want at least %d (2 x %d)", rcvbuf, 2*want, want)
	}
}
