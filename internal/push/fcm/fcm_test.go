package fcm

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

func TestSendNotification(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	c := content(id1)
	c.Strategy = push.Strategy{ChannelID: "messages", CollapseKey: "chat", Sound: "ping"}
	c.Badge, c.HasBadge = 4, true
	n := note(t, p, c, "tok-1")
	n.Expiration = e.now.Now().Add(90 * time.Second)
	res := p.Send(context.Background(), n)
	if res.Verdict != push.Delivered || res.Status != 200 {
		t.Fatalf("Send = %+v, want delivered", res)
	}
	if !strings.Contains(string(res.Body), `"name":"projects/proj-a/messages/`) {
		t.Errorf("Body = %s, want the message name", res.Body)
	}
	in := e.fcm.Inbox("tok-1")
	if len(in) != 1 {
		t.Fatalf("inbox has %d entries, want 1", len(in))
	}
	got := in[0]
	if got.Vendor != "fcm" || got.ID != id1 || got.CollapseID != id1 || got.Topic != "proj-a" || got.PushType != "notification" || got.Priority != 10 {
		t.Errorf("notification = %+v", got)
	}
	if want := e.now.Now().Add(90 * time.Second).Unix(); got.Expiration != want {
		t.Errorf("Expiration = %d, want %d", got.Expiration, want)
	}
	s := decodeSent(t, got)
	an := s.Android.Notification
	switch {
	case s.Token != "tok-1", s.Android.Priority != "HIGH", s.Android.TTL != "90s", s.Android.CollapseKey != "chat":
		t.Errorf("android = %+v, token %q", s.Android, s.Token)
	case an == nil || an.ChannelID != "messages" || an.Tag != id1 || an.Sound != "ping" || an.NotificationCount == nil || *an.NotificationCount != 4:
		t.Errorf("android.notification = %+v", an)
	case s.Notification == nil || s.Notification.Title != "Ada" || s.Notification.Body != "hello <world>":
		t.Errorf("notification = %+v", s.Notification)
	case s.Data["payload"] != `{"k":"v"}` || s.Data["notif_id"] != id1:
		t.Errorf("data = %v", s.Data)
	}
	var h map[string]any
	if err := json.Unmarshal([]byte(s.Data["herald"]), &h); err != nil {
		t.Fatalf("data.herald %q: %v", s.Data["herald"], err)
	}
	if h["conv"] != "c1" || h["msg_id"] != 7.0 || h["seq"] != 3.0 || h["from"] != "ada" {
		t.Errorf("herald = %v", h)
	}
}

func TestDataOnly(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	tests := []struct {
		name     string
		edit     func(*push.Content)
		priority int
		herald   string
	}{
		{"background", func(c *push.Content) { c.Strategy.Type = push.TypeBackground }, 5, `{"conv":"c1","msg_id":7,"seq":3,"from":"ada"}`},
		{"call invitation", func(c *push.Content) {
			c.Conv, c.MsgID, c.Seq, c.CallID, c.CallEvent = "", 0, 0, "call-9", "invite"
		}, 10, `{"from":"ada","call_id":"call-9","call_event":"invite"}`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := "data-" + string(rune('a'+i))
			c := content(id1)
			tt.edit(c)
			if res := p.Send(context.Background(), note(t, p, c, tok)); res.Verdict != push.Delivered {
				t.Fatalf("Send = %+v", res)
			}
			got := e.fcm.Arrived(tok)[0]
			s := decodeSent(t, got)
			if got.PushType != "data" || s.Notification != nil || s.Android.Notification != nil {
				t.Errorf("type %q, notification %+v, android.notification %+v; want a data message", got.PushType, s.Notification, s.Android.Notification)
			}
			if got.Priority != tt.priority {
				t.Errorf("priority = %d, want %d", got.Priority, tt.priority)
			}
			if s.Data["herald"] != tt.herald {
				t.Errorf("herald = %s, want %s", s.Data["herald"], tt.herald)
			}
			if got.ID != id1 {
				t.Errorf("ID = %q, want the notif_id %q", got.ID, id1)
			}
		})
	}
}

// TestTTL: the TTL is the time left until Expiration, whole seconds, at
// least 0 and at most four weeks; no Expiration is "now or never".
func TestTTL(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	now := e.now.Now()
	tests := []struct {
		name string
		exp  time.Time
		want string
	}{
		{"none", time.Time{}, "0s"},
		{"an hour", now.Add(time.Hour + 300*time.Millisecond), "3600s"},
		{"past", now.Add(-time.Minute), "0s"},
		{"capped", now.Add(60 * 24 * time.Hour), "2419200s"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := "ttl-" + string(rune('a'+i))
			n := note(t, p, content(id1), tok)
			n.Expiration = tt.exp
			if res := p.Send(context.Background(), n); res.Verdict != push.Delivered {
				t.Fatalf("Send = %+v", res)
			}
			if got := decodeSent(t, e.fcm.Arrived(tok)[0]).Android.TTL; got != tt.want {
				t.Errorf("ttl = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestVerdicts: every FCM answer Herald distinguishes maps to the
// verdict issue 10 names, with the errorCode as the reason.
func TestVerdicts(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	tests := []struct {
		name       string
		token      string
		steps      []emulator.Step
		verdict    push.Verdict
		reason     string
		status     int
		retryAfter time.Duration
	}{
		{"unregistered", "", []emulator.Step{{Status: 404}}, push.DropToken, "UNREGISTERED", 404, 0},
		{"sender id mismatch", "", []emulator.Step{{Status: 403}}, push.DropToken, "SENDER_ID_MISMATCH", 403, 0},
		{"invalid argument naming the token", "", []emulator.Step{{Status: 400}}, push.DropToken, "INVALID_ARGUMENT: message.token", 400, 0},
		{"malformed token (documented message)", "not a token!", nil, push.DropToken, "INVALID_ARGUMENT: message.token", 400, 0},
		{"invalid argument naming the payload", "", []emulator.Step{{Status: 400, Reason: "INVALID_ARGUMENT message.data"}}, push.Permanent, "INVALID_ARGUMENT", 400, 0},
		{"quota exceeded", "", []emulator.Step{{Status: 429, RetryAfter: 30 * time.Second}}, push.Retry, "QUOTA_EXCEEDED", 429, 30 * time.Second},
		{"unavailable", "", []emulator.Step{{Status: 503, RetryAfter: 2 * time.Second}}, push.Retry, "UNAVAILABLE", 503, 2 * time.Second},
		{"internal", "", []emulator.Step{{Status: 500}}, push.Retry, "INTERNAL", 500, 0},
		{"third party auth error", "", []emulator.Step{{Status: 401, Reason: "THIRD_PARTY_AUTH_ERROR"}}, push.Permanent, "THIRD_PARTY_AUTH_ERROR", 401, 0},
		{"permission denied", "", []emulator.Step{{Status: 403, Reason: "PERMISSION_DENIED"}}, push.Credentials, "PERMISSION_DENIED", 403, 0},
		{"unauthenticated twice", "", []emulator.Step{{Status: 401, Times: 2}}, push.Credentials, "UNAUTHENTICATED", 401, 0},
		{"not found without UNREGISTERED", "", []emulator.Step{{Status: 404, Reason: "NOT_FOUND"}}, push.Permanent, "NOT_FOUND", 404, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tt.token
			if tok == "" {
				tok = "verdict-" + string(rune('a'+i))
			}
			e.fcm.Script(tok, tt.steps...)
			res := p.Send(context.Background(), note(t, p, content(id1), tok))
			if res.Verdict != tt.verdict || res.Reason != tt.reason || res.Status != tt.status || res.RetryAfter != tt.retryAfter {
				t.Errorf("Send = verdict %v, reason %q, status %d, retry after %v; want %v, %q, %d, %v",
					res.Verdict, res.Reason, res.Status, res.RetryAfter, tt.verdict, tt.reason, tt.status, tt.retryAfter)
			}
			if len(res.Body) == 0 || !json.Valid(res.Body) {
				t.Errorf("Body = %q, want the raw answer", res.Body)
			}
			if n := len(e.fcm.Arrived(tok)); n != 0 {
				t.Errorf("%d messages arrived, want none", n)
			}
		})
	}
	t.Run("dropped connection", func(t *testing.T) {
		e.fcm.Script("abort", emulator.Step{Abort: true})
		res := p.Send(context.Background(), note(t, p, content(id1), "abort"))
		if res.Verdict != push.Retry || res.Err == nil {
			t.Errorf("Send = %+v, want Retry with Err", res)
		}
	})
}

// TestTokenShared: concurrent Sends share one access token, fetched once,
// and one HTTP/2 connection. The token endpoint holds its answer until
// every Send waits for the token, so all of them overlap the one fetch.
func TestTokenShared(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	e.fcm.OnToken(func(*http.Request) { <-release })
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	const senders = 20
	waiting := make(chan struct{}, senders)
	p.projects[0].tokens.OnWait = func() { waiting <- struct{}{} }
	var wg sync.WaitGroup
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := "shared-" + string(rune('a'+i))
			if res := p.Send(context.Background(), note(t, p, content(id1), tok)); res.Verdict != push.Delivered {
				t.Errorf("Send = %+v", res)
			}
		}()
	}
	for range senders {
		<-waiting
	}
	close(release)
	wg.Wait()
	if got := e.fcm.TokensIssued(); got != 1 {
		t.Errorf("emulator issued %d access tokens, want 1", got)
	}
	if st := p.Stats(); st.TokensFetched != 1 || st.Delivered != 20 {
		t.Errorf("Stats = %+v, want 1 token fetched, 20 delivered", st)
	}
	// One connection carried the token fetch and the 20 concurrent sends:
	// HTTP/2, kept open (HTTP/1.1 would have needed one per request).
	if c := e.apns.Stats().Connections; c != 1 {
		t.Errorf("%d connections to the emulator, want 1", c)
	}
}

// TestTokenRefreshedBeforeExpiry: the token is replaced RefreshAhead
// before it expires, not after, and not earlier.
func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}, RefreshAhead: 5 * time.Minute})
	send := func() {
		t.Helper()
		if res := p.Send(context.Background(), note(t, p, content(id1), "refresh")); res.Verdict != push.Delivered {
			t.Fatalf("Send = %+v", res)
		}
	}
	send()
	e.now.Advance(54 * time.Minute) // the emulator's tokens live an hour
	send()
	if got := e.fcm.TokensIssued(); got != 1 {
		t.Fatalf("after 54 minutes: %d tokens issued, want 1 (still cached)", got)
	}
	e.now.Advance(2 * time.Minute) // 4 minutes before expiry
	send()
	if got := e.fcm.TokensIssued(); got != 2 {
		t.Fatalf("4 minutes before expiry: %d tokens issued, want 2 (refreshed)", got)
	}
	if st := p.Stats(); st.TokenRetries != 0 {
		t.Errorf("TokenRetries = %d, want 0: the old token was never refused", st.TokenRetries)
	}
}

// TestRefusedTokenRefreshesOnce: a 401 with a cached token fetches one new
// token and resends; the push is delivered once.
func TestRefusedTokenRefreshesOnce(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	if res := p.Send(context.Background(), note(t, p, content(id1), "expire")); res.Verdict != push.Delivered {
		t.Fatalf("Send = %+v", res)
	}
	e.fcm.ExpireTokens()
	if res := p.Send(context.Background(), note(t, p, content(id2), "expire")); res.Verdict != push.Delivered {
		t.Fatalf("Send after ExpireTokens = %+v, want delivered", res)
	}
	if got := e.fcm.TokensIssued(); got != 2 {
		t.Errorf("%d tokens issued, want 2", got)
	}
	if st := p.Stats(); st.TokenRetries != 1 {
		t.Errorf("TokenRetries = %d, want 1", st.TokenRetries)
	}
	if n := len(e.fcm.Arrived("expire")); n != 2 {
		t.Errorf("%d arrived, want 2", n)
	}
}

// TestRevokedAccount: a service account the token endpoint refuses
// suspends the project (Credentials), naming the OAuth2 error.
func TestRevokedAccount(t *testing.T) {
	e := newEnv(t)
	pc := e.project(t, "proj-a", app)
	var logs bytes.Buffer
	p := e.provider(t, Config{Projects: []ProjectConfig{pc}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if res := p.Send(context.Background(), note(t, p, content(id1), "revoked")); res.Verdict != push.Delivered {
		t.Fatalf("Send = %+v", res)
	}
	sa, _ := ParseServiceAccount(pc.ServiceAccount)
	if !e.fcm.RevokeAccount(sa.ClientEmail) {
		t.Fatal("RevokeAccount found no account")
	}
	res := p.Send(context.Background(), note(t, p, content(id2), "revoked"))
	if res.Verdict != push.Credentials || res.Status != 400 || !strings.Contains(res.Reason, "invalid_grant") {
		t.Errorf("Send = %+v, want Credentials naming invalid_grant", res)
	}
	if strings.Contains(res.Reason, "ya29.") || strings.Contains(string(res.Body), "ya29.") {
		t.Errorf("result carries an access token: %+v", res)
	}
	if l := logs.String(); !strings.Contains(l, "project=proj-a") || strings.Contains(l, "ya29.") || strings.Contains(l, "PRIVATE KEY") {
		t.Errorf("log = %q; want the suspension logged with the project, and no token or key", l)
	}
}

// TestSendBoundedByTimeout: a vendor that does not answer costs at most
// Timeout, and the push is retried.
func TestSendBoundedByTimeout(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}, Timeout: 300 * time.Millisecond})
	n := note(t, p, content(id1), "slow")
	if res := p.Send(context.Background(), n); res.Verdict != push.Delivered { // the token is fetched
		t.Fatalf("Send = %+v", res)
	}
	e.fcm.Script("slow", emulator.Step{Delay: time.Minute})
	start := time.Now()
	res := p.Send(context.Background(), n)
	if took := time.Since(start); res.Verdict != push.Retry || res.Err == nil || took > 5*time.Second {
		t.Errorf("Send = %+v after %v; want Retry with Err after about 300ms", res, took)
	}
}

// TestProjectsByApp: each package name goes to its own project; the
// wildcard takes the others; an unknown app is refused.
func TestProjectsByApp(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{
		e.project(t, "proj-a", app, "com.example.other"),
		e.project(t, "proj-b", Wildcard),
	}})
	for _, tt := range []struct{ app, project string }{{app, "proj-a"}, {"com.example.other", "proj-a"}, {"org.example.x", "proj-b"}} {
		tok := "by-app-" + strings.ReplaceAll(tt.app, ".", "-")
		n := note(t, p, content(id1), tok)
		n.Device.App = tt.app
		if res := p.Send(context.Background(), n); res.Verdict != push.Delivered {
			t.Fatalf("%s: Send = %+v", tt.app, res)
		}
		if got := e.fcm.Arrived(tok)[0].Topic; got != tt.project {
			t.Errorf("%s went to project %q, want %q", tt.app, got, tt.project)
		}
	}
	if !p.HasApp("org.example.x") || p.HasApp("bad app!") {
		t.Error("HasApp: wildcard must serve valid package names only")
	}
	only := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-c", app)}})
	if only.HasApp("org.example.x") {
		t.Error("HasApp(unlisted) = true without a wildcard")
	}
	n := note(t, only, content(id1), "x")
	n.Device.App = "org.example.x"
	if res := only.Send(context.Background(), n); res.Verdict != push.Permanent {
		t.Errorf("Send to an unconfigured app = %+v, want Permanent", res)
	}
}

func TestRenderTooLarge(t *testing.T) {
	c := content(id1)
	c.Config.Payload = strings.Repeat("x", MaxPayload)
	_, err := render(c)
	if herald.ErrorCode(err) != herald.CodeTooLarge || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("render = %v, want too_large naming the limit", err)
	}
	c.Config.Payload = strings.Repeat("x", 3500)
	b, err := render(c)
	if err != nil || len(b) > MaxPayload {
		t.Fatalf("render of %d bytes = %v", len(b), err)
	}
}

func TestResendReplaces(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	for range 2 {
		if res := p.Send(context.Background(), note(t, p, content(id1), "again")); res.Verdict != push.Delivered {
			t.Fatalf("Send = %+v", res)
		}
	}
	in, arrived := e.fcm.Inbox("again"), e.fcm.Arrived("again")
	if len(in) != 1 || in[0].Deliveries != 2 || len(arrived) != 2 {
		t.Errorf("inbox %d entries (deliveries %d), arrived %d; want 1 entry of 2 deliveries, 2 arrived", len(in), in[0].Deliveries, len(arrived))
	}
	if d := e.fcm.Stats().Duplicates; d != 1 {
		t.Errorf("Duplicates = %d, want 1", d)
	}
}

func TestNewRefuses(t *testing.T) {
	e := newEnv(t)
	good := e.project(t, "proj-a", app)
	tests := []struct {
		name string
		edit func(*ProjectConfig)
		want string
	}{
		{"not JSON", func(p *ProjectConfig) { p.ServiceAccount = []byte("{nope") }, "is not JSON"},
		{"wrong type", func(p *ProjectConfig) { p.ServiceAccount = []byte(`{"type":"authorized_user"}`) }, `has type "authorized_user"`},
		{"bad key", func(p *ProjectConfig) {
			p.ServiceAccount = []byte(`{"type":"service_account","project_id":"p","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`)
		}, "private_key does not parse"},
		{"no apps", func(p *ProjectConfig) { p.Apps = nil }, "no apps"},
		{"http URL", func(p *ProjectConfig) { p.URL = "http://127.0.0.1:1" }, "not an https URL"},
		{"bad app", func(p *ProjectConfig) { p.Apps = []string{"com/x"} }, `app "com/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := good
			tt.edit(&pc)
			_, err := New(Config{Projects: []ProjectConfig{pc}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error quotes the key: %v", err)
			}
		})
	}
	t.Run("app twice", func(t *testing.T) {
		_, err := New(Config{Projects: []ProjectConfig{good, good}})
		if err == nil || !strings.Contains(err.Error(), "served by another project") {
			t.Errorf("New = %v", err)
		}
	})
}

// TestCloseEndsTokenFetch: Close ends an access token request in flight
// (x/oauth2 sends it without a context), and the Send waiting for it
// returns Retry, long before Timeout.
func TestCloseEndsTokenFetch(t *testing.T) {
	e := newEnv(t)
	started, ended := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.fcm.OnToken(func(r *http.Request) {
		once.Do(func() {
			close(started)
			<-r.Context().Done() // hang until the client goes away
			close(ended)
		})
	})
	p := e.provider(t, Config{Timeout: time.Hour, Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	n := note(t, p, content(id1), "hanging")
	res := make(chan push.Result, 1)
	go func() { res <- p.Send(context.Background(), n) }()
	<-started
	p.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the token request still runs 10s after Close")
	}
	select {
	case r := <-res:
		if r.Verdict != push.Retry {
			t.Errorf("Send waiting for the token = %+v, want retry", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send still waits 10s after Close")
	}
}

func TestClosed(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Config{Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	n := note(t, p, content(id1), "closed")
	p.Close()
	if res := p.Send(context.Background(), n); res.Verdict != push.Retry || res.Err != ErrClosed {
		t.Errorf("Send after Close = %+v", res)
	}
}

// TestWrongURLLogged: a 404 without an FCM error code (the URL names no
// project) fails the push permanently and logs an error naming the URL,
// once a minute per project; a 404 UNREGISTERED only drops the device.
func TestWrongURLLogged(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	p := e.provider(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Projects: []ProjectConfig{e.project(t, "proj-a", app)}})
	alarms := func() int { return strings.Count(logs.String(), "404 without an FCM error code") }
	e.fcm.Script("tok", emulator.Step{Status: 404})
	if res := p.Send(context.Background(), note(t, p, content(id1), "tok")); res.Verdict != push.DropToken || alarms() != 0 {
		t.Fatalf("404 UNREGISTERED: %v, %d alarms; want drop, none", res.Verdict, alarms())
	}
	for i, want := range []int{1, 1} {
		e.fcm.Script("tok", emulator.Step{Status: 404, Reason: "NOT_FOUND"})
		if res := p.Send(context.Background(), note(t, p, content(id1), "tok")); res.Verdict != push.Permanent || res.Status != 404 {
			t.Fatalf("send %d: %v %d %q, want permanent 404", i, res.Verdict, res.Status, res.Reason)
		}
		if got := alarms(); got != want {
			t.Fatalf("after send %d: %d alarms, want %d\n%s", i, got, want, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "/v1/projects/proj-a/messages:send") {
		t.Errorf("the alarm does not name the URL:\n%s", logs.String())
	}
	e.now.Advance(time.Minute)
	e.fcm.Script("tok", emulator.Step{Status: 404, Reason: "NOT_FOUND"})
	p.Send(context.Background(), note(t, p, content(id1), "tok"))
	if got := alarms(); got != 2 {
		t.Errorf("a minute later: %d alarms, want 2", got)
	}
}

// TestRenderBadgeUpdate: a silent badge update is a data message whose
// herald block holds the badge, with no notification.
func TestRenderBadgeUpdate(t *testing.T) {
	c := &push.Content{NotifID: "n1", BadgeOnly: true, Badge: 0, HasBadge: true, Strategy: push.Strategy{Type: push.TypeBackground}}
	b, err := render(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"android":{},"data":{"herald":"{\"badge\":0}","notif_id":"n1"}}`; string(b) != want {
		t.Errorf("render = %s, want %s", b, want)
	}
}
