package webpush

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type rig struct {
	emu *emulator.APNs
	wp  *emulator.WebPush
	p   *Provider
	now *time.Time
}

// newRig starts an emulator with Web Push mounted and a provider allowed
// to reach exactly its address, both on one injected clock.
func newRig(t *testing.T, mod func(*Config)) *rig {
	t.Helper()
	now := t0
	clock := func() time.Time { return now }
	emu := emulator.New(emulator.Config{Now: clock})
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	wp := emulator.NewWebPush(emulator.WebPushConfig{Now: clock})
	wp.Mount(emu)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(emu.URL())
	cfg := Config{Subject: "mailto:ops@example.com", Key: key, AllowAddrs: []string{u.Host}, RootCAs: emu.CertPool(), Now: clock}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &rig{emu: emu, wp: wp, p: p, now: &now}
}

// subscribe makes a browser subscription bound to the provider's key and
// returns it as a registered device.
func (r *rig) subscribe(t *testing.T) herald.PushDevice {
	t.Helper()
	pub, err := base64.RawURLEncoding.DecodeString(r.p.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.wp.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	tok := herald.NormalizePushToken(herald.ProviderWebPush, s.Token())
	if err := herald.ValidatePushRegistration(herald.ProviderWebPush, tok, "chat.example", ""); err != nil {
		t.Fatal(err)
	}
	if err := r.p.CheckToken(tok, "chat.example"); err != nil {
		t.Fatalf("CheckToken refused the emulator's subscription: %v", err)
	}
	return herald.PushDevice{PushID: "p1", Provider: herald.ProviderWebPush, Token: tok, App: "chat.example", Env: herald.EnvProduction}
}

const notifID = "0b6f9c1e-4a5d-4e7f-9a8b-1c2d3e4f5a6b"

func alert() *push.Content {
	return &push.Content{
		NotifID: notifID,
		Config:  herald.PushConfig{Title: "Ann", Content: "hello <there>", Payload: `{"k":1}`, EnableBadge: true},
		Badge:   3, HasBadge: true, Conv: "c1", MsgID: 42, Seq: 7, From: "ann",
	}
}

func (r *rig) send(t *testing.T, c *push.Content, d herald.PushDevice, mod func(*push.Notification)) (push.Result, []byte) {
	t.Helper()
	pl, err := r.p.Render(c, &d)
	if err != nil {
		t.Fatal(err)
	}
	n := &push.Notification{ID: c.NotifID, CollapseID: c.NotifID, Device: d, Type: push.TypeAlert, Expiration: r.now.Add(90 * time.Second), Payload: pl}
	if c.Strategy.Type == push.TypeBackground {
		n.Type = push.TypeBackground
	}
	if mod != nil {
		mod(n)
	}
	return r.p.Send(context.Background(), n), pl
}

// TestSendDelivered: a push reaches the browser decrypted, with the
// headers the push config sets and the ID as its Topic.
func TestSendDelivered(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	res, pl := r.send(t, alert(), d, nil)
	if res.Verdict != push.Delivered || res.Status != http.StatusCreated {
		t.Fatalf("got %v %d %q, want delivered 201", res.Verdict, res.Status, res.Reason)
	}
	in := r.wp.Inbox(d.Token)
	if len(in) != 1 {
		t.Fatalf("inbox has %d, want 1", len(in))
	}
	n := in[0]
	if string(n.Payload) != string(pl) {
		t.Fatalf("decrypted payload\n got %s\nwant %s", n.Payload, pl)
	}
	var doc struct {
		Title, Body, Tag, Payload string
		Badge                     *int
		Herald                    map[string]any
	}
	if err := json.Unmarshal(n.Payload, &doc); err != nil {
		t.Fatal(err)
	}
	topic := strings.ReplaceAll(notifID, "-", "")
	if doc.Title != "Ann" || doc.Body != "hello <there>" || doc.Tag != topic || doc.Payload != `{"k":1}` || doc.Badge == nil || *doc.Badge != 3 {
		t.Fatalf("payload %s", n.Payload)
	}
	if doc.Herald["conv"] != "c1" || doc.Herald["msg_id"] != 42.0 || doc.Herald["seq"] != 7.0 || doc.Herald["from"] != "ann" {
		t.Fatalf("herald block %v", doc.Herald)
	}
	for k, want := range map[string]string{"TTL": "90", "Urgency": "high", "Topic": topic} {
		if got := n.Headers[k]; got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if n.ID != topic || n.CollapseID != topic || n.Vendor != "webpush" || n.Topic != r.p.PublicKey() || n.PushType != "alert" {
		t.Errorf("notification %+v", n)
	}
}

// TestResendReplaces: the same notification sent twice (a retry whose
// answer was lost) shows once, as two deliveries, and counts a duplicate.
func TestResendReplaces(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	for range 2 {
		if res, _ := r.send(t, alert(), d, nil); res.Verdict != push.Delivered {
			t.Fatalf("got %v %q", res.Verdict, res.Reason)
		}
	}
	in, arr := r.wp.Inbox(d.Token), r.wp.Arrived(d.Token)
	if len(in) != 1 || in[0].Deliveries != 2 || len(arr) != 2 {
		t.Fatalf("inbox %d (deliveries %d), arrived %d; want 1 (2), 2", len(in), in[0].Deliveries, len(arr))
	}
	if got := r.wp.Stats().Duplicates; got != 1 {
		t.Fatalf("duplicates %d, want 1", got)
	}
}

// TestCollapseKeyIsTopic: a strategy's collapse key is the Topic and tag
// instead of the ID; one that is not a valid Topic is hashed to one.
func TestCollapseKeyIsTopic(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	for _, tc := range []struct{ key, want string }{
		{"chat-1", "chat-1"},
		{"room/with spaces and more than 32 chars", Topic("room/with spaces and more than 32 chars", "")},
	} {
		c := alert()
		c.Strategy.CollapseKey = tc.key
		if res, _ := r.send(t, c, d, nil); res.Verdict != push.Delivered {
			t.Fatalf("%s: %v %q", tc.key, res.Verdict, res.Reason)
		}
		arr := r.wp.Arrived(d.Token)
		n := arr[len(arr)-1]
		if n.Headers["Topic"] != tc.want || !validTopic(tc.want) || !strings.Contains(string(n.Payload), `"tag":"`+tc.want+`"`) {
			t.Fatalf("key %q: Topic %q, payload %s; want %q", tc.key, n.Headers["Topic"], n.Payload, tc.want)
		}
	}
}

// TestDataOnly: a background push and a call invitation carry no
// notification (silent, no title, body or badge) and go at normal urgency.
func TestDataOnly(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	bg := alert()
	bg.Strategy.Type = push.TypeBackground
	call := alert()
	call.CallID, call.CallEvent, call.Conv, call.MsgID, call.Seq = "call-1", "invite", "", 0, 0
	for name, c := range map[string]*push.Content{"background": bg, "call": call} {
		res, _ := r.send(t, c, d, nil)
		if res.Verdict != push.Delivered {
			t.Fatalf("%s: %v %q", name, res.Verdict, res.Reason)
		}
		arr := r.wp.Arrived(d.Token)
		n := arr[len(arr)-1]
		var doc map[string]any
		json.Unmarshal(n.Payload, &doc)
		if doc["title"] != nil || doc["body"] != nil || doc["badge"] != nil || doc["silent"] != true || doc["herald"] == nil || n.PushType != "background" {
			t.Fatalf("%s: payload %s", name, n.Payload)
		}
		if name == "call" && doc["herald"].(map[string]any)["call_id"] != "call-1" {
			t.Fatalf("call: payload %s", n.Payload)
		}
		want := map[string]string{"background": "normal", "call": "high"}[name]
		if n.Headers["Urgency"] != want {
			t.Fatalf("%s: Urgency %q, want %q", name, n.Headers["Urgency"], want)
		}
	}
}

// TestVerdicts: each answer of the push service maps to its verdict.
func TestVerdicts(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	for _, tc := range []struct {
		step       emulator.Step
		verdict    push.Verdict
		reason     string
		retryAfter time.Duration
	}{
		{emulator.Step{Status: 404}, push.DropToken, "404 Not Found", 0},
		{emulator.Step{Status: 410}, push.DropToken, "410 Gone", 0},
		{emulator.Step{Status: 413}, push.Permanent, "413 Request Entity Too Large: the push service refused", 0},
		{emulator.Step{Status: 429, RetryAfter: 30 * time.Second}, push.Retry, "429 Too Many Requests", 30 * time.Second},
		{emulator.Step{Status: 500}, push.Retry, "500 Internal Server Error", 0},
		{emulator.Step{Status: 503, RetryAfter: 2 * time.Second}, push.Retry, "503 Service Unavailable", 2 * time.Second},
		{emulator.Step{Status: 400}, push.Permanent, "400 Bad Request", 0},
		{emulator.Step{Status: 401}, push.Permanent, "401 Unauthorized", 0},
		{emulator.Step{Status: 403}, push.Permanent, "403 Forbidden", 0},
		{emulator.Step{Abort: true}, push.Retry, "", 0},
	} {
		r.wp.Script(d.Token, tc.step)
		res, _ := r.send(t, alert(), d, nil)
		if res.Verdict != tc.verdict || !strings.HasPrefix(res.Reason, tc.reason) || res.RetryAfter != tc.retryAfter {
			t.Errorf("step %+v: got %v %q retry-after %v; want %v %q %v", tc.step, res.Verdict, res.Reason, res.RetryAfter, tc.verdict, tc.reason, tc.retryAfter)
		}
		if tc.step.Abort && res.Err == nil {
			t.Errorf("abort: no transport error")
		}
		if tc.step.Status != 0 && (res.Status != tc.step.Status || len(res.Body) == 0) {
			t.Errorf("step %+v: status %d body %q", tc.step, res.Status, res.Body)
		}
	}
	if got := len(r.wp.Arrived(d.Token)); got != 0 {
		t.Fatalf("%d pushes arrived through failing steps", got)
	}
}

// TestUnsubscribedDrops: a subscription the browser dropped answers 410
// (unscripted) and the device is dropped; a subscription made with another
// server key answers 403, permanent.
func TestUnsubscribedDrops(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	r.wp.Unsubscribe(d.Token)
	if res, _ := r.send(t, alert(), d, nil); res.Verdict != push.DropToken || res.Status != http.StatusGone {
		t.Fatalf("got %v %d %q, want drop_token 410", res.Verdict, res.Status, res.Reason)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := other.PublicKey.ECDH()
	s, err := r.wp.Subscribe(pub.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	d.Token = s.Token()
	if res, _ := r.send(t, alert(), d, nil); res.Verdict != push.Permanent || res.Status != http.StatusForbidden {
		t.Fatalf("got %v %d %q, want permanent 403", res.Verdict, res.Status, res.Reason)
	}
}

// TestSizeLimit: the largest payload Render allows is delivered in one
// 4096-byte record; one byte more fails Render with CodeTooLarge naming
// size and limit, and Send refuses it without sending.
func TestSizeLimit(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	c := alert()
	base, err := r.p.Render(c, &d)
	if err != nil {
		t.Fatal(err)
	}
	c.Config.Payload += strings.Repeat("x", MaxPlaintext-len(base))
	pl, err := r.p.Render(c, &d)
	if err != nil || len(pl) != MaxPlaintext {
		t.Fatalf("render: %d bytes, %v; want %d", len(pl), err, MaxPlaintext)
	}
	if res, _ := r.send(t, c, d, nil); res.Verdict != push.Delivered {
		t.Fatalf("a full record: %v %q", res.Verdict, res.Reason)
	}
	c.Config.Payload += "x"
	_, err = r.p.Render(c, &d)
	if herald.ErrorCode(err) != herald.CodeTooLarge || !strings.Contains(err.Error(), "3994") || !strings.Contains(err.Error(), "3993") {
		t.Fatalf("render over the limit: %v", err)
	}
	res := r.p.Send(context.Background(), &push.Notification{ID: notifID, Device: d, Payload: make([]byte, MaxPlaintext+1)})
	if res.Verdict != push.Permanent || res.Status != 0 {
		t.Fatalf("send over the limit: %v %d %q", res.Verdict, res.Status, res.Reason)
	}
	if got := r.wp.Stats().Received; got != 1 {
		t.Fatalf("emulator received %d requests, want 1", got)
	}
}

// TestTTLAndUrgency: TTL is the whole seconds left (0 once expired), and
// priority maps to Urgency.
func TestTTLAndUrgency(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	for _, tc := range []struct {
		exp      time.Time
		prio     int
		ttl, urg string
	}{
		{t0.Add(90*time.Second + 900*time.Millisecond), 0, "90", "high"},
		{t0.Add(-time.Second), 10, "0", "high"},
		{time.Time{}, 5, "0", "normal"},
		{t0.Add(time.Hour), 1, "3600", "low"},
	} {
		res, _ := r.send(t, alert(), d, func(n *push.Notification) { n.Expiration, n.Priority = tc.exp, tc.prio })
		if res.Verdict != push.Delivered {
			t.Fatalf("%v %q", res.Verdict, res.Reason)
		}
		arr := r.wp.Arrived(d.Token)
		h := arr[len(arr)-1].Headers
		if h["TTL"] != tc.ttl || h["Urgency"] != tc.urg {
			t.Errorf("exp %v prio %d: TTL %q Urgency %q; want %q %q", tc.exp, tc.prio, h["TTL"], h["Urgency"], tc.ttl, tc.urg)
		}
	}
}

// TestVAPIDShared: one JWT per origin is reused, renewed before it
// expires, and never claims more than 24 hours.
func TestVAPIDShared(t *testing.T) {
	r := newRig(t, nil)
	a1, err := r.p.vapid.authorization("https://push.example")
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := r.p.vapid.authorization("https://push.example")
	b1, _ := r.p.vapid.authorization("https://other.example")
	if a1 != a2 || a1 == b1 {
		t.Fatal("JWT not cached per origin")
	}
	claims := func(h string) (aud string, exp int64, sub string) {
		tok := strings.TrimPrefix(strings.Split(h, ",")[0], "vapid t=")
		cb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		var c struct {
			Aud string
			Exp int64
			Sub string
		}
		json.Unmarshal(cb, &c)
		return c.Aud, c.Exp, c.Sub
	}
	aud, exp, sub := claims(a1)
	if aud != "https://push.example" || sub != "mailto:ops@example.com" || exp <= t0.Unix() || exp > t0.Add(24*time.Hour).Unix() {
		t.Fatalf("claims aud %q exp %v sub %q", aud, time.Unix(exp, 0), sub)
	}
	*r.now = t0.Add(jwtLifetime - jwtRenewBefore - time.Second)
	if a3, _ := r.p.vapid.authorization("https://push.example"); a3 != a1 {
		t.Fatal("renewed too early")
	}
	*r.now = t0.Add(jwtLifetime - jwtRenewBefore + time.Second)
	a4, _ := r.p.vapid.authorization("https://push.example")
	if _, exp4, _ := claims(a4); a4 == a1 || exp4 <= exp {
		t.Fatal("not renewed before expiry")
	}
}

// TestEndpointGuard: registration refuses loopback, private, link-local
// and unspecified literals and localhost, unless allowed; the emulator's
// exact address is allowed but not another port on it.
func TestEndpointGuard(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	u, _ := url.Parse(r.emu.URL())
	sub, _ := herald.ParseWebPushSubscription(d.Token)
	tok := func(endpoint string) string {
		s := sub
		s.Endpoint = endpoint
		return s.Token()
	}
	open, err := New(Config{Subject: "mailto:a@b.c", Key: r.p.vapid.key, AllowPrivateEndpoints: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		endpoint string
		refused  bool
	}{
		{"https://push.example.com/x", false},
		{"https://8.8.8.8/x", false},
		{"https://127.0.0.1/x", true},
		{"https://localhost:8443/x", true},
		{"https://api.localhost/x", true},
		{"https://10.1.2.3/x", true},
		{"https://192.168.0.1/x", true},
		{"https://169.254.169.254/latest", true},
		{"https://0.0.0.0/x", true},
		{"https://[::1]/x", true},
		{"https://[fe80::1]/x", true},
		{"https://[::ffff:127.0.0.1]/x", true},
		{"https://[2606:4700::1111]/x", false},
		{"https://[64:ff9b::808:808]/x", false},  // NAT64 to a public address
		{"https://[2002:808:808::1]/x", false},   // 6to4 from a public address
		{"https://[64:ff9b::a9fe:a9fe]/x", true}, // NAT64 to 169.254.169.254
		{"https://[64:ff9b::7f00:1]/x", true},    // NAT64 to 127.0.0.1
		{"https://[64:ff9b:1::a00:1]/x", true},   // local-use NAT64
		{"https://[::7f00:1]/x", true},           // IPv4-compatible 127.0.0.1
		{"https://[::a9fe:a9fe]/x", true},        // IPv4-compatible 169.254.169.254
		{"https://[2002:7f00:1::]/x", true},      // 6to4 from 127.0.0.1
		{"https://[2002:c0a8:1::1]/x", true},     // 6to4 from 192.168.0.1
		{"https://0.1.2.3/x", true},              // "this network"
		{"https://100.64.0.1/x", true},           // CGNAT
		{"https://192.0.0.170/x", true},          // IETF protocol assignments
		{"https://198.18.0.1/x", true},           // benchmarking
		{"https://240.0.0.1/x", true},            // reserved
		{"https://255.255.255.255/x", true},      // broadcast
		{"https://224.0.0.1/x", true},            // multicast
		{"https://[fec0::1]/x", true},            // site-local
		{"https://[fc00::1]/x", true},            // unique local
		{"https://[100::1]/x", true},             // discard-only
		{"https://[ff02::1]/x", true},            // multicast
		{"https://" + u.Host + "/wpush/x", false},
		{"https://" + u.Hostname() + ":1/wpush/x", true},
	} {
		err := r.p.CheckToken(tok(tc.endpoint), "chat.example")
		if (err != nil) != tc.refused {
			t.Errorf("%s: err %v, refused want %v", tc.endpoint, err, tc.refused)
		}
		if err != nil && (herald.ErrorCode(err) != herald.CodeInvalidArgument || !strings.Contains(err.Error(), "endpoint")) {
			t.Errorf("%s: error %v does not name the endpoint as invalid_argument", tc.endpoint, err)
		}
		if err := open.CheckToken(tok(tc.endpoint), "chat.example"); err != nil {
			t.Errorf("%s with allow_private_endpoints: %v", tc.endpoint, err)
		}
	}
}

// TestDialGuard: the transport itself refuses to connect to a private
// address, whatever name led there; only the allowed address passes.
func TestDialGuard(t *testing.T) {
	r := newRig(t, nil)
	strict, err := New(Config{Subject: "mailto:a@b.c", Key: r.p.vapid.key, RootCAs: r.emu.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	u, _ := url.Parse(r.emu.URL())
	for _, target := range []string{r.emu.URL(), "https://localhost:" + u.Port()} {
		resp, err := strict.client.Get(target + "/wpush/x")
		var priv *errPrivate
		if err == nil {
			resp.Body.Close()
		}
		if !errors.As(err, &priv) {
			t.Fatalf("%s: err %v, want the private address refused", target, err)
		}
	}
	resp, err := r.p.client.Get(r.emu.URL() + "/wpush/x")
	if err != nil {
		t.Fatalf("allowed address refused: %v", err)
	}
	resp.Body.Close()
	// And Send says why, permanently, without a request.
	d := r.subscribe(t)
	res, _ := (&rig{p: strict, now: r.now}).send(t, alert(), d, nil)
	if res.Verdict != push.Permanent || !strings.Contains(res.Reason, "loopback") {
		t.Fatalf("send to a loopback endpoint: %v %q", res.Verdict, res.Reason)
	}
}

// TestConfig: New refuses a missing key or a subject that is not mailto:
// or https:.
func TestConfig(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Subject: "mailto:a@b.c"}, "no VAPID key"},
		{Config{Key: key}, "subject is empty"},
		{Config{Key: key, Subject: "ops@example.com"}, "not a mailto: or https:"},
		{Config{Key: key, Subject: "mailto:a@b.c", AllowAddrs: []string{"127.0.0.1"}}, "not ip:port"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.cfg.Subject, err, tc.want)
		}
	}
	p, err := New(Config{Key: key, Subject: "https://example.com/contact", Apps: []string{"a.b"}})
	if err != nil {
		t.Fatal(err)
	}
	if !p.HasApp("a.b") || p.HasApp("c.d") {
		t.Fatal("HasApp ignores Apps")
	}
}

// TestConnectionsKeptOpen: once a connection is up, concurrent pushes
// from many workers share it (HTTP/2) and the JWT: all arrive and no
// connection is dialled. (Concurrent first requests to a new host may each
// dial; the transport keeps one.)
func TestConnectionsKeptOpen(t *testing.T) {
	r := newRig(t, nil)
	d := r.subscribe(t)
	if res, _ := r.send(t, alert(), d, nil); res.Verdict != push.Delivered {
		t.Fatalf("warm-up: %v %q", res.Verdict, res.Reason)
	}
	if c := r.emu.Stats().Connections; c != 1 {
		t.Fatalf("%d connections after one push", c)
	}
	const workers, each = 8, 10
	errs := make(chan string, workers*each)
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				c := alert()
				c.NotifID = strings.Replace(notifID, "0b6f", string(rune('a'+w))+string(rune('a'+i))+"6f", 1)
				pl, err := r.p.Render(c, &d)
				if err != nil {
					errs <- err.Error()
					continue
				}
				res := r.p.Send(context.Background(), &push.Notification{ID: c.NotifID, Device: d, Payload: pl, Expiration: t0.Add(time.Minute)})
				if res.Verdict != push.Delivered {
					errs <- res.Reason
				}
			}
		}()
	}
	for range workers {
		<-done
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := len(r.wp.Arrived(d.Token)); got != 1+workers*each {
		t.Fatalf("arrived %d, want %d", got, 1+workers*each)
	}
	if c := r.emu.Stats().Connections; c != 1 {
		t.Fatalf("%d TLS connections for %d concurrent pushes, want the one kept open (HTTP/2)", c, workers*each)
	}
}

// TestVAPIDAudience: the VAPID aud is the endpoint's origin as push
// services serialize it: lower-case, without the default port; the
// emulator expects the same, so an endpoint written in capitals delivers.
func TestVAPIDAudience(t *testing.T) {
	for in, want := range map[string]string{
		"https://Push.Example.com:443/x":                       "https://push.example.com",
		"https://push.example.com/x":                           "https://push.example.com",
		"https://push.example.com:8443/x":                      "https://push.example.com:8443",
		"https://[2001:DB8::1]:443/x":                          "https://[2001:db8::1]",
		"https://[2001:db8::1]:8443/x":                         "https://[2001:db8::1]:8443",
		"HTTPS://UPDATES.PUSH.SERVICES.MOZILLA.COM/wpush/v2/x": "https://updates.push.services.mozilla.com",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := origin(u); got != want {
			t.Errorf("origin(%s) = %q, want %q", in, got, want)
		}
	}
	r := newRig(t, func(c *Config) { c.AllowPrivateEndpoints = true })
	d := r.subscribe(t)
	sub, _ := herald.ParseWebPushSubscription(d.Token)
	u, _ := url.Parse(sub.Endpoint)
	sub.Endpoint = "https://LOCALHOST:" + u.Port() + u.Path
	d.Token = sub.Token()
	if res, _ := r.send(t, alert(), d, nil); res.Verdict != push.Delivered {
		t.Fatalf("endpoint with a capitalized host: %v %q %s, want delivered", res.Verdict, res.Reason, res.Body)
	}
}

// TestVAPIDAlarmPerOrigin: a push service that refuses VAPID logs an
// error at most once a minute per origin, so a subscription pointing at a
// server that refuses everything cannot starve the alarm for another
// origin; the log names the origin.
func TestVAPIDAlarmPerOrigin(t *testing.T) {
	var logs bytes.Buffer
	r := newRig(t, func(c *Config) {
		c.AllowPrivateEndpoints = true
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	// Two origins, one emulator: 127.0.0.1:<port> and localhost:<port>.
	a := r.subscribe(t)
	b := r.subscribe(t)
	sub, _ := herald.ParseWebPushSubscription(b.Token)
	u, _ := url.Parse(sub.Endpoint)
	sub.Endpoint = "https://localhost:" + u.Port() + u.Path
	b.Token = sub.Token()
	alarms := func() int { return strings.Count(logs.String(), "refused the VAPID signature") }
	for i, tc := range []struct {
		d    herald.PushDevice
		want int
	}{
		{a, 1}, // the refusing origin alarms ...
		{a, 1}, // ... once a minute
		{b, 2}, // another origin still alarms
		{b, 2},
	} {
		r.wp.Script(tc.d.Token, emulator.Step{Status: http.StatusForbidden})
		if res, _ := r.send(t, alert(), tc.d, nil); res.Status != http.StatusForbidden {
			t.Fatalf("send %d: %v %d, want the scripted 403", i, res.Verdict, res.Status)
		}
		if got := alarms(); got != tc.want {
			t.Fatalf("after send %d: %d alarms, want %d\n%s", i, got, tc.want, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "origin=https://localhost:"+u.Port()) {
		t.Errorf("the alarm does not name the origin:\n%s", logs.String())
	}
	*r.now = r.now.Add(time.Minute)
	r.wp.Script(a.Token, emulator.Step{Status: http.StatusForbidden})
	r.send(t, alert(), a, nil)
	if got := alarms(); got != 3 {
		t.Errorf("a minute later: %d alarms, want 3", got)
	}
}

// TestNoProxyNoRedirect: the transport uses no proxy, whatever the
// environment says (a proxy would dial in the guard's place, hiding the
// address), and a push service's redirect is not followed: a 307 is a
// permanent failure and its Location is never requested.
func TestNoProxyNoRedirect(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	r := newRig(t, func(c *Config) { c.AllowPrivateEndpoints = true })
	if r.p.transport.Proxy != nil {
		t.Fatal("the transport has a Proxy")
	}
	var followed atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/elsewhere" {
			followed.Add(1)
			w.WriteHeader(http.StatusCreated)
			return
		}
		http.Redirect(w, req, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	p, err := New(Config{Subject: "mailto:a@b.c", Key: r.p.vapid.key, AllowPrivateEndpoints: true, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	d := r.subscribe(t)
	sub, _ := herald.ParseWebPushSubscription(d.Token)
	sub.Endpoint = srv.URL + "/push"
	d.Token = sub.Token()
	res, _ := (&rig{p: p, now: r.now}).send(t, alert(), d, nil)
	if res.Verdict != push.Permanent || res.Status != http.StatusTemporaryRedirect {
		t.Fatalf("307: %v %d %q, want permanent 307", res.Verdict, res.Status, res.Reason)
	}
	if n := followed.Load(); n != 0 {
		t.Fatalf("the redirect was followed %d times", n)
	}
}

// TestLoadOrCreateVAPIDKeyOnce: servers starting together on one data
// folder end with one key, written whole with mode 0600, and nothing else
// left in the folder.
func TestLoadOrCreateVAPIDKeyOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vapid.pem")
	const n = 8
	keys := make([]*ecdsa.PrivateKey, n)
	created := make([]bool, n)
	errs := make([]error, n)
	done := make(chan int)
	for i := range n {
		go func() { keys[i], created[i], errs[i] = LoadOrCreateVAPIDKey(path); done <- i }()
	}
	for range n {
		<-done
	}
	made := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !keys[i].Equal(keys[0]) {
			t.Fatalf("server %d has another key", i)
		}
		if created[i] {
			made++
		}
	}
	if made != 1 {
		t.Fatalf("%d servers report creating the key, want 1", made)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d entries in the folder, want only vapid.pem (temporary files removed)", len(ents))
	}
}
