package advert_test

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/raftcast/raftcast/advert"
)

var update = flag.Bool("update", false, "rewrite the golden files and the seed fuzz corpora in testdata/")

// goldenAdvert is the fixed advert whose encodings are pinned in testdata/.
func goldenAdvert(t testing.TB) (*advert.Advert, *advert.Signed) {
	key, _ := testKey(t, 1)
	a := fullAdvert(t, advert.KindContent, key)
	return a, mustSeal(t, a, key) // Ed25519 signatures are deterministic
}

// TestGolden pins the wire encoding of the advert and of its signed envelope: a change here
// breaks every advertisement in circulation and every cache file on disk.
func TestGolden(t *testing.T) {
	a, s := goldenAdvert(t)
	payload := mustMarshal(t, a)
	for _, g := range []struct {
		file string
		data []byte
	}{
		{"golden_advert.hex", payload},
		{"golden_envelope.hex", s.Envelope},
	} {
		path := filepath.Join("testdata", g.file)
		if *update {
			if err := os.WriteFile(path, []byte(hex.EncodeToString(g.data)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
		}
		want, err := hex.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g.data, want) {
			t.Fatalf("%s: encoding changed:\n got %x\nwant %x", g.file, g.data, want)
		}
	}
	// The pinned envelope still opens to the pinned advert.
	got, err := advert.Open(s.Envelope, t0)
	if err != nil {
		t.Fatal(err)
	}
	assertSameAdvert(t, a, got.Advert)
}

// writeCorpus writes seed inputs for a fuzz target in the `go test fuzz v1` format.
func writeCorpus(t *testing.T, target string, seeds map[string][]byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteCorpus regenerates the committed seed corpora when run with -update.
func TestWriteCorpus(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/fuzz")
	}
	key, _ := testKey(t, 1)
	adverts := map[string][]byte{}
	envelopes := map[string][]byte{}
	for _, k := range allKinds {
		a := fullAdvert(t, k, key)
		adverts["valid-"+k.String()] = mustMarshal(t, a)
		envelopes["valid-"+k.String()] = mustSeal(t, a, key).Envelope
	}
	minimal := advert.New(advert.KindGroup, "g", "", key, time.Minute, t0)
	adverts["valid-minimal"] = mustMarshal(t, minimal)
	envelopes["valid-minimal"] = mustSeal(t, minimal, key).Envelope
	full := adverts["valid-content"]
	adverts["invalid-truncated"] = full[:len(full)/2]
	adverts["invalid-trailing"] = append(bytes.Clone(full), 0)
	adverts["invalid-kind"] = append([]byte{1, 9}, full[2:]...)
	adverts["invalid-empty"] = nil
	for _, b := range badEnvelopes(t) {
		if len(b.data) <= advert.MaxEnvelopeSize {
			envelopes["invalid-"+strings.ReplaceAll(b.name, " ", "-")] = b.data
		}
	}
	_, pid := testKey(t, 2)
	queries := map[string][]byte{}
	for name, q := range map[string]advert.Query{
		"valid-empty": {},
		"valid-kind":  {Kind: advert.KindPeer},
		"valid-full":  {Kind: advert.KindContent, ID: "c1", Name: "movies/*.mkv", Attrs: map[string]string{"a": "1", "group": "g1"}, Publisher: pid, Limit: 20},
	} {
		b, err := q.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		queries[name] = b
	}
	queries["invalid-trailing"] = append(bytes.Clone(queries["valid-full"]), 1)
	queries["invalid-glob"] = []byte{1, 0, 0, 1, '[', 0, 0, 0}
	writeCorpus(t, "FuzzUnmarshal", adverts)
	writeCorpus(t, "FuzzOpen", envelopes)
	writeCorpus(t, "FuzzQueryUnmarshal", queries)
}
