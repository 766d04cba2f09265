package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/client"
)

// backend is the app's server, calling the server API as a Go backend
// would: through apiclient, signing with the server secret.
func backend(srv *testServer) *apiclient.Client {
	return apiclient.New("http://"+srv.Addr(), "herald", testSecret)
}

func apiCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitState waits until the inbox's client reported ev.
func (in *inbox) waitState(t *testing.T, ev client.ConnectionEvent) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		in.mu.Lock()
		seen := slices.Contains(in.states, ev)
		states := append([]client.ConnectionEvent(nil), in.states...)
		in.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection events %v, want %v", states, ev)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAPIPeerSend: a backend's peer send to three users reaches the one
// online live, and the two offline on their phones by exactly one push
// each, only for the send with push_enabled.
func TestAPIPeerSend(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	ctx := apiCtx(t)
	api := backend(srv)

	aliceIn := newInbox()
	alice := newClient(t, srv.URL(), "alice-phone", aliceIn)
	login(t, alice, "alice")
	tokens := map[string]string{"bob": apnsToken(501), "carol": apnsToken(502)}
	for user, tok := range tokens {
		c := newClient(t, srv.URL(), user+"-phone", newInbox())
		login(t, c, user)
		registerPush(t, c, tok, herald.EnvDevelopment)
		c.Close() // offline, still bound
	}
	push := &herald.PushConfig{Title: "Shop", Content: "Your order shipped", Payload: `{"order":42}`}
	to := []string{"alice", "bob", "carol"}

	// push given but not enabled: stored and delivered, never pushed.
	quiet, err := api.SendPeerMessage(ctx, apiclient.PeerMessageRequest{From: "shop", To: to, Message: apiclient.TextMessage("order received"), Push: push})
	if err != nil {
		t.Fatal(err)
	}
	loud, err := api.SendPeerMessage(ctx, apiclient.PeerMessageRequest{
		From: "shop", To: to, Message: apiclient.TextMessage("Your order shipped"), LocalID: "order-42-shipped", PushEnabled: true, Push: push,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range []*apiclient.PeerMessageReply{quiet, loud} {
		if rep.Sent != 3 || rep.Failed != 0 {
			t.Fatalf("reply %+v, want 3 sent", rep)
		}
		for i, r := range rep.Results {
			if r.UserID != to[i] || r.MessageID == 0 || r.Seq == 0 || r.Error != nil {
				t.Errorf("result %d = %+v, want %s's stored message", i, r, to[i])
			}
		}
	}

	got := aliceIn.wait(t, 2)
	for i, want := range []string{"order received", "Your order shipped"} {
		if m := got[i]; m.Text != want || m.From != "shop" || m.ConvType != herald.ConversationPeer || m.ID != []int64{quiet.Results[0].MessageID, loud.Results[0].MessageID}[i] {
			t.Errorf("alice got %+v, want %q from shop live", m, want)
		}
	}
	for user, tok := range tokens {
		n := waitInbox(t, emu, tok, 1)
		var body struct {
			APS struct {
				Alert struct{ Title, Body string } `json:"alert"`
			} `json:"aps"`
			Herald struct {
				MsgID int64  `json:"msg_id"`
				From  string `json:"from"`
			} `json:"herald"`
		}
		if err := json.Unmarshal(n[0].Payload, &body); err != nil {
			t.Fatal(err)
		}
		i := slices.Index(to, user)
		if body.APS.Alert.Title != "Shop" || body.Herald.From != "shop" || body.Herald.MsgID != loud.Results[i].MessageID {
			t.Errorf("%s's push %s, want the shipped message %d", user, n[0].Payload, loud.Results[i].MessageID)
		}
		waitLog(t, srv, loud.Results[i].MessageID, herald.PushSent)
	}

	// A retry with the same local_id stores nothing new.
	again, err := api.SendPeerMessage(ctx, apiclient.PeerMessageRequest{
		From: "shop", To: to, Message: apiclient.TextMessage("Your order shipped"), LocalID: "order-42-shipped", PushEnabled: true, Push: push,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range again.Results {
		if !r.Duplicate || r.MessageID != loud.Results[i].MessageID {
			t.Errorf("retry result %+v, want the duplicate of message %d", r, loud.Results[i].MessageID)
		}
	}

	// bob opens the app: both messages are there.
	bobIn := newInbox()
	bob := newClient(t, srv.URL(), "bob-phone", bobIn)
	login(t, bob, "bob")
	if msgs := bobIn.wait(t, 2); msgs[0].Text != "order received" || msgs[1].Text != "Your order shipped" || !bobIn.offl[0] {
		t.Errorf("bob synced %v, want both messages offline", msgs)
	}
	for user, tok := range tokens {
		if n := len(emu.Inbox(tok)); n != 1 {
			t.Errorf("%s's phone holds %d notifications, want exactly 1 (only the push_enabled send)", user, n)
		}
	}

	// A wrong secret is refused before anything is sent.
	forged := apiclient.New("http://"+srv.Addr(), "herald", []byte("not-the-server-secret"))
	_, err = forged.SendPeerMessage(ctx, apiclient.PeerMessageRequest{From: "shop", To: to, Message: apiclient.TextMessage("x")})
	var ae *apiclient.Error
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Reason != apiclient.ReasonBadSignature {
		t.Fatalf("forged send: %v, want 401 bad_signature", err)
	}
}

// TestAPIGroupSend: a backend sends as a group member; a non-member is
// refused.
func TestAPIGroupSend(t *testing.T) {
	srv := startServer(t, nil)
	ctx := apiCtx(t)
	api := backend(srv)
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	bobIn := newInbox()
	bob := newClient(t, srv.URL(), "bob-phone", bobIn)
	login(t, bob, "bob")
	if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "team"}, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	rep, err := api.SendGroupMessage(ctx, apiclient.GroupMessageRequest{From: "alice", GroupID: "team", Message: apiclient.TextMessage("standup in 5")})
	if err != nil {
		t.Fatal(err)
	}
	got := bobIn.wait(t, 1)[0] // creating a group sends no message
	if got.ID != rep.MessageID || got.ConvType != herald.ConversationGroup || got.To != "team" || got.From != "alice" {
		t.Errorf("bob got %+v, want message %d in group team from alice", got, rep.MessageID)
	}
	_, err = api.SendGroupMessage(ctx, apiclient.GroupMessageRequest{From: "eve", GroupID: "team", Message: apiclient.TextMessage("hi")})
	var ae *apiclient.Error
	if !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("send as a non-member: %v, want 403", err)
	}
}

// TestAPIUsersAndBroadcast: devices listing, a broadcast to live sessions,
// and a kick that closes bob's session with KickedOut.
func TestAPIUsersAndBroadcast(t *testing.T) {
	srv := startPushServer(t, nil)
	ctx := apiCtx(t)
	api := backend(srv)
	aliceIn, bobIn := newInbox(), newInbox()
	alice := newClient(t, srv.URL(), "alice-phone", aliceIn)
	login(t, alice, "alice")
	bob := newClient(t, srv.URL(), "bob-phone", bobIn)
	login(t, bob, "bob")
	tok := apnsToken(601)
	pushID := registerPush(t, bob, tok, herald.EnvProduction)

	devs, err := api.Devices(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].PushID != pushID || devs[0].UserID != "bob" || devs[0].DeviceID != "bob-phone" || devs[0].App != testApp {
		t.Fatalf("bob's devices %+v, want %s bound to bob-phone", devs, pushID)
	}
	if want := strings.Repeat("*", len(tok)-8) + tok[len(tok)-8:]; devs[0].Token != want {
		t.Errorf("token shown as %q, want %q", devs[0].Token, want)
	}

	rep, err := api.Broadcast(ctx, apiclient.BroadcastRequest{From: "ops", Message: apiclient.TextMessage("maintenance at 22:00")})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sessions != 2 {
		t.Errorf("broadcast reached %d sessions, want 2", rep.Sessions)
	}
	for name, in := range map[string]*inbox{"alice": aliceIn, "bob": bobIn} {
		m := in.wait(t, 1)[0]
		if m.Text != "maintenance at 22:00" || m.From != "ops" || m.Seq != 0 || m.LocalID != rep.LocalID {
			t.Errorf("%s got %+v, want the live-only broadcast", name, m)
		}
	}

	n, err := api.Kick(ctx, "bob", "account suspended")
	if err != nil || n != 1 {
		t.Fatalf("kick: %d %v, want 1 session", n, err)
	}
	bobIn.waitState(t, client.EventKickedOut)
	if n := srv.Gateway().SessionsOf("alice"); n != 1 {
		t.Errorf("alice has %d sessions after bob's kick, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Gateway().SessionsOf("bob") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("bob still has a session after the kick")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Operators' endpoints answer a signed request too.
	logRep, err := api.PushLog(ctx, apiclient.PushLogQuery{UserID: "bob"})
	if err != nil || logRep.Entries == nil {
		t.Fatalf("push log: %+v %v", logRep, err)
	}
	raw, err := api.TestPush(ctx, apiclient.PushTestRequest{PushID: pushID, PushConfig: herald.PushConfig{Title: "test", Content: "from the backend"}})
	if err != nil {
		t.Fatal(err)
	}
	if waitInbox(t, srv.Emulator(), tok, 1); !strings.Contains(string(raw), pushID) {
		t.Errorf("test push report %s, want it to name %s", raw, pushID)
	}
}

// TestAPICallInvite: an invitation placed through the API rings the
// invitee's SDK client.
func TestAPICallInvite(t *testing.T) {
	srv := startServer(t, nil)
	ctx := apiCtx(t)
	_, bobLog := callClient(t, srv.URL(), "bob-phone", "bob")
	rep, err := backend(srv).InviteCall(ctx, apiclient.CallInviteRequest{Caller: "alice", Invitees: []string{"bob"}, Timeout: 30, Extended: `{"video":true}`})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Call.Caller != "alice" || len(rep.Call.Participants) != 2 || rep.Call.Participants[1].State != string(herald.CallReceived) {
		t.Fatalf("call %+v, want alice calling bob, who is received", rep.Call)
	}
	ev := bobLog.wait(t, "received", rep.Call.CallID, nil)
	if ev.call.Caller() != "alice" || ev.call.Extended != `{"video":true}` {
		t.Errorf("bob rang for %s, want alice's call with its extended data", callStates(ev.call))
	}
}
