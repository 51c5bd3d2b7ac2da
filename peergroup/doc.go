// Package peergroup implements raftcast's peer groups (JXTA peer groups): membership with a
// credential (the Peer Membership Protocol), one Raft instance per group electing the group's
// leader, the replicated group state, the leader's task arrangement and the tracker's group
// assignment.
//
// # Replicated state and commands
//
// Every group runs hashicorp/raft; its FSM holds the group header (ID, name, policy,
// creator), the members (peer ID, addresses, multicast domain, capacity, ready, alive,
// joined, last seen), the load map (outstanding slices per member), the task table (per task:
// URL or content, size, slice size, validators, requester, the term of its latest
// assignment, per slice the assignee, the assignment's term and done/missing, the excluded
// members) and the content catalogue. The state changes only through typed commands
// (command.go), each encoded as version byte | kind byte | fixed fields in a compact binary
// codec. A command is checked for structure when encoded and decoded and against the state
// when applied; a rejected command changes nothing on any replica:
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
// least-loaded eligible member by a min-heap over (load, peer ID), preferring a member that
// already holds the slice when asked; Rearrange places missing slices excluding members that
// failed.
//
// # Tracker
//
// TrackerPolicy.Pick (tracker.go) is the rendezvous node's pure group assignment: among the
// groups that are not full, fewest members first, then one in the joiner's multicast domain,
// then the smaller total capacity; none → create a new group.
package peergroup
