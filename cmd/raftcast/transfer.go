package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/raftcast/raftcast/internal/api"
)

// parseSize parses sizes like 64MiB, 1GiB, 500KB or plain bytes.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 64MiB, 1GiB or bytes)", s)
	}
	return int64(f * float64(mult)), nil
}

// parseRate parses a rate: a size per second (12MiB, 12.5MB) or bits per second with a bit
// suffix (100Mbit, 1Gbit).
func parseRate(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"Gbit", 1e9 / 8}, {"Mbit", 1e6 / 8}, {"Kbit", 1e3 / 8}} {
		if strings.HasSuffix(s, u.suffix) {
			f, err := strconv.ParseFloat(strings.TrimSuffix(s, u.suffix), 64)
			if err != nil || f <= 0 {
				return 0, fmt.Errorf("invalid rate %q", s)
			}
			return int64(f * u.mult), nil
		}
	}
	return parseSize(strings.TrimSuffix(s, "/s"))
}

func newShareCmd(g *globals) *cobra.Command {
	var group, name, rate string
	c := &cobra.Command{
		Use:   "share PATH",
		Short: "become the source peer of a file: slice, advertise, multicast, serve repairs",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err != nil {
				return err
			}
			var r int64
			if rate != "" {
				if r, err = parseRate(rate); err != nil || r <= 0 {
					return usagef("--rate: %v", err)
				}
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			var out api.Shared
			if err := cl.Do(c.Context(), "POST", "/v1/share", api.Share{Path: path, Group: group, Name: name, Rate: r}, &out); err != nil {
				return err
			}
			return g.emit(out, func() {
				printf("sharing %s (%d bytes, %d slices) in group %s\ncontent %s\n", out.Name, out.Size, out.Slices, out.Group, out.ContentID)
			})
		},
	}
	c.Flags().StringVar(&group, "group", "", "the group to share with (default: the node's only group)")
	c.Flags().StringVar(&name, "name", "", "the content's name (default: the file's name)")
	c.Flags().StringVar(&rate, "rate", "", "multicast pace, e.g. 95Mbit or 11MiB (default: 96% of the slowest link among the source and its receivers, from each host's shaper or NIC speed; 95Mbit if none is known)")
	return c
}

// streamCall posts req and follows a streaming answer: progress lines drive a progress bar on
// a terminal; the result line is decoded into out.
func streamCall(ctx context.Context, g *globals, path string, req, out any, label string) error {
	cl, err := g.client()
	if err != nil {
		return err
	}
	resp, err := cl.Open(ctx, "POST", path, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var bar *progressbar.ProgressBar
	if term.IsTerminal(int(os.Stderr.Fd())) {
		defer func() {
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(os.Stderr)
			}
		}()
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l api.StreamLine
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return errors.New("the daemon ended the transfer without a result")
			}
			return err
		}
		switch {
		case l.Error != nil:
			return &api.RequestError{Msg: l.Error.Error, Usage: l.Error.Usage}
		case l.Result != nil:
			b, _ := json.Marshal(l.Result)
			return json.Unmarshal(b, out)
		case l.Progress != nil && term.IsTerminal(int(os.Stderr.Fd())):
			if bar == nil {
				bar = progressbar.NewOptions64(l.Progress.Size, progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionShowBytes(true), progressbar.OptionSetDescription(label),
					progressbar.OptionThrottle(100*time.Millisecond))
			}
			_ = bar.Set64(l.Progress.DoneBytes)
		}
	}
}

// outPath checks --out and --timeout of get and download and returns --out made absolute (the
// daemon may run in another directory).
func outPath(out string, timeout time.Duration) (string, error) {
	if out == "" {
		return "", usagef("--out is required")
	}
	if timeout <= 0 {
		return "", usagef("--timeout must be positive")
	}
	return filepath.Abs(out)
}

func newGetCmd(g *globals) *cobra.Command {
	var out, group string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "get ID_OR_NAME --out PATH",
		Short: "receive content; exits 0 only once the file is whole and verified at --out",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			abs, err := outPath(out, timeout)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), timeout+5*time.Second)
			defer cancel()
			var res api.GetResult
			req := api.Get{Content: args[0], Out: abs, Group: group, Timeout: timeout.Seconds()}
			if err := streamCall(ctx, g, "/v1/get", req, &res, "get"); err != nil {
				return err
			}
			return g.emit(res, func() {
				printf("got %s: %d bytes in %.2fs (multicast %d, peers %d, source %d)\n", res.Name, res.Size, res.Seconds, res.BytesMulticast, res.BytesPeers, res.BytesSource)
			})
		},
	}
	c.Flags().StringVar(&out, "out", "", "where the file appears once whole and verified")
	c.Flags().StringVar(&group, "group", "", "the group to get from (default: the node's only group)")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long")
	return c
}

func newTransfersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "transfers",
		Short: "running and finished transfers with progress",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			var ts []api.Transfer
			if err := cl.Do(c.Context(), "GET", "/v1/transfers", nil, &ts); err != nil {
				return err
			}
			return g.emit(ts, func() {
				for _, t := range ts {
					pct := 100.0
					if t.Size > 0 {
						pct = 100 * float64(t.DoneBytes) / float64(t.Size)
					}
					printf("%-8s %-8s %5.1f%%  %s  %s\n", t.Kind, t.State, pct, t.Name, t.ID)
				}
			})
		},
	}
}

func newDownloadCmd(g *globals) *cobra.Command {
	var out, group, slice, sum string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "download URL --out PATH",
		Short: "cooperative HTTP download: the group's members fetch ranges of URL and push them here",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			abs, err := outPath(out, timeout)
			if err != nil {
				return err
			}
			var sliceSize int64
			if slice != "" {
				n, err := parseSize(slice)
				if err != nil || n <= 0 {
					return usagef("--slice: %v", err)
				}
				sliceSize = n
			}
			if sum != "" && len(sum) != 64 {
				return usagef("--sha256: want 64 hex digits")
			}
			ctx, cancel := context.WithTimeout(c.Context(), timeout+5*time.Second)
			defer cancel()
			var res api.DownloadResult
			req := api.Download{URL: args[0], Out: abs, Group: group, SliceSize: sliceSize, SHA256: sum, Timeout: timeout.Seconds()}
			if err := streamCall(ctx, g, "/v1/download", req, &res, "download"); err != nil {
				return err
			}
			return g.emit(res, func() {
				printf("downloaded %d bytes in %.2fs (%d slices, %d members fetched, %d bytes from caches)\n", res.Size, res.Seconds, res.Slices, len(res.BytesByPeer), res.BytesFromCache)
			})
		},
	}
	c.Flags().StringVar(&out, "out", "", "where the file appears once whole and verified")
	c.Flags().StringVar(&group, "group", "", "the group that downloads (default: the node's only group)")
	c.Flags().StringVar(&slice, "slice", "", "slice size, e.g. 4MiB (default: the leader's)")
	c.Flags().StringVar(&sum, "sha256", "", "expected SHA-256 of the whole file (hex)")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "give up after this long")
	return c
}
