package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftcast/raftcast/internal/api"
)

func newPipeCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "pipe",
		Short: "pipes: listen on or send to a named pipe",
		Args:  cobra.ArbitraryArgs,
		RunE: func(*cobra.Command, []string) error {
			return usagef("pipe needs a subcommand: listen or send")
		},
	}
	var group, kind string
	var count int
	var timeout time.Duration
	listen := &cobra.Command{
		Use:   "listen NAME",
		Short: "bind the input end of a pipe and print each message on its own line",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if count < 0 {
				return usagef("--count must not be negative")
			}
			return listenPipe(c.Context(), g, args[0], group, kind, count, func(m api.PipeMessage) {
				fmt.Println(m.Data)
			})
		},
	}
	listen.Flags().IntVar(&count, "count", 0, "stop after this many messages (0: run until interrupted)")
	send := &cobra.Command{
		Use:   "send NAME [MESSAGE]",
		Short: "send MESSAGE, or each line of stdin, on a pipe",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			var msgs []string
			if len(args) == 2 {
				msgs = []string{args[1]}
			} else {
				sc := bufio.NewScanner(os.Stdin)
				sc.Buffer(make([]byte, 64<<10), 4<<20)
				for sc.Scan() {
					msgs = append(msgs, sc.Text())
				}
				if err := sc.Err(); err != nil {
					return fmt.Errorf("reading stdin: %w", err)
				}
			}
			var out api.PipeSent
			req := api.PipeSend{Name: args[0], Group: group, Kind: kind, Messages: msgs, Timeout: timeout.Seconds()}
			if err := g.call(c.Context(), "POST", "/v1/pipes/send", req, &out); err != nil {
				return err
			}
			return g.emit(out, func() { printf("delivered %d\n", out.Delivered) })
		},
	}
	send.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long finding a listener and sending may take")
	for _, sub := range []*cobra.Command{listen, send} {
		sub.Flags().StringVar(&group, "group", "", "the pipe's group (default: the overlay-wide group)")
		sub.Flags().StringVar(&kind, "kind", "unicast", "unicast or propagate")
	}
	c.AddCommand(listen, send)
	return c
}

// listenPipe streams a pipe's messages from the daemon to fn until count messages or ctx ends.
func listenPipe(ctx context.Context, g *globals, name, group, kind string, count int, fn func(api.PipeMessage)) error {
	cl, err := g.client()
	if err != nil {
		return err
	}
	v := url.Values{"name": {name}, "group": {group}, "kind": {kind}, "count": {strconv.Itoa(count)}}
	resp, err := cl.Open(ctx, "GET", "/v1/pipes/listen?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for n := 0; count == 0 || n < count; n++ {
		var m api.PipeMessage
		if err := dec.Decode(&m); err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return errors.New("the daemon closed the pipe")
			}
			return err
		}
		fn(m)
	}
	return nil
}

func newChatCmd(g *globals) *cobra.Command {
	var group string
	c := &cobra.Command{
		Use:   "chat",
		Short: "instant messages to a group: lines typed are sent, lines received are printed",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var st api.Status
			if err := g.call(c.Context(), "GET", "/v1/status", nil, &st); err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(c.Context())
			defer cancel()
			recvErr := make(chan error, 1)
			go func() {
				recvErr <- listenPipe(ctx, g, "chat", group, "propagate", 0, func(m api.PipeMessage) {
					if m.From == st.PeerID {
						return
					}
					who := m.Name
					if who == "" {
						who = m.From[max(0, len(m.From)-8):]
					}
					fmt.Printf("%s: %s\n", who, m.Data)
				})
			}()
			lines := make(chan string)
			go func() {
				sc := bufio.NewScanner(os.Stdin)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			for {
				select {
				case err := <-recvErr:
					return err
				case line, ok := <-lines:
					if !ok {
						return nil
					}
					if strings.TrimSpace(line) == "" {
						continue
					}
					req := api.PipeSend{Name: "chat", Group: group, Kind: "propagate", Messages: []string{line}}
					if err := g.call(ctx, "POST", "/v1/pipes/send", req, nil); err != nil {
						fmt.Fprintln(os.Stderr, "raftcast: chat: "+err.Error())
					}
				}
			}
		},
	}
	c.Flags().StringVar(&group, "group", "", "the group to chat in (default: the overlay-wide group)")
	return c
}
