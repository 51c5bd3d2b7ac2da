package peergroup

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/internal/bincodec"
)

// GroupInfo is what a peer needs to join a group: what goes into the body of the group's
// advertisement (advert.KindGroup). It carries no secret and nothing derived from one.
type GroupInfo struct {
	ID      string
	Name    string
	Policy  Policy
	Creator peer.ID
	Created time.Time
	// Members is the group's size when the info was made (for the tracker).
	Members int
	// Capacity is the members' total announced capacity (for the tracker).
	Capacity uint64
	// Domains lists the members' multicast domains (for the tracker).
	Domains []string
	// Contacts are members to send the join request to, the leader first.
	Contacts []peer.AddrInfo
}

const (
	groupInfoVersion = 1
	maxContacts      = 16
	maxDomains       = 16
)

// EncodeGroupInfo encodes a group info (the advertisement body).
func EncodeGroupInfo(gi GroupInfo) []byte {
	e := bincodec.Encoder{B: make([]byte, 0, 256)}
	e.U8(groupInfoVersion)
	(&GroupInit{Header: Header{ID: gi.ID, Name: gi.Name, Policy: gi.Policy, Creator: gi.Creator, Created: gi.Created}}).encode(&e)
	e.Uvarint(uint64(gi.Members))
	e.Uvarint(gi.Capacity)
	domains := gi.Domains[:min(len(gi.Domains), maxDomains)]
	e.Count(len(domains))
	for _, d := range domains {
		e.Str(d)
	}
	contacts := gi.Contacts[:min(len(gi.Contacts), maxContacts)]
	e.Count(len(contacts))
	for _, c := range contacts {
		e.Peer(c.ID)
		e.Addrs(c.Addrs[:min(len(c.Addrs), maxAddrs)])
	}
	return e.B
}

// DecodeGroupInfo decodes and checks a group info.
func DecodeGroupInfo(b []byte) (GroupInfo, error) {
	d := bincodec.NewDecoder(b, ErrMalformed)
	if v := d.U8(); d.Err() == nil && v != groupInfoVersion {
		return GroupInfo{}, fmt.Errorf("%w: group info version %d (this node knows %d)", ErrMalformed, v, groupInfoVersion)
	}
	var gi GroupInit
	gi.decode(&d)
	info := GroupInfo{ID: gi.Header.ID, Name: gi.Header.Name, Policy: gi.Header.Policy, Creator: gi.Header.Creator, Created: gi.Header.Created}
	info.Members = int(min(d.Uvarint(), 1<<20))
	info.Capacity = d.Uvarint()
	n := d.Count(maxDomains, "domains")
	for i := 0; i < n && d.Err() == nil; i++ {
		info.Domains = append(info.Domains, d.Str(maxNameLen, "domain"))
	}
	n = d.Count(maxContacts, "contacts")
	for i := 0; i < n && d.Err() == nil; i++ {
		info.Contacts = append(info.Contacts, peer.AddrInfo{ID: d.Peer(), Addrs: d.Addrs(maxAddrs, maxAddrLen)})
	}
	if err := d.Finish(); err != nil {
		return GroupInfo{}, fmt.Errorf("group info: %w", err)
	}
	if err := gi.check(); err != nil {
		return GroupInfo{}, err
	}
	return info, nil
}

// Load is what the tracker weighs about the group (TrackerPolicy.Pick).
func (gi GroupInfo) Load() GroupLoad {
	return GroupLoad{ID: gi.ID, Members: gi.Members, Capacity: gi.Capacity, Domains: gi.Domains}
}

// newGroupID derives a group ID from the creator, the name and a random nonce: 24 hex digits
// of SHA-256, stable for the group's life (it is written in the group's first log entry).
func newGroupID(creator peer.ID, name string) string {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	var e bincodec.Encoder
	e.Str("raftcast/group-id/v1")
	e.Peer(creator)
	e.Str(name)
	e.Bytes(nonce)
	sum := sha256.Sum256(e.B)
	return hex.EncodeToString(sum[:12])
}

// validGroupID reports whether id is safe as a directory name and in a protocol ID.
func validGroupID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// groupMeta is this node's local record of a group it is in (file group.meta, mode 0600):
// the header and, for secret groups, the group key. It is not replicated.
type groupMeta struct {
	Header Header
	Key    []byte
	// AdmitIndex is the log index of the MemberAdd that admitted this node (0 for the
	// creator, or from a leader that does not say). The log this node receives may hold an
	// earlier membership of its own that ended (it left and came back): only a state at or
	// past this index counts as having been a member.
	AdmitIndex uint64
}

const (
	metaFile    = "group.meta"
	membersFile = "members"
	metaMagic   = "RCGM"
	bookMagic   = "RCGB"
)

func (gm *groupMeta) marshal() []byte {
	e := bincodec.Encoder{}
	e.Fixed([]byte(metaMagic))
	e.U8(1)
	(&GroupInit{Header: gm.Header}).encode(&e)
	e.Bytes(gm.Key)
	e.Uvarint(gm.AdmitIndex) // optional: meta files written before it end after the key
	return e.B
}

func readMeta(dir string) (*groupMeta, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, err
	}
	d := bincodec.NewDecoder(b, ErrMalformed)
	if m := d.Fixed(4); d.Err() == nil && string(m) != metaMagic {
		return nil, fmt.Errorf("%w: %s is not a group meta file", ErrMalformed, dir)
	}
	if v := d.U8(); d.Err() == nil && v != 1 {
		return nil, fmt.Errorf("%w: group meta version %d", ErrMalformed, v)
	}
	var gi GroupInit
	gi.decode(&d)
	gm := &groupMeta{Header: gi.Header, Key: d.Bytes(keyLen, "key")}
	if d.Err() == nil && d.Len() > 0 {
		gm.AdmitIndex = d.Uvarint()
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	if err := gi.check(); err != nil {
		return nil, err
	}
	return gm, nil
}

// writeFileAtomic writes a file with mode 0600 through a temporary file and a rename.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// The members file is this node's address book of the group (peer IDs and addresses), kept
// so that after a restart it can reach the group before its log is replayed.
func marshalBook(ps []peer.AddrInfo) []byte {
	e := bincodec.Encoder{}
	e.Fixed([]byte(bookMagic))
	e.U8(1)
	e.Count(len(ps))
	for _, p := range ps {
		e.Peer(p.ID)
		e.Addrs(p.Addrs[:min(len(p.Addrs), maxAddrs)])
	}
	return e.B
}

func readBook(dir string) ([]peer.AddrInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, membersFile))
	if err != nil {
		return nil, err
	}
	d := bincodec.NewDecoder(b, ErrMalformed)
	if m := d.Fixed(4); d.Err() == nil && string(m) != bookMagic {
		return nil, fmt.Errorf("%w: not a members file", ErrMalformed)
	}
	d.U8()
	n := d.Count(maxListLen, "members")
	var out []peer.AddrInfo
	for i := 0; i < n && d.Err() == nil; i++ {
		out = append(out, peer.AddrInfo{ID: d.Peer(), Addrs: d.Addrs(maxAddrs, maxAddrLen)})
	}
	return out, d.Finish()
}
