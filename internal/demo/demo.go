// Package demo runs the whole raftcast story on one machine with no set-up: a rendezvous and
// a handful of node daemons on loopback in one process, driven through their local APIs like
// the CLI drives them, and a report of what happened and how fast.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/raftcast/raftcast/internal/api"
	"github.com/raftcast/raftcast/internal/daemon"
	"github.com/raftcast/raftcast/overlay"
)

// Options tune the demo.
type Options struct {
	Nodes    int   // ordinary nodes besides the rendezvous (default 5)
	FileSize int64 // bytes shared to the group (default 32 MiB)
	Logger   *slog.Logger
	Timeout  time.Duration // whole run (default 3 min)
}

// Report is what the demo measured.
type Report struct {
	Peers          int     `json:"peers"`
	DiscoveredAll  bool    `json:"discovered_all"`
	DiscoverySecs  float64 `json:"discovery_seconds"`
	AdvertsPerPeer []int   `json:"adverts_per_peer"`

	Group           string  `json:"group"`
	Leader          string  `json:"leader"`
	Members         int     `json:"members"`
	GroupSecs       float64 `json:"group_seconds"`
	ContentID       string  `json:"content_id"`
	FileSize        int64   `json:"file_size"`
	Receivers       int     `json:"receivers"`
	ReceivedOK      int     `json:"received_ok"`
	DistSecs        float64 `json:"distribution_seconds"`
	BytesPeers      int64   `json:"bytes_peers"`
	BytesSource     int64   `json:"bytes_source"`
	BytesMcast      int64   `json:"bytes_multicast"`
	DistMBps        float64 `json:"distribution_mb_per_s"`
	DownloadSecs    float64 `json:"download_seconds"`
	DownloadMembers int     `json:"download_members"`
	DownloadSpeedup float64 `json:"download_speedup_over_one_connection"`
	OriginRatio     float64 `json:"origin_bytes_per_file_byte"`
}

type node struct {
	name string
	dir  string
	cl   *api.Client
	done chan error
}

// Run runs the demo and writes its story and report to w.
func Run(ctx context.Context, w io.Writer, o Options) (*Report, error) {
	if o.Nodes <= 0 {
		o.Nodes = 5
	}
	if o.FileSize <= 0 {
		o.FileSize = 32 << 20
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	root, err := os.MkdirTemp("", "raftcast-demo")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)

	// Daemons run until stop is called; they shut down cleanly before Run returns.
	dctx, stop := context.WithCancel(context.Background())
	var nodes []*node
	defer func() {
		stop()
		for _, n := range nodes {
			select {
			case <-n.done:
			case <-time.After(15 * time.Second):
			}
		}
	}()
	start := func(name string, role overlay.Role, boot []ma.Multiaddr) (*node, error) {
		n := &node{name: name, dir: filepath.Join(root, name), done: make(chan error, 1)}
		cfg := overlay.DefaultConfig()
		cfg.Role = role
		cfg.Name = name
		cfg.MDNS = false
		cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
		cfg.Bootstrap = boot
		ready := make(chan string, 1)
		go func() {
			n.done <- daemon.Run(dctx, daemon.Config{
				DataDir: n.dir, Node: cfg, Logger: o.Logger.With("node", name),
				MulticastIfaces: []string{"none"}, // loopback has no multicast: streams carry the data
				Ready:           func(addr string) { ready <- addr },
			})
		}()
		select {
		case addr := <-ready:
			cl, err := api.NewClient(n.dir, addr)
			if err != nil {
				return nil, err
			}
			n.cl = cl
			nodes = append(nodes, n)
			return n, nil
		case err := <-n.done:
			return nil, fmt.Errorf("%s did not start: %w", name, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	fmt.Fprintf(w, "raftcast demo: a rendezvous and %d nodes on loopback, in this process\n\n", o.Nodes)
	rdv, err := start("rendezvous", overlay.RoleRendezvous, nil)
	if err != nil {
		return nil, err
	}
	var rst api.Status
	if err := rdv.cl.Do(ctx, "GET", "/v1/status", nil, &rst); err != nil {
		return nil, err
	}
	boot := []ma.Multiaddr{ma.StringCast(rst.Addrs[0])}
	for i := 1; i <= o.Nodes; i++ {
		if _, err := start(fmt.Sprintf("node%d", i), overlay.RoleNode, boot); err != nil {
			return nil, err
		}
	}
	for _, n := range nodes {
		var st api.Status
		if err := n.cl.Do(ctx, "GET", "/v1/status", nil, &st); err != nil {
			return nil, err
		}
		fmt.Fprintf(w, "  %-10s %s\n", n.name, st.Addrs[0])
	}
	rep := &Report{Peers: len(nodes)}

	if err := discovery(ctx, w, nodes, rep); err != nil {
		return rep, err
	}
	if err := group(ctx, w, nodes[1:], rep); err != nil {
		return rep, err
	}
	if err := distribution(ctx, w, root, nodes[1:], o.FileSize, rep); err != nil {
		return rep, err
	}
	if err := download(ctx, w, root, nodes[1:], o.FileSize, rep); err != nil {
		return rep, err
	}

	fmt.Fprintf(w, "\nreport\n")
	fmt.Fprintf(w, "  peers that discovered each other   %d of %d in %.2fs\n", boolInt(rep.DiscoveredAll)*rep.Peers, rep.Peers, rep.DiscoverySecs)
	fmt.Fprintf(w, "  group %-8s                     %d members, Raft leader elected, formed in %.2fs\n", rep.Group, rep.Members, rep.GroupSecs)
	fmt.Fprintf(w, "  distribution of %3d MiB            %d of %d receivers verified, %.2fs, %.0f MB/s to all\n",
		rep.FileSize>>20, rep.ReceivedOK, rep.Receivers, rep.DistSecs, rep.DistMBps)
	fmt.Fprintf(w, "  bytes by carrier                   from peers %d MiB, from the source %d MiB, multicast %d MiB\n",
		rep.BytesPeers>>20, rep.BytesSource>>20, rep.BytesMcast>>20)
	fmt.Fprintf(w, "  cooperative download of %3d MiB    %.2fs by %d members (%.1f× one connection), origin sent %.2f× the file\n",
		rep.FileSize>>20, rep.DownloadSecs, rep.DownloadMembers, rep.DownloadSpeedup, rep.OriginRatio)
	return rep, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func discovery(ctx context.Context, w io.Writer, nodes []*node, rep *Report) error {
	fmt.Fprintf(w, "\n1. discovery: each peer asks the overlay for signed peer advertisements\n")
	t0 := time.Now()
	want := len(nodes)
	for {
		rep.AdvertsPerPeer = rep.AdvertsPerPeer[:0]
		all := true
		for _, n := range nodes {
			var ads []api.Advert
			if err := n.cl.Do(ctx, "GET", "/v1/adverts?type=peer&remote=true&timeout=5s", nil, &ads); err != nil {
				return err
			}
			rep.AdvertsPerPeer = append(rep.AdvertsPerPeer, len(ads))
			all = all && len(ads) >= want
		}
		if all {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("discovery did not complete: adverts per peer %v, want %d each", rep.AdvertsPerPeer, want)
		case <-time.After(200 * time.Millisecond):
		}
	}
	rep.DiscoveredAll = true
	rep.DiscoverySecs = time.Since(t0).Seconds()
	for i, n := range nodes {
		fmt.Fprintf(w, "   %-10s sees %d peer advertisements\n", n.name, rep.AdvertsPerPeer[i])
	}
	return nil
}

func group(ctx context.Context, w io.Writer, nodes []*node, rep *Report) error {
	fmt.Fprintf(w, "\n2. peer group: %s creates group \"demo\" with a secret, the others join; Raft elects the leader\n", nodes[0].name)
	t0 := time.Now()
	var ref api.GroupRef
	if err := nodes[0].cl.Do(ctx, "POST", "/v1/groups", api.GroupCreate{Name: "demo", Secret: "demo-secret"}, &ref); err != nil {
		return err
	}
	for _, n := range nodes[1:] {
		if err := n.cl.Do(ctx, "POST", "/v1/groups/join", api.GroupJoin{Name: "demo", Secret: "demo-secret"}, &ref); err != nil {
			return fmt.Errorf("%s joining: %w", n.name, err)
		}
	}
	for {
		var st api.GroupStatus
		if err := nodes[len(nodes)-1].cl.Do(ctx, "GET", "/v1/groups/demo", nil, &st); err != nil {
			return err
		}
		if len(st.Members) == len(nodes) && st.Leader != "" {
			rep.Group, rep.Leader, rep.Members = st.Name, st.Leader, len(st.Members)
			fmt.Fprintf(w, "   %d members, leader %s, term %d\n", len(st.Members), st.Leader, st.Term)
			break
		}
		select {
		case <-ctx.Done():
			return errors.New("the group did not form")
		case <-time.After(200 * time.Millisecond):
		}
	}
	rep.GroupSecs = time.Since(t0).Seconds()
	return nil
}

func distribution(ctx context.Context, w io.Writer, root string, nodes []*node, size int64, rep *Report) error {
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	path := filepath.Join(root, "demo-file.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n3. distribution: %s shares a %d MiB file; every other member gets it and verifies it\n", nodes[0].name, size>>20)
	var sh api.Shared
	if err := nodes[0].cl.Do(ctx, "POST", "/v1/share", api.Share{Path: path}, &sh); err != nil {
		return err
	}
	rep.ContentID, rep.FileSize = sh.ContentID, sh.Size
	fmt.Fprintf(w, "   content %s, %d slices\n", sh.ContentID, sh.Slices)
	t0 := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for _, n := range nodes[1:] {
		wg.Add(1)
		go func(n *node) {
			defer wg.Done()
			out := filepath.Join(root, n.name+"-copy.bin")
			var res api.GetResult
			err := call(ctx, n.cl, "/v1/get", api.Get{Content: sh.Name, Out: out, Timeout: 120}, &res)
			mu.Lock()
			defer mu.Unlock()
			rep.Receivers++
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", n.name, err)
				}
				return
			}
			got, err := os.ReadFile(out)
			if err != nil || sha256.Sum256(got) != want {
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: the copy differs from the original", n.name)
				}
				return
			}
			rep.ReceivedOK++
			rep.BytesPeers += res.BytesPeers
			rep.BytesSource += res.BytesSource
			rep.BytesMcast += res.BytesMulticast
			fmt.Fprintf(w, "   %-8s verified in %.2fs: %d MiB from peers, %d MiB from the source\n", n.name, res.Seconds, res.BytesPeers>>20, res.BytesSource>>20)
		}(n)
	}
	wg.Wait()
	rep.DistSecs = time.Since(t0).Seconds()
	if rep.DistSecs > 0 {
		rep.DistMBps = float64(rep.FileSize*int64(rep.ReceivedOK)) / 1e6 / rep.DistSecs
	}
	return firstErr
}

// originRate caps each response of the demo's HTTP origin, as a busy server caps a client.
const originRate = 8 << 20

func download(ctx context.Context, w io.Writer, root string, nodes []*node, size int64, rep *Report) error {
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	var sent atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.ServeContent(&capped{ResponseWriter: rw, sent: &sent, start: time.Now()}, r, "big.iso", time.Unix(1700000000, 0), bytes.NewReader(data))
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/big.iso"
	req := nodes[len(nodes)-1]
	fmt.Fprintf(w, "\n4. cooperative download: %s asks the group for %s (the origin sends each connection at most %d MiB/s)\n", req.name, url, originRate>>20)
	out := filepath.Join(root, "download.iso")
	t0 := time.Now()
	var res api.DownloadResult
	if err := call(ctx, req.cl, "/v1/download", api.Download{URL: url, Out: out, Timeout: 120}, &res); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	rep.DownloadSecs = time.Since(t0).Seconds()
	got, err := os.ReadFile(out)
	if err != nil || sha256.Sum256(got) != want {
		return errors.New("download: the file differs from the origin's")
	}
	for _, b := range res.BytesByPeer {
		if b > 0 {
			rep.DownloadMembers++
		}
	}
	single := float64(size) / originRate
	rep.DownloadSpeedup = single / rep.DownloadSecs
	rep.OriginRatio = float64(sent.Load()) / float64(size)
	fmt.Fprintf(w, "   verified in %.2fs; %d members fetched ranges; one connection alone would take %.1fs\n", rep.DownloadSecs, rep.DownloadMembers, single)
	return nil
}

// capped paces a response at originRate and counts the body bytes sent.
type capped struct {
	http.ResponseWriter
	sent  *atomic.Int64
	start time.Time
	n     int64
}

func (c *capped) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		k, err := c.ResponseWriter.Write(p[:min(len(p), 64<<10)])
		total += k
		c.n += int64(k)
		c.sent.Add(int64(k))
		if err != nil {
			return total, err
		}
		p = p[k:]
		if ahead := time.Duration(float64(c.n)/originRate*float64(time.Second)) - time.Since(c.start); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	return total, nil
}

// call runs a streaming API call (get, download) and decodes its result into out.
func call(ctx context.Context, cl *api.Client, path string, in, out any) error {
	resp, err := cl.Open(ctx, "POST", path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var l api.StreamLine
		if err := dec.Decode(&l); err != nil {
			return err
		}
		if l.Error != nil {
			return errors.New(l.Error.Error)
		}
		if l.Result != nil {
			b, _ := json.Marshal(l.Result)
			return json.Unmarshal(b, out)
		}
	}
}
