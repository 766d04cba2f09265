package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald/proto"
)

// client is a lean protocol client: one connection, a reader goroutine that
// hands every frame to onFrame, and a mutex-guarded writer. The bench uses it
// rather than the SDK so the load generator spends little of the CPU it
// shares with the server.
type client struct {
	conn   net.Conn
	br     *bufio.Reader
	wmu    sync.Mutex
	wbuf   []byte // a request's WebSocket frame, as written
	pbuf   []byte // a request's payload (request)
	nextID uint64
	// wdeadline is the connection's write deadline, as last set.
	// Guarded by wmu.
	wdeadline time.Time
	onFrame   func(payload []byte) // a text message as received; valid during the call
}

// dialLogin connects, logs in as user and waits for the end of the sync.
func dialLogin(ctx context.Context, t *Target, user string) (*client, error) {
	c, _, err := loginDevice(ctx, t, user, "")
	return c, err
}

func (c *client) read() (proto.Frame, error) {
	for {
		b, op, err := wsutil.ReadData(rw{c.br, c.conn}, ws.StateClientSide)
		if err != nil {
			return proto.Frame{}, err
		}
		if op == ws.OpText {
			return proto.JSON.DecodeFrame(b)
		}
	}
}

// rw reads through the buffered reader and answers control frames on the conn.
type rw struct {
	r *bufio.Reader
	w net.Conn
}

func (x rw) Read(p []byte) (int, error)  { return x.r.Read(p) }
func (x rw) Write(p []byte) (int, error) { return x.w.Write(p) }

// readLoop hands text messages to onFrame, undecoded, until the
// connection ends: the scenarios look only at the bytes they need.
func (c *client) readLoop() error {
	for {
		b, op, err := wsutil.ReadData(rw{c.br, c.conn}, ws.StateClientSide)
		if err != nil {
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				return fmt.Errorf("server closed the connection: %d %s", ce.Code, ce.Reason)
			}
			return err
		}
		if op == ws.OpText {
			c.onFrame(b)
		}
	}
}

// writeFrames writes several request payloads in one system call.
func (c *client) writeFrames(payloads [][]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	buf := c.wbuf[:0]
	for _, p := range payloads {
		buf = appendClientFrame(buf, p)
	}
	c.wbuf = buf
	c.wdeadline = time.Now().Add(writeTimeout)
	c.conn.SetWriteDeadline(c.wdeadline)
	_, err := c.conn.Write(buf)
	return err
}

// writeTimeout bounds a write the server does not take.
const writeTimeout = 10 * time.Second

// writeWire writes frames already framed (appendClientFrame) in one system
// call, at now. A paced sender writes every few milliseconds: its write
// deadline is moved only when less than half of writeTimeout is left, so
// a write that blocks fails after 5 to 10 s, and most writes do not reset
// the connection's deadline timer.
func (c *client) writeWire(wire []byte, now time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wdeadline.Sub(now) < writeTimeout/2 {
		c.wdeadline = now.Add(writeTimeout)
		c.conn.SetWriteDeadline(c.wdeadline)
	}
	_, err := c.conn.Write(wire)
	return err
}

// writeControl writes a control frame (a pong) holding p.
func (c *client) writeControl(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendClientFrameOp(c.wbuf[:0], op, p)
	c.wdeadline = time.Now().Add(writeTimeout)
	c.conn.SetWriteDeadline(c.wdeadline)
	_, err := c.conn.Write(c.wbuf)
	return err
}

// send writes a request with a fresh ID and returns it.
func (c *client) send(op string, v any) error {
	_, err := c.request(op, v, true)
	return err
}

// request writes op; withID false sends ID 0 (no reply on success).
func (c *client) request(op string, v any, withID bool) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var id uint64
	if withID {
		c.nextID++
		id = c.nextID
	}
	c.pbuf, _ = proto.JSON.EncodeFrame(c.pbuf[:0], &proto.Frame{ID: id, Op: op, Data: data})
	// One write for the header and the payload, as the SDK's buffered
	// writer does: written apart, they went out as two segments, and
	// the server often woke up for each.
	c.wbuf = appendClientFrame(c.wbuf[:0], c.pbuf)
	c.wdeadline = time.Now().Add(writeTimeout)
	c.conn.SetWriteDeadline(c.wdeadline)
	_, err = c.conn.Write(c.wbuf)
	return id, err
}

func (c *client) close() { c.conn.Close() }
