package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

var testSecret = []byte("e2e-secret-0123456789abcdef")

// testServer is a running server with its configuration.
type testServer struct {
	*server.Server
	cfg  config.Config
	once sync.Once
}

// startServer runs a server on 127.0.0.1:0 with a temporary data folder;
// mutate adjusts the configuration first. It is shut down when the test ends.
func startServer(t *testing.T, mutate func(*config.Config)) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.PushEmulatorAddr = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	return startServerWith(t, cfg)
}

// forEachReadDriver runs test against both ways of reading sessions.
func forEachReadDriver(t *testing.T, test func(t *testing.T, driver string)) {
	for _, d := range []string{"epoll", "goroutine"} {
		t.Run(d, func(t *testing.T) { test(t, d) })
	}
}

func startServerWith(t *testing.T, cfg config.Config) *testServer {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("HERALD_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := server.New(context.Background(), cfg, testSecret, log)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	ts := &testServer{Server: srv, cfg: cfg}
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop shuts the server down once; later calls do nothing.
func (ts *testServer) stop(t *testing.T) {
	ts.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}

func mint(t *testing.T, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := token.Mint(testSecret, user, time.Now(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawConn is a protocol-level client for tests of what any client sees.
type rawConn struct {
	t      *testing.T
	conn   net.Conn
	nextID uint64
}

func dialRaw(t *testing.T, url string) *rawConn {
	t.Helper()
	d := ws.Dialer{Protocols: []string{proto.Subprotocol}, Timeout: 5 * time.Second}
	conn, _, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn}
}

func (c *rawConn) writeRaw(b []byte) {
	c.t.Helper()
	if err := wsutil.WriteClientText(c.conn, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// request sends op with payload v and returns the frame's ID.
func (c *rawConn) request(op string, v any) uint64 {
	c.t.Helper()
	c.nextID++
	data, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: c.nextID, Op: op, Data: data})
	c.writeRaw(b)
	return c.nextID
}

// closedError is what read returns when the server closed the connection.
type closedError = wsutil.ClosedError

// read returns the next frame, or the server's close as a closedError.
// It answers nothing back, so a close is seen even when the server has
// already dropped the connection.
func (c *rawConn) read(timeout time.Duration) (proto.Frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := ws.ReadFrame(c.conn)
		if err != nil {
			return proto.Frame{}, err
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			return proto.Frame{}, closedError{Code: code, Reason: reason}
		case ws.OpText:
			if !f.Header.Fin {
				return proto.Frame{}, errors.New("test client does not join fragments")
			}
			return proto.JSON.DecodeFrame(f.Payload)
		}
	}
}

// until reads frames until match accepts one; other frames are skipped.
func (c *rawConn) until(match func(proto.Frame) bool) proto.Frame {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if match(f) {
			return f
		}
	}
	c.t.Fatal("no matching frame within 10s")
	return proto.Frame{}
}

// reply waits for the reply to request id.
func (c *rawConn) reply(id uint64) proto.Frame {
	c.t.Helper()
	return c.until(func(f proto.Frame) bool { return f.ID == id })
}

// call sends a request and decodes a successful reply into out.
func (c *rawConn) call(op string, in, out any) {
	c.t.Helper()
	f := c.reply(c.request(op, in))
	if f.Err != nil {
		c.t.Fatalf("%s failed: %s: %s", op, f.Err.Code, f.Err.Message)
	}
	if out != nil {
		if err := json.Unmarshal(f.Data, out); err != nil {
			c.t.Fatalf("%s reply: %v", op, err)
		}
	}
}

// callErr sends a request and returns the error code of its reply ("" on success).
func (c *rawConn) callErr(op string, in any) string {
	c.t.Helper()
	f := c.reply(c.request(op, in))
	if f.Err == nil {
		return ""
	}
	return f.Err.Code
}

// login logs in and waits for sync_done; it returns the messages synced.
func (c *rawConn) login(user, device string) []proto.Message {
	c.t.Helper()
	c.call(proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: user, Token: mint(c.t, user, time.Hour), DeviceID: device}, nil)
	var synced []proto.Message
	for {
		f := c.until(func(f proto.Frame) bool { return f.Ev == proto.EvSync || f.Ev == proto.EvSyncDone })
		if f.Ev == proto.EvSyncDone {
			return synced
		}
		var ev proto.SyncEvent
		json.Unmarshal(f.Data, &ev)
		synced = append(synced, ev.Messages...)
	}
}

// expectClose reads until the server closes and returns its close code.
func (c *rawConn) expectClose() int {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, err := c.read(time.Until(deadline))
		var ce closedError
		if errors.As(err, &ce) {
			return int(ce.Code)
		}
		if errors.Is(err, io.EOF) {
			c.t.Fatal("connection ended without a close frame")
		}
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
	}
	c.t.Fatal("no close within 10s")
	return 0
}

func text(to, localID, body string) proto.SendRequest {
	return proto.SendRequest{ConvType: proto.ConvPeer, To: to, LocalID: localID, Type: "text", Text: body}
}
