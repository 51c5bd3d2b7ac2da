// Package content slices files and describes them with a Manifest: the name, size, slice size,
// the BLAKE3-256 hash of every slice and a Merkle root over those hashes. Content is identified
// by its content ID, the BLAKE3-256 hash of the manifest's canonical encoding, written as 64
// lowercase hex digits. Anyone holding a content ID can check a manifest received from anyone
// (DecodeWithID), and then every slice received from anyone (Manifest.Verify).
//
// # Encoding
//
// One canonical binary form, big-endian:
//
//	"RCMF" | version 1 (u8) | name length (u16) | size (u64) | slice size (u32) |
//	name (UTF-8) | slice hashes (32 bytes each; count = ceil(size / slice size)) | Merkle root
//
// Decode is strict and bounded: it checks the total length against MaxManifestSize before
// looking further, then that the length is exactly what the header implies, the slice size is
// within [MinSliceSize, MaxSliceSize], the slice count at most MaxSlices, the name safe
// (ValidateName: no "", ".", "..", '/', '\', NUL or control characters, valid UTF-8, at most
// 255 bytes) and the root equal to the root of the hashes. A decoded manifest re-encodes to
// the same bytes. The wire form is pinned by testdata/golden.manifest.hex and fuzzed with the
// corpus in testdata/fuzz/FuzzDecode.
//
// # Merkle root
//
// Leaves are the slice hashes; an inner node is BLAKE3(0x01 | left | right); an odd node at
// the end of a level is carried up; the root of empty content is BLAKE3(0x00). The root lets
// a future protocol prove single slice hashes without the whole manifest.
//
// # Slice size
//
// DefaultSliceSize is 1 MiB. Measured on the 2-core build machine (noisy; compare ratios):
//
//	go test -bench HashSlice ./transfer/content/        256 KiB 2.6-2.9 GB/s, 1 MiB 2.4-2.6 GB/s, 4 MiB 2.2-2.3 GB/s
//	go test -bench StreamSlices ./transfer/swarm/       see the swarm package's doc for transfer
//
// Hashing costs about the same per byte at every size, so the choice is made by transfer and
// by bookkeeping: see the swarm package's doc for the stream figures. 1 MiB keeps a manifest
// small (32 bytes per MiB: 8 KiB for 256 MiB, 32 KiB for 1 GiB), a lost slice cheap to repair
// and a multicast reassembly buffer small, while streams already run at full speed with it.
package content
