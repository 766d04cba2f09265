package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald/proto"
)

// closeFrameTimeout bounds the write of our close frame: a dead peer must not
// hold up Logout or Close.
const closeFrameTimeout = time.Second

// errClientClosed is the cause of a connection the SDK closed itself.
var errClientClosed = errors.New("closed by the client")

// conn is one WebSocket connection. Its reader goroutine routes replies to
// the requests waiting for them and queues events for the session goroutine,
// never blocking on either, so that a session goroutine waiting for a reply
// (a gap fill) cannot stall it. Writes from any goroutine are serialized by wmu.
type conn struct {
	log   *slog.Logger
	codec proto.Codec
	nc    net.Conn
	src   io.Reader // buffered nc

	// readTimeout is how long the reader waits for any frame before it
	// declares the connection dead: the heartbeat timeout once logged in.
	readTimeout  atomic.Int64 // nanoseconds
	writeTimeout time.Duration

	wmu sync.Mutex
	bw  *bufio.Writer

	mu      sync.Mutex
	pending map[uint64]*call
	events  []proto.Frame
	err     error // why the connection ended; set once, with done closed
	// unconfirmed are the acks written on the connection that the server
	// may not have read: a reply to a request written after them shows it
	// read them (it handles a connection's frames in order). ackBase counts
	// those dropped from its front, so ackBase+len(unconfirmed) counts every
	// ack written.
	unconfirmed []proto.AckRequest
	ackBase     uint64

	queued chan struct{} // capacity 1: events were queued
	done   chan struct{}
}

// call is a request waiting for its reply.
type call struct {
	op   string
	resp any    // decoded from the reply's data by the reader; nil to ignore it
	hook func() // run by the reader after decoding, before later frames are read
	ch   chan error
	// acks counts the acks written on the connection before this request
	// (conn.ackBase+len(conn.unconfirmed) when it was registered): its
	// reply confirms them.
	acks uint64
}

func dial(ctx context.Context, url string, timeout time.Duration) (net.Conn, io.Reader, error) {
	d := ws.Dialer{Timeout: timeout, Protocols: []string{proto.Subprotocol}}
	nc, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", url, err)
	}
	if hs.Protocol != proto.Subprotocol {
		nc.Close()
		return nil, nil, fmt.Errorf("dial %s: server did not accept subprotocol %q", url, proto.Subprotocol)
	}
	if br != nil {
		// The server wrote frames right after the handshake; br holds them
		// and reads on from nc.
		return nc, br, nil
	}
	return nc, bufio.NewReader(nc), nil
}

func newConn(log *slog.Logger, codec proto.Codec, nc net.Conn, src io.Reader, readTimeout, writeTimeout time.Duration) *conn {
	cn := &conn{
		log:          log,
		codec:        codec,
		nc:           nc,
		src:          src,
		writeTimeout: writeTimeout,
		bw:           bufio.NewWriter(nc),
		pending:      make(map[uint64]*call),
		queued:       make(chan struct{}, 1),
		done:         make(chan struct{}),
	}
	cn.readTimeout.Store(int64(readTimeout))
	return cn
}

// readLoop reads frames until the connection fails.
func (cn *conn) readLoop() {
	rd := &wsutil.Reader{Source: cn.src, State: ws.StateClientSide, CheckUTF8: true}
	rd.OnIntermediate = cn.control
	for {
		timeout := time.Duration(cn.readTimeout.Load())
		_ = cn.nc.SetReadDeadline(time.Now().Add(timeout))
		hdr, err := rd.NextFrame()
		if err != nil {
			cn.fail(readError(err, timeout))
			return
		}
		if hdr.OpCode.IsControl() {
			if err := cn.control(hdr, rd); err != nil {
				cn.fail(readError(err, timeout))
				return
			}
			continue
		}
		if hdr.OpCode != ws.OpText {
			cn.log.Warn("ignoring a binary frame: the JSON protocol uses text frames")
			if err := rd.Discard(); err != nil {
				cn.fail(readError(err, timeout))
				return
			}
			continue
		}
		payload, err := io.ReadAll(rd)
		if err != nil {
			cn.fail(readError(err, timeout))
			return
		}
		f, err := cn.codec.DecodeFrame(payload)
		if err != nil {
			cn.log.Warn("ignoring a frame that does not decode", "err", err)
			continue
		}
		cn.route(f)
	}
}

// readError names why reading failed.
func readError(err error, timeout time.Duration) error {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("no frame from the server for %s (heartbeat timeout): %w", timeout, err)
	}
	return fmt.Errorf("read: %w", err)
}

// control answers a control frame (ping, close) and turns a close into a
// *CloseError. The answer is built in memory and written in one piece, so it
// cannot interleave with another goroutine's frame.
func (cn *conn) control(hdr ws.Header, r io.Reader) error {
	var out bytes.Buffer
	err := wsutil.ControlFrameHandler(&out, ws.StateClientSide)(hdr, r)
	if out.Len() > 0 {
		_ = cn.writeRaw(out.Bytes(), cn.writeTimeout)
	}
	var closed wsutil.ClosedError
	if errors.As(err, &closed) {
		return &CloseError{Code: int(closed.Code), Reason: closed.Reason}
	}
	return err
}

// route hands f to the request waiting for it or queues it as an event.
func (cn *conn) route(f proto.Frame) {
	if f.Ev != "" {
		cn.mu.Lock()
		cn.events = append(cn.events, f)
		cn.mu.Unlock()
		select {
		case cn.queued <- struct{}{}:
		default:
		}
		return
	}
	if f.ID == 0 {
		cn.log.Warn("ignoring a frame with neither event nor request id", "op", f.Op)
		return
	}
	cn.mu.Lock()
	cl := cn.pending[f.ID]
	delete(cn.pending, f.ID)
	if cl != nil && cl.acks > cn.ackBase {
		n := cl.acks - cn.ackBase
		clear(cn.unconfirmed[:n])
		cn.unconfirmed = cn.unconfirmed[n:]
		cn.ackBase = cl.acks
	}
	cn.mu.Unlock()
	if cl == nil {
		cn.log.Debug("reply to no waiting request", "id", f.ID)
		return
	}
	var err error
	switch {
	case f.Err != nil:
		err = wireError(cl.op, f.Err)
	case cl.resp != nil:
		if err = cn.codec.Unmarshal(f.Data, cl.resp); err != nil {
			err = fmt.Errorf("client: %s: reply: %w", cl.op, err)
		} else if cl.hook != nil {
			cl.hook()
		}
	}
	cl.ch <- err
}

// takeEvents returns and clears the queued events.
func (cn *conn) takeEvents() []proto.Frame {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	evs := cn.events
	cn.events = nil
	return evs
}

// roundTrip sends request op with id and waits for its reply, decoded into
// resp. A *connLostError means the connection ended first.
func (cn *conn) roundTrip(ctx context.Context, id uint64, op string, req, resp any, hook func()) error {
	return cn.roundTripThen(ctx, id, op, req, resp, hook, nil)
}

// roundTripThen is roundTrip calling written, if not nil, once the request
// is written (before its reply is awaited).
func (cn *conn) roundTripThen(ctx context.Context, id uint64, op string, req, resp any, hook, written func()) error {
	data, err := cn.codec.Marshal(req)
	if err != nil {
		return fmt.Errorf("client: %s: %w", op, err)
	}
	cl := &call{op: op, resp: resp, hook: hook, ch: make(chan error, 1)}
	cn.mu.Lock()
	if cn.err != nil {
		cause := cn.err
		cn.mu.Unlock()
		return &connLostError{cause}
	}
	cl.acks = cn.ackBase + uint64(len(cn.unconfirmed))
	cn.pending[id] = cl
	cn.mu.Unlock()
	if err := cn.write(&proto.Frame{ID: id, Op: op, Data: data}); err != nil {
		cn.forget(id)
		return &connLostError{err}
	}
	if written != nil {
		written()
	}
	select {
	case err := <-cl.ch:
		return err
	case <-cn.done:
		select {
		case err := <-cl.ch: // the reply came just before the end
			return err
		default:
		}
		return &connLostError{cn.cause()}
	case <-ctx.Done():
		cn.forget(id)
		return ctx.Err()
	}
}

// send writes a request that wants no reply (ID 0).
func (cn *conn) send(op string, req any) error {
	data, err := cn.codec.Marshal(req)
	if err != nil {
		return err
	}
	return cn.write(&proto.Frame{Op: op, Data: data})
}

// ping sends a heartbeat with id. Its reply is dropped on arrival; arriving
// at all is its purpose (it keeps the read deadline moving).
func (cn *conn) ping(id uint64) error {
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return cn.err
	}
	cn.pending[id] = &call{op: proto.OpPing, ch: make(chan error, 1), acks: cn.ackBase + uint64(len(cn.unconfirmed))}
	cn.mu.Unlock()
	data, _ := cn.codec.Marshal(struct{}{})
	return cn.write(&proto.Frame{ID: id, Op: proto.OpPing, Data: data})
}

// wroteAck records that a was written on cn; it stays unconfirmed until
// the reply to a request written after it.
func (cn *conn) wroteAck(a proto.AckRequest) {
	cn.mu.Lock()
	cn.unconfirmed = append(cn.unconfirmed, a)
	cn.mu.Unlock()
}

// unconfirmedAcks returns the acks written on cn that no reply confirmed.
func (cn *conn) unconfirmedAcks() []proto.AckRequest {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return append([]proto.AckRequest(nil), cn.unconfirmed...)
}

func (cn *conn) forget(id uint64) {
	cn.mu.Lock()
	delete(cn.pending, id)
	cn.mu.Unlock()
}

func (cn *conn) write(f *proto.Frame) error {
	b, err := cn.codec.EncodeFrame(nil, f)
	if err != nil {
		return err
	}
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.nc.SetWriteDeadline(time.Now().Add(cn.writeTimeout))
	err = wsutil.WriteClientMessage(cn.bw, ws.OpText, b)
	if err == nil {
		err = cn.bw.Flush()
	}
	if err != nil {
		err = fmt.Errorf("write: %w", err)
		cn.fail(err)
	}
	return err
}

// writeRaw writes bytes that already form whole frames.
func (cn *conn) writeRaw(p []byte, timeout time.Duration) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := cn.bw.Write(p)
	if err == nil {
		err = cn.bw.Flush()
	}
	return err
}

// fail ends the connection with cause, once.
func (cn *conn) fail(cause error) {
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return
	}
	cn.err = cause
	cn.mu.Unlock()
	close(cn.done)
	cn.nc.Close()
}

// close sends a close frame with code when no write is in progress, then
// ends the connection.
func (cn *conn) close(code ws.StatusCode) {
	if cn.isDone() {
		return
	}
	if cn.wmu.TryLock() {
		_ = cn.nc.SetWriteDeadline(time.Now().Add(closeFrameTimeout))
		if wsutil.WriteClientMessage(cn.bw, ws.OpClose, ws.NewCloseFrameBody(code, "")) == nil {
			_ = cn.bw.Flush()
		}
		cn.wmu.Unlock()
	}
	cn.fail(errClientClosed)
}

func (cn *conn) isDone() bool {
	select {
	case <-cn.done:
		return true
	default:
		return false
	}
}

func (cn *conn) cause() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.err
}
