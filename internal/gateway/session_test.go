package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// noChat fails the test if the gateway reaches the chat service.
type noChat struct {
	t        *testing.T
	GroupOps // nil: group operations panic
}

func (c noChat) Send(string, chat.SessionID, *herald.Message, func(chat.SendResult, error)) {
	c.t.Error("unexpected Send")
}
func (c noChat) Sync(context.Context, string, string, map[string]int64, func([]*herald.Message) error) (map[string]int64, int, error) {
	c.t.Error("unexpected Sync")
	return nil, 0, nil
}
func (c noChat) History(context.Context, string, herald.ConversationType, string, store.HistoryQuery) ([]*herald.Message, bool, error) {
	c.t.Error("unexpected History")
	return nil, false, nil
}
func (c noChat) Conversations(context.Context, string, *store.ConversationCursor, int) ([]herald.Conversation, error) {
	c.t.Error("unexpected Conversations")
	return nil, nil
}
func (c noChat) MarkRead(context.Context, string, herald.ConversationType, string, int64) error {
	c.t.Error("unexpected MarkRead")
	return nil
}
func (c noChat) SaveCursors(context.Context, []store.DeviceCursors) error { return nil }

// TestLoginAfterEndRegistersNothing: a login whose session ended while the
// login was being checked (login timeout, shutdown) must not leave the
// session in the hub.
func TestLoginAfterEndRegistersNothing(t *testing.T) {
	secret := []byte("0123456789abcdef")
	g := New(noChat{t: t}, Config{Secret: secret, BlockingReads: true})
	defer g.Shutdown(context.Background())
	server, client := net.Pipe()
	defer client.Close()
	go func() { // drain what the session writes
		buf := make([]byte, 4096)
		for {
			if _, err := client.Read(buf); err != nil {
				return
			}
		}
	}()
	s := newSession(g, server)
	s.teardown()
	tok, _ := token.Mint(secret, "bob", time.Now(), time.Hour)
	data, _ := proto.JSON.Marshal(proto.LoginRequest{Version: proto.Version, UserID: "bob", Token: tok, DeviceID: "d"})
	frame, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: 1, Op: proto.OpLogin, Data: data})
	s.handle(frame)
	if n := g.SessionsOf("bob"); n != 0 {
		t.Errorf("bob has %d sessions after a login on an ended session, want 0", n)
	}
	if st := g.Stats(); st.Sessions != 0 || st.Connections != 0 {
		t.Errorf("stats = %+v, want no sessions and no connections", st)
	}
	if at := s.tokenAt.Load(); at != math.MaxInt64 {
		t.Errorf("the token's expiry was scheduled (at %d) on an ended session", at)
	}
}

// TestSweeperStartsWithChat (issue 15 item 23): the sweeper stores acks
// through the Chat, so a gateway made without one starts it only at
// SetChat; SetChat on a gateway that has a Chat (and may be sweeping) is
// refused; a gateway that never got a Chat still shuts down.
func TestSweeperStartsWithChat(t *testing.T) {
	cfg := Config{Secret: []byte("0123456789abcdef"), BlockingReads: true}
	started := func(g *Gateway) bool {
		ran := true
		g.sweepOnce.Do(func() { ran = false; go g.sweepLoop() })
		return ran
	}
	g := New(nil, cfg)
	if started(g) {
		t.Fatal("the sweeper runs before SetChat")
	}
	g.Shutdown(context.Background())

	g = New(nil, cfg)
	g.SetChat(noChat{t: t})
	if !started(g) {
		t.Error("SetChat did not start the sweeper")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a second SetChat was accepted")
			}
		}()
		g.SetChat(noChat{t: t})
	}()
	g.Shutdown(context.Background())

	never := New(nil, cfg)
	done := make(chan struct{})
	go func() { never.Shutdown(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown of a gateway without a Chat hangs")
	}
}

// TestTokenExpiryBySweeper: an idle session holds no timer; the sweeper
// sends token_will_expire once the warning's time has come and closes the
// session at expiry (gateway clock, injected here).
func TestTokenExpiryBySweeper(t *testing.T) {
	secret := []byte("0123456789abcdef")
	start := time.Now().Truncate(time.Second)
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	// A short login timeout makes the sweep frequent (every 20 ms); the
	// heartbeat never times out on the clock's jumps.
	g := New(&ackStore{noChat: noChat{t: t}, cursors: map[string]map[string]int64{}, synced: map[string]map[string]int64{}},
		Config{Secret: secret, BlockingReads: true, LoginTimeout: 80 * time.Millisecond, HeartbeatTimeout: 24 * time.Hour, Now: now})
	srv := httptest.NewServer(g)
	defer srv.Close()
	defer g.Shutdown(context.Background())
	c := dialWS(t, "ws"+strings.TrimPrefix(srv.URL, "http")+proto.Path)
	defer c.conn.Close()
	tok, _ := token.Mint(secret, "alice", start, time.Hour)
	exp := start.Add(time.Hour)
	c.call(1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "alice", Token: tok, DeviceID: "phone"})

	clock.Store(exp.Add(-10 * time.Second).UnixNano()) // within the 30 s warning
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		b, err := wsutil.ReadServerText(c.conn)
		if err != nil {
			t.Fatalf("waiting for token_will_expire: %v", err)
		}
		f, _ := proto.JSON.DecodeFrame(b)
		if f.Ev != proto.EvTokenWillExpire {
			continue
		}
		var w proto.TokenWillExpire
		json.Unmarshal(f.Data, &w)
		if w.ExpiresAt != exp.UnixMilli() || w.RemainingMS != 10000 {
			t.Errorf("token_will_expire %+v, want expires_at %d, remaining_ms 10000", w, exp.UnixMilli())
		}
		break
	}

	clock.Store(exp.UnixNano())
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := wsutil.ReadServerText(c.conn)
		var closed wsutil.ClosedError
		if errors.As(err, &closed) {
			if closed.Code != proto.CloseTokenExpired {
				t.Errorf("closed with %d %q, want %d", closed.Code, closed.Reason, proto.CloseTokenExpired)
			}
			return
		}
		if err != nil {
			t.Fatalf("waiting for the close at expiry: %v", err)
		}
	}
}

// TestSessionSize: an idle session's struct stays in the allocator's
// 320-byte size class on 64-bit systems (the next one is 352 bytes: 32
// more for every connection, bench conn).
func TestSessionSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are for 64-bit systems")
	}
	if got, want := unsafe.Sizeof(session{}), uintptr(320); got > want {
		t.Errorf("session is %d bytes, want at most %d", got, want)
	}
}

// TestPlatformCode: every platform survives its one-byte code, and the
// list is short enough for the byte.
func TestPlatformCode(t *testing.T) {
	if len(herald.Platforms) >= 255 {
		t.Fatalf("%d platforms do not fit the session's one-byte code", len(herald.Platforms))
	}
	for _, p := range herald.Platforms {
		s := &session{platform: platformCode(p)}
		if got := s.platformName(); got != p {
			t.Errorf("platform %q comes back as %q", p, got)
		}
	}
	if s := (&session{platform: platformCode("toaster")}); s.platformName() != "" {
		t.Errorf("an unknown platform comes back as %q, want none", s.platformName())
	}
}
