package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/raftcast/raftcast/internal/api"
)

// rcnet pipelisten: bind the input end of a pipe through a raftcast daemon's local API and
// copy each message, as the API's JSON line (from, name, carrier, data), to stdout. The
// testnet's pipes scenario counts messages per carrier (multicast, gossipsub, stream) from
// these lines; `raftcast pipe listen` prints only the data. It writes -ready once the daemon
// has bound the pipe, and stops at SIGINT/SIGTERM, -timeout, or when the daemon ends the
// stream (exit 1 then, as the CLI does).
func runPipeListen(args []string) error {
	fs := flag.NewFlagSet("pipelisten", flag.ExitOnError)
	data := fs.String("data", "", "the daemon's data directory (required)")
	name := fs.String("name", "", "pipe name (required)")
	kind := fs.String("kind", "propagate", "unicast or propagate")
	group := fs.String("group", "", "the pipe's group (default: the overlay-wide group)")
	ready := fs.String("ready", "", "write this file once the pipe is bound")
	timeout := fs.Duration("timeout", 10*time.Minute, "stop after this long")
	_ = fs.Parse(args)
	if *data == "" || *name == "" {
		return errors.New("-data and -name are required")
	}
	cl, err := api.NewClient(*data, "")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	v := url.Values{"name": {*name}, "kind": {*kind}, "group": {*group}, "count": {"0"}}
	resp, err := cl.Open(ctx, "GET", "/v1/pipes/listen?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if *ready != "" {
		if err := writeFileAtomic(*ready, "bound\n"); err != nil {
			return err
		}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		if _, err := os.Stdout.Write(append(sc.Bytes(), '\n')); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil // stopped on purpose
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the daemon closed the pipe")
}
