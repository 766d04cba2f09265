package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/herald-im/herald/internal/clientaddr"
)

// capListener bounds the connections that have not authenticated yet: at
// most maxTotal in all and maxPerAddr from one client address (0: no
// per-address cap). A connection counts from its accept until it
// authenticates (a WebSocket login, a signed or admin-token API request:
// Authenticated) or closes; a logged-in session is bounded by the user's
// device limit instead. Past a cap the connection is closed at once,
// counted and logged (at most one line per refuseLogEvery), so a flood of
// idle connections cannot take every file descriptor: the sessions and
// the other addresses keep working.
//
// Time bounds the rest: a connection that sends no request is closed by
// the HTTP server's header timeout, an idle keep-alive one by its idle
// timeout, and a WebSocket that does not log in by the login timeout.
type capListener struct {
	net.Listener
	maxTotal, maxPerAddr int
	log                  *slog.Logger

	mu     sync.Mutex
	total  int
	byAddr map[string]int

	refusedAddr, refusedServer atomic.Int64

	logMu    sync.Mutex
	lastLog  time.Time
	unlogged int64
	logEvery time.Duration
	now      func() time.Time
}

// refuseLogEvery spaces the "connection refused" lines under a flood.
const refuseLogEvery = 10 * time.Second

func newCapListener(ln net.Listener, maxTotal, maxPerAddr int, log *slog.Logger) *capListener {
	return &capListener{Listener: ln, maxTotal: maxTotal, maxPerAddr: maxPerAddr, log: log,
		byAddr: make(map[string]int), logEvery: refuseLogEvery, now: time.Now}
}

// ListenerStats are the client listener's counters, exported as
// herald_listener_*.
type ListenerStats struct {
	Unauthenticated  int64 // connections open that have not authenticated yet
	RefusedAddrCap   int64 // connections refused: their address had max-unauthenticated-conns-per-addr open
	RefusedServerCap int64 // connections refused: max-unauthenticated-conns were open
}

func (l *capListener) stats() ListenerStats {
	l.mu.Lock()
	open := int64(l.total)
	l.mu.Unlock()
	return ListenerStats{Unauthenticated: open, RefusedAddrCap: l.refusedAddr.Load(), RefusedServerCap: l.refusedServer.Load()}
}

// Accept returns the next connection within the caps; those beyond are
// closed here and never reach the HTTP server.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := clientaddr.Key(c.RemoteAddr().String())
		l.mu.Lock()
		var refused string
		switch {
		case l.total >= l.maxTotal:
			refused = "max-unauthenticated-conns"
		case l.maxPerAddr > 0 && l.byAddr[addr] >= l.maxPerAddr:
			refused = "max-unauthenticated-conns-per-addr"
		default:
			l.total++
			l.byAddr[addr]++
		}
		l.mu.Unlock()
		if refused == "" {
			return &capConn{Conn: c, l: l, addr: addr}, nil
		}
		l.logRefusal(addr, refused)
		// Counted after the log line is decided, so whoever sees the count
		// also sees the line (the listener test relies on this order), and
		// before the close, so a client that sees its connection closed
		// also sees it counted.
		if refused == "max-unauthenticated-conns" {
			l.refusedServer.Add(1)
		} else {
			l.refusedAddr.Add(1)
		}
		c.Close()
	}
}

// logRefusal writes the first refusal, then at most one line per
// logEvery with the number refused since the last line.
func (l *capListener) logRefusal(addr, limit string) {
	l.logMu.Lock()
	now := l.now()
	l.unlogged++
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < l.logEvery {
		l.logMu.Unlock()
		return
	}
	n := l.unlogged
	l.unlogged, l.lastLog = 0, now
	l.logMu.Unlock()
	l.log.Warn("connections refused: too many before login", "limit", limit, "last_addr", addr,
		"refused", n, "max_total", l.maxTotal, "max_per_addr", l.maxPerAddr, "next_report_in", l.logEvery)
}

func (l *capListener) release(addr string) {
	l.mu.Lock()
	l.total--
	if n := l.byAddr[addr] - 1; n > 0 {
		l.byAddr[addr] = n
	} else {
		delete(l.byAddr, addr)
	}
	l.mu.Unlock()
}

// capConn is an accepted connection; it leaves the caps once, when it
// authenticates or closes.
type capConn struct {
	net.Conn
	l        *capListener
	addr     string
	released atomic.Bool
}

// Authenticated takes the connection out of the unauthenticated count:
// the gateway calls it at login, the API after a valid credential.
func (c *capConn) Authenticated() {
	if c.released.CompareAndSwap(false, true) {
		c.l.release(c.addr)
	}
}

func (c *capConn) Close() error {
	c.Authenticated() // leaves the count either way
	return c.Conn.Close()
}

// SyscallConn exposes the descriptor, so the gateway's epoll reader can
// poll a capped connection like a bare one.
func (c *capConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connection has no descriptor")
	}
	return sc.SyscallConn()
}

// CloseWrite half-closes, for the gateway's closing handshake.
func (c *capConn) CloseWrite() error {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.New("connection cannot half-close")
	}
	return cw.CloseWrite()
}

// connKey carries the request's connection in its context (ConnContext).
type connKey struct{}

// markAuthenticated takes r's connection out of the unauthenticated count;
// the API calls it for a request with a valid credential.
func markAuthenticated(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(*capConn); ok {
		c.Authenticated()
	}
}

// drainListener is the client listener under the caps. Its Close, called
// by the HTTP server's Shutdown, stops accepting but leaves the socket
// open until release, at the end of Server.Shutdown. A client that
// reconnects while the server drains waits in the kernel's accept queue
// and is reset when the process ends, instead of being refused at once:
// one failed attempt for the whole drain, where a refusal at every step
// of its backoff (0.5, 1, 2, 4 s ...) would leave it waiting seconds
// after the next process listens. Only a single node's listener drains
// so (several nodes close theirs at once: a client, or a load balancer
// that finds the port closed, goes to another node), and only a TCP one.
type drainListener struct {
	*net.TCPListener
	stopped atomic.Bool
}

func newDrainListener(ln net.Listener) net.Listener {
	if tl, ok := ln.(*net.TCPListener); ok {
		return &drainListener{TCPListener: tl}
	}
	return ln
}

// Accept returns net.ErrClosed once Close was called; a connection
// accepted as it was called is closed.
func (l *drainListener) Accept() (net.Conn, error) {
	c, err := l.TCPListener.Accept()
	if l.stopped.Load() {
		if c != nil {
			c.Close()
		}
		return nil, net.ErrClosed
	}
	return c, err
}

// Close stops accepting: a past deadline wakes the Accept in progress.
func (l *drainListener) Close() error {
	l.stopped.Store(true)
	return l.TCPListener.SetDeadline(time.Unix(1, 0))
}

// release closes the socket.
func (l *drainListener) release() error { return l.TCPListener.Close() }
