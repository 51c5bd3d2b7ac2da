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
// DefaultSliceSize is 256 KiB (raised to keep at most MaxSlices slices: SliceSizeFor).
// Measured on the 2-core build machine, shared with other jobs (load average 8-12), so the
// figures are noisy; ratios within one run are what count:
//
//	go test -bench HashSlice ./transfer/content/
//	  BLAKE3   256 KiB 2.6-2.9 GB/s   1 MiB 2.4-2.6 GB/s   4 MiB 2.2-2.3 GB/s
//	go test -bench SwarmVsRaw -benchtime 3x ./transfer/swarm/   (64 MiB, swarm vs raw stream)
//	  slice     1 receiver          4 receivers
//	  256 KiB   0.39-0.85 of raw    0.43-0.68 of raw
//	  1 MiB     0.52-0.98 of raw    0.27-0.44 of raw
//	  4 MiB     0.44-0.51 of raw    0.22-0.53 of raw
//
// Hashing costs about the same per byte at every size. Over streams, 1 MiB is a little
// better from one source to one receiver (fewer requests and events per byte), 256 KiB
// better when receivers exchange slices among themselves (a slice becomes available to
// others four times sooner), and 4 MiB worse in both. The multicast decides: a receiver that
// misses one datagram repairs 1/32 of a slice (content.Parts), so at 1% datagram loss a
// 256 KiB slice (190 datagrams, ~1.9 lost) costs about 16 KiB of repair, a 1 MiB slice (760
// datagrams, ~7.6 lost) about 224 KiB. 256 KiB also keeps multicast reassembly buffers and
// partial-repair memory small, at the cost of a manifest of 128 KiB per GiB.
package content
