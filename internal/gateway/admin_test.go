package gateway

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// adminPipeSession is a session on a pipe whose client reports text
// frames and the close code the server sends.
func adminPipeSession(t *testing.T, g *Gateway) (*session, <-chan proto.Frame, <-chan int) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { client.Close() })
	frames, closed := make(chan proto.Frame, 64), make(chan int, 1)
	go func() {
		for {
			f, err := ws.ReadFrame(client)
			if err != nil {
				return
			}
			switch f.Header.OpCode {
			case ws.OpText:
				if pf, err := proto.JSON.DecodeFrame(f.Payload); err == nil {
					frames <- pf
				}
			case ws.OpClose:
				code, _ := ws.ParseCloseFrameData(f.Payload)
				closed <- int(code)
				client.Close()
				return
			}
		}
	}()
	return newSession(g, server), frames, closed
}

// untilSynced skips frames up to the login's sync_done.
func untilSynced(t *testing.T, frames <-chan proto.Frame) {
	t.Helper()
	for f := callNext(t, frames); f.Ev != proto.EvSyncDone; f = callNext(t, frames) {
	}
}

func TestBroadcastAndKick(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{})
	defer g.Shutdown(context.Background())
	type user struct {
		s      *session
		frames <-chan proto.Frame
		closed <-chan int
	}
	users := map[string]*user{}
	for _, name := range []string{"alice", "bob", "system"} {
		s, frames, closed := adminPipeSession(t, g)
		callLogin(t, g, s, name, "phone")
		untilSynced(t, frames)
		users[name] = &user{s, frames, closed}
	}

	n := g.Broadcast(&herald.Message{From: "system", Type: herald.MessageText, Text: "maintenance", LocalID: "b-1", CreatedAt: time.Now()})
	if n != 2 {
		t.Fatalf("Broadcast reached %d sessions, want 2 (not the sender's)", n)
	}
	for _, name := range []string{"alice", "bob"} {
		f := callNext(t, users[name].frames)
		var m proto.Message
		if f.Ev != proto.EvMessage || json.Unmarshal(f.Data, &m) != nil {
			t.Fatalf("%s got %+v, want a message event", name, f)
		}
		if m.ConvType != proto.ConvPeer || m.ConvID != "system" || m.To != name || m.From != "system" || m.Seq != 0 || m.Text != "maintenance" || m.LocalID != "b-1" {
			t.Errorf("%s got %+v, want the live-only text in the peer conversation with system", name, m)
		}
	}
	callNone(t, users["system"].frames)

	if n := g.Kick("bob", "banned"); n != 1 {
		t.Fatalf("Kick(bob) = %d, want 1", n)
	}
	select {
	case code := <-users["bob"].closed:
		if code != proto.CloseKickedOut {
			t.Errorf("bob closed with %d, want %d (KickedOut)", code, proto.CloseKickedOut)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bob's session was not closed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.SessionsOf("bob") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("bob's session is still in the hub")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := g.Kick("nobody", "x"); n != 0 {
		t.Errorf("Kick(nobody) = %d, want 0", n)
	}
	if g.SessionsOf("alice") != 1 {
		t.Error("alice's session was closed too")
	}
	if k := g.Stats().Kicked; k != 1 {
		t.Errorf("Kicked = %d, want 1", k)
	}
}

// TestUserSessionsAndKickDevice: the console lists a user's sessions
// with the platform each said at login (normalised), and its kick of one device
// closes that device's sessions only, with CloseKickedOut.
func TestUserSessionsAndKickDevice(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{})
	defer g.Shutdown(context.Background())
	login := func(device, platform string) (<-chan proto.Frame, <-chan int) {
		s, frames, closed := adminPipeSession(t, g)
		tok, _ := token.Mint(callSecret, "hana", time.Now(), time.Hour)
		callRequest(t, s, 1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "hana", Token: tok, DeviceID: device, Platform: platform})
		if !s.loggedIn.Load() {
			t.Fatalf("hana/%s did not log in", device)
		}
		untilSynced(t, frames)
		return frames, closed
	}
	_, phoneClosed := login("phone", "ios")
	_, laptopClosed := login("laptop", strings.Repeat("x", 40))

	got := g.UserSessions("hana")
	if len(got) != 2 {
		t.Fatalf("UserSessions = %+v, want 2", got)
	}
	if got[0].Device != "phone" || got[0].Platform != "ios" || got[0].LoginAt.IsZero() || got[0].Remote == "" {
		t.Errorf("first session %+v: want the phone, ios, its login time and address", got[0])
	}
	if got[1].Platform != "" {
		t.Errorf("a platform that is none of herald.Platforms is listed as %q, want \"\"", got[1].Platform)
	}
	if n := g.KickDevice("hana", "laptop", "by the operator"); n != 1 {
		t.Errorf("KickDevice closed %d sessions, want 1", n)
	}
	select {
	case code := <-laptopClosed:
		if code != proto.CloseKickedOut {
			t.Errorf("the laptop was closed with %d, want %d", code, proto.CloseKickedOut)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the laptop's session was not closed")
	}
	select {
	case code := <-phoneClosed:
		t.Fatalf("the phone was closed (%d) by the laptop's kick", code)
	default:
	}
	if n := g.KickDevice("hana", "watch", "by the operator"); n != 0 {
		t.Errorf("kicking a device with no session closed %d", n)
	}
}
