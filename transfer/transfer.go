package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/raftcast/raftcast/transfer/content"
	"github.com/raftcast/raftcast/transfer/mcast"
	"github.com/raftcast/raftcast/transfer/store"
	"github.com/raftcast/raftcast/transfer/swarm"
)

// Errors.
var (
	ErrNotFound = errors.New("transfer: no peer has the content")
	ErrClosed   = errors.New("transfer: engine closed")
	ErrBadOut   = errors.New("transfer: bad output path")
)

// Config configures an Engine.
type Config struct {
	Dir       string // receiving stores live here (<Dir>/<content ID>.part and .have); required
	SliceSize int    // for Share; default content.DefaultSliceSize (raised for huge files, see content.SliceSizeFor)

	Server   swarm.ServerConfig
	Session  swarm.Config // Source, Peers, OnProgress and OnStored are set per Get
	Receiver mcast.ReceiverConfig

	// ManifestRetry is the pause between rounds of asking the known peers for a manifest.
	ManifestRetry time.Duration
	// ManifestTimeout bounds one peer's answer to a manifest request.
	ManifestTimeout time.Duration
}

// DefaultConfig returns the defaults; set Dir.
func DefaultConfig() Config {
	return Config{
		SliceSize:       content.DefaultSliceSize,
		Server:          swarm.DefaultServerConfig(),
		Session:         swarm.DefaultConfig(),
		Receiver:        mcast.DefaultReceiverConfig(),
		ManifestRetry:   500 * time.Millisecond,
		ManifestTimeout: 10 * time.Second,
	}
}

func (c Config) validate() error {
	if c.Dir == "" {
		return errors.New("transfer: Config.Dir is required")
	}
	if c.SliceSize < content.MinSliceSize || c.SliceSize > content.MaxSliceSize {
		return fmt.Errorf("transfer: slice size %d outside [%d,%d]", c.SliceSize, content.MinSliceSize, content.MaxSliceSize)
	}
	if c.ManifestRetry <= 0 || c.ManifestTimeout <= 0 {
		return errors.New("transfer: bad manifest timings")
	}
	return nil
}

// Kind of a transfer.
type Kind string

// Transfer kinds, as in the CLI's `transfers`.
const (
	KindShare Kind = "share"
	KindGet   Kind = "get"
)

// State of a transfer.
type State string

// Transfer states.
const (
	StateRunning State = "running"
	StateServing State = "serving" // complete (or a share); slices are served to peers
	StateFailed  State = "failed"
)

// Info describes one transfer for listings.
type Info struct {
	ID        content.ID
	Kind      Kind
	Name      string
	Size      int64
	DoneBytes int64
	State     State
	Err       string
}

type item struct {
	m    *content.Manifest
	kind Kind
	st   *store.Store

	done  atomic.Int64 // bytes held
	state atomic.Value // State
	err   atomic.Value // string
}

// Engine shares and gets content: it serves every content it holds over the transfer
// protocol, multicasts shared content when asked, and completes gets from multicast and peers.
type Engine struct {
	h   host.Host
	cfg Config
	log *slog.Logger
	srv *swarm.Server

	ctx    context.Context // cancelled by Close: background multicast passes and running gets
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines and running gets

	mu     sync.Mutex // guards items, closed, passes
	items  map[content.ID]*item
	closed bool
	passes map[content.ID]*pass // multicast passes running
}

// pass is a running multicast pass of one content; another asked for while it runs follows
// it instead of running beside it (two passes at once would each get half the link).
type pass struct {
	again bool // another pass was asked for
	ch    mcast.Channel
	rate  int64
}

// New starts an engine on h: it registers the transfer protocol.
func New(h host.Host, cfg Config, log *slog.Logger) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("transfer: %w", err)
	}
	srv, err := swarm.NewServer(h, cfg.Server, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{h: h, cfg: cfg, log: log, srv: srv, ctx: ctx, cancel: cancel, items: make(map[content.ID]*item), passes: make(map[content.ID]*pass)}, nil
}

// Server returns the engine's transfer-protocol server (for its counters).
func (e *Engine) Server() *swarm.Server { return e.srv }

// Close stops background multicast passes and running gets (waiting for them), stops
// serving and closes every store.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
	err := e.srv.Close()
	e.mu.Lock()
	items := e.items
	e.items = map[content.ID]*item{}
	e.mu.Unlock()
	for _, it := range items {
		if cerr := it.st.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

func (e *Engine) add(it *item) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if old := e.items[it.m.ID()]; old != nil && old != it {
		if old.kind == KindShare && it.kind == KindShare {
			return errShared
		}
		if old.kind == KindShare || old.st.Complete() {
			return fmt.Errorf("transfer: content %s is already held", it.m.ID())
		}
	}
	e.items[it.m.ID()] = it
	if it.kind == KindShare {
		e.srv.AddSeed(it.m, it.st) // the source: each slice once, the receivers pass it on
	} else {
		e.srv.Add(it.m, it.st)
	}
	return nil
}

// Forget stops serving id and closes its store (the finalized output stays).
func (e *Engine) Forget(id content.ID) error {
	e.mu.Lock()
	it := e.items[id]
	delete(e.items, id)
	e.mu.Unlock()
	e.srv.Remove(id)
	if it != nil {
		return it.st.Close()
	}
	return nil
}

// Transfers lists the transfers the engine holds.
func (e *Engine) Transfers() []Info {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Info, 0, len(e.items))
	for id, it := range e.items {
		inf := Info{ID: id, Kind: it.kind, Name: it.m.Name, Size: it.m.Size, DoneBytes: it.done.Load()}
		inf.State, _ = it.state.Load().(State)
		inf.Err, _ = it.err.Load().(string)
		out = append(out, inf)
	}
	slices.SortFunc(out, func(a, b Info) int { return compareIDs(a.ID, b.ID) })
	return out
}

func compareIDs(a, b content.ID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// ShareOption modifies Share.
type ShareOption func(*shareOpts)

type shareOpts struct {
	ch        mcast.Channel
	sliceSize int
}

// WithMulticast multicasts the content once on ch, paced at Share's rate, in the background.
func WithMulticast(ch mcast.Channel) ShareOption { return func(o *shareOpts) { o.ch = ch } }

// WithSliceSize overrides the engine's slice size for this share.
func WithSliceSize(n int) ShareOption { return func(o *shareOpts) { o.sliceSize = n } }

// Share makes this node the source of the file at path under name (the file's base name if
// empty): it slices and hashes the file, serves it to peers, and with WithMulticast starts a
// paced multicast pass (rate bytes/s). It returns the manifest; its ID is the content ID to
// advertise.
func (e *Engine) Share(ctx context.Context, path, name string, rate int64, opts ...ShareOption) (*content.Manifest, error) {
	o := shareOpts{sliceSize: e.cfg.SliceSize}
	for _, f := range opts {
		f(&o)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("transfer: share: %w", err)
	}
	m, err := content.BuildFile(path, name, content.SliceSizeFor(fi.Size(), o.sliceSize))
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := e.Serve(m, path, KindShare); err != nil {
		return nil, err
	}
	if o.ch != nil {
		if err := e.Multicast(m.ID(), o.ch, rate); err != nil {
			return m, err
		}
	}
	return m, nil
}

// Serve serves content m, held whole in the file at path, as a share (its source) or as a
// finished get: what a restarted node shared or received. Slices are verified as they are
// read, so a file changed since is not served as the content (store.OpenSource).
func (e *Engine) Serve(m *content.Manifest, path string, kind Kind) error {
	st, err := store.OpenSource(path, store.Layout{Size: m.Size, SliceSize: m.SliceSize}, m.Verify)
	if err != nil {
		return err
	}
	it := &item{m: m, kind: kind, st: st}
	it.done.Store(m.Size)
	it.state.Store(StateServing)
	if err := e.add(it); err != nil {
		st.Close()
		if errors.Is(err, errShared) {
			return nil // shared again (after a restart, say): it is served already
		}
		return err
	}
	return nil
}

// errShared: a share of content this node shares already.
var errShared = errors.New("transfer: content shared already")

// Multicast starts one paced multicast pass of content id (which must be held complete) on
// ch, in the background; it ends with the engine. While a pass of the content runs, another
// is not started beside it: it follows the running one (however often it is asked for).
func (e *Engine) Multicast(id content.ID, ch mcast.Channel, rate int64) error {
	e.mu.Lock()
	it := e.items[id]
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	if it == nil || !it.st.Complete() {
		e.mu.Unlock()
		return fmt.Errorf("transfer: content %s is not held complete", id)
	}
	if _, err := mcast.NewSender(ch, it.m, mcast.DefaultSenderConfig(rate)); err != nil {
		e.mu.Unlock()
		return err
	}
	if p := e.passes[id]; p != nil {
		p.again, p.ch, p.rate = true, ch, rate
		e.mu.Unlock()
		e.log.Info("multicast pass queued behind the running one", "content", id)
		return nil
	}
	e.passes[id] = &pass{}
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		for {
			e.runPass(id, it, ch, rate)
			e.mu.Lock()
			p := e.passes[id]
			if !p.again || e.ctx.Err() != nil {
				delete(e.passes, id)
				e.mu.Unlock()
				return
			}
			ch, rate = p.ch, p.rate
			*p = pass{}
			e.mu.Unlock()
		}
	}()
	return nil
}

// runPass multicasts every slice of it on ch once.
func (e *Engine) runPass(id content.ID, it *item, ch mcast.Channel, rate int64) {
	snd, err := mcast.NewSender(ch, it.m, mcast.DefaultSenderConfig(rate))
	if err != nil {
		e.log.Warn("multicast pass", "content", id, "err", err)
		return
	}
	start := time.Now()
	if err := snd.SendAll(e.ctx, it.st); err != nil {
		if e.ctx.Err() == nil {
			e.log.Warn("multicast pass failed", "content", id, "err", err)
		}
		return
	}
	st := snd.Stats()
	e.log.Info("multicast pass done", "content", id, "bytes", st.Bytes, "datagrams", st.Datagrams, "seconds", time.Since(start).Seconds())
}

// GetRequest says what to get and from where.
type GetRequest struct {
	ID       content.ID        // the content; or set Manifest
	Manifest *content.Manifest // if known (skips asking peers for it)
	Out      string            // where the complete file appears; nothing appears there on failure

	Source    peer.ID                             // the source peer (asked last for slices, first for the manifest)
	Peers     []peer.ID                           // peers that may hold the content
	MorePeers func(ctx context.Context) []peer.ID // optional: polled for more such peers

	Multicast mcast.Channel // optional: the domain's multicast data channel (read by this Get alone: share one channel among gets through mcast.Demux)
	// Relayed: the multicast comes from a proxy's relay, which sends a slice that reaches it
	// late after the ones that follow (relaySkipAhead): a missing slice counts as lost only
	// once relayLag bytes beyond it arrived, not the receiver's usual Lag, so that it is not
	// fetched across domains while it is on its way.
	Relayed   bool
	Relay     mcast.Channel // optional (proxy peer): re-multicast every slice obtained from peers here
	RelayRate int64         // pacing of the relay, bytes/s
	// RelayFrom, with Relay: start relaying only once it is closed (a receiver taking over from
	// a proxy that died): every slice held by then, then each one as it is stored. Nil: at once.
	RelayFrom <-chan struct{}
	// SourceDelay: ask the source only for slices other peers have stopped gaining for this
	// long (swarm.PlannerConfig.SourceDelay): for a proxy while the source multicasts.
	SourceDelay time.Duration

	Progress func(Progress) // optional: called after every new slice, never concurrently; must not block
}

// Progress of a Get.
type Progress struct {
	ID                                      content.ID
	Have, Total                             int   // slices
	Size, DoneBytes                         int64 // bytes
	BytesMulticast, BytesPeers, BytesSource int64
}

// Result summarises a completed Get; the byte counts add up to Size.
type Result struct {
	ID             content.ID
	Manifest       *content.Manifest
	Name           string
	Size           int64
	Seconds        float64
	BytesMulticast int64
	BytesPeers     int64
	BytesSource    int64
	BytesResumed   int64 // already held from an earlier, interrupted get
	PartialRepairs int   // slices completed by fetching only the parts multicast missed
	Banned         []peer.ID
}

// Get completes the content into req.Out, from multicast and peers, resuming an earlier
// interrupted get of the same content. It returns when the file is whole and verified at Out,
// or with an error (ctx's when it ends) leaving nothing at Out; the received slices stay in
// the engine's directory for a later Get. After success the engine keeps serving the content.
func (e *Engine) Get(ctx context.Context, req GetRequest) (*Result, error) {
	start := time.Now()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	e.wg.Add(1) // Close waits for running gets before closing their stores
	e.mu.Unlock()
	defer e.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(e.ctx, cancel)
	defer stop()
	if req.Out == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadOut)
	}
	if fi, err := os.Stat(req.Out); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is a directory", ErrBadOut, req.Out)
	}
	peers := func(ctx context.Context) []peer.ID {
		out := slices.Clone(req.Peers)
		if req.MorePeers != nil {
			out = append(out, req.MorePeers(ctx)...)
		}
		return out
	}
	m := req.Manifest
	if m == nil {
		var err error
		if m, err = e.fetchManifest(ctx, req.ID, req.Source, peers); err != nil {
			return nil, err
		}
	} else if !req.ID.IsZero() && m.ID() != req.ID {
		return nil, fmt.Errorf("transfer: manifest %s is not content %s", m.ID(), req.ID)
	}
	id := m.ID()

	e.mu.Lock()
	it := e.items[id]
	e.mu.Unlock()
	if it != nil && it.kind == KindShare { // we are its source: just copy it out
		if err := e.copyOut(it, req.Out); err != nil {
			return nil, err
		}
		return &Result{ID: id, Manifest: m, Name: m.Name, Size: m.Size, BytesResumed: m.Size, Seconds: time.Since(start).Seconds()}, nil
	}
	if it == nil {
		st, err := store.Open(store.ForManifest(e.cfg.Dir, m))
		if err != nil {
			return nil, err
		}
		it = &item{m: m, kind: KindGet, st: st}
		if err := e.add(it); err != nil {
			st.Close()
			return nil, err
		}
	}
	it.state.Store(StateRunning)
	it.err.Store("")
	res := &Result{ID: id, Manifest: m, Name: m.Name, Size: m.Size}
	res.BytesResumed = int64(heldBytes(m, it.st))
	it.done.Store(res.BytesResumed)

	err := e.receive(ctx, it, req, peers, res)
	if err == nil {
		if err = it.st.Finalize(req.Out); errors.Is(err, store.ErrReadOnly) {
			err = e.copyOut(it, req.Out) // already finalized by an earlier Get
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("transfer: get %s: %w (%d of %d slices held; a later get resumes)", id, ctx.Err(), it.st.Count(), m.NumSlices())
		}
		it.state.Store(StateFailed)
		it.err.Store(err.Error())
		return nil, err
	}
	it.state.Store(StateServing)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func heldBytes(m *content.Manifest, st *store.Store) int {
	n := 0
	have := st.Have()
	for i := 0; i < m.NumSlices(); i++ {
		if have.Has(i) {
			n += m.SliceLen(i)
		}
	}
	return n
}

// copyOut writes a second copy of finalized content to out (atomically).
func (e *Engine) copyOut(it *item, out string) error {
	tmp, err := os.CreateTemp(dirOf(out), ".raftcast-out-*")
	if err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	buf := make([]byte, it.m.SliceSize)
	for i := 0; i < it.m.NumSlices() && err == nil; i++ {
		var b []byte
		if b, err = it.st.ReadSlice(i, buf); err == nil {
			_, err = tmp.Write(b)
		}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("transfer: write %s: %w", out, err)
	}
	return nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			if i == 0 {
				return "/"
			}
			return p[:i]
		}
	}
	return "."
}

// fetchManifest asks the source, then the peers, round after round until ctx ends.
func (e *Engine) fetchManifest(ctx context.Context, id content.ID, source peer.ID, peers func(context.Context) []peer.ID) (*content.Manifest, error) {
	if id.IsZero() {
		return nil, errors.New("transfer: neither content ID nor manifest given")
	}
	var lastErr error
	for {
		cands := peers(ctx)
		if source != "" {
			cands = append([]peer.ID{source}, cands...)
		}
		for _, p := range cands {
			if p == e.h.ID() {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, e.cfg.ManifestTimeout)
			m, err := swarm.FetchManifest(pctx, e.h, p, id)
			cancel()
			if err == nil {
				return m, nil
			}
			if errors.Is(err, content.ErrBadName) || errors.Is(err, content.ErrBadID) || errors.Is(err, content.ErrMalformed) {
				e.log.Warn("peer sent a bad manifest", "peer", p, "err", err)
			}
			lastErr = err
		}
		if lastErr == nil {
			lastErr = errors.New("no peers to ask")
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s: %w (last: %v)", ErrNotFound, id, ctx.Err(), lastErr)
		case <-time.After(e.cfg.ManifestRetry):
		}
	}
}

// receive runs the swarm session, and the multicast receiver and relay if asked, until the
// store is complete or ctx ends.
func (e *Engine) receive(ctx context.Context, it *item, req GetRequest, peers func(context.Context) []peer.ID, res *Result) error {
	m, st := it.m, it.st
	if st.Complete() && req.Relay == nil {
		return nil
	}
	relayCtx, relayCancel := context.WithCancel(ctx) // outlives the session: a proxy finishes its pass
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		relayCancel()
		cancel()
		wg.Wait()
	}()
	var mcBytes atomic.Int64

	var progressMu sync.Mutex // serialises Progress calls from the session and the receiver
	report := func(have int, s swarm.Stats) {
		if req.Progress == nil {
			return
		}
		progressMu.Lock()
		defer progressMu.Unlock()
		req.Progress(Progress{
			ID: m.ID(), Have: have, Total: m.NumSlices(), Size: m.Size, DoneBytes: it.done.Load(),
			BytesMulticast: mcBytes.Load() + s.BytesPartial, BytesPeers: s.BytesPeers, BytesSource: s.BytesSource,
		})
	}

	// Relay (proxy peer): re-multicast slices as they arrive, in ascending order: those held
	// when it starts, then each one stored (by any carrier) after.
	stored := make(chan struct{}, 1)            // signalled when a slice is stored: the relay looks again
	sessDone := make(chan struct{})             // closed when the session ends
	var recvSeen atomic.Pointer[mcast.Receiver] // the multicast receiver, once made
	var sessSeen atomic.Pointer[swarm.Session]  // the swarm session, once made (and holding)
	var tookOver atomic.Bool                    // this node relays in place of a dead proxy
	wakeRelay := func() {
		select {
		case stored <- struct{}{}:
		default:
		}
	}
	if req.Relay != nil {
		rate := req.RelayRate
		if rate <= 0 {
			rate = 12 << 20
		}
		snd, err := mcast.NewSender(req.Relay, m, mcast.DefaultSenderConfig(rate))
		if err != nil {
			return err
		}
		wg.Go(func() {
			if req.RelayFrom != nil {
				select {
				case <-relayCtx.Done():
					return
				case <-sessDone: // complete before any takeover (or just as it came)
					select {
					case <-req.RelayFrom:
					default:
						return
					}
				case <-req.RelayFrom:
				}
				// What the dead proxy multicast (up to the front this receiver saw) reached
				// the domain then; the rest of the domain repairs its losses from peers.
				from := 0
				if r := recvSeen.Load(); r != nil {
					from = r.Front() + 1
				}
				e.log.Info("taking over the relay", "content", m.ID(), "held", st.Count(), "from_slice", from)
				// Its own relay is the domain's multicast now: nothing more comes to this node
				// by multicast, so everything it misses is fetched from peers at once.
				tookOver.Store(true)
				if s := sessSeen.Load(); s != nil {
					s.ReleaseAll()
				}
				e.relay(relayCtx, snd, st, stored, from)
				return
			}
			e.relay(relayCtx, snd, st, stored, 0)
		})
	}

	var sess *swarm.Session
	var recv *mcast.Receiver
	if req.Multicast != nil {
		rcfg := e.cfg.Receiver
		if req.Relayed {
			rcfg.Lag = max(rcfg.Lag, relayLag/m.SliceSize)
		}
		rcfg.OnStored = func(i, n int) {
			mcBytes.Add(int64(n))
			it.done.Add(int64(n))
			sess.Stored(i)
			wakeRelay()
			report(st.Count(), sess.Stats())
		}
		rcfg.OnLost = func(idx []int) { sess.Release(idx...) }
		rcfg.OnIdle = func() {
			missing := st.Missing()
			if len(missing) == 0 {
				return
			}
			if front := recv.Front(); front >= 0 && !recv.Ended() && !recv.Gone() {
				// The sender paused mid-pass (starved of CPU, say): repair only what it has
				// passed; fetching what it is about to send would take the same link.
				behind := missing[:0:0]
				for _, i := range missing {
					if i <= front {
						behind = append(behind, i)
					}
				}
				e.log.Info("multicast paused: repairing what the sender passed", "content", m.ID(), "slices", len(behind), "front", front)
				sess.Release(behind...)
				return
			}
			e.log.Info("multicast ended or gone: repairing from peers", "content", m.ID(), "missing", len(missing))
			sess.ReleaseAll()
		}
		var err error
		if recv, err = mcast.NewReceiver(req.Multicast, m, st, rcfg, e.log); err != nil {
			return err
		}
		recvSeen.Store(recv)
	}

	scfg := e.cfg.Session
	scfg.Source = req.Source
	if req.Relay != nil {
		// Fetch in order, so the relay can multicast in order (a would-be successor too: its
		// few repairs before a takeover lose nothing by being in order).
		scfg.Planner.Ascending = true
	}
	scfg.Planner.SourceDelay = req.SourceDelay
	scfg.Peers = peers
	scfg.OnStored = func(i, n int, _ peer.ID) {
		it.done.Add(int64(st.Layout().SliceLen(i)))
		wakeRelay()
	}
	scfg.OnProgress = func(p swarm.Progress) { report(p.Have, p.Stats) }
	if recv != nil {
		scfg.Partials = recv.Partials()
	}
	sess, err := swarm.NewSession(e.h, m, st, scfg, e.log)
	if err != nil {
		return err
	}
	for _, p := range req.Peers {
		sess.AddPeer(p)
	}
	if recv != nil {
		sess.Hold(st.Missing()...) // expected by multicast until it says otherwise
		sessSeen.Store(sess)
		if tookOver.Load() { // the takeover came first
			sess.ReleaseAll()
		}
		wg.Go(func() {
			if err := recv.Run(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("multicast receiver stopped", "content", m.ID(), "err", err)
				sess.ReleaseAll()
			}
		})
	}

	err = sess.Run(ctx)
	close(sessDone)
	cancel()
	if err != nil {
		relayCancel()
	}
	wg.Wait()
	s := sess.Stats()
	res.BytesPeers, res.BytesSource, res.Banned = s.BytesPeers, s.BytesSource, s.Banned
	res.PartialRepairs = s.PartsRequests - s.PartsBad
	res.BytesMulticast = s.BytesPartial // the multicast share of slices completed from parts
	if recv != nil {
		res.BytesMulticast += recv.Stats().BytesNew
	}
	if err != nil {
		return err
	}
	if !st.Complete() {
		return fmt.Errorf("transfer: session ended with %d slices missing", len(st.Missing()))
	}
	return nil
}

// relaySkipAhead: once the slice this many bytes beyond the relay's next one is held, the
// relay sends on and multicasts the missing one when it comes. Its pace is the link's, as is
// what it obtains: time it spends waiting is never made up. Measured with `testnet/bench
// --cases raftcast-2domain` (256 MiB, three alternated runs each): waiting in order, the
// proxy's relay stopped for 0.2-2.5 s at a time for one slice late on one of its streams while
// it held up to 22 MiB after it, and its domain ended 2.1-3.8 s after the source's (1.25-1.35
// × bound); sending on, with its receivers Relayed, 1.0-1.9 s after (1.20-1.23).
const relaySkipAhead = 1 << 20

// relayLag is how far beyond a missing slice a receiver of a relay (GetRequest.Relayed) lets
// the multicast go before it takes the slice for lost: 1.4 s of a 100 Mbit/s relay. Fetching
// it from peers would cross the link into the relay's domain, the one the relay's intake
// needs whole: with the usual Lag (4 slices), the two receivers of the bench's second domain
// each fetched 20 MiB across it and the domain ended 5 s after the source's.
const relayLag = 16 << 20

// relay multicasts slices from on as the store holds them (stored is signalled when it gains
// one), in ascending order but for slices that come late (relaySkipAhead): those go out when
// they come, and its receivers (GetRequest.Relayed) wait for them. It ends the pass once all
// are sent.
func (e *Engine) relay(ctx context.Context, snd *mcast.Sender, st *store.Store, stored <-chan struct{}, from int) {
	n := st.Layout().NumSlices()
	skip := max(1, relaySkipAhead/st.Layout().SliceSize)
	buf := make([]byte, st.Layout().SliceSize)
	send := func(i int) bool {
		b, err := st.ReadSlice(i, buf)
		if err == nil {
			err = snd.SendSlice(ctx, i, b)
		}
		if err != nil && ctx.Err() == nil {
			e.log.Warn("relay failed", "slice", i, "err", err)
		}
		return err == nil
	}
	var late []int // slices below next that were not held when it passed them, ascending
	for next := from; next < n || len(late) > 0; {
		sent := false
		// Late slices that came, then the next ones in order.
		for k := 0; k < len(late); {
			if !st.Has(late[k]) {
				k++
				continue
			}
			if !send(late[k]) {
				return
			}
			late = slices.Delete(late, k, k+1)
			sent = true
		}
		for ; next < n && st.Has(next); next++ {
			if !send(next) {
				return
			}
			sent = true
		}
		if next+skip < n && st.Has(next+skip) {
			late = append(late, next) // the rest waits no longer for it
			next++
			continue
		}
		if sent {
			continue // a late slice may have come meanwhile
		}
		select {
		case <-ctx.Done():
			return
		case <-stored:
		}
	}
	_ = snd.SendEnd(ctx)
}
