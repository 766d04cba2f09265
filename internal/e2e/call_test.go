package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/proto"
)

// callEv is one call event an app got.
type callEv struct {
	kind    string // created, received, cancelled, timeout, state, ended
	call    *herald.Call
	changed []herald.CallParticipant
}

// callLog records the call events of one Client.
type callLog struct {
	mu   sync.Mutex
	evs  []callEv
	more chan struct{}
}

func newCallLog() *callLog { return &callLog{more: make(chan struct{}, 1)} }

func (l *callLog) add(kind string, c *herald.Call, changed []herald.CallParticipant) {
	l.mu.Lock()
	l.evs = append(l.evs, callEv{kind, c, changed})
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
}

func (l *callLog) handlers() client.CallHandlers {
	return client.CallHandlers{
		InvitationCreated:   func(c *herald.Call) { l.add("created", c, nil) },
		InvitationReceived:  func(c *herald.Call) { l.add("received", c, nil) },
		InvitationCancelled: func(c *herald.Call) { l.add("cancelled", c, nil) },
		InvitationTimeout:   func(c *herald.Call) { l.add("timeout", c, nil) },
		UserStateChanged:    func(c *herald.Call, ch []herald.CallParticipant) { l.add("state", c, ch) },
		InvitationEnded:     func(c *herald.Call) { l.add("ended", c, nil) },
	}
}

// find returns the events of kind for call id that match (nil: any).
func (l *callLog) find(kind, id string, match func(callEv) bool) []callEv {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []callEv
	for _, e := range l.evs {
		if e.kind == kind && e.call.ID == id && (match == nil || match(e)) {
			out = append(out, e)
		}
	}
	return out
}

// wait blocks until an event of kind for call id matching match arrived,
// and returns it.
func (l *callLog) wait(t *testing.T, kind, id string, match func(callEv) bool) callEv {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := l.find(kind, id, match); len(got) > 0 {
			return got[0]
		}
		select {
		case <-l.more:
		case <-deadline:
			t.Fatalf("no %s event for call %s within 10s; got %s", kind, id, l.String())
		}
	}
}

func (l *callLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, e := range l.evs {
		parts = append(parts, e.kind+":"+callStates(e.call))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// callEnded matches a state change that ended the call.
func callEnded(e callEv) bool { return e.call.Ended() }

func callStates(c *herald.Call) string {
	parts := make([]string, len(c.Participants))
	for i, p := range c.Participants {
		parts[i] = p.User + "=" + string(p.State)
	}
	s := strings.Join(parts, " ")
	if c.Ended() {
		s += " (ended)"
	}
	return s
}

// callClient logs user in on device, with its call events recorded.
func callClient(t *testing.T, url, device, user string) (*client.Client, *callLog) {
	t.Helper()
	l := newCallLog()
	c := client.New(url, client.Options{
		DeviceID: device, Handlers: client.Handlers{Calls: l.handlers()},
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond,
	})
	t.Cleanup(c.Close)
	login(t, c, user)
	return c, l
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestCallAccepted: bob's two devices ring; he accepts on one, the other
// stops ringing, alice's devices see the call end.
func TestCallAccepted(t *testing.T) {
	srv := startServer(t, nil)
	alice, aliceLog := callClient(t, srv.URL(), "alice-phone", "alice")
	_, aliceDesk := callClient(t, srv.URL(), "alice-desk", "alice")
	bob, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	_, tabletLog := callClient(t, srv.URL(), "bob-tablet", "bob")
	ctx := callCtx(t)

	c, err := alice.CallInvite(ctx, []string{"bob"}, client.CallInviteConfig{Timeout: 3 * time.Second, ExtendedData: `{"video":true}`})
	if err != nil {
		t.Fatal(err)
	}
	if got := callStates(c); got != "alice=inviting bob=received" || c.Deadline.Sub(c.CreatedAt) != 3*time.Second {
		t.Errorf("invite returned %s, deadline %v after creation; want alice inviting, bob received, 3s", got, c.Deadline.Sub(c.CreatedAt))
	}
	rang := bobLog.wait(t, "received", c.ID, nil)
	tabletLog.wait(t, "received", c.ID, nil)
	if rang.call.Caller() != "alice" || rang.call.Extended != `{"video":true}` || !rang.call.Deadline.Equal(c.Deadline) {
		t.Errorf("bob's invitation: caller %s, extended %q, deadline %v; want alice, the extended data, %v", rang.call.Caller(), rang.call.Extended, rang.call.Deadline, c.Deadline)
	}
	aliceDesk.wait(t, "created", c.ID, nil)
	if got := aliceLog.find("created", c.ID, nil); len(got) != 0 {
		t.Error("the device that placed the call got call_invitation_created too")
	}

	got, err := bob.CallAccept(ctx, c.ID, "on my way")
	if err != nil {
		t.Fatal(err)
	}
	if callStates(got) != "alice=ended bob=accepted (ended)" {
		t.Errorf("accept returned %s, want bob accepted and the call ended", callStates(got))
	}
	ev := tabletLog.wait(t, "state", c.ID, callEnded) // the tablet stops ringing
	if len(ev.changed) == 0 || ev.changed[0].User != "bob" || ev.changed[0].State != herald.CallAccepted || ev.changed[0].Extended != "on my way" {
		t.Errorf("tablet's state change: %+v, want bob accepted with his extended data first", ev.changed)
	}
	aliceLog.wait(t, "state", c.ID, callEnded)
	aliceDesk.wait(t, "state", c.ID, callEnded)

	if _, err := bob.CallAccept(ctx, c.ID, ""); !errors.Is(err, client.ErrConflict) {
		t.Errorf("accepting again: %v, want ErrConflict", err)
	}
}

// TestCallRejected: a rejection ends a one-invitee call, with the
// invitee's extended data.
func TestCallRejected(t *testing.T) {
	srv := startServer(t, nil)
	alice, aliceLog := callClient(t, srv.URL(), "alice-phone", "alice")
	bob, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	carol, carolLog := callClient(t, srv.URL(), "carol-phone", "carol")
	ctx := callCtx(t)
	c, err := alice.CallInvite(ctx, []string{"bob", "carol"}, client.CallInviteConfig{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobLog.wait(t, "received", c.ID, nil)
	carolLog.wait(t, "received", c.ID, nil)
	if _, err := bob.CallReject(ctx, c.ID, "busy"); err != nil {
		t.Fatal(err)
	}
	ev := aliceLog.wait(t, "state", c.ID, func(e callEv) bool { return e.call.Participant("bob").State == herald.CallRejected })
	if ev.call.Ended() || ev.call.Participant("bob").Extended != "busy" {
		t.Errorf("after bob's rejection alice sees %s (extended %q); want the call still ringing for carol, extended busy", callStates(ev.call), ev.call.Participant("bob").Extended)
	}
	if _, err := carol.CallReject(ctx, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	ev = aliceLog.wait(t, "state", c.ID, callEnded)
	if got := callStates(ev.call); got != "alice=ended bob=rejected carol=rejected (ended)" {
		t.Errorf("alice sees %s at the end", got)
	}
	if got := bobLog.find("timeout", c.ID, nil); len(got) != 0 {
		t.Error("a rejecting invitee got a timeout")
	}
}

// TestCallCancelled: the caller cancels; the invitee stops ringing and
// can no longer answer; others cannot touch the call.
func TestCallCancelled(t *testing.T) {
	srv := startServer(t, nil)
	alice, _ := callClient(t, srv.URL(), "alice-phone", "alice")
	bob, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	mallory, _ := callClient(t, srv.URL(), "mallory-phone", "mallory")
	ctx := callCtx(t)
	c, err := alice.CallInvite(ctx, []string{"bob"}, client.CallInviteConfig{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobLog.wait(t, "received", c.ID, nil)

	for _, tt := range []struct {
		name string
		err  error
		want error
	}{
		{"a stranger accepts", callErrOnly(mallory.CallAccept(ctx, c.ID, "")), client.ErrNotFound},
		{"a stranger cancels", callErrOnly(mallory.CallCancel(ctx, c.ID, client.CallCancelConfig{})), client.ErrNotFound},
		{"the invitee cancels", callErrOnly(bob.CallCancel(ctx, c.ID, client.CallCancelConfig{})), client.ErrForbidden},
		{"the caller accepts", callErrOnly(alice.CallAccept(ctx, c.ID, "")), client.ErrForbidden},
	} {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, tt.err, tt.want)
		}
	}

	got, err := alice.CallCancel(ctx, c.ID, client.CallCancelConfig{ExtendedData: "sorry"})
	if err != nil {
		t.Fatal(err)
	}
	if callStates(got) != "alice=cancelled bob=be_cancelled (ended)" {
		t.Errorf("cancel returned %s", callStates(got))
	}
	ev := bobLog.wait(t, "cancelled", c.ID, nil)
	if ev.call.Participants[0].Extended != "sorry" {
		t.Errorf("bob's cancel event carries the caller's extended data %q, want sorry", ev.call.Participants[0].Extended)
	}
	if _, err := bob.CallAccept(ctx, c.ID, ""); !errors.Is(err, client.ErrConflict) {
		t.Errorf("accepting a cancelled call: %v, want ErrConflict", err)
	}
}

// waitCallOffline waits until the server has ended user's sessions (a closed
// Client's connection ends on the server a moment later).
func waitCallOffline(t *testing.T, srv *testServer, user string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Gateway().SessionsOf(user) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s still has a session on the server after 10s", user)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func callErrOnly[T any](_ T, err error) error { return err }

// TestCallTimeout: nobody answers; the server times the call out.
func TestCallTimeout(t *testing.T) {
	srv := startServer(t, nil)
	alice, aliceLog := callClient(t, srv.URL(), "alice-phone", "alice")
	_, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	c, err := alice.CallInvite(callCtx(t), []string{"bob"}, client.CallInviteConfig{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ev := bobLog.wait(t, "timeout", c.ID, nil)
	if got := callStates(ev.call); got != "alice=ended bob=timeout (ended)" {
		t.Errorf("bob's timeout event shows %s", got)
	}
	if ev.call.EndedAt.Before(c.Deadline) {
		t.Errorf("the call ended at %v, before its deadline %v", ev.call.EndedAt, c.Deadline)
	}
	aliceLog.wait(t, "state", c.ID, callEnded)
}

// TestCallOfflineInviteeVoIP is the offline path: bob's phone is off, with
// a VoIP and an alert token; it gets exactly one push, a VoIP push that
// expires with the call; when the app opens in time, it rings.
func TestCallOfflineInviteeVoIP(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	voipTok, alertTok := apnsToken(700), apnsToken(701)
	bob, _ := callClient(t, srv.URL(), "bob-phone", "bob")
	ctx := callCtx(t)
	for _, r := range []client.PushRegistration{
		{Provider: herald.ProviderAPNsVoIP, Token: voipTok, App: testApp, Environment: herald.EnvProduction},
		{Provider: herald.ProviderAPNs, Token: alertTok, App: testApp, Environment: herald.EnvProduction},
	} {
		if _, err := bob.RegisterPush(ctx, r); err != nil {
			t.Fatalf("RegisterPush %s: %v", r.Provider, err)
		}
	}
	bob.Close() // offline, still bound
	waitCallOffline(t, srv, "bob")

	alice, aliceLog := callClient(t, srv.URL(), "alice-phone", "alice")
	c, err := alice.CallInvite(ctx, []string{"bob"}, client.CallInviteConfig{
		Timeout: 3 * time.Second,
		Push:    &herald.PushConfig{Title: "Alice", Content: "Incoming call", Payload: `{"call":1}`, VoIP: &herald.VoIPConfig{Handle: "Alice", HasVideo: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := callStates(c); got != "alice=inviting bob=not_yet_received" {
		t.Errorf("invite returned %s, want bob not_yet_received", got)
	}
	n := waitInbox(t, emu, voipTok, 1)[0]
	if n.PushType != "voip" || n.Topic != testApp+".voip" {
		t.Errorf("push type %q topic %q, want voip and %s.voip", n.PushType, n.Topic, testApp)
	}
	if want := c.Deadline.Unix(); n.Expiration != want {
		t.Errorf("apns-expiration %d, want the call's deadline %d", n.Expiration, want)
	}
	if !strings.Contains(string(n.Payload), c.ID) {
		t.Errorf("VoIP payload %s does not name call %s", n.Payload, c.ID)
	}
	var body map[string]any
	if err := json.Unmarshal(n.Payload, &body); err != nil {
		t.Errorf("VoIP payload %s: %v", n.Payload, err)
	}

	// The push woke the app: it logs in while the call rings.
	bob2, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	ev := bobLog.wait(t, "received", c.ID, nil)
	if ev.call.Participant("bob").State != herald.CallReceived {
		t.Errorf("at login bob's state is %s, want received", ev.call.Participant("bob").State)
	}
	aliceLog.wait(t, "state", c.ID, func(e callEv) bool {
		return len(e.changed) == 1 && e.changed[0].User == "bob" && e.changed[0].State == herald.CallReceived
	})
	if _, err := bob2.CallAccept(ctx, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	aliceLog.wait(t, "state", c.ID, callEnded)
	waitPushSettled(t, srv) // the call's pushes finished: a second one would be in the inbox now
	if got := emu.Inbox(voipTok); len(got) != 1 {
		t.Errorf("%d VoIP pushes, want exactly 1", len(got))
	}
	if got := emu.Inbox(alertTok); len(got) != 0 {
		t.Errorf("%d alert pushes to a device that rings through VoIP, want 0", len(got))
	}
}

// TestCallOfflineInviteeAfterTimeout: bob's app opens after the call timed
// out: nothing rings, and his call list shows the call timed out.
func TestCallOfflineInviteeAfterTimeout(t *testing.T) {
	srv := startServer(t, nil)
	alice, aliceLog := callClient(t, srv.URL(), "alice-phone", "alice")
	c, err := alice.CallInvite(callCtx(t), []string{"bob"}, client.CallInviteConfig{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	aliceLog.wait(t, "state", c.ID, callEnded)

	bob, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	calls, more, err := bob.QueryCalls(callCtx(t), client.CallQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || more || calls[0].ID != c.ID {
		t.Fatalf("bob's call list: %d calls (more %v), want just %s", len(calls), more, c.ID)
	}
	if got := callStates(calls[0]); got != "alice=ended bob=timeout (ended)" {
		t.Errorf("bob's call list shows %s, want bob=timeout", got)
	}
	// A ring of the old call would come at login, before the ring of a
	// call made after it.
	next, err := alice.CallInvite(callCtx(t), []string{"bob"}, client.CallInviteConfig{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobLog.wait(t, "received", next.ID, nil)
	if got := bobLog.find("received", c.ID, nil); len(got) != 0 {
		t.Errorf("bob's login after the timeout rang: %s", bobLog)
	}
}

// TestCallTimeoutAcrossRestart: the server stops while a call rings and
// starts again before its deadline; the clients reconnect and the call
// times out on time. Both embedded stores.
func TestCallTimeoutAcrossRestart(t *testing.T) {
	skipUnderShort(t)
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) { testCallTimeoutAcrossRestart(t, engine) })
	}
}

func testCallTimeoutAcrossRestart(t *testing.T, engine string) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr, cfg.Store = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0", engine
	srv := startServerWith(t, cfg)
	cfg.Addr = srv.Addr()
	url := srv.URL()
	alice, aliceLog := callClient(t, url, "alice-phone", "alice")
	bob, bobLog := callClient(t, url, "bob-phone", "bob")
	c, err := alice.CallInvite(callCtx(t), []string{"bob"}, client.CallInviteConfig{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobLog.wait(t, "received", c.ID, nil)
	srv.stop(t)
	startServerWith(t, cfg) // on the same address: the clients reconnect by themselves
	restarted := time.Now()
	// Call events are live: both clients see the timeout as events only
	// when they are back (backoff at most 300 ms) before it fires. On a
	// slower restart the restarted server may time the call out first
	// (or did while it was down), and their call lists tell.
	if c.Deadline.Sub(restarted) > 1500*time.Millisecond {
		ev := bobLog.wait(t, "timeout", c.ID, nil)
		if got := callStates(ev.call); got != "alice=ended bob=timeout (ended)" {
			t.Errorf("after the restart bob's timeout shows %s", got)
		}
		// Bob's reconnect rang again: the call still rang for him.
		if n := len(bobLog.find("received", c.ID, nil)); n < 2 {
			t.Errorf("bob was rung %d times; want again after his reconnect", n)
		}
		aliceLog.wait(t, "state", c.ID, callEnded)
	} else {
		t.Logf("the restart left %v before the call's deadline", c.Deadline.Sub(restarted))
		waitCallListed(t, "bob", bob, func(cl *herald.Call) bool { return callStates(cl) == "alice=ended bob=timeout (ended)" })
	}
	waitCallListed(t, "alice", alice, (*herald.Call).Ended)
}

// waitCallListed waits (10 s at most) until the newest call in user's call
// list satisfies ok; the client may still be reconnecting.
func waitCallListed(t *testing.T, user string, c *client.Client, ok func(*herald.Call) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		calls, _, err := c.QueryCalls(callCtx(t), client.CallQuery{Limit: 1})
		if err == nil && len(calls) == 1 && ok(calls[0]) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's call list after the restart: %v, %v", user, calls, err)
		}
		time.Sleep(20 * time.Millisecond) // the client reconnects by itself
	}
}

// TestCallCallerLogoutCancels: the caller logs out before anyone
// answered: the call is cancelled.
func TestCallCallerLogoutCancels(t *testing.T) {
	srv := startServer(t, nil)
	alice, _ := callClient(t, srv.URL(), "alice-phone", "alice")
	bob, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	c, err := alice.CallInvite(callCtx(t), []string{"bob"}, client.CallInviteConfig{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobLog.wait(t, "received", c.ID, nil)
	if err := alice.Logout(callCtx(t)); err != nil {
		t.Fatal(err)
	}
	ev := bobLog.wait(t, "cancelled", c.ID, nil)
	if got := callStates(ev.call); got != "alice=cancelled bob=be_cancelled (ended)" {
		t.Errorf("after alice's logout bob sees %s", got)
	}
	if _, err := bob.CallAccept(callCtx(t), c.ID, ""); !errors.Is(err, client.ErrConflict) {
		t.Errorf("accepting after the caller logged out: %v, want ErrConflict", err)
	}
}

// TestCallCallerHeartbeatTimeoutCancels: the caller's app freezes (no
// heartbeat): once its session times out, the call is cancelled.
func TestCallCallerHeartbeatTimeoutCancels(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.HeartbeatInterval, c.HeartbeatTimeout = 200*time.Millisecond, 600*time.Millisecond
	})
	_, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "alice-phone")
	var rep proto.CallReply
	alice.call(proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"bob"}, Timeout: 3}, &rep)
	bobLog.wait(t, "received", rep.Call.CallID, nil)
	// alice sends nothing more: her heartbeat times out.
	ev := bobLog.wait(t, "cancelled", rep.Call.CallID, nil)
	if got := callStates(ev.call); got != "alice=cancelled bob=be_cancelled (ended)" {
		t.Errorf("after alice's heartbeat timeout bob sees %s", got)
	}
	if code := alice.expectClose(); code != proto.CloseHeartbeatTimeout {
		t.Errorf("alice's connection closed with %d, want %d", code, proto.CloseHeartbeatTimeout)
	}
}

// TestCallCallerConnectionLostCancels: the caller's app is killed (the
// connection just ends, no logout): once the heartbeat timeout has passed
// without a session of theirs coming back, the call is cancelled, not left
// ringing until its own timeout.
func TestCallCallerConnectionLostCancels(t *testing.T) {
	const grace = 600 * time.Millisecond
	srv := startServer(t, func(c *config.Config) {
		c.HeartbeatInterval, c.HeartbeatTimeout = 200*time.Millisecond, grace
	})
	_, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "alice-phone")
	var rep proto.CallReply
	alice.call(proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"bob"}, Timeout: 60}, &rep)
	bobLog.wait(t, "received", rep.Call.CallID, nil)
	dropped := time.Now()
	alice.conn.Close()
	ev := bobLog.wait(t, "cancelled", rep.Call.CallID, nil)
	if d := time.Since(dropped); d < grace {
		t.Errorf("cancelled %v after the connection dropped, before the heartbeat timeout (%v)", d, grace)
	}
	if got := callStates(ev.call); got != "alice=cancelled bob=be_cancelled (ended)" {
		t.Errorf("after alice's connection dropped bob sees %s", got)
	}
}

// TestCallCallerReconnectKeepsCall: the caller's connection drops and
// comes back within the heartbeat timeout: the call rings on.
func TestCallCallerReconnectKeepsCall(t *testing.T) {
	const grace = time.Second // long enough for the reconnect below
	srv := startServer(t, func(c *config.Config) {
		c.HeartbeatInterval, c.HeartbeatTimeout = 200*time.Millisecond, grace
	})
	bob, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "alice-phone")
	var rep proto.CallReply
	alice.call(proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"bob"}, Timeout: 60}, &rep)
	bobLog.wait(t, "received", rep.Call.CallID, nil)
	dropped := time.Now()
	alice.conn.Close()
	alice = dialRaw(t, srv.URL())
	alice.login("alice", "alice-phone")
	// Past the grace, alice's new session kept alive meanwhile.
	for time.Since(dropped) < grace+300*time.Millisecond {
		alice.call(proto.OpPing, struct{}{}, nil)
		time.Sleep(100 * time.Millisecond)
	}
	if got := bobLog.find("cancelled", rep.Call.CallID, nil); len(got) != 0 {
		t.Fatalf("the call was cancelled though alice came back: %s", bobLog)
	}
	c, err := bob.CallAccept(callCtx(t), rep.Call.CallID, "")
	if err != nil {
		t.Fatalf("accepting after alice came back: %v", err)
	}
	if got := callStates(c); got != "alice=ended bob=accepted (ended)" {
		t.Errorf("after bob accepted: %s", got)
	}
}

// TestCallProtocolErrors checks what a raw client gets for malformed call
// requests.
func TestCallProtocolErrors(t *testing.T) {
	srv := startServer(t, nil)
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "alice-phone")
	for _, tt := range []struct {
		op   string
		req  any
		want herald.Code
	}{
		{proto.OpCallInvite, proto.CallInviteRequest{}, herald.CodeInvalidArgument},
		{proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"bob"}, Timeout: 1 << 62}, herald.CodeInvalidArgument},
		{proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10"}}, herald.CodeInvalidArgument},
		{proto.OpCallInvite, proto.CallInviteRequest{Invitees: []string{"alice"}}, herald.CodeInvalidArgument},
		{proto.OpCallAccept, proto.CallActionRequest{CallID: "nope"}, herald.CodeNotFound},
		{proto.OpCallAccept, proto.CallActionRequest{CallID: "nope", Push: &herald.PushConfig{}}, herald.CodeInvalidArgument},
		{proto.OpCalls, proto.CallsRequest{Limit: 101}, herald.CodeInvalidArgument},
	} {
		if got := alice.callErr(tt.op, tt.req); got != string(tt.want) {
			t.Errorf("%s %+v: error %q, want %q", tt.op, tt.req, got, tt.want)
		}
	}
	var list proto.CallsReply
	alice.call(proto.OpCalls, proto.CallsRequest{}, &list)
	if len(list.Calls) != 0 || list.HasMore {
		t.Errorf("a new user's call list: %+v, want empty", list)
	}
}
