package gateway

import (
	"context"
	"errors"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// maxReplyBytes bounds one sync event, history reply or conversations
// reply (and a quarter of the send queue, if that is less); a larger page
// is split (sync) or cut short with has_more (history, conversations). One
// message may exceed it alone.
const maxReplyBytes = 256 << 10

func (g *Gateway) replyBudget() int { return min(maxReplyBytes, g.cfg.SendQueueBytes/4) }

// replyEnvelopeBytes is what a reply frame adds around its list of
// messages: the frame's ID and the reply's other fields (JSON:
// {"id":18446744073709551615,"d":{"messages":[],"has_more":false}} is 62).
const replyEnvelopeBytes = 64

// wireSize bounds a message's encoded size for the sync's split: base64
// grows data by 4/3, JSON escaping can grow text, extended data and the
// local ID (any string) up to 6 times; user, group and device IDs are
// letters, digits and _-.@, never escaped (conv_id repeats from or to),
// and each mention adds its quotes and comma. The keys, punctuation and
// longest numbers of a message take 261 bytes. It is a bound, not a
// measure, because the sync is the hot path: measuring each message as
// history and conversations do (listBuf) encoded a sync page of 200
// messages in about the same time but with 407 allocations instead of 8
// (BenchmarkSyncFrames).
func wireSize(m *herald.Message) int {
	n := 6*(len(m.Text)+len(m.Extended)+len(m.LocalID)) + (len(m.Data)+2)/3*4 + 261 +
		2*(len(m.From)+len(m.To)) + len(m.FromDevice)
	for _, u := range m.Mentions {
		n += len(u) + 3
	}
	return n
}

// convEnvelopeBytes is replyEnvelopeBytes for a conversations reply: 62,
// "conversations" for "messages" (5), ,"total_unread": and 20 digits (36),
// ,"next":"" (10) around at most 20+1+5+1+64 bytes of cursor (91): 204.
const convEnvelopeBytes = 256

// convFirstRead is the first chunk of a conversations page read from the
// store (session.conversations).
const convFirstRead = 100

// A history or conversations reply is built from its entries as each was
// encoded to be measured: the page is cut at the budget by exact sizes
// (mentions, IDs and escaping included: issue 15 item 8, and a worst-case
// estimate had cut history pages to a fifth of it: item 4), and no entry
// is encoded twice. (The sync bounds instead: wireSize.) The gateway's
// codec is JSON: listBuf joins entries as a JSON array and splices it into
// the encoding of the reply's other fields.
type listBuf struct {
	b *[]byte // {"key":[ and the entries, comma-separated; from listPool
	n int     // how many entries
}

// listPool holds list buffers: a page is built in one and copied into its
// frame, so the buffer is free again once the frame is encoded.
var listPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// newList starts the list of a reply under key.
func newList(key string) listBuf {
	bp := listPool.Get().(*[]byte)
	*bp = append(append(append((*bp)[:0], `{"`...), key...), `":[`...)
	return listBuf{b: bp}
}

// sizeWith is the list's length in bytes with item added.
func (l *listBuf) sizeWith(item []byte) int { return len(*l.b) + 1 + len(item) }

func (l *listBuf) add(item []byte) {
	if l.n > 0 {
		*l.b = append(*l.b, ',')
	}
	*l.b = append(*l.b, item...)
	l.n++
}

// frame returns the encoded frame of reply id whose payload is
// {"key":[entries],<rest's fields>}: rest is the encoding of an object
// holding the reply's other fields. The list's buffer goes back to the
// pool: l is used up.
func (l *listBuf) frame(c proto.Codec, id uint64, rest []byte) ([]byte, error) {
	b := append(*l.b, ']')
	if len(rest) > 2 { // not {}
		b = append(b, ',')
	}
	b = append(b, rest[1:]...)
	frame, err := c.EncodeFrame(nil, &proto.Frame{ID: id, Data: b})
	if cap(b) <= 1<<20 { // not a page made large by one large entry
		*l.b = b
		listPool.Put(l.b)
	}
	l.b = nil
	return frame, err
}

// maxAckedConversations bounds the per-session ack map.
const maxAckedConversations = 10000

// session is one WebSocket connection. Reading is driven by the poller
// (Linux: a goroutine exists only while bytes are being handled) or by a
// blocking read goroutine elsewhere; both feed the same frame parser. A
// writer goroutine runs only while frames are queued.
//
// An idle session is this struct and its connection, nothing else: no
// goroutine, no buffer, no timer (the sweeper checks its deadlines and
// its token's expiry). On the epoll driver a logged-in session's
// connection is a bare descriptor, its net.Conn closed (pollState). Its fields are packed for that (bench conn): what
// only a busy or ending session needs is allocated when needed (the
// frameReader's partial frame, the cond), times are Unix ns, the flags
// sit together and the platform is a byte: 320 bytes on 64-bit systems, a
// size class of the allocator's (one more byte of fields takes 352).
type session struct {
	g    *Gateway
	id   chat.SessionID
	conn net.Conn    // nil once the poller owns the descriptor (poll_linux.go); s.mu guards the change
	fr   frameReader // read side only (one reader at a time)

	// Set by the reader at login, before the session is visible to other
	// goroutines through the hub; read-only afterwards.
	user, device string
	loginAt      int64  // Unix ns when it logged in (gateway clock): cross-node kicks spare later logins (loginTime)
	remote       string // the connection's remote address (a reverse proxy's, behind one); set at newSession

	// deadline is when the session times out (Unix ns): the login timeout
	// until login; none from the login until sync_done has been written;
	// then the heartbeat timeout after sync_done or the last bytes read,
	// whichever came later. beating is set when the heartbeat clock runs.
	// tokenAt is when the sweeper next looks at the token (Unix ns): at
	// its warning, then at its expiry (tokenTick); MaxInt64 for never.
	deadline atomic.Int64
	tokenAt  atomic.Int64
	beating  atomic.Bool
	loggedIn atomic.Bool
	torn     atomic.Bool // teardown has run end, or is running it
	// platform is the login's platform (platformName): 1 + its index in
	// herald.Platforms, 0 for any other. A byte here, in the padding
	// after the flags above, where a string took 16 bytes of every session.
	platform uint8
	// displaced: a login took s out of its shard's users (register) and s
	// has not ended yet; guarded by the shard's mu (ConnectedSince). In
	// the same padding.
	displaced bool

	// Send rate limit: a token bucket used by the reader only.
	tokens     float64
	lastRefill int64 // Unix ns; zero before the first request

	poll pollState // the poller's registration (poll_linux.go)

	mu          sync.Mutex
	cond        *sync.Cond // on mu: the writer drained the queue or stopped; made by the first waiter (waitLocked)
	queue       []outFrame
	queued      int // cost of the frames in queue and being written (see frameCost)
	closeCode   int // set once: the writer sends it after the queue, then closes the conn
	closeReason string
	writing     bool
	closed      bool // the connection is closed; nothing more is read or written
	ended       bool // end has run or is running: no login, timer or ack may start anything new
	syncing     bool // live messages wait in pending until the offline sync is sent
	loggedOut   bool // set by a successful logout (calls, events)
	announced   bool // the login was reported (events.go): the end is reported too
	ackDirty    bool // acked has changed since the last flush
	warned      bool // token_will_expire was sent for tokenExp

	// Sends handed to chat whose reply is not queued yet. Shutdown closes
	// a session only once they are (drainCode waits for that), so a
	// message stored during shutdown has its reply written before the
	// close frame.
	sends       int32 // int32s: with platform, they keep the struct in the 320-byte size class
	drainCode   int32
	drainReason string

	pending *heldLive // live messages held while syncing; made for the first

	// Calls (call.go): rung holds the calls that rang this session from
	// its login until SessionStarted is done (nil before and after), so
	// each rings it once.
	rung map[string]bool

	acked map[string]int64 // conversation -> highest seq this device acknowledged

	tokenExp int64 // Unix ns when the session's token expires
}

type outFrame struct {
	op      ws.OpCode
	payload []byte
	// startsHeartbeat marks sync_done: once it is written, the heartbeat
	// clock starts (see writeLoop).
	startsHeartbeat bool
}

type liveMsg struct {
	conv  string
	seq   int64
	frame []byte
}

// heldLive is what a session holds of the live messages that arrive while
// its offline sync is being sent.
type heldLive struct {
	msgs  []liveMsg
	bytes int // of their frames
}

// bufPool holds the writers' buffers for writes larger than
// smallWriteBytes. A smaller write (a pong, a login's reply, a live
// message) needs none on an owned descriptor (writev, maxVecFrames) and
// is otherwise copied into a buffer of its own size, left to the
// collector: in a login storm, hundreds of writers at once each took a
// 16 KiB buffer for a few hundred bytes, and the pool kept them all after
// it, in the heap of a server whose sessions then idle.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// smallWriteBytes is the largest write that does not take a pooled buffer.
const smallWriteBytes = 4 << 10

// maxVecFrames is the most queued frames a writer on an owned descriptor
// writes with one writev from where they are (poller.writeFrames); a
// longer queue (a sync streaming, a burst to a slow reader) is copied
// into one buffer. Its headers and vectors are on the writer's stack, a
// short-lived goroutine's, which 8 keep well within its first stack.
const maxVecFrames = 8

func newSession(g *Gateway, conn net.Conn) *session {
	s := &session{g: g, id: chat.SessionID(g.nextID.Add(1)), conn: conn}
	if a := conn.RemoteAddr(); a != nil {
		s.remote = a.String()
	}
	s.fr.max = g.cfg.MaxFrameBytes
	s.deadline.Store(g.cfg.Now().Add(g.cfg.LoginTimeout).UnixNano())
	s.tokenAt.Store(math.MaxInt64)
	return s
}

// teardown ends the session (end), once: the first call returns when end
// has run, later ones at once.
func (s *session) teardown() {
	if s.torn.CompareAndSwap(false, true) {
		s.end()
	}
}

// waitLocked waits on the session's cond, made on first use; s.mu must be
// held. Few sessions ever wait (a sync streamed at a slow client's pace,
// an end waiting for its writer), so an idle one holds no cond.
func (s *session) waitLocked() {
	if s.cond == nil {
		s.cond = sync.NewCond(&s.mu)
	}
	s.cond.Wait()
}

// broadcastLocked wakes the cond's waiters, if any; s.mu must be held.
func (s *session) broadcastLocked() {
	if s.cond != nil {
		s.cond.Broadcast()
	}
}

// platformCode is what session.platform keeps of a login's platform.
func platformCode(p string) uint8 {
	return uint8(slices.Index(herald.Platforms, herald.NormalizePlatform(p)) + 1)
}

// platformName is the platform s named at login, normalised
// (herald.NormalizePlatform): "" for none of herald.Platforms.
func (s *session) platformName() string {
	if s.platform == 0 {
		return ""
	}
	return herald.Platforms[s.platform-1]
}

// loginTime is when the session logged in (gateway clock).
func (s *session) loginTime() time.Time { return time.Unix(0, s.loginAt) }

func (s *session) logger() []any {
	return []any{"conn_id", uint64(s.id), "user_id", s.user, "device_id", s.device}
}

// readLoop is the portable read driver: a goroutine blocked in Read.
func (s *session) readLoop(buffered []byte) {
	defer s.teardown()
	if len(buffered) > 0 && !s.consume(buffered) {
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := s.conn.Read(buf)
		if n > 0 && !s.consume(buf[:n]) {
			return
		}
		if err != nil {
			s.readFailed(err)
			return
		}
	}
}

// consume parses and handles the bytes read; false means stop reading.
func (s *session) consume(data []byte) bool {
	if s.beating.Load() {
		s.deadline.Store(s.g.cfg.Now().Add(s.g.cfg.HeartbeatTimeout).UnixNano())
	}
	err := s.fr.feed(data, s.onPing, func(op ws.OpCode, payload []byte) bool {
		if op != ws.OpText {
			s.closeWith(proto.CloseBadRequest, "binary frames are not part of the JSON protocol")
			return false
		}
		s.handle(payload)
		return !s.ending()
	})
	if err != nil {
		s.readFailed(err)
		return false
	}
	return !s.ending()
}

func (s *session) onPing(p []byte) {
	s.mu.Lock()
	s.enqueueLocked(ws.OpPong, append([]byte(nil), p...))
	s.mu.Unlock()
}

// ending reports whether the session is closing or closed.
func (s *session) ending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || s.closeCode != 0
}

// timedOut is called by the sweeper when the deadline has passed.
func (s *session) timedOut() {
	if s.loggedIn.Load() {
		s.closeWith(proto.CloseHeartbeatTimeout, "no heartbeat within the timeout")
	} else {
		s.closeWith(proto.CloseLoginTimeout, "no login within the timeout")
	}
}

func (s *session) readFailed(err error) {
	var pc peerClosed
	switch {
	case errors.Is(err, errTooLarge):
		s.closeWith(proto.CloseFrameTooLarge, "frame exceeds "+strconv.Itoa(s.g.cfg.MaxFrameBytes)+" bytes")
	case errors.Is(err, errProtocol):
		s.closeWith(proto.CloseProtocolError, err.Error())
	case errors.As(err, &pc):
		s.closeWith(proto.CloseNormal, "")
	default:
		// The connection is gone (EOF, reset): nothing to tell.
	}
}

// end runs once (through teardown) when reading has ended or the writer
// closed the connection: the session leaves the hub, its acks are stored,
// and the connection closes once the writer is done.
func (s *session) end() {
	s.mu.Lock()
	s.ended = true // from now on register refuses s
	s.tokenAt.Store(math.MaxInt64)
	s.mu.Unlock()
	if s.loggedIn.Load() {
		// Store the acks while s is still in the hub: a relogin from the same
		// device kicks s and waits for this flush before its sync.
		s.flushCursors()
	}
	left, removed := s.g.unregister(s)
	s.callsEnded(left, removed)
	s.emitEnd()
	s.waitWriter()
	s.mu.Lock()
	s.closeConnLocked()
	s.queue, s.pending = nil, nil
	s.mu.Unlock()
	s.g.untrack(s)
}

// closeConnLocked is the one place the connection is closed; s.mu must be
// held. The poller forgets the descriptor first, so a reused descriptor
// number is never touched.
func (s *session) closeConnLocked() {
	if s.closed {
		return
	}
	s.closed = true
	s.g.poller.forget(s)
	if s.conn != nil {
		s.conn.Close()
	}
}

// closeWith asks the writer to send a close frame with code after what is
// queued and then close the connection. The first call wins.
func (s *session) closeWith(code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(code, reason)
}

// closeLocked is closeWith; s.mu must be held.
func (s *session) closeLocked(code int, reason string) {
	if s.closed || s.closeCode != 0 {
		return
	}
	s.closeCode, s.closeReason = code, reason
	s.startWriterLocked()
}

// frameCost is what a queued frame counts against the send queue limit:
// the memory its payload holds (its capacity: a frame encoded in place is
// made a little larger than it turns out) plus that of its queue entry and
// header, so a flood of empty frames (pongs for empty pings) is bounded too.
// A frame's payload is not resliced while it is queued or written.
func frameCost(payload []byte) int { return cap(payload) + 64 }

// enqueueLocked queues a frame for the writer; s.mu must be held. A queue
// over its limit closes the session with CloseSlowConsumer: the client
// reconnects and resyncs rather than holding the server's memory. One frame
// larger than the limit is let into an empty queue, so a large reply
// cannot make a client that keeps up reconnect for ever.
func (s *session) enqueueLocked(op ws.OpCode, payload []byte) bool {
	return s.enqueueFrameLocked(outFrame{op: op, payload: payload})
}

// enqueueFrameLocked is enqueueLocked for a frame with its marks.
func (s *session) enqueueFrameLocked(f outFrame) bool {
	if s.closed || s.closeCode != 0 {
		return false
	}
	cost := frameCost(f.payload)
	if s.queued > 0 && s.queued+cost > s.g.cfg.SendQueueBytes {
		s.slowLocked()
		return false
	}
	s.queue = append(s.queue, f)
	s.queued += cost
	s.startWriterLocked()
	return true
}

func (s *session) slowLocked() {
	s.g.stats.slowClosed.Add(1)
	s.queue = nil
	s.pending = nil
	s.closeLocked(proto.CloseSlowConsumer, "send queue full; reconnect and resync")
}

func (s *session) startWriterLocked() {
	if !s.writing && !s.closed {
		s.writing = true
		go s.writeLoop()
	}
}

// waitWriter blocks until the writer goroutine has stopped.
func (s *session) waitWriter() {
	s.mu.Lock()
	for s.writing {
		s.waitLocked()
	}
	s.mu.Unlock()
}

// writeLoop drains the queue, coalescing every queued frame into one write,
// and exits when the queue is empty, so an idle session holds no goroutine
// and no buffer. After a close request it writes the close frame and closes
// the connection.
func (s *session) writeLoop() {
	var bp *[]byte // from bufPool, taken by the first write larger than smallWriteBytes
	defer func() {
		if bp != nil {
			bufPool.Put(bp)
		}
	}()
	for {
		s.mu.Lock()
		s.g.poller.handoffLocked(s) // no conn change from here until this writer ends
		q := s.queue
		s.queue = nil
		code, reason := s.closeCode, s.closeReason
		if len(q) == 0 && (code == 0 || s.closed) {
			s.writing = false
			s.broadcastLocked()
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()

		last := len(q) == 0 // only the close frame is left
		written, beat := 0, false
		for _, f := range q {
			written += frameCost(f.payload)
			beat = beat || f.startsHeartbeat
		}
		var err error
		if !last && s.conn == nil && len(q) <= maxVecFrames {
			// On an owned descriptor the frames go out from where they
			// are, their headers beside them, in one writev: no buffer.
			err = s.g.poller.writeFrames(s, q, time.Now().Add(s.g.cfg.WriteTimeout))
		} else {
			var closing []byte
			size := 0
			if last {
				closing = ws.NewCloseFrameBody(ws.StatusCode(code), reason)
				size = frameSize(closing)
			}
			for _, f := range q {
				size += frameSize(f.payload)
			}
			var buf []byte
			if size <= smallWriteBytes {
				buf = make([]byte, 0, size)
			} else {
				if bp == nil {
					bp = bufPool.Get().(*[]byte)
				}
				buf = (*bp)[:0]
			}
			for _, f := range q {
				buf = appendFrame(buf, f.op, f.payload)
			}
			if last {
				buf = appendFrame(buf, ws.OpClose, closing)
			}
			err = s.write(buf)
			if bp != nil && size > smallWriteBytes && cap(buf) <= 1<<20 {
				*bp = buf
			}
		}
		if err == nil && beat {
			// sync_done is out: the heartbeat clock starts now, not when
			// the sync was queued, so a client that reads a long sync
			// slowly has the whole timeout after it to ping.
			s.deadline.Store(s.g.cfg.Now().Add(s.g.cfg.HeartbeatTimeout).UnixNano())
			s.beating.Store(true)
		}
		// Frames count against the queue until written: a client that
		// stalls a write cannot make the server hold more than the limit.
		s.mu.Lock()
		s.queued = max(s.queued-written, 0)
		s.broadcastLocked()
		s.mu.Unlock()
		if err == nil && last {
			s.awaitPeerClose()
		}
		if err != nil || last {
			s.mu.Lock()
			s.closeConnLocked()
			s.queue, s.queued = nil, 0
			s.writing = false
			s.broadcastLocked()
			s.mu.Unlock()
			// No read will notice a connection closed from this side when
			// the poller drives reading, so end the session here.
			go s.teardown()
			return
		}
	}
}

// write writes b within the write timeout; the writer's only. Socket
// deadlines are on the wall clock (time.Now), on both paths: the runtime
// and the poller time them in real time, while cfg.Now is the protocol's
// clock (tokens, heartbeats, rate limits), which a test may set.
func (s *session) write(b []byte) error {
	deadline := time.Now().Add(s.g.cfg.WriteTimeout)
	if s.conn == nil {
		return s.g.poller.write(s, b, deadline)
	}
	s.conn.SetWriteDeadline(deadline)
	_, err := s.conn.Write(b)
	return err
}

// closeLinger bounds the wait for the client's side of the closing handshake.
const closeLinger = 2 * time.Second

// awaitPeerClose half-closes the connection after our close frame and
// drains what the client still sends until it closes too (or closeLinger
// passes). Closing at once with unread bytes would make the kernel send a
// reset, and the client could lose our close frame and its code.
func (s *session) awaitPeerClose() {
	deadline := time.Now().Add(closeLinger) // wall clock, as in write
	if s.conn == nil {
		s.g.poller.linger(s, deadline)
		return
	}
	cw, ok := s.conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	s.conn.SetReadDeadline(deadline)
	buf := make([]byte, 512)
	for {
		if _, err := s.conn.Read(buf); err != nil {
			return
		}
	}
}

// deliver queues a live message; during the offline sync it waits in
// pending so the client sees the sync first and nothing twice.
func (s *session) deliver(conv string, seq int64, frame []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncing {
		if s.closed || s.closeCode != 0 {
			return
		}
		if s.pending == nil {
			s.pending = new(heldLive)
		}
		s.pending.msgs = append(s.pending.msgs, liveMsg{conv, seq, frame})
		s.pending.bytes += len(frame)
		if s.pending.bytes > s.g.cfg.SendQueueBytes {
			s.slowLocked()
		}
		return
	}
	s.enqueueLocked(ws.OpText, frame)
}

// enqueueWait queues a frame, first waiting while the queue is over half
// full: the offline sync uses it to stream at the client's pace.
func (s *session) enqueueWait(frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.queued > 0 && s.queued+frameCost(frame) > s.g.cfg.SendQueueBytes/2 && !s.closed && s.closeCode == 0 {
		s.waitLocked()
	}
	if !s.enqueueLocked(ws.OpText, frame) {
		return errSessionClosed
	}
	return nil
}

var errSessionClosed = errors.New("session closed")

func (s *session) reply(id uint64, v any) {
	if id == 0 {
		return
	}
	frame, err := s.g.codec.AppendFrame(nil, proto.Frame{ID: id}, v)
	if err != nil {
		s.fail(id, "", err)
		return
	}
	s.queueReply(frame)
}

// queueReply queues an encoded reply.
func (s *session) queueReply(frame []byte) {
	s.mu.Lock()
	s.enqueueLocked(ws.OpText, frame)
	s.mu.Unlock()
}

// fail answers a request with an error; internal errors are logged here, the
// edge, and reach the client without their details.
func (s *session) fail(id uint64, op string, err error) {
	code := herald.ErrorCode(err)
	if code == herald.CodeInternal {
		s.g.log.Error("request failed", append(s.logger(), "op", op, "err", err)...)
	}
	e := &proto.Error{Code: string(code), Message: herald.ErrorMessage(err)}
	f := proto.Frame{ID: id, Err: e}
	if id == 0 {
		e.Op = op
		f = proto.Frame{Ev: proto.EvError, Data: mustMarshal(s.g.codec, e)}
	}
	frame, _ := s.g.codec.EncodeFrame(nil, &f)
	s.mu.Lock()
	s.enqueueLocked(ws.OpText, frame)
	s.mu.Unlock()
}

func mustMarshal(c proto.Codec, v any) []byte {
	b, err := c.Marshal(v)
	if err != nil {
		panic(err) // only called with protocol types, which always encode
	}
	return b
}

// handle dispatches one request.
func (s *session) handle(payload []byte) {
	f, err := s.g.codec.DecodeFrame(payload)
	if err != nil {
		s.g.stats.framesBad.Add(1)
		s.fail(0, "", herald.Errorf(herald.CodeInvalidArgument, "%v", err))
		return
	}
	if f.Op == "" {
		s.fail(f.ID, "", herald.Errorf(herald.CodeInvalidArgument, "frame has no op"))
		return
	}
	if !s.loggedIn.Load() && f.Op != proto.OpLogin && f.Op != proto.OpPing {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeUnauthorized, "log in first"))
		return
	}
	ctx := context.Background()
	switch f.Op {
	case proto.OpLogin:
		s.login(ctx, f)
	case proto.OpPing:
		s.reply(f.ID, proto.PingReply{ServerTime: proto.Millis(s.g.cfg.Now())})
	case proto.OpLogout:
		s.flushCursors() // before the reply: a quick relogin must see these acks
		if p := s.g.cfg.Push; p != nil {
			// Before the reply: once logged out, the device gets no push of this user's.
			if err := p.Logout(ctx, s.user, s.device); err != nil {
				s.fail(f.ID, f.Op, err)
				return
			}
		}
		// Before the reply too: a client that closes as soon as it is
		// answered ends the session as a logout, whose calls are
		// cancelled at once (callsEnded), not after a grace.
		s.mu.Lock()
		s.loggedOut = true
		s.mu.Unlock()
		s.reply(f.ID, struct{}{})
		s.closeWith(proto.CloseNormal, "logged out")
	case proto.OpRenewToken:
		s.renewToken(f)
	case proto.OpFetchToken:
		s.fetchToken(f)
	case proto.OpSend:
		s.send(f)
	case proto.OpAck:
		s.ack(f)
	case proto.OpHistory:
		s.history(ctx, f)
	case proto.OpConversations:
		s.conversations(ctx, f)
	case proto.OpRegisterPush, proto.OpUnregisterPush, proto.OpPushDevices, proto.OpSetConversationNotification,
		proto.OpSetPushRule, proto.OpPushRule, proto.OpSetBadge:
		s.pushOp(ctx, f)
	case proto.OpCallInvite, proto.OpCallCancel, proto.OpCallAccept, proto.OpCallReject, proto.OpCalls,
		proto.OpCallCallingInvite, proto.OpCallJoin, proto.OpCallQuit, proto.OpCallEnd:
		s.callOp(ctx, f)
	case proto.OpCreateGroup, proto.OpJoinGroup, proto.OpLeaveGroup, proto.OpInviteGroupMembers,
		proto.OpKickGroupMembers, proto.OpDismissGroup, proto.OpTransferGroupOwner, proto.OpSetGroupMemberRole,
		proto.OpUpdateGroup, proto.OpGroupInfo, proto.OpGroupMembers, proto.OpGroups:
		s.groupOp(ctx, f)
	case proto.OpMarkRead:
		req, ok := s.decodeSeq(f)
		if !ok {
			return
		}
		ct, err := proto.ParseConvType(req.ConvType)
		if err == nil {
			err = s.g.chat.MarkRead(ctx, s.user, ct, req.ConvID, req.Seq)
		}
		if err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		s.reply(f.ID, struct{}{})
		if p := s.g.cfg.Push; p != nil {
			// The read stands whatever happens to the badge updates; their
			// failure is logged by the push service.
			_ = p.MarkedRead(ctx, s.user, s.device)
		}
	default:
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "unknown op %q", f.Op))
	}
}

func (s *session) decode(f proto.Frame, v any) bool {
	if err := s.g.codec.Unmarshal(f.Data, v); err != nil {
		s.g.stats.framesBad.Add(1)
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "%v", err))
		return false
	}
	return true
}

func (s *session) login(ctx context.Context, f proto.Frame) {
	if s.loggedIn.Load() {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeConflict, "already logged in on this connection"))
		return
	}
	var req proto.LoginRequest
	if !s.decode(f, &req) {
		return
	}
	cfg := &s.g.cfg
	if req.Version != proto.Version {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "protocol version %d is not supported; this server speaks %d", req.Version, proto.Version))
		return
	}
	if err := herald.ValidateUserID(req.UserID); err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	if err := herald.ValidateDeviceID(req.DeviceID); err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	// The request's own fields first, the token after (protocol.md §5.1
	// lists the errors in this order): a client with a bad cursor learns
	// of it whatever its token.
	given := make(map[string]int64, len(req.Cursors))
	for _, c := range req.Cursors {
		key, err := cursorKey(req.UserID, c.ConvType, c.ConvID, c.Seq)
		if err != nil {
			s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "cursors: %s", herald.ErrorMessage(err)))
			return
		}
		given[key] = c.Seq
	}
	claims, err := token.Verify(cfg.Secret, req.Token, cfg.Now())
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	if claims.UserID != req.UserID {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeForbidden, "the token was minted for another user"))
		return
	}
	if users := cfg.Users; users != nil {
		registered, err := users.Registered(ctx, req.UserID)
		if err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		if !registered {
			s.fail(f.ID, f.Op, herald.Errorf(herald.CodeForbidden, "user %q is not registered", req.UserID))
			return
		}
	}

	s.mu.Lock()
	if s.ended || s.closeCode != 0 {
		s.mu.Unlock()
		return // the session ended while this login was being checked
	}
	s.user, s.device = req.UserID, req.DeviceID
	s.platform = platformCode(req.Platform)
	s.loginAt = cfg.Now().UnixNano()
	s.tokenExp = claims.ExpiresAt.UnixNano()
	s.syncing = true
	s.rung = make(map[string]bool)
	s.mu.Unlock()
	s.loggedIn.Store(true)
	// The server's listener counts connections until they log in
	// (internal/server/listener.go); from here the device limit bounds them.
	if a, ok := s.conn.(interface{ Authenticated() }); ok {
		a.Authenticated()
	}
	// The sync below may outlast a heartbeat interval, and frames are not
	// read meanwhile: the heartbeat clock starts when sync_done has been
	// written (writeLoop). Until then a client that stops reading is cut
	// off by the write timeout instead.
	s.deadline.Store(math.MaxInt64)
	kick, ok := s.g.register(s)
	if !ok {
		return // ended meanwhile: end has run or will find nothing to remove
	}
	for _, k := range kick {
		s.g.stats.kicked.Add(1)
		k.s.closeWith(proto.CloseKickedOut, k.reason)
		if k.s.device == s.device {
			k.s.flushCursors() // the sync below starts from what that session acknowledged
		}
	}
	// Checked again now that the session is in the hub (and the sessions
	// it displaced are closed): an unregistration between the first check
	// and here kicked nothing (it found no session), but it has
	// invalidated the answer, so this sees it. A failed check closes the
	// session too (the client reconnects and is checked again).
	if users := cfg.Users; users != nil {
		registered, err := users.Registered(ctx, s.user)
		switch {
		case err != nil:
			s.g.log.Error("registration check failed", append(s.logger(), "err", err)...)
			s.closeWith(proto.CloseInternal, "registration check failed")
			return
		case !registered:
			s.g.stats.kicked.Add(1)
			s.closeWith(proto.CloseKickedOut, UnregisteredReason)
			return
		}
	}
	s.g.cancelGrace(s.user) // the user is back: their calls ring on
	s.reply(f.ID, proto.LoginReply{
		UserID:            s.user,
		SessionID:         strconv.FormatUint(uint64(s.id), 10),
		ServerTime:        proto.Millis(cfg.Now()),
		TokenExpiresAt:    proto.Millis(claims.ExpiresAt),
		HeartbeatInterval: cfg.HeartbeatInterval.Milliseconds(),
		HeartbeatTimeout:  cfg.HeartbeatTimeout.Milliseconds(),
		Limits: proto.Limits{
			MaxFrameBytes: cfg.MaxFrameBytes, MaxTextBytes: cfg.Limits.MaxTextBytes,
			MaxCustomBytes: cfg.Limits.MaxCustomBytes, MaxCommandBytes: cfg.Limits.MaxCommandBytes,
			MaxExtendedBytes: cfg.Limits.MaxExtendedBytes, MaxLocalIDBytes: cfg.Limits.MaxLocalIDBytes,
			SendsPerSecond: cfg.SendsPerSecond, SendBurst: cfg.SendBurst,
		},
	})
	s.mu.Lock()
	s.armTokenLocked()
	s.mu.Unlock()
	s.g.log.Debug("login", s.logger()...)
	if p := cfg.Push; p != nil {
		p.DeviceActive(s.user, s.device)
	}

	s.emitLogin()
	covered, count, err := s.g.chat.Sync(ctx, s.user, s.device, given, s.sendSyncPage)
	if err != nil {
		if !errors.Is(err, errSessionClosed) {
			s.g.log.Error("offline sync failed", append(s.logger(), "err", err)...)
			s.closeWith(proto.CloseInternal, "offline sync failed")
		}
		return
	}
	done, _ := s.g.encodeEvent(proto.EvSyncDone, proto.SyncDone{Count: count})
	s.mu.Lock()
	s.enqueueFrameLocked(outFrame{op: ws.OpText, payload: done, startsHeartbeat: true})
	if s.pending != nil {
		for _, p := range s.pending.msgs {
			if p.seq == 0 || p.seq > covered[p.conv] {
				s.enqueueLocked(ws.OpText, p.frame)
			}
		}
	}
	s.pending, s.syncing = nil, false
	s.mu.Unlock()
	s.callsStarted() // after the sync: calls still ringing ring this session
}

// sendSyncPage encodes messages as sync events and streams them at the
// client's pace.
func (s *session) sendSyncPage(msgs []*herald.Message) error {
	return s.g.syncFrames(s.user, msgs, s.enqueueWait)
}

// syncFrames encodes msgs, as user receives them, into sync events no
// larger than the reply budget each (by wireSize; but for one message
// larger alone), and hands each to emit.
func (g *Gateway) syncFrames(user string, msgs []*herald.Message, emit func([]byte) error) error {
	ev := proto.SyncEvent{Messages: make([]proto.Message, 0, len(msgs))}
	size, budget := replyEnvelopeBytes, g.replyBudget()
	flush := func() error {
		if len(ev.Messages) == 0 {
			return nil
		}
		frame, err := g.encodeEvent(proto.EvSync, ev)
		if err != nil {
			return err
		}
		ev.Messages, size = ev.Messages[:0], replyEnvelopeBytes
		return emit(frame)
	}
	for _, m := range msgs {
		n := wireSize(m) + 1 // + 1: the separator
		if len(ev.Messages) > 0 && size+n > budget {
			if err := flush(); err != nil {
				return err
			}
		}
		ev.Messages = append(ev.Messages, proto.FromMessage(m, user, true))
		size += n
	}
	return flush()
}

// armTokenLocked schedules the token's expiry warning and the expiry
// itself (tokenAt, which the sweeper watches: no timer per session); a
// warning due already is sent now. s.mu must be held.
func (s *session) armTokenLocked() {
	if s.ended {
		return
	}
	s.tokenAt.Store(s.tokenExp - int64(s.g.cfg.TokenWarning))
	s.tokenTickLocked(s.g.cfg.Now().UnixNano())
}

// tokenTick is the sweeper's call once tokenAt has passed (Unix ns now):
// the warning is sent, then at expiry the session is closed.
func (s *session) tokenTick(now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenTickLocked(now)
}

// tokenTickLocked is tokenTick; s.mu must be held.
func (s *session) tokenTickLocked(now int64) {
	if s.closed || s.ended || now < s.tokenAt.Load() {
		return // gone, or renewed since the sweeper looked
	}
	exp := s.tokenExp
	if now >= exp {
		s.tokenAt.Store(math.MaxInt64)
		s.closeLocked(proto.CloseTokenExpired, "token expired; log in with a new token")
		return
	}
	if !s.warned {
		s.warned = true
		frame, _ := s.g.encodeEvent(proto.EvTokenWillExpire, proto.TokenWillExpire{
			ExpiresAt: exp / int64(time.Millisecond), RemainingMS: (exp - now) / int64(time.Millisecond),
		})
		s.enqueueLocked(ws.OpText, frame)
	}
	s.tokenAt.Store(exp)
}

func (s *session) renewToken(f proto.Frame) {
	var req proto.RenewTokenRequest
	if !s.decode(f, &req) {
		return
	}
	claims, err := token.Verify(s.g.cfg.Secret, req.Token, s.g.cfg.Now())
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	if claims.UserID != s.user {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeForbidden, "the token was minted for another user"))
		return
	}
	s.mu.Lock()
	s.tokenExp, s.warned = claims.ExpiresAt.UnixNano(), false
	s.armTokenLocked()
	s.mu.Unlock()
	s.reply(f.ID, proto.RenewTokenReply{TokenExpiresAt: proto.Millis(claims.ExpiresAt)})
}

// fetchToken mints a fetch token for the session's user (content-free
// mode: the app hands it to its notification service extension, which
// fetches pushed messages with it). It shares the send budget: no client
// mints tokens in a loop.
func (s *session) fetchToken(f proto.Frame) {
	if !s.allowSend() {
		s.g.stats.sendsLimited.Add(1)
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeRateLimited, "more than %d sends and token requests per second", s.g.cfg.SendsPerSecond))
		return
	}
	now := s.g.cfg.Now()
	ttl := min(s.g.cfg.FetchTokenTTL, token.MaxFetchTTL)
	tok, err := token.MintFetch(s.g.cfg.Secret, s.user, now, ttl)
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	s.reply(f.ID, proto.FetchTokenReply{Token: tok, ExpiresAt: proto.Millis(now.Add(ttl).Truncate(time.Second))})
}

// allowSend takes a token from the session's send bucket.
func (s *session) allowSend() bool {
	cfg := &s.g.cfg
	now := cfg.Now().UnixNano()
	if s.lastRefill == 0 {
		s.tokens = float64(cfg.SendBurst)
	} else {
		s.tokens = min(float64(cfg.SendBurst), s.tokens+time.Duration(now-s.lastRefill).Seconds()*float64(cfg.SendsPerSecond))
	}
	s.lastRefill = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

func (s *session) send(f proto.Frame) {
	var req proto.SendRequest
	if !s.decode(f, &req) {
		return
	}
	if !s.allowSend() {
		s.g.stats.sendsLimited.Add(1)
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeRateLimited, "more than %d sends per second", s.g.cfg.SendsPerSecond))
		return
	}
	ct, err := proto.ParseConvType(req.ConvType)
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	mt, ok := herald.ParseMessageType(req.Type)
	if !ok {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "unknown message type %q; want text, custom, command, image, file, audio or video", req.Type))
		return
	}
	m := &herald.Message{
		FromDevice: s.device, // its sync leaves it out (chat.Sync)
		ConvType:   ct, To: req.To, LocalID: req.LocalID, Type: mt,
		Text: req.Text, Data: req.Data, SubType: req.SubType, Extended: req.Extended,
		Mentions: req.Mentions, Push: req.Push, NotifyMentioned: req.NotifyMentioned, Media: req.Media,
	}
	if !s.sendStarted() {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeUnavailable, "server is shutting down; send again after reconnecting"))
		return
	}
	id, op, user := f.ID, f.Op, s.user
	s.g.chat.Send(user, s.id, m, func(res chat.SendResult, err error) {
		defer s.sendEnded()
		if err != nil {
			s.fail(id, op, err)
			return
		}
		if id != 0 {
			s.queueReply(s.g.codec.AppendSendReplyFrame(nil, proto.Frame{ID: id}, res.Message, user, res.Duplicate))
		}
	})
}

// sendStarted counts a send handed to chat; false once the session is
// draining for shutdown (no new send is started then).
func (s *session) sendStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drainCode != 0 {
		return false
	}
	s.sends++
	return true
}

// sendEnded is called once a send's reply is queued; the last one of a
// draining session closes it.
func (s *session) sendEnded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sends--
	if s.sends == 0 && s.drainCode != 0 {
		s.closeLocked(int(s.drainCode), s.drainReason)
	}
}

// closeAfterSends closes the session with code once the replies of its
// sends in flight are queued (at once when there are none), and refuses
// new sends meanwhile. It reports whether sends were in flight.
func (s *session) closeAfterSends(code int, reason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sends == 0 {
		s.closeLocked(code, reason)
		return false
	}
	if s.drainCode == 0 {
		s.drainCode, s.drainReason = int32(code), reason
	}
	return true
}

// cursorKey validates a (conversation, seq) position named by user and
// returns the conversation's key.
func cursorKey(user, convType, convID string, seq int64) (string, error) {
	ct, err := proto.ParseConvType(convType)
	if err != nil {
		return "", err
	}
	if seq < 0 {
		return "", herald.Errorf(herald.CodeInvalidArgument, "seq %d is negative", seq)
	}
	return chat.ConversationKey(user, ct, convID)
}

// seqRequest is the payload of ack and mark_read as the gateway reads it:
// Seq is a pointer so a missing seq is refused rather than read as 0.
type seqRequest struct {
	ConvType string `json:"conv_type"`
	ConvID   string `json:"conv_id"`
	Seq      *int64 `json:"seq"`
}

// decodeSeq decodes an ack or mark_read payload; false when it failed
// (answered).
func (s *session) decodeSeq(f proto.Frame) (proto.AckRequest, bool) {
	var req seqRequest
	if !s.decode(f, &req) {
		return proto.AckRequest{}, false
	}
	if req.Seq == nil {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "seq is missing"))
		return proto.AckRequest{}, false
	}
	return proto.AckRequest{ConvType: req.ConvType, ConvID: req.ConvID, Seq: *req.Seq}, true
}

func (s *session) ack(f proto.Frame) {
	req, ok := s.decodeSeq(f)
	if !ok {
		return
	}
	key, err := cursorKey(s.user, req.ConvType, req.ConvID, req.Seq)
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	s.mu.Lock()
	if s.acked == nil {
		s.acked = make(map[string]int64)
	}
	_, known := s.acked[key]
	if !known && len(s.acked) >= maxAckedConversations {
		s.mu.Unlock()
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeTooLarge, "more than %d conversations acknowledged in one session", maxAckedConversations))
		return
	}
	if req.Seq > s.acked[key] {
		s.acked[key] = req.Seq
		if !s.ackDirty && !s.ended {
			s.ackDirty = true
			s.g.markDirty(s)
		}
	}
	s.mu.Unlock()
	s.reply(f.ID, struct{}{})
}

// takeCursors returns the acks gathered since the last flush, if any.
func (s *session) takeCursors() (store.DeviceCursors, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ackDirty {
		return store.DeviceCursors{}, false
	}
	cur := make(map[string]int64, len(s.acked))
	for k, v := range s.acked {
		cur[k] = v
	}
	s.ackDirty = false
	return store.DeviceCursors{User: s.user, Device: s.device, Cursors: cur}, true
}

// flushCursors stores this session's acks now (logout, relogin on the same
// device, end), after any flush already in flight: its acks are dirty (or
// taken by that flush), so the next flush writes them, with every other
// session's that asked meanwhile (awaitCursors).
func (s *session) flushCursors() { s.g.awaitCursors() }

// history answers one page of a conversation's messages. It takes a token
// from the session's request budget like a send: each page reads up to
// 201 stored messages.
func (s *session) history(ctx context.Context, f proto.Frame) {
	var req proto.HistoryRequest
	if !s.decode(f, &req) {
		return
	}
	if !s.allowSend() {
		s.g.stats.sendsLimited.Add(1)
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeRateLimited, "more than %d sends and list requests per second", s.g.cfg.SendsPerSecond))
		return
	}
	ct, err := proto.ParseConvType(req.ConvType)
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	q := store.HistoryQuery{FromSeq: req.FromSeq, Limit: req.Limit}
	switch req.Direction {
	case "", proto.Backward:
		q.Direction = store.Backward
	case proto.Forward:
		q.Direction = store.Forward
	default:
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "direction %q; want backward or forward", req.Direction))
		return
	}
	msgs, more, err := s.g.chat.History(ctx, s.user, ct, req.ConvID, q)
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	// The page (proto.HistoryReply) is cut at the reply budget by exact
	// sizes (listBuf).
	list := newList("messages")
	budget := s.g.replyBudget() - replyEnvelopeBytes
	for _, m := range msgs {
		b, err := s.g.codec.Marshal(proto.FromMessage(m, s.user, false))
		if err != nil {
			s.fail(f.ID, f.Op, err) // internal: a message always encodes
			return
		}
		if list.n > 0 && list.sizeWith(b) > budget {
			more = true // the client pages on from the last message it got
			break
		}
		list.add(b)
	}
	s.replyList(f.ID, f.Op, &list, struct {
		HasMore bool `json:"has_more"`
	}{more})
}

// replyList answers a request with a list reply: list's entries and
// rest's fields (listBuf.frame).
func (s *session) replyList(id uint64, op string, list *listBuf, rest any) {
	r, err := s.g.codec.Marshal(rest)
	if err != nil {
		s.fail(id, op, err)
		return
	}
	frame, err := list.frame(s.g.codec, id, r)
	switch {
	case id == 0: // nobody waits for the reply
		return
	case err != nil:
		s.fail(id, op, err)
		return
	}
	s.mu.Lock()
	s.enqueueLocked(ws.OpText, frame)
	s.mu.Unlock()
}

// conversations answers one page of the user's conversation list
// (proto.ConversationsReply): up to the request's limit, cut short at the
// reply budget. It takes a token from the session's request budget like a
// send: each call reads the store for every conversation it lists.
//
// Each store read ranks the user's whole list, so a page takes few reads:
// chunks of 100, 400, then the rest of the limit (each one more, to tell
// whether more follow), at most three rankings for a page of 1,000. A
// page of large entries fills the reply budget within the first chunk, so
// no request holds a thousand large last messages at once. A conversation
// that gets a message between two reads moves to the front, as between
// pages: not listed twice, missed if not listed yet (protocol.md §5.8).
func (s *session) conversations(ctx context.Context, f proto.Frame) {
	var req proto.ConversationsRequest
	if !s.decode(f, &req) {
		return
	}
	if !s.allowSend() {
		s.g.stats.sendsLimited.Add(1)
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeRateLimited, "more than %d sends and list requests per second", s.g.cfg.SendsPerSecond))
		return
	}
	limit := req.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 1-1000", limit))
		return
	}
	var after *store.ConversationCursor
	if req.After != "" {
		cur, err := parseConvCursor(s.user, req.After)
		if err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		after = &cur
	}
	list := newList("conversations")
	var (
		rest struct {
			TotalUnread int    `json:"total_unread"`
			HasMore     bool   `json:"has_more"`
			Next        string `json:"next,omitempty"`
		}
		last herald.Conversation
	)
	budget := s.g.replyBudget() - convEnvelopeBytes
	chunk := min(limit, convFirstRead)
read:
	for n := 0; ; {
		cs, err := s.g.chat.Conversations(ctx, s.user, after, chunk+1)
		if err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		for i, c := range cs {
			if i == chunk {
				break
			}
			b, err := s.g.codec.Marshal(s.convEntry(c))
			if err != nil {
				s.fail(f.ID, f.Op, err) // internal: an entry always encodes
				return
			}
			if list.n > 0 && list.sizeWith(b) > budget {
				rest.HasMore = true // the page goes on from the last entry returned
				break read
			}
			list.add(b)
			if !c.Muted {
				rest.TotalUnread += c.Unread
			}
			last = c
			n++
		}
		switch {
		case len(cs) <= chunk:
			break read // the list ends here
		case n == limit:
			rest.HasMore = true
			break read
		}
		cur := store.CursorOf(last)
		after = &cur
		chunk = min(limit-n, 4*chunk)
	}
	if rest.HasMore {
		rest.Next = formatConvCursor(last)
	}
	s.replyList(f.ID, f.Op, &list, rest)
}

func (s *session) convEntry(c herald.Conversation) proto.Conversation {
	pc := proto.Conversation{
		ConvType: proto.ConvTypeName(c.Type), ConvID: c.ID, ReadSeq: c.ReadSeq, Unread: c.Unread,
		NotificationStatus: proto.NotificationStatusName(c.Muted),
	}
	if c.LastMessage != nil {
		w := proto.FromMessage(c.LastMessage, s.user, false)
		pc.LastMessage = &w
	}
	return pc
}

// formatConvCursor writes the position after c as the reply's next:
// "<last message ID>:<conv_type>:<conv_id>", opaque to clients.
func formatConvCursor(c herald.Conversation) string {
	cur := store.CursorOf(c)
	return strconv.FormatInt(cur.LastID, 10) + ":" + proto.ConvTypeName(c.Type) + ":" + c.ID
}

// parseConvCursor reads a request's after, for user's list.
func parseConvCursor(user, s string) (store.ConversationCursor, error) {
	bad := func() (store.ConversationCursor, error) {
		return store.ConversationCursor{}, herald.Errorf(herald.CodeInvalidArgument, "after %q is malformed; pass the next of a conversations reply", s)
	}
	id, rest, ok := strings.Cut(s, ":")
	typ, conv, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return bad()
	}
	lastID, err := strconv.ParseInt(id, 10, 64)
	if err != nil || lastID < 0 {
		return bad()
	}
	ct, err := proto.ParseConvType(typ)
	if err != nil {
		return bad()
	}
	key, err := chat.ConversationKey(user, ct, conv)
	if err != nil {
		return bad()
	}
	return store.ConversationCursor{LastID: lastID, Key: key}, nil
}

// pushOp runs the push registration operations, always for the session's
// own user and device, and sets the notification status of the user's own
// conversations (the key is built from the session's user, so no one can
// mute another user's conversation).
func (s *session) pushOp(ctx context.Context, f proto.Frame) {
	p := s.g.cfg.Push
	if p == nil {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	// Each of these but push_devices and push_rule is a durable write:
	// they share the session's send budget, so no client can flood the
	// store with them.
	if f.Op != proto.OpPushDevices && f.Op != proto.OpPushRule && !s.allowSend() {
		s.g.stats.sendsLimited.Add(1)
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeRateLimited, "more than %d sends and push settings per second", s.g.cfg.SendsPerSecond))
		return
	}
	switch f.Op {
	case proto.OpRegisterPush:
		var req proto.RegisterPushRequest
		if !s.decode(f, &req) {
			return
		}
		d, err := p.Register(ctx, s.user, s.device, herald.PushProvider(req.Provider), req.Token, req.App, herald.PushEnvironment(req.Environment))
		if err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		s.reply(f.ID, proto.RegisterPushReply{PushID: d.PushID})
	case proto.OpSetConversationNotification:
		var req proto.SetConversationNotificationRequest
		if !s.decode(f, &req) {
			return
		}
		if err := s.setNotification(ctx, p, &req); err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		s.reply(f.ID, struct{}{})
	case proto.OpUnregisterPush:
		var req proto.UnregisterPushRequest
		if !s.decode(f, &req) {
			return
		}
		if err := p.Unregister(ctx, s.user, req.PushID); err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		s.reply(f.ID, struct{}{})
	case proto.OpSetPushRule:
		var req herald.PushRule
		if !s.decode(f, &req) {
			return
		}
		r, err := p.SetRule(ctx, s.user, req)
		if err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		s.reply(f.ID, r)
	case proto.OpPushRule:
		s.reply(f.ID, p.Rule(s.user))
	case proto.OpSetBadge:
		var req proto.SetBadgeRequest
		if !s.decode(f, &req) {
			return
		}
		if req.Badge == nil {
			s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "badge is missing"))
			return
		}
		if err := p.SetBadge(s.user, s.device, *req.Badge); err != nil {
			s.fail(f.ID, f.Op, err)
			return
		}
		s.reply(f.ID, struct{}{})
	case proto.OpPushDevices:
		devs := p.Devices(s.user)
		out := proto.PushDevicesReply{Devices: make([]proto.PushDevice, 0, len(devs))}
		for _, d := range devs {
			out.Devices = append(out.Devices, proto.PushDevice{
				PushID: d.PushID, Provider: string(d.Provider), App: d.App, Environment: string(d.Env),
				DeviceID: d.Device, RegisteredAt: proto.Millis(d.RegisteredAt),
			})
		}
		s.reply(f.ID, out)
	}
}

// setNotification mutes or unmutes one of the session user's
// conversations.
func (s *session) setNotification(ctx context.Context, p Push, req *proto.SetConversationNotificationRequest) error {
	ct, err := proto.ParseConvType(req.ConvType)
	if err != nil {
		return err
	}
	key, err := chat.ConversationKey(s.user, ct, req.ConvID)
	if err != nil {
		return err
	}
	muted, err := proto.ParseNotificationStatus(req.Status)
	if err != nil {
		return err
	}
	if ct == herald.ConversationGroup {
		if _, err := s.g.chat.GroupInfo(ctx, s.user, req.ConvID); err != nil {
			return err // only a member sets a group's status
		}
	}
	return p.SetMuted(ctx, s.user, key, muted)
}
