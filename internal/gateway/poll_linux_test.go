//go:build linux

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"

	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// loginOver logs user in (device "d") over a real socket and waits for
// the end of its sync.
func loginOver(t *testing.T, url, user string) *wsClient {
	t.Helper()
	c := dialWS(t, url)
	tok, _ := token.Mint([]byte("0123456789abcdef"), user, time.Now(), time.Hour)
	c.call(1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: user, Token: tok, DeviceID: "d"})
	c.waitEvent(proto.EvSyncDone)
	return c
}

// ownedSession logs user in over a real socket on the epoll driver and
// waits until the session owns its descriptor (its net.Conn closed).
func ownedSession(t *testing.T, g *Gateway, url, user string) (*wsClient, *session) {
	t.Helper()
	c := loginOver(t, url, user)
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

	// The sizes of the frames queued at once: 192 KiB, far more than the
	// socket buffers hold, in more frames than one writev takes (copied
	// into one buffer); and at most maxVecFrames, of each header length,
	// written in place by one writev that the full socket cuts mid-frame.
	for _, tc := range []struct {
		name  string
		sizes []int
	}{
		{"full socket", slices.Repeat([]int{8 << 10}, 24)},
		{"full socket, frames written in place", []int{100, 8 << 10, 70000, 0, 30000, 125, 126, 65536}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, url := start(t, time.Minute)
			c, s := ownedSession(t, g, url, "alice")
			defer c.conn.Close()
			s.mu.Lock()
			for i, size := range tc.sizes {
				s.enqueueLocked(ws.OpText, bytes.Repeat([]byte{byte('a' + i%26)}, size))
			}
			s.mu.Unlock()
			waitFor(t, "the writer waiting for the full socket", func() bool {
				g.poller.mu.Lock()
				defer g.poller.mu.Unlock()
				return g.poller.waits[uint64(s.id)] != nil
			})
			c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for i, size := range tc.sizes {
				b, err := wsutil.ReadServerText(c.conn)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if want := bytes.Repeat([]byte{byte('a' + i%26)}, size); !bytes.Equal(b, want) {
					t.Fatalf("frame %d: got %d bytes starting %q, want %d of %q", i, len(b), b[:min(len(b), 8)], size, byte('a'+i%26))
				}
			}
			if f := c.call(2, proto.OpPing, struct{}{}); f.Err != nil {
				t.Errorf("ping after the stalled write: %v", f.Err)
			}
		})
	}

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

// startEpoll starts a gateway on the epoll driver behind a test server;
// before runs first, before any connection. The caller shuts it down.
func startEpoll(t *testing.T, writeTimeout time.Duration, before func(*Gateway)) (*Gateway, string) {
	t.Helper()
	st := &ackStore{cursors: map[string]map[string]int64{}, synced: map[string]map[string]int64{}}
	g := New(st, Config{Secret: []byte("0123456789abcdef"), WriteTimeout: writeTimeout, HeartbeatTimeout: time.Hour})
	if g.ReadDriver() != "epoll" {
		g.Shutdown(context.Background())
		t.Skip("epoll unavailable")
	}
	if before != nil {
		before(g)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, "ws" + strings.TrimPrefix(srv.URL, "http")
}

// stalledWriter fills s's queue far beyond what a client that reads
// nothing takes, and waits until the writer waits for the full socket.
func stalledWriter(t *testing.T, g *Gateway, s *session) {
	t.Helper()
	fillQueue(s, 64, 8<<10)
	waitFor(t, "the writer waiting for the full socket", func() bool {
		g.poller.mu.Lock()
		defer g.poller.mu.Unlock()
		return g.poller.waits[uint64(s.id)] != nil
	})
}

// writerEnds fails the test unless s's writer ends within d.
func writerEnds(t *testing.T, s *session, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { s.waitWriter(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("the writer still runs %v after its descriptor was closed", d)
	}
}

// fdOpen reports whether fd is still the file st describes.
func fdOpen(fd int, st unix.Stat_t) bool {
	var now unix.Stat_t
	return unix.Fstat(fd, &now) == nil && now.Ino == st.Ino && now.Dev == st.Dev
}

// TestOwnedDescriptorClose (review M1, L4): closing an owned descriptor
// wakes a writer waiting for EPOLLOUT at once (the kernel drops the
// registration without an event), whether the session closes it or the
// poller shuts down; a read holding a reference defers the close to its
// release.
func TestOwnedDescriptorClose(t *testing.T) {
	t.Run("session close", func(t *testing.T) {
		g, url := startEpoll(t, time.Minute, nil)
		defer func() { // bounded: a writer left stalled would hold Shutdown for the write timeout
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			g.Shutdown(ctx)
		}()
		c, s := ownedSession(t, g, url, "alice")
		defer c.conn.Close()
		stalledWriter(t, g, s)
		s.mu.Lock()
		s.closeConnLocked()
		s.mu.Unlock()
		writerEnds(t, s, 5*time.Second) // the write timeout is a minute
	})

	t.Run("shutdown", func(t *testing.T) {
		g, url := startEpoll(t, time.Minute, nil)
		c, s := ownedSession(t, g, url, "bob")
		defer c.conn.Close()
		stalledWriter(t, g, s)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		g.Shutdown(ctx) // the stalled session outlives ctx; the poller closes
		writerEnds(t, s, 5*time.Second)
	})

	t.Run("read in progress", func(t *testing.T) {
		g, url := startEpoll(t, time.Minute, nil)
		defer g.Shutdown(context.Background())
		c, s := ownedSession(t, g, url, "carol")
		defer c.conn.Close()
		s.mu.Lock()
		fd := int(s.poll.fd)
		s.mu.Unlock()
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatalf("fstat of the owned descriptor: %v", err)
		}
		if !s.poll.acquire() { // as read does around read(2)
			t.Fatal("no reference on a live session's descriptor")
		}
		s.mu.Lock()
		s.closeConnLocked()
		s.mu.Unlock()
		if !fdOpen(fd, st) {
			t.Fatal("the descriptor was closed under a read holding it")
		}
		if s.poll.acquire() {
			t.Error("a new operation started on a closing descriptor")
		}
		s.poll.release()
		// The session's own reader or writer may hold a reference of its
		// own at this moment (seen under load): the last to release closes.
		for deadline := time.Now().Add(5 * time.Second); fdOpen(fd, st); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the descriptor is still open after the last reference went")
			}
		}
		s.teardown() // as the reader would on the closed descriptor
	})
}

// TestOwnAtRearm (review L4): with the writer idle, the reader's re-arm
// takes the descriptor over itself (rearmLocked, not the writer's
// handoff), and the session goes on over it.
func TestOwnAtRearm(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	g, url := startEpoll(t, time.Minute, func(g *Gateway) {
		dup := g.poller.dup
		g.poller.dup = func(fd uintptr) (int, error) {
			if fail.Load() {
				return -1, unix.EMFILE
			}
			return dup(fd)
		}
	})
	defer g.Shutdown(context.Background())
	c, s := keptSession(t, g, url, "alice")
	defer c.conn.Close()
	s.waitWriter() // idle
	fail.Store(false)
	s.mu.Lock()
	s.poll.keep = false // as if the first try had not failed
	if s.writing {
		s.mu.Unlock()
		t.Fatal("the writer runs")
	}
	err := g.poller.rearmLocked(s)
	own, conn, handoff := s.poll.own, s.conn, s.poll.handoff
	s.mu.Unlock()
	if err != nil || !own || conn != nil || handoff {
		t.Fatalf("rearm with an idle writer: err %v, own %v, net.Conn %v, handoff %v; want the descriptor taken over", err, own, conn, handoff)
	}
	for i := range 3 {
		if f := c.call(uint64(10+i), proto.OpPing, struct{}{}); f.Err != nil {
			t.Fatalf("ping %d over the owned descriptor: %v", i, f.Err)
		}
	}
}

// keptSession logs user in and waits until its failed takeover is
// counted: the session keeps its net.Conn.
func keptSession(t *testing.T, g *Gateway, url, user string) (*wsClient, *session) {
	t.Helper()
	c := loginOver(t, url, user)
	waitFor(t, "the failed takeover counted", func() bool { return g.Stats().DescriptorsKept == 1 })
	var found *session
	g.connsMu.Lock()
	for s := range g.conns {
		if s.user == user {
			found = s
		}
	}
	g.connsMu.Unlock()
	return c, found
}

// TestDescriptorKept (review M2): when the descriptor cannot be
// duplicated (EMFILE), the session keeps its net.Conn, is counted once,
// and later reads do not try again.
func TestDescriptorKept(t *testing.T) {
	var calls atomic.Int32
	g, url := startEpoll(t, time.Minute, func(g *Gateway) {
		g.poller.dup = func(uintptr) (int, error) { calls.Add(1); return -1, unix.EMFILE }
	})
	defer g.Shutdown(context.Background())
	c, s := keptSession(t, g, url, "alice")
	defer c.conn.Close()
	for i := range 5 {
		if f := c.call(uint64(10+i), proto.OpPing, struct{}{}); f.Err != nil {
			t.Fatalf("ping %d over the kept net.Conn: %v", i, f.Err)
		}
	}
	s.mu.Lock()
	own, conn := s.poll.own, s.conn
	s.mu.Unlock()
	if own || conn == nil {
		t.Errorf("own %v, net.Conn %v: want the net.Conn kept", own, conn)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d duplications tried over 6 read rounds, want 1", n)
	}
	if n := g.Stats().DescriptorsKept; n != 1 {
		t.Errorf("DescriptorsKept = %d, want 1", n)
	}
}

// TestShutdownEndsPollerGoroutines (review L4): after Shutdown, with
// sessions that owned their descriptors, no goroutine of the gateway is
// left (the read loop, waitLoop, writers).
func TestShutdownEndsPollerGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	st := &ackStore{cursors: map[string]map[string]int64{}, synced: map[string]map[string]int64{}}
	g := New(st, Config{Secret: []byte("0123456789abcdef"), HeartbeatTimeout: time.Hour})
	if g.ReadDriver() != "epoll" {
		g.Shutdown(context.Background())
		t.Skip("epoll unavailable")
	}
	srv := httptest.NewServer(g)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	for _, u := range []string{"alice", "bob", "carol"} {
		c, _ := ownedSession(t, g, url, u)
		defer c.conn.Close()
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	srv.Close()
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Shutdown, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReadPastFirstBuffer: requests that arrive together, more bytes than
// the first read's buffer (smallReadBytes), are all read and answered in
// order, the frame cut by the end of the first read completed from the
// next. (Which buffer the rest is read into is not observed here.)
func TestReadPastFirstBuffer(t *testing.T) {
	st := &ackStore{cursors: map[string]map[string]int64{}, synced: map[string]map[string]int64{}}
	g := New(st, Config{Secret: []byte("0123456789abcdef"), HeartbeatTimeout: time.Hour})
	t.Cleanup(func() { g.Shutdown(context.Background()) })
	if g.ReadDriver() != "epoll" {
		t.Skip("epoll unavailable")
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	c, _ := ownedSession(t, g, "ws"+strings.TrimPrefix(srv.URL, "http"), "carol")
	defer c.conn.Close()

	const first, n = 100, 150
	var batch []byte
	for id := uint64(first); id < first+n; id++ {
		f, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: id, Op: proto.OpPing, Data: []byte("{}")})
		batch = append(batch, clientFrame(ws.OpText, true, f)...)
	}
	if len(batch) <= 2*smallReadBytes {
		t.Fatalf("the batch is %d bytes, want more than two first reads (%d)", len(batch), 2*smallReadBytes)
	}
	if _, err := c.conn.Write(batch); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for want := uint64(first); want < first+n; {
		b, err := wsutil.ReadServerText(c.conn)
		if err != nil {
			t.Fatalf("waiting for the reply to %d: %v", want, err)
		}
		f, err := proto.JSON.DecodeFrame(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if f.ID == 0 {
			continue // an event
		}
		if f.ID != want || f.Err != nil {
			t.Fatalf("got reply %d (error %v), want %d", f.ID, f.Err, want)
		}
		want++
	}
}

// TestArrivalAfterShortRead: a reader stops at a read that does not fill
// its buffer, without reading again for EAGAIN; a request that reaches
// the socket after that read and before the re-arm is still read and
// answered (the re-arm, level triggered, reports it). Before login the
// re-arm is also where the descriptor is taken over (ownLocked): the
// duplicate's registration must report it too.
func TestArrivalAfterShortRead(t *testing.T) {
	ping := func(id uint64) []byte {
		f, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: id, Op: proto.OpPing, Data: []byte("{}")})
		return clientFrame(ws.OpText, true, f)
	}
	for _, tc := range []struct {
		name  string
		login bool // the short read is the login's, on the net.Conn's descriptor
	}{
		{"owned descriptor", false},
		{"login on the net.Conn", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var client atomic.Pointer[net.Conn] // set: the next short read sends it ping 2
			var hooked atomic.Int32
			var hookErr atomic.Value
			g, url := startEpoll(t, time.Minute, func(g *Gateway) {
				g.poller.shortRead = func(s *session) {
					cp := client.Swap(nil)
					if cp == nil {
						return
					}
					hooked.Add(1)
					if _, err := (*cp).Write(ping(2)); err != nil {
						hookErr.Store(err)
						return
					}
					// Wait until the bytes are in the server's socket, so
					// that they arrive before the re-arm.
					s.mu.Lock()
					own, fd, raw := s.poll.own, int(s.poll.fd), s.poll.raw
					s.mu.Unlock()
					queued := func() (n int) {
						if own {
							n, _ = unix.IoctlGetInt(fd, unix.SIOCINQ)
							return n
						}
						raw.Control(func(f uintptr) { n, _ = unix.IoctlGetInt(int(f), unix.SIOCINQ) })
						return n
					}
					for deadline := time.Now().Add(10 * time.Second); queued() == 0; time.Sleep(time.Millisecond) {
						if time.Now().After(deadline) {
							hookErr.Store(io.ErrNoProgress)
							return
						}
					}
				}
			})
			defer g.Shutdown(context.Background())

			var c *wsClient
			first := ping(1)
			if tc.login {
				c = dialWS(t, url)
				tok, _ := token.Mint([]byte("0123456789abcdef"), "alice", time.Now(), time.Hour)
				data, _ := json.Marshal(proto.LoginRequest{Version: proto.Version, UserID: "alice", Token: tok, DeviceID: "d"})
				f, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: 1, Op: proto.OpLogin, Data: data})
				first = clientFrame(ws.OpText, true, f)
			} else {
				c, _ = ownedSession(t, g, url, "alice")
			}
			defer c.conn.Close()
			client.Store(&c.conn)
			if _, err := c.conn.Write(first); err != nil {
				t.Fatalf("write: %v", err)
			}
			c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for got := map[uint64]bool{}; !got[1] || !got[2]; {
				b, err := wsutil.ReadServerText(c.conn)
				if err != nil {
					t.Fatalf("replies so far %v, hook ran %d times (error %v): %v", got, hooked.Load(), hookErr.Load(), err)
				}
				f, err := proto.JSON.DecodeFrame(b)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if f.ID != 0 {
					if f.Err != nil {
						t.Fatalf("reply %d: %v", f.ID, f.Err)
					}
					got[f.ID] = true
				}
			}
			if n := hooked.Load(); n != 1 {
				t.Errorf("the short-read hook sent ping 2 %d times, want 1", n)
			}
			if err := hookErr.Load(); err != nil {
				t.Errorf("hook: %v", err)
			}
		})
	}
}

// BenchmarkPingPong is one request at a time on a logged-in session of
// the epoll driver, over loopback: each request is a readiness event of
// its own, so the system calls per op (perf stat -e 'syscalls:sys_enter_*'
// on the test binary) are the reader's per event, plus the client's.
func BenchmarkPingPong(b *testing.B) {
	st := &ackStore{cursors: map[string]map[string]int64{}, synced: map[string]map[string]int64{}}
	g := New(st, Config{Secret: []byte("0123456789abcdef"), HeartbeatTimeout: time.Hour})
	defer g.Shutdown(context.Background())
	if g.ReadDriver() != "epoll" {
		b.Skip("epoll unavailable")
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	d := ws.Dialer{Protocols: []string{proto.Subprotocol}, Timeout: 5 * time.Second}
	conn, _, _, err := d.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"))
	if err != nil {
		b.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	call := func(id uint64, op string, data []byte) {
		f, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: id, Op: op, Data: data})
		if _, err := conn.Write(clientFrame(ws.OpText, true, f)); err != nil { // one write a frame, as the SDK and bench peer send
			b.Fatalf("write: %v", err)
		}
		for {
			m, err := wsutil.ReadServerText(conn)
			if err != nil {
				b.Fatalf("read: %v", err)
			}
			if r, err := proto.JSON.DecodeFrame(m); err == nil && r.ID == id {
				if r.Err != nil {
					b.Fatalf("%s: %v", op, r.Err)
				}
				return
			}
		}
	}
	tok, _ := token.Mint([]byte("0123456789abcdef"), "alice", time.Now(), time.Hour)
	login, _ := json.Marshal(proto.LoginRequest{Version: proto.Version, UserID: "alice", Token: tok, DeviceID: "d"})
	call(1, proto.OpLogin, login)
	id := uint64(2)
	for ; id < 100; id++ { // past the takeover of the descriptor
		call(id, proto.OpPing, []byte("{}"))
	}
	for b.Loop() {
		call(id, proto.OpPing, []byte("{}"))
		id++
	}
}
