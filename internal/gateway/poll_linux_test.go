//go:build linux

package gateway

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"

	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// ownedSession logs user in over a real socket on the epoll driver and
// waits until the session owns its descriptor (its net.Conn closed).
func ownedSession(t *testing.T, g *Gateway, url, user string) (*wsClient, *session) {
	t.Helper()
	c := dialWS(t, url)
	tok, _ := token.Mint([]byte("0123456789abcdef"), user, time.Now(), time.Hour)
	c.call(1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: user, Token: tok, DeviceID: "d"})
	c.waitEvent(proto.EvSyncDone)
	var found *session
	waitFor(t, user+"'s session owning its descriptor", func() bool {
		g.connsMu.Lock()
		for s := range g.conns {
			if s.loggedIn.Load() && s.user == user {
				found = s
			}
		}
		g.connsMu.Unlock()
		if found == nil {
			return false
		}
		found.mu.Lock()
		defer found.mu.Unlock()
		return found.poll.own && found.conn == nil
	})
	// Small socket buffers on both sides, so a few frames fill them.
	found.mu.Lock()
	unix.SetsockoptInt(int(found.poll.fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	found.mu.Unlock()
	c.conn.(*net.TCPConn).SetReadBuffer(4096)
	return c, found
}

// fillQueue queues n frames of size bytes each on s, frame i filled with
// the byte 'a'+i%26.
func fillQueue(s *session, n, size int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < n; i++ {
		s.enqueueLocked(ws.OpText, bytes.Repeat([]byte{byte('a' + i%26)}, size))
	}
}

// TestOwnedDescriptor: once logged in, a session on the epoll driver reads
// and writes its own descriptor. A write that fills the socket's buffer
// waits for the client to read (EPOLLOUT) and goes on, whole and in order;
// one the client never reads ends at the write timeout; the closing
// handshake still delivers the close code; the descriptor is closed when
// the session ends.
func TestOwnedDescriptor(t *testing.T) {
	start := func(t *testing.T, writeTimeout time.Duration) (*Gateway, string) {
		st := &ackStore{cursors: map[string]map[string]int64{}, synced: map[string]map[string]int64{}}
		g := New(st, Config{Secret: []byte("0123456789abcdef"), WriteTimeout: writeTimeout, HeartbeatTimeout: time.Hour})
		t.Cleanup(func() { g.Shutdown(context.Background()) })
		if g.ReadDriver() != "epoll" {
			t.Skip("epoll unavailable")
		}
		srv := httptest.NewServer(g)
		t.Cleanup(srv.Close)
		return g, "ws" + strings.TrimPrefix(srv.URL, "http")
	}

	t.Run("full socket", func(t *testing.T) {
		g, url := start(t, time.Minute)
		c, s := ownedSession(t, g, url, "alice")
		defer c.conn.Close()
		// 192 KiB, far more than the socket buffers hold.
		const n, size = 24, 8 << 10
		fillQueue(s, n, size)
		waitFor(t, "the writer waiting for the full socket", func() bool {
			g.poller.mu.Lock()
			defer g.poller.mu.Unlock()
			return g.poller.waits[uint64(s.id)] != nil
		})
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i := 0; i < n; i++ {
			b, err := wsutil.ReadServerText(c.conn)
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if want := bytes.Repeat([]byte{byte('a' + i%26)}, size); !bytes.Equal(b, want) {
				t.Fatalf("frame %d: got %d bytes starting %q, want %d of %q", i, len(b), b[:min(len(b), 8)], size, want[0])
			}
		}
		if f := c.call(2, proto.OpPing, struct{}{}); f.Err != nil {
			t.Errorf("ping after the stalled write: %v", f.Err)
		}
	})

	t.Run("write timeout", func(t *testing.T) {
		g, url := start(t, 300*time.Millisecond)
		c, s := ownedSession(t, g, url, "bob")
		defer c.conn.Close()
		var before unix.Stat_t
		s.mu.Lock()
		fd := int(s.poll.fd)
		s.mu.Unlock()
		if err := unix.Fstat(fd, &before); err != nil {
			t.Fatalf("fstat of the owned descriptor: %v", err)
		}
		fillQueue(s, 64, 8<<10)
		waitFor(t, "the end of a session whose client reads nothing", func() bool {
			return s.torn.Load() && g.SessionsOf("bob") == 0
		})
		s.waitWriter()
		var after unix.Stat_t
		if err := unix.Fstat(fd, &after); err == nil && after.Ino == before.Ino && after.Dev == before.Dev {
			t.Errorf("descriptor %d of the ended session is still open", fd)
		}
	})

	t.Run("close code", func(t *testing.T) {
		g, url := start(t, time.Minute)
		c, s := ownedSession(t, g, url, "carol")
		defer c.conn.Close()
		start := time.Now()
		s.closeWith(proto.CloseKickedOut, "kicked")
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			h, err := ws.ReadHeader(c.conn)
			if err != nil {
				t.Fatalf("reading for the close frame: %v", err)
			}
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(c.conn, payload); err != nil {
				t.Fatalf("reading a frame: %v", err)
			}
			if h.OpCode != ws.OpClose {
				continue
			}
			code, reason := ws.ParseCloseFrameData(payload)
			if int(code) != proto.CloseKickedOut || reason != "kicked" {
				t.Errorf("close frame = %d %q, want %d %q", code, reason, proto.CloseKickedOut, "kicked")
			}
			break
		}
		// Our close, and our side's end: the server's linger ends when it
		// reads the end, well before closeLinger.
		wsutil.WriteClientMessage(c.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
		c.conn.(*net.TCPConn).CloseWrite()
		waitFor(t, "the session's end after the client's close", func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.closed
		})
		if d := time.Since(start); d >= closeLinger {
			t.Errorf("the session ended %v after the close, want it before closeLinger (%v): the linger missed the client's close", d, closeLinger)
		}
		if _, err := c.conn.Read(make([]byte, 1)); err == nil {
			t.Error("the server did not close the connection after the handshake")
		}
	})
}

// waitFor polls cond until it holds, or fails the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
