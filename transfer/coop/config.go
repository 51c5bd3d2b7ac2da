package coop

import (
	"errors"
	"fmt"
	"time"
)

// Config configures a Service. Start from DefaultConfig.
type Config struct {
	// Dir holds this node's slice cache: one store per resource version,
	// <Dir>/<key>.part and <Key>.have, key = store.KeyFor(URL, validator, size, slice size).
	// Required. Nothing is evicted (delete the directory to clear the cache).
	Dir string

	// SliceSize is the leader's slice size when a request names none (default 256 KiB;
	// doubled for large resources so a task has at most 4096 slices). Small slices keep a
	// member's pushes close behind its origin fetch: a slice is pushed once whole.
	SliceSize int64
	// Stripe: the leader deals the slices a task fetches from the origin out in stripes of
	// this many bytes (rounded to whole slices, at least one), round-robin over the fetching
	// members, so they advance through the resource side by side and the requester writes
	// and hashes the file as it arrives instead of at the end (default 1 MiB; 0: one
	// contiguous block per member).
	Stripe int64
	// OriginConns caps this node's concurrent requests to one origin (default 2).
	OriginConns int
	// GroupOriginConns caps the connections a task opens to the origin across the group: the
	// leader gives origin slices to at most GroupOriginConns/OriginConns members (default 16).
	GroupOriginConns int
	// MaxRange is the largest single Range request; a member's contiguous slices are
	// coalesced up to this (default 32 MiB).
	MaxRange int64
	// FetchRetries: attempts after the first when the origin fails (5xx, reset) before the
	// member gives its slices back and excludes itself from the task (default 2, backing off
	// from RetryBackoff).
	FetchRetries int
	RetryBackoff time.Duration // default 250ms

	// SliceTimeout: the requester re-arranges the outstanding slices of a member that has
	// delivered nothing for this long (dead, silent, or too slow for one slice) and excludes
	// it (default 15s).
	SliceTimeout time.Duration
	// Heartbeat: how often the requester checks a task (default 250ms: the end game, see
	// Steal, reacts within a few heartbeats).
	Heartbeat time.Duration
	// DoneBatch, DoneInterval: the requester reports delivered slices to the group's log
	// (SlicesDone, which releases the load map) in batches of this many slices, or after this
	// long (defaults 64, 1s). The leader never sees single slices.
	DoneBatch    int
	DoneInterval time.Duration
	// Steal: near the end of a task the requester moves the last half of a slow member's
	// outstanding slices to idle members, when the slow member would need at least
	// StealAfter more to finish them at the rate it has delivered so far (default true, 1s:
	// each member's origin share is capped, so a member that lags a second behind the others
	// at the end adds that second to the download unless idle members take over).
	Steal      bool
	StealAfter time.Duration
	// ChangeRestarts: how many times a download restarts from scratch when the resource
	// changes at the origin before failing with ErrChanged (default 1).
	ChangeRestarts int

	// PushWindow: slices a member sends before the requester's acknowledgements (default 16:
	// 4 MiB of 256 KiB slices, so a requester slow to acknowledge does not hold pushes back).
	PushWindow int
	// PushStreams: streams a member pushes a task's slices over at once, each with its own
	// PushWindow and its own flow-control window in the muxer (default 2).
	PushStreams int
	// ControlTimeout bounds one control request and its answer; the leader's start answer
	// includes the origin probe (default 30s).
	ControlTimeout time.Duration
	// IOTimeout bounds writing one slice frame or ack (default 30s).
	IOTimeout time.Duration
	// HaveTimeout bounds the leader's question to members about the slices they hold
	// (default 2s); members that do not answer in time count as holding nothing.
	HaveTimeout time.Duration
	// GroupScan: how often the service looks for groups it has not attached yet (the daemon
	// may join groups after starting it) and the leader collects orphaned tasks (default 2s).
	GroupScan time.Duration
	// TaskTTL: the leader removes download tasks older than this, or whose requester left
	// the group (default 24h).
	TaskTTL time.Duration

	// UserAgent sent to origins (default "raftcast-coop/1").
	UserAgent string

	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultConfig returns the defaults documented on Config (Dir left empty).
func DefaultConfig() Config {
	return Config{
		SliceSize:        256 << 10,
		Stripe:           1 << 20,
		OriginConns:      2,
		GroupOriginConns: 16,
		MaxRange:         32 << 20,
		FetchRetries:     2,
		RetryBackoff:     250 * time.Millisecond,
		SliceTimeout:     15 * time.Second,
		Heartbeat:        250 * time.Millisecond,
		DoneBatch:        64,
		DoneInterval:     time.Second,
		Steal:            true,
		StealAfter:       time.Second,
		ChangeRestarts:   1,
		PushWindow:       16,
		PushStreams:      2,
		ControlTimeout:   30 * time.Second,
		IOTimeout:        30 * time.Second,
		HaveTimeout:      2 * time.Second,
		GroupScan:        2 * time.Second,
		TaskTTL:          24 * time.Hour,
		UserAgent:        "raftcast-coop/1",
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Dir == "" {
		bad("Dir is required")
	}
	if c.SliceSize < minSliceSize || c.SliceSize > maxSliceSize {
		bad("SliceSize %d outside [%d, %d]", c.SliceSize, minSliceSize, maxSliceSize)
	}
	if c.OriginConns < 1 || c.GroupOriginConns < c.OriginConns {
		bad("need OriginConns ≥ 1 and GroupOriginConns ≥ OriginConns (got %d, %d)", c.OriginConns, c.GroupOriginConns)
	}
	if c.Stripe < 0 {
		bad("Stripe must be ≥ 0")
	}
	if c.MaxRange < c.SliceSize {
		bad("MaxRange %d is smaller than SliceSize %d", c.MaxRange, c.SliceSize)
	}
	if c.FetchRetries < 0 || c.RetryBackoff <= 0 || c.ChangeRestarts < 0 {
		bad("FetchRetries and ChangeRestarts must be ≥ 0, RetryBackoff > 0")
	}
	if c.SliceTimeout <= 0 || c.Heartbeat <= 0 || c.Heartbeat > c.SliceTimeout {
		bad("need 0 < Heartbeat ≤ SliceTimeout (got %s, %s)", c.Heartbeat, c.SliceTimeout)
	}
	if c.Steal && c.StealAfter <= 0 {
		bad("StealAfter must be positive")
	}
	if c.DoneBatch < 1 || c.DoneInterval <= 0 {
		bad("DoneBatch must be ≥ 1 and DoneInterval > 0")
	}
	if c.PushWindow < 1 || c.PushWindow > 64 {
		bad("PushWindow must be in [1, 64]")
	}
	if c.PushStreams < 1 || c.PushStreams > 8 {
		bad("PushStreams must be in [1, 8]")
	}
	if c.ControlTimeout <= 0 || c.IOTimeout <= 0 || c.HaveTimeout <= 0 || c.GroupScan <= 0 || c.TaskTTL <= 0 {
		bad("ControlTimeout, IOTimeout, HaveTimeout, GroupScan and TaskTTL must be positive")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if len(errs) > 0 {
		return fmt.Errorf("coop config: %w", errors.Join(errs...))
	}
	return nil
}
