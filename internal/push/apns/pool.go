package apns

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push/apns/h2"
)

// Redial backoff of one connection slot: after a failed dial, or a
// connection that ended (GOAWAY, reset, read error, failed health check)
// less than healthyAfter after it was dialed, the slot waits 1s, 2s, 4s ...
// at most maxDialBackoff, each with jitter (half fixed, half random), so
// the slots of many servers do not redial in step. The first end of a
// connection that had been up for a while is redialed at once. APNs
// treats rapid reconnects as abuse. An answer, whatever its status (500
// and 503 included), says the connection works: it is kept.
const (
	dialBackoff    = time.Second
	maxDialBackoff = 30 * time.Second
	healthyAfter   = 10 * time.Second
)

// dialPatience is how long a request waits for a connection being dialed
// rather than queue on one whose streams are all busy.
const dialPatience = time.Second

// pool holds the HTTP/2 connections of one (credential, environment,
// endpoint). It has a fixed number of slots; a slot whose connection can no
// longer take requests (closed, GOAWAY, marked after a 5xx) is retired and
// redialed. Requests go to the live connection with the most free streams.
//
// Lock order: pool.mu, then the h2.Conn's (State is called with mu held; it
// never waits for I/O, and h2 never calls back into the pool).
type pool struct {
	label string // credential label, for logs
	env   herald.PushEnvironment
	host  string // URL host (with port if given), for requests
	addr  string // host:port, for dialing
	tls   *tls.Config
	// timeout bounds a dial, a write to a connection and the drain of a
	// retired connection.
	timeout time.Duration
	log     *slog.Logger
	stats   *counters
	// backoff and healthy are dialBackoff and healthyAfter; tests shorten
	// them.
	backoff, healthy time.Duration

	ctx    context.Context // cancelled by close: aborts dials in progress
	cancel context.CancelFunc
	wg     sync.WaitGroup // dials and drains in progress

	mu      sync.Mutex
	slots   []slot
	next    int           // rotates the scan start, so ties spread round robin
	changed chan struct{} // closed and replaced when a dial finishes
	closed  bool
}

type slot struct {
	c        *conn // nil: empty
	dialing  bool
	failures int       // consecutive failed dials and short-lived connections
	retryAt  time.Time // no dial before this
	lastErr  error     // the last dial error
}

// failed counts a failure of s at now and puts off its next dial: the
// first failure after a connection that lasted is redialed at once when
// first is set (a connection that ended), the others back off.
// p.mu must be held.
func (p *pool) failedLocked(s *slot, now time.Time, first bool) {
	s.failures++
	n := s.failures
	if first {
		n-- // the connection worked: one quick redial is no storm
	}
	if n <= 0 {
		s.retryAt = time.Time{}
		return
	}
	d := min(p.backoff<<min(n-1, 10), maxDialBackoff)
	d = d/2 + rand.N(d/2+1)
	s.retryAt = now.Add(d)
}

// conn is one HTTP/2 connection. Its streams open and queued are h2's
// State; pending counts the requests acquire handed out that have not
// reached h2's queue yet, so that callers acquiring at once spread over
// the connections.
type conn struct {
	cc      *h2.Conn
	dialed  time.Time
	pending atomic.Int64
	bad     atomic.Bool // APNs asked for a new connection: retire it
}

type poolConfig struct {
	label   string
	env     herald.PushEnvironment
	url     *url.URL
	cert    *tls.Certificate
	roots   *x509.CertPool
	conns   int
	timeout time.Duration
	log     *slog.Logger
	stats   *counters
}

func newPool(c poolConfig) *pool {
	port := c.url.Port()
	if port == "" {
		port = "443"
	}
	tc := &tls.Config{
		ServerName: c.url.Hostname(),
		RootCAs:    c.roots,
		NextProtos: []string{http2.NextProtoTLS},
		MinVersion: tls.VersionTLS12,
	}
	if c.cert != nil {
		tc.Certificates = []tls.Certificate{*c.cert}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &pool{
		label: c.label, env: c.env,
		host: c.url.Host, addr: net.JoinHostPort(c.url.Hostname(), port),
		tls: tc, timeout: c.timeout,
		log:   c.log.With("conn", c.label, "env", string(c.env), "addr", c.url.Host),
		stats: c.stats, backoff: dialBackoff, healthy: healthyAfter,
		ctx: ctx, cancel: cancel,
		slots:   make([]slot, c.conns),
		changed: make(chan struct{}),
	}
}

// poolError is a failure to get a connection: nothing was sent.
type poolError struct {
	addr string
	err  error
}

func (e *poolError) Error() string {
	return fmt.Sprintf("apns: no connection to %s: %v", e.addr, e.err)
}
func (e *poolError) Unwrap() error { return e.err }

// acquire returns the connection with the most free streams (the server's
// limit minus the streams open, queued and about to be queued), counting
// the caller's request in; release it once the request is queued (Start
// returned). It dials empty slots as needed and waits, bounded by ctx,
// while no connection is up but a dial is in progress. A connection whose
// streams are all in use is still returned when no other is being dialed:
// h2 queues the request until a stream frees.
func (p *pool) acquire(ctx context.Context) (*conn, error) {
	waited := false
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		n := len(p.slots)
		start := p.next
		p.next = (p.next + 1) % n
		var best *conn
		bestFree := math.MinInt
		dialing := false
		var lastErr error
		now := time.Now()
		for i := range n {
			s := &p.slots[(start+i)%n]
			if c := s.c; c != nil {
				st := c.cc.State()
				if st.Closed || c.bad.Load() {
					p.retireLocked(s, "closing")
				} else if free := st.MaxStreams - st.Active - st.Queued - int(c.pending.Load()); free > bestFree {
					best, bestFree = c, free
				}
			}
			if s.c == nil && !s.dialing && !now.Before(s.retryAt) {
				p.dialLocked(s)
			}
			if s.dialing {
				dialing = true
			}
			if s.lastErr != nil {
				lastErr = s.lastErr
			}
		}
		// A full connection queues the request; rather wait (a little,
		// once) for a connection being dialed, which will have room.
		if best != nil && (bestFree > 0 || !dialing || waited) {
			best.pending.Add(1)
			p.mu.Unlock()
			return best, nil
		}
		wait := p.changed
		p.mu.Unlock()
		if !dialing {
			if lastErr == nil {
				lastErr = errors.New("no connection")
			}
			return nil, &poolError{addr: p.addr, err: lastErr}
		}
		var patience <-chan time.Time
		if best != nil {
			waited = true
			t := time.NewTimer(dialPatience)
			defer t.Stop()
			patience = t.C
		}
		select {
		case <-wait:
		case <-patience:
		case <-ctx.Done():
			return nil, &poolError{addr: p.addr, err: ctx.Err()}
		}
	}
}

// release ends the count acquire took: the request is in h2's queue (or
// was refused).
func (p *pool) release(c *conn) { c.pending.Add(-1) }

// markBad stops new requests on c: APNs asks for a new connection after
// 503 Shutdown and 400 IdleTimeout. The next acquire retires it.
func (p *pool) markBad(c *conn) { c.bad.Store(true) }

// retire empties the slot holding c, if it still does.
func (p *pool) retire(c *conn, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.slots {
		if p.slots[i].c == c {
			p.retireLocked(&p.slots[i], why)
			return
		}
	}
}

// retireLocked empties s and closes its connection once its requests in
// flight finish (at most timeout). A connection that ended soon after its
// dial counts as a failure of the slot, which backs off before its next
// dial. p.mu must be held.
func (p *pool) retireLocked(s *slot, why string) {
	old := s.c.cc
	now := time.Now()
	if now.Sub(s.c.dialed) < p.healthy {
		p.failedLocked(s, now, true)
	} else {
		s.failures, s.retryAt = 0, time.Time{}
	}
	s.c = nil
	if !p.closed {
		p.stats.replaced.Add(1)
		p.log.Debug("apns connection retired", "reason", why, "failures", s.failures)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
		defer cancel()
		_ = old.Shutdown(ctx) // waits for streams in flight, then closes
	}()
}

// dialLocked starts dialing s. p.mu must be held and the pool open.
func (p *pool) dialLocked(s *slot) {
	s.dialing = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(p.ctx, p.timeout)
		cc, err := p.connect(ctx)
		cancel()

		p.mu.Lock()
		defer p.mu.Unlock()
		s.dialing = false
		if p.closed {
			if cc != nil {
				_ = cc.Close()
			}
			return
		}
		if err != nil {
			p.failedLocked(s, time.Now(), false)
			s.lastErr = err
			p.stats.dialErrors.Add(1)
			p.log.Warn("apns dial failed", "err", err, "failures", s.failures)
		} else {
			// failures is reset once the connection has lasted
			// (retireLocked): one that is dropped at once is no success.
			s.c, s.lastErr = &conn{cc: cc, dialed: time.Now()}, nil
			p.stats.dials.Add(1)
			p.log.Debug("apns connection established")
		}
		close(p.changed)
		p.changed = make(chan struct{})
	}()
}

// connect dials one TLS connection and starts HTTP/2 on it.
func (p *pool) connect(ctx context.Context) (*h2.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 30 * time.Second}, Config: p.tls}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	tc := nc.(*tls.Conn)
	if proto := tc.ConnectionState().NegotiatedProtocol; proto != http2.NextProtoTLS {
		_ = tc.Close()
		return nil, fmt.Errorf("server at %s does not speak HTTP/2 (ALPN %q)", p.addr, proto)
	}
	var hc net.Conn = tc
	var probe *alertConn
	if p.tls.Certificates != nil {
		probe = &alertConn{Conn: tc, readErr: make(chan struct{})}
		hc = probe
	}
	// NewConn returns once the server's SETTINGS (the stream limit) are
	// read, so under TLS 1.3 a refused client certificate, which shows up
	// only after the handshake, fails here, as a dial error, not on every
	// request.
	cc, err := h2.NewConn(ctx, hc, h2.Options{
		Authority: p.host, WriteTimeout: p.timeout, MaxResponseBody: maxBody,
	})
	if err != nil {
		if probe != nil {
			probe.awaitReadError(100 * time.Millisecond)
		}
		if alert := probe.refused(); alert != nil {
			return nil, alert
		}
		return nil, err
	}
	return cc, nil
}

// close retires every connection, waits for their requests in flight (at
// most timeout) and for dials to end.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.cancel()
	for i := range p.slots {
		if p.slots[i].c != nil {
			p.retireLocked(&p.slots[i], "provider closed")
		}
	}
	close(p.changed) // wake waiters: they see closed
	p.mu.Unlock()
	p.wg.Wait()
}

// alertConn wraps the TLS connection of a certificate-auth pool to catch
// a TLS alert from the server. Under TLS 1.3 the server checks the client
// certificate after the client's handshake has returned; if it refuses
// it, it sends an alert and closes, and the client's next write may fail
// first with a broken pipe that says nothing about the certificate.
type alertConn struct {
	*tls.Conn
	once    sync.Once
	readErr chan struct{} // closed when a read fails
	alert   error         // a "remote error" read: set before readErr closes
	reading atomic.Bool   // h2's reader has started
	wrote   atomic.Bool   // a write failed
}

func (c *alertConn) Read(b []byte) (int, error) {
	c.reading.Store(true)
	n, err := c.Conn.Read(b)
	if err != nil {
		c.noteRead(err)
	}
	return n, err
}

func (c *alertConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.wrote.Store(true)
	}
	return n, err
}

// Close reads a pending alert first when a write failed before anything
// read the connection (h2 closes it itself when its preface fails).
func (c *alertConn) Close() error {
	if c.wrote.Load() && !c.reading.Load() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var b [1]byte
		_, err := c.Conn.Read(b[:])
		if err != nil {
			c.noteRead(err)
		}
	}
	return c.Conn.Close()
}

func (c *alertConn) noteRead(err error) {
	c.once.Do(func() {
		if oe := (*net.OpError)(nil); errors.As(err, &oe) && oe.Op == "remote error" {
			c.alert = err
		}
		close(c.readErr)
	})
}

// refused returns the server's TLS alert, if a read has seen one. It is
// nil-safe.
func (c *alertConn) refused() error {
	if c == nil {
		return nil
	}
	select {
	case <-c.readErr:
		return c.alert
	default:
		return nil
	}
}

func (c *alertConn) awaitReadError(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.readErr:
	case <-t.C:
	}
}
