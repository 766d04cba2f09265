package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/proto"
)

// changedTo matches a state change that moved user to state.
func changedTo(user string, state herald.CallUserState) func(callEv) bool {
	return func(e callEv) bool {
		for _, p := range e.changed {
			if p.User == user && p.State == state {
				return true
			}
		}
		return false
	}
}

// waitCallStates polls c's user's call list (the client reconnects by
// itself after a restart) until callID shows want.
func waitCallStates(t *testing.T, c *client.Client, callID, want string) *herald.Call {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for {
		calls, _, err := c.QueryCalls(callCtx(t), client.CallQuery{Limit: 5})
		if err == nil {
			for _, cl := range calls {
				if cl.ID == callID {
					if last = callStates(cl); last == want {
						return cl
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("call %s shows %q (err %v), want %q", callID, last, err, want)
		}
		time.Sleep(20 * time.Millisecond) // the client reconnects, the timer runs: no event to wait on across a restart
	}
}

// TestCallAdvanced: a three-party advanced-mode call (alice, bob, carol)
// in which bob invites dave, offline, mid-call: dave's VoIP token is
// pushed, the push expiring at dave's own deadline (past the call's
// first one, which the call outlives); dave logs in, is rung
// and joins; carol quits and the call goes on; alice invites erin, and the
// server restarts: the call keeps its state, and erin's invitation times
// out at its deadline from the stored timer; alice ends the call; every
// participant's call list shows each one's final state.
func TestCallAdvanced(t *testing.T) {
	skipUnderShort(t)
	srv := startPushServer(t, nil)
	cfg := srv.cfg
	cfg.Addr = srv.Addr()
	url := srv.URL()
	ctx := callCtx(t)

	voipTok := apnsToken(900)
	dave, _ := callClient(t, url, "dave-phone", "dave")
	if _, err := dave.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNsVoIP, Token: voipTok, App: testApp, Environment: herald.EnvProduction}); err != nil {
		t.Fatal(err)
	}
	dave.Close() // offline, still bound
	waitCallOffline(t, srv, "dave")

	alice, aliceLog := callClient(t, url, "alice-phone", "alice")
	bob, bobLog := callClient(t, url, "bob-phone", "bob")
	carol, carolLog := callClient(t, url, "carol-phone", "carol")
	c, err := alice.CallInvite(ctx, []string{"bob", "carol"}, client.CallInviteConfig{Mode: herald.CallAdvanced, Timeout: 4 * time.Second, ExtendedData: "room-7"})
	if err != nil {
		t.Fatal(err)
	}
	if got := callStates(c); got != "alice=accepted bob=received carol=received" || c.Mode != herald.CallAdvanced || c.EndBy != herald.CallEndByCaller {
		t.Fatalf("invite returned %s mode %s end_by %s; want alice in the call and both invitees rung, advanced, caller", got, c.Mode, c.EndBy)
	}
	bobLog.wait(t, "received", c.ID, nil)
	carolLog.wait(t, "received", c.ID, nil)
	for _, u := range []*client.Client{bob, carol} {
		if _, err := u.CallAccept(ctx, c.ID, ""); err != nil {
			t.Fatal(err)
		}
	}
	ev := aliceLog.wait(t, "state", c.ID, changedTo("carol", herald.CallAccepted))
	if ev.call.Ended() {
		t.Fatalf("the advanced call ended once everyone answered: %s", callStates(ev.call))
	}

	// The call outlives its first deadline: nobody rings, nobody times
	// out. (Waiting out the deadline also sets dave's own one apart from
	// the call's, in the push's whole-second expiration.)
	time.Sleep(time.Until(c.Deadline.Add(200 * time.Millisecond)))
	if got := waitCallStates(t, alice, c.ID, "alice=accepted bob=accepted carol=accepted"); got.Ended() {
		t.Fatalf("the call ended at its first deadline")
	}

	// Bob invites dave, who is offline: his VoIP token rings until his
	// own deadline.
	push := &herald.PushConfig{Title: "Bob", Content: "Join the call", VoIP: &herald.VoIPConfig{Handle: "Room 7"}}
	got, err := bob.CallingInvite(ctx, c.ID, []string{"dave"}, client.CallingInviteConfig{Push: push})
	if err != nil {
		t.Fatal(err)
	}
	daveDeadline := got.Participant("dave").Deadline
	if callStates(got) != "alice=accepted bob=accepted carol=accepted dave=not_yet_received" || !daveDeadline.After(c.Deadline) || daveDeadline.Sub(got.Participant("dave").UpdatedAt) != 4*time.Second {
		t.Fatalf("calling_invite returned %s, dave's deadline %v; want dave not_yet_received until 4 s after his invitation", callStates(got), daveDeadline)
	}
	n := waitInbox(t, srv.Emulator(), voipTok, 1)[0]
	if n.PushType != "voip" || n.Expiration != daveDeadline.Unix() || !strings.Contains(string(n.Payload), c.ID) {
		t.Errorf("dave's push: type %q, expiration %d, payload %s; want voip expiring at his deadline %d naming the call", n.PushType, n.Expiration, n.Payload, daveDeadline.Unix())
	}
	aliceLog.wait(t, "state", c.ID, changedTo("dave", herald.CallNotYet))

	// The push woke dave's app: he logs in, is rung, and joins.
	dave, daveLog := callClient(t, url, "dave-phone", "dave")
	daveLog.wait(t, "received", c.ID, nil)
	if got, err = dave.CallJoin(ctx, c.ID, "hello"); err != nil {
		t.Fatal(err)
	}
	if callStates(got) != "alice=accepted bob=accepted carol=accepted dave=accepted" {
		t.Errorf("after dave joined: %s", callStates(got))
	}
	aliceLog.wait(t, "state", c.ID, changedTo("dave", herald.CallAccepted))

	// Carol quits: the others hear of it, and the call goes on.
	if _, err := carol.CallQuit(ctx, c.ID, client.CallQuitConfig{ExtendedData: "bye"}); err != nil {
		t.Fatal(err)
	}
	ev = bobLog.wait(t, "state", c.ID, changedTo("carol", herald.CallQuit))
	if ev.call.Ended() {
		t.Fatalf("the call ended when carol quit: %s", callStates(ev.call))
	}
	if _, err := carol.CallQuit(ctx, c.ID, client.CallQuitConfig{}); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("quitting again: %v, want ErrNotFound", err)
	}
	if _, err := bob.CallEnd(ctx, c.ID, client.CallQuitConfig{}); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("bob ends alice's call: %v, want ErrForbidden (end_by caller)", err)
	}

	// Alice invites erin, who is offline; the server restarts while erin
	// rings. The call keeps its state, and erin times out at her deadline.
	got, err = alice.CallingInvite(ctx, c.ID, []string{"erin"}, client.CallingInviteConfig{})
	if err != nil {
		t.Fatal(err)
	}
	erinDeadline := got.Participant("erin").Deadline
	srv.stop(t)
	startServerWith(t, cfg) // the same address: the clients reconnect by themselves
	restarted := time.Now()
	got = waitCallStates(t, alice, c.ID, "alice=accepted bob=accepted carol=quit dave=accepted erin=timeout")
	// Her timeout is stored at the time it ran: at her own deadline (the
	// restarted server read it from the store), not at the restart, as a
	// timer at the call's deadline, long past, would have made it.
	if at := got.Participant("erin").UpdatedAt; at.Before(erinDeadline) || !erinDeadline.After(c.Deadline) {
		t.Errorf("erin timed out at %v; want at her own deadline %v or later (the call's is %v; restarted at %v)", at, erinDeadline, c.Deadline, restarted)
	}
	if !restarted.Before(erinDeadline) {
		t.Logf("the restart outlasted erin's deadline: she timed out at Start, not on a timer")
	}

	// Alice ends the call for everyone.
	got, err = alice.CallEnd(ctx, c.ID, client.CallQuitConfig{ExtendedData: "thanks"})
	if err != nil {
		t.Fatal(err)
	}
	const final = "alice=ended bob=ended carol=quit dave=ended erin=timeout (ended)"
	if callStates(got) != final {
		t.Errorf("CallEnd returned %s, want %s", callStates(got), final)
	}
	for name, l := range map[string]*callLog{"alice": aliceLog, "bob": bobLog, "dave": daveLog} {
		if ev := l.wait(t, "ended", c.ID, nil); callStates(ev.call) != final {
			t.Errorf("%s's call_invitation_ended shows %s, want %s", name, callStates(ev.call), final)
		}
	}
	if _, err := dave.CallJoin(ctx, c.ID, ""); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("joining the ended call: %v, want ErrForbidden", err)
	}
	for name, u := range map[string]*client.Client{"alice": alice, "carol": carol, "dave": dave} {
		cl := waitCallStates(t, u, c.ID, final)
		if p := cl.Participant("carol"); p.Extended != "bye" {
			t.Errorf("%s's call list: carol's extended data %q, want bye", name, p.Extended)
		}
	}
}

// TestCallAdvancedOfflineEnds: in an advanced call bob accepted, the
// caller logging out becomes offline and the call goes on; when bob, the
// last one in it, logs out too, the call ends: carol, still ringing, stops
// (cancelled, then ended), and everyone's final state is stored.
func TestCallAdvancedOfflineEnds(t *testing.T) {
	srv := startServer(t, nil)
	url := srv.URL()
	ctx := callCtx(t)
	alice, _ := callClient(t, url, "alice-phone", "alice")
	bob, bobLog := callClient(t, url, "bob-phone", "bob")
	_, carolLog := callClient(t, url, "carol-phone", "carol")
	c, err := alice.CallInvite(ctx, []string{"bob", "carol"}, client.CallInviteConfig{Mode: herald.CallAdvanced, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobLog.wait(t, "received", c.ID, nil)
	if _, err := bob.CallAccept(ctx, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := alice.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	ev := bobLog.wait(t, "state", c.ID, changedTo("alice", herald.CallOffline))
	if ev.call.Ended() {
		t.Fatalf("the call ended when the caller went offline with bob in it: %s", callStates(ev.call))
	}
	if err := bob.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	carolLog.wait(t, "cancelled", c.ID, nil)
	ev = carolLog.wait(t, "ended", c.ID, nil)
	if got, want := callStates(ev.call), "alice=offline bob=offline carol=be_cancelled (ended)"; got != want {
		t.Errorf("carol's call_invitation_ended shows %s, want %s", got, want)
	}
}

// TestCallAdvancedHeartbeatTimeoutOffline: a participant in an advanced
// call whose heartbeat times out becomes offline; the call goes on with
// the caller in it.
func TestCallAdvancedHeartbeatTimeoutOffline(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.HeartbeatInterval, c.HeartbeatTimeout = 200*time.Millisecond, 600*time.Millisecond
	})
	alice, aliceLog := callClient(t, srv.URL(), "alice-phone", "alice")
	bob := dialRaw(t, srv.URL())
	bob.login("bob", "bob-phone")
	c, err := alice.CallInvite(callCtx(t), []string{"bob"}, client.CallInviteConfig{Mode: herald.CallAdvanced, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var rep proto.CallReply
	bob.call(proto.OpCallAccept, proto.CallActionRequest{CallID: c.ID}, &rep)
	aliceLog.wait(t, "state", c.ID, changedTo("bob", herald.CallAccepted))
	// bob sends nothing more: his heartbeat times out.
	ev := aliceLog.wait(t, "state", c.ID, changedTo("bob", herald.CallOffline))
	if got := callStates(ev.call); got != "alice=accepted bob=offline" {
		t.Errorf("after bob's heartbeat timeout alice sees %s, want bob offline and the call open", got)
	}
	if code := bob.expectClose(); code != proto.CloseHeartbeatTimeout {
		t.Errorf("bob's connection closed with %d, want %d", code, proto.CloseHeartbeatTimeout)
	}
}
