package advert_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/advert"
)

func TestQueryMatch(t *testing.T) {
	key, pid := testKey(t, 1)
	_, other := testKey(t, 2)
	a := fullAdvert(t, advert.KindContent, key) // name files/content/report.pdf, attrs size, group, é
	for _, tc := range []struct {
		q    advert.Query
		want bool
	}{
		{advert.Query{}, true},
		{advert.Query{Kind: advert.KindContent}, true},
		{advert.Query{Kind: advert.KindPipe}, false},
		{advert.Query{ID: "res-content"}, true},
		{advert.Query{ID: "res-con"}, false},
		{advert.Query{Name: "files/content/report.pdf"}, true},
		{advert.Query{Name: "files/*/*.pdf"}, true},
		{advert.Query{Name: "files/*"}, false}, // * does not cross "/"
		{advert.Query{Name: "*"}, false},
		{advert.Query{Name: "files/content/report.[pq]df"}, true},
		{advert.Query{Name: "files/content/report.pd?"}, true},
		{advert.Query{Name: "["}, false},
		{advert.Query{Publisher: pid}, true},
		{advert.Query{Publisher: other}, false},
		{advert.Query{Attrs: map[string]string{"group": "g1"}}, true},
		{advert.Query{Attrs: map[string]string{"group": "g1", "size": "1048576"}}, true},
		{advert.Query{Attrs: map[string]string{"group": "g1", "size": "1"}}, false},
		{advert.Query{Attrs: map[string]string{"missing": ""}}, false},
		{advert.Query{Kind: advert.KindContent, ID: "res-content", Name: "files/**", Publisher: pid}, false},
	} {
		if got := tc.q.Match(a); got != tc.want {
			t.Errorf("%+v.Match = %v, want %v", tc.q, got, tc.want)
		}
	}
	if (advert.Query{}).Match(nil) {
		t.Error("Match(nil) = true")
	}
}

func TestQueryValidate(t *testing.T) {
	_, pid := testKey(t, 1)
	ok := advert.Query{Kind: advert.KindPeer, ID: "x", Name: "a*", Attrs: map[string]string{"k": "v"}, Publisher: pid, Limit: 5}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		q    advert.Query
		want error
	}{
		{"kind", advert.Query{Kind: 9}, advert.ErrUnknownKind},
		{"bad glob", advert.Query{Name: "a["}, advert.ErrMalformed},
		{"long name", advert.Query{Name: strings.Repeat("n", advert.MaxNameLen+1)}, advert.ErrTooLarge},
		{"long id", advert.Query{ID: strings.Repeat("n", advert.MaxIDLen+1)}, advert.ErrTooLarge},
		{"utf8", advert.Query{ID: "\xff"}, advert.ErrMalformed},
		{"empty attr key", advert.Query{Attrs: map[string]string{"": "v"}}, advert.ErrMalformed},
		{"long attr value", advert.Query{Attrs: map[string]string{"k": strings.Repeat("v", advert.MaxAttrValueLen+1)}}, advert.ErrTooLarge},
		{"bad publisher", advert.Query{Publisher: peer.ID("nope")}, advert.ErrMalformed},
		{"negative limit", advert.Query{Limit: -1}, advert.ErrMalformed},
		{"big limit", advert.Query{Limit: advert.MaxQueryLimit + 1}, advert.ErrTooLarge},
	} {
		err := tc.q.Validate()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Validate = %v, want %v", tc.name, err, tc.want)
		}
		if _, err := tc.q.MarshalBinary(); !errors.Is(err, tc.want) {
			t.Errorf("%s: MarshalBinary = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestQueryCodec(t *testing.T) {
	_, pid := testKey(t, 1)
	for _, q := range []advert.Query{
		{},
		{Kind: advert.KindRendezvous},
		{Kind: advert.KindContent, ID: "c1", Name: "movies/*.mkv", Attrs: map[string]string{"b": "2", "a": "1"}, Publisher: pid, Limit: advert.MaxQueryLimit},
	} {
		b, err := q.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got advert.Query
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, q) {
			t.Fatalf("round trip: got %+v want %+v", got, q)
		}
		b2, _ := got.MarshalBinary()
		if !bytes.Equal(b, b2) {
			t.Fatal("re-encoding differs")
		}
	}
	// Strictness.
	good, _ := advert.Query{Kind: advert.KindPipe, Name: "x", Attrs: map[string]string{"a": "1", "b": "2"}}.MarshalBinary()
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":           {nil, advert.ErrMalformed},
		"version":         {append([]byte{2}, good[1:]...), advert.ErrMalformed},
		"kind":            {append([]byte{1, 99}, good[2:]...), advert.ErrUnknownKind},
		"trailing":        {append(bytes.Clone(good), 0), advert.ErrMalformed},
		"truncated":       {good[:len(good)-1], advert.ErrMalformed},
		"unsorted attrs":  {bytes.Replace(bytes.Clone(good), []byte("\x01a\x011\x01b\x012"), []byte("\x01b\x012\x01a\x011"), 1), advert.ErrMalformed},
		"duplicate attrs": {bytes.Replace(bytes.Clone(good), []byte("\x01a\x011\x01b\x012"), []byte("\x01a\x011\x01a\x012"), 1), advert.ErrMalformed},
		"big limit":       {append(bytes.Clone(good[:len(good)-1]), 0xff, 0xff, 0x03), advert.ErrTooLarge},
		"huge name len":   {[]byte{1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, advert.ErrTooLarge},
	} {
		var q advert.Query
		if err := q.UnmarshalBinary(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: UnmarshalBinary = %v, want %v", name, err, tc.want)
		}
	}
}
