package transfer

import (
	"fmt"
	"strconv"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/transfer/content"
)

// Attribute keys of a content advertisement.
const (
	AttrSize      = "size"       // bytes, decimal
	AttrSlices    = "slices"     // number of slices, decimal
	AttrSliceSize = "slice_size" // bytes, decimal
	AttrRoot      = "root"       // Merkle root, hex
)

// ContentAdvert returns the content advertisement of m, to be published by the source (the
// overlay fills in publisher, times and sequence number): kind content, ID the content ID,
// Name the manifest's name, and the size, slice count, slice size and Merkle root as
// attributes. Receivers fetch the manifest itself by content ID (verified by its hash).
func ContentAdvert(m *content.Manifest) *advert.Advert {
	return &advert.Advert{
		Kind: advert.KindContent,
		ID:   m.ID().String(),
		Name: m.Name,
		Attrs: map[string]string{
			AttrSize:      strconv.FormatInt(m.Size, 10),
			AttrSlices:    strconv.Itoa(m.NumSlices()),
			AttrSliceSize: strconv.Itoa(m.SliceSize),
			AttrRoot:      m.Root.String(),
		},
	}
}

// ParseContentAdvert returns the content ID and size a content advertisement announces.
func ParseContentAdvert(a *advert.Advert) (content.ID, int64, error) {
	if a.Kind != advert.KindContent {
		return content.ID{}, 0, fmt.Errorf("transfer: %s advertisement is not a content advertisement", a.Kind)
	}
	id, err := content.ParseID(a.ID)
	if err != nil {
		return content.ID{}, 0, err
	}
	size, err := strconv.ParseInt(a.Attrs[AttrSize], 10, 64)
	if err != nil || size < 0 {
		return content.ID{}, 0, fmt.Errorf("transfer: content advertisement %s: bad size %q", a.ID, a.Attrs[AttrSize])
	}
	return id, size, nil
}
