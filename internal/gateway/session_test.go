package gateway

import (
	"context"
	"net"
	"testing"
	"time"

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
	s.mu.Lock()
	timer := s.tokenTimer
	s.mu.Unlock()
	if timer != nil {
		t.Error("a token timer was armed on an ended session")
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
