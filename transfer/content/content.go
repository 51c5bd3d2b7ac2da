package content

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/zeebo/blake3"
)

// Limits on manifests, enforced when building, encoding and decoding.
const (
	HashSize         = 32        // BLAKE3-256
	MinSliceSize     = 4 << 10   // 4 KiB
	MaxSliceSize     = 16 << 20  // 16 MiB
	DefaultSliceSize = 256 << 10 // 256 KiB: see doc.go for the measurement behind it
	MaxSlices        = 1 << 20   // with 1 MiB slices: 1 TiB
	MaxNameLen       = 255       // bytes, as most file systems allow
	headerSize       = 4 + 1 + 2 + 8 + 4
	// MaxManifestSize bounds an encoded manifest (the largest name and slice count).
	MaxManifestSize = headerSize + MaxNameLen + MaxSlices*HashSize + HashSize
)

var magic = [4]byte{'R', 'C', 'M', 'F'}

const version = 1

// Sentinel errors; every rejection wraps one of them.
var (
	ErrMalformed = errors.New("content: malformed manifest")
	ErrTooLarge  = errors.New("content: manifest too large")
	ErrBadName   = errors.New("content: invalid name")
	ErrCorrupt   = errors.New("content: slice does not match its hash")
	ErrBadID     = errors.New("content: invalid content ID")
)

// Hash is a BLAKE3-256 digest.
type Hash [HashSize]byte

// HashSlice returns the hash of one slice's bytes.
func HashSlice(b []byte) Hash { return blake3.Sum256(b) }

// String renders the hash in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ID identifies content: the BLAKE3-256 hash of its encoded manifest.
type ID Hash

// String renders the ID in lowercase hex (64 characters), the form used in adverts and on the
// command line.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the hex form of a content ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*HashSize {
		return id, fmt.Errorf("%w: %q is not %d hex digits", ErrBadID, s, 2*HashSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: %q: %v", ErrBadID, s, err)
	}
	return id, nil
}

// ValidateName checks that name is safe to use as a file name in a directory: non-empty, at
// most MaxNameLen bytes of valid UTF-8, not "." or "..", no path separator ('/' or '\'), no
// NUL or other control character. A name that passes cannot escape the directory it is joined
// to.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes (max %d)", ErrBadName, len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrBadName, name)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q refers to a directory", ErrBadName, name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%w: %q contains a path separator", ErrBadName, name)
	}
	for _, r := range name {
		if r == 0 || unicode.IsControl(r) {
			return fmt.Errorf("%w: %q contains a control character", ErrBadName, name)
		}
	}
	return nil
}

// Manifest describes one piece of content: its name, size, slicing and the hash of every
// slice, with a Merkle root over the slice hashes. A Manifest is immutable once built or
// decoded; use Build, BuildFile or Decode to get one.
type Manifest struct {
	Name      string
	Size      int64
	SliceSize int
	Hashes    []Hash // one per slice
	Root      Hash   // MerkleRoot(Hashes)

	id ID // hash of the encoding, set by Build/Decode
}

// NumSlices returns the number of slices for a size and slice size (the last may be short).
func NumSlices(size int64, sliceSize int) int {
	if size <= 0 || sliceSize <= 0 {
		return 0
	}
	return int((size + int64(sliceSize) - 1) / int64(sliceSize))
}

// NumSlices returns the number of slices.
func (m *Manifest) NumSlices() int { return len(m.Hashes) }

// Offset returns the byte offset of slice i in the content.
func (m *Manifest) Offset(i int) int64 { return int64(i) * int64(m.SliceSize) }

// SliceLen returns the length of slice i (the last one may be shorter), or 0 if i is out of
// range.
func (m *Manifest) SliceLen(i int) int { return SliceLen(m.Size, m.SliceSize, i) }

// SliceLen returns the length of slice i of content of the given size and slice size, or 0
// if i is out of range.
func SliceLen(size int64, sliceSize, i int) int {
	n := NumSlices(size, sliceSize)
	if i < 0 || i >= n {
		return 0
	}
	if i == n-1 {
		return int(size - int64(i)*int64(sliceSize))
	}
	return sliceSize
}

// ID returns the content ID: the hash of the encoded manifest.
func (m *Manifest) ID() ID { return m.id }

// Verify checks data against slice i's hash. It returns an error wrapping ErrCorrupt if the
// index is out of range, the length is wrong or the hash differs.
func (m *Manifest) Verify(i int, data []byte) error {
	if i < 0 || i >= len(m.Hashes) {
		return fmt.Errorf("%w: slice %d out of range [0,%d)", ErrCorrupt, i, len(m.Hashes))
	}
	if want := m.SliceLen(i); len(data) != want {
		return fmt.Errorf("%w: slice %d is %d bytes, want %d", ErrCorrupt, i, len(data), want)
	}
	if HashSlice(data) != m.Hashes[i] {
		return fmt.Errorf("%w: slice %d", ErrCorrupt, i)
	}
	return nil
}

// MerkleRoot returns the Merkle root over the slice hashes: leaves are the slice hashes,
// an inner node is BLAKE3(0x01 || left || right), an odd node at the end of a level is carried
// up unchanged, and the root of no slices is BLAKE3(0x00).
func MerkleRoot(hashes []Hash) Hash {
	if len(hashes) == 0 {
		return blake3.Sum256([]byte{0})
	}
	level := append([]Hash(nil), hashes...)
	var buf [1 + 2*HashSize]byte
	buf[0] = 1
	for len(level) > 1 {
		next := level[:0]
		for i := 0; i < len(level); i += 2 {
			if i+1 == len(level) {
				next = append(next, level[i])
				continue
			}
			copy(buf[1:], level[i][:])
			copy(buf[1+HashSize:], level[i+1][:])
			next = append(next, blake3.Sum256(buf[:]))
		}
		level = next
	}
	return level[0]
}

func checkGeometry(size int64, sliceSize int) error {
	if sliceSize < MinSliceSize || sliceSize > MaxSliceSize {
		return fmt.Errorf("%w: slice size %d outside [%d,%d]", ErrMalformed, sliceSize, MinSliceSize, MaxSliceSize)
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrMalformed, size)
	}
	if size > int64(MaxSlices)*int64(sliceSize) {
		return fmt.Errorf("%w: %d bytes in %d-byte slices exceeds %d slices", ErrTooLarge, size, sliceSize, MaxSlices)
	}
	return nil
}

// New assembles a manifest from known slice hashes (for example received in another form),
// checking name, geometry and hash count, and computing the root and ID.
func New(name string, size int64, sliceSize int, hashes []Hash) (*Manifest, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := checkGeometry(size, sliceSize); err != nil {
		return nil, err
	}
	if n := NumSlices(size, sliceSize); len(hashes) != n {
		return nil, fmt.Errorf("%w: %d hashes for %d slices", ErrMalformed, len(hashes), n)
	}
	m := &Manifest{Name: name, Size: size, SliceSize: sliceSize, Hashes: append([]Hash(nil), hashes...)}
	m.Root = MerkleRoot(m.Hashes)
	m.id = ID(blake3.Sum256(m.Encode()))
	return m, nil
}

// Build reads content from r until EOF, slices it and returns its manifest.
func Build(r io.Reader, name string, sliceSize int) (*Manifest, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := checkGeometry(0, sliceSize); err != nil {
		return nil, err
	}
	buf := make([]byte, sliceSize)
	var hashes []Hash
	var size int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if len(hashes) == MaxSlices {
				return nil, fmt.Errorf("%w: more than %d slices of %d bytes", ErrTooLarge, MaxSlices, sliceSize)
			}
			hashes = append(hashes, HashSlice(buf[:n]))
			size += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("content: read %s: %w", name, err)
		}
	}
	return New(name, size, sliceSize, hashes)
}

// SliceSizeFor returns the slice size to use for content of size bytes: want (rounded up to a
// power of two) unless that would exceed MaxSlices, then the smallest power of two that fits.
func SliceSizeFor(size int64, want int) int {
	ss := MinSliceSize
	for ss < want && ss < MaxSliceSize {
		ss *= 2
	}
	for ss < MaxSliceSize && NumSlices(size, ss) > MaxSlices {
		ss *= 2
	}
	return ss
}

// BuildFile slices the file at path. If name is empty the file's base name is used. If
// sliceSize is 0, SliceSizeFor(file size, DefaultSliceSize) is used.
func BuildFile(path, name string, sliceSize int) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("content: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("content: %w", err)
	}
	if name == "" {
		name = st.Name()
	}
	if sliceSize == 0 {
		sliceSize = SliceSizeFor(st.Size(), DefaultSliceSize)
	}
	return Build(f, name, sliceSize)
}

// Encode returns the canonical binary encoding:
//
//	"RCMF" | version u8 (1) | name length u16 | size u64 | slice size u32 |
//	name | slice hashes (32 bytes each, count implied by size and slice size) | Merkle root
//
// All integers are big-endian. There is exactly one encoding of every manifest.
func (m *Manifest) Encode() []byte {
	b := make([]byte, 0, headerSize+len(m.Name)+len(m.Hashes)*HashSize+HashSize)
	b = append(b, magic[:]...)
	b = append(b, version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Name)))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = binary.BigEndian.AppendUint32(b, uint32(m.SliceSize))
	b = append(b, m.Name...)
	for i := range m.Hashes {
		b = append(b, m.Hashes[i][:]...)
	}
	return append(b, m.Root[:]...)
}

// Decode parses an encoded manifest strictly: the exact length the header implies, a valid
// name, slice geometry within limits and a Merkle root matching the slice hashes. Its size is
// checked before anything is allocated.
func Decode(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(b), MaxManifestSize)
	}
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrMalformed, len(b))
	}
	if [4]byte(b[0:4]) != magic {
		return nil, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	if b[4] != version {
		return nil, fmt.Errorf("%w: unknown version %d", ErrMalformed, b[4])
	}
	nameLen := int(binary.BigEndian.Uint16(b[5:7]))
	size64 := binary.BigEndian.Uint64(b[7:15])
	sliceSize := int(binary.BigEndian.Uint32(b[15:19]))
	if size64 > 1<<62 {
		return nil, fmt.Errorf("%w: size %d", ErrMalformed, size64)
	}
	size := int64(size64)
	if nameLen > MaxNameLen {
		return nil, fmt.Errorf("%w: name of %d bytes (max %d)", ErrBadName, nameLen, MaxNameLen)
	}
	if err := checkGeometry(size, sliceSize); err != nil {
		return nil, err
	}
	n := NumSlices(size, sliceSize)
	if want := headerSize + nameLen + n*HashSize + HashSize; len(b) != want {
		return nil, fmt.Errorf("%w: %d bytes, header implies %d", ErrMalformed, len(b), want)
	}
	p := b[headerSize:]
	name := string(p[:nameLen])
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	p = p[nameLen:]
	hashes := make([]Hash, n)
	for i := range hashes {
		copy(hashes[i][:], p[i*HashSize:])
	}
	p = p[n*HashSize:]
	m := &Manifest{Name: name, Size: size, SliceSize: sliceSize, Hashes: hashes}
	m.Root = MerkleRoot(hashes)
	if Hash(p) != m.Root {
		return nil, fmt.Errorf("%w: Merkle root does not match the slice hashes", ErrMalformed)
	}
	m.id = ID(blake3.Sum256(b))
	return m, nil
}

// DecodeWithID decodes b and checks that it is the manifest of content id (its hash).
func DecodeWithID(b []byte, id ID) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(b), MaxManifestSize)
	}
	if ID(blake3.Sum256(b)) != id {
		return nil, fmt.Errorf("%w: manifest bytes do not hash to %s", ErrBadID, id)
	}
	return Decode(b)
}

// Parts is the number of equal parts a slice is divided into for partial repair: a receiver
// that holds most of a slice (from multicast) asks a peer only for the parts it misses, named
// by a 32-bit mask.
const Parts = 32

// PartBounds returns the byte range [off, end) of part k of a slice of sliceLen bytes. Parts
// are ceil(sliceLen/Parts) bytes; the last ones may be short or empty.
func PartBounds(sliceLen, k int) (off, end int) {
	p := (sliceLen + Parts - 1) / Parts
	off = min(k*p, sliceLen)
	end = min(off+p, sliceLen)
	return off, end
}

// PartMask returns the mask of the parts of a slice of sliceLen bytes that overlap [off, end).
func PartMask(sliceLen, off, end int) uint32 {
	p := (sliceLen + Parts - 1) / Parts
	if p == 0 || off >= end {
		return 0
	}
	var m uint32
	for k := off / p; k < Parts && k*p < end; k++ {
		m |= 1 << k
	}
	return m
}
