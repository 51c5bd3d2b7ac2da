// Package peergroup implements raftcast's peer groups (JXTA peer groups): membership with a
// credential (the Peer Membership Protocol), one Raft instance per group electing the group's
// leader, the replicated group state, the leader's duties (task arrangement, membership
// upkeep) and the tracker's group assignment.
//
// # Using it
//
// A Manager (NewManager(host, key, cfg)) holds the groups a node is in and reopens those it
// finds in cfg.DataDir, so a restarted node rejoins its groups and catches up. Create makes a
// group with this node as first member and leader; Join joins one described by a GroupInfo
// (the body of the group's advertisement: EncodeGroupInfo / DecodeGroupInfo) with a
// Credential; Leave leaves cleanly. A Group gives Status, State (a copy of the replicated
// state), Info (for the advertisement), Apply (commit a command from any member), Watch (a
// coalesced change notification), Invite, Expel, LiveMembers and, on the leader,
// ArrangeTask.
//
// # Membership policies and the join protocol (/raftcast/group/join/1.0.0)
//
//   - open: anyone is admitted.
//   - secret: challenge–response. The secret is stretched (PBKDF2-SHA256, 100 000 rounds,
//     salted with the group ID) into a group key that only members hold (group.meta, 0600);
//     the secret and the key are never sent, replicated or advertised.
//   - invite: an Invitation naming the group, the invitee's peer ID and an expiry, signed
//     with the libp2p key of a member (Group.Invite); the leader checks all four and the
//     signature.
//
// One stream per attempt; frames are uvarint length | type byte | payload (compact binary):
//
//	joiner → member   joinRequest{group ID, joiner nonce, addrs, domain, capacity, invitation}
//	member → joiner   joinRedirect{leader, addrs}        (a member that is not the leader)
//	leader → joiner   joinChallenge{leader nonce}        (secret groups)
//	joiner → leader   joinProof{HMAC(key, "join" ‖ leader nonce ‖ joiner ID ‖ group ID)}
//	leader → joiner   joinAccept{HMAC(key, "leader" ‖ joiner nonce ‖ leader ID ‖ group ID),
//	                             header, leader, term, members}
//	               or error{code, message}
//
// The joiner's peer ID is the authenticated remote peer of the stream, never a field of the
// request. Admission goes through the leader only: it checks the credential (wrong →
// error ErrWrongSecret / ErrBadInvitation, nothing committed; an expelled peer → ErrBanned),
// commits MemberAdd, adds the joiner to Raft as a non-voter, then answers with the member
// list. The joiner checks the leader's proof (a peer that cannot prove the secret →
// ErrBadLeader), starts its Raft with empty stores, receives the log (or a snapshot) from the
// leader, and once its state lists it commits a MemberUpdate with its addresses (it is then
// "ready"). Join returns at that point. Without an answer (no leader during an election,
// contacts unreachable) the joiner retries until its context ends.
//
// # Command forwarding (/raftcast/group/apply/1.0.0)
//
// Apply on the leader commits directly; on a follower it sends applyRequest{group ID, encoded
// command} to the leader, which answers applyResponse{log index} once the command is applied
// or error{code, message}; the follower then waits until its own state has applied that index
// (read-your-writes). Leader changes and unreachable leaders are retried until the context
// ends; rejections are final. The leader decides who may send what (see Group.authorize):
// admission, liveness and task assignments are leader-only; a member updates, leaves, adds
// tasks and catalogue entries only as itself; only voters expel. The same protocol answers
// membersRequest{group ID} with the member list, for members only (see the Raft gate below).
//
// # Raft
//
// Each group runs hashicorp/raft with go-libp2p-raft's transport over a host wrapper that
// renames go-libp2p-raft's fixed /raft/1.0.0/rpc to /raftcast/group/<groupID>/raft/1.0.0, so
// one host serves the Raft of several groups. go-libp2p-raft opens a new stream for every
// RPC, heartbeats included (every HeartbeatTimeout/10); Config.RaftStreamPool > 0 keeps that
// stream layer and protocol but pools streams, which halves an idle group's CPU (both kinds
// interoperate). The wrapper is also a gate: Raft streams from
// peers that this node does not know as members (state, Raft configuration, join answer,
// members file) are reset; on such a refusal the node asks the members it knows for the
// member list (at most once a second), so a node that missed admissions while away still
// accepts the new members. Server ID and address are both the peer ID string. The log and
// stable store are raft-boltdb/v2 (DataDir/groups/<groupID>/raft.db), snapshots are files
// (…/snapshots/, taken every SnapshotThreshold entries); group.meta holds the header and key,
// members the last known member addresses (to reconnect after a restart, before the log is
// replayed). Default timing (heartbeat 1 s, election 1 s, lease 500 ms; see Config for why
// not shorter) fails over in 1-2 s; the leader sends each follower an AppendEntries every
// CommitTimeout (50 ms), through a cache of recent log entries.
//
// Voters are capped (Config.MaxVoters, default 5) and kept odd (2k+2 voters survive no
// more failures than 2k+1); every member is at least a non-voter. The leader reconciles every
// ReconcileInterval: servers that are no longer members are removed; members missing from the
// configuration are added; a voter whose heartbeats have failed for DeadAfter is committed
// dead (MemberLive) and replaced by a ready live non-voter (promote, then demote); ready live
// non-voters are promoted two at a time while the cap allows; an even count (after a leave)
// is made odd by demoting one voter; a joiner that never caught up and has been unreachable
// for AbandonAfter is removed. A group of two members thus has one voter (the first): it
// survives the other's death, not its own.
// Member liveness comes from the leader's Raft heartbeats (raft's heartbeat observations).
//
// # Replicated state and commands
//
// The FSM holds the group header (ID, name, policy, creator), the members (peer ID,
// addresses, multicast domain, capacity, ready, alive, joined, last seen), the load map
// (outstanding slices per member), the task table (per task: URL or content, size, slice
// size, validators, requester, the term of its latest assignment, per slice the assignee, the
// assignment's term and done/missing, the excluded members), the content catalogue and the
// banned (expelled) peers. Member.Voter in a view is read from the Raft configuration. The
// state changes only through typed commands (command.go), each encoded as version byte | kind
// byte | fixed fields. A command is checked for structure when encoded and decoded and against
// the state when applied; a rejected command changes nothing on any replica:
//
//   - bytes that do not decode, an unknown version or kind → ErrMalformed;
//   - an assignment whose term is older than the task's term → ErrStale (members thus
//     ignore assignments made by a deposed leader); newer than its log entry's term →
//     ErrMalformed;
//   - unknown task, slice out of range, excluded assignee → ErrInvalid; a non-member where a
//     member is required → ErrNotMember; re-adding an expelled peer → ErrBanned.
//
// Snapshots encode the whole state in the same codec, maps in sorted order (equal states
// give equal bytes).
//
// # Leader duties
//
// Arrange (arranger.go) is the leader's pure task arrangement: each slice to the
// least-loaded eligible member by a min-heap over (load, peer ID), incrementing the load as
// it goes, preferring a member that already holds the slice when asked; Rearrange places
// missing slices excluding members that failed. Group.ArrangeTask runs it over the live
// members and the replicated load map and commits the result stamped with the current term.
//
// # Tracker
//
// TrackerPolicy.Pick (tracker.go) is the rendezvous node's pure group assignment: among the
// groups that are not full (MaxMembers, default 8), fewest members first, then one in the
// joiner's multicast domain, then the smaller total capacity; none → create a new group.
//
// # Failure behaviour
//
// A group of 2k+1 voters survives k dead voters. Removing or killing a node closes its
// streams; the remaining voters elect a new leader after a heartbeat timeout or two. A
// restarted node reopens its groups, reconnects to the members in its members file and
// announces its (possibly new) addresses; if every member it knew moved to new addresses
// while it was down it needs peer routing (e.g. the DHT) to find them again. An expelled or
// removed node that learns of its removal drops the group and deletes its data.
package peergroup
