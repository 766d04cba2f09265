// Package gateway owns client WebSocket sessions: the upgrade, the read
// loop, a bounded per-session send queue drained by a writer goroutine that
// exists only while there is something to write, heartbeats, login and token
// expiry, multi-login policy, and the offline sync hand-off. It knows no SQL:
// everything about messages goes through the Chat interface.
//
// Lock order: a hub shard's mu may be held while taking a session's mu or
// the grace timers' mu (call.go), never the reverse.
package gateway

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/proto"
)

// Chat is what the gateway needs of the chat service.
type Chat interface {
	Send(from string, origin chat.SessionID, m *herald.Message, done func(chat.SendResult, error))
	Sync(ctx context.Context, user, device string, given map[string]int64, page func([]*herald.Message) error) (map[string]int64, int, error)
	History(ctx context.Context, user string, t herald.ConversationType, id string, q store.HistoryQuery) ([]*herald.Message, bool, error)
	// Conversations lists 1-1000 of user's conversations after a position
	// (nil: from the start).
	Conversations(ctx context.Context, user string, after *store.ConversationCursor, limit int) ([]herald.Conversation, error)
	MarkRead(ctx context.Context, user string, t herald.ConversationType, id string, seq int64) error
	SaveCursors(ctx context.Context, batch []store.DeviceCursors) error
	GroupOps
}

// Push is what the gateway needs of the push service: the registration
// operations, conversation mutes and the logout hook.
type Push interface {
	Register(ctx context.Context, user, device string, p herald.PushProvider, token, app string, env herald.PushEnvironment) (herald.PushDevice, error)
	Unregister(ctx context.Context, user, pushID string) error
	Logout(ctx context.Context, user, device string) error
	Devices(user string) []herald.PushDevice
	DeviceActive(user, device string)
	// SetMuted records user's notification status for conv, a key of one
	// of user's conversations; it blocks on the store. CodeInvalidArgument
	// when a peer key is not user's; for a group, whether user is a
	// member is the gateway's check (setNotification).
	SetMuted(ctx context.Context, user, conv string, muted bool) error
	// SetRule stores user's push rule and returns it normalised;
	// CodeInvalidArgument names the field at fault. It blocks on the store.
	SetRule(ctx context.Context, user string, r herald.PushRule) (herald.PushRule, error)
	// Rule returns user's push rule (zero: none).
	Rule(user string) herald.PushRule
	// SetBadge sets the badge held for user's devices registered through
	// device; CodeInvalidArgument out of range. It does not block.
	SetBadge(user, device string, n int) error
	// MarkedRead tells the push service that user read a conversation on
	// device: their other devices' badges are updated. It may block on
	// one outbox write.
	MarkedRead(ctx context.Context, user, device string) error
}

// Users is the login check of require-registration; the user registry
// (internal/user) implements it.
type Users interface {
	// Registered reports whether user is registered. It may block on the
	// store; an error is internal.
	Registered(ctx context.Context, user string) (bool, error)
}

// UnregisteredReason is the close reason of a session whose user was
// unregistered while it logged in.
const UnregisteredReason = "user unregistered"

// Config tunes the gateway. Zero values take the defaults on each field.
type Config struct {
	Secret            []byte        // token secret; required
	HeartbeatInterval time.Duration // told to clients; zero means 10s
	HeartbeatTimeout  time.Duration // zero means 30s
	LoginTimeout      time.Duration // zero means 10s
	TokenWarning      time.Duration // zero means 30s
	FetchTokenTTL     time.Duration // lifetime of the fetch tokens fetch_token mints; zero means 24h, at most token.MaxFetchTTL
	SingleLogin       bool          // a new login kicks every other session of the user
	MaxDevices        int           // sessions per user otherwise; zero means 10
	MaxFrameBytes     int           // zero means 64 KiB
	SendQueueBytes    int           // zero means 4 MiB
	SendsPerSecond    int           // zero means 100
	SendBurst         int           // zero means 200
	WriteTimeout      time.Duration // zero means 10s
	CursorFlush       time.Duration // how often acks are stored, all sessions in one write; zero means 1s
	BlockingReads     bool          // read with a goroutine per session even where epoll is available
	Limits            herald.Limits // reported to clients at login
	Push              Push          // nil: the push operations answer that push is not configured
	Calls             Calls         // nil: the call operations answer that calls are not enabled (call.go)
	Events            Events        // nil: no login, logout or offline events (events.go)
	Users             Users         // nil: any user with a valid token may log in (require-registration off)
	Now               func() time.Time
	Logger            *slog.Logger
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeartbeatInterval, 10*time.Second)
	def(&c.HeartbeatTimeout, 30*time.Second)
	def(&c.LoginTimeout, 10*time.Second)
	def(&c.TokenWarning, 30*time.Second)
	def(&c.FetchTokenTTL, 24*time.Hour)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.CursorFlush, time.Second)
	defInt(&c.MaxDevices, 10)
	defInt(&c.MaxFrameBytes, 64<<10)
	defInt(&c.SendQueueBytes, 4<<20)
	defInt(&c.SendsPerSecond, 100)
	defInt(&c.SendBurst, 200)
	c.Limits = c.Limits.WithDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats are the gateway's counters.
type Stats struct {
	Connections  int64 // open WebSocket connections
	Sessions     int64 // logged-in sessions
	SlowClosed   int64 // sessions closed because their send queue overflowed
	Kicked       int64 // sessions closed by the multi-login policy or the server API (Kick)
	FramesBad    int64 // frames that could not be decoded
	SendsLimited int64 // sends refused by the rate limit
	// DescriptorsKept: logged-in sessions on the epoll driver that kept
	// their net.Conn because their descriptor could not be duplicated
	// (out of descriptors); they work, at an idle connection's old cost.
	DescriptorsKept int64
	// SessionEndsForgotten: session ends forgotten before endedRetain
	// because more than maxEnded were remembered (ConnectedSince answers
	// "maybe" about their time: the push reads the stored acks).
	SessionEndsForgotten int64
}

// Gateway accepts and runs client sessions. It implements chat.Deliverer.
type Gateway struct {
	cfg   Config
	chat  Chat
	peers Peers // the other nodes of a cluster (SetPeers); nil on one node
	codec proto.Codec
	log   *slog.Logger
	seed  maphash.Seed

	shards [64]shard
	nextID atomic.Uint64

	connsMu sync.Mutex
	conns   map[*session]struct{}
	closing bool
	drained chan struct{} // closed when closing and conns is empty

	poller    *poller // nil: every session reads with its own goroutine
	sweepOnce sync.Once
	stopSweep chan struct{}
	swept     chan struct{}
	// Shutdown may be called more than once (and at once): the loops are
	// stopped and the poller's descriptors closed by the first call only.
	stopOnce, pollerOnce sync.Once

	// Acks are stored by one writer for all sessions (ackLoop), with group
	// commit: one store write per CursorFlush, and one whenever sessions
	// need theirs stored now (end, logout, a relogin on the same device);
	// the sessions that ask while a write is in progress are served
	// together by the next one. A mass disconnect is a few writes, not one
	// per session. cursorMu serialises flushes, so a flush that returned
	// has stored every ack taken before it (lock order: cursorMu, then a
	// session's mu, then dirtyMu).
	cursorMu sync.Mutex
	dirtyMu  sync.Mutex
	dirty    map[*session]struct{}
	// round is closed when the flush that takes dirty next has ended;
	// flushCursors replaces it. ackStopped: ackLoop is gone, callers flush
	// themselves. Both guarded by dirtyMu.
	round      chan struct{}
	ackStopped bool
	ackKick    chan struct{} // asks ackLoop for a flush now
	stopAcks   chan struct{}
	acksDone   chan struct{}
	// writes is the context of ack writes: Shutdown cancels it when its
	// own context ends, so no write outlives the shutdown's deadline.
	writes      context.Context
	cancelWrite context.CancelFunc

	stats struct {
		connections, sessions, slowClosed, kicked, framesBad, sendsLimited, descriptorsKept atomic.Int64
	}

	grace graceTimers // callers gone without a logout, by user (call.go)

	// endedSince (Unix ns): every session end since then is in the shards'
	// ended; it moves on as the sweeper forgets older ends, and as
	// trimEnded forgets the oldest past maxEnded. endedCount: the shards'
	// ended entries. forgetMu serializes the forgetting (forgetBefore).
	// forgotEarly counts the ends forgotten for the cap (Stats).
	endedSince  atomic.Int64
	endedCount  atomic.Int64
	forgotEarly atomic.Int64
	forgetMu    sync.Mutex
	endedCap    int64 // maxEnded; tests lower it
	// sinceChecked, set by tests only, runs in ConnectedSince between its
	// check of endedSince and its shard's lock.
	sinceChecked func()
}

type shard struct {
	mu    sync.Mutex
	users map[string][]*session // logged-in sessions, oldest first
	// ended: when the last session of a device that has none here now
	// ended, for the ends since Gateway.endedSince (ConnectedSince).
	ended map[deviceKey]endMark
}

type deviceKey struct{ user, device string }

// endMark is a device's last session end; closing counts its sessions
// displaced by a login (out of users) that have not ended yet: they may
// still acknowledge what they received.
type endMark struct {
	at      time.Time
	closing int
}

// endedRetain is how long a device's session end is remembered for
// ConnectedSince: a question about an earlier time is answered "maybe"
// (the push reads the stored acks, as without the record).
const endedRetain = 10 * time.Minute

// maxEnded caps the session ends remembered (docs/push.md): device IDs are
// the client's (1-64 bytes), so one user logging in again and again with
// new ones would grow them at its login rate. Past it the oldest eighth
// is forgotten (trimEnded): answers about their time become "maybe".
const maxEnded = 1_000_000

// New returns a gateway that hands messages to c. Set it as c's Deliverer.
func New(c Chat, cfg Config) *Gateway {
	cfg.defaults()
	g := &Gateway{cfg: cfg, chat: c, codec: proto.JSON, log: cfg.Logger, seed: maphash.MakeSeed(),
		conns: make(map[*session]struct{}), drained: make(chan struct{}), dirty: make(map[*session]struct{}),
		round: make(chan struct{}), ackKick: make(chan struct{}, 1), stopAcks: make(chan struct{}), acksDone: make(chan struct{})}
	g.writes, g.cancelWrite = context.WithCancel(context.Background())
	for i := range g.shards {
		g.shards[i].users = make(map[string][]*session)
		g.shards[i].ended = make(map[deviceKey]endMark)
	}
	g.endedSince.Store(cfg.Now().UnixNano())
	g.endedCap = maxEnded
	if !cfg.BlockingReads {
		p, err := newPoller(cfg.Logger)
		if err != nil {
			cfg.Logger.Warn("epoll unavailable; reading with a goroutine per session", "err", err)
		}
		g.poller = p
	}
	g.stopSweep, g.swept = make(chan struct{}), make(chan struct{})
	go g.ackLoop() // with no Chat there are no sessions, so nothing to write
	if c != nil {
		g.startSweep()
	}
	return g
}

// startSweep starts the sweeper, once. It runs only once the gateway has
// its Chat (New with a Chat, or SetChat): the sweeper stores acks through
// it, so it never reads the field while SetChat writes it.
func (g *Gateway) startSweep() { g.sweepOnce.Do(func() { go g.sweepLoop() }) }

// markDirty queues s for the next cursor flush.
func (g *Gateway) markDirty(s *session) {
	g.dirtyMu.Lock()
	g.dirty[s] = struct{}{}
	g.dirtyMu.Unlock()
}

// flushCursors stores the acks of every session marked dirty, in one
// write, and ends the round waiting for it.
func (g *Gateway) flushCursors() {
	g.cursorMu.Lock()
	defer g.cursorMu.Unlock()
	g.dirtyMu.Lock()
	dirty, round := g.dirty, g.round
	g.dirty, g.round = make(map[*session]struct{}), make(chan struct{})
	g.dirtyMu.Unlock()
	defer close(round)
	batch := make([]store.DeviceCursors, 0, len(dirty))
	sessions := make([]*session, 0, len(dirty))
	for s := range dirty {
		if d, ok := s.takeCursors(); ok {
			batch = append(batch, d)
			sessions = append(sessions, s)
		}
	}
	g.saveCursors(batch, sessions)
}

// awaitCursors returns once every ack taken so far has been written (or its
// write has failed: it is retried at the next flush). It asks ackLoop for a
// flush and waits for it, so the sessions that ask at once share one write.
func (g *Gateway) awaitCursors() {
	g.dirtyMu.Lock()
	round, stopped := g.round, g.ackStopped
	g.dirtyMu.Unlock()
	if stopped {
		g.flushCursors()
		return
	}
	select {
	case g.ackKick <- struct{}{}:
	default: // a flush is asked for already; it takes what is dirty when it starts
	}
	<-round
}

// ackLoop is the ack writer: a flush every CursorFlush and when asked
// (awaitCursors); a final one when stopped.
func (g *Gateway) ackLoop() {
	defer close(g.acksDone)
	tk := time.NewTicker(g.cfg.CursorFlush)
	defer tk.Stop()
	for {
		select {
		case <-g.stopAcks:
			g.dirtyMu.Lock()
			g.ackStopped = true
			g.dirtyMu.Unlock()
			g.flushCursors() // ends the round any waiter holds
			return
		case <-tk.C:
		case <-g.ackKick:
		}
		g.flushCursors()
	}
}

// saveCursors writes a batch taken from sessions; cursorMu must be held.
// When the write fails, the sessions are marked dirty again, so the next
// flush retries their acks.
func (g *Gateway) saveCursors(batch []store.DeviceCursors, sessions []*session) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(g.writes, 5*time.Second)
	defer cancel()
	if err := g.chat.SaveCursors(ctx, batch); err != nil {
		g.log.Error("storing acks failed; retrying at the next flush", "devices", len(batch), "err", err)
		for _, s := range sessions {
			s.mu.Lock()
			if !s.ackDirty {
				s.ackDirty = true
				g.markDirty(s)
			}
			s.mu.Unlock()
		}
	}
}

// ReadDriver names how sessions are read: "epoll" or "goroutine".
func (g *Gateway) ReadDriver() string {
	if g.poller != nil {
		return "epoll"
	}
	return "goroutine"
}

// sweepLoop closes sessions whose login or heartbeat deadline has passed,
// and warns of and ends tokens as they expire (one sweep over all
// sessions replaces timers per session: an idle session holds none, and
// these happen within a sweep's interval, a second at most, of their
// time). It never waits for the store: acks are ackLoop's.
func (g *Gateway) sweepLoop() {
	defer close(g.swept)
	every := min(g.cfg.LoginTimeout, g.cfg.HeartbeatTimeout) / 4
	every = min(max(every, 20*time.Millisecond), time.Second)
	tk := time.NewTicker(every)
	defer tk.Stop()
	var expired, tokens []*session
	var forgot time.Time
	for {
		select {
		case <-g.stopSweep:
			return
		case <-tk.C:
		}
		if t := g.cfg.Now(); t.Sub(forgot) >= endedRetain/10 {
			g.forgetEnded(t)
			forgot = t
		}
		now := g.cfg.Now().UnixNano()
		expired, tokens = expired[:0], tokens[:0]
		g.connsMu.Lock()
		for s := range g.conns {
			if s.deadline.Load() < now {
				expired = append(expired, s)
			} else if s.tokenAt.Load() <= now {
				tokens = append(tokens, s)
			}
		}
		g.connsMu.Unlock()
		for _, s := range expired {
			s.timedOut()
		}
		for _, s := range tokens {
			s.tokenTick(now)
		}
	}
}

// SetChat wires the chat service after construction (the two refer to
// each other), on a gateway made with a nil Chat, before it serves; it
// starts the sweeper. It panics when the gateway has a Chat already: the
// sweeper may be reading it.
func (g *Gateway) SetChat(c Chat) {
	if g.chat != nil || c == nil {
		panic("gateway: SetChat on a gateway that has a Chat, or with nil")
	}
	g.chat = c
	g.startSweep()
}

// Stats returns a snapshot of the counters.
func (g *Gateway) Stats() Stats {
	return Stats{
		Connections: g.stats.connections.Load(), Sessions: g.stats.sessions.Load(),
		SlowClosed: g.stats.slowClosed.Load(), Kicked: g.stats.kicked.Load(),
		FramesBad: g.stats.framesBad.Load(), SendsLimited: g.stats.sendsLimited.Load(),
		DescriptorsKept: g.stats.descriptorsKept.Load(), SessionEndsForgotten: g.forgotEarly.Load(),
	}
}

func (g *Gateway) shardOf(user string) *shard {
	return &g.shards[maphash.String(g.seed, user)%uint64(len(g.shards))]
}

// ServeHTTP upgrades a request on proto.Path to a WebSocket session and runs
// it until it ends.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.connsMu.Lock()
	closing := g.closing
	g.connsMu.Unlock()
	if closing {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	up := ws.HTTPUpgrader{
		Timeout:  g.cfg.WriteTimeout,
		Protocol: func(p string) bool { return p == proto.Subprotocol },
	}
	conn, rw, _, err := up.Upgrade(r, w)
	if err != nil {
		// Upgrade takes the connection from the HTTP server before it
		// validates the handshake; a refused one (answered 400 or 426)
		// is ours to close, or it would stay open, and counted among the
		// connections before login, for ever.
		if conn != nil {
			conn.Close()
		}
		g.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	s := newSession(g, conn)
	if !g.track(s) {
		s.closeWith(proto.CloseServerShutdown, "server is shutting down")
		s.waitWriter()
		conn.Close()
		return
	}
	// Bytes the client sent right after the handshake may sit in the
	// HTTP server's buffer; they are handled first.
	var buffered []byte
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		buffered = append([]byte(nil), b...)
	}
	if g.poller.attach(s, buffered) {
		return // this goroutine ends; the poller reads from now on
	}
	s.readLoop(buffered)
}

func (g *Gateway) track(s *session) bool {
	g.connsMu.Lock()
	defer g.connsMu.Unlock()
	if g.closing {
		return false
	}
	g.conns[s] = struct{}{}
	g.stats.connections.Add(1)
	return true
}

func (g *Gateway) untrack(s *session) {
	g.connsMu.Lock()
	defer g.connsMu.Unlock()
	if _, tracked := g.conns[s]; !tracked {
		return // refused at track
	}
	delete(g.conns, s)
	g.stats.connections.Add(-1)
	if g.closing && len(g.conns) == 0 {
		select {
		case <-g.drained:
		default:
			close(g.drained)
		}
	}
}

// Shutdown refuses new connections, closes every session with
// CloseServerShutdown (clients reconnect, to another node if there is one),
// and waits until their read loops have ended and acks are stored, or ctx ends.
// When ctx ends, ack writes in progress and to come are cancelled: the
// acks not stored by then are lost (clients resync from their last stored
// ack), and Shutdown returns without waiting for a store that ignores ctx.
// A session with sends in flight (handed to chat, which is still running)
// is closed once their replies are queued, so the client learns the seq of
// every message stored for it; it starts no new send meanwhile. When ctx
// ends first, every session is closed at once.
func (g *Gateway) Shutdown(ctx context.Context) error {
	stopCancel := context.AfterFunc(ctx, g.cancelWrite)
	defer func() {
		stopCancel()
		g.cancelWrite()
	}()
	g.stopGrace() // no caller's calls are cancelled for a session closed from here on
	g.connsMu.Lock()
	g.closing = true
	all := make([]*session, 0, len(g.conns))
	for s := range g.conns {
		all = append(all, s)
	}
	if len(g.conns) == 0 {
		select {
		case <-g.drained:
		default:
			close(g.drained)
		}
	}
	g.connsMu.Unlock()
	waiting := 0
	for _, s := range all {
		if s.closeAfterSends(proto.CloseServerShutdown, "server is shutting down") {
			waiting++
		}
	}
	if waiting > 0 {
		g.log.Info("gateway closing sessions after the replies of their sends in flight", "sessions_waiting", waiting, "sessions", len(all))
	}
	var err error
	select {
	case <-g.drained:
	case <-ctx.Done():
		err = errors.Join(errors.New("gateway: sessions still open at shutdown"), ctx.Err())
		for _, s := range all {
			s.closeWith(proto.CloseServerShutdown, "server is shutting down") // replies still awaited are given up
		}
	}
	// A sweeper never started (no Chat was set) has nothing to stop.
	g.sweepOnce.Do(func() { close(g.swept) })
	g.stopOnce.Do(func() {
		close(g.stopSweep)
		<-g.swept
		close(g.stopAcks) // after the sessions: their acks are in the final flush
	})
	select {
	case <-g.acksDone:
	case <-ctx.Done():
		if err == nil {
			err = errors.Join(errors.New("gateway: acks still being stored at shutdown"), ctx.Err())
		}
	}
	g.pollerOnce.Do(g.poller.close)
	return err
}

// displaced is a session a login displaces, with the reason to tell it.
type displaced struct {
	s      *session
	reason string
}

// register adds s to its user's sessions and returns those the multi-login
// policy displaces, each with its own reason (one login can close a
// session of its device and the oldest of another). ok is false when s
// has already ended: it must not be registered then.
func (g *Gateway) register(s *session) (kick []displaced, ok bool) {
	sh := g.shardOf(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s.mu.Lock() // lock order: shard, then session
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return nil, false
	}
	old := sh.users[s.user]
	keep := make([]*session, 0, len(old)+1)
	for _, o := range old {
		switch {
		case g.cfg.SingleLogin:
			kick = append(kick, displaced{o, "logged in on another device"})
		case o.device == s.device:
			kick = append(kick, displaced{o, "logged in again on the same device"})
		default:
			keep = append(keep, o)
		}
	}
	if !g.cfg.SingleLogin && len(keep) >= g.cfg.MaxDevices {
		n := len(keep) - g.cfg.MaxDevices + 1
		for _, o := range keep[:n] {
			kick = append(kick, displaced{o, "too many devices logged in; the oldest session was closed"})
		}
		keep = keep[n:]
	}
	sh.users[s.user] = append(keep, s)
	for _, k := range kick {
		// Out of users, but it reads until it ends (end): its device
		// counts as connected meanwhile (ConnectedSince).
		k.s.displaced = true
		g.markEnd(sh, deviceKey{k.s.user, k.s.device}, func(e *endMark) { e.closing++ })
	}
	g.stats.sessions.Add(int64(1 - len(kick)))
	return kick, true
}

// unregister removes s from the hub if it is still there. It reports
// whether it was (a session displaced by another login, or never
// registered, was not) and how many sessions its user has left, both
// decided under the shard's lock: of two sessions of a user ending at
// once, exactly one is told it was the last.
func (g *Gateway) unregister(s *session) (left int, removed bool) {
	left, removed = g.unregisterShard(s)
	if g.endedCount.Load() > g.endedCap {
		g.trimEnded()
	}
	return left, removed
}

// unregisterShard is unregister under the shard's lock.
func (g *Gateway) unregisterShard(s *session) (left int, removed bool) {
	sh := g.shardOf(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := g.cfg.Now()
	if s.displaced {
		// Displaced by a login (register): its end is now.
		g.markEnd(sh, deviceKey{s.user, s.device}, func(e *endMark) { e.closing--; e.at = now })
		s.displaced = false
		return len(sh.users[s.user]), false
	}
	list := sh.users[s.user]
	for i, o := range list {
		if o == s {
			g.stats.sessions.Add(-1)
			rest := make([]*session, 0, len(list)-1)
			rest = append(append(rest, list[:i]...), list[i+1:]...)
			if len(rest) == 0 {
				delete(sh.users, s.user)
			} else {
				sh.users[s.user] = rest
			}
			g.markEnd(sh, deviceKey{s.user, s.device}, func(e *endMark) { e.at = now })
			return len(rest), true
		}
	}
	return len(list), false
}

// DeliverMessage implements chat.Deliverer: it encodes m once per viewing
// user of a peer message (the conversation ID depends on who looks), once
// for all of a group message's members but the sender (whose own devices
// also see from_device), and queues it on every live session of each user
// in to, except origin. It never blocks on a client: a full queue closes
// that session (CloseSlowConsumer).
func (g *Gateway) DeliverMessage(m *herald.Message, to []string, origin chat.SessionID) {
	var others, own []byte // a group message looks the same to every member but its sender
	for _, user := range to {
		frame := &others
		if user == m.From {
			frame = &own
		}
		sh := g.shardOf(user)
		sh.mu.Lock()
		for _, s := range sh.users[user] {
			if s.id == origin {
				continue
			}
			if *frame == nil {
				*frame = g.codec.AppendMessageFrame(nil, proto.Frame{Ev: proto.EvMessage}, m, user)
			}
			s.deliver(m.Conv, m.Seq, *frame)
		}
		sh.mu.Unlock()
		if m.ConvType == herald.ConversationPeer {
			others = nil // the next viewer sees another conversation ID
		}
	}
}

// Live reports whether user has a logged-in session on device (push.Presence).
func (g *Gateway) Live(user, device string) bool {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, s := range sh.users[user] {
		if s.device == device {
			return true
		}
	}
	return false
}

// ConnectedSince reports whether user may have had a logged-in session on
// device here at t or since (push.SessionHistory): false only when it had
// none, so that device cannot have acknowledged a message stored at t.
// Session ends are remembered for endedRetain (and from the gateway's
// start): about an earlier t it answers true.
func (g *Gateway) ConnectedSince(user, device string, t time.Time) bool {
	if t.UnixNano() < g.endedSince.Load() {
		return true
	}
	if g.sinceChecked != nil {
		g.sinceChecked()
	}
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// Again under the lock: forgetBefore may have moved endedSince past t
	// since, and deleted this shard's ends before it (it moves endedSince
	// first, then deletes shard by shard under each lock).
	if t.UnixNano() < g.endedSince.Load() {
		return true
	}
	for _, s := range sh.users[user] {
		if s.device == device {
			return true
		}
	}
	e, ok := sh.ended[deviceKey{user, device}]
	return ok && (e.closing > 0 || !e.at.Before(t))
}

// forgetEnded forgets the session ends before now less endedRetain.
// endedSince moves first: a ConnectedSince about a time before it answers
// true without looking for the ends being forgotten.
func (g *Gateway) forgetEnded(now time.Time) {
	g.forgetMu.Lock()
	defer g.forgetMu.Unlock()
	if cut := now.Add(-endedRetain).UnixNano(); cut > g.endedSince.Load() {
		g.forgetBefore(cut)
	}
}

// forgetBefore forgets the ends before cut (Unix ns), moving endedSince
// up to it first, and returns how many; forgetMu must be held.
func (g *Gateway) forgetBefore(cut int64) (n int64) {
	if cut > g.endedSince.Load() {
		g.endedSince.Store(cut)
	}
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for k, e := range sh.ended {
			if e.closing == 0 && e.at.UnixNano() < cut {
				delete(sh.ended, k)
				n++
			}
		}
		sh.mu.Unlock()
	}
	g.endedCount.Add(-n)
	return n
}

// markEnd applies f to k's end mark in sh, counting a new one (endedCount);
// sh.mu must be held.
func (g *Gateway) markEnd(sh *shard, k deviceKey, f func(*endMark)) {
	e, ok := sh.ended[k]
	if !ok {
		g.endedCount.Add(1)
	}
	f(&e)
	sh.ended[k] = e
}

// trimEnded forgets the oldest eighth of the remembered ends when there
// are more than maxEnded (endedSince moves to the first end kept), and
// counts them (Stats.SessionEndsForgotten). One sort of their times per
// maxEnded/8 new ends. Devices whose displaced sessions have not ended
// yet are kept: there are no more of them than sessions.
func (g *Gateway) trimEnded() {
	g.forgetMu.Lock()
	defer g.forgetMu.Unlock()
	if g.endedCount.Load() <= g.endedCap {
		return // trimmed by another caller meanwhile
	}
	ats := make([]int64, 0, g.endedCount.Load())
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for _, e := range sh.ended {
			if e.closing == 0 {
				ats = append(ats, e.at.UnixNano())
			}
		}
		sh.mu.Unlock()
	}
	if len(ats) == 0 {
		return
	}
	slices.Sort(ats)
	// Forget those up to the i-th oldest, and any that ended at its time.
	i := min(len(ats), max(int(g.endedCount.Load()-g.endedCap*7/8), 1)) - 1
	g.forgotEarly.Add(g.forgetBefore(ats[i] + 1))
}

// Acked returns how far user's live session on device has acknowledged
// conv (push.Presence).
func (g *Gateway) Acked(user, device, conv string) (int64, bool) {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, s := range sh.users[user] {
		if s.device == device {
			s.mu.Lock()
			seq := s.acked[conv]
			s.mu.Unlock()
			return seq, true
		}
	}
	return 0, false
}

// LivePlatforms returns the platforms (herald.Platforms) of user's live
// sessions here, each once (push.PlatformPresence).
func (g *Gateway) LivePlatforms(user string) []string {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out []string
	for _, s := range sh.users[user] {
		if p := s.platformName(); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// DevicePlatform returns the platform user's live session on device named
// at login ("" when none, or none of herald.Platforms), for the cluster's
// presence.
func (g *Gateway) DevicePlatform(user, device string) string {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, s := range sh.users[user] {
		if s.device == device && s.platform != 0 {
			return s.platformName()
		}
	}
	return ""
}

// SessionsOf reports how many live sessions user has (internal/cluster's
// delivery, tests and metrics).
func (g *Gateway) SessionsOf(user string) int {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return len(sh.users[user])
}

func (g *Gateway) encodeEvent(ev string, v any) ([]byte, error) {
	return g.codec.AppendFrame(nil, proto.Frame{Ev: ev}, v)
}

// LiveDevices calls f for every user and device with a logged-in session
// here (internal/cluster's presence and resync). f is called without the
// gateway's locks held, on a snapshot taken one shard at a time.
func (g *Gateway) LiveDevices(f func(user, device string)) {
	var pairs [][2]string
	for i := range g.shards {
		sh := &g.shards[i]
		pairs = pairs[:0]
		sh.mu.Lock()
		for user, list := range sh.users {
			for _, s := range list {
				pairs = append(pairs, [2]string{user, s.device})
			}
		}
		sh.mu.Unlock()
		for _, p := range pairs {
			f(p[0], p[1])
		}
	}
}

// LiveLogins calls f for every user and device with a logged-in session
// here, with the device's last login (the gateway's clock), for
// internal/cluster's presence: the device limit over several nodes closes
// the oldest logins. f is called without the gateway's locks held, on a
// snapshot taken one shard at a time.
func (g *Gateway) LiveLogins(f func(user, device string, at time.Time)) {
	type login struct {
		user, device string
		at           time.Time
	}
	var logins []login
	for i := range g.shards {
		sh := &g.shards[i]
		logins = logins[:0]
		sh.mu.Lock()
		for user, list := range sh.users {
			for _, s := range list {
				logins = append(logins, login{user, s.device, s.loginTime()})
			}
		}
		sh.mu.Unlock()
		for _, l := range logins {
			f(l.user, l.device, l.at)
		}
	}
}

// DeviceLogins returns user's devices with a session here, each with its
// last login (the gateway's clock).
func (g *Gateway) DeviceLogins(user string) map[string]time.Time {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	out := make(map[string]time.Time, len(sh.users[user]))
	for _, s := range sh.users[user] {
		if at := s.loginTime(); at.After(out[s.device]) {
			out[s.device] = at
		}
	}
	return out
}
