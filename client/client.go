package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// Client is a connection to a Herald server for one user at a time. Its
// methods are safe for concurrent use.
type Client struct {
	// Lock order: Client.mu may be held while queueing on the dispatcher and
	// taking tracker.mu; nothing else nests.

	url      string
	urlErr   error
	opts     Options
	deviceID string
	log      *slog.Logger
	codec    proto.Codec
	disp     *dispatcher
	track    *tracker
	ids      atomic.Uint64  // request IDs, unique across connections
	wg       sync.WaitGroup // goroutines other than the handler goroutine
	ackMu    sync.Mutex     // guards ackTimer, acksOff
	// flushMu is held from taking the acks due to having written them
	// (sendAcks), and by Logout until its request is answered: an ack
	// taken by a timer's flush is never still unwritten when Logout sends
	// its own and the logout after them.
	flushMu  sync.Mutex
	ackTimer *time.Timer // set while an ack flush is scheduled
	acksOff  bool        // set by Close

	reconnects atomic.Int64
	resends    atomic.Int64

	sendMu   sync.Mutex
	inflight map[string]int // LocalIDs of sends waiting for their reply
	sendQ    sendQueue      // the order sends are written in

	mu     sync.Mutex
	state  ConnectionState
	sess   *session // nil when Disconnected
	closed bool
	// pushRegs are the push registrations made on this Client, by
	// provider: registered again after each Login.
	pushRegs map[herald.PushProvider]pushReg
}

// session is one Login's life: connections come and go under it until
// Logout, Close, or a stop event.
type session struct {
	user   string
	gen    uint64 // tracker generation (the user)
	epoch  uint64 // tracker epoch (this session): for tracker.seal
	log    *slog.Logger
	ctx    context.Context // ends with the session
	cancel context.CancelFunc

	ready     chan struct{} // closed once the first offline sync was handed to the app
	readyOnce sync.Once
	done      chan struct{} // closed when the session ended
	// sealed is set by Logout (tracker.seal, under its mu) once the
	// handlers queued before it have run: batches queued after it are
	// not handed to the app, and no more are accepted.
	sealed atomic.Bool

	// Guarded by Client.mu.
	token    string
	conn     *conn         // the logged-in connection; nil while (re)connecting
	changed  chan struct{} // closed and replaced when conn changes
	limits   proto.Limits
	stopping bool  // Logout sent: a close with 1000 ends the session as EventLogout
	accepted bool  // the server accepted the login (a connection was attached)
	ended    bool  // done is closed
	err      error // why it ended, for requests still waiting
}

// New returns a Client for the server at url: "ws://host:port/ws" (or wss://;
// http:// and https:// are taken as ws:// and wss://, and an empty path as
// proto.Path). It does not connect: call Login. An invalid url makes Login
// fail with ErrInvalidArgument. It starts the handler goroutine; Close
// releases it.
func New(url string, opts Options) *Client {
	opts = opts.withDefaults()
	c := &Client{
		opts:     opts,
		deviceID: opts.DeviceID,
		log:      opts.Logger,
		codec:    proto.JSON,
		disp:     newDispatcher(),
		track:    newTracker(opts.Logger),
		inflight: make(map[string]int),
		pushRegs: make(map[herald.PushProvider]pushReg),
	}
	c.url, c.urlErr = normalizeURL(url)
	if c.deviceID == "" {
		c.deviceID = "go-" + randomHex(12)
	}
	go c.disp.run()
	return c
}

func normalizeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", herald.Errorf(herald.CodeInvalidArgument, "server url: %v", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", herald.Errorf(herald.CodeInvalidArgument, "server url %q: scheme must be ws or wss", s)
	}
	if u.Host == "" {
		return "", herald.Errorf(herald.CodeInvalidArgument, "server url %q has no host", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = proto.Path
	}
	return u.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// DeviceID returns the device ID the Client logs in with.
func (c *Client) DeviceID() string { return c.deviceID }

// State returns the current connection state.
func (c *Client) State() ConnectionState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// setStateLocked changes the state and queues the handler call. c.mu must be held.
func (c *Client) setStateLocked(state ConnectionState, ev ConnectionEvent, err error) {
	c.state = state
	if err != nil {
		c.log.Info("connection state", "state", state.String(), "event", ev.String(), "err", err)
	} else {
		c.log.Info("connection state", "state", state.String(), "event", ev.String())
	}
	if h := c.opts.Handlers.ConnectionStateChanged; h != nil {
		c.disp.push(func() { h(state, ev, err) })
	}
}

// spawn starts f on a goroutine that Close waits for, unless closed.
func (c *Client) spawn(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// Login connects and logs in as userID with token, and returns once the
// offline sync (the messages that arrived while this device was away) has been
// handed to Handlers.MessageReceived; the state is then StateConnected. It
// makes one attempt: on failure the state is back to StateDisconnected and the
// error says why: errors.Is with ErrTokenExpired, ErrTokenMalformed or
// ErrTokenInvalid for a token refused; ErrForbidden when the token was
// minted for another user, or when the server keeps a user registry and
// userID is not registered in it; ErrInvalidArgument for a malformed user
// ID, device ID or server URL; a dial error when the server cannot be
// reached; context errors when ctx ends first. After it
// succeeded the SDK stays logged in, reconnecting by itself, until Logout,
// Close, or a stop event (EventKickedOut, EventTokenExpired, ...).
//
// Login waits for the handler goroutine: do not call it from a handler (it
// would wait until ctx ends), start a goroutine instead. A handler may call
// Logout during the offline sync: Login then returns nil (the login
// succeeded and the logout followed), with the state StateDisconnected. A
// Logout from another goroutine that ends the session before the server
// accepted the login makes Login return ErrLoginCancelled.
func (c *Client) Login(ctx context.Context, userID, token string) error {
	if err := herald.ValidateUserID(userID); err != nil {
		return opError("login", err)
	}
	if token == "" {
		return opError("login", herald.Errorf(herald.CodeInvalidArgument, "token is empty"))
	}
	if err := herald.ValidateDeviceID(c.deviceID); err != nil {
		return opError("login", err)
	}
	if c.urlErr != nil {
		return opError("login", c.urlErr)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &session{
		user:    userID,
		log:     c.log.With("user_id", userID, "device_id", c.deviceID),
		ctx:     sctx,
		cancel:  cancel,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		token:   token,
		changed: make(chan struct{}),
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		return ErrClosed
	}
	if c.sess != nil {
		c.mu.Unlock()
		cancel()
		return ErrAlreadyLoggedIn
	}
	s.gen, s.epoch = c.track.begin(userID)
	c.sess = s
	c.setStateLocked(StateConnecting, EventActiveLogin, nil)
	c.mu.Unlock()

	// The first attempt ends with ctx or with the session (Close).
	actx, acancel := context.WithCancel(ctx)
	stop := context.AfterFunc(sctx, acancel)
	cn, reply, err := c.connect(actx, s)
	stop()
	acancel()
	if err != nil {
		c.endSession(s, loginFailureEvent(err), err)
		if e := c.loginEndedErr(s); errors.Is(e, ErrClosed) || errors.Is(e, ErrLoginCancelled) {
			return e
		}
		return opError("login", err)
	}
	if !c.attach(s, cn, reply) {
		cn.close(ws.StatusNormalClosure)
		return c.loginEndedErr(s)
	}
	if !c.spawn(func() { c.run(s, cn) }) {
		c.endSession(s, EventLogout, ErrClosed)
		return ErrClosed
	}

	select {
	case <-s.ready:
		c.reregisterPush(ctx, s)
		return nil
	case <-s.done:
		select {
		case <-s.ready:
			return nil
		default:
		}
		return c.loginEndedErr(s)
	case <-ctx.Done():
		ev := EventLoginInterrupted
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			ev = EventLoginTimeout
		}
		c.endSession(s, ev, ctx.Err())
		return fmt.Errorf("client: login: waiting for the offline sync: %w", ctx.Err())
	}
}

// loginEndedErr is what Login returns when s ended before the offline
// sync was handed over: nil when Logout ended it after the server accepted
// the login (the login succeeded; the logout followed it, say from a
// handler during the sync), ErrLoginCancelled when Logout came first, and
// why it ended otherwise.
func (c *Client) loginEndedErr(s *session) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !s.stopping || !errors.Is(s.err, ErrNotLoggedIn):
		return s.err
	case s.accepted:
		return nil
	default:
		return ErrLoginCancelled
	}
}

// loginFailureEvent names why Login's only attempt failed.
func loginFailureEvent(err error) ConnectionEvent {
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return EventLoginTimeout
	}
	var he *herald.Error
	if errors.As(err, &he) && he.Code != herald.CodeTokenExpired {
		return EventLoginFailed // even a transient refusal: Login does not retry
	}
	ev, _ := classify(err)
	return ev
}

// connect dials, logs in on the new connection and starts its heartbeat.
func (c *Client) connect(ctx context.Context, s *session) (*conn, *proto.LoginReply, error) {
	nc, src, err := dial(ctx, c.url, c.opts.DialTimeout)
	if err != nil {
		return nil, nil, err
	}
	cn := newConn(s.log, c.codec, nc, src, defaultHeartbeatTimeout+c.opts.RequestTimeout, c.opts.RequestTimeout)
	if !c.spawn(cn.readLoop) {
		nc.Close()
		return nil, nil, ErrClosed
	}
	c.mu.Lock()
	token := s.token
	c.mu.Unlock()
	req := proto.LoginRequest{
		Version:  proto.Version,
		UserID:   s.user,
		Token:    token,
		DeviceID: c.deviceID,
		Platform: c.opts.Platform,
		Cursors:  c.track.cursors(s.gen),
	}
	lctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	reply := new(proto.LoginReply)
	if err := cn.roundTrip(lctx, c.ids.Add(1), proto.OpLogin, req, reply, nil); err != nil {
		cn.close(ws.StatusNormalClosure)
		var lost *connLostError
		if errors.As(err, &lost) {
			err = lost.cause
		}
		return nil, nil, err
	}
	interval := time.Duration(reply.HeartbeatInterval) * time.Millisecond
	if interval <= 0 {
		interval = defaultHeartbeatInterval
	}
	timeout := time.Duration(reply.HeartbeatTimeout) * time.Millisecond
	if timeout <= 0 {
		timeout = defaultHeartbeatTimeout
	}
	cn.readTimeout.Store(int64(timeout))
	if !c.spawn(func() { c.heartbeat(cn, interval) }) {
		cn.close(ws.StatusNormalClosure)
		return nil, nil, ErrClosed
	}
	s.log.Info("logged in", "session_id", reply.SessionID, "cursors", len(req.Cursors))
	return cn, reply, nil
}

// heartbeat pings every interval until cn ends. A server that stops
// answering is caught by cn's read deadline.
func (c *Client) heartbeat(cn *conn, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-cn.done:
			return
		case <-t.C:
			if cn.ping(c.ids.Add(1)) != nil {
				return
			}
		}
	}
}

// attach makes cn the session's connection and reports StateConnected. It
// fails when the session ended meanwhile.
func (c *Client) attach(s *session, cn *conn, reply *proto.LoginReply) bool {
	c.mu.Lock()
	if s.ended {
		c.mu.Unlock()
		return false
	}
	s.conn = cn
	s.accepted = true
	s.limits = reply.Limits
	close(s.changed)
	s.changed = make(chan struct{})
	c.setStateLocked(StateConnected, EventSuccess, nil)
	c.mu.Unlock()
	c.scheduleAck() // acks still owed from before a reconnect
	return true
}

// detach clears cn as the session's connection.
func (c *Client) detach(s *session, cn *conn) (stopping bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.conn == cn {
		s.conn = nil
		close(s.changed)
		s.changed = make(chan struct{})
	}
	return s.stopping
}

// run serves the session's connections, starting with cn, and reconnects
// with backoff until the session ends.
func (c *Client) run(s *session, cn *conn) {
	attempt := 0
	for {
		synced, cause := c.serve(s, cn)
		cn.close(ws.StatusNormalClosure)
		// Acks written on cn that no reply confirmed may never have
		// reached the server: due again on the next connection (attach
		// schedules them; a Logout sends them before retrying). Under
		// flushMu, so no ack written on cn is recorded after this.
		c.flushMu.Lock()
		c.track.unacked(s.gen, cn.unconfirmedAcks())
		c.flushMu.Unlock()
		stopping := c.detach(s, cn)
		if s.ctx.Err() != nil {
			return
		}
		if synced {
			attempt = 0
		}
		var ce *CloseError
		if stopping && errors.As(cause, &ce) && ce.Code == proto.CloseNormal {
			c.endSession(s, EventLogout, nil)
			return
		}
		if ev, stop := classify(cause); stop {
			c.endSession(s, ev, cause)
			return
		}
		s.log.Info("connection lost; reconnecting", "err", cause)
		c.setState(s, StateReconnecting, EventLoginInterrupted, cause)
		for {
			if !sleepCtx(s.ctx, backoff(attempt, c.opts.ReconnectMin, c.opts.ReconnectMax, rand.Int64N)) {
				return
			}
			attempt++
			var reply *proto.LoginReply
			var err error
			cn, reply, err = c.connect(s.ctx, s)
			if err == nil {
				if !c.attach(s, cn, reply) {
					cn.close(ws.StatusNormalClosure)
					return
				}
				c.reconnects.Add(1)
				break
			}
			if s.ctx.Err() != nil {
				return
			}
			if ev, stop := classify(err); stop {
				c.endSession(s, ev, err)
				return
			}
			s.log.Info("reconnect failed", "attempt", attempt, "err", err)
		}
	}
}

// setState changes the state if s is still the current session.
func (c *Client) setState(s *session, state ConnectionState, ev ConnectionEvent, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == s && !s.ended {
		c.setStateLocked(state, ev, err)
	}
}

// endSession ends s, once: StateDisconnected with ev, requests still waiting
// fail with an error derived from err, the connection is closed.
func (c *Client) endSession(s *session, ev ConnectionEvent, err error) {
	c.mu.Lock()
	if s.ended {
		c.mu.Unlock()
		return
	}
	s.ended = true
	s.err = err
	if s.err == nil {
		s.err = ErrNotLoggedIn
	}
	cn := s.conn
	s.conn = nil
	if c.sess == s {
		c.sess = nil
		c.setStateLocked(StateDisconnected, ev, err)
	}
	c.mu.Unlock()
	s.cancel()
	close(s.done)
	if cn != nil {
		cn.close(ws.StatusNormalClosure)
	}
}

// Logout logs out, which also ends the device's binding to the user (no
// more offline pushes for the user reach it), then the session ends with
// StateDisconnected and EventLogout. It first waits for the
// MessageReceived calls already queued (at most logoutDrainTimeout, one
// second, and ctx), hands the app no message after them, and sends the acks
// of every message whose handler returned before that wait ended, then the
// logout, on one connection (both again on the next connection if it is
// lost before the answer): the server stores them before it answers, so the
// device's next login, by this Client or another, syncs none of them again.
// The messages not handed over come in that sync. A handler still running
// when the wait ends is not waited for: its messages are acknowledged at
// this Client's next login, or synced again by another. Called from a
// handler, Logout does not wait at all (it would wait for itself); the
// handler calls queued behind it are not made. The session ends even when
// the server cannot be reached; the error then says so. Logout without a
// session does nothing.
func (c *Client) Logout(ctx context.Context) error {
	c.mu.Lock()
	s := c.sess
	if s == nil {
		c.mu.Unlock()
		return nil
	}
	s.stopping = true
	c.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.RequestTimeout)
		defer cancel()
	}
	c.sealForLogout(ctx, s)
	err := c.logoutRequest(ctx, s)
	c.endSession(s, EventLogout, nil)
	if err != nil && !errors.Is(err, ErrNotLoggedIn) {
		return err
	}
	return nil
}

// logoutDrainTimeout bounds how long Logout waits for the handler calls
// queued before it.
const logoutDrainTimeout = time.Second

// sealForLogout waits for the handler calls queued so far, then seals s:
// what the app was handed is then exactly what the tracker holds as
// delivered, and stays so.
func (c *Client) sealForLogout(ctx context.Context, s *session) {
	if c.disp.running() {
		// Called from a handler: the handler calls queued behind it cannot
		// run before it returns, nor will they run for this session.
		c.track.seal(s.epoch, &s.sealed)
		return
	}
	drained := make(chan struct{})
	if c.disp.push(func() {
		c.track.seal(s.epoch, &s.sealed)
		close(drained)
	}) {
		t := time.NewTimer(logoutDrainTimeout)
		defer t.Stop()
		select {
		case <-drained:
		case <-ctx.Done():
		case <-s.done: // Close, say, which drops what is queued
		case <-t.C:
			s.log.Warn("handlers still running at logout; their messages are acknowledged later", "timeout", logoutDrainTimeout)
		}
	}
	c.track.seal(s.epoch, &s.sealed) // when the wait was cut short
}

// logoutRequest sends the acks due, then the logout, on the same
// connection: the server handles a connection's frames in order and stores
// its acks before it answers the logout. A connection lost before the
// answer is replaced and both go again.
func (c *Client) logoutRequest(ctx context.Context, s *session) error {
	for {
		cn, err := c.waitConn(ctx, proto.OpLogout, s)
		if err != nil {
			return err
		}
		c.flushMu.Lock()
		_, err = c.sendAcks(cn)
		if err == nil {
			err = cn.roundTrip(ctx, c.ids.Add(1), proto.OpLogout, struct{}{}, nil, nil)
		}
		c.flushMu.Unlock()
		var lost *connLostError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &lost) || cn.isDone():
			c.resends.Add(1)
			s.log.Debug("logout interrupted; retrying on the next connection", "err", err)
		case ctx.Err() != nil:
			return fmt.Errorf("client: %s: %w", proto.OpLogout, err)
		default:
			return err
		}
	}
}

// RenewToken replaces the session's token with token, a fresher one for the
// same user, and returns its expiry as the server reads it. Reconnects use
// the new token from the moment RenewToken is called; if the server refuses
// it, the old one is restored.
func (c *Client) RenewToken(ctx context.Context, token string) (time.Time, error) {
	if token == "" {
		return time.Time{}, opError("renew_token", herald.Errorf(herald.CodeInvalidArgument, "token is empty"))
	}
	s, err := c.session()
	if err != nil {
		return time.Time{}, err
	}
	c.mu.Lock()
	old := s.token
	s.token = token
	c.mu.Unlock()
	reply, err := request[proto.RenewTokenReply](ctx, c, s, proto.OpRenewToken, proto.RenewTokenRequest{Token: token}, nil)
	if err != nil {
		var ce *codeError
		if errors.As(err, &ce) {
			c.mu.Lock()
			if s.token == token {
				s.token = old
			}
			c.mu.Unlock()
		}
		return time.Time{}, err
	}
	return time.UnixMilli(reply.TokenExpiresAt), nil
}

// Close ends the session without logging out (the device stays bound to
// the user, so offline pushes continue) and releases the Client. When
// connected, it first sends the acknowledgements still owed (for messages
// whose MessageReceived returned: coalesced acks otherwise wait up to
// Options.AckInterval) and waits for the server to confirm it has them, for
// at most one second, so the next login's offline sync does not bring them
// back; while reconnecting it sends nothing, and the next sync starts after
// what was acknowledged before. No handler is called after Close returns,
// not even for the state change; a handler already running may still be
// finishing, and may itself call Close. Methods called after Close return
// ErrClosed.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	s := c.sess
	var cn *conn
	stopping := false
	if s != nil {
		cn = s.conn
		stopping = s.stopping
	}
	c.mu.Unlock()
	c.disp.close()
	if cn != nil {
		c.flushAcksBeforeClose(cn, stopping)
	}
	if s != nil {
		c.endSession(s, EventLogout, ErrClosed)
	}
	c.ackMu.Lock()
	c.acksOff = true
	if c.ackTimer != nil {
		c.ackTimer.Stop()
		c.ackTimer = nil
	}
	c.ackMu.Unlock()
	c.wg.Wait()
}

// closeAckTimeout bounds how long Close waits for the acks it owes to
// reach the server.
const closeAckTimeout = time.Second

// flushAcksBeforeClose sends the acks still owed on cn and waits, at most
// closeAckTimeout, for the answer to a ping sent after them: the server
// handles a connection's frames in order, so once it answers the ping it
// holds the acks, and it stores them when the connection ends. The
// connection is closed right after, which ends a write or wait still
// blocked. During a Logout (stopping) that holds flushMu, Logout has sent
// the acks on cn already: nothing to do, and no waiting for its answer.
func (c *Client) flushAcksBeforeClose(cn *conn, stopping bool) {
	locked := stopping && c.flushMu.TryLock()
	if stopping && !locked {
		return
	}
	c.wg.Add(1)
	done := make(chan struct{})
	go func() {
		defer c.wg.Done()
		defer close(done)
		if !locked {
			c.flushMu.Lock()
		}
		n, err := c.sendAcks(cn)
		c.flushMu.Unlock()
		if n == 0 || err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeAckTimeout)
		defer cancel()
		_ = cn.roundTrip(ctx, c.ids.Add(1), proto.OpPing, struct{}{}, nil, nil)
	}()
	t := time.NewTimer(closeAckTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.log.Warn("acks not confirmed by the server before Close's deadline", "timeout", closeAckTimeout)
	}
}

// sessionErr returns why s ended, nil while it lasts.
func (c *Client) sessionErr(s *session) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.err
}

// Stats counts what the SDK did by itself, for diagnostics.
type Stats struct {
	Reconnects int64 // logins after a lost connection
	Resends    int64 // requests whose connection was lost before the reply, so they went again
	Duplicates int64 // received messages dropped as already delivered (or the Client's own)
	GapFetched int64 // messages fetched from history to fill a gap in seqs
	GapLost    int64 // seqs history could not provide; delivery went on past them
}

// Stats returns the counters since New.
func (c *Client) Stats() Stats {
	return Stats{
		Reconnects: c.reconnects.Load(),
		Resends:    c.resends.Load(),
		Duplicates: c.track.duplicates.Load(),
		GapFetched: c.track.gapFetched.Load(),
		GapLost:    c.track.gapLost.Load(),
	}
}

// session returns the current session.
func (c *Client) session() (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.sess == nil {
		return nil, ErrNotLoggedIn
	}
	return c.sess, nil
}

// backoff returns the delay before reconnect attempt n (from 0): a random
// duration in [0, min(hi, lo*2^n)] ("full jitter"). jitter(k) returns [0, k).
func backoff(n int, lo, hi time.Duration, jitter func(int64) int64) time.Duration {
	ceil := hi
	if n < 62 {
		if d := lo << n; d>>n == lo && d < hi {
			ceil = d
		}
	}
	if ceil <= 0 {
		return 0
	}
	if ceil == math.MaxInt64 {
		ceil--
	}
	return time.Duration(jitter(int64(ceil) + 1))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
