package emulator

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The provider API's own HTTP/2 server: one goroutine reads a
// connection's frames and decides each push as its last frame arrives,
// in place, with no goroutine per stream; answers go into one buffer
// that is written once per batch of frames read (or, with a delay, once
// per batch of answers falling due on the connection's timer). The
// constant parts of an answer's header block are pre-encoded, HPACK
// without the dynamic table, so the encoder needs no state.
//
// Requests for other paths (the vendors mounted with Handle, the control
// API) are handed to net/http handlers, each on a goroutine of its own
// with its body read in full first: they are not the hot path.
//
// Locking: h2conn.mu guards the streams, the send windows, the output
// buffer and the timer heap; writeMu is held while writing to the
// network, never while waiting for mu. Decisions and their effects
// (finish: counters, the inbox, OnAccept) run without mu.

const (
	h2Preface       = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2ConnWindow    = 16 << 20 // receive window of a connection
	h2StreamWindow  = 65535    // receive window of a stream: the protocol's default, not sent
	h2MaxHeaderList = 64 << 10 // SETTINGS_MAX_HEADER_LIST_SIZE
	h2MaxFrame      = 16384    // the frames read: the default SETTINGS_MAX_FRAME_SIZE
	h2MaxBridged    = 1 << 20  // request body limit of the net/http routes
	h2FlushAt       = 64 << 10 // output written mid-batch beyond this
	h2WriteTimeout  = 30 * time.Second
	h2DrainTimeout  = time.Minute      // after GOAWAY, streams still open are dropped
	h2HeaderTable   = 4096             // the decoder's dynamic table: the default, not sent
	h2DueSlot       = time.Millisecond // delayed answers are due on this grid
)

// Stream kinds.
const (
	kindPush    = iota + 1 // the provider API
	kindBridged            // a net/http handler
)

type h2conn struct {
	c  *conn
	a  *APNs
	tc *tls.Conn
	// closeOnce guards closeSoon.
	closeOnce sync.Once
	br        *bufio.Reader
	fr        *http2.Framer
	dec       *hpack.Decoder
	state     *tls.ConnectionState // for bridged requests
	ctx       context.Context      // bridged requests'; cancelled when the connection ends
	stop      context.CancelFunc
	epoch     time.Time // the timer heap's clock: nanoseconds since epoch

	// Header block being decoded; reader goroutine only.
	cur        *h2stream // nil: decode and discard
	curEnd     bool      // its HEADERS frame ended the stream
	trailers   bool
	hdrSize    int
	sawRegular bool
	// Receive flow control; reader goroutine only.
	recvConn    int64 // what the client may still send on the connection
	connUnacked int64 // received and not yet given back

	mu         sync.Mutex
	streams    map[uint32]*h2stream // open streams
	maxID      uint32               // highest stream ID the client opened
	open       int                  // len(streams): counted against MaxConcurrentStreams
	wbuf       []byte
	spare      []byte
	sendConn   int64 // what we may still send on the connection
	peerWin    int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame  int   // the client's SETTINGS_MAX_FRAME_SIZE
	blocked    []*h2stream
	goingAway  bool // GOAWAY sent or received: close when no stream is open
	sentGoAway bool
	closing    bool // close once the output is written
	closed     bool
	due        dueHeap
	timer      *time.Timer
	timerAt    int64 // when timer fires; 0: not armed
	firing     []*h2stream

	writeMu sync.Mutex
}

type h2stream struct {
	id   uint32
	kind uint8

	// Set while the request is read (reader goroutine).
	rq        pushRequest
	authority string
	scheme    string
	bad       bool        // malformed: reset with PROTOCOL_ERROR
	hdr       http.Header // kindBridged
	req       *http.Request
	body      []byte  // the body read so far, when it spans DATA frames
	bodyp     *[]byte // body's pooled buffer (pushes)
	bodyLen   int64
	recvWin   int64 // what the client may still send on the stream
	remoteEnd bool  // END_STREAM received
	decided   bool  // push: its answer is fixed (on the timer or sent); later DATA is dropped
	arrived   int64 // push: when the request was complete, on the epoch clock
	d         decision

	// Guarded by h2conn.mu.
	answering bool // push: being answered; a reset no longer counts it unanswered
	closed    bool
	sendWin   int64
	pending   []byte // answer DATA waiting for flow-control window
	cancel    context.CancelFunc
}

// serveH2 serves an HTTP/2 connection (ALPN h2) until it ends.
func (c *conn) serveH2(tc *tls.Conn) {
	st := tc.ConnectionState()
	h := &h2conn{
		c: c, a: c.a, tc: tc,
		br:        bufio.NewReaderSize(tc, 32<<10),
		state:     &st,
		epoch:     time.Now(),
		streams:   make(map[uint32]*h2stream),
		sendConn:  65535,
		peerWin:   65535,
		peerFrame: 16384,
		recvConn:  h2ConnWindow,
	}
	h.ctx, h.stop = context.WithCancel(c.a.ctx)
	h.fr = http2.NewFramer(nil, h.br)
	h.fr.SetReuseFrames()
	h.fr.SetMaxReadFrameSize(h2MaxFrame)
	h.dec = hpack.NewDecoder(h2HeaderTable, h.emit)
	h.dec.SetMaxStringLength(h2MaxHeaderList)
	c.h2.Store(h)
	h.serve()
}

func (h *h2conn) serve() {
	defer h.teardown()
	h.mu.Lock()
	h.appendSettings()
	h.appendWindowUpdate(0, h2ConnWindow-65535)
	h.mu.Unlock()
	h.flush(false)

	var preface [len(h2Preface)]byte
	h.tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(h.br, preface[:]); err != nil || string(preface[:]) != h2Preface {
		return
	}
	h.tc.SetReadDeadline(time.Time{})
	first := true
	for {
		if h.inputDrained() {
			h.flush(true)
		}
		f, err := h.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				h.resetStream(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				h.fail(http2.ErrCode(ce))
			} else if errors.Is(err, http2.ErrFrameTooLarge) {
				h.fail(http2.ErrCodeFrameSize)
			}
			return
		}
		if first {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				h.fail(http2.ErrCodeProtocol)
				return
			}
			first = false
		}
		if code := h.frame(f); code != http2.ErrCodeNo {
			h.fail(code)
			return
		}
	}
}

// inputDrained reports whether the next frame is not wholly buffered, so
// reading it may block: time to write what the batch produced.
func (h *h2conn) inputDrained() bool {
	n := h.br.Buffered()
	if n < 9 {
		return true
	}
	p, _ := h.br.Peek(9)
	length := int(p[0])<<16 | int(p[1])<<8 | int(p[2])
	return n < 9+length
}

// frame handles one frame; a code other than NO_ERROR is a connection
// error.
func (h *h2conn) frame(f http2.Frame) http2.ErrCode {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		return h.headers(f)
	case *http2.ContinuationFrame:
		if err := h.decode(f.HeaderBlockFragment()); err != nil {
			return http2.ErrCodeCompression
		}
		if f.HeadersEnded() {
			return h.endHeaders()
		}
	case *http2.DataFrame:
		return h.data(f)
	case *http2.SettingsFrame:
		return h.settings(f)
	case *http2.WindowUpdateFrame:
		return h.windowUpdate(f)
	case *http2.RSTStreamFrame:
		return h.clientReset(f.StreamID)
	case *http2.PingFrame:
		if !f.IsAck() {
			h.mu.Lock()
			h.wbuf = appendFrameHeader(h.wbuf, 8, http2.FramePing, http2.FlagPingAck, 0)
			h.wbuf = append(h.wbuf, f.Data[:]...)
			h.mu.Unlock()
		}
	case *http2.GoAwayFrame:
		h.mu.Lock()
		h.goingAway = true
		if h.open == 0 {
			h.closing = true
		}
		h.mu.Unlock()
	case *http2.PushPromiseFrame:
		return http2.ErrCodeProtocol
	}
	// PRIORITY and unknown frames are ignored.
	return http2.ErrCodeNo
}

func (h *h2conn) headers(f *http2.HeadersFrame) http2.ErrCode {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ErrCodeProtocol
	}
	h.cur, h.curEnd, h.trailers, h.hdrSize, h.sawRegular = nil, f.StreamEnded(), false, 0, false
	h.mu.Lock()
	s := h.streams[id]
	switch {
	case s != nil:
		// Trailers: they end the stream; their fields are dropped.
		if s.remoteEnd || !f.StreamEnded() { // mu held
			h.mu.Unlock()
			h.resetStream(id, http2.ErrCodeProtocol)
			break
		}
		h.cur, h.trailers = s, true
		h.mu.Unlock()
	case id <= h.maxID:
		// A stream already closed (reset by us, answered early): ignore.
		h.mu.Unlock()
	default:
		h.maxID = id
		switch {
		case h.goingAway:
			// Opened after our GOAWAY: ignored, the client retries it elsewhere.
			h.mu.Unlock()
		case h.open >= int(h.a.maxStream):
			h.appendRST(id, http2.ErrCodeRefusedStream)
			h.mu.Unlock()
		default:
			s = &h2stream{id: id, recvWin: h2StreamWindow, sendWin: h.peerWin}
			s.rq.contentLength = -1
			s.rq.h2 = true
			h.streams[id] = s
			h.open++
			h.mu.Unlock()
			h.cur = s
		}
	}
	h.dec.SetEmitEnabled(h.cur != nil && !h.trailers)
	if err := h.decode(f.HeaderBlockFragment()); err != nil {
		return http2.ErrCodeCompression
	}
	if f.HeadersEnded() {
		return h.endHeaders()
	}
	return http2.ErrCodeNo
}

func (h *h2conn) decode(frag []byte) error {
	_, err := h.dec.Write(frag)
	return err
}

// emit receives each decoded header field of the block being read.
func (h *h2conn) emit(f hpack.HeaderField) {
	s := h.cur
	h.hdrSize += len(f.Name) + len(f.Value) + 32
	if s == nil || h.trailers || s.bad {
		return
	}
	if h.hdrSize > h2MaxHeaderList {
		return // answered 431 at the end of the block
	}
	name, v := f.Name, f.Value
	if strings.HasPrefix(name, ":") {
		if h.sawRegular {
			s.bad = true
			return
		}
		var dst *string
		switch name {
		case ":method":
			dst = &s.rq.method
		case ":path":
			dst = &s.rq.path
		case ":scheme":
			dst = &s.scheme
		case ":authority":
			dst = &s.authority
		default:
			s.bad = true
			return
		}
		if *dst != "" || v == "" {
			s.bad = true
			return
		}
		*dst = v
		return
	}
	if !h.sawRegular {
		h.sawRegular = true
		if !strings.HasPrefix(s.rq.path, "/3/") {
			s.hdr = make(http.Header)
		}
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			s.bad = true // HTTP/2 field names are lower case
			return
		}
	}
	switch name {
	case "authorization":
		h.checked(s, iAuthorization, v)
	case "apns-topic":
		h.checked(s, iTopic, v)
	case "apns-push-type":
		h.checked(s, iPushType, v)
	case "apns-priority":
		h.checked(s, iPriority, v)
	case "apns-expiration":
		h.checked(s, iExpiration, v)
	case "apns-collapse-id":
		h.checked(s, iCollapseID, v)
	case "apns-id":
		h.checked(s, iID, v)
	case "content-length":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || (s.rq.contentLength >= 0 && n != s.rq.contentLength) {
			s.bad = true
			return
		}
		s.rq.contentLength = n
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		s.bad = true // connection-specific: malformed in HTTP/2
		return
	case "te":
		if v != "trailers" {
			s.bad = true
			return
		}
	}
	if s.hdr != nil {
		if name == "host" && s.authority == "" {
			s.authority = v
		}
		k := http.CanonicalHeaderKey(name)
		s.hdr[k] = append(s.hdr[k], v)
	}
}

func (h *h2conn) checked(s *h2stream, i int, v string) {
	if s.rq.cnt[i] == 0 {
		s.rq.hdr[i] = v
	}
	if s.rq.cnt[i] < 255 {
		s.rq.cnt[i]++
	}
}

// endHeaders completes a header block: a new request is classified and,
// for a push, checked as far as its headers go.
func (h *h2conn) endHeaders() http2.ErrCode {
	if err := h.dec.Close(); err != nil {
		return http2.ErrCodeCompression
	}
	s := h.cur
	h.cur = nil
	if s == nil {
		return http2.ErrCodeNo
	}
	if h.trailers {
		h.setRemoteEnd(s)
		h.endStream(s)
		return http2.ErrCodeNo
	}
	if h.curEnd {
		h.setRemoteEnd(s)
	}
	if s.rq.method == "" || s.rq.path == "" || s.scheme == "" {
		s.bad = true
	}
	if s.bad {
		h.resetStream(s.id, http2.ErrCodeProtocol)
		return http2.ErrCodeNo
	}
	if h.hdrSize > h2MaxHeaderList {
		h.answerPlain(s, http.StatusRequestHeaderFieldsTooLarge)
		return http2.ErrCodeNo
	}
	if !strings.HasPrefix(s.rq.path, "/3/") {
		if s.hdr == nil {
			s.hdr = make(http.Header)
		}
		u, err := url.ParseRequestURI(s.rq.path)
		if err != nil {
			h.answerPlain(s, http.StatusBadRequest)
			return http2.ErrCodeNo
		}
		r := &http.Request{
			Method: s.rq.method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: s.hdr,
			Host: s.authority, RequestURI: s.rq.path, RemoteAddr: h.tc.RemoteAddr().String(), TLS: h.state,
			ContentLength: s.rq.contentLength,
		}
		if _, pattern := h.a.mux.Handler(r); pattern != "" || strings.HasPrefix(u.Path, controlPrefix) {
			s.kind, s.req = kindBridged, r
		}
	}
	if s.kind == 0 {
		// Set only now: a request answered above (a path that is not a
		// URL) was never counted received or in flight.
		s.kind = kindPush
	}
	if s.kind == kindPush {
		a := h.a
		a.stats.received.Add(1)
		a.stats.inFlight.Add(1)
		a.stats.noteInFlight(int64(h.c.inFlight.Add(1)))
		d := &s.d
		d.ans = a.checkHeaders(h.c, &s.rq, &d.p, a.now())
		if d.ans.status == 0 && s.rq.contentLength > int64(payloadLimit(d.p.pushType)) {
			d.ans = answer{http.StatusRequestEntityTooLarge, PayloadTooLarge}
		}
		if d.ans.status != 0 {
			h.decidePush(s) // answered without its body
		}
	}
	if h.curEnd {
		h.endStream(s)
	}
	return http2.ErrCodeNo
}

func (h *h2conn) data(f *http2.DataFrame) http2.ErrCode {
	id, n := f.StreamID, int64(f.Length)
	if h.recvConn -= n; h.recvConn < 0 {
		return http2.ErrCodeFlowControl
	}
	// Every byte is given back to the connection's window, whatever
	// becomes of it; in bulk, so as not to answer each frame.
	if h.connUnacked += n; h.connUnacked >= h2ConnWindow/2 {
		h.mu.Lock()
		h.appendWindowUpdate(0, uint32(h.connUnacked))
		h.mu.Unlock()
		h.recvConn += h.connUnacked
		h.connUnacked = 0
	}
	h.mu.Lock()
	s := h.streams[id]
	idle := id > h.maxID
	h.mu.Unlock()
	if idle {
		return http2.ErrCodeProtocol
	}
	if s == nil {
		return http2.ErrCodeNo // closed: dropped
	}
	h.mu.Lock()
	ended := s.remoteEnd
	h.mu.Unlock()
	if ended {
		h.resetStream(id, http2.ErrCodeStreamClosed)
		return http2.ErrCodeNo
	}
	if s.recvWin -= n; s.recvWin < 0 {
		h.resetStream(id, http2.ErrCodeFlowControl)
		return http2.ErrCodeNo
	}
	if f.StreamEnded() {
		h.setRemoteEnd(s)
	}
	b := f.Data()
	s.bodyLen += int64(len(b))
	if s.rq.contentLength >= 0 && s.bodyLen > s.rq.contentLength {
		h.resetStream(id, http2.ErrCodeProtocol)
		return http2.ErrCodeNo
	}
	switch {
	case s.kind == kindPush && s.decided:
		// Answered early: the rest of the body is dropped.
	case s.kind == kindPush:
		limit := payloadLimit(s.d.p.pushType)
		if s.bodyLen > int64(limit) {
			s.d.ans = answer{http.StatusRequestEntityTooLarge, PayloadTooLarge}
			h.decidePush(s)
			break
		}
		if f.StreamEnded() && s.body == nil {
			s.body = b // the usual push: one DATA frame, read in place
			break
		}
		if s.bodyp == nil {
			s.bodyp = bodyPool.Get().(*[]byte)
			s.body = (*s.bodyp)[:0]
		}
		s.body = append(s.body, b...)
	default:
		if s.bodyLen > h2MaxBridged {
			h.answerPlain(s, http.StatusRequestEntityTooLarge)
			return http2.ErrCodeNo
		}
		s.body = append(s.body, b...)
		// A large body needs the stream's window back as it is read.
		if used := h2StreamWindow - s.recvWin; used >= h2StreamWindow/2 && !f.StreamEnded() {
			h.mu.Lock()
			h.appendWindowUpdate(id, uint32(used))
			h.mu.Unlock()
			s.recvWin += used
		}
	}
	if f.StreamEnded() {
		h.endStream(s)
	}
	return http2.ErrCodeNo
}

// endStream handles the end of a request (END_STREAM received; see
// setRemoteEnd).
func (h *h2conn) endStream(s *h2stream) {
	if s.decided {
		return // answered, or to be, without the rest of its body
	}
	if s.rq.contentLength >= 0 && s.bodyLen != s.rq.contentLength {
		h.resetStream(s.id, http2.ErrCodeProtocol)
		return
	}
	switch s.kind {
	case kindPush:
		d := &s.d
		d.ans = checkPayload(&d.p, s.body, payloadLimit(d.p.pushType))
		if d.ans.status == 0 {
			h.a.decide(d)
		}
		h.decidePush(s)
	case kindBridged:
		h.startBridged(s)
	}
}

// setRemoteEnd notes that the client has sent all of s, before s is
// answered: no RST_STREAM is needed after the answer.
func (h *h2conn) setRemoteEnd(s *h2stream) {
	h.mu.Lock()
	s.remoteEnd = true
	h.mu.Unlock()
}

// decidePush fixes a push's answer: now, or on the connection's timer
// after the emulator's delay (and a step's).
func (h *h2conn) decidePush(s *h2stream) {
	s.decided = true
	delay := time.Duration(h.a.delay.Load())
	if s.d.ans.status == 0 && s.d.scripted {
		delay += s.d.step.Delay
	}
	if delay <= 0 {
		h.mu.Lock()
		if s.closed {
			h.mu.Unlock()
			return
		}
		s.answering = true
		h.mu.Unlock()
		rep := h.a.finish(h.c, &s.d, h.a.now())
		h.releaseBody(s)
		h.mu.Lock()
		h.answerLocked(s, rep)
		h.mu.Unlock()
		return
	}
	// The body may live in the framer's buffer: keep a copy.
	if p := &s.d.p; len(p.payload) > 0 && !p.owned {
		p.payload, p.owned = append([]byte(nil), p.payload...), true
	}
	h.releaseBody(s)
	s.arrived = int64(time.Since(h.epoch))
	// Answers fall due on a millisecond grid, late rather than early, so
	// that those due together leave in one timer wake-up and one write.
	at := (s.arrived + int64(delay) + int64(h2DueSlot) - 1) / int64(h2DueSlot) * int64(h2DueSlot)
	h.mu.Lock()
	if !s.closed {
		heap.Push(&h.due, dueStream{at: at, s: s})
		h.armLocked()
	}
	h.mu.Unlock()
}

func (h *h2conn) releaseBody(s *h2stream) {
	if s.bodyp != nil {
		if !s.d.p.owned {
			s.d.p.payload = nil
		}
		bodyPool.Put(s.bodyp)
		s.bodyp = nil
	}
	s.body = nil
}

// armLocked sets the timer for the earliest answer due. mu must be held.
func (h *h2conn) armLocked() {
	if len(h.due) == 0 || h.closed {
		return
	}
	at := h.due[0].at
	if h.timerAt != 0 && h.timerAt <= at {
		return
	}
	d := time.Duration(at - int64(time.Since(h.epoch)))
	if h.timer == nil {
		h.timer = time.AfterFunc(d, h.fire)
	} else {
		h.timer.Reset(d)
	}
	h.timerAt = at
}

// fire answers the pushes that have fallen due, in one write.
func (h *h2conn) fire() {
	h.mu.Lock()
	h.timerAt = 0
	if h.closed {
		h.mu.Unlock()
		return
	}
	now := int64(time.Since(h.epoch))
	batch := h.firing[:0]
	for len(h.due) > 0 && h.due[0].at <= now {
		s := heap.Pop(&h.due).(dueStream).s
		if !s.closed {
			s.answering = true
			batch = append(batch, s)
		}
	}
	h.firing = nil
	h.armLocked()
	h.mu.Unlock()

	reps := make([]reply, len(batch))
	t := h.a.now()
	for i, s := range batch {
		reps[i] = h.a.finish(h.c, &s.d, t)
	}
	h.mu.Lock()
	for i, s := range batch {
		h.answerLocked(s, reps[i])
		batch[i] = nil
	}
	if h.firing == nil {
		h.firing = batch[:0]
	}
	h.mu.Unlock()
	h.flush(false)
}

// answerLocked writes a push's answer. mu must be held.
func (h *h2conn) answerLocked(s *h2stream, rep reply) {
	if s.closed {
		return
	}
	if rep.abort {
		h.appendRST(s.id, http2.ErrCodeInternal)
		h.closeStreamLocked(s)
		return
	}
	if rep.status == http.StatusOK {
		b := h.wbuf
		b = appendFrameHeader(b, len(hdrOK)+len(rep.id), http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, s.id)
		b = append(b, hdrOK...)
		h.wbuf = append(b, rep.id...)
		h.finishLocked(s)
	} else {
		body := appendReasonJSON(nil, rep.reason, rep.timestamp)
		block := appendStatus(nil, rep.status)
		block = append(block, hdrID...)
		block = append(block, rep.id...)
		block = append(block, hdrJSON...)
		block = appendLiteral(block, hpackContentLength, strconv.Itoa(len(body)))
		if rep.retryAfter > 0 {
			block = appendLiteral(block, hpackRetryAfter, retryAfter(rep.retryAfter))
		}
		h.respondLocked(s, block, body)
	}
	if rep.goAway {
		h.goAwayLocked()
	}
}

// answerPlain answers a request with a bare status and no body, at once.
func (h *h2conn) answerPlain(s *h2stream, status int) {
	s.decided = true
	h.mu.Lock()
	if s.kind == kindPush && !s.answering && !s.closed {
		h.a.stats.reject(http.StatusText(status))
	}
	s.answering = true
	h.respondLocked(s, appendStatus(nil, status), nil)
	h.mu.Unlock()
}

// respondLocked writes a header block and body on s, the body as the
// client's flow-control windows allow. mu must be held.
func (h *h2conn) respondLocked(s *h2stream, block, body []byte) {
	if s.closed {
		return
	}
	flags := http2.FlagHeadersEndHeaders
	if len(body) == 0 {
		flags |= http2.FlagHeadersEndStream
	}
	// A block longer than a frame continues in CONTINUATION frames.
	first := min(len(block), h.peerFrame)
	if first < len(block) {
		flags &^= http2.FlagHeadersEndHeaders
	}
	h.wbuf = appendFrameHeader(h.wbuf, first, http2.FrameHeaders, flags, s.id)
	h.wbuf = append(h.wbuf, block[:first]...)
	for rest := block[first:]; len(rest) > 0; {
		n := min(len(rest), h.peerFrame)
		var fl http2.Flags
		if n == len(rest) {
			fl = http2.FlagContinuationEndHeaders
		}
		h.wbuf = appendFrameHeader(h.wbuf, n, http2.FrameContinuation, fl, s.id)
		h.wbuf = append(h.wbuf, rest[:n]...)
		rest = rest[n:]
	}
	if len(body) == 0 {
		h.finishLocked(s)
		return
	}
	s.pending = body
	if h.sendLocked(s) {
		h.finishLocked(s)
	} else {
		h.blocked = append(h.blocked, s)
	}
}

// sendLocked writes as much of s.pending as the windows allow and reports
// whether it is all written (the last frame ending the stream).
func (h *h2conn) sendLocked(s *h2stream) bool {
	for len(s.pending) > 0 {
		n := min(int64(len(s.pending)), h.sendConn, s.sendWin, int64(h.peerFrame))
		if n <= 0 {
			return false
		}
		var fl http2.Flags
		if int(n) == len(s.pending) {
			fl = http2.FlagDataEndStream
		}
		h.wbuf = appendFrameHeader(h.wbuf, int(n), http2.FrameData, fl, s.id)
		h.wbuf = append(h.wbuf, s.pending[:n]...)
		s.pending = s.pending[n:]
		h.sendConn -= n
		s.sendWin -= n
	}
	s.pending = nil
	return true
}

// finishLocked closes s once its answer is written: a client still
// sending its body is told to stop (RST_STREAM NO_ERROR, RFC 9113 8.1).
func (h *h2conn) finishLocked(s *h2stream) {
	if !s.remoteEnd {
		h.appendRST(s.id, http2.ErrCodeNo)
	}
	h.closeStreamLocked(s)
}

// closeStreamLocked forgets s. mu must be held.
func (h *h2conn) closeStreamLocked(s *h2stream) {
	if s.closed {
		return
	}
	s.closed = true
	delete(h.streams, s.id)
	h.open--
	if s.kind == kindPush {
		h.c.inFlight.Add(-1)
		h.a.stats.inFlight.Add(-1)
	}
	if s.cancel != nil {
		s.cancel()
	}
	if h.goingAway && h.open == 0 {
		h.closing = true
	}
}

// resetStream resets stream id with code (our stream error).
func (h *h2conn) resetStream(id uint32, code http2.ErrCode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.appendRST(id, code)
	if s := h.streams[id]; s != nil {
		if s.kind == kindPush && !s.answering {
			h.a.stats.unanswered.Add(1)
		}
		s.decided = true
		h.closeStreamLocked(s)
	}
}

// clientReset handles RST_STREAM from the client.
func (h *h2conn) clientReset(id uint32) http2.ErrCode {
	h.mu.Lock()
	defer h.mu.Unlock()
	if id > h.maxID {
		return http2.ErrCodeProtocol // an idle stream
	}
	if s := h.streams[id]; s != nil {
		if s.kind == kindPush && !s.answering {
			h.a.stats.unanswered.Add(1) // dropped during its delay, or before its body ended
		}
		s.decided, s.remoteEnd = true, true
		h.closeStreamLocked(s)
	}
	return http2.ErrCodeNo
}

func (h *h2conn) settings(f *http2.SettingsFrame) http2.ErrCode {
	if f.IsAck() {
		return http2.ErrCodeNo
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	code := http2.ErrCodeNo
	f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			code = http2.ErrCodeProtocol
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				code = http2.ErrCode(ce)
			}
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - h.peerWin
			h.peerWin = int64(st.Val)
			for _, s := range h.streams {
				s.sendWin += delta
			}
		case http2.SettingMaxFrameSize:
			h.peerFrame = int(st.Val)
		}
		return nil
	})
	if code != http2.ErrCodeNo {
		return code
	}
	h.wbuf = appendFrameHeader(h.wbuf, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
	h.resumeLocked()
	return http2.ErrCodeNo
}

func (h *h2conn) windowUpdate(f *http2.WindowUpdateFrame) http2.ErrCode {
	h.mu.Lock()
	defer h.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if h.sendConn += inc; h.sendConn > 1<<31-1 {
			return http2.ErrCodeFlowControl
		}
	} else if s := h.streams[f.StreamID]; s != nil {
		if s.sendWin += inc; s.sendWin > 1<<31-1 {
			h.appendRST(s.id, http2.ErrCodeFlowControl)
			h.closeStreamLocked(s)
		}
	}
	h.resumeLocked()
	return http2.ErrCodeNo
}

// resumeLocked sends what blocked streams may send now. mu must be held.
func (h *h2conn) resumeLocked() {
	still := h.blocked[:0]
	for _, s := range h.blocked {
		switch {
		case s.closed:
		case h.sendLocked(s):
			h.finishLocked(s)
		default:
			still = append(still, s)
		}
	}
	clear(h.blocked[len(still):])
	h.blocked = still
}

// goAway sends GOAWAY: streams open now are answered, later ones are
// ignored (the client retries them on a new connection), and the
// connection closes when the last is answered, or after h2DrainTimeout.
func (h *h2conn) goAway() {
	h.mu.Lock()
	h.goAwayLocked()
	h.mu.Unlock()
	go h.flush(false) // the caller may hold APNs.mu: never wait for the network under it
}

func (h *h2conn) goAwayLocked() {
	if h.sentGoAway || h.closed {
		return
	}
	h.goingAway, h.sentGoAway = true, true
	h.appendGoAway(h.maxID, http2.ErrCodeNo)
	if h.open == 0 {
		h.closing = true
		return
	}
	time.AfterFunc(h2DrainTimeout, func() { h.tc.Close() })
}

// fail ends the connection with a connection error.
func (h *h2conn) fail(code http2.ErrCode) {
	h.mu.Lock()
	h.appendGoAway(h.maxID, code)
	h.sentGoAway, h.closing = true, true
	h.mu.Unlock()
	h.flush(true)
}

// teardown runs when the reader stops: whatever is still open is
// dropped unanswered.
func (h *h2conn) teardown() {
	h.mu.Lock()
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
	}
	for _, s := range h.streams {
		if s.kind == kindPush && !s.answering {
			h.a.stats.unanswered.Add(1)
		}
		h.closeStreamLocked(s)
	}
	h.due = nil
	h.mu.Unlock()
	h.stop()
	h.tc.Close()
}

// closeSoon ends the connection after its last write: a close_notify at
// once, the socket closed when the reader sees the peer close or a second
// later. Closing the socket at once would make the kernel answer frames the
// peer still sends with a reset, which can discard the final answers and
// GOAWAY on their way to it (a client would take an answered push for one
// that may not have been, and send it again).
func (h *h2conn) closeSoon() {
	h.closeOnce.Do(func() {
		h.tc.CloseWrite()
		time.AfterFunc(time.Second, func() { h.tc.Close() })
	})
}

// flush writes the output buffer. Whoever holds writeMu writes what
// others append meanwhile, so a goroutine that finds the writer busy
// leaves at once, unless wait is set (the reader, so that a client that
// does not read holds its own requests back).
func (h *h2conn) flush(wait bool) {
	for {
		if wait {
			h.writeMu.Lock()
			wait = false
		} else if !h.writeMu.TryLock() {
			return
		}
		h.mu.Lock()
		if len(h.wbuf) == 0 {
			closing := h.closing
			// writeMu goes first: whoever appends after mu is released
			// finds the writer free (TryLock) and writes it, instead of
			// leaving it for a writer that already decided to return.
			h.writeMu.Unlock()
			h.mu.Unlock()
			if closing {
				h.closeSoon()
			}
			return
		}
		buf := h.wbuf
		h.wbuf, h.spare = h.spare[:0], nil
		h.mu.Unlock()
		h.tc.SetWriteDeadline(time.Now().Add(h2WriteTimeout))
		_, err := h.tc.Write(buf)
		h.mu.Lock()
		if cap(buf) <= 1<<20 {
			h.spare = buf[:0]
		}
		h.mu.Unlock()
		h.writeMu.Unlock()
		if err != nil {
			h.tc.Close() // the reader sees it and tears down
			return
		}
	}
}

// startBridged serves a request for a net/http route on its own
// goroutine, with its body read in full.
func (h *h2conn) startBridged(s *h2stream) {
	ctx, cancel := context.WithCancel(h.ctx)
	h.mu.Lock()
	if s.closed {
		h.mu.Unlock()
		cancel()
		return
	}
	s.cancel = cancel
	h.mu.Unlock()
	r := s.req.WithContext(ctx)
	r.ContentLength = int64(len(s.body))
	r.Body = io.NopCloser(bytes.NewReader(s.body))
	s.body = nil
	go func() {
		w := &bridgeWriter{header: make(http.Header)}
		aborted := func() (aborted bool) {
			defer func() {
				if e := recover(); e != nil {
					if e != http.ErrAbortHandler {
						h.a.log.Error("emulator handler panic", "path", r.URL.Path, "panic", fmt.Sprint(e))
					}
					aborted = true
				}
			}()
			h.c.ServeHTTP(w, r)
			return false
		}()
		h.mu.Lock()
		if aborted {
			if !s.closed {
				h.appendRST(s.id, http2.ErrCodeInternal)
				h.closeStreamLocked(s)
			}
		} else {
			block, body := w.encode(r.Method)
			h.respondLocked(s, block, body)
		}
		h.mu.Unlock()
		h.flush(false)
	}()
}

// bridgeWriter is the http.ResponseWriter of a bridged request: the
// answer is kept whole, then written.
type bridgeWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *bridgeWriter) Header() http.Header { return w.header }

func (w *bridgeWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *bridgeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// encode returns the answer's header block and body.
func (w *bridgeWriter) encode(method string) (block, body []byte) {
	w.WriteHeader(http.StatusOK)
	body = w.body.Bytes()
	if method == http.MethodHead {
		body = nil
	}
	if _, ok := w.header["Content-Type"]; !ok && w.body.Len() > 0 {
		w.header.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	block = appendStatus(nil, w.status)
	for k, vs := range w.header {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue
		}
		name := strings.ToLower(k)
		for _, v := range vs {
			block = appendLiteral(block, appendString(nil, name), v)
		}
	}
	return block, body
}

// Frames and HPACK, written by hand.

func appendFrameHeader(b []byte, length int, t http2.FrameType, f http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(f),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

// appendSettings appends the server's SETTINGS. mu must be held.
func (h *h2conn) appendSettings() {
	settings := []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: h.a.maxStream},
		{ID: http2.SettingMaxHeaderListSize, Val: h2MaxHeaderList},
	}
	h.wbuf = appendFrameHeader(h.wbuf, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		h.wbuf = binary.BigEndian.AppendUint16(h.wbuf, uint16(s.ID))
		h.wbuf = binary.BigEndian.AppendUint32(h.wbuf, s.Val)
	}
}

func (h *h2conn) appendWindowUpdate(id, inc uint32) {
	h.wbuf = appendFrameHeader(h.wbuf, 4, http2.FrameWindowUpdate, 0, id)
	h.wbuf = binary.BigEndian.AppendUint32(h.wbuf, inc&0x7fffffff)
}

func (h *h2conn) appendRST(id uint32, code http2.ErrCode) {
	h.wbuf = appendFrameHeader(h.wbuf, 4, http2.FrameRSTStream, 0, id)
	h.wbuf = binary.BigEndian.AppendUint32(h.wbuf, uint32(code))
}

func (h *h2conn) appendGoAway(last uint32, code http2.ErrCode) {
	h.wbuf = appendFrameHeader(h.wbuf, 8, http2.FrameGoAway, 0, 0)
	h.wbuf = binary.BigEndian.AppendUint32(h.wbuf, last&0x7fffffff)
	h.wbuf = binary.BigEndian.AppendUint32(h.wbuf, uint32(code))
}

// HPACK static table indexes (RFC 7541 Appendix A) of the names used.
const (
	hpackStatus        = 8
	hpackContentLength = 28
	hpackContentType   = 31
	hpackRetryAfter    = 53
)

// Pre-encoded parts of the provider API's answers: literal fields without
// indexing, so no dynamic table is involved.
var (
	// hdrID is apns-id's name and a 36-byte value's length: the UUID follows.
	hdrID = append(appendString([]byte{0x00}, "apns-id"), 36)
	// hdrOK is ":status: 200" (static index 8) then hdrID.
	hdrOK   = append([]byte{0x80 | hpackStatus}, hdrID...)
	hdrJSON = appendLiteral(nil, hpackContentType, "application/json")
)

// appendStatus appends :status: the static table's entry for 200, else a
// literal with its indexed name.
func appendStatus(b []byte, status int) []byte {
	if status == http.StatusOK {
		return append(b, 0x80|hpackStatus)
	}
	return appendLiteral(b, hpackStatus, strconv.Itoa(status))
}

// appendLiteral appends a literal field without indexing. name is a
// static table index (int) or an encoded name string ([]byte).
func appendLiteral(b []byte, name any, value string) []byte {
	switch n := name.(type) {
	case int:
		b = appendHpackInt(b, 4, 0x00, uint64(n))
	case []byte:
		b = append(b, 0x00)
		b = append(b, n...)
	}
	return appendString(b, value)
}

// appendString appends an HPACK string literal, not Huffman-coded.
func appendString(b []byte, s string) []byte {
	b = appendHpackInt(b, 7, 0x00, uint64(len(s)))
	return append(b, s...)
}

// appendHpackInt appends v with an n-bit prefix (RFC 7541 5.1) in a first
// byte that starts as first.
func appendHpackInt(b []byte, n uint, first byte, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(max))
	for v -= max; v >= 128; v >>= 7 {
		b = append(b, byte(v&0x7f)|0x80)
	}
	return append(b, byte(v))
}

// dueHeap holds pushes waiting for their answer time, earliest first.
type dueStream struct {
	at int64
	s  *h2stream
}

type dueHeap []dueStream

func (q dueHeap) Len() int           { return len(q) }
func (q dueHeap) Less(i, j int) bool { return q[i].at < q[j].at }
func (q dueHeap) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *dueHeap) Push(x any)        { *q = append(*q, x.(dueStream)) }
func (q *dueHeap) Pop() any {
	old := *q
	x := old[len(old)-1]
	old[len(old)-1] = dueStream{}
	*q = old[:len(old)-1]
	return x
}
