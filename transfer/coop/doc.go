// Package coop is raftcast's cooperative HTTP download (issue 6; seed: the Raft-based P2P
// downloader): a requester gets an HTTP resource faster, and the origin sends it about once,
// because the members of its peer group fetch different ranges and push them to it, under a
// plan the group's Raft leader makes and the Raft log keeps.
//
// # Roles and flow
//
// Every node runs one Service, which acts in every group the node is in.
//
//  1. Start (fullDownLoad). The requester sends a start request (URL, optional slice size)
//     to the group's leader on ControlProtocol. The leader probes the origin (HEAD; when HEAD
//     fails, gives no size or does not advertise "Accept-Ranges: bytes", a GET of bytes 0-0)
//     for the size, the validators (ETag, Last-Modified) and range support, splits the
//     resource into slices (Config.SliceSize, default 256 KiB, larger for resources of more
//     than 4096 slices), asks the live members which slices of this version they hold or
//     are reading now (have request, bounded by Config.HaveTimeout), and commits the task
//     (peergroup.TaskAdd) and its plan (peergroup.TaskAssign, stamped with its term) to the
//     group's log. The plan (Plan, pure): slices some member holds, or is
//     fetching for another running task of the same version, go to the least-loaded such
//     member (cache, and "join": a second request for a URL being downloaded rides on the
//     first one's fetches); the rest are counted out by peergroup's min-heap over the load
//     map and dealt out in stripes (Config.Stripe, default 1 MiB) round-robin over the
//     fetching members, so each member's share is a few Range requests and the members move
//     through the resource side by side; at most GroupOriginConns/OriginConns members fetch from the origin.
//     A start request from a requester that already has a task for the URL of the same
//     version resumes it (a requester restarted mid-task). The answer carries the task ID,
//     size, slice size, validators and whether the origin serves ranges.
//  2. Fetch (dealDownLoad). Each member watches the replicated task table and works on the
//     slices assigned to it and not done: contiguous ones coalesced into one Range request
//     (up to Config.MaxRange), at most Config.OriginConns requests per origin at once, with
//     If-Range (strong ETag, else Last-Modified) so every byte comes from one version. The
//     answer is checked: a 206 must carry the range asked, the size and the validators; a 200
//     with other validators, 412 or 416 mean the resource changed (ErrChanged); a 200 with the
//     same validators means the origin ignores Range, and the member reads the whole body
//     (the plan gives every slice to one member then, the requester if it can, with a
//     warning). Slices land in the member's cache (a transfer/store.Store keyed by URL,
//     validator, size and slice size; slices of a version with no validator are not reused
//     and are dropped with the task). A slice fetched by one task's worker is not fetched
//     again by another's. A slice re-assigned elsewhere is not fetched any more; the task
//     leaving the table stops the worker. Origin failures (5xx, 429, reset, truncated body)
//     are retried Config.FetchRetries times; then the member gives its slices back to the
//     leader, excluding itself from the task (a rearrange request).
//  3. Push. A member sends its slices to the requester on PushProtocol, over
//     Config.PushStreams streams at once that take slices from one queue and stay open while
//     the member still fetches: a header frame (group, task), then slice frames (index,
//     flags, data), at most Config.PushWindow unacknowledged per stream; the requester reads
//     each stream ahead of its store; it checks the sender is a member, the task is its
//     own, the index and the exact length, and a storing goroutine stores the slice and
//     acknowledges it (a refusal is written after the acknowledgements due, and the stream
//     lingers briefly so the member reads it before the reset). A broken stream is
//     reopened with back-off and unacknowledged slices are sent again. The requester's own
//     share goes straight into its store (the cache is shared by both roles).
//  4. Listen (TaskListener, checkSlice, partDownLoad). The requester checks the task every
//     Config.Heartbeat. A member with outstanding slices and no delivery for
//     Config.SliceTimeout, or that the group considers dead, is excluded and its missing
//     slices (and unassigned ones) are re-planned by the leader (rearrange request). Near
//     the end, when a member would need more than Config.StealAfter (1 s) to finish its
//     outstanding slices at the rate it has delivered so far while another member is idle,
//     the last half of them move to idle members (steal): the leader first asks the slow
//     member what it holds or is reading now and moves only the rest, so cached slices never
//     turn into origin traffic again; the slow member stops each range it is fetching after
//     the slice it is reading and still pushes every slice it fetched (bytes that arrive
//     twice are logged as duplicate; the origin may have sent part of a range cut short).
//     A member stolen from is not picked again for a few heartbeats: one whose pushes lag
//     holds its outstanding slices (nothing moves), and the slowest fetcher gets its turn.
//     Slices arriving before the start answer (a member is quick, or the requester
//     restarted) are stored and counted all the same. Delivered
//     slices are made durable (store flush) and then reported in batches (peergroup.SlicesDone,
//     Config.DoneBatch / DoneInterval), which releases the load map: the leader never handles
//     single slices. Leader changes are survived: assignments live in the log, calls to the
//     leader are retried with whoever leads next.
//  5. Finish. While slices arrive, the requester writes each one at its place in a
//     temporary file beside the output (.<name>.raftcast-<task>) and computes the SHA-256 of
//     the contiguous prefix written (the stripes keep it growing); once every slice is held
//     it writes and hashes the rest, checks the sum against
//     Request.SHA256 if given, fsyncs and renames: the output is absent or whole. It then removes the task from the table
//     (peergroup.TaskRemove). A wrong SHA-256 leaves nothing at the output and drops the
//     slices from the requester's cache. A resource that changes mid-download makes the
//     requester drop the task and that version's slices and start over
//     (Config.ChangeRestarts, default once), else fail with ErrChanged: never a mixed file.
//     Without --sha256 integrity rests on sizes and validators: every 206 must match the
//     task's size and validators. A resource with no validator at all can change unnoticed
//     if its size stays the same; use --sha256 for such origins.
//
// The leader also removes download tasks whose requester left the group or that are older
// than Config.TaskTTL. A download whose context ends removes its task; a Service closed
// mid-download leaves it, so the node resumes it when the download is asked again.
//
// # Wire
//
// Frames are type (1 byte) | length (uvarint) | body, bodies in a compact bounded binary
// codec (wire.go). ControlProtocol streams carry one request and one answer (start →
// accept, rearrange → ok, have → have-answer, notice → ok, or an error frame whose code
// maps to one of the package's sentinel errors, with the leader's ID on "not leader").
// Start and rearrange are served by the leader to members only; have to peers sharing a group
// with this node; notice to members about tasks this node requested. PushProtocol streams
// are accepted from members, for tasks this node requested; a slice of the wrong length or
// index resets the stream.
// Members are trusted not to lie about slice contents (they are authenticated members of the
// group); SHA-256 is the defence against a bad one.
//
// # Use
//
// One Service per node (New with the host, the node's *peergroup.Manager, an *http.Client of
// its own — NewHTTPClient — a logger and a Config whose Dir is e.g. <data>/coop); it attaches
// to every group the manager has, now and later, so a member acts on assignments whether or
// not it downloads anything itself. Service.Download(ctx, group, Request{URL, Out, SliceSize,
// SHA256, Timeout}, progress) returns a Result (size, seconds, slices, bytes fetched from the
// origin per peer, bytes served from caches, resumed bytes, SHA-256, warnings). The group
// passed must be one of the manager's.
//
// # Limits and weak points
//
// The cache is never evicted. The per-origin connection cap is per node; across the group it
// is enforced by the plan (fetching members), not by counting live connections. "Joining" a
// running task creates a second task whose slices are assigned to the members already
// fetching them; the origin is not asked twice, but each requester has its own task entry.
// A member that fails at the origin excludes itself from the task for good, even if the
// failure was brief. A wrong SHA-256 drops the requester's cached slices, not the members'
// (a member that served bad bytes is not identified: slices carry no per-slice hash).
package coop
