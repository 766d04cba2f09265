// Package h2 is the client side of one HTTP/2 connection, made for APNs:
// many concurrent POST requests with small bodies on one long-lived TLS
// connection. It replaces golang.org/x/net/http2's Transport on Herald's
// push path, whose per-request cost (a goroutine, header maps, validation
// and HPACK of every field, a write per frame) is a quarter of the server's
// CPU per push. Here a request's constant header fields are encoded once
// per connection, the frames of every request waiting are coalesced into
// one write, and one reader goroutine hands each answer to its waiting
// caller. It uses x/net's Framer and HPACK, and obeys the peer's SETTINGS,
// flow control, PING and GOAWAY. See README.md for the design.
package h2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Defaults of Options.
const (
	DefaultWriteTimeout    = 10 * time.Second
	DefaultPingInterval    = 30 * time.Second
	DefaultPingTimeout     = 15 * time.Second
	DefaultMaxResponseBody = 4 << 10
)

// What this side advertises in its SETTINGS, and its receive windows.
// Answers are small: the windows only need to keep many in flight.
const (
	maxReadFrameSize  = 16 << 10 // SETTINGS_MAX_FRAME_SIZE (the protocol's default)
	maxHeaderListSize = 64 << 10 // SETTINGS_MAX_HEADER_LIST_SIZE
	streamRecvWindow  = 256 << 10
	connRecvWindow    = 1 << 20
)

// Protocol defaults for a peer's settings it has not sent.
const (
	defaultMaxStreams   = 1000 // SETTINGS_MAX_CONCURRENT_STREAMS absent: unlimited; this many
	defaultWindow       = 65535
	defaultMaxFrameSize = 16 << 10
	maxStreamID         = 1<<31 - 1
	maxWindow           = 1<<31 - 1
)

// Errors a request can fail with, inside an *Error.
var (
	// ErrClosed: the connection was closed by Close or Shutdown.
	ErrClosed = errors.New("h2: connection closed")
	// ErrPingTimeout: the peer did not answer a PING in time.
	ErrPingTimeout = errors.New("h2: peer did not answer a PING")
	// ErrStreamIDs: the connection has used all its stream IDs.
	ErrStreamIDs = errors.New("h2: connection is out of stream IDs")
	// ErrLost: the connection failed (read or write error, protocol error).
	ErrLost = errors.New("h2: connection lost")
)

// ErrInvalidRequest is wrapped by the error Do returns for a request it
// refuses to send (bad path or header field, header list over the peer's
// limit). It is a plain error, not an *Error: sending it again elsewhere
// would not help.
var ErrInvalidRequest = errors.New("h2: invalid request")

// Error is how a request failed on the connection.
type Error struct {
	Err error
	// Sent reports that the request may have reached the peer and may have
	// been processed: resending it may duplicate it. False means the peer
	// never got it or said it did not process it (it was still queued,
	// RST_STREAM REFUSED_STREAM, a stream above a GOAWAY's last stream ID,
	// the connection failed before its frames were written): it can be
	// sent again on another connection.
	Sent bool
}

func (e *Error) Error() string {
	if e.Sent {
		return e.Err.Error() + " (the request may have been processed)"
	}
	return e.Err.Error() + " (the request was not processed)"
}

func (e *Error) Unwrap() error { return e.Err }

// Unprocessed reports whether err is an *Error for a request the peer did
// not process, which may be sent again elsewhere without a duplicate.
func Unprocessed(err error) bool {
	var e *Error
	return errors.As(err, &e) && !e.Sent
}

// GoAwayError is the peer's GOAWAY.
type GoAwayError struct {
	LastStreamID uint32
	Code         http2.ErrCode
	Debug        string // the debug data; APNs puts a JSON {"reason": ...} here
}

func (e *GoAwayError) Error() string {
	s := fmt.Sprintf("h2: peer sent GOAWAY %v, last stream %d", e.Code, e.LastStreamID)
	if e.Debug != "" {
		s += ": " + e.Debug
	}
	return s
}

// Field is one header field of a request.
type Field struct {
	Name, Value string // the name in lower case
	// Index keeps the field in the connection's HPACK dynamic table, so
	// that it is sent as an index of a byte or two when it repeats: right
	// for values that repeat across requests (authorization, apns-topic,
	// apns-push-type, apns-priority), wrong for values unique to one
	// request (apns-id), which would only push the others out.
	Index bool
}

// Request is one POST. Do reads it while it runs and keeps no reference
// to it after it returns.
type Request struct {
	Path   string // e.g. /3/device/<token>
	Header []Field
	Body   []byte
}

// Response is the peer's answer.
type Response struct {
	Status int
	// The answer's headers that APNs uses; others are not kept.
	ApnsID, ApnsUniqueID, RetryAfter string
	// Body is the start of the body, at most Options.MaxResponseBody
	// bytes; Truncated reports that there was more.
	Body      []byte
	Truncated bool
}

// Options configure a Conn.
type Options struct {
	// Authority is the :authority of every request: the URL's host, with
	// its port if the URL has one. Required.
	Authority string
	// Header is sent on every request after the pseudo-header fields,
	// encoded once for the connection's lifetime (e.g. content-type).
	Header []Field
	// WriteTimeout bounds one write to the connection; a write that does
	// not finish in time fails the connection. Zero means 10s.
	WriteTimeout time.Duration
	// PingInterval: when nothing was read from the peer for between one
	// and two intervals, a PING is sent; if its answer does not arrive
	// within PingTimeout the connection fails with ErrPingTimeout. Zero
	// means 30s and 15s; a negative PingInterval sends none.
	PingInterval, PingTimeout time.Duration
	// MaxResponseBody is how much of an answer's body is kept; zero means
	// 4 KiB.
	MaxResponseBody int

	// afterFunc replaces time.AfterFunc in tests.
	afterFunc func(time.Duration, func()) stopper
	// firstStreamID replaces 1 in tests, to reach the end of the IDs.
	firstStreamID uint32
}

type stopper interface{ Stop() bool }

// Conn is the client side of one HTTP/2 connection. It is safe for
// concurrent use. Two goroutines serve it: a writer that drains the queue
// of requests and control frames into one buffer and writes it with one
// Write, and a reader that dispatches frames to the streams waiting.
//
// Locking: one mutex, Conn.mu, guards the connection's and the streams'
// shared state; the writer's and the reader's own state is marked. The
// writer encodes frames without the lock; a
// stream it is encoding (stream.encoding) is not handed back to its
// caller until the encoding is done, so Do never returns while the writer
// still reads the request.
type Conn struct {
	nc   net.Conn
	opts Options

	// Reader-owned.
	rfr *http2.Framer
	dec *hpack.Decoder
	hd  headerDecoding

	// Writer-owned.
	w writer

	wake      chan struct{} // cap 1: the writer has work
	dead      chan struct{} // closed when the connection ends
	readDone  chan struct{}
	writeDone chan struct{}
	settings  chan struct{} // closed on the peer's first SETTINGS

	mu      sync.Mutex
	err     error // why the connection ended (or stopped taking requests)
	streams map[uint32]*stream
	queue   []*stream // waiting for a stream from qhead on; finished ones are skipped
	qhead   int
	queued  int // live entries in queue
	ctrl    []ctrlFrame
	blocked []*stream // open streams with body left to send
	nextID  uint32
	active  int // open streams
	// The highest stream ID whose frames were handed to a write: on a
	// failure, streams above it were never sent.
	maxAttempted uint32

	// The peer's settings.
	gotSettings       bool
	maxStreams        int
	peerInitialWindow int32
	peerMaxFrame      uint32
	peerMaxHeaderList uint32 // 0: unlimited
	peerTableSize     uint32
	tableSizeChanged  bool

	sendWindow   int64 // connection-level, for request bodies
	recvAvail    int64 // connection-level receive window left
	recvUnacked  int64 // received and not yet given back by WINDOW_UPDATE
	goAway       *GoAwayError
	closing      bool          // Shutdown: no new requests
	drained      chan struct{} // closed when closing or goAway and no stream is open
	drainedOnce  bool
	pings        map[[8]byte]chan struct{} // Ping waiters by payload
	pingSeq      uint64
	healthOut    bool // a health PING is unanswered
	healthData   [8]byte
	healthFrames uint64 // framesRead at the last tick
	idleTimer    stopper
	healthTimer  stopper
	stats        counters
	framesRead   atomic.Uint64
}

type counters struct {
	requests, responses, resets, refused   atomic.Uint64
	writes, framesWritten, bytesWritten    atomic.Uint64
	pingsSent, lateFrames, truncatedBodies atomic.Uint64
}

// stream is one request. Fields are guarded by Conn.mu unless marked.
type stream struct {
	req  *Request
	id   uint32 // 0 while queued
	done chan struct{}

	finished   bool
	err        error
	encoding   bool    // the writer is encoding its frames
	closeLater bool    // finished while encoding: the writer closes done
	timer      stopper // Start's deadline, stopped when the stream ends
	endSent    bool    // END_STREAM encoded, or being encoded
	sent       int     // body bytes given to the writer
	sendWindow int64

	// Writer-owned: this round's work.
	chunkOff, chunk int  // the part of the body to encode
	newHeaders      bool // HEADERS to encode

	// Reader-owned once the stream is open.
	resp        Response
	gotFinal    bool // final (non-1xx) headers received
	recvAvail   int64
	recvUnacked int64
}

// NewConn starts HTTP/2 on nc, an established connection (a *tls.Conn that
// negotiated "h2", or anything wrapping one; in tests a bare TCP
// connection). It writes the client preface and its SETTINGS and waits,
// bounded by ctx, for the peer's SETTINGS, so the stream limit is known
// before the first request, and a peer that refuses the connection (a TLS
// alert after the handshake, a server that is not HTTP/2) fails here.
// On error nc is closed.
func NewConn(ctx context.Context, nc net.Conn, opts Options) (*Conn, error) {
	if tc, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		if p := tc.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
			_ = nc.Close()
			return nil, fmt.Errorf("h2: the server does not speak HTTP/2 (ALPN %q)", p)
		}
	}
	if err := validOptions(&opts); err != nil {
		_ = nc.Close()
		return nil, err
	}
	c := &Conn{
		nc: nc, opts: opts,
		wake: make(chan struct{}, 1), dead: make(chan struct{}),
		readDone: make(chan struct{}), writeDone: make(chan struct{}),
		settings: make(chan struct{}), drained: make(chan struct{}),
		streams:           make(map[uint32]*stream),
		nextID:            1,
		maxStreams:        defaultMaxStreams,
		peerInitialWindow: defaultWindow,
		peerMaxFrame:      defaultMaxFrameSize,
		sendWindow:        defaultWindow,
		recvAvail:         connRecvWindow,
		pings:             make(map[[8]byte]chan struct{}),
	}
	if opts.firstStreamID != 0 {
		c.nextID = opts.firstStreamID
	}
	c.rfr = http2.NewFramer(nil, newReader(nc))
	c.rfr.SetReuseFrames()
	c.rfr.SetMaxReadFrameSize(maxReadFrameSize)
	c.dec = hpack.NewDecoder(4096, c.emit)
	c.dec.SetMaxStringLength(maxHeaderListSize)
	c.w.init(c)

	// The preface, SETTINGS and the connection window, in one write before
	// the goroutines start.
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(opts.WriteTimeout)
	}
	_ = nc.SetWriteDeadline(deadline)
	c.w.buf.WriteString(http2.ClientPreface)
	_ = c.w.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamRecvWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	)
	_ = c.w.fr.WriteWindowUpdate(0, connRecvWindow-defaultWindow)
	if _, err := nc.Write(c.w.buf.Bytes()); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("h2: writing the preface: %w", err)
	}
	c.w.buf.Reset()
	// The connection window starts at the protocol's 65535; ours is the
	// WINDOW_UPDATE just written on top.

	go c.readLoop()
	go c.writeLoop()
	if opts.PingInterval > 0 {
		c.mu.Lock()
		c.idleTimer = c.opts.afterFunc(opts.PingInterval, c.healthTick)
		c.mu.Unlock()
	}

	select {
	case <-c.settings:
		return c, nil
	case <-c.dead:
		err := c.Err()
		c.Close()
		return nil, err
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("h2: waiting for the server's SETTINGS: %w", ctx.Err())
	}
}

func validOptions(o *Options) error {
	if o.Authority == "" {
		return errors.New("h2: Options.Authority is empty")
	}
	if !validValue(o.Authority) {
		return fmt.Errorf("h2: Options.Authority %q has a character not allowed in a header field", o.Authority)
	}
	for _, f := range o.Header {
		if err := validField(f); err != nil {
			return fmt.Errorf("h2: Options.Header: %w", err)
		}
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = DefaultPingTimeout
	}
	if o.MaxResponseBody <= 0 {
		o.MaxResponseBody = DefaultMaxResponseBody
	}
	if o.afterFunc == nil {
		o.afterFunc = func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
	}
	return nil
}

// validField checks a request header field as HTTP/2 wants it: a lower-case
// token name that is not a pseudo-header or a connection-specific field,
// and a value without CR, LF or NUL.
func validField(f Field) error {
	if !httpguts.ValidHeaderFieldName(f.Name) {
		return fmt.Errorf("%w: header field name %q is not a token", ErrInvalidRequest, f.Name)
	}
	for i := 0; i < len(f.Name); i++ {
		if c := f.Name[i]; c >= 'A' && c <= 'Z' {
			return fmt.Errorf("%w: header field name %q is not in lower case", ErrInvalidRequest, f.Name)
		}
	}
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host":
		return fmt.Errorf("%w: header field %q is not allowed in HTTP/2", ErrInvalidRequest, f.Name)
	}
	if !validValue(f.Value) {
		return fmt.Errorf("%w: header field %q has a value with a character not allowed", ErrInvalidRequest, f.Name)
	}
	return nil
}

func validValue(v string) bool { return httpguts.ValidHeaderFieldValue(v) }

func validPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// Do sends req and waits for the answer, or for ctx. A request beyond the
// peer's stream limit waits in a queue (FIFO) for a stream.
//
// Errors: an *Error for a request that failed on the connection (Sent
// tells whether it may have been processed; see Unprocessed), wrapping
// ctx's error when ctx ended first, a *GoAwayError, ErrClosed,
// ErrPingTimeout, ErrStreamIDs, ErrLost or an http2.StreamError (the peer
// reset the stream); a plain error wrapping ErrInvalidRequest for a
// request it will not send. When ctx ends first and the request was sent,
// the stream is reset (RST_STREAM CANCEL, written before any later frame
// of this connection): once Do has returned, no answer to it is read.
func (c *Conn) Do(ctx context.Context, req *Request) (*Response, error) {
	if err := ctx.Err(); err != nil {
		if _, err := c.headerListSize(req); err != nil {
			return nil, err // an invalid request says so first
		}
		return nil, &Error{Err: err}
	}
	s, err := c.enqueue(req, time.Time{})
	if err != nil {
		return nil, err
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		c.cancel(s, ctx.Err())
		<-s.done
	}
	if s.err != nil {
		return nil, s.err
	}
	return &s.resp, nil
}

// Call is a request started by Start.
type Call struct {
	c *Conn
	s *stream
}

// Start sends req as Do does but returns at once, for a caller that may
// stop waiting for the answer while the stream stays open: a peer may act
// on a request whose answer is slow, a reset would not undo that, and the
// answer, when it comes, says what became of it. The stream is reset
// (RST_STREAM CANCEL) if it is still open at until (the request fails with
// context.DeadlineExceeded, Sent as for a cancelled Do). Done is closed
// when the call has ended, and Result then tells how. req must not change
// until Done is closed. An error from Start (as from Do, for a request
// that was not queued) means nothing was sent.
//
// No goroutine waits for the call: the deadline is a timer, stopped when
// the stream ends.
func (c *Conn) Start(req *Request, until time.Time) (*Call, error) {
	s, err := c.enqueue(req, until)
	if err != nil {
		return nil, err
	}
	return &Call{c: c, s: s}, nil
}

// Done is closed when the call has ended.
func (x *Call) Done() <-chan struct{} { return x.s.done }

// Result is the call's answer, or why it failed. It must be called only
// after Done is closed.
func (x *Call) Result() (*Response, error) {
	if x.s.err != nil {
		return nil, x.s.err
	}
	return &x.s.resp, nil
}

// Cancel ends the call now if it has not ended, as Do does when its
// context ends, with cause as its error.
func (x *Call) Cancel(cause error) { x.c.cancel(x.s, cause) }

// Withdraw ends the call with cause if it is still waiting for a stream
// (nothing of it written), and reports whether it did. A call that has a
// stream is left as it is: its request may have reached the peer.
func (x *Call) Withdraw(cause error) bool {
	c, s := x.c, x.s
	c.mu.Lock()
	if s.finished || s.id != 0 {
		c.mu.Unlock()
		return false
	}
	c.queued--
	c.finishLocked(s, &Error{Err: cause})
	c.mu.Unlock()
	c.signal()
	c.closeIfDrained()
	return true
}

// headerListSize validates req and returns its header list size as the
// peer counts it (name, value and 32 per field).
func (c *Conn) headerListSize(req *Request) (uint32, error) {
	if !validPath(req.Path) {
		return 0, fmt.Errorf("%w: path %q", ErrInvalidRequest, req.Path)
	}
	size := uint32(32+len(":method")+len("POST")) + 32 + uint32(len(":scheme")+len("https")) +
		32 + uint32(len(":authority")+len(c.opts.Authority)) + 32 + uint32(len(":path")+len(req.Path)) + c.w.constSize
	for _, f := range req.Header {
		if err := validField(f); err != nil {
			return 0, err
		}
		size += 32 + uint32(len(f.Name)+len(f.Value))
	}
	return size, nil
}

// enqueue checks req and queues it for a stream; a non-zero until arms
// the timer that resets the stream then.
func (c *Conn) enqueue(req *Request, until time.Time) (*stream, error) {
	size, err := c.headerListSize(req)
	if err != nil {
		return nil, err
	}
	s := &stream{req: req, done: make(chan struct{})}
	c.mu.Lock()
	if err := c.refusalLocked(); err != nil {
		c.mu.Unlock()
		return nil, &Error{Err: err}
	}
	if c.peerMaxHeaderList != 0 && size > c.peerMaxHeaderList {
		limit := c.peerMaxHeaderList
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: header list of %d bytes is over the server's limit of %d", ErrInvalidRequest, size, limit)
	}
	if !until.IsZero() {
		s.timer = c.opts.afterFunc(time.Until(until), func() { c.cancel(s, context.DeadlineExceeded) })
	}
	c.queue = append(c.queue, s)
	c.queued++
	startable := c.active < c.maxStreams
	c.mu.Unlock()
	if startable {
		c.signal()
	}
	return s, nil
}

// refusalLocked is why no new request may start, or nil. c.mu must be held.
func (c *Conn) refusalLocked() error {
	switch {
	case c.err != nil:
		return c.err
	case c.goAway != nil:
		return c.goAway
	case c.closing:
		return ErrClosed
	case c.nextID > maxStreamID:
		return ErrStreamIDs
	}
	return nil
}

// cancel ends s because its caller gave up.
func (c *Conn) cancel(s *stream, cause error) {
	c.mu.Lock()
	if s.finished {
		c.mu.Unlock()
		return
	}
	if s.id == 0 {
		c.queued--
		c.finishLocked(s, &Error{Err: cause})
	} else {
		c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FrameRSTStream, stream: s.id, code: http2.ErrCodeCancel})
		c.stats.resets.Add(1)
		c.finishLocked(s, &Error{Err: cause, Sent: true})
	}
	c.mu.Unlock()
	c.signal()
	c.closeIfDrained()
}

// finishLocked hands s its outcome (err, or s.resp when err is nil). c.mu
// must be held.
func (c *Conn) finishLocked(s *stream, err error) {
	if s.finished {
		return
	}
	s.finished = true
	s.err = err
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.id != 0 {
		delete(c.streams, s.id)
		c.active--
		if c.queued > 0 {
			c.signal() // a stream is free
		}
	}
	if s.encoding {
		s.closeLater = true
	} else {
		close(s.done)
	}
	c.checkDrainedLocked()
}

// checkDrainedLocked closes drained once the connection takes no new
// streams (GOAWAY, Shutdown) and has none open. c.mu must be held.
func (c *Conn) checkDrainedLocked() {
	if (c.goAway != nil || c.closing) && c.active == 0 && !c.drainedOnce {
		c.drainedOnce = true
		close(c.drained)
	}
}

// failQueueLocked ends every request waiting for a stream with err, as
// unprocessed. c.mu must be held.
func (c *Conn) failQueueLocked(err error) {
	for _, s := range c.queue[c.qhead:] {
		if !s.finished {
			c.finishLocked(s, &Error{Err: err})
		}
	}
	clear(c.queue)
	c.queue, c.qhead, c.queued = c.queue[:0], 0, 0
}

// closeIfDrained ends a connection that has said or heard GOAWAY once its
// last stream is done.
func (c *Conn) closeIfDrained() {
	select {
	case <-c.drained:
	default:
		return
	}
	c.mu.Lock()
	g, closing := c.goAway, c.closing
	c.mu.Unlock()
	if g != nil {
		c.fail(g, false)
	} else if closing {
		c.fail(ErrClosed, true)
	}
}

// signal wakes the writer.
func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// fail ends the connection: every request waiting or in flight gets err
// (Sent for streams whose frames were handed to a write), and the socket
// is closed. goAway says GOAWAY to the peer first (a local decision:
// Close, Shutdown, a protocol error of the peer's). The first call wins.
func (c *Conn) fail(err error, goAway bool) {
	c.failCode(err, goAway, http2.ErrCodeNo, "")
}

func (c *Conn) failCode(err error, goAway bool, code http2.ErrCode, debug string) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	for id, s := range c.streams {
		c.finishLocked(s, &Error{Err: err, Sent: id <= c.maxAttempted})
	}
	c.failQueueLocked(err)
	c.blocked = nil
	for _, ch := range c.pings {
		close(ch)
	}
	c.pings = nil
	for _, t := range []stopper{c.idleTimer, c.healthTimer} {
		if t != nil {
			t.Stop()
		}
	}
	close(c.dead)
	c.mu.Unlock()

	if goAway {
		// A whole frame in one Write lands between the writer's writes,
		// which are whole frames too.
		var b strings.Builder
		fr := http2.NewFramer(&b, nil)
		_ = fr.WriteGoAway(0, code, []byte(debug))
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.nc.Write([]byte(b.String()))
	}
	_ = c.nc.Close()
}

// Err is why the connection ended, or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.dead }

// Close ends the connection now: requests waiting or in flight fail with
// ErrClosed (Sent as for any failure). It says GOAWAY to the peer, and
// returns once both goroutines have stopped.
func (c *Conn) Close() error {
	c.fail(ErrClosed, true)
	<-c.readDone
	<-c.writeDone
	return nil
}

// Shutdown stops new requests (those still queued fail, unprocessed, with
// ErrClosed), waits, bounded by ctx, for the requests in flight to be
// answered, then closes the connection. It returns ctx's error if it gave
// up waiting.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		c.failQueueLocked(ErrClosed)
		c.checkDrainedLocked()
	}
	c.mu.Unlock()
	var err error
	select {
	case <-c.drained:
	case <-c.dead:
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.Close()
	return err
}

// Ping sends a PING and waits for its answer, bounded by ctx.
func (c *Conn) Ping(ctx context.Context) error {
	ch := make(chan struct{})
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.pingSeq++
	var data [8]byte
	data[0] = 'p'
	putUint56(data[1:], c.pingSeq)
	c.pings[data] = ch
	c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FramePing, data: data})
	c.stats.pingsSent.Add(1)
	c.mu.Unlock()
	c.signal()
	select {
	case <-ch:
		if err := c.Err(); err != nil {
			return err
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pings, data)
		c.mu.Unlock()
		return ctx.Err()
	}
}

func putUint56(b []byte, v uint64) {
	for i := 6; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

// healthTick runs every PingInterval: if no frame was read since the last
// tick, it sends a PING that must be answered within PingTimeout.
func (c *Conn) healthTick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	n := c.framesRead.Load()
	if n == c.healthFrames && !c.healthOut {
		c.healthOut = true
		c.pingSeq++
		c.healthData[0] = 'h'
		putUint56(c.healthData[1:], c.pingSeq)
		c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FramePing, data: c.healthData})
		c.stats.pingsSent.Add(1)
		c.signal()
		c.healthTimer = c.opts.afterFunc(c.opts.PingTimeout, c.healthExpired)
	}
	c.healthFrames = n
	c.idleTimer = c.opts.afterFunc(c.opts.PingInterval, c.healthTick)
}

func (c *Conn) healthExpired() {
	c.mu.Lock()
	out := c.healthOut && c.err == nil
	c.mu.Unlock()
	if out {
		c.fail(ErrPingTimeout, false)
	}
}

// State is a snapshot of the connection.
type State struct {
	Active     int // streams open
	Queued     int // requests waiting for a stream
	MaxStreams int // the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	// Closed: the connection takes no new requests (GOAWAY, Shutdown,
	// failed, closed, out of stream IDs); requests in flight may finish.
	Closed bool
}

// State returns the connection's state. It takes the connection's lock for
// a moment and never waits for I/O.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{Active: c.active, Queued: c.queued, MaxStreams: c.maxStreams, Closed: c.refusalLocked() != nil}
}

// Stats are cumulative counters of the connection.
type Stats struct {
	Requests  uint64 // streams started
	Responses uint64 // answers delivered
	Resets    uint64 // streams this side reset (cancelled, malformed answer)
	Refused   uint64 // streams the peer refused or cut by GOAWAY, unprocessed
	// Writes to the connection, and the frames and bytes they carried:
	// FramesWritten/Writes is how well requests are coalesced.
	Writes, FramesWritten, BytesWritten uint64
	FramesRead                          uint64
	PingsSent                           uint64
	LateFrames                          uint64 // frames for streams already finished (e.g. cancelled)
	TruncatedBodies                     uint64 // answers longer than MaxResponseBody
}

// Stats returns the counters.
func (c *Conn) Stats() Stats {
	s := &c.stats
	return Stats{
		Requests: s.requests.Load(), Responses: s.responses.Load(), Resets: s.resets.Load(), Refused: s.refused.Load(),
		Writes: s.writes.Load(), FramesWritten: s.framesWritten.Load(), BytesWritten: s.bytesWritten.Load(),
		FramesRead: c.framesRead.Load(), PingsSent: s.pingsSent.Load(), LateFrames: s.lateFrames.Load(),
		TruncatedBodies: s.truncatedBodies.Load(),
	}
}
