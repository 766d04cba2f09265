package h2

import (
	"bytes"
	"runtime"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The writer coalesces: it takes every control frame and every request
// that can start, encodes their frames into one buffer, looks again for
// work that arrived meanwhile, and writes the buffer with one Write when
// there is none left (or flushAt bytes are waiting). Under load many
// requests go out per write; alone, a request goes out at once.
const (
	flushAt  = 64 << 10
	maxRound = 256 // streams encoded per round, so a cancel waits little for one
)

// ctrlFrame is a frame other than a request's.
type ctrlFrame struct {
	typ    http2.FrameType // RST_STREAM, PING, SETTINGS (ack), WINDOW_UPDATE
	stream uint32
	code   http2.ErrCode
	incr   uint32
	data   [8]byte
	ack    bool
}

// writer is the state only the writer goroutine touches.
type writer struct {
	c     *Conn
	buf   bytes.Buffer  // frames encoded, not yet written
	fr    *http2.Framer // writes into buf
	enc   *hpack.Encoder
	block blockWriter // the header block being built; enc writes into it
	// prefix is the constant part of every header block after
	// :authority: :method POST and :scheme https from the static table,
	// then Options.Header as literals that never touch the dynamic table.
	prefix    []byte
	constSize uint32 // Options.Header's size as the peer counts it

	frames uint64 // frames in buf
	maxID  uint32 // the highest stream ID in buf

	ctrl  []ctrlFrame // this round's control frames
	spare []ctrlFrame
	round []*stream
}

type blockWriter struct{ b []byte }

func (w *blockWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *writer) init(c *Conn) {
	w.c = c
	w.fr = http2.NewFramer(&w.buf, nil)
	w.enc = hpack.NewEncoder(&w.block)
	w.prefix = append(w.prefix, 0x80|3, 0x80|7) // :method POST, :scheme https
	for _, f := range c.opts.Header {
		w.prefix = appendLiteral(w.prefix, f.Name, f.Value)
		w.constSize += 32 + uint32(len(f.Name)+len(f.Value))
	}
}

func (c *Conn) writeLoop() {
	defer close(c.writeDone)
	w := &c.w
	for {
		select {
		case <-c.wake:
		case <-c.dead:
			return
		}
		for yielded := false; ; {
			if w.encodeRound() {
				if w.buf.Len() >= flushAt && !w.flush() {
					return
				}
				yielded = false
				continue
			}
			// The queue is empty. Callers just woken by answers are about
			// to add to it: let them run before paying for a write, for as
			// long as doing so brings more.
			if yielded || w.buf.Len() == 0 {
				break
			}
			yielded = true
			runtime.Gosched()
		}
		if w.buf.Len() > 0 && !w.flush() {
			return
		}
	}
}

// encodeRound takes the work that can be done now and encodes it into
// buf. It reports whether there was any.
func (w *writer) encodeRound() bool {
	c := w.c
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return false
	}
	w.ctrl, c.ctrl = c.ctrl, w.spare[:0]
	if c.tableSizeChanged {
		c.tableSizeChanged = false
		v := min(c.peerTableSize, 4096)
		w.enc.SetMaxDynamicTableSizeLimit(v)
		w.enc.SetMaxDynamicTableSize(v) // back up too, if the peer allows it again
	}
	round := w.round[:0]
	// Bodies held back by flow control, in the order they started.
	if len(c.blocked) > 0 && c.sendWindow > 0 {
		kept := c.blocked[:0]
		for _, s := range c.blocked {
			if s.finished {
				continue
			}
			if c.sendWindow > 0 && s.sendWindow > 0 {
				c.allowLocked(s)
				s.encoding = true
				round = append(round, s)
			}
			if s.sent < len(s.req.Body) {
				kept = append(kept, s)
			}
		}
		clear(c.blocked[len(kept):])
		c.blocked = kept
	}
	// New streams, while the peer allows more.
	for c.queued > 0 && c.active < c.maxStreams && len(round) < maxRound && c.refusalLocked() == nil {
		s := c.queue[c.qhead]
		c.queue[c.qhead] = nil
		c.qhead++
		if s.finished {
			continue
		}
		c.queued--
		s.id = c.nextID
		c.nextID += 2
		c.streams[s.id] = s
		c.active++
		s.sendWindow = int64(c.peerInitialWindow)
		s.recvAvail = streamRecvWindow
		s.newHeaders = true
		s.encoding = true
		c.allowLocked(s)
		if s.sent < len(s.req.Body) {
			c.blocked = append(c.blocked, s)
		}
		round = append(round, s)
	}
	if c.queued == 0 {
		clear(c.queue[c.qhead:]) // cancelled ones
		c.queue, c.qhead = c.queue[:0], 0
	} else if c.qhead > len(c.queue)/2 {
		// A backlog that never drains (a stream limit far under the load)
		// would otherwise grow the queue by its taken head for good.
		n := copy(c.queue, c.queue[c.qhead:])
		clear(c.queue[n:])
		c.queue, c.qhead = c.queue[:n], 0
	}
	if c.nextID > maxStreamID && c.queued > 0 {
		c.failQueueLocked(ErrStreamIDs) // what waits will never start here
	}
	maxFrame := int(c.peerMaxFrame)
	c.mu.Unlock()

	w.round = round
	if len(w.ctrl) == 0 && len(round) == 0 {
		w.spare = w.ctrl
		return false
	}
	for i := range w.ctrl {
		w.writeCtrl(&w.ctrl[i])
	}
	w.spare = w.ctrl[:0]
	for _, s := range round {
		w.writeStream(s, maxFrame)
	}

	c.mu.Lock()
	for i, s := range round {
		s.encoding = false
		if s.newHeaders {
			s.newHeaders = false
			c.stats.requests.Add(1)
		}
		if s.closeLater {
			close(s.done)
		}
		round[i] = nil
	}
	c.mu.Unlock()
	return true
}

// allowLocked gives s as much of its body as the windows allow. c.mu must
// be held.
func (c *Conn) allowLocked(s *stream) {
	n := int64(len(s.req.Body) - s.sent)
	n = min(n, s.sendWindow, c.sendWindow)
	if n < 0 {
		n = 0
	}
	s.chunkOff, s.chunk = s.sent, int(n)
	s.sent += int(n)
	s.sendWindow -= n
	c.sendWindow -= n
	// END_STREAM is encoded this round: a stream answered meanwhile needs
	// no RST_STREAM to end it.
	s.endSent = s.sent == len(s.req.Body)
}

func (w *writer) writeCtrl(f *ctrlFrame) {
	switch f.typ {
	case http2.FrameRSTStream:
		_ = w.fr.WriteRSTStream(f.stream, f.code)
	case http2.FramePing:
		_ = w.fr.WritePing(f.ack, f.data)
	case http2.FrameSettings:
		_ = w.fr.WriteSettingsAck()
	case http2.FrameWindowUpdate:
		_ = w.fr.WriteWindowUpdate(f.stream, f.incr)
	}
	w.frames++
}

// writeStream encodes s's HEADERS (when new) and this round's body chunk.
// It reads s.req, which its caller does not get back while s.encoding.
func (w *writer) writeStream(s *stream, maxFrame int) {
	body := s.req.Body
	end := s.chunkOff+s.chunk == len(body)
	if s.newHeaders {
		b := w.headerBlock(s.req)
		first := true
		for first || len(b) > 0 {
			n := min(len(b), maxFrame)
			if first {
				_ = w.fr.WriteHeaders(http2.HeadersFrameParam{
					StreamID: s.id, BlockFragment: b[:n],
					EndStream: len(body) == 0, EndHeaders: n == len(b),
				})
				first = false
			} else {
				_ = w.fr.WriteContinuation(s.id, n == len(b), b[:n])
			}
			b = b[n:]
			w.frames++
		}
	}
	for chunk := body[s.chunkOff : s.chunkOff+s.chunk]; len(chunk) > 0; {
		n := min(len(chunk), maxFrame)
		_ = w.fr.WriteData(s.id, end && n == len(chunk), chunk[:n])
		chunk = chunk[n:]
		w.frames++
	}
	s.chunk = 0
	w.maxID = max(w.maxID, s.id)
}

// headerBlock encodes req's header fields. :authority goes through the
// HPACK encoder first, so that a dynamic table size update the peer asked
// for lands at the start of the block, as RFC 7541 requires.
func (w *writer) headerBlock(req *Request) []byte {
	w.block.b = w.block.b[:0]
	_ = w.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: w.c.opts.Authority})
	w.block.b = append(w.block.b, w.prefix...)
	w.block.b = appendLiteralIndexedName(w.block.b, 4, req.Path) // :path
	for _, f := range req.Header {
		if f.Index {
			_ = w.enc.WriteField(hpack.HeaderField{Name: f.Name, Value: f.Value})
		} else {
			w.block.b = appendLiteral(w.block.b, f.Name, f.Value)
		}
	}
	return w.block.b
}

// flush writes buf. It reports false when the write failed, which ends
// the connection.
func (w *writer) flush() bool {
	c := w.c
	c.mu.Lock()
	if c.err != nil {
		// The connection failed (failCode) while this was encoded: its
		// streams were reported by maxAttempted as it stood, unsent past
		// it, so none of this may reach the peer now.
		c.mu.Unlock()
		w.buf.Reset()
		w.frames = 0
		return false
	}
	c.maxAttempted = max(c.maxAttempted, w.maxID)
	c.mu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	n, err := c.nc.Write(w.buf.Bytes())
	c.stats.writes.Add(1)
	c.stats.framesWritten.Add(w.frames)
	c.stats.bytesWritten.Add(uint64(n))
	w.buf.Reset()
	w.frames = 0
	if err != nil {
		c.fail(&lostError{op: "write", err: err}, false)
		return false
	}
	return true
}
