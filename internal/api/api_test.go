package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/token"
)

// signed describes one hand-built signed request: what is signed and
// what is sent may differ, to test that each part is covered.
type signed struct {
	method             string
	signPath, sendPath string
	signBody, sendBody string
	secret             []byte
	app                string
	ts                 int64
	nonce              string
	drop               string // a header to leave out
}

func (f *fixture) send(t *testing.T, s signed) (int, apiclient.ErrorBody, http.Header) {
	t.Helper()
	if s.method == "" {
		s.method = http.MethodGet
	}
	if s.sendPath == "" {
		s.sendPath = s.signPath
	}
	if s.secret == nil {
		s.secret = testSecret
	}
	if s.app == "" {
		s.app = "herald"
	}
	if s.ts == 0 {
		s.ts = f.clk.Now().Unix()
	}
	if s.nonce == "" {
		s.nonce = apiclient.NewNonce()
	}
	req, err := http.NewRequest(s.method, f.srv.URL+s.sendPath, strings.NewReader(s.sendBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(apiclient.HeaderApp, s.app)
	req.Header.Set(apiclient.HeaderTimestamp, strconv.FormatInt(s.ts, 10))
	req.Header.Set(apiclient.HeaderNonce, s.nonce)
	req.Header.Set(apiclient.HeaderSignature, apiclient.Sign(s.secret, s.app, s.ts, s.nonce, s.method, s.signPath, []byte(s.signBody)))
	if s.drop != "" {
		req.Header.Del(s.drop)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, apiclient.ErrorBody, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e apiclient.ErrorBody
	if resp.StatusCode != http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q, want application/json (body %q)", req.Method, req.URL.Path, ct, raw)
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Errorf("%s %s: error body %q is not JSON: %v", req.Method, req.URL.Path, raw, err)
		}
	}
	return resp.StatusCode, e, resp.Header
}

func TestSignature(t *testing.T) {
	f := newFixture(t, nil)
	const path = "/api/v1/push/log?user_id=bob"
	now := f.clk.Now().Unix()
	reused := "nonce-used-twice"
	if st, e, _ := f.send(t, signed{signPath: path, nonce: reused}); st != http.StatusOK {
		t.Fatalf("first use of a nonce: %d %+v, want 200", st, e)
	}
	tests := []struct {
		name       string
		req        signed
		wantStatus int
		wantReason string
	}{
		{"correct", signed{signPath: path}, 200, ""},
		{"correct with body", signed{method: "POST", signPath: "/api/v1/push/test", signBody: `{"push_id":"p1"}`, sendBody: `{"push_id":"p1"}`}, 200, ""},
		{"edge of the window, past", signed{signPath: path, ts: now - 300}, 200, ""},
		{"edge of the window, future", signed{signPath: path, ts: now + 300}, 200, ""},
		{"wrong secret", signed{signPath: path, secret: []byte("another-secret-0123456789")}, 401, apiclient.ReasonBadSignature},
		{"altered body", signed{method: "POST", signPath: "/api/v1/push/test", signBody: `{"push_id":"p1"}`, sendBody: `{"push_id":"p2"}`}, 401, apiclient.ReasonBadSignature},
		{"altered path", signed{signPath: "/api/v1/push/log?user_id=bob", sendPath: "/api/v1/push/log?user_id=eve"}, 401, apiclient.ReasonBadSignature},
		{"correct POST without a body", signed{method: "POST", signPath: "/api/v1/users/bob/kick"}, 200, ""},
		{"expired timestamp", signed{signPath: path, ts: now - 301}, 401, apiclient.ReasonTimestampWindow},
		{"future timestamp", signed{signPath: path, ts: now + 301}, 401, apiclient.ReasonTimestampWindow},
		{"reused nonce", signed{signPath: path, nonce: reused}, 401, apiclient.ReasonNonceReused},
		{"short nonce", signed{signPath: path, nonce: "abc"}, 401, apiclient.ReasonBadNonce},
		{"nonce with a space", signed{signPath: path, nonce: "abc def ghi"}, 401, apiclient.ReasonBadNonce},
		{"missing app", signed{signPath: path, drop: apiclient.HeaderApp}, 401, apiclient.ReasonMissingHeader},
		{"missing timestamp", signed{signPath: path, drop: apiclient.HeaderTimestamp}, 401, apiclient.ReasonMissingHeader},
		{"missing nonce", signed{signPath: path, drop: apiclient.HeaderNonce}, 401, apiclient.ReasonMissingHeader},
		{"missing signature", signed{signPath: path, drop: apiclient.HeaderSignature}, 401, apiclient.ReasonMissingHeader},
		{"unknown app", signed{signPath: path, app: "other-app"}, 401, apiclient.ReasonUnknownApp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, e, _ := f.send(t, tt.req)
			if st != tt.wantStatus || e.Reason != tt.wantReason {
				t.Fatalf("got %d reason %q (%s: %s), want %d reason %q", st, e.Reason, e.Code, e.Message, tt.wantStatus, tt.wantReason)
			}
			if st == 401 && e.Code != string(herald.CodeUnauthorized) {
				t.Errorf("code %q, want unauthorized", e.Code)
			}
		})
	}
	// The method is signed: a signature made for GET does not pass for POST.
	t.Run("method signed", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/api/v1/users/bob/kick", nil)
		apiclient.SignRequest(req, testSecret, "herald", f.clk.Now(), nil)
		req.Header.Set(apiclient.HeaderSignature, apiclient.Sign(testSecret, "herald", f.clk.Now().Unix(), req.Header.Get(apiclient.HeaderNonce), "GET", "/api/v1/users/bob/kick", nil))
		if st, e, _ := do(t, req); st != 401 || e.Reason != apiclient.ReasonBadSignature {
			t.Fatalf("got %d %+v, want 401 bad_signature", st, e)
		}
	})
}

func TestNoCredential(t *testing.T) {
	f := newFixture(t, nil)
	for _, tt := range []struct {
		name, auth, reason, code string
	}{
		{"none", "", apiclient.ReasonMissingCredentials, "unauthorized"},
		{"not bearer", "Basic abc", apiclient.ReasonAdminToken, "unauthorized"},
		{"forged admin token", "Bearer abc.def", apiclient.ReasonAdminToken, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/api/v1/push/status", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			st, e, _ := do(t, req)
			if st != 401 || e.Reason != tt.reason || (tt.code != "" && e.Code != tt.code) {
				t.Fatalf("got %d %+v, want 401 reason %s", st, e, tt.reason)
			}
		})
	}
}

func adminRequest(t *testing.T, f *fixture, method, path, body string) *http.Request {
	t.Helper()
	tok, err := token.MintAdmin(testSecret, f.clk.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	return req
}

func TestAdminTokenOnEveryEndpoint(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Rate, c.Burst = 1, 1 })
	for i := 0; i < 5; i++ { // not rate limited
		if st, e, _ := do(t, adminRequest(t, f, "GET", "/api/v1/push/status", "")); st != 200 {
			t.Fatalf("push status with the admin token: %d %+v", st, e)
		}
	}
	if st, e, _ := do(t, adminRequest(t, f, "POST", "/api/v1/messages/peer", `{"from":"system","to":["bob"],"message":{"type":"text","text":"hi"}}`)); st != 200 {
		t.Fatalf("peer send with the admin token: %d %+v", st, e)
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Rate, c.Burst = 2, 3 })
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := f.client.PushLog(ctx, apiclient.PushLogQuery{}); err != nil {
			t.Fatalf("request %d within the burst: %v", i+1, err)
		}
	}
	_, err := f.client.PushLog(ctx, apiclient.PushLogQuery{})
	var ae *apiclient.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != "rate_limited" {
		t.Fatalf("request over the burst: %v, want 429 rate_limited", err)
	}
	if ae.RetryAfter != time.Second {
		t.Errorf("Retry-After %s, want 1s (half a second, rounded up)", ae.RetryAfter)
	}
	// The raw answer carries the header.
	st, _, hdr := f.send(t, signed{signPath: "/api/v1/push/status"})
	if st != 429 || hdr.Get("Retry-After") != "1" {
		t.Errorf("raw: %d Retry-After %q, want 429 and 1", st, hdr.Get("Retry-After"))
	}
	f.clk.Add(time.Second) // two tokens back
	for i := 0; i < 2; i++ {
		if _, err := f.client.PushLog(ctx, apiclient.PushLogQuery{}); err != nil {
			t.Fatalf("after a second, request %d: %v", i+1, err)
		}
	}
	if _, err := f.client.PushLog(ctx, apiclient.PushLogQuery{}); !errors.As(err, &ae) || ae.Status != 429 {
		t.Fatalf("third after a second: %v, want 429", err)
	}
	// Operators are not limited.
	if st, e, _ := do(t, adminRequest(t, f, "GET", "/api/v1/push/status", "")); st != 200 {
		t.Fatalf("admin while the app is limited: %d %+v", st, e)
	}
}

func TestNonceCacheBounded(t *testing.T) {
	c := newNonceCache(1, 1, time.Second, nil, nil) // room for 1024
	now := time.Unix(1000, 0)
	for i := 0; i < 1024; i++ {
		if _, err := c.use(context.Background(), "a", "nonce-"+strconv.Itoa(i), now.Unix(), now); err != nil {
			t.Fatalf("nonce %d: %v", i, err)
		}
	}
	wait, err := c.use(context.Background(), "a", "one-too-many", now.Unix(), now)
	if herald.ErrorCode(err) != herald.CodeRateLimited {
		t.Fatalf("full cache: %v, want rate_limited", err)
	}
	// The nonces are kept until now+1s, forgotten after: 2 s.
	if wait != 2*time.Second {
		t.Errorf("full cache: wait %s, want 2s (until the oldest nonce may be forgotten)", wait)
	}
	later := now.Add(3 * time.Second) // every nonce's timestamp has left the window
	if _, err := c.use(context.Background(), "a", "one-too-many", later.Unix(), later); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if n := len(c.seen); n != 1 {
		t.Errorf("%d nonces kept after the sweep, want 1", n)
	}
}

// The nonce is recorded after the rate limit: a request refused with 429
// may be sent again, as signed, after Retry-After, and refused requests
// do not fill the replay cache.
func TestRateLimitedRequestKeepsItsNonce(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Rate, c.Burst, c.TimeWindow = 1, 1, 5*time.Second })
	if st, e, _ := f.send(t, signed{signPath: "/api/v1/push/status"}); st != 200 {
		t.Fatalf("first request: %d %+v", st, e)
	}
	retry := signed{signPath: "/api/v1/push/status", ts: f.clk.Now().Unix(), nonce: "retried-nonce-0001"}
	st, e, hdr := f.send(t, retry)
	if st != 429 || e.Code != "rate_limited" || hdr.Get("Retry-After") != "1" {
		t.Fatalf("over the rate: %d %+v Retry-After %q, want 429 rate_limited 1", st, e, hdr.Get("Retry-After"))
	}
	f.clk.Add(time.Second)
	if st, e, _ := f.send(t, retry); st != 200 {
		t.Fatalf("the same signed request after Retry-After: %d %+v, want 200", st, e)
	}
	// Now it is used.
	f.clk.Add(time.Second)
	if st, e, _ := f.send(t, retry); st != 401 || e.Reason != apiclient.ReasonNonceReused {
		t.Errorf("a replay of the accepted request: %d %+v, want 401 %s", st, e, apiclient.ReasonNonceReused)
	}
	// A replay spends no token: the next fresh request goes through.
	if st, e, _ := f.send(t, signed{signPath: "/api/v1/push/status"}); st != 200 {
		t.Errorf("a fresh request after a refused replay: %d %+v", st, e)
	}
}

// Requests refused with 429 by the thousand do not fill the replay cache,
// so a request within the rate is not refused by it.
func TestRateLimitedRequestsDoNotFillNonceCache(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	h := New(Config{Secret: secret, Rate: 1, Burst: 1, TimeWindow: time.Second, Now: func() time.Time { return now }})
	do := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, apiclient.PathPushStatus, nil)
		apiclient.SignRequest(r, secret, "herald", now, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for range 1100 {
		do()
	}
	now = now.Add(1100 * time.Millisecond) // a token is back in the bucket
	if w := do(); w.Code == http.StatusTooManyRequests && strings.Contains(w.Body.String(), "within the time window") {
		t.Errorf("a request within the rate was refused by the replay cache, filled by refused requests: %s", w.Body.String())
	}
}

// A full replay cache answers 429 with Retry-After, like the rate limit.
func TestNonceCacheFullRetryAfter(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Rate, c.Burst, c.TimeWindow = 100, 100, 5*time.Second })
	f.h.nonces.max = 2
	for i := 0; i < 2; i++ {
		if st, e, _ := f.send(t, signed{signPath: "/api/v1/push/status"}); st != 200 {
			t.Fatalf("request %d: %d %+v", i, st, e)
		}
	}
	st, e, hdr := f.send(t, signed{signPath: "/api/v1/push/status"})
	if st != 429 || e.Code != "rate_limited" {
		t.Fatalf("full cache: %d %+v, want 429", st, e)
	}
	if hdr.Get("Retry-After") != "6" {
		t.Errorf("full cache: Retry-After %q, want 6 (the oldest nonce is kept for the 5 s window)", hdr.Get("Retry-After"))
	}
}

func TestValidation(t *testing.T) {
	f := newFixture(t, nil)
	many := make([]string, 101)
	for i := range many {
		many[i] = "u" + strconv.Itoa(i)
	}
	manyJSON, _ := json.Marshal(many)
	text := `"message":{"type":"text","text":"hi"}`
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantCode, wantIn         string
	}{
		{"peer: empty body", "POST", "/api/v1/messages/peer", ``, 400, "invalid_argument", "body is empty"},
		{"peer: unknown field", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b"],` + text + `,"colour":1}`, 400, "invalid_argument", "colour"},
		{"peer: from in another case (issue 15 item 5)", "POST", "/api/v1/messages/peer", `{"from":"a","FROM":"admin","to":["b"],` + text + `}`, 400, "invalid_argument", "case-sensitive"},
		{"peer: from twice (issue 15 item 5)", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b"],` + text + `,"from":"c"}`, 400, "invalid_argument", "twice"},
		{"peer: nested key in another case", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b"],"message":{"type":"text","text":"hi","Text":"ho"}}`, 400, "invalid_argument", "case-sensitive"},
		{"peer: no from", "POST", "/api/v1/messages/peer", `{"to":["b"],` + text + `}`, 400, "invalid_argument", "from:"},
		{"peer: bad from", "POST", "/api/v1/messages/peer", `{"from":"a b","to":["b"],` + text + `}`, 400, "invalid_argument", "from:"},
		{"peer: no recipients", "POST", "/api/v1/messages/peer", `{"from":"a","to":[],` + text + `}`, 400, "invalid_argument", "to has 0 users"},
		{"peer: 101 recipients", "POST", "/api/v1/messages/peer", `{"from":"a","to":` + string(manyJSON) + `,` + text + `}`, 400, "invalid_argument", "to has 101 users"},
		{"peer: bad recipient", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b","c:d"],` + text + `}`, 400, "invalid_argument", "to[1]"},
		{"peer: recipient twice", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b","b"],` + text + `}`, 400, "invalid_argument", "twice"},
		{"peer: to the sender", "POST", "/api/v1/messages/peer", `{"from":"a","to":["a"],` + text + `}`, 400, "invalid_argument", "sender"},
		{"peer: no type", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b"],"message":{"text":"hi"}}`, 400, "invalid_argument", "message.type is empty"},
		{"peer: command", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b"],"message":{"type":"command","data":"aGk="}}`, 400, "invalid_argument", "text or custom"},
		{"peer: push enabled without push", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b"],` + text + `,"push_enabled":true}`, 400, "invalid_argument", "push is missing"},
		{"peer: long local_id", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b"],` + text + `,"local_id":"` + strings.Repeat("x", 48) + `"}`, 413, "too_large", "local_id"},
		{"group: no group", "POST", "/api/v1/messages/group", `{"from":"a",` + text + `}`, 400, "invalid_argument", "group_id"},
		{"group: bad from", "POST", "/api/v1/messages/group", `{"from":"","group_id":"g",` + text + `}`, 400, "invalid_argument", "from:"},
		{"group: push enabled without push", "POST", "/api/v1/messages/group", `{"from":"a","group_id":"g",` + text + `,"push_enabled":true}`, 400, "invalid_argument", "push is missing"},
		{"broadcast: bad from", "POST", "/api/v1/messages/broadcast", `{"from":"",` + text + `}`, 400, "invalid_argument", "from:"},
		{"broadcast: empty text", "POST", "/api/v1/messages/broadcast", `{"from":"a","message":{"type":"text"}}`, 400, "invalid_argument", "empty text"},
		{"broadcast: text too long", "POST", "/api/v1/messages/broadcast", `{"from":"a","message":{"type":"text","text":"` + strings.Repeat("x", 9000) + `"}}`, 413, "too_large", "text is 9000 bytes"},
		{"call: bad caller", "POST", "/api/v1/calls", `{"caller":"","invitees":["b"]}`, 400, "invalid_argument", "caller:"},
		{"call: negative timeout", "POST", "/api/v1/calls", `{"caller":"a","invitees":["b"],"timeout":-1}`, 400, "invalid_argument", "timeout"},
		{"call: timeout past 600 s", "POST", "/api/v1/calls", `{"caller":"a","invitees":["b"],"timeout":601}`, 400, "invalid_argument", "timeout"},
		{"call: timeout that would wrap to 30 s", "POST", "/api/v1/calls", `{"caller":"a","invitees":["b"],"timeout":36028797018963998}`, 400, "invalid_argument", "timeout"},
		{"call: push enabled without push", "POST", "/api/v1/calls", `{"caller":"a","invitees":["b"],"push_enabled":true}`, 400, "invalid_argument", "push is missing"},
		{"call: refused by the service", "POST", "/api/v1/calls", `{"caller":"a","invitees":[]}`, 400, "invalid_argument", "invitees"},
		{"kick: bad user", "POST", "/api/v1/users/a%20b/kick", ``, 400, "invalid_argument", "user:"},
		{"kick: long reason", "POST", "/api/v1/users/bob/kick", `{"reason":"` + strings.Repeat("x", 101) + `"}`, 413, "too_large", "reason"},
		{"devices: bad user", "GET", "/api/v1/users/a:b/devices", ``, 400, "invalid_argument", "user:"},
		{"push test: unknown device", "POST", "/api/v1/push/test", `{"push_id":"nope"}`, 404, "not_found", "nope"},
		{"push log: bad limit", "GET", "/api/v1/push/log?limit=x", ``, 400, "invalid_argument", "limit"},
		{"unknown endpoint", "GET", "/api/v1/nothing", ``, 404, "not_found", "no endpoint"},
		{"wrong method", "GET", "/api/v1/messages/peer", ``, 404, "not_found", "no endpoint"},
		{"body too large", "POST", "/api/v1/messages/peer", `{"from":"a","to":["b"],"message":{"type":"text","text":"` + strings.Repeat("x", MaxBodyBytes) + `"}}`, 413, "too_large", "body exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if tt.wantCode == "too_large" && strings.Contains(tt.wantIn, "body exceeds") {
				// Too large to sign-and-read: the admin path reads it through the limit too.
				st, e, _ := do(t, adminRequest(t, f, tt.method, tt.path, body))
				if st != tt.wantStatus || e.Code != tt.wantCode {
					t.Fatalf("admin: got %d %+v, want %d %s", st, e, tt.wantStatus, tt.wantCode)
				}
			}
			st, e, _ := f.send(t, signed{method: tt.method, signPath: tt.path, signBody: body, sendBody: body})
			if st != tt.wantStatus || e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantIn) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", st, e.Code, e.Message, tt.wantStatus, tt.wantCode, tt.wantIn)
			}
		})
	}
	if n := len(f.chat.messages()); n != 0 {
		t.Errorf("%d messages sent by refused requests, want 0", n)
	}
}

func TestPeerSend(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	push := &herald.PushConfig{Title: "Shop", Content: "shipped"}
	rep, err := f.client.SendPeerMessage(ctx, apiclient.PeerMessageRequest{
		From: "system", To: []string{"alice", "bob", "carol"}, Message: apiclient.TextMessage("shipped"),
		LocalID: "order-42", Push: push, // push_enabled is false: no push
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 3 || rep.Failed != 0 || len(rep.Results) != 3 {
		t.Fatalf("reply %+v, want 3 sent", rep)
	}
	for i, u := range []string{"alice", "bob", "carol"} {
		r := rep.Results[i]
		if r.UserID != u || r.MessageID == 0 || r.LocalID != PeerLocalID("order-42", u) || r.Error != nil {
			t.Errorf("result %d = %+v, want %s's stored message with local ID %s", i, r, u, PeerLocalID("order-42", u))
		}
	}
	for _, m := range f.chat.messages() {
		if m.Push != nil {
			t.Errorf("message to %s has push %+v though push_enabled was false", m.To, m.Push)
		}
		if m.From != "system" || m.ConvType != herald.ConversationPeer || m.Type != herald.MessageText || m.Text != "shipped" {
			t.Errorf("message %+v, want a peer text from system", m)
		}
		if len(m.LocalID) > 64 {
			t.Errorf("local ID %q over 64 bytes", m.LocalID)
		}
	}

	// push_enabled: each copy carries its own push configuration.
	if _, err := f.client.SendPeerMessage(ctx, apiclient.PeerMessageRequest{
		From: "system", To: []string{"alice", "bob"}, Message: apiclient.CustomMessage([]byte{1, 2}, 7), PushEnabled: true, Push: push,
	}); err != nil {
		t.Fatal(err)
	}
	msgs := f.chat.messages()[3:]
	if len(msgs) != 2 || msgs[0].Push == nil || msgs[0].Push == msgs[1].Push || msgs[0].Push.Title != "Shop" {
		t.Fatalf("pushed copies: %+v, want two with their own push configuration", msgs)
	}
	if msgs[0].Type != herald.MessageCustom || msgs[0].SubType != 7 || !bytes.Equal(msgs[0].Data, []byte{1, 2}) {
		t.Errorf("custom copy %+v", msgs[0])
	}

	// One recipient fails: its result says why, the others are sent.
	f.chat.fail = func(m *herald.Message) error {
		if m.To == "bob" {
			return herald.Errorf(herald.CodeForbidden, "bob blocks system")
		}
		return nil
	}
	rep, err = f.client.SendPeerMessage(ctx, apiclient.PeerMessageRequest{From: "system", To: []string{"alice", "bob"}, Message: apiclient.TextMessage("x")})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 1 || rep.Failed != 1 || rep.Results[1].Error == nil || rep.Results[1].Error.Code != "forbidden" || rep.Results[0].Error != nil {
		t.Fatalf("partial failure: %+v", rep)
	}

	// Every copy fails alike: the request fails with that error.
	f.chat.fail = func(m *herald.Message) error { return herald.Errorf(herald.CodeTooLarge, "text is too long") }
	_, err = f.client.SendPeerMessage(ctx, apiclient.PeerMessageRequest{From: "system", To: []string{"alice", "bob"}, Message: apiclient.TextMessage("x")})
	var ae *apiclient.Error
	if !errors.As(err, &ae) || ae.Status != 413 || ae.Code != "too_large" {
		t.Fatalf("all failed alike: %v, want 413 too_large", err)
	}
}

func TestGroupSend(t *testing.T) {
	f := newFixture(t, nil)
	rep, err := f.client.SendGroupMessage(context.Background(), apiclient.GroupMessageRequest{
		From: "alice", GroupID: "team", Message: apiclient.TextMessage("standup"), LocalID: "g-1",
		PushEnabled: true, Push: &herald.PushConfig{Title: "team"},
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := f.chat.messages()
	if len(msgs) != 1 || msgs[0].ConvType != herald.ConversationGroup || msgs[0].To != "team" || msgs[0].LocalID != "g-1" || msgs[0].Push == nil {
		t.Fatalf("sent %+v", msgs)
	}
	if rep.MessageID != msgs[0].ID || rep.LocalID != "g-1" {
		t.Errorf("reply %+v", rep)
	}
	f.chat.fail = func(*herald.Message) error { return herald.Errorf(herald.CodeForbidden, "not a member of group team") }
	_, err = f.client.SendGroupMessage(context.Background(), apiclient.GroupMessageRequest{From: "eve", GroupID: "team", Message: apiclient.TextMessage("x")})
	var ae *apiclient.Error
	if !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("non-member: %v, want 403", err)
	}
}

func TestBroadcastKickDevicesCall(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.sessions.live = map[string]int{"alice": 2, "bob": 1, "system": 1}
	rep, err := f.client.Broadcast(ctx, apiclient.BroadcastRequest{From: "system", Message: apiclient.TextMessage("maintenance at 22:00")})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sessions != 3 || rep.LocalID == "" {
		t.Errorf("broadcast reply %+v, want 3 sessions and a local ID", rep)
	}
	if m := f.sessions.broadcast[0]; m.From != "system" || m.Seq != 0 || m.Text != "maintenance at 22:00" || m.CreatedAt.IsZero() {
		t.Errorf("broadcast message %+v", m)
	}

	n, err := f.client.Kick(ctx, "alice", "")
	if err != nil || n != 2 || f.sessions.kicked["alice"] != apiclient.DefaultKickReason {
		t.Fatalf("kick: %d %v reason %q, want 2 sessions with the default reason", n, err, f.sessions.kicked["alice"])
	}
	if n, err := f.client.Kick(ctx, "nobody", "banned"); err != nil || n != 0 || f.sessions.kicked["nobody"] != "banned" {
		t.Fatalf("kick of a user with no session: %d %v", n, err)
	}

	tok := strings.Repeat("ab", 28) + "0123cdef"
	f.push.devices["bob"] = []herald.PushDevice{{PushID: "p1", Provider: herald.ProviderAPNs, Token: tok, App: "com.example", Env: herald.EnvDevelopment, User: "bob", Device: "phone",
		Badge: 4, BadgeKind: herald.BadgeTotal}}
	devs, err := f.client.Devices(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].Token != strings.Repeat("*", 56)+"0123cdef" || devs[0].UserID != "bob" || devs[0].DeviceID != "phone" ||
		devs[0].Badge != 4 || devs[0].BadgeKind != "total" {
		t.Fatalf("devices %+v, want bob's phone with its token masked but for 0123cdef", devs)
	}
	if devs, err := f.client.Devices(ctx, "carol"); err != nil || devs == nil || len(devs) != 0 {
		t.Fatalf("devices of a user with none: %v %v, want an empty list", devs, err)
	}

	call, err := f.client.InviteCall(ctx, apiclient.CallInviteRequest{Caller: "alice", Invitees: []string{"bob"}, Timeout: 30, Push: &herald.PushConfig{Title: "call"}})
	if err != nil {
		t.Fatal(err)
	}
	if call.Call.CallID != "call-1" || call.Call.Caller != "alice" || call.Call.Timeout != 30 || f.calls.last.Push != nil {
		t.Errorf("call %+v push %+v, want alice's call without push (push_enabled false)", call.Call, f.calls.last.Push)
	}

	// A general call is read back, and cannot be ended.
	got, err := f.client.GetCall(ctx, "call-1")
	if err != nil || got.Call.CallID != "call-1" || len(got.Call.Participants) != 2 || got.Call.Participants[1].User != "bob" {
		t.Errorf("GetCall: %+v, %v; want call-1 with alice and bob", got, err)
	}
	if _, err := f.client.EndCall(ctx, "call-1", apiclient.CallEndRequest{}); apiCode(err) != herald.CodeForbidden {
		t.Errorf("ending a general call: %v, want forbidden", err)
	}
	if _, err := f.client.GetCall(ctx, "nope"); apiCode(err) != herald.CodeNotFound {
		t.Errorf("GetCall(unknown): %v, want not_found", err)
	}
	// An advanced call is placed with its settings and ended.
	adv, err := f.client.InviteCall(ctx, apiclient.CallInviteRequest{Caller: "alice", Invitees: []string{"bob"}, Mode: "advanced", Joinable: true, EndBy: "participant"})
	if err != nil || adv.Call.Mode != "advanced" || !adv.Call.Joinable || adv.Call.EndBy != "participant" {
		t.Fatalf("advanced invite: %+v, %v", adv, err)
	}
	if _, err := f.client.EndCall(ctx, "call-1", apiclient.CallEndRequest{PushEnabled: true}); apiCode(err) != herald.CodeInvalidArgument {
		t.Errorf("end with push_enabled and no push: %v, want invalid_argument", err)
	}
	ended, err := f.client.EndCall(ctx, "call-1", apiclient.CallEndRequest{Extended: "bye", PushEnabled: true, Push: &herald.PushConfig{Title: "missed"}})
	if err != nil || ended.Call.EndedAt == 0 || f.calls.last.Push == nil || f.calls.last.Push.Title != "missed" {
		t.Errorf("EndCall: %+v, %v; want the call ended with the missed-call push", ended, err)
	}
}

func TestMaskToken(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""}, {"abcd", "****"}, {"12345678", "********"}, {"0123456789", "**23456789"},
	} {
		if got := MaskToken(tt.in); got != tt.want {
			t.Errorf("MaskToken(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// A Web Push token shows its push service's origin and nothing of its
	// keys: its tail is keys.auth.
	sub := herald.WebPushSubscription{Endpoint: "https://fcm.googleapis.com/fcm/send/dXNlci1zZWNyZXQtaWQ"}
	sub.Keys.P256dh = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
	sub.Keys.Auth = "tBHItJI5svbpez7KI4CCXg"
	tok := sub.Token()
	if err := herald.ValidatePushRegistration(herald.ProviderWebPush, tok, "web", ""); err != nil {
		t.Fatal(err)
	}
	got := MaskToken(tok)
	if got != "https://fcm.googleapis.com/***" {
		t.Errorf("MaskToken(web push) = %q, want the origin only", got)
	}
	for _, secret := range []string{sub.Keys.Auth[len(sub.Keys.Auth)-5:], "dXNlci1zZWNyZXQtaWQ", sub.Keys.P256dh[:10]} {
		if strings.Contains(got, secret) {
			t.Errorf("MaskToken(web push) = %q shows %q", got, secret)
		}
	}
	if got := MaskToken(`{"not":"a subscription","auth":"0123456789"}`); got != "***" {
		t.Errorf("MaskToken(other JSON) = %q, want it hidden whole", got)
	}
}

func TestUnavailableWithoutServices(t *testing.T) {
	h := New(Config{Secret: testSecret})
	for _, path := range []string{"/api/v1/messages/peer", "/api/v1/messages/group", "/api/v1/messages/broadcast", "/api/v1/calls", "/api/v1/users/bob/kick"} {
		tok, _ := token.MintAdmin(testSecret, time.Now(), time.Hour)
		req, _ := http.NewRequest("POST", path, strings.NewReader(`{}`))
		req.RequestURI = path
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 503 {
			t.Errorf("%s without its service: %d, want 503", path, rec.Code)
		}
	}
}

// apiCode is the error code of a failed API call.
func apiCode(err error) herald.Code {
	var ae *apiclient.Error
	if errors.As(err, &ae) {
		return herald.Code(ae.Code)
	}
	return ""
}
