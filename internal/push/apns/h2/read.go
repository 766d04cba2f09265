package h2

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func newReader(nc net.Conn) io.Reader { return bufio.NewReaderSize(nc, 32<<10) }

// lostError is a failed read or write of the connection. It is ErrLost and
// its cause (a TLS alert, say, for errors.As).
type lostError struct {
	op  string
	err error
}

func (e *lostError) Error() string   { return fmt.Sprintf("h2: connection lost: %s: %v", e.op, e.err) }
func (e *lostError) Unwrap() []error { return []error{ErrLost, e.err} }

// protocolError is the peer breaking HTTP/2: the connection ends with a
// GOAWAY carrying code.
type protocolError struct {
	code http2.ErrCode
	msg  string
}

func (e *protocolError) Error() string {
	return fmt.Sprintf("h2: the server broke the protocol (%v): %s", e.code, e.msg)
}

func protoErr(code http2.ErrCode, format string, args ...any) *protocolError {
	return &protocolError{code: code, msg: fmt.Sprintf(format, args...)}
}

// headerDecoding is the header block being read. Reader-owned.
type headerDecoding struct {
	s          *stream // nil: decoded only to keep HPACK in step
	endStream  bool
	trailers   bool
	blockBytes int // fragments' bytes and frames so far: bounds a CONTINUATION flood
	size       uint32
	malformed  string
	status     int
	regular    bool // a regular field was seen: no pseudo-header may follow
	apnsID     string
	uniqueID   string
	retryAfter string
}

func (c *Conn) readLoop() {
	defer close(c.readDone)
	for {
		f, err := c.rfr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se):
				c.mu.Lock()
				if s := c.streams[se.StreamID]; s != nil {
					c.resetLocked(s, se.Code, &Error{Err: se, Sent: true})
				}
				c.mu.Unlock()
				continue
			case errors.As(err, &ce):
				msg := "bad frame"
				if d := c.rfr.ErrorDetail(); d != nil {
					msg = d.Error()
				}
				c.protocolFailure(protoErr(http2.ErrCode(ce), "%s", msg))
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.protocolFailure(protoErr(http2.ErrCodeFrameSize, "frame over %d bytes", maxReadFrameSize))
			default:
				c.fail(&lostError{op: "read", err: err}, false)
			}
			return
		}
		c.framesRead.Add(1)
		if pe := c.handle(f); pe != nil {
			c.protocolFailure(pe)
			return
		}
		c.closeIfDrained()
	}
}

func (c *Conn) protocolFailure(pe *protocolError) {
	c.failCode(&lostError{op: "read", err: pe}, true, pe.code, pe.msg)
}

// handle acts on one frame. It returns a protocol error that ends the
// connection.
func (c *Conn) handle(f http2.Frame) *protocolError {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.HeadersFrame:
		return c.onHeaders(f)
	case *http2.ContinuationFrame:
		return c.decodeFragment(f.HeaderBlockFragment(), f.HeadersEnded())
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		c.onPing(f)
	case *http2.GoAwayFrame:
		c.onGoAway(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PushPromiseFrame:
		return protoErr(http2.ErrCodeProtocol, "PUSH_PROMISE, though push is disabled")
	}
	// PRIORITY and unknown frame types are ignored.
	return nil
}

// streamLocked returns open stream id, or nil for one already finished.
// A frame for a stream this side never opened is a protocol error. c.mu
// must be held.
func (c *Conn) streamLocked(id uint32, what string) (*stream, *protocolError) {
	if s := c.streams[id]; s != nil {
		return s, nil
	}
	if id%2 == 0 || id >= c.nextID {
		return nil, protoErr(http2.ErrCodeProtocol, "%s for stream %d, which this side did not open", what, id)
	}
	c.stats.lateFrames.Add(1)
	return nil, nil
}

// resetLocked ends open stream s with err and resets it with code. c.mu
// must be held.
func (c *Conn) resetLocked(s *stream, code http2.ErrCode, err error) {
	if s.finished {
		return
	}
	c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FrameRSTStream, stream: s.id, code: code})
	c.stats.resets.Add(1)
	c.signal()
	c.finishLocked(s, err)
}

// completeLocked hands s its answer. c.mu must be held.
func (c *Conn) completeLocked(s *stream) {
	if s.finished {
		return
	}
	if !s.endSent {
		// Answered before the body was all sent (413, say): stop sending.
		c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FrameRSTStream, stream: s.id, code: http2.ErrCodeCancel})
		c.signal()
	}
	c.stats.responses.Add(1)
	c.finishLocked(s, nil)
}

func (c *Conn) onHeaders(f *http2.HeadersFrame) *protocolError {
	c.mu.Lock()
	s, pe := c.streamLocked(f.StreamID, "HEADERS")
	c.mu.Unlock()
	if pe != nil {
		return pe
	}
	c.hd = headerDecoding{s: s, endStream: f.StreamEnded()}
	if s != nil && s.gotFinal {
		c.hd.trailers = true
	}
	return c.decodeFragment(f.HeaderBlockFragment(), f.HeadersEnded())
}

// decodeFragment feeds one fragment of a header block to the decoder;
// every block is decoded, even for a finished stream, to keep the HPACK
// table in step with the peer's.
func (c *Conn) decodeFragment(frag []byte, end bool) *protocolError {
	c.hd.blockBytes += len(frag) + 9
	if c.hd.blockBytes > 2*maxHeaderListSize {
		return protoErr(http2.ErrCodeEnhanceYourCalm, "header block over %d bytes", 2*maxHeaderListSize)
	}
	if _, err := c.dec.Write(frag); err != nil {
		return protoErr(http2.ErrCodeCompression, "decoding a header block: %v", err)
	}
	if !end {
		return nil
	}
	if err := c.dec.Close(); err != nil {
		return protoErr(http2.ErrCodeCompression, "decoding a header block: %v", err)
	}
	c.endHeaders()
	return nil
}

// emit receives each decoded header field.
func (c *Conn) emit(f hpack.HeaderField) {
	hd := &c.hd
	hd.size += f.Size()
	if hd.s == nil || hd.malformed != "" || hd.trailers {
		return
	}
	if hd.size > maxHeaderListSize {
		hd.malformed = fmt.Sprintf("header list over %d bytes", maxHeaderListSize)
		return
	}
	if f.IsPseudo() {
		if f.Name != ":status" || hd.regular || hd.status != 0 {
			hd.malformed = fmt.Sprintf("unexpected pseudo-header %q", f.Name)
			return
		}
		hd.status = parseStatus(f.Value)
		if hd.status == 0 {
			hd.malformed = fmt.Sprintf(":status %q", f.Value)
		}
		return
	}
	hd.regular = true
	switch f.Name {
	case "apns-id":
		hd.apnsID = f.Value
	case "apns-unique-id":
		hd.uniqueID = f.Value
	case "retry-after":
		hd.retryAfter = f.Value
	}
}

// parseStatus parses a three-digit status, or returns 0.
func parseStatus(v string) int {
	if len(v) != 3 {
		return 0
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	if n < 100 {
		return 0
	}
	return n
}

// endHeaders acts on a complete header block.
func (c *Conn) endHeaders() {
	hd := &c.hd
	s := hd.s
	if s == nil {
		return
	}
	malformed := hd.malformed
	switch {
	case malformed != "":
	case hd.trailers:
		if !hd.endStream {
			malformed = "trailers without END_STREAM"
		}
	case hd.status == 0:
		malformed = "no :status"
	case hd.status < 200:
		if hd.endStream {
			malformed = "an informational answer that ends the stream"
		} else {
			return // 1xx: the answer is still to come
		}
	default:
		s.resp.Status = hd.status
		s.resp.ApnsID, s.resp.ApnsUniqueID, s.resp.RetryAfter = hd.apnsID, hd.uniqueID, hd.retryAfter
		s.gotFinal = true
	}
	c.mu.Lock()
	if malformed != "" {
		c.resetLocked(s, http2.ErrCodeProtocol, &Error{Err: fmt.Errorf("h2: malformed answer: %s", malformed), Sent: true})
	} else if hd.endStream {
		c.completeLocked(s)
	}
	c.mu.Unlock()
}

func (c *Conn) onData(f *http2.DataFrame) *protocolError {
	n := int64(f.Length) // padding counts against the windows too
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvAvail {
		return protoErr(http2.ErrCodeFlowControl, "DATA of %d bytes beyond the connection window of %d", n, c.recvAvail)
	}
	c.recvAvail -= n
	c.recvUnacked += n
	if c.recvUnacked >= connRecvWindow/2 {
		c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FrameWindowUpdate, incr: uint32(c.recvUnacked)})
		c.recvAvail += c.recvUnacked
		c.recvUnacked = 0
		c.signal()
	}
	s, pe := c.streamLocked(f.StreamID, "DATA")
	if s == nil {
		return pe
	}
	if !s.gotFinal {
		c.resetLocked(s, http2.ErrCodeProtocol, &Error{Err: errors.New("h2: malformed answer: DATA before the headers"), Sent: true})
		return nil
	}
	if n > s.recvAvail {
		c.resetLocked(s, http2.ErrCodeFlowControl, &Error{Err: errors.New("h2: the server sent DATA beyond the stream's window"), Sent: true})
		return nil
	}
	s.recvAvail -= n
	data := f.Data()
	if room := c.opts.MaxResponseBody - len(s.resp.Body); len(data) > room {
		data = data[:room]
		if !s.resp.Truncated {
			s.resp.Truncated = true
			c.stats.truncatedBodies.Add(1)
		}
	}
	s.resp.Body = append(s.resp.Body, data...)
	if f.StreamEnded() {
		c.completeLocked(s)
		return nil
	}
	s.recvUnacked += n
	if s.recvUnacked >= streamRecvWindow/2 {
		c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FrameWindowUpdate, stream: s.id, incr: uint32(s.recvUnacked)})
		s.recvAvail += s.recvUnacked
		s.recvUnacked = 0
		c.signal()
	}
	return nil
}

func (c *Conn) onReset(f *http2.RSTStreamFrame) *protocolError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, pe := c.streamLocked(f.StreamID, "RST_STREAM")
	if s == nil {
		return pe
	}
	err := &Error{Err: http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode}, Sent: true}
	if f.ErrCode == http2.ErrCodeRefusedStream {
		// RFC 9113 section 8.7: refused before any processing.
		err.Sent = false
		c.stats.refused.Add(1)
	}
	c.finishLocked(s, err)
	return nil
}

func (c *Conn) onSettings(f *http2.SettingsFrame) *protocolError {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var pe *protocolError
	_ = f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			code := http2.ErrCodeProtocol
			if ce, ok := err.(http2.ConnectionError); ok {
				code = http2.ErrCode(ce)
			}
			pe = protoErr(code, "SETTINGS %v", st)
			return err
		}
		switch st.ID {
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = int(min(st.Val, 1<<20))
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - int64(c.peerInitialWindow)
			for _, s := range c.streams {
				s.sendWindow += delta
				if s.sendWindow > maxWindow {
					pe = protoErr(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window")
					return pe
				}
			}
			c.peerInitialWindow = int32(st.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = st.Val
		case http2.SettingMaxHeaderListSize:
			c.peerMaxHeaderList = st.Val
		case http2.SettingHeaderTableSize:
			c.peerTableSize = st.Val
			c.tableSizeChanged = true
		}
		return nil
	})
	if pe != nil {
		return pe
	}
	c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FrameSettings, ack: true})
	c.signal()
	if !c.gotSettings {
		c.gotSettings = true
		close(c.settings)
	}
	return nil
}

func (c *Conn) onPing(f *http2.PingFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !f.IsAck() {
		c.ctrl = append(c.ctrl, ctrlFrame{typ: http2.FramePing, ack: true, data: f.Data})
		c.signal()
		return
	}
	if c.healthOut && f.Data == c.healthData {
		c.healthOut = false
		c.healthTimer.Stop()
	}
	if ch, ok := c.pings[f.Data]; ok {
		close(ch)
		delete(c.pings, f.Data)
	}
}

// onGoAway: streams above the last stream ID were not processed and end
// now; those below it finish; nothing new starts.
func (c *Conn) onGoAway(f *http2.GoAwayFrame) {
	g := &GoAwayError{LastStreamID: f.LastStreamID, Code: f.ErrCode, Debug: string(f.DebugData())}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goAway != nil && c.goAway.LastStreamID < g.LastStreamID {
		g.LastStreamID = c.goAway.LastStreamID // a later GOAWAY cannot raise it
	}
	c.goAway = g
	for id, s := range c.streams {
		if id > g.LastStreamID {
			c.stats.refused.Add(1)
			c.finishLocked(s, &Error{Err: g})
		}
	}
	c.failQueueLocked(g)
	c.checkDrainedLocked()
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) *protocolError {
	c.mu.Lock()
	defer c.mu.Unlock()
	incr := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += incr
		if c.sendWindow > maxWindow {
			return protoErr(http2.ErrCodeFlowControl, "WINDOW_UPDATE overflows the connection window")
		}
	} else {
		s, pe := c.streamLocked(f.StreamID, "WINDOW_UPDATE")
		if s == nil {
			return pe
		}
		s.sendWindow += incr
		if s.sendWindow > maxWindow {
			c.resetLocked(s, http2.ErrCodeFlowControl, &Error{Err: errors.New("h2: WINDOW_UPDATE overflows a stream's window"), Sent: true})
			return nil
		}
	}
	if len(c.blocked) > 0 {
		c.signal()
	}
	return nil
}
