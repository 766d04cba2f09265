package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/token"
)

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func get(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login logs c in and returns the session's CSRF token.
func login(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	resp := postForm(t, c, base+"login", url.Values{"token": {adminToken(t, time.Hour)}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("login: %d to %q, want 303 to /console/", resp.StatusCode, resp.Header.Get("Location"))
	}
	m := csrfField.FindStringSubmatch(body(t, get(t, c, base+"push")))
	if m == nil {
		t.Fatal("push page has no CSRF field")
	}
	return m[1]
}

func TestNothingVisibleWithoutLogin(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	for _, path := range []string{"", "push", "devices?user_id=bob", "log?user_id=bob", "message?msg_id=1"} {
		resp := get(t, c, base+path)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
			t.Errorf("GET %s: %d to %q, want 303 to the login page", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp := get(t, c, base+"api/figures"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET api/figures: %d, want 401", resp.StatusCode)
	}
	if resp := postForm(t, c, base+"push", url.Values{"push_id": {"pd_x"}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("POST push: %d, want 303 to the login page", resp.StatusCode)
	}
}

func TestLogin(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	userTok, _ := token.Mint(testSecret, "alice", time.Now(), time.Hour)
	otherSecret, _ := token.MintAdmin([]byte("another-secret-0123456789"), time.Now(), time.Hour)
	expired, _ := token.MintAdmin(testSecret, time.Now().Add(-2*time.Hour), time.Hour)
	for _, tc := range []struct {
		name, token, want string
	}{
		{"login token", userTok, "not an admin token"},
		{"other secret", otherSecret, "signature"},
		{"expired", expired, "expired"},
		{"garbage", "hello", "does not start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := browserless(t)
			resp := postForm(t, c, base+"login", url.Values{"token": {tc.token}})
			if b := body(t, resp); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(b, tc.want) {
				t.Errorf("login: %d, want 401 saying %q", resp.StatusCode, tc.want)
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("refused login set cookies %v", resp.Cookies())
			}
		})
	}

	t.Run("admin token", func(t *testing.T) {
		c := browserless(t)
		resp := postForm(t, c, base+"login", url.Values{"token": {adminToken(t, time.Hour)}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("login: %d, want 303", resp.StatusCode)
		}
		var ck *http.Cookie
		for _, x := range resp.Cookies() {
			if x.Name == "herald_console" {
				ck = x
			}
		}
		switch {
		case ck == nil:
			t.Fatal("no session cookie")
		case !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/console/":
			t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/console/", ck)
		case ck.Secure:
			t.Error("cookie is Secure over plain HTTP: the browser would drop it")
		case time.Until(ck.Expires) > time.Hour || time.Until(ck.Expires) < 58*time.Minute:
			t.Errorf("cookie expires in %s, want the token's hour", time.Until(ck.Expires))
		case strings.Contains(ck.Value, "h1."):
			t.Error("the cookie carries the token; want an opaque session ID")
		}
		if r := get(t, c, base+"api/figures"); r.StatusCode != http.StatusOK {
			t.Errorf("figures after login: %d", r.StatusCode)
		}
	})

	t.Run("secure behind TLS", func(t *testing.T) {
		req, _ := http.NewRequest("POST", base+"login", strings.NewReader(url.Values{"token": {adminToken(t, time.Hour)}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-Proto", "https")
		resp, err := browserless(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure {
			t.Errorf("cookies %v: want one Secure cookie when TLS ends at a proxy", cs)
		}
	})
}

func TestCSRFAndLogout(t *testing.T) {
	srv := startServer(t, nil)
	pushID, _ := registerDevice(t, srv, "bob", 2)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	csrf := login(t, c, base)

	if resp := postForm(t, c, base+"push", url.Values{"push_id": {pushID}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("test push without CSRF token: %d, want 403", resp.StatusCode)
	}
	if resp := postForm(t, c, base+"push", url.Values{"push_id": {pushID}, "csrf": {"wrong"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("test push with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", base+"push", strings.NewReader(url.Values{"push_id": {pushID}, "csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin POST: %v %v, want 403", resp.StatusCode, err)
	}
	resp := postForm(t, c, base+"push", url.Values{"push_id": {pushID}, "csrf": {csrf}, "title": {"Ping"}, "content": {"pong"}})
	b := body(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(b, `id="vendor-status" class="ok">200<`) || !strings.Contains(b, `id="phone-title">Ping<`) {
		t.Errorf("test push with the CSRF token: %d, want 200 showing the vendor's 200 and the phone's title; page:\n%s", resp.StatusCode, b)
	}

	if resp := postForm(t, c, base+"logout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("logout: %d, want 303", resp.StatusCode)
	}
	if resp := get(t, c, base+"api/figures"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("figures after logout: %d, want 401", resp.StatusCode)
	}
}

// Behind nginx's default proxy_pass the Host is the upstream's
// (127.0.0.1:7400) while the browser's Origin is the public host: the
// proxy's X-Forwarded-Host names it.
func TestLoginBehindHostRewritingProxy(t *testing.T) {
	srv := startServer(t, nil)
	for _, tc := range []struct {
		name, origin, fwdHost string
		want                  int
	}{
		{"origin is the forwarded host", "https://im.example.com", "im.example.com", http.StatusSeeOther},
		{"forwarded by two proxies", "https://im.example.com", "im.example.com, inner.lan", http.StatusSeeOther},
		{"origin is another site", "https://evil.example", "im.example.com", http.StatusForbidden},
		{"no forwarded host", "https://im.example.com", "", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := url.Values{"token": {adminToken(t, time.Hour)}}
			req, _ := http.NewRequest(http.MethodPost, "http://"+srv.Addr()+"/console/login", strings.NewReader(v.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", tc.origin)
			req.Header.Set("X-Forwarded-Proto", "https")
			if tc.fwdHost != "" {
				req.Header.Set("X-Forwarded-Host", tc.fwdHost)
			}
			resp, err := browserless(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("login with Origin %s, X-Forwarded-Host %q: %d, want %d", tc.origin, tc.fwdHost, resp.StatusCode, tc.want)
			}
		})
	}
}

func TestPagesAfterAPush(t *testing.T) {
	srv := startServer(t, nil)
	pushID, tok := registerDevice(t, srv, "carol", 3)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	csrf := login(t, c, base)
	postForm(t, c, base+"push", url.Values{"push_id": {pushID}, "csrf": {csrf}, "title": {"t"}})
	srv.Emulator().Script(tok, emulatorGone())
	postForm(t, c, base+"push", url.Values{"push_id": {pushID}, "csrf": {csrf}, "title": {"t2"}})

	for _, tc := range []struct {
		path string
		want []string
	}{
		{"devices?user_id=carol", []string{pushID, "carol-phone", "com.example.herald", "production"}},
		{"devices?push_id=" + pushID, []string{pushID, "carol"}},
		{"devices?user_id=nobody", []string{"has no push device bound"}},
		{"log?user_id=carol", []string{pushID, "outcome-sent", "Unregistered"}},
		{"log?push_id=" + pushID + "&outcome=sent", []string{"outcome-sent"}},
		{"log?msg_id=abc", []string{"not a positive integer"}},
		{"message?msg_id=999", []string{"No delivery-log entry"}},
		{"push?user_id=carol", []string{`data-push-id="` + pushID + `"`}},
	} {
		resp := get(t, c, base+tc.path)
		b := body(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", tc.path, resp.StatusCode)
		}
		for _, w := range tc.want {
			if !strings.Contains(b, w) {
				t.Errorf("GET %s lacks %q", tc.path, w)
			}
		}
	}
	if b := body(t, get(t, c, base+"log?push_id="+pushID+"&outcome=sent")); strings.Contains(b, "Unregistered") {
		t.Error("the outcome filter let a failed entry through")
	}

	var f struct {
		Sessions     int64            `json:"sessions"`
		PushesSent   int64            `json:"pushes_sent"`
		PushesFailed int64            `json:"pushes_failed"`
		Failures     map[string]int64 `json:"failures"`
	}
	if err := json.NewDecoder(get(t, c, base+"api/figures").Body).Decode(&f); err != nil {
		t.Fatal(err)
	}
	if f.Sessions != 1 || f.PushesSent != 1 || f.PushesFailed != 1 || f.Failures["apns/Unregistered"] != 1 {
		t.Errorf("figures %+v: want 1 session, 1 push sent, 1 failed as apns/Unregistered", f)
	}
}

func TestMetricsExposure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		public string
		header string // a proxy header the request carries
		want   int
	}{
		{"auto on loopback", "auto", "", http.StatusOK},
		{"false", "false", "", http.StatusNotFound},
		// A request that came through a reverse proxy (the documented TLS
		// setup forwards to the loopback address) is from the internet.
		{"auto through a proxy, X-Forwarded-For", "auto", "X-Forwarded-For", http.StatusNotFound},
		{"auto through a proxy, Forwarded", "auto", "Forwarded", http.StatusNotFound},
		{"auto through a proxy, X-Real-IP", "auto", "X-Real-IP", http.StatusNotFound},
		{"auto through a proxy, X-Forwarded-Host", "auto", "X-Forwarded-Host", http.StatusNotFound},
		{"true through a proxy", "true", "X-Forwarded-For", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, func(c *config.Config) { c.MetricsPublic = tc.public })
			req, _ := http.NewRequest(http.MethodGet, "http://"+srv.Addr()+"/metrics", nil)
			if tc.header != "" {
				req.Header.Set(tc.header, "203.0.113.7")
			}
			resp, err := browserless(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { resp.Body.Close() })
			if resp.StatusCode != tc.want {
				t.Fatalf("GET /metrics (%s): %d, want %d", tc.header, resp.StatusCode, tc.want)
			}
			if tc.want != http.StatusOK {
				return
			}
			b := body(t, resp)
			for _, name := range []string{"herald_connections ", "herald_sessions ", "herald_messages_stored_total ",
				"herald_push_queue_depth ", "herald_push_queue_oldest_due_seconds ", `herald_push_outcomes_total{outcome="sent"}`,
				"herald_push_retries_total ", "herald_calls_open ", "go_goroutines "} {
				if !strings.Contains(b, name) {
					t.Errorf("/metrics lacks %s", name)
				}
			}
		})
	}
}

// emulatorGone answers one push 410 Unregistered, as for an uninstalled app.
func emulatorGone() emulator.Step { return emulator.Step{Status: http.StatusGone} }

// TestPushPageShowsEachVendorsDevice: a test push to an FCM, a Huawei and
// a Web Push device shows the vendor's answer and the notification as that
// platform shows it, read from the vendor's built-in emulator.
func TestPushPageShowsEachVendorsDevice(t *testing.T) {
	srv := startServer(t, nil)
	sub, err := srv.WebPushEmulator().Subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	csrf := login(t, c, base)
	for _, tc := range []struct {
		name string
		reg  client.PushRegistration
		kind string // what the device view says it is
	}{
		{"fcm", client.PushRegistration{Provider: herald.ProviderFCM, Token: "fcm-console-token:APA91b", App: testApp}, "Android"},
		{"hms", client.PushRegistration{Provider: herald.ProviderHMS, Token: "hms-console-token", App: testApp}, "Huawei"},
		{"webpush", client.PushRegistration{Provider: herald.ProviderWebPush, Token: sub.Token(), App: "web"}, "browser"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pushID := registerVendorDevice(t, srv, "dave-"+tc.name, tc.reg)
			b := body(t, postForm(t, c, base+"push", url.Values{"push_id": {pushID}, "csrf": {csrf}, "title": {"Hello " + tc.name}, "content": {"from the console"}}))
			for _, w := range []string{`id="phone-section"`, `id="phone-title">Hello ` + tc.name, `id="phone-body">from the console`, tc.kind, "accepted by the vendor"} {
				if !strings.Contains(b, w) {
					t.Errorf("the push page lacks %q", w)
				}
			}
			if strings.Contains(b, `id="phone-missing"`) {
				t.Error("the push page says the emulator has no such notification")
			}
		})
	}
}

// TestTimelineShowsTheRule: the message timeline says which push rule
// held a push back: dora's do-not-disturb window, in hold mode.
func TestTimelineShowsTheRule(t *testing.T) {
	srv := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connect := func(user string) *client.Client {
		c := client.New(srv.URL(), client.Options{DeviceID: user + "-phone"})
		t.Cleanup(c.Close)
		tok, err := token.Mint(testSecret, user, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(ctx, user, tok); err != nil {
			t.Fatal(err)
		}
		return c
	}
	dora := connect("dora")
	if _, err := dora.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: apnsToken(9), App: testApp, Environment: herald.EnvProduction}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := dora.SetPushRule(ctx, client.PushRule{DoNotDisturb: &herald.DoNotDisturb{
		Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(time.Hour).Format("15:04"), TimeZone: "UTC", Mode: herald.DNDHold,
	}}); err != nil {
		t.Fatal(err)
	}
	dora.Close()
	m := client.TextMessage("psst")
	m.Push = &herald.PushConfig{Title: "Erin", Content: "psst"}
	sent, err := connect("erin").SendPeerMessage(ctx, "dora", m)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	login(t, c, base)
	want := "held back by the recipient&#39;s push rule"
	deadline := time.Now().Add(10 * time.Second)
	for {
		b := body(t, get(t, c, base+fmt.Sprint("message?msg_id=", sent.ID)))
		if strings.Contains(b, want) && strings.Contains(b, "do-not-disturb") && strings.Contains(b, "outcome-held") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("message timeline lacks %q and the window:\n%s", want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
