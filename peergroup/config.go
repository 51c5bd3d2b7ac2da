package peergroup

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Manager. Start from DefaultConfig.
type Config struct {
	// DataDir holds one directory per group: DataDir/groups/<groupID>/ with the Raft log and
	// stable store (raft.db, raft-boltdb), snapshots/, group.meta and members. Required.
	DataDir string

	// MaxVoters caps the Raft voters of a group (default 5); further members are non-voters.
	// The leader keeps the number of voters odd (an even cap acts as the odd number below).
	MaxVoters int

	// Raft timing: a follower starts an election after HeartbeatTimeout..2×HeartbeatTimeout
	// without hearing from the leader; the leader heartbeats every ~HeartbeatTimeout/10 and
	// steps down when it has not reached a quorum for LeaderLeaseTimeout (must be ≤
	// HeartbeatTimeout). Raft's messages share each peer pair's one connection with bulk
	// transfers, so a heartbeat can wait behind megabytes of queued data, and on a loaded
	// machine behind the scheduler too: with 300 ms timeouts a group downloading through
	// testnet/bench's links re-elected its leader every second or so (terms 6 to 31 in 40 s)
	// and its commits failed with "no leader". The defaults trade failover time (a new
	// leader 1-2 s after the old one dies; 0.6-0.9 s with 300/300/150 ms) for a group that
	// stays put while it works.
	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms
	CommitTimeout      time.Duration // default 50ms (raft's): followers learn of a commit within 1-2x this
	// TransportTimeout bounds dialing and each Raft RPC (default 2s).
	TransportTimeout time.Duration
	// RaftStreamPool: 0 runs Raft on go-libp2p-raft's transport as is (a new stream for
	// every RPC, heartbeats included); n > 0 keeps up to n streams per peer open between
	// RPCs (same stream layer and protocol).
	RaftStreamPool int

	// Snapshots: taken when SnapshotThreshold entries were appended since the last one,
	// checked every SnapshotInterval; TrailingLogs entries are kept after a snapshot.
	SnapshotThreshold uint64        // default 1024
	SnapshotInterval  time.Duration // default 30s
	TrailingLogs      uint64        // default 1024
	SnapshotRetain    int           // snapshots kept on disk, default 2

	// DeadAfter: the leader declares a member dead (commits MemberLive false) once its
	// heartbeats have failed for this long, and replaces it as a voter by a live non-voter.
	DeadAfter time.Duration // default 3s
	// AbandonAfter: a member that never caught up after its admission (never announced
	// itself) and has been unreachable this long is removed. Default 1m.
	AbandonAfter time.Duration
	// ReconcileInterval: how often the leader reconciles the Raft configuration with the
	// member list (promotions, removals, liveness). Default 500ms.
	ReconcileInterval time.Duration
	// ShutdownTimeout bounds waiting for a group's Raft to stop. Default 5s.
	ShutdownTimeout time.Duration

	// What this node announces about itself when it joins.
	Domain   string // multicast domain
	Capacity uint64

	// NoSync skips fsync of the Raft log (unsafe; for tests and benchmarks only).
	NoSync bool

	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultConfig returns the defaults documented on Config (DataDir left empty).
func DefaultConfig() Config {
	return Config{
		MaxVoters:          5,
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		TransportTimeout:   2 * time.Second,
		SnapshotThreshold:  1024,
		SnapshotInterval:   30 * time.Second,
		TrailingLogs:       1024,
		SnapshotRetain:     2,
		DeadAfter:          3 * time.Second,
		AbandonAfter:       time.Minute,
		ReconcileInterval:  500 * time.Millisecond,
		ShutdownTimeout:    5 * time.Second,
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.DataDir == "" {
		bad("DataDir is required")
	}
	if c.MaxVoters < 1 {
		bad("MaxVoters must be at least 1 (got %d)", c.MaxVoters)
	}
	if c.HeartbeatTimeout < 5*time.Millisecond || c.ElectionTimeout < c.HeartbeatTimeout {
		bad("need HeartbeatTimeout ≥ 5ms and ElectionTimeout ≥ HeartbeatTimeout (got %s, %s)", c.HeartbeatTimeout, c.ElectionTimeout)
	}
	if c.LeaderLeaseTimeout < 5*time.Millisecond || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("need 5ms ≤ LeaderLeaseTimeout ≤ HeartbeatTimeout (got %s)", c.LeaderLeaseTimeout)
	}
	if c.CommitTimeout < time.Millisecond {
		bad("CommitTimeout must be at least 1ms")
	}
	if c.TransportTimeout <= 0 || c.DeadAfter <= 0 || c.AbandonAfter <= 0 || c.ReconcileInterval <= 0 || c.ShutdownTimeout <= 0 {
		bad("TransportTimeout, DeadAfter, AbandonAfter, ReconcileInterval and ShutdownTimeout must be positive")
	}
	if c.SnapshotThreshold == 0 || c.SnapshotInterval < 5*time.Millisecond || c.SnapshotRetain < 1 {
		bad("need SnapshotThreshold > 0, SnapshotInterval ≥ 5ms and SnapshotRetain ≥ 1")
	}
	if len(c.Domain) > maxNameLen {
		bad("Domain longer than %d bytes", maxNameLen)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if len(errs) > 0 {
		return fmt.Errorf("peergroup config: %w", errors.Join(errs...))
	}
	return nil
}
