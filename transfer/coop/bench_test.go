package coop

import (
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkSpeedup measures a K-member group's cooperative download against a single client
// fetching the whole file alone, from an origin that caps every client at the same rate
// (like a per-IP cap). Reported: speedup (single time / group time, in the same run) and
// origin bytes per file byte for the group download.
//
//	go test -run '^$' -bench Speedup -benchtime 1x ./transfer/coop
func BenchmarkSpeedup(b *testing.B) {
	for _, k := range []int{4, 8} {
		b.Run(fmt.Sprintf("K=%d", k), func(b *testing.B) { benchSpeedup(b, k) })
	}
}

func benchSpeedup(b *testing.B, k int) {
	const size = 64 << 20
	const clientRate = 8 << 20 // bytes/s per client (64 Mbit/s)
	id, nodes := newGroup(b, k, func(c *Config) { c.SliceSize = 1 << 20 })
	data := randomData(b, size)
	o := newTestOrigin(b, data, func(o *testOrigin) { o.clientRate = clientRate })
	li := leaderOf(b, id, nodes)
	req := nodes[(li+1)%k]
	b.SetBytes(size)
	b.ResetTimer()
	var single, group time.Duration
	var originBytes int64
	for i := range b.N {
		url := o.url(fmt.Sprintf("f%d", i))

		// One client alone, as curl would: one request for the whole file.
		t0 := time.Now()
		orig := req.svc.Origin()
		r, err := orig.Probe(ctxT(b, time.Minute), url)
		if err != nil {
			b.Fatal(err)
		}
		body, err := orig.Open(ctxT(b, time.Minute), r, 0, r.Size)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, body); err != nil || n != size {
			b.Fatal(n, err)
		}
		body.Close()
		single += time.Since(t0)

		before := o.body.Load()
		t0 = time.Now()
		out := filepath.Join(b.TempDir(), "out")
		if _, err := req.svc.Download(ctxT(b, 2*time.Minute), req.group(b, id), Request{URL: url + "?coop", Out: out}, nil); err != nil {
			b.Fatal(err)
		}
		group += time.Since(t0)
		originBytes += o.body.Load() - before
	}
	b.ReportMetric(single.Seconds()/group.Seconds(), "speedup")
	b.ReportMetric(float64(originBytes)/float64(int64(b.N)*size), "origin/size")
	b.ReportMetric(group.Seconds()/float64(b.N), "s/download")
}
