package transfer

import (
	"bytes"
	"testing"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/transfer/content"
)

func TestContentAdvert(t *testing.T) {
	m, err := content.Build(bytes.NewReader(make([]byte, 100000)), "film.mkv", content.MinSliceSize)
	if err != nil {
		t.Fatal(err)
	}
	a := ContentAdvert(m)
	if a.Kind != advert.KindContent || a.Name != "film.mkv" || len(a.ID) > advert.MaxIDLen {
		t.Fatalf("%+v", a)
	}
	id, size, err := ParseContentAdvert(a)
	if err != nil || id != m.ID() || size != m.Size {
		t.Fatalf("parse: %v %v %v", id, size, err)
	}
	a.Kind = advert.KindPipe
	if _, _, err := ParseContentAdvert(a); err == nil {
		t.Fatal("pipe advert accepted")
	}
}
