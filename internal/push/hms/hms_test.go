package hms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

const (
	testApp    = "10001"
	testSecret = "s3cret-value"
	testPkg    = "im.herald.test"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	emu *emulator.HMS
	p   *Provider
	clk *clock
}

// setup starts an APNs emulator with the HMS emulator mounted on it and a
// provider for testApp serving testPkg.
func setup(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	a := emulator.New(emulator.Config{})
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	h := emulator.NewHMS(emulator.HMSConfig{Now: clk.Now})
	h.Mount(a)
	h.AddApp(testApp, testSecret)
	cfg := Config{
		Apps:     []AppConfig{{AppID: testApp, AppSecret: testSecret, Packages: []string{testPkg}, BadgeClass: "im.herald.test.Main"}},
		TokenURL: h.URL() + "/oauth2/v3/token", PushURL: h.URL(), RootCAs: a.CertPool(), Now: clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &env{emu: h, p: p, clk: clk}
}

const notifID = "0b9d7c4e-8a51-4c3e-9f1a-2d6e5b7c8a90"

func device(token string) herald.PushDevice {
	return herald.PushDevice{PushID: "p1", Provider: herald.ProviderHMS, Token: token, App: testPkg, Env: herald.EnvProduction}
}

func content() push.Content {
	return push.Content{
		NotifID: notifID,
		Config:  herald.PushConfig{Title: "Alice", Content: "hello <there>", Payload: `{"k":"v"}`, EnableBadge: true},
		Badge:   3, HasBadge: true,
		Conv: "c1", MsgID: 42, Seq: 7, From: "alice",
	}
}

// send renders c for token and sends it as the dispatcher does.
func (e *env) send(t *testing.T, c push.Content, token string) push.Result {
	t.Helper()
	d := device(token)
	b, err := e.p.Render(&c, &d)
	if err != nil {
		t.Fatal(err)
	}
	typ := push.TypeAlert
	if c.Strategy.Type != "" {
		typ = c.Strategy.Type
	}
	n := push.Notification{ID: notifID, CollapseID: notifID, Device: d, Type: typ, Priority: c.Strategy.Priority,
		Expiration: e.clk.Now().Add(90 * time.Second), Payload: b}
	return e.p.Send(context.Background(), &n)
}

func TestSendDelivers(t *testing.T) {
	e := setup(t, nil)
	res := e.send(t, content(), "tokA")
	if res.Verdict != push.Delivered || res.Status != 200 {
		t.Fatalf("got %v %d %q, want delivered 200", res.Verdict, res.Status, res.Reason)
	}
	in := e.emu.Inbox("tokA")
	if len(in) != 1 {
		t.Fatalf("inbox has %d, want 1", len(in))
	}
	n := in[0]
	if n.Vendor != "hms" || n.Topic != testApp || n.ID != notifID || n.PushType != "notification" || n.Priority != 10 {
		t.Errorf("got %+v", n)
	}
	if got, want := n.Headers["ttl"], "90s"; got != want {
		t.Errorf("ttl %q, want %q", got, want)
	}
	var m struct {
		Data    string `json:"data"`
		Android struct {
			BiTag        string `json:"bi_tag"`
			Notification struct {
				Title, Body, Tag string
				Badge            struct {
					SetNum int    `json:"set_num"`
					Class  string `json:"class"`
				}
			}
		}
	}
	if err := json.Unmarshal(n.Payload, &m); err != nil {
		t.Fatal(err)
	}
	nt := m.Android.Notification
	if nt.Title != "Alice" || nt.Body != "hello <there>" || nt.Tag != notifID || nt.Badge.SetNum != 3 || nt.Badge.Class == "" || m.Android.BiTag != notifID {
		t.Errorf("notification %+v bi_tag %q", nt, m.Android.BiTag)
	}
	var data struct{ Herald, Payload string }
	if err := json.Unmarshal([]byte(m.Data), &data); err != nil {
		t.Fatal(err)
	}
	if got, want := data.Herald, `{"conv":"c1","msg_id":42,"seq":7,"from":"alice"}`; got != want {
		t.Errorf("herald %s, want %s", got, want)
	}
	if data.Payload != `{"k":"v"}` {
		t.Errorf("payload %q", data.Payload)
	}
}

// TestResendReplaces: the notification ID is the tag, so a second send of
// one push replaces the shown notification.
func TestResendReplaces(t *testing.T) {
	e := setup(t, nil)
	for range 2 {
		if res := e.send(t, content(), "tokA"); res.Verdict != push.Delivered {
			t.Fatalf("got %v %q", res.Verdict, res.Reason)
		}
	}
	in, arrived := e.emu.Inbox("tokA"), e.emu.Arrived("tokA")
	if len(in) != 1 || in[0].Deliveries != 2 || len(arrived) != 2 {
		t.Fatalf("inbox %d (deliveries %v), arrived %d; want 1 (2), 2", len(in), in, len(arrived))
	}
	if got := e.emu.Stats().Duplicates; got != 1 {
		t.Errorf("duplicates %d, want 1", got)
	}
}

func TestDataOnly(t *testing.T) {
	for name, mod := range map[string]func(*push.Content){
		"background":  func(c *push.Content) { c.Strategy.Type = push.TypeBackground },
		"call invite": func(c *push.Content) { c.CallID, c.CallEvent, c.Conv, c.MsgID, c.Seq = "call1", "invite", "", 0, 0 },
	} {
		t.Run(name, func(t *testing.T) {
			e := setup(t, nil)
			c := content()
			mod(&c)
			if res := e.send(t, c, "tokA"); res.Verdict != push.Delivered {
				t.Fatalf("got %v %q", res.Verdict, res.Reason)
			}
			n := e.emu.Inbox("tokA")[0]
			if n.PushType != "data" || strings.Contains(string(n.Payload), `"notification"`) {
				t.Errorf("got %s %s, want a data message", n.PushType, n.Payload)
			}
			if !strings.Contains(string(n.Payload), `herald`) {
				t.Errorf("no herald block: %s", n.Payload)
			}
			if c.Strategy.Type == push.TypeBackground && n.Headers["urgency"] != "NORMAL" {
				t.Errorf("urgency %q, want NORMAL", n.Headers["urgency"])
			}
		})
	}
}

// TestVerdicts: each answer of Huawei's maps to its verdict.
func TestVerdicts(t *testing.T) {
	cases := []struct {
		name   string
		step   emulator.Step
		want   push.Verdict
		reason string
	}{
		{"illegal token drops", emulator.Step{Reason: "80300007"}, push.DropToken, "80300007"},
		{"flow control retries", emulator.Step{Status: 503, RetryAfter: 30 * time.Second}, push.Retry, "503 Service Unavailable"},
		{"429 retries", emulator.Step{Status: 429}, push.Retry, "429 Too Many Requests"},
		{"internal error retries", emulator.Step{Status: 500}, push.Retry, "81000001"},
		{"oauth error with a new token too suspends", emulator.Step{Status: 401, Reason: "80200001", Times: 2}, push.Credentials, "80200001"},
		{"no permission suspends", emulator.Step{Status: 403, Reason: "80300002"}, push.Credentials, "80300002"},
		{"too large is permanent", emulator.Step{Status: 400, Reason: "80300008"}, push.Permanent, "80300008"},
		{"parameter error is permanent", emulator.Step{Status: 400}, push.Permanent, "80100001"},
		{"high urgency refused is permanent", emulator.Step{Status: 400, Reason: "80300011"}, push.Permanent, "80300011"},
		{"dropped connection retries", emulator.Step{Abort: true}, push.Retry, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, nil)
			e.emu.Script("tokA", tc.step)
			res := e.send(t, content(), "tokA")
			if res.Verdict != tc.want {
				t.Fatalf("verdict %v (%q), want %v", res.Verdict, res.Reason, tc.want)
			}
			if tc.reason != "" && res.Reason != tc.reason {
				t.Errorf("reason %q, want %q", res.Reason, tc.reason)
			}
			if tc.step.RetryAfter > 0 && res.RetryAfter != tc.step.RetryAfter {
				t.Errorf("RetryAfter %v, want %v", res.RetryAfter, tc.step.RetryAfter)
			}
			if tc.step.Abort && res.Err == nil {
				t.Error("no Err for a dropped connection")
			}
			if len(e.emu.Inbox("tokA")) != 0 {
				t.Error("the push arrived")
			}
		})
	}
}

// TestPartialSuccess: an 80100000 drops exactly the tokens it names.
func TestPartialSuccess(t *testing.T) {
	body := func(illegal ...string) []byte {
		msg, _ := json.Marshal(partial{Success: 1, Failure: len(illegal), IllegalTokens: illegal})
		b, _ := json.Marshal(hmsAnswer{Code: CodePartial, Msg: string(msg)})
		return b
	}
	now := time.Now()
	if res := answer(200, body("tokA"), "", "tokA", now); res.Verdict != push.DropToken || res.Reason != CodePartial {
		t.Errorf("named token: %v %q, want drop_token 80100000", res.Verdict, res.Reason)
	}
	if res := answer(200, body("tokB"), "", "tokA", now); res.Verdict != push.Delivered {
		t.Errorf("other token named: %v, want delivered", res.Verdict)
	}
	if res := answer(200, []byte(`{"code":"80100000","msg":"not json"}`), "", "tokA", now); res.Verdict != push.Permanent {
		t.Errorf("unreadable msg: %v, want permanent", res.Verdict)
	}
}

// TestExpiredTokenRefreshesOnce: 80200003 makes Send fetch a new access
// token and send again, once.
func TestExpiredTokenRefreshesOnce(t *testing.T) {
	e := setup(t, nil)
	if res := e.send(t, content(), "tokA"); res.Verdict != push.Delivered {
		t.Fatalf("got %v %q", res.Verdict, res.Reason)
	}
	e.emu.ExpireTokens()
	if res := e.send(t, content(), "tokA"); res.Verdict != push.Delivered {
		t.Fatalf("after expiry: %v %q, want delivered", res.Verdict, res.Reason)
	}
	if s := e.p.Stats(); s.TokenRequests != 2 || s.TokenRetries != 1 {
		t.Errorf("token requests %d, retries %d; want 2, 1", s.TokenRequests, s.TokenRetries)
	}
	if got := e.emu.Stats().Rejected["80200003"]; got != 1 {
		t.Errorf("80200003 answered %d times, want 1", got)
	}
	// A fresh token called expired too: no loop, the app is suspended.
	e.emu.Script("tokA", emulator.Step{Status: 401, Reason: "80200003", Times: 2})
	res := e.send(t, content(), "tokA")
	if res.Verdict != push.Credentials {
		t.Errorf("fresh token expired: %v, want credentials", res.Verdict)
	}
	if got := e.emu.Stats().Rejected["80200003"]; got != 3 {
		t.Errorf("80200003 answered %d times in all, want 3 (one resend)", got)
	}
}

// TestRefusedTokenRefreshesOnce: 80200001 or a 401 without a result code
// (a token revoked early, a gateway's answer) makes Send fetch a new access
// token and send again before suspending the app; refused again with the
// new token, the app is suspended.
func TestRefusedTokenRefreshesOnce(t *testing.T) {
	for _, reason := range []string{CodeAuthFailed, "unauthorized"} {
		t.Run(reason, func(t *testing.T) {
			e := setup(t, nil)
			e.emu.Script("tokA", emulator.Step{Status: 401, Reason: reason})
			if res := e.send(t, content(), "tokA"); res.Verdict != push.Delivered {
				t.Fatalf("got %v %q, want delivered with a new token", res.Verdict, res.Reason)
			}
			if s := e.p.Stats(); s.TokenRequests != 2 || s.TokenRetries != 1 {
				t.Errorf("token requests %d, retries %d; want 2, 1", s.TokenRequests, s.TokenRetries)
			}
			e.emu.Script("tokA", emulator.Step{Status: 401, Reason: reason, Times: 2})
			if res := e.send(t, content(), "tokA"); res.Verdict != push.Credentials {
				t.Errorf("refused with the new token too: %v %q, want credentials", res.Verdict, res.Reason)
			}
			if s := e.p.Stats(); s.TokenRequests != 3 || s.TokenRetries != 2 {
				t.Errorf("token requests %d, retries %d; want 3, 2 (one resend, no loop)", s.TokenRequests, s.TokenRetries)
			}
		})
	}
}

// TestTokenShared: concurrent sends on a new provider make one token
// request (the token endpoint holds its answer until every send waits for
// the token, so all of them overlap it); a token is replaced before it
// expires, not after Huawei refuses it.
func TestTokenShared(t *testing.T) {
	e := setup(t, nil)
	release := make(chan struct{})
	e.emu.OnToken(func(*http.Request) { <-release })
	const senders = 16
	waiting := make(chan struct{}, senders)
	e.p.apps[testPkg].tokens.OnWait = func() { waiting <- struct{}{} }
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			if res := e.send(t, content(), "tokA"); res.Verdict != push.Delivered {
				t.Errorf("got %v %q", res.Verdict, res.Reason)
			}
		})
	}
	for range senders {
		<-waiting
	}
	close(release)
	wg.Wait()
	e.emu.OnToken(nil)
	e.p.apps[testPkg].tokens.OnWait = nil
	if got := e.p.Stats().TokenRequests; got != 1 {
		t.Fatalf("token requests %d, want 1", got)
	}
	e.clk.add(time.Hour - DefaultRefreshBefore + time.Second)
	if res := e.send(t, content(), "tokA"); res.Verdict != push.Delivered {
		t.Fatal(res.Reason)
	}
	if s := e.p.Stats(); s.TokenRequests != 2 || s.TokenRetries != 0 {
		t.Errorf("token requests %d, retries %d; want 2 (refreshed before expiry), 0", s.TokenRequests, s.TokenRetries)
	}
}

// TestRefusedCredentials: a wrong secret or a revoked app suspends the app,
// and the secret appears in no result.
func TestRefusedCredentials(t *testing.T) {
	t.Run("wrong secret", func(t *testing.T) {
		e := setup(t, func(c *Config) { c.Apps[0].AppSecret = "wrong-secret-value" })
		res := e.send(t, content(), "tokA")
		if res.Verdict != push.Credentials || res.Status != http.StatusUnauthorized {
			t.Fatalf("got %v %d %q, want credentials 401", res.Verdict, res.Status, res.Reason)
		}
		if strings.Contains(res.Reason+string(res.Body)+res.Err.Error(), "wrong-secret-value") {
			t.Error("the secret leaks into the result")
		}
	})
	t.Run("revoked", func(t *testing.T) {
		e := setup(t, nil)
		e.send(t, content(), "tokA")
		e.emu.RevokeApp(testApp)
		// 80200001 first makes Send try a new token, which is refused.
		res := e.send(t, content(), "tokA")
		if res.Verdict != push.Credentials || !strings.Contains(res.Reason, "invalid client_id") {
			t.Fatalf("got %v %q, want credentials, the token request refused", res.Verdict, res.Reason)
		}
		if s := e.p.Stats(); s.TokenRequests != 2 || s.TokenRetries != 1 {
			t.Errorf("token requests %d, retries %d; want 2, 1 (a new token tried once)", s.TokenRequests, s.TokenRetries)
		}
	})
}

func TestRenderSize(t *testing.T) {
	e := setup(t, nil)
	d := device("tokA")
	c := content()
	c.Config.Payload = strings.Repeat("x", 5000)
	_, err := e.p.Render(&c, &d)
	if herald.ErrorCode(err) != herald.CodeTooLarge || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("got %v, want too_large naming 4096", err)
	}
	// The largest payload that renders is accepted by the emulator: what
	// Send adds never makes it larger.
	lo, hi := 0, 5000
	for lo < hi {
		mid := (lo + hi + 1) / 2
		c.Config.Payload = strings.Repeat("x", mid)
		if _, err := e.p.Render(&c, &d); err == nil {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	c.Config.Payload = strings.Repeat("x", lo)
	if res := e.send(t, c, "tokA"); res.Verdict != push.Delivered {
		t.Fatalf("largest rendered payload: %v %q", res.Verdict, res.Reason)
	}
}

// TestRenderNoAppSizesTheLongestBadge: the size check before a message is
// accepted renders for a device of no app; with badges on, that render
// carries the longest badge class of any app, so a message accepted fits
// every app's badge.
func TestRenderNoAppSizesTheLongestBadge(t *testing.T) {
	const long = "com.example.chat.ui.main.activities.MainLauncherActivity"
	p, err := New(Config{Apps: []AppConfig{
		{AppID: "100001", AppSecret: "s", Packages: []string{"com.example.short"}, BadgeClass: "a.B"},
		{AppID: "100002", AppSecret: "s", Packages: []string{"com.example.long"}, BadgeClass: long},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := content()
	c.Config.EnableBadge, c.HasBadge, c.Badge = true, true, 99999
	got, err := p.Render(&c, &herald.PushDevice{Provider: herald.ProviderHMS})
	if err != nil {
		t.Fatal(err)
	}
	want, err := p.Render(&c, &herald.PushDevice{Provider: herald.ProviderHMS, App: "com.example.long"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < len(want) || !strings.Contains(string(got), long) {
		t.Fatalf("rendered with no app: %d bytes %s; want at least the %d bytes of the app with the longest badge class", len(got), got, len(want))
	}
}

func TestCollapseKey(t *testing.T) {
	for k, want := range map[string]int{"-1": -1, "0": 0, "100": 100} {
		if got := collapseKey(k); got == nil || *got != want {
			t.Errorf("collapseKey(%q) = %v, want %d", k, got, want)
		}
	}
	for _, k := range []string{"101", "chat", "calls"} {
		if got := collapseKey(k); got == nil || *got < 0 || *got > 100 {
			t.Errorf("collapseKey(%q) = %v, want 0-100", k, got)
		}
	}
	if collapseKey("") != nil {
		t.Error("empty key is set")
	}
}

func TestNewRefuses(t *testing.T) {
	ok := AppConfig{AppID: "1", AppSecret: "s", Packages: []string{"a.b"}}
	for name, cfg := range map[string]Config{
		"no apps":       {},
		"no secret":     {Apps: []AppConfig{{AppID: "1", Packages: []string{"a.b"}}}},
		"no packages":   {Apps: []AppConfig{{AppID: "1", AppSecret: "s"}}},
		"twice":         {Apps: []AppConfig{ok, ok}},
		"package twice": {Apps: []AppConfig{ok, {AppID: "2", AppSecret: "s", Packages: []string{"a.b"}}}},
		"http url":      {Apps: []AppConfig{ok}, PushURL: "http://x"},
		"letters in id": {Apps: []AppConfig{{AppID: "app-1", AppSecret: "s", Packages: []string{"a.b"}}}},
		"empty id":      {Apps: []AppConfig{{AppSecret: "s", Packages: []string{"a.b"}}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), `"s"`) {
			t.Errorf("%s: error quotes the secret: %v", name, err)
		}
	}
}

func TestSendAfterClose(t *testing.T) {
	e := setup(t, nil)
	e.p.Close()
	if res := e.send(t, content(), "tokA"); res.Verdict != push.Retry || !errors.Is(res.Err, ErrClosed) {
		t.Fatalf("got %v %v", res.Verdict, res.Err)
	}
}

// TestWrongURLLogged: a 404 without a Huawei result code (push_url or the
// app ID in it is wrong) fails the push permanently and logs an error
// naming the URL, once a minute per app.
func TestWrongURLLogged(t *testing.T) {
	var logs bytes.Buffer
	e := setup(t, func(c *Config) {
		c.PushURL += "/wrong"
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	alarms := func() int { return strings.Count(logs.String(), "404 without a result code") }
	for i, want := range []int{1, 1} {
		if res := e.send(t, content(), "tokA"); res.Verdict != push.Permanent || res.Status != http.StatusNotFound {
			t.Fatalf("send %d: %v %d %q, want permanent 404", i, res.Verdict, res.Status, res.Reason)
		}
		if got := alarms(); got != want {
			t.Fatalf("after send %d: %d alarms, want %d\n%s", i, got, want, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "/wrong/v1/"+testApp+"/messages:send") {
		t.Errorf("the alarm does not name the URL:\n%s", logs.String())
	}
	e.clk.add(time.Minute)
	e.send(t, content(), "tokA")
	if got := alarms(); got != 2 {
		t.Errorf("a minute later: %d alarms, want 2", got)
	}
}
