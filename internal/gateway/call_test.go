package gateway

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// heldSync is a chat service whose offline sync waits for release.
type heldSync struct {
	noChat
	release chan struct{}
}

func (c heldSync) Sync(context.Context, string, string, map[string]int64, func([]*herald.Message) error) (map[string]int64, int, error) {
	<-c.release
	return nil, 0, nil
}

// fakeCalls records what the gateway tells the call service.
type fakeCalls struct {
	call    *herald.Call
	started chan call.SessionID
	offline chan string
	invited chan []string
}

func (f *fakeCalls) Invite(_ context.Context, caller string, _ call.SessionID, invitees []string, timeout time.Duration, _ string, _ *herald.PushConfig) (*herald.Call, error) {
	if timeout != 5*time.Second {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "timeout %v", timeout)
	}
	f.invited <- invitees
	return f.call, nil
}
func (f *fakeCalls) Accept(context.Context, string, call.SessionID, string, string) (*herald.Call, error) {
	return nil, herald.Errorf(herald.CodeNotFound, "no call")
}
func (f *fakeCalls) Reject(context.Context, string, call.SessionID, string, string) (*herald.Call, error) {
	return f.call, nil
}
func (f *fakeCalls) Cancel(context.Context, string, call.SessionID, string, string, *herald.PushConfig) (*herald.Call, error) {
	return f.call, nil
}
func (f *fakeCalls) Calls(context.Context, string, time.Time, int) ([]*herald.Call, bool, error) {
	return []*herald.Call{f.call}, false, nil
}
func (f *fakeCalls) SessionStarted(_ string, s call.SessionID) { f.started <- s }
func (f *fakeCalls) UserOffline(user string)                   { f.offline <- user }

func testCall() *herald.Call {
	now := time.UnixMilli(1700000000000)
	return &herald.Call{
		ID: "c1", Mode: herald.CallGeneral, Timeout: 5 * time.Second, CreatedAt: now, Deadline: now.Add(5 * time.Second),
		Participants: []herald.CallParticipant{{User: "alice", State: herald.CallInviting}, {User: "bob", State: herald.CallReceived}},
	}
}

// callPipeSession is a session on one end of a pipe; frames holds what the
// session writes.
func callPipeSession(t *testing.T, g *Gateway) (*session, <-chan proto.Frame) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { client.Close() })
	frames := make(chan proto.Frame, 64)
	go func() {
		for {
			f, err := ws.ReadFrame(client)
			if err != nil {
				return
			}
			if f.Header.OpCode == ws.OpText {
				if pf, err := proto.JSON.DecodeFrame(f.Payload); err == nil {
					frames <- pf
				}
			}
		}
	}()
	return newSession(g, server), frames
}

func callNext(t *testing.T, frames <-chan proto.Frame) proto.Frame {
	t.Helper()
	select {
	case f := <-frames:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no frame from the session")
		return proto.Frame{}
	}
}

func callNone(t *testing.T, frames <-chan proto.Frame) {
	t.Helper()
	select {
	case f := <-frames:
		t.Fatalf("unexpected frame %+v", f)
	case <-time.After(50 * time.Millisecond):
	}
}

func callRequest(t *testing.T, s *session, id uint64, op string, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	frame, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: id, Op: op, Data: data})
	s.handle(frame)
}

// TestCallEventsDuringLoginSync: while a session's offline sync runs, an
// invitation does not ring it (SessionStarted does, after the sync), and
// other call events wait behind the sync.
func TestCallEventsDuringLoginSync(t *testing.T) {
	secret := []byte("0123456789abcdef")
	release := make(chan struct{})
	fc := &fakeCalls{call: testCall(), started: make(chan call.SessionID, 4), offline: make(chan string, 4), invited: make(chan []string, 4)}
	g := New(heldSync{noChat{t: t}, release}, Config{Secret: secret, BlockingReads: true, Calls: fc})
	defer g.Shutdown(context.Background())
	s, frames := callPipeSession(t, g)

	tok, _ := token.Mint(secret, "bob", time.Now(), time.Hour)
	loggedIn := make(chan struct{})
	go func() {
		callRequest(t, s, 1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "bob", Token: tok, DeviceID: "d"})
		close(loggedIn)
	}()
	if f := callNext(t, frames); f.ID != 1 || f.Err != nil {
		t.Fatalf("login reply %+v", f)
	}
	// The session syncs: an invitation must not ring it now.
	c := testCall()
	g.NotifyCall([]string{"bob"}, call.EventReceived, c, nil, 0)
	g.NotifyCall([]string{"bob"}, call.EventStateChanged, c, c.Participants[1:], 0)
	callNone(t, frames)
	if n := g.LiveSessions("bob"); n != 1 {
		t.Errorf("LiveSessions(bob) = %d during the sync, want 1", n)
	}
	close(release)
	<-loggedIn
	if f := callNext(t, frames); f.Ev != proto.EvSyncDone {
		t.Fatalf("after the sync: %+v, want sync_done", f)
	}
	f := callNext(t, frames)
	var ev proto.CallEvent
	json.Unmarshal(f.Data, &ev)
	if f.Ev != proto.EvCallUserStateChanged || ev.Call.CallID != "c1" || len(ev.Changed) != 1 || ev.Changed[0].User != "bob" {
		t.Errorf("after sync_done: %s %+v, want the state change held during the sync", f.Ev, ev)
	}
	if got := <-fc.started; got != call.SessionID(s.id) {
		t.Errorf("SessionStarted for session %d, want %d", got, s.id)
	}
	// SessionStarted rings the session itself; later invitations ring it live.
	g.NotifySession("bob", call.SessionID(s.id), call.EventReceived, c)
	g.NotifyCall([]string{"bob"}, call.EventReceived, c, nil, 0)
	g.NotifyCall([]string{"bob"}, call.EventCreated, c, nil, call.SessionID(s.id)) // the origin is left out
	for i := 0; i < 2; i++ {
		if f := callNext(t, frames); f.Ev != proto.EvCallInvitationReceived {
			t.Errorf("frame %+v, want call_invitation_received", f)
		}
	}
	callNone(t, frames)

	// The operations answer with the call.
	callRequest(t, s, 2, proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"alice"}, Timeout: 5})
	if f := callNext(t, frames); f.ID != 2 || f.Err != nil {
		t.Errorf("call_invite reply %+v", f)
	} else {
		var rep proto.CallReply
		json.Unmarshal(f.Data, &rep)
		if rep.Call.CallID != "c1" || rep.Call.Caller != "alice" || len(rep.Call.Participants) != 2 {
			t.Errorf("call_invite reply %+v", rep)
		}
	}
	if got := <-fc.invited; len(got) != 1 || got[0] != "alice" {
		t.Errorf("invited %v, want alice", got)
	}
	callRequest(t, s, 3, proto.OpCallAccept, proto.CallActionRequest{CallID: "zz"})
	if f := callNext(t, frames); f.ID != 3 || f.Err == nil || f.Err.Code != string(herald.CodeNotFound) {
		t.Errorf("call_accept reply %+v, want not_found", f)
	}
	callRequest(t, s, 4, proto.OpCalls, proto.CallsRequest{Before: -1})
	if f := callNext(t, frames); f.ID != 4 || f.Err == nil || f.Err.Code != string(herald.CodeInvalidArgument) {
		t.Errorf("calls with a negative before: %+v, want invalid_argument", f)
	}

	// Logging out of the last session tells the call service.
	callRequest(t, s, 5, proto.OpLogout, struct{}{})
	select {
	case u := <-fc.offline:
		if u != "bob" {
			t.Errorf("UserOffline(%q), want bob", u)
		}
	case <-time.After(5 * time.Second):
		t.Error("logout did not reach UserOffline")
	}
}

func TestCallOpsWithoutService(t *testing.T) {
	secret := []byte("0123456789abcdef")
	release := make(chan struct{})
	close(release)
	g := New(heldSync{noChat{t: t}, release}, Config{Secret: secret, BlockingReads: true})
	defer g.Shutdown(context.Background())
	s, frames := callPipeSession(t, g)
	tok, _ := token.Mint(secret, "bob", time.Now(), time.Hour)
	callRequest(t, s, 1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "bob", Token: tok, DeviceID: "d"})
	callNext(t, frames) // reply
	callNext(t, frames) // sync_done
	callRequest(t, s, 2, proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"alice"}})
	if f := callNext(t, frames); f.ID != 2 || f.Err == nil || f.Err.Code != string(herald.CodeUnavailable) {
		t.Errorf("call_invite without a call service: %+v, want unavailable", f)
	}
}
