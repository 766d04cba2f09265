package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
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
	list    []*herald.Call // Calls' page when set
	more    bool
	started chan call.SessionID
	offline chan string
	invited chan []string
	// onStarted, when set, runs in SessionStarted before it reports.
	onStarted func(user string, s call.SessionID)
	advanced  chan string
}

func newFakeCalls() *fakeCalls {
	return &fakeCalls{call: testCall(), started: make(chan call.SessionID, 16), offline: make(chan string, 16), invited: make(chan []string, 4)}
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
	if f.list != nil {
		return f.list, f.more, nil
	}
	return []*herald.Call{f.call}, false, nil
}
func (f *fakeCalls) SessionStarted(user string, s call.SessionID) {
	if f.onStarted != nil {
		f.onStarted(user, s)
	}
	f.started <- s
}
func (f *fakeCalls) UserOffline(user string) { f.offline <- user }

// The advanced-mode operations report what they were asked on advanced,
// when set.
func (f *fakeCalls) record(format string, args ...any) (*herald.Call, error) {
	if f.advanced != nil {
		f.advanced <- fmt.Sprintf(format, args...)
	}
	return f.call, nil
}
func (f *fakeCalls) InviteWith(_ context.Context, caller string, _ call.SessionID, invitees []string, timeout time.Duration, _ string, _ *herald.PushConfig, o call.InviteOptions) (*herald.Call, error) {
	return f.record("invite %s %v %v mode=%s joinable=%v end_by=%s", caller, invitees, timeout, o.Mode, o.Joinable, o.EndBy)
}
func (f *fakeCalls) CallingInvite(_ context.Context, user string, _ call.SessionID, id string, invitees []string, p *herald.PushConfig) (*herald.Call, error) {
	return f.record("calling_invite %s %s %v push=%v", user, id, invitees, p != nil)
}
func (f *fakeCalls) Join(_ context.Context, user string, _ call.SessionID, id, extended string) (*herald.Call, error) {
	return f.record("join %s %s %s", user, id, extended)
}
func (f *fakeCalls) Quit(_ context.Context, user string, _ call.SessionID, id, extended string, p *herald.PushConfig) (*herald.Call, error) {
	return f.record("quit %s %s %s push=%v", user, id, extended, p != nil)
}
func (f *fakeCalls) End(_ context.Context, user string, _ call.SessionID, id, extended string, p *herald.PushConfig) (*herald.Call, error) {
	return f.record("end %s %s %s push=%v", user, id, extended, p != nil)
}

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
	s, frames, read := heldPipeSession(t, g)
	read()
	return s, frames
}

// heldPipeSession is callPipeSession whose client reads nothing (so the
// session's writer blocks on its first frame) until read is called.
func heldPipeSession(t *testing.T, g *Gateway) (*session, <-chan proto.Frame, func()) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { client.Close() })
	frames := make(chan proto.Frame, 64)
	read := func() {
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
	}
	return newSession(g, server), frames, read
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
	fc := newFakeCalls()
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

// newCallGateway is a gateway over fc whose offline sync is empty.
func newCallGateway(t *testing.T, fc *fakeCalls, cfg Config) *Gateway {
	t.Helper()
	release := make(chan struct{})
	close(release)
	cfg.Secret, cfg.BlockingReads, cfg.Calls = callSecret, true, fc
	return New(heldSync{noChat{t: t}, release}, cfg)
}

var callSecret = []byte("0123456789abcdef")

// callLogin logs s in as user on device; the login (its sync and
// SessionStarted) is done when it returns.
func callLogin(t *testing.T, g *Gateway, s *session, user, device string) {
	t.Helper()
	tok, _ := token.Mint(callSecret, user, time.Now(), time.Hour)
	callRequest(t, s, 1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: user, Token: tok, DeviceID: device})
	if !s.loggedIn.Load() {
		t.Fatalf("%s/%s did not log in", user, device)
	}
}

func waitOffline(t *testing.T, fc *fakeCalls, want string) {
	t.Helper()
	select {
	case u := <-fc.offline:
		if u != want {
			t.Errorf("UserOffline(%q), want %q", u, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("UserOffline(%q) not called", want)
	}
}

func noOffline(t *testing.T, fc *fakeCalls) {
	t.Helper()
	select {
	case u := <-fc.offline:
		t.Errorf("unexpected UserOffline(%q)", u)
	default:
	}
}

// TestCallRingsOnceAtLogin: an invitation that rings a session after its
// offline sync but before SessionStarted has rung it for the calls
// already open does not ring it twice.
func TestCallRingsOnceAtLogin(t *testing.T) {
	fc := newFakeCalls()
	g := newCallGateway(t, fc, Config{})
	defer g.Shutdown(context.Background())
	s, frames := callPipeSession(t, g)
	c1, c2, c3 := testCall(), testCall(), testCall()
	c2.ID, c3.ID = "c2", "c3"
	fc.onStarted = func(user string, id call.SessionID) {
		// c1's invitation lands now: its NotifyCall rings the session
		// (synced), then SessionStarted finds c1 open and rings it too.
		g.NotifyCall([]string{"bob"}, call.EventReceived, c1, nil, 0)
		g.NotifySession(user, id, call.EventReceived, c1)
		g.NotifySession(user, id, call.EventReceived, c2)
	}
	callLogin(t, g, s, "bob", "d")
	if f := callNext(t, frames); f.ID != 1 || f.Err != nil {
		t.Fatalf("login reply %+v", f)
	}
	if f := callNext(t, frames); f.Ev != proto.EvSyncDone {
		t.Fatalf("%+v, want sync_done", f)
	}
	var rung []string
	for i := 0; i < 2; i++ {
		f := callNext(t, frames)
		var ev proto.CallEvent
		json.Unmarshal(f.Data, &ev)
		if f.Ev != proto.EvCallInvitationReceived {
			t.Fatalf("frame %+v, want call_invitation_received", f)
		}
		rung = append(rung, ev.Call.CallID)
	}
	if rung[0] != "c1" || rung[1] != "c2" {
		t.Errorf("rung for %v, want c1 then c2", rung)
	}
	callNone(t, frames)
	// Once SessionStarted is done, every invitation rings.
	g.NotifyCall([]string{"bob"}, call.EventReceived, c3, nil, 0)
	if f := callNext(t, frames); f.Ev != proto.EvCallInvitationReceived {
		t.Errorf("frame %+v, want call_invitation_received", f)
	}
}

// TestCallerGoneWithoutLogout: how a caller's last session ends decides
// whether their calls are cancelled at once, after a grace of
// HeartbeatTimeout, or not at all.
func TestCallerGoneWithoutLogout(t *testing.T) {
	const grace = 100 * time.Millisecond
	for _, tt := range []struct {
		name string
		code int // 0: the connection just ended (EOF); -1 logout; -2 Gateway.Kick
		want string
	}{
		{"eof", 0, "grace"},
		{"token expired", proto.CloseTokenExpired, "grace"},
		{"protocol error", proto.CloseProtocolError, "grace"},
		{"slow consumer", proto.CloseSlowConsumer, "grace"},
		{"heartbeat timeout", proto.CloseHeartbeatTimeout, "now"},
		{"server shutdown", proto.CloseServerShutdown, "never"},
		{"logout", -1, "now"},
		{"kicked by the server API", -2, "now"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fc := newFakeCalls()
			g := newCallGateway(t, fc, Config{HeartbeatTimeout: grace})
			defer g.Shutdown(context.Background())
			s, _ := callPipeSession(t, g)
			callLogin(t, g, s, "alice", "d")
			start := time.Now()
			switch tt.code {
			case 0:
			case -1:
				callRequest(t, s, 2, proto.OpLogout, struct{}{})
			case -2:
				if n := g.Kick("alice", "kicked by the app"); n != 1 {
					t.Fatalf("Kick closed %d sessions, want 1", n)
				}
			default:
				s.closeWith(tt.code, "")
			}
			s.teardown() // returns once end has run
			switch tt.want {
			case "now":
				waitOffline(t, fc, "alice")
				if n := g.graceUsers(); n != 0 {
					t.Errorf("%d grace timers, want none", n)
				}
			case "never":
				noOffline(t, fc)
				if n := g.graceUsers(); n != 0 {
					t.Errorf("%d grace timers, want none", n)
				}
			case "grace":
				noOffline(t, fc)
				if n := g.graceUsers(); n != 1 {
					t.Fatalf("%d grace timers, want 1", n)
				}
				waitOffline(t, fc, "alice")
				if d := time.Since(start); d < grace {
					t.Errorf("UserOffline after %v, before the grace of %v", d, grace)
				}
				if n := g.graceUsers(); n != 0 {
					t.Errorf("%d grace timers after it fired, want none", n)
				}
			}
		})
	}
}

// TestCallerGraceStopped: a login of the user stops the grace timer; a
// session that is not the user's last, or that another login displaced,
// starts none.
func TestCallerGraceStopped(t *testing.T) {
	fc := newFakeCalls()
	g := newCallGateway(t, fc, Config{HeartbeatTimeout: time.Hour})
	defer g.Shutdown(context.Background())

	s1, _ := callPipeSession(t, g)
	callLogin(t, g, s1, "alice", "phone")
	s1.teardown()
	if n := g.graceUsers(); n != 1 {
		t.Fatalf("%d grace timers after the connection dropped, want 1", n)
	}
	s2, _ := callPipeSession(t, g)
	callLogin(t, g, s2, "alice", "phone")
	if n := g.graceUsers(); n != 0 {
		t.Errorf("%d grace timers after alice logged in again, want none", n)
	}

	// Another device is still live: nothing.
	s3, _ := callPipeSession(t, g)
	callLogin(t, g, s3, "alice", "desk")
	s3.teardown()
	// Displaced by a login on the same device: nothing either.
	s4, _ := callPipeSession(t, g)
	callLogin(t, g, s4, "alice", "phone")
	s2.teardown()
	if n := g.graceUsers(); n != 0 {
		t.Errorf("%d grace timers, want none", n)
	}
	noOffline(t, fc)

	// The last session logs out: offline at once.
	callRequest(t, s4, 2, proto.OpLogout, struct{}{})
	s4.teardown()
	waitOffline(t, fc, "alice")
}

// TestCallerLastSessionsEndTogether: of two sessions of a caller logging
// out at once (each handled while the other is still in the hub), exactly
// one is the last.
func TestCallerLastSessionsEndTogether(t *testing.T) {
	fc := newFakeCalls()
	g := newCallGateway(t, fc, Config{})
	defer g.Shutdown(context.Background())
	// The clients read nothing yet: no session can end before both logouts
	// are handled.
	s1, _, read1 := heldPipeSession(t, g)
	s2, _, read2 := heldPipeSession(t, g)
	callLogin(t, g, s1, "alice", "phone")
	callLogin(t, g, s2, "alice", "desk")
	callRequest(t, s1, 2, proto.OpLogout, struct{}{})
	callRequest(t, s2, 2, proto.OpLogout, struct{}{})
	if n := g.SessionsOf("alice"); n != 2 {
		t.Fatalf("alice has %d sessions before the logouts end them, want 2", n)
	}
	read1()
	read2()
	done := make(chan struct{})
	go func() { s1.teardown(); close(done) }()
	s2.teardown()
	<-done
	waitOffline(t, fc, "alice")
	select {
	case u := <-fc.offline:
		t.Errorf("UserOffline(%q) called twice", u)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestShutdownStopsGraceTimers: Shutdown stops the pending grace timers,
// and none starts after it.
func TestShutdownStopsGraceTimers(t *testing.T) {
	fc := newFakeCalls()
	g := newCallGateway(t, fc, Config{HeartbeatTimeout: time.Hour})
	s, _ := callPipeSession(t, g)
	callLogin(t, g, s, "alice", "phone")
	s.teardown()
	if n := g.graceUsers(); n != 1 {
		t.Fatalf("%d grace timers, want 1", n)
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.armGrace("bob")
	if n := g.graceUsers(); n != 0 {
		t.Errorf("%d grace timers after Shutdown, want none", n)
	}
}

// TestCallsPageNotCutInsideMillisecond: a page cut short by the reply
// budget leaves out the calls of the millisecond it would cut, so paging
// on from the last call's created_at skips none; calls all of one
// millisecond go whole.
func TestCallsPageNotCutInsideMillisecond(t *testing.T) {
	at := func(id string, ms int64) *herald.Call {
		c := testCall()
		c.ID, c.CreatedAt = id, time.UnixMilli(ms)
		return c
	}
	fc := newFakeCalls()
	// A budget of 1 KiB holds two of these calls (callWireSize 456).
	g := newCallGateway(t, fc, Config{SendQueueBytes: 4096})
	defer g.Shutdown(context.Background())
	if n := callWireSize(at("a", 1)); 2*n > g.replyBudget() || 3*n <= g.replyBudget() {
		t.Fatalf("callWireSize %d, budget %d: want two calls to fit, not three", n, g.replyBudget())
	}
	s, frames := callPipeSession(t, g)
	callLogin(t, g, s, "alice", "phone")
	callNext(t, frames) // reply
	callNext(t, frames) // sync_done
	for i, tt := range []struct {
		list []*herald.Call
		more bool
		want string
		has  bool
	}{
		// b and c share 2 ms: b goes with c to the next page.
		{[]*herald.Call{at("a", 3), at("b", 2), at("c", 2), at("d", 1)}, false, "a", true},
		// All that fits shares 2 ms: that millisecond goes whole, over budget.
		{[]*herald.Call{at("a", 2), at("b", 2), at("c", 2), at("d", 1)}, false, "a b c", true},
		{[]*herald.Call{at("a", 2), at("b", 2), at("c", 2)}, false, "a b c", false},
		{[]*herald.Call{at("a", 2), at("b", 2), at("c", 2)}, true, "a b c", true},
		// Not cut: as the service gave it.
		{[]*herald.Call{at("a", 2), at("b", 2)}, true, "a b", true},
		{[]*herald.Call{at("a", 3), at("b", 2), at("c", 1)}, false, "a b", true},
	} {
		fc.list, fc.more = tt.list, tt.more
		id := uint64(10 + i)
		callRequest(t, s, id, proto.OpCalls, proto.CallsRequest{})
		f := callNext(t, frames)
		if f.ID != id || f.Err != nil {
			t.Fatalf("calls reply %+v", f)
		}
		var rep proto.CallsReply
		json.Unmarshal(f.Data, &rep)
		var got []string
		for _, c := range rep.Calls {
			got = append(got, c.CallID)
		}
		if strings.Join(got, " ") != tt.want || rep.HasMore != tt.has {
			t.Errorf("case %d: page %v has_more %v, want [%s] %v", i, got, rep.HasMore, tt.want, tt.has)
		}
	}
}

// TestAdvancedCallOps: the advanced-mode operations reach the call
// service as the session's user with their fields, and its ended event
// goes out as call_invitation_ended.
func TestAdvancedCallOps(t *testing.T) {
	secret := []byte("0123456789abcdef")
	release := make(chan struct{})
	close(release)
	fc := newFakeCalls()
	fc.advanced = make(chan string, 8)
	g := New(heldSync{noChat{t: t}, release}, Config{Secret: secret, BlockingReads: true, Calls: fc})
	defer g.Shutdown(context.Background())
	s, frames := callPipeSession(t, g)
	tok, _ := token.Mint(secret, "bob", time.Now(), time.Hour)
	go callRequest(t, s, 1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "bob", Token: tok, DeviceID: "d"})
	if f := callNext(t, frames); f.ID != 1 || f.Err != nil {
		t.Fatalf("login reply %+v", f)
	}
	if f := callNext(t, frames); f.Ev != proto.EvSyncDone {
		t.Fatalf("after login: %+v, want sync_done", f)
	}
	<-fc.started
	missed := &herald.PushConfig{Title: "missed"}
	for i, tc := range []struct {
		op   string
		req  any
		want string
	}{
		{proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"alice"}, Timeout: 5, Mode: "advanced", Joinable: true, EndBy: "participant"},
			"invite bob [alice] 5s mode=advanced joinable=true end_by=participant"},
		{proto.OpCallCallingInvite, proto.CallingInviteRequest{CallID: "c1", Invitees: []string{"carol", "dave"}}, "calling_invite bob c1 [carol dave] push=false"},
		{proto.OpCallJoin, proto.CallActionRequest{CallID: "c1", Extended: "x"}, "join bob c1 x"},
		{proto.OpCallQuit, proto.CallActionRequest{CallID: "c1", Extended: "y", Push: missed}, "quit bob c1 y push=true"},
		{proto.OpCallEnd, proto.CallActionRequest{CallID: "c1", Push: missed}, "end bob c1  push=true"},
	} {
		id := uint64(10 + i)
		callRequest(t, s, id, tc.op, tc.req)
		if f := callNext(t, frames); f.ID != id || f.Err != nil {
			t.Errorf("%s reply %+v", tc.op, f)
		}
		select {
		case got := <-fc.advanced:
			if got != tc.want {
				t.Errorf("%s reached the service as %q, want %q", tc.op, got, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not reach the service", tc.op)
		}
	}
	callRequest(t, s, 20, proto.OpCallJoin, proto.CallActionRequest{CallID: "c1", Push: missed})
	if f := callNext(t, frames); f.ID != 20 || f.Err == nil || f.Err.Code != string(herald.CodeInvalidArgument) {
		t.Errorf("call_join with a push: %+v, want invalid_argument", f)
	}
	g.NotifyCall([]string{"bob"}, call.EventEnded, testCall(), nil, 0)
	if f := callNext(t, frames); f.Ev != proto.EvCallInvitationEnded {
		t.Errorf("ended event as %+v, want call_invitation_ended", f)
	}
}
