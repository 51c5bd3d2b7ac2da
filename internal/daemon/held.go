package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/raftcast/raftcast/transfer"
	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/store"
)

// heldDir, under the data dir, records the contents this node holds whole and serves: what it
// shared and what it received. A restarted daemon serves them again (restoreHeld): without
// the record a source that restarted left its group's catalogue naming content that it no
// longer served, and holders stopped serving what they had received.
//
// Each content has two files, written atomically: <ID>.manifest (content.Manifest.Encode)
// and then <ID>.json (heldRecord), so that a record never lacks its manifest.
const heldDir = "held"

// heldRecord is what a restarted daemon needs to serve a content again.
type heldRecord struct {
	Kind  transfer.Kind `json:"kind"`            // share or get
	Path  string        `json:"path"`            // the shared file, or the get's output
	Group string        `json:"group"`           // the group it was shared or received in
	Rate  int64         `json:"rate,omitempty"`  // a share's --rate (bytes/s; 0: from the links)
	Proxy bool          `json:"proxy,omitempty"` // received as its domain's proxy (sourceInfo.proxy)
}

// heldEntry is one record read back, with its manifest.
type heldEntry struct {
	m   *content.Manifest
	rec heldRecord
}

// heldStore reads and writes the records in dir.
type heldStore struct{ dir string }

func (h heldStore) paths(id content.ID) (manifest, record string) {
	base := filepath.Join(h.dir, id.String())
	return base + ".manifest", base + ".json"
}

// put records m as held (replacing an older record of it).
func (h heldStore) put(m *content.Manifest, rec heldRecord) error {
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return fmt.Errorf("recording held content: %w", err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	mp, rp := h.paths(m.ID())
	if err := store.WriteFileAtomic(mp, m.Encode(), 0o600); err != nil {
		return err
	}
	return store.WriteFileAtomic(rp, b, 0o600)
}

// has reports whether id is recorded.
func (h heldStore) has(id content.ID) bool {
	_, rp := h.paths(id)
	_, err := os.Stat(rp)
	return err == nil
}

// drop removes id's record (the record first: a manifest alone is ignored).
func (h heldStore) drop(id content.ID) error {
	mp, rp := h.paths(id)
	if err := os.Remove(rp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(mp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// load reads every record. A record that cannot be read (malformed, its manifest missing or
// not the content its name says) is left in place and reported in errs, one error each; the
// others load.
func (h heldStore) load() (entries []heldEntry, errs []error) {
	des, err := os.ReadDir(h.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("reading held contents: %w", err)}
	}
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || de.IsDir() {
			continue
		}
		e, err := h.read(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("held content record %s: %w", de.Name(), err))
			continue
		}
		entries = append(entries, e)
	}
	return entries, errs
}

func (h heldStore) read(name string) (heldEntry, error) {
	id, err := content.ParseID(name)
	if err != nil {
		return heldEntry{}, err
	}
	mp, rp := h.paths(id)
	b, err := os.ReadFile(rp)
	if err != nil {
		return heldEntry{}, err
	}
	var rec heldRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return heldEntry{}, fmt.Errorf("malformed: %w", err)
	}
	if rec.Kind != transfer.KindShare && rec.Kind != transfer.KindGet {
		return heldEntry{}, fmt.Errorf("unknown kind %q", rec.Kind)
	}
	if !filepath.IsAbs(rec.Path) {
		return heldEntry{}, fmt.Errorf("path %q is not absolute", rec.Path)
	}
	mb, err := os.ReadFile(mp)
	if err != nil {
		return heldEntry{}, err
	}
	m, err := content.DecodeWithID(mb, id)
	if err != nil {
		return heldEntry{}, err
	}
	return heldEntry{m: m, rec: rec}, nil
}

// restoreHeld serves again the contents recorded as held: a share answers wants with passes
// as before the restart (newDist bound every group's coordination pipe), a proxy's content
// too while the group still names it its domain's proxy, and each is advertised again. A
// record whose group this node left, or whose file is gone or changed in size, is dropped
// with a warning (share the file again to serve it); one that cannot be read or served for
// another reason (permissions, say) is reported and kept for the next start.
func (ds *dist) restoreHeld() {
	entries, errs := ds.held.load()
	for _, err := range errs {
		ds.d.log.Warn("not serving a held content", "err", err)
	}
	for _, e := range entries {
		id, rec := e.m.ID(), e.rec
		g, err := ds.d.groups.lookup(rec.Group)
		gone := err != nil
		if err == nil {
			err = ds.eng.Serve(e.m, rec.Path, rec.Kind)
			gone = errors.Is(err, os.ErrNotExist) || errors.Is(err, store.ErrChanged)
		}
		if err != nil {
			if !gone {
				ds.d.log.Warn("not serving a held content (tried again at the next start)", "content", id, "name", e.m.Name, "path", rec.Path, "err", err)
				continue
			}
			ds.d.log.Warn("no longer serving held content: its record is dropped", "content", id, "name", e.m.Name, "path", rec.Path, "err", err)
			if err := ds.held.drop(id); err != nil {
				ds.d.log.Warn("dropping a held content's record", "content", id, "err", err)
			}
			continue
		}
		role := "holder"
		switch {
		case rec.Kind == transfer.KindShare:
			role = "source"
			ds.mu.Lock()
			ds.sources[id] = sourceInfo{rate: rec.Rate, size: e.m.Size, group: g}
			ds.mu.Unlock()
		case rec.Proxy:
			ds.keepProxy(id, e.m.Size, g)
		}
		ds.d.log.Info("serving held content again", "content", id, "name", e.m.Name, "role", role, "group", g.Name(), "path", rec.Path)
		ds.wg.Go(func() {
			ctx, cancel := context.WithTimeout(ds.ctx, 30*time.Second)
			defer cancel()
			if err := ds.advertise(ctx, g, id, e.m.Name, e.m.Size, role); err != nil {
				ds.d.log.Warn("advertising held content", "content", id, "err", err)
			}
		})
	}
}
