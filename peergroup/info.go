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
	e := encoder{b: make([]byte, 0, 256)}
	e.u8(groupInfoVersion)
	(&GroupInit{Header: Header{ID: gi.ID, Name: gi.Name, Policy: gi.Policy, Creator: gi.Creator, Created: gi.Created}}).encode(&e)
	e.uvarint(uint64(gi.Members))
	e.uvarint(gi.Capacity)
	domains := gi.Domains[:min(len(gi.Domains), maxDomains)]
	e.count(len(domains))
	for _, d := range domains {
		e.str(d)
	}
	contacts := gi.Contacts[:min(len(gi.Contacts), maxContacts)]
	e.count(len(contacts))
	for _, c := range contacts {
		e.peer(c.ID)
		e.addrs(c.Addrs[:min(len(c.Addrs), maxAddrs)])
	}
	return e.b
}

// DecodeGroupInfo decodes and checks a group info.
func DecodeGroupInfo(b []byte) (GroupInfo, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != groupInfoVersion {
		return GroupInfo{}, fmt.Errorf("%w: group info version %d (this node knows %d)", ErrMalformed, v, groupInfoVersion)
	}
	var gi GroupInit
	gi.decode(&d)
	info := GroupInfo{ID: gi.Header.ID, Name: gi.Header.Name, Policy: gi.Header.Policy, Creator: gi.Header.Creator, Created: gi.Header.Created}
	info.Members = int(min(d.uvarint(), 1<<20))
	info.Capacity = d.uvarint()
	n := d.count(maxDomains, "domains")
	for i := 0; i < n && d.err == nil; i++ {
		info.Domains = append(info.Domains, d.str(maxNameLen, "domain"))
	}
	n = d.count(maxContacts, "contacts")
	for i := 0; i < n && d.err == nil; i++ {
		info.Contacts = append(info.Contacts, peer.AddrInfo{ID: d.peer(), Addrs: d.addrs()})
	}
	if err := d.finish(); err != nil {
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
	var e encoder
	e.str("raftcast/group-id/v1")
	e.peer(creator)
	e.str(name)
	e.bytes(nonce)
	sum := sha256.Sum256(e.b)
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
}

const (
	metaFile    = "group.meta"
	membersFile = "members"
	metaMagic   = "RCGM"
	bookMagic   = "RCGB"
)

func (gm *groupMeta) marshal() []byte {
	e := encoder{}
	e.fixed([]byte(metaMagic))
	e.u8(1)
	(&GroupInit{Header: gm.Header}).encode(&e)
	e.bytes(gm.Key)
	return e.b
}

func readMeta(dir string) (*groupMeta, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, err
	}
	d := decoder{b: b}
	if m := d.fixed(4); d.err == nil && string(m) != metaMagic {
		return nil, fmt.Errorf("%w: %s is not a group meta file", ErrMalformed, dir)
	}
	if v := d.u8(); d.err == nil && v != 1 {
		return nil, fmt.Errorf("%w: group meta version %d", ErrMalformed, v)
	}
	var gi GroupInit
	gi.decode(&d)
	gm := &groupMeta{Header: gi.Header, Key: d.bytes(keyLen, "key")}
	if err := d.finish(); err != nil {
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
	e := encoder{}
	e.fixed([]byte(bookMagic))
	e.u8(1)
	e.count(len(ps))
	for _, p := range ps {
		e.peer(p.ID)
		e.addrs(p.Addrs[:min(len(p.Addrs), maxAddrs)])
	}
	return e.b
}

func readBook(dir string) ([]peer.AddrInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, membersFile))
	if err != nil {
		return nil, err
	}
	d := decoder{b: b}
	if m := d.fixed(4); d.err == nil && string(m) != bookMagic {
		return nil, fmt.Errorf("%w: not a members file", ErrMalformed)
	}
	d.u8()
	n := d.count(maxListLen, "members")
	var out []peer.AddrInfo
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, peer.AddrInfo{ID: d.peer(), Addrs: d.addrs()})
	}
	return out, d.finish()
}
