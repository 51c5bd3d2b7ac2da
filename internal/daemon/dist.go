package daemon

// Group distribution (issue 5) as the daemon runs it:
//
//   - share: the engine slices the file and serves it; a content advertisement (attrs: size,
//     slices, group, role=source) is published and the content is added to the group's
//     catalogue.
//   - get: the receiver resolves the content (by ID or name) from content advertisements,
//     subscribes to its multicast domain's data channel, and announces "want" on the group's
//     coordination pipe (a propagate pipe, one per group). It receives by multicast and repairs
//     from peers (group members and holders that advertise the content).
//   - The source answers wants from its own multicast domain with a paced multicast pass
//     (wants that arrive within passWindow share one pass, or fewer once every member of the
//     domain wants it), paced at --rate or 96 % of the slowest link known (passRate).
//   - In a multicast domain without the source, a wanting receiver that has heard no smaller
//     wanting peer of its domain claims to be the domain's proxy in the group state as soon as
//     it hears a want from the source's domain (at most wantWindow after its get): ProxySet,
//     through Raft; of claims made at once the log's order picks one, and the others withdraw
//     theirs (ProxyDrop). The proxy pulls the content from peers and re-multicasts every
//     slice it obtains into its domain (paced at relayShare, 92 %, of the link: its uplink
//     also carries its intake's acknowledgements). The other receivers of the domain
//     watch it (watchProxy): once it is dead, the smallest live wanting peer of the domain
//     claims the role in its place and relays what it holds and gains from then on.
//   - A receiver that completed publishes a content advertisement with role=holder and keeps
//     serving. A proxy that completed and is still its domain's recorded proxy answers wants
//     from its domain with passes, as the source does in its own: a get started there later
//     receives by multicast from it.
//   - What a node shared or received whole is recorded in its data dir (held.go): a restarted
//     daemon serves it again, its source answering wants with passes.

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/advert"
	"github.com/raftcast/raftcast/internal/linkrate"
	"github.com/raftcast/raftcast/peergroup"
	"github.com/raftcast/raftcast/pipes"
	"github.com/raftcast/raftcast/transfer"
	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/mcast"
	"github.com/raftcast/raftcast/transfer/mcast/pipesch"
)

// distPipe is the name of each group's coordination pipe.
const distPipe = "raftcast.dist"

// DefaultRate is the pace of a multicast pass when no rate is given and no link's rate is
// known: 95 Mbit/s, what a 100 Mbit/s link carries with headroom.
const DefaultRate = 95_000_000 / 8

// linkShare is the share of the slowest known link a pass is paced at when no rate is given.
// The pace counts datagrams, their own header included, but not UDP, IP and Ethernet headers:
// with 1400-byte datagrams over IPv4 those add 3 %, so 96 % leaves the link about 1 % for the
// group's other traffic. Measured (testnet/bench --cases raftcast-1domain, 256 MiB, three
// alternated runs each): 1.067-1.075 × bound against 1.078-1.079 at 95 %, with no more
// slices repaired from peers; with 1 % loss 1.132-1.134 against 1.137-1.145.
const linkShare = 0.96

// relayShare is the share of the slowest known link a proxy's relay is paced at (linkShare
// for a pass). The proxy's uplink carries its relay and the acknowledgements of its intake
// (about 2 % of the link over TCP): at 96 % the relay filled it, the acknowledgements queued
// behind it (27-35 ms round trips on the intake's connections) and the intake slowed, worst
// with loss, where it set the second domain's time. Measured (testnet/bench --cases
// raftcast-2domain, 256 MiB, alternated with the relay at 96 %): with --loss 1 1.416 and
// 1.386 × bound against 1.589 and 1.575; without loss 1.215 and 1.196 against 1.221 and
// 1.213 (the relay at 96 % could not keep its pace anyway).
const relayShare = 0.92

// wantWindow is how long a receiver outside the source's domain waits, at most, to hear a
// want from another domain before it sets up its get: whether receivers in the source's domain
// take the source's multicast decides whether its domain's proxy leaves the source's uplink
// alone (proxySourceDelay). Gets started together hear each other within milliseconds; the
// proxy is then claimed at once, the group's log ordering concurrent claims. Every
// millisecond here delays the whole domain: with a fixed 1 s window the proxy's relay, and so
// every receiver of its domain, started about 1.35 s after the gets.
const wantWindow = 300 * time.Millisecond

// passWindow is how long the source gathers wants before one multicast pass: gets started
// together arrive within it; a later one joins the pass under way and repairs the slices it
// missed from peers. Every millisecond here adds to every receiver's time.
const passWindow = 300 * time.Millisecond

type dist struct {
	d     *Daemon
	eng   *transfer.Engine
	mc    mcast.Channel // the node's native multicast data channel; nil without one
	demux *mcast.Demux  // mc shared among receivers, by content

	mu      sync.Mutex                       // guards sources, wants, lastPass, listening
	sources map[content.ID]sourceInfo        // contents this node is the source of, or a proxy that holds them complete
	wants   map[content.ID]map[peer.ID]int64 // wanting peers heard, by content: their link rate (bits/s, 0 unknown)
	passAt  map[content.ID]time.Time         // until when a scheduled or running pass covers new wants
	passGo  map[content.ID]chan struct{}     // closed to start a scheduled pass before passWindow ends
	listen  map[string]bool                  // groups whose coordination pipe is bound
	heard   chan struct{}                    // closed, and replaced, when a want is heard
	held    heldStore                        // contents held whole, served again after a restart
	wg      sync.WaitGroup
	ctx     context.Context
}

// sourceInfo is what the source keeps of a content it shares, and a proxy of one it relayed.
type sourceInfo struct {
	rate  int64 // multicast pace, bytes/s; 0: from the links (passRate)
	size  int64
	group *peergroup.Group
	proxy bool // this node is not the source but was its domain's proxy, and holds it complete
}

func newDist(ctx context.Context, d *Daemon, eng *transfer.Engine) *dist {
	ds := &dist{
		d: d, eng: eng, ctx: ctx,
		sources: map[content.ID]sourceInfo{},
		wants:   map[content.ID]map[peer.ID]int64{},
		passAt:  map[content.ID]time.Time{},
		passGo:  map[content.ID]chan struct{}{},
		listen:  map[string]bool{},
		heard:   make(chan struct{}),
		held:    heldStore{dir: filepath.Join(d.cfg.DataDir, heldDir)},
	}
	if mc := d.pipes.Multicast(); mc != nil {
		ds.mc = pipesch.Channel{C: mc}
		buf := mc.RecvBuffer()
		q := demuxQueueFor(buf)
		ds.demux = mcast.NewDemux(ds.mc, q)
		d.log.Debug("multicast receive buffering", "socket_buffer", buf, "queue", q)
	}
	for _, g := range d.groups.m.Groups() { // reopened from the data dir (groups.added for the others)
		if err := ds.ensureListening(g); err != nil {
			d.log.Warn("binding the group's coordination pipe", "group", g.Name(), "err", err)
		}
	}
	d.node.Resolver().Handle(handlerWant, func(_ context.Context, from peer.ID, req []byte) ([]byte, error) {
		op, id, link, err := decodeCoord(req)
		if err != nil {
			return nil, err
		}
		if op != opWant {
			return nil, fmt.Errorf("coordination op %q on the want handler", op)
		}
		ds.onWant(id, from, link)
		return nil, nil
	})
	return ds
}

// handlerWant is the resolver handler through which a receiver tells the source directly that
// it wants a content (the coordination pipe tells the rest of the group).
const handlerWant = "dist.want"

// wantSource tells the source that this node wants id, again every second until multicast
// bytes arrive or ctx ends (at most wantRepeats times): the source starts a pass for the
// wanting peers of its domain.
func (ds *dist) wantSource(ctx context.Context, id content.ID, source peer.ID, link int64, gotMulticast func() bool) {
	const wantRepeats = 8
	msg := encodeCoord(opWant, id, link)
	for i := 0; i < wantRepeats && !gotMulticast(); i++ {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := ds.d.node.Resolver().Query(qctx, source, handlerWant, msg)
		cancel()
		if err != nil {
			ds.d.log.Debug("telling the source", "source", source, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// demuxQueueFor bounds the datagrams waiting for one receiver, given the data sockets'
// receive buffer. While the queue is full the Demux stops reading and the backlog waits in the
// socket buffer; past both, datagrams are dropped and the receiver repairs what it misses from
// peers. A socket buffer of 16 MiB or more (granted to root) holds about a second at
// 100 Mbit/s, so a short queue keeps the backlog out of the process (its memory then does not
// depend on how far a receiver falls behind); a small one (rmem_max without the privilege)
// leaves the backlog to a long queue in the process.
func demuxQueueFor(recvBuffer int) int {
	if recvBuffer >= 16<<20 {
		return 1024
	}
	return 16384
}

// wait waits for the background work to end (cancel its context first).
func (ds *dist) wait() {
	ds.wg.Wait()
	if ds.demux != nil {
		ds.demux.Close()
	}
}

// group picks the group a share/get runs in: the named one, or the node's only group.
func (ds *dist) group(name string) (*peergroup.Group, error) {
	if name != "" {
		return ds.d.groups.lookup(name)
	}
	gs := ds.d.groups.m.Groups()
	switch len(gs) {
	case 1:
		return gs[0], nil
	case 0:
		return nil, usagef("this node is in no group: create or join one, or give --group")
	}
	return nil, usagef("this node is in %d groups: say which with --group", len(gs))
}

// Coordination message: op | content ID | the sender's link rate (u64 bits/s, 0 unknown;
// absent from older nodes' messages).
const (
	opWant = 'W'
	opDone = 'D' // the sender's get of the content ended: it no longer wants it
)

func encodeCoord(op byte, id content.ID, link int64) []byte {
	b := append([]byte{op}, id[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(max(link, 0)))
}

func decodeCoord(b []byte) (op byte, id content.ID, link int64, err error) {
	n := 1 + len(id)
	if (len(b) != n && len(b) != n+8) || (b[0] != opWant && b[0] != opDone) {
		return 0, id, 0, fmt.Errorf("malformed coordination message (%d bytes)", len(b))
	}
	copy(id[:], b[1:])
	if len(b) == n+8 {
		link = int64(min(binary.BigEndian.Uint64(b[n:]), math.MaxInt64))
	}
	if link < minLinkRate {
		link = 0 // unknown: a rate this low would stall every pass (a bogus or hostile want)
	}
	return b[0], id, link, nil
}

// minLinkRate is the lowest link rate a want may report (bits/s); below it counts as unknown.
const minLinkRate = 1_000_000

// linkRate is the slowest rate among this node's multicast interfaces, as its host knows
// them (linkrate.Of); unknown without native multicast or when no interface's rate is known.
func (ds *dist) linkRate() linkrate.Rate {
	mc := ds.d.pipes.Multicast()
	if mc == nil {
		return linkrate.Rate{}
	}
	var rs []linkrate.Rate
	for _, name := range mc.Interfaces() {
		r, err := linkrate.Of(name)
		if err != nil {
			ds.d.log.Debug("link rate", "iface", name, "err", err)
			continue
		}
		rs = append(rs, r)
	}
	return linkrate.Min(rs...)
}

// passRate is the pace of a pass of id into this node's multicast domain when no rate is given:
// linkShare of the slowest known link among this node's (own, from linkRate) and those of the
// domain's peers that want id, else DefaultRate. from says which ("shaper", "link" or
// "default").
func (ds *dist) passRate(id content.ID, own linkrate.Rate) (bytesPerSec int64, from string) {
	return paceAt(ds.domainLink(id, own), linkShare)
}

// relayRate is the pace of a proxy's relay of id into this node's multicast domain:
// relayShare of the link passRate paces at.
func (ds *dist) relayRate(id content.ID, own linkrate.Rate) (bytesPerSec int64, from string) {
	return paceAt(ds.domainLink(id, own), relayShare)
}

// domainLink is the slowest known link among this node's (own) and those of the peers of its
// domain that want id.
func (ds *dist) domainLink(id content.ID, own linkrate.Rate) linkrate.Rate {
	mc := ds.d.pipes.Multicast()
	rs := []linkrate.Rate{own}
	ds.mu.Lock()
	for p, bits := range ds.wants[id] {
		if mc != nil && mc.InDomain(p) {
			rs = append(rs, linkrate.Rate{Bits: bits, Source: "link"})
		}
	}
	ds.mu.Unlock()
	return linkrate.Min(rs...)
}

// paceAt is share of the slowest link r; when r is unknown, DefaultRate (for linkShare)
// scaled alike.
func paceAt(r linkrate.Rate, share float64) (bytesPerSec int64, from string) {
	if r.Bits <= 0 {
		return int64(float64(DefaultRate) * share / linkShare), "default"
	}
	return max(1, int64(float64(r.Bits)*share/8)), r.Source
}

func (ds *dist) coordSpec(g *peergroup.Group) pipes.PipeSpec {
	return pipes.PipeSpec{Name: distPipe, Kind: pipes.Propagate, Group: g.ID()}
}

// ensureListening binds g's coordination pipe once and handles its messages until the daemon
// stops.
func (ds *dist) ensureListening(g *peergroup.Group) error {
	ds.mu.Lock()
	if ds.listen[g.ID()] {
		ds.mu.Unlock()
		return nil
	}
	ds.listen[g.ID()] = true
	ds.mu.Unlock()
	in, err := ds.d.pipes.Listen(ds.ctx, ds.coordSpec(g))
	if err != nil {
		ds.mu.Lock()
		delete(ds.listen, g.ID())
		ds.mu.Unlock()
		return err
	}
	ds.wg.Add(1)
	go func() {
		defer ds.wg.Done()
		defer in.Close()
		for {
			m, err := in.Recv(ds.ctx)
			if err != nil {
				return
			}
			op, id, link, err := decodeCoord(m.Data)
			if err != nil {
				ds.d.log.Debug("coordination pipe: bad message", "from", m.From, "err", err)
				continue
			}
			switch op {
			case opWant:
				ds.onWant(id, m.From, link)
			case opDone:
				ds.onDone(id, m.From)
			}
		}
	}()
	return nil
}

// onDone records that from no longer wants id (its get ended).
func (ds *dist) onDone(id content.ID, from peer.ID) {
	ds.mu.Lock()
	delete(ds.wants[id], from)
	if len(ds.wants[id]) == 0 {
		delete(ds.wants, id)
	}
	ds.mu.Unlock()
}

// sendDone tells the group that this node's get of id ended, so that it no longer counts as
// a wanting peer (a proxy candidate, say).
func (ds *dist) sendDone(g *peergroup.Group, id content.ID) {
	ds.onDone(id, ds.d.node.ID())
	ctx, cancel := context.WithTimeout(ds.ctx, 2*time.Second)
	defer cancel()
	coord, err := ds.d.pipes.Output(ctx, ds.coordSpec(g))
	if err != nil {
		return
	}
	defer coord.Close()
	_ = coord.Send(ctx, encodeCoord(opDone, id, 0))
}

// onWant records that from wants id (its link rate: link bits/s, 0 unknown) and, at the
// source (or at a domain's proxy that holds id complete), schedules a pass for the wanting
// peers of its domain.
func (ds *dist) onWant(id content.ID, from peer.ID, link int64) {
	// Only a want from this node's domain schedules a pass: one from another domain (heard on
	// the coordination pipe, often first) is its proxy's to serve, and taking it for the
	// domain's would hold off the pass its own domain's wants ask for.
	inDomain := ds.demux != nil && ds.d.pipes.Multicast().InDomain(from)
	src, isSource := ds.passSource(id, inDomain)
	ds.mu.Lock()
	if ds.wants[id] == nil {
		ds.wants[id] = map[peer.ID]int64{}
	}
	if link > 0 || ds.wants[id][from] == 0 {
		ds.wants[id][from] = link
	}
	close(ds.heard)
	ds.heard = make(chan struct{})
	// One pass at a time: wants that arrive while a pass is scheduled or running join it (what
	// they miss they repair from peers). Until the pace is chosen, the pass is assumed to run
	// at DefaultRate or the given rate.
	due := isSource && inDomain && time.Now().After(ds.passAt[id])
	var start chan struct{}
	if due {
		ds.passAt[id] = time.Now().Add(passWindow + passTime(src.size, cmp.Or(src.rate, DefaultRate)))
		start = make(chan struct{})
		ds.passGo[id] = start
	}
	ds.mu.Unlock()
	if isSource {
		ds.startIfAllWant(id, src.group)
	}
	if !due {
		return
	}
	ds.wg.Add(1)
	go func() {
		defer ds.wg.Done()
		select {
		case <-ds.ctx.Done():
			return
		case <-time.After(passWindow):
		case <-start:
		}
		rate, rateFrom := src.rate, "flag"
		if rate <= 0 {
			rate, rateFrom = ds.passRate(id, ds.linkRate())
		}
		ds.mu.Lock()
		ds.passAt[id] = time.Now().Add(passTime(src.size, rate))
		if ds.passGo[id] == start {
			delete(ds.passGo, id)
		}
		ds.mu.Unlock()
		ds.d.log.Info("multicast pass", "content", id, "rate", rate, "rate_from", rateFrom)
		if err := ds.eng.Multicast(id, ds.mc, rate); err != nil {
			ds.d.log.Warn("multicast pass", "content", id, "err", err)
		}
	}()
}

// keepProxy records that this node relayed id, held complete, as its domain's proxy: while the
// group keeps it so, a get started in the domain later (its want heard here) gets a pass from
// it, as the source's domain does from the source, instead of waiting for a relay that ended.
// A share of id stays as it is.
func (ds *dist) keepProxy(id content.ID, size int64, g *peergroup.Group) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if _, ok := ds.sources[id]; !ok {
		ds.sources[id] = sourceInfo{size: size, group: g, proxy: true}
	}
}

// passSource is what this node keeps of id to answer a want with a pass (inDomain: the want
// is from its domain), and whether it answers: it is id's source, or its domain's proxy that
// holds id complete, the want is from its domain and the group still records it as the
// domain's proxy.
func (ds *dist) passSource(id content.ID, inDomain bool) (sourceInfo, bool) {
	ds.mu.Lock()
	src, ok := ds.sources[id]
	ds.mu.Unlock()
	if ok && src.proxy && (!inDomain || ds.domainProxy(src.group, id) != ds.d.node.ID()) {
		return src, false
	}
	return src, ok
}

// startIfAllWant starts the pass of id scheduled at this source before passWindow ends once
// every live member of g in this node's multicast domain wants id: nobody is left to wait for.
func (ds *dist) startIfAllWant(id content.ID, g *peergroup.Group) {
	mc := ds.d.pipes.Multicast()
	if g == nil || mc == nil {
		return
	}
	self := ds.d.node.ID()
	members := g.LiveMembers()
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if start := ds.passGo[id]; start != nil && allWant(members, self, mc.InDomain, ds.wants[id]) {
		ds.d.log.Debug("multicast pass: every member of the domain wants it", "content", id)
		close(start)
		delete(ds.passGo, id)
	}
}

// allWant reports whether every one of members but self that inDomain accepts is in wants,
// and there is at least one.
func allWant(members []peer.ID, self peer.ID, inDomain func(peer.ID) bool, wants map[peer.ID]int64) bool {
	n := 0
	for _, p := range members {
		if p == self || !inDomain(p) {
			continue
		}
		if _, ok := wants[p]; !ok {
			return false
		}
		n++
	}
	return n > 0
}

// passTime is how long a pass of size bytes at rate bytes/s takes.
func passTime(size, rate int64) time.Duration {
	return time.Duration(float64(size) / float64(rate) * float64(time.Second))
}

func (ds *dist) share(ctx context.Context, path string, groupName, name string, rate int64) (*content.Manifest, *peergroup.Group, error) {
	g, err := ds.group(groupName)
	if err != nil {
		return nil, nil, err
	}
	if err := ds.ensureListening(g); err != nil {
		return nil, nil, err
	}
	m, err := ds.eng.Share(ctx, path, name, rate)
	if err != nil {
		return nil, nil, err
	}
	ds.mu.Lock()
	ds.sources[m.ID()] = sourceInfo{rate: max(rate, 0), size: m.Size, group: g}
	ds.mu.Unlock()
	if err := ds.held.put(m, heldRecord{Kind: transfer.KindShare, Path: path, Group: g.Name(), Rate: max(rate, 0)}); err != nil {
		ds.d.log.Warn("recording the share: a restarted daemon will not serve it", "content", m.ID(), "err", err)
	}
	if err := ds.advertise(ctx, g, m.ID(), m.Name, m.Size, "source"); err != nil {
		return nil, nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = g.Apply(cctx, &peergroup.ContentAdd{Content: peergroup.Content{
		ID: m.ID().String(), Name: m.Name, Size: m.Size, Source: ds.d.node.ID(), Added: time.Now(),
	}})
	if err != nil {
		ds.d.log.Warn("adding content to the group catalogue", "group", g.Name(), "err", err)
	}
	return m, g, nil
}

func (ds *dist) advertise(ctx context.Context, g *peergroup.Group, id content.ID, name string, size int64, role string) error {
	a := advert.New(advert.KindContent, id.String(), name, ds.d.node.PrivateKey(), 30*time.Minute, time.Now())
	a.Attrs["size"] = strconv.FormatInt(size, 10)
	a.Attrs["group"] = g.ID()
	a.Attrs["role"] = role
	_, err := ds.d.node.Publish(ctx, a)
	return err
}

// resolve finds the content's ID and source (ID or name): in the group's catalogue, which
// every member holds, else from its advertisements, retrying until ctx ends.
func (ds *dist) resolve(ctx context.Context, idOrName string, g *peergroup.Group) (content.ID, peer.ID, error) {
	q := advert.Query{Kind: advert.KindContent, Attrs: map[string]string{"group": g.ID()}}
	if id, err := content.ParseID(idOrName); err == nil {
		q.ID = id.String()
	} else {
		q.Name = idOrName
	}
	if id, src, ok := fromCatalogue(g.State().Catalogue, q); ok {
		return id, src, nil
	}
	for {
		res, err := ds.d.node.Discover(ctx, q, true)
		if err != nil {
			return content.ID{}, "", err
		}
		var best *advert.Signed
		for _, s := range res {
			src := s.Advert.Attrs["role"] == "source"
			if best == nil || (src && best.Advert.Attrs["role"] != "source") ||
				(src == (best.Advert.Attrs["role"] == "source") && s.Advert.Created.After(best.Advert.Created)) {
				best = s
			}
		}
		if best != nil {
			id, err := content.ParseID(best.Advert.ID)
			if err != nil {
				return id, "", fmt.Errorf("content advertisement with a bad ID: %w", err)
			}
			src := best.Advert.Publisher
			if best.Advert.Attrs["role"] != "source" {
				src = ""
			}
			return id, src, nil
		}
		select {
		case <-ctx.Done():
			return content.ID{}, "", fmt.Errorf("no content %q found in group %s", idOrName, g.Name())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// fromCatalogue finds q's content (by ID, or the newest of that name) in a group catalogue.
func fromCatalogue(cat map[string]peergroup.Content, q advert.Query) (content.ID, peer.ID, bool) {
	var best *peergroup.Content
	for _, c := range cat {
		if (q.ID != "" && c.ID == q.ID) || (q.ID == "" && c.Name == q.Name) {
			if best == nil || c.Added.After(best.Added) {
				best = &c
			}
		}
	}
	if best == nil {
		return content.ID{}, "", false
	}
	id, err := content.ParseID(best.ID)
	if err != nil {
		return id, "", false
	}
	return id, best.Source, true
}

// holders lists the peers that may hold id: publishers of its advertisements and the group's
// live members, this node excluded. With remote false it asks no other node (the
// advertisements this node has cached), so a get can start at once.
func (ds *dist) holders(ctx context.Context, id content.ID, g *peergroup.Group, remote bool) []peer.ID {
	seen := map[peer.ID]bool{ds.d.node.ID(): true}
	var out []peer.ID
	res, _ := ds.d.node.Discover(ctx, advert.Query{Kind: advert.KindContent, ID: id.String()}, remote)
	for _, s := range res {
		if p := s.Advert.Publisher; !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, p := range g.LiveMembers() {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// get receives content into out.
func (ds *dist) get(ctx context.Context, idOrName, out, groupName string, progress func(transfer.Progress)) (*transfer.Result, bool, error) {
	start := time.Now()
	g, err := ds.group(groupName)
	if err != nil {
		return nil, false, err
	}
	if err := ds.ensureListening(g); err != nil {
		return nil, false, err
	}
	id, source, err := ds.resolve(ctx, idOrName, g)
	if err != nil {
		return nil, false, err
	}
	req := transfer.GetRequest{
		ID: id, Out: out, Source: source,
		Peers:     ds.holders(ctx, id, g, false),
		MorePeers: func(ctx context.Context) []peer.ID { return ds.holders(ctx, id, g, true) },
		Progress:  progress,
	}
	proxy := false
	var mcBytes atomic.Int64
	req.Progress = func(pr transfer.Progress) {
		mcBytes.Store(pr.BytesMulticast)
		if progress != nil {
			progress(pr)
		}
	}
	if ds.demux != nil {
		ch := ds.demux.Open(id)
		defer ch.Close()
		req.Multicast = ch
		own := ds.linkRate() // read once: it asks the kernel
		link := own.Bits
		ds.onWant(id, ds.d.node.ID(), link)
		defer ds.sendDone(g, id)
		mc := ds.d.pipes.Multicast()
		if source != "" && mc.InDomain(source) {
			// The source first: its pass waits for this want.
			wctx, wcancel := context.WithCancel(ctx)
			defer wcancel()
			go ds.wantSource(wctx, id, source, link, func() bool { return mcBytes.Load() > 0 })
		}
		coord, err := ds.d.pipes.Output(ctx, ds.coordSpec(g))
		if err == nil {
			_ = coord.Send(ctx, encodeCoord(opWant, id, link))
			coord.Close()
		}
		if source != "" && !mc.InDomain(source) {
			// No source in this domain: one wanting peer here relays (the first claim the
			// group's log orders), and the others take its relay.
			req.Relayed = true
			others, err := ds.awaitOthersWant(ctx, id, source)
			if err != nil {
				return nil, false, err
			}
			if others {
				// Receivers elsewhere (the source's domain, by multicast) hold each slice
				// moments after the source sends it: take slices from them and leave the
				// source's uplink to its multicast.
				req.SourceDelay = proxySourceDelay
			}
			var from string
			req.RelayRate, from = ds.relayRate(id, own)
			if ds.claimFirst(ctx, g, id) {
				// The proxy pulls from peers at once (no multicast to wait for here) and
				// re-multicasts what it obtains.
				proxy = true
				req.Multicast = nil
				req.Relay = ds.mc
				ds.d.log.Info("proxy peer for this multicast domain", "content", id, "rate", req.RelayRate, "rate_from", from)
			} else {
				// Another member proxies: should it die, the smallest live wanting peer of
				// the domain takes over, relaying what it holds and gains from then on.
				takeover := make(chan struct{})
				req.Relay, req.RelayFrom = ds.mc, takeover
				wctx, wcancel := context.WithCancel(ctx)
				defer wcancel()
				go ds.watchProxy(wctx, g, id, source, takeover)
			}
		}
	}
	ds.d.log.Debug("get: receiving", "content", id, "source", source, "peers", len(req.Peers), "setup", time.Since(start))
	res, err := ds.eng.Get(ctx, req)
	if err != nil {
		return nil, proxy, err
	}
	relayed := req.Relay != nil && ds.domainProxy(g, id) == ds.d.node.ID()
	if relayed {
		ds.keepProxy(id, res.Size, g)
	}
	if !ds.held.has(id) {
		// The file at out is what the engine serves from now on (a later get of id copies it).
		rec := heldRecord{Kind: transfer.KindGet, Path: out, Group: g.Name(), Proxy: relayed}
		if err := ds.held.put(res.Manifest, rec); err != nil {
			ds.d.log.Warn("recording received content: a restarted daemon will not serve it", "content", id, "err", err)
		}
	}
	if err := ds.advertise(ctx, g, id, res.Name, res.Size, "holder"); err != nil {
		ds.d.log.Warn("advertising held content", "err", err)
	}
	return res, proxy, nil
}

// proxySourceDelay is how long a receiver outside the source's domain waits for other peers
// to gain slices before it asks the source (transfer.GetRequest.SourceDelay).
const proxySourceDelay = 2 * time.Second

// othersWant reports whether a peer outside this node's multicast domain, other than the
// source, wants id.
func (ds *dist) othersWant(id content.ID, source peer.ID) bool {
	mc := ds.d.pipes.Multicast()
	self := ds.d.node.ID()
	ds.mu.Lock()
	defer ds.mu.Unlock()
	for p := range ds.wants[id] {
		if p != self && p != source && !mc.InDomain(p) {
			return true
		}
	}
	return false
}

// awaitOthersWant waits until othersWant(id, source) holds or wantWindow has passed, and
// returns othersWant.
func (ds *dist) awaitOthersWant(ctx context.Context, id content.ID, source peer.ID) (bool, error) {
	t := time.NewTimer(wantWindow)
	defer t.Stop()
	for {
		ds.mu.Lock()
		heard := ds.heard
		ds.mu.Unlock()
		if ds.othersWant(id, source) {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-t.C:
			return ds.othersWant(id, source), nil
		case <-heard:
		}
	}
}

// domainProxy is the live proxy the group recorded for id in this node's multicast domain
// ("" if none): a recorded proxy that is still a member of the group and that this node hears
// in its domain (or itself). Hearing its beacons is what counts, not the group's liveness: a
// proxy's links are full (its intake in, its relay out), and with 1 % loss its heartbeats
// failed while it relayed, so another receiver took over and the domain had two relays
// (testnet/bench --cases raftcast-2domain --loss 1). A killed proxy is no longer heard
// within BeaconExpiry (4 s).
func (ds *dist) domainProxy(g *peergroup.Group, id content.ID) peer.ID {
	mc := ds.d.pipes.Multicast()
	self := ds.d.node.ID()
	for _, p := range g.Proxies(id.String()) {
		if (p == self || mc.InDomain(p)) && g.IsMember(p) {
			return p
		}
	}
	return ""
}

// claimProxy records this node in the group state as id's proxy in its domain, in place of
// dead (if any), and reports whether it is the domain's proxy: the group's log orders the
// claims, so of two nodes of a domain that claim at once, both see the same first one, and the
// other withdraws its claim (ProxyDrop) lest it be taken for the proxy once the first dies.
// A claim that cannot be recorded (no catalogue entry, no leader in time) loses: a node that
// relayed on its own choice could be a second relay in its domain, every datagram twice on
// links the relay fills (a CI run under load saw two receivers take over this way, each
// having missed the other's want); its domain repairs from peers meanwhile.
func (ds *dist) claimProxy(ctx context.Context, g *peergroup.Group, id content.ID, dead peer.ID) bool {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	self := ds.d.node.ID()
	if err := g.Apply(actx, &peergroup.ProxySet{ContentID: id.String(), Proxy: self, Replaces: dead}); err != nil {
		ds.d.log.Warn("recording this node as proxy", "content", id, "group", g.Name(), "err", err)
		return false
	}
	if p := ds.domainProxy(g, id); p != self {
		ds.d.log.Info("another proxy was recorded first", "content", id, "proxy", p)
		if err := g.Apply(actx, &peergroup.ProxyDrop{ContentID: id.String(), Proxy: self}); err != nil {
			ds.d.log.Warn("withdrawing this node's claim as proxy", "content", id, "group", g.Name(), "err", err)
		}
		return false
	}
	return true
}

// claimFirst claims the proxy of id in this node's domain when none is recorded and this node
// is the smallest wanting peer of its domain that it has heard, and reports whether it is the
// proxy. Gets started together may not have heard each other yet: several then claim, and the
// group's log picks one. A node whose claim cannot be recorded watches like the others (and
// claims again once no proxy is recorded within proxyGrace).
func (ds *dist) claimFirst(ctx context.Context, g *peergroup.Group, id content.ID) bool {
	if p := ds.domainProxy(g, id); (p != "" && p != ds.d.node.ID()) || !ds.isProxy(id) {
		return false
	}
	return ds.claimProxy(ctx, g, id, "")
}

// proxyCheckEvery is how often a receiver outside the source's domain checks that its
// domain's proxy is alive; proxyGrace is how long it waits for a proxy to be recorded at all.
const (
	proxyCheckEvery = 500 * time.Millisecond
	proxyGrace      = 5 * time.Second
)

// watchProxy runs beside a get in a domain without the source whose proxy is another node:
// once that proxy is dead (no longer heard in the domain, or no longer a member of the group),
// or none was recorded within proxyGrace, the smallest live wanting peer of the domain
// becomes the proxy: it records itself in the group state and closes takeover, which starts
// its relay. A node that the group state names its domain's live proxy takes over at once.
// It returns when ctx ends or it took over.
func (ds *dist) watchProxy(ctx context.Context, g *peergroup.Group, id content.ID, source peer.ID, takeover chan struct{}) {
	self := ds.d.node.ID()
	var known peer.ID // the domain's proxy last seen alive
	since := time.Now()
	t := time.NewTicker(proxyCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p := ds.domainProxy(g, id)
		switch {
		case p == self:
			// The group has this node for its domain's proxy (a claim whose answer timed out
			// but that the log took): the others watch it, so it relays.
		case p != "":
			known = p
			continue
		case known == "" && time.Since(since) < proxyGrace:
			continue
		default:
			live := g.LiveMembers()
			if ds.firstWanting(id, func(p peer.ID) bool { return p != known && p != source && slices.Contains(live, p) }) != self {
				continue
			}
			if !ds.claimProxy(ctx, g, id, known) {
				continue // another took over first (it is the one to watch now), or try again
			}
		}
		ds.d.log.Info("proxy peer for this multicast domain: taking over", "content", id, "dead", known)
		close(takeover)
		return
	}
}

// isProxy reports whether this node has the smallest peer ID among the wanting peers of id in
// its multicast domain.
func (ds *dist) isProxy(id content.ID) bool {
	return ds.firstWanting(id, func(peer.ID) bool { return true }) == ds.d.node.ID()
}

// firstWanting is the smallest peer ID among the peers of this node's multicast domain (this
// node included) that want id and that ok accepts ("" if none).
func (ds *dist) firstWanting(id content.ID, ok func(peer.ID) bool) peer.ID {
	mc := ds.d.pipes.Multicast()
	self := ds.d.node.ID()
	ds.mu.Lock()
	defer ds.mu.Unlock()
	var first peer.ID
	for p := range ds.wants[id] {
		if (p == self || mc.InDomain(p)) && ok(p) && (first == "" || p < first) {
			first = p
		}
	}
	return first
}
