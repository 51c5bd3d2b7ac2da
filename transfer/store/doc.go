// Package store keeps the slices of one piece of content on disk while it is received, and
// serves them to others.
//
// Slices are written in place, with positioned writes, into a sparse file <dir>/<key>.part of
// the content's full size. A bitmap of verified slices lives beside it in <dir>/<key>.have
// ("RCBM", version, size, slice size, bitmap, BLAKE3 of all that). The bitmap is saved
// atomically (temporary file, fsync, rename, fsync of the directory) every Config.FlushEvery
// new slices and on Flush, Finalize and Close, and only after the part file itself has been
// fsynced, so a saved bitmap never claims bytes that are not durable. A receiver restarted
// after a crash reopens the store and fetches only what the bitmap does not hold (at most
// FlushEvery slices are fetched twice); by default the claimed slices are re-verified on
// open. A damaged or mismatched bitmap file is ignored (the slices are fetched again).
//
// Put verifies a slice (index range, exact length, then the Verifier) before writing it:
// unverified data is never written and never marked held. For manifest content the verifier
// is the manifest's per-slice BLAKE3 hash; the cooperative HTTP download uses a store keyed by
// KeyFor(url, validator, slice size) with the LengthOnly verifier and checks the whole file
// itself.
//
// Finalize makes a complete store appear at the output path: fsync, then rename (or, across
// file systems, copy to a temporary file beside the output, fsync and rename). The output is
// therefore absent or whole; an incomplete or failed transfer leaves nothing there. The
// store keeps serving slices from the output afterwards. OpenSource wraps a source peer's
// original file as a read-only store whose slices are verified as they are read, so a file
// edited after slicing is never passed on.
//
// Whole slices in page-aligned buffers (every slice but a shorter last one, as receivers
// assemble them) are written with O_DIRECT where the file system takes it, so receiving a
// large file neither copies it into fresh page-cache pages nor fills the cache; the last
// slice, unaligned buffers and file systems without O_DIRECT go through the page cache, and
// so does every write once a direct one is refused or direct writes take more than 50 ms on
// average (a slow disk would stall the receiver between reads of its socket). Reads go
// through the page cache.
//
// Write errors carry the file and slice concerned and, for ENOSPC/EDQUOT and permission
// errors, a hint; they are always returned, never hidden.
package store
