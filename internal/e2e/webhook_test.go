package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/webhook"
	"github.com/herald-im/herald/proto"
)

// fastBackoff keeps ZIM's retry schedule's shape, in milliseconds.
var fastBackoff = []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond, 320 * time.Millisecond}

// hookReceiver is the app's backend receiving callbacks: it verifies each
// request as docs/webhooks.md tells a receiver to, and records the events
// it accepted by ID.
type hookReceiver struct {
	t        *testing.T
	srv      *httptest.Server
	mu       sync.Mutex
	attempts map[string]int
	accepted map[string]webhook.Payload
	dups     int
	bad      []string
	failTwo  func(p webhook.Payload) bool // the first two attempts of these events fail
}

func newHookReceiver(t *testing.T, failTwo func(webhook.Payload) bool) *hookReceiver {
	r := &hookReceiver{t: t, attempts: map[string]int{}, accepted: map[string]webhook.Payload{}, failTwo: failTwo}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	err := webhook.Verify(webhook.SigningKey(testSecret), req.Header.Get(webhook.HeaderTimestamp), req.Header.Get(webhook.HeaderSignature), body, time.Now(), 5*time.Minute)
	var p webhook.Payload
	if err == nil {
		err = json.Unmarshal(body, &p)
	}
	if err == nil && p.ID != req.Header.Get(webhook.HeaderEventID) {
		err = errors.New("event ID header and body differ")
	}
	if err != nil {
		r.bad = append(r.bad, err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.attempts[p.ID]++
	if r.failTwo != nil && r.failTwo(p) && r.attempts[p.ID] <= 2 {
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	if _, seen := r.accepted[p.ID]; seen {
		r.dups++
	}
	r.accepted[p.ID] = p
}

// find returns the accepted events matching ok.
func (r *hookReceiver) find(ok func(webhook.Payload) bool) []webhook.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []webhook.Payload
	for _, p := range r.accepted {
		if ok(p) {
			out = append(out, p)
		}
	}
	return out
}

// waitOne waits for an accepted event matching ok and returns it.
func (r *hookReceiver) waitOne(what string, ok func(webhook.Payload) bool) webhook.Payload {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := r.find(ok); len(got) > 0 {
			return got[0]
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no %s event reached the receiver", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func is(typ herald.EventType, user string) func(webhook.Payload) bool {
	return func(p webhook.Payload) bool { return p.Type == string(typ) && p.User == user }
}

// TestWebhookEvents: each kind of event reaches the backend once, signed,
// including one whose first two attempts the backend failed.
func TestWebhookEvents(t *testing.T) {
	recv := newHookReceiver(t, func(p webhook.Payload) bool { return p.Type == string(herald.EventMessageSent) })
	srv := startServer(t, func(c *config.Config) {
		c.WebhookURL = recv.srv.URL
		c.WebhookBackoff = fastBackoff
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	bobIn := newInbox()
	bob := newClient(t, srv.URL(), "bob-phone", bobIn)
	login(t, bob, "bob")

	sent, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("hello"))
	if err != nil {
		t.Fatal(err)
	}
	bobIn.wait(t, 1)
	if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "team", Name: "The team"}, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	c, err := alice.CallInvite(ctx, []string{"bob"}, client.CallInviteConfig{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.CallAccept(ctx, c.ID, "on my way"); err != nil {
		t.Fatal(err)
	}
	if err := bob.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	dave := dialRaw(t, srv.URL())
	dave.login("dave", "raw")
	recv.waitOne("dave's login", is(herald.EventLogin, "dave"))
	dave.conn.Close() // gone without a logout

	msg := recv.waitOne("message_sent", is(herald.EventMessageSent, "alice"))
	if m := msg.Msg; m == nil || m.Text != "hello" || m.From != "alice" || m.To != "bob" || m.ID != sent.ID || m.Seq != sent.Seq {
		t.Errorf("message_sent carries %+v, want alice's stored message %d", m, sent.ID)
	}
	group := recv.waitOne("group_changed", is(herald.EventGroupChanged, "alice"))
	if g := group.Group; g == nil || g.GroupID != "team" || g.Action != string(herald.GroupCreated) || g.Name != "The team" {
		t.Errorf("group_changed carries %+v", g)
	}
	created := recv.waitOne("call_created", is(herald.EventCallCreated, "alice"))
	accepted := recv.waitOne("call_accepted", is(herald.EventCallAccepted, "bob"))
	for _, p := range []webhook.Payload{created, accepted} {
		if p.Call == nil || p.Call.CallID != c.ID || p.Call.Caller != "alice" {
			t.Errorf("%s carries %+v, want call %s", p.Type, p.Call, c.ID)
		}
	}
	if ps := accepted.Call.Participants; len(ps) != 2 || ps[1].State != string(herald.CallAccepted) || ps[1].Extended != "on my way" {
		t.Errorf("call_accepted participants = %+v", ps)
	}
	logout := recv.waitOne("bob's logout", is(herald.EventLogout, "bob"))
	if logout.Device != "bob-phone" {
		t.Errorf("logout device %q, want bob-phone", logout.Device)
	}
	offline := recv.waitOne("dave's offline", is(herald.EventOffline, "dave"))
	if offline.Reason != herald.OfflineConnectionLost || offline.Device != "raw" {
		t.Errorf("dave's offline = reason %q device %q, want %s on raw", offline.Reason, offline.Device, herald.OfflineConnectionLost)
	}

	// Exactly once each, by event ID, and by what happened.
	for _, w := range []struct {
		typ  herald.EventType
		user string
	}{
		{herald.EventLogin, "alice"}, {herald.EventLogin, "bob"}, {herald.EventLogin, "dave"},
		{herald.EventMessageSent, "alice"}, {herald.EventGroupChanged, "alice"},
		{herald.EventCallCreated, "alice"}, {herald.EventCallAccepted, "bob"},
		{herald.EventLogout, "bob"}, {herald.EventOffline, "dave"},
	} {
		if got := recv.find(is(w.typ, w.user)); len(got) != 1 {
			t.Errorf("%d %s events of %s, want 1", len(got), w.typ, w.user)
		}
	}
	recv.mu.Lock()
	if recv.dups != 0 || len(recv.bad) != 0 {
		t.Errorf("receiver: %d events accepted twice, bad requests %v", recv.dups, recv.bad)
	}
	if n := recv.attempts[msg.ID]; n != 3 {
		t.Errorf("message_sent was attempted %d times, want 3 (two failures, then accepted)", n)
	}
	recv.mu.Unlock()
	if st := srv.Webhooks().Stats(); st.Retried < 2 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("webhook stats = %+v, want at least 2 retries, no failure or drop", st)
	}
}

// TestWebhookOfflineHeartbeat: a client that goes silent is reported
// offline once the heartbeat timeout closes its session.
func TestWebhookOfflineHeartbeat(t *testing.T) {
	recv := newHookReceiver(t, nil)
	srv := startServer(t, func(c *config.Config) {
		c.WebhookURL = recv.srv.URL
		c.HeartbeatInterval, c.HeartbeatTimeout = 100*time.Millisecond, 400*time.Millisecond
	})
	erin := dialRaw(t, srv.URL())
	erin.login("erin", "frozen")
	if code := erin.expectClose(); code != proto.CloseHeartbeatTimeout {
		t.Fatalf("closed with %d, want %d", code, proto.CloseHeartbeatTimeout)
	}
	p := recv.waitOne("erin's offline", is(herald.EventOffline, "erin"))
	if p.Reason != herald.OfflineHeartbeatTimeout {
		t.Errorf("offline reason %q, want %s", p.Reason, herald.OfflineHeartbeatTimeout)
	}
	if got := recv.find(func(p webhook.Payload) bool { return p.User == "erin" }); len(got) != 2 {
		t.Errorf("erin's events = %+v, want a login and an offline", got)
	}
}

// beforeSendBackend rejects "spam" and rewrites "darn".
func beforeSendBackend(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(webhook.SigningKey(testSecret), r.Header.Get(webhook.HeaderTimestamp), r.Header.Get(webhook.HeaderSignature), body, time.Now(), time.Minute); err != nil {
			t.Errorf("before_send request: %v", err)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var req webhook.BeforeSendRequest
		json.Unmarshal(body, &req)
		switch {
		case strings.Contains(req.Message.Text, "spam"):
			io.WriteString(w, `{"action":"reject","reason":"no spam please"}`)
		case strings.Contains(req.Message.Text, "darn"):
			io.WriteString(w, `{"action":"rewrite","text":"d**n","extended_data":"{\"filtered\":true}"}`)
		default:
			io.WriteString(w, `{"action":"allow"}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestWebhookBeforeSend(t *testing.T) {
	recv := newHookReceiver(t, nil)
	backend := beforeSendBackend(t)
	srv := startServer(t, func(c *config.Config) {
		c.WebhookURL = recv.srv.URL
		c.WebhookBeforeSendURL = backend.URL
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	bobIn := newInbox()
	bob := newClient(t, srv.URL(), "bob-phone", bobIn)
	login(t, bob, "bob")

	_, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("buy spam"))
	if !errors.Is(err, client.ErrForbidden) || !strings.Contains(err.Error(), "no spam please") {
		t.Errorf("rejected send = %v, want ErrForbidden with the backend's reason", err)
	}
	m, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("oh darn"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Text != "d**n" || m.Extended != `{"filtered":true}` {
		t.Errorf("sender got %q / %q, want the rewrite", m.Text, m.Extended)
	}
	if _, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("plain")); err != nil {
		t.Fatal(err)
	}
	got := bobIn.wait(t, 2)
	if len(got) != 2 || got[0].Text != "d**n" || got[0].Extended != `{"filtered":true}` || got[1].Text != "plain" || got[0].Seq != 1 {
		t.Errorf("bob received %+v, want the rewritten message (seq 1) then plain; nothing of the rejected one", got)
	}
	// The backend hears of what was stored: the rewrite, not the rejected one.
	recv.waitOne("message_sent of plain", func(p webhook.Payload) bool { return p.Msg != nil && p.Msg.Text == "plain" })
	if sent := recv.find(is(herald.EventMessageSent, "alice")); len(sent) != 2 {
		t.Errorf("%d message_sent events, want 2", len(sent))
	}
	if rw := recv.find(func(p webhook.Payload) bool { return p.Msg != nil && p.Msg.Text == "d**n" }); len(rw) != 1 {
		t.Errorf("message_sent of the rewrite: %d events, want 1", len(rw))
	}
	st := srv.Webhooks().Stats()
	if st.BeforeSendRejected != 1 || st.BeforeSendRewritten != 1 || st.BeforeSendAllowed != 1 {
		t.Errorf("before_send stats = %+v", st)
	}
}

func TestWebhookBeforeSendFallback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/check"
	ln.Close() // nothing answers there
	for _, fallback := range []string{"allow", "reject"} {
		t.Run(fallback, func(t *testing.T) {
			srv := startServer(t, func(c *config.Config) {
				c.WebhookBeforeSendURL = down
				c.WebhookBeforeSendFallback = fallback
				c.WebhookBeforeSendTimeout = 500 * time.Millisecond
			})
			alice := newClient(t, srv.URL(), "alice-phone", newInbox())
			login(t, alice, "alice")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("hello"))
			switch fallback {
			case "allow":
				if err != nil {
					t.Errorf("send with the backend down, fallback allow = %v", err)
				}
			case "reject":
				if !errors.Is(err, client.ErrUnavailable) {
					t.Errorf("send with the backend down, fallback reject = %v, want ErrUnavailable", err)
				}
			}
			if st := srv.Webhooks().Stats(); st.BeforeSendFallback != 1 {
				t.Errorf("fallbacks counted %d, want 1", st.BeforeSendFallback)
			}
		})
	}
}
