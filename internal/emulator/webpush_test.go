package emulator

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// RFC 8291 Appendix A: the user agent's keys and the example's body.
var rfc8291 = struct {
	plaintext, uaPrivate, auth, body, asPublic string
}{
	plaintext: "When I grow up, I want to be a watermelon",
	uaPrivate: "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
	auth:      "BTBZMqHH6r4Tts7J_aSIgg",
	asPublic:  "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8",
	body:      "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
}

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWebPushDecryptRFC8291: the emulator's browser side reads the RFC's
// example body as the RFC says, and refuses it with a wrong secret or a
// flipped byte.
func TestWebPushDecryptRFC8291(t *testing.T) {
	ua, err := ecdh.P256().NewPrivateKey(unb64(t, rfc8291.uaPrivate))
	if err != nil {
		t.Fatal(err)
	}
	body := unb64(t, rfc8291.body)
	got, err := DecryptWebPush(body, ua, unb64(t, rfc8291.auth))
	if err != nil || string(got) != rfc8291.plaintext {
		t.Fatalf("got %q, %v; want %q", got, err, rfc8291.plaintext)
	}
	if _, err := DecryptWebPush(body, ua, make([]byte, 16)); err == nil {
		t.Fatal("decrypted with the wrong auth secret")
	}
	bad := bytes.Clone(body)
	bad[len(bad)-20] ^= 1
	if _, err := DecryptWebPush(bad, ua, unb64(t, rfc8291.auth)); err == nil {
		t.Fatal("decrypted a corrupted record")
	}
}

// wpFixture is a started emulator with Web Push mounted and the RFC 8291
// example's user agent subscribed (so the RFC's body is a valid push).
type wpFixture struct {
	*fixture
	wp       *WebPush
	endpoint string
	vapid    *signer
}

func startWebPush(t *testing.T, bindKey bool) *wpFixture {
	t.Helper()
	f := start(t, Config{})
	wp := NewWebPush(WebPushConfig{Now: f.clock.Now})
	wp.Mount(f.a)
	ua, _ := ecdh.P256().NewPrivateKey(unb64(t, rfc8291.uaPrivate))
	v := newSigner(t, "", "")
	sub := &wpSub{id: "rfc8291", priv: ua, auth: unb64(t, rfc8291.auth)}
	if bindKey {
		pub, _ := v.priv.PublicKey.ECDH()
		sub.appKey = pub.Bytes()
	}
	sub.endpoint = f.a.URL() + webPushPrefix + sub.id
	wp.subs[sub.id] = sub
	return &wpFixture{fixture: f, wp: wp, endpoint: sub.endpoint, vapid: v}
}

// vapidHeader is a VAPID Authorization with claims overridden by over.
func (f *wpFixture) vapidHeader(s *signer, over map[string]any) string {
	claims := map[string]any{"aud": strings.TrimSuffix(f.a.URL(), "/"), "exp": f.clock.Now().Add(12 * time.Hour).Unix(), "sub": "mailto:ops@example.com"}
	for k, v := range over {
		if v == nil {
			delete(claims, k)
		} else {
			claims[k] = v
		}
	}
	cb, _ := json.Marshal(claims)
	pub, _ := s.priv.PublicKey.ECDH()
	return fmt.Sprintf("vapid t=%s, k=%s", s.sign(`{"typ":"JWT","alg":"ES256"}`, string(cb)), base64.RawURLEncoding.EncodeToString(pub.Bytes()))
}

// wpTopic is a Topic in the notification ID form (a UUID's hex digits).
const wpTopic = "0b6f9c1e4a5d4e7f9a8b1c2d3e4f5a6b"

func (f *wpFixture) post(t *testing.T, h map[string]string, body []byte) (*http.Response, wpError) {
	t.Helper()
	r, _ := http.NewRequest(http.MethodPost, f.endpoint, bytes.NewReader(body))
	r.Header.Set("Authorization", f.vapidHeader(f.vapid, nil))
	r.Header.Set("TTL", "60")
	r.Header.Set("Content-Encoding", "aes128gcm")
	r.Header.Set("Topic", wpTopic)
	for k, v := range h {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	resp, err := f.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e wpError
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp, e
}

// TestWebPushChecks: the emulator refuses what a push service refuses, in
// autopush's error format, and accepts the RFC's example.
func TestWebPushChecks(t *testing.T) {
	f := startWebPush(t, true)
	other := newSigner(t, "", "")
	now := f.clock.Now()
	body := unb64(t, rfc8291.body)
	big := append(bytes.Clone(body), make([]byte, 4097-len(body))...)
	for _, tc := range []struct {
		name   string
		h      map[string]string
		body   []byte
		status int
	}{
		{"no auth", map[string]string{"Authorization": ""}, body, 401},
		{"bearer", map[string]string{"Authorization": "Bearer x"}, body, 401},
		{"wrong aud", map[string]string{"Authorization": f.vapidHeader(f.vapid, map[string]any{"aud": "https://push.example"})}, body, 401},
		{"expired", map[string]string{"Authorization": f.vapidHeader(f.vapid, map[string]any{"exp": now.Add(-time.Second).Unix()})}, body, 401},
		{"exp over 24h", map[string]string{"Authorization": f.vapidHeader(f.vapid, map[string]any{"exp": now.Add(24*time.Hour + time.Minute).Unix()})}, body, 401},
		{"no sub", map[string]string{"Authorization": f.vapidHeader(f.vapid, map[string]any{"sub": nil})}, body, 401},
		{"signed by another key", map[string]string{"Authorization": swapK(f.vapidHeader(other, nil), f.vapidHeader(f.vapid, nil))}, body, 401},
		{"another server's key", map[string]string{"Authorization": f.vapidHeader(other, nil)}, body, 403},
		{"no TTL", map[string]string{"TTL": ""}, body, 400},
		{"bad urgency", map[string]string{"Urgency": "urgent"}, body, 400},
		{"bad topic", map[string]string{"Topic": "not/base64url"}, body, 400},
		{"aesgcm", map[string]string{"Content-Encoding": "aesgcm"}, body, 400},
		{"too large", nil, big, 413},
		{"undecryptable", nil, body[:len(body)-1], 400},
		{"ok", map[string]string{"Urgency": "low"}, body, 201},
	} {
		resp, e := f.post(t, tc.h, tc.body)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d (%s), want %d", tc.name, resp.StatusCode, e.Message, tc.status)
		}
		if tc.status != 201 && (e.Code != tc.status || e.Errno == 0 || e.Message == "") {
			t.Errorf("%s: error body %+v is not autopush's shape", tc.name, e)
		}
	}
	in := f.wp.Inbox(f.endpoint)
	if len(in) != 1 {
		t.Fatalf("inbox %d, want 1", len(in))
	}
	var s string
	if json.Unmarshal(in[0].Payload, &s); s != rfc8291.plaintext || in[0].Priority != 1 || in[0].Headers["TTL"] != "60" {
		t.Fatalf("notification %+v", in[0])
	}
	st := f.wp.Stats()
	if st.Received != 15 || st.Accepted != 1 || st.Rejected["401"] != 7 || st.Rejected["413"] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// swapK is a's JWT with b's key: a signature k does not verify.
func swapK(a, b string) string {
	t, _, _ := strings.Cut(a, ", k=")
	_, k, _ := strings.Cut(b, ", k=")
	return t + ", k=" + k
}

// TestWebPushScriptAndReplace: scripted answers per subscription (named by
// its JSON, endpoint or ID), then a resend with one Topic replaces.
func TestWebPushScriptAndReplace(t *testing.T) {
	f := startWebPush(t, false)
	body := unb64(t, rfc8291.body)
	tok := fmt.Sprintf(`{"endpoint":%q,"keys":{"p256dh":"x","auth":"y"}}`, f.endpoint)
	f.wp.Script(tok, Step{Status: 429, RetryAfter: 1500 * time.Millisecond}, Step{Status: 410})
	if resp, e := f.post(t, nil, body); resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" || e.Errno != errnoTooMany {
		t.Fatalf("step 1: %d %q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), e)
	}
	if resp, _ := f.post(t, nil, body); resp.StatusCode != 410 {
		t.Fatalf("step 2: %d", resp.StatusCode)
	}
	for range 2 {
		if resp, _ := f.post(t, nil, body); resp.StatusCode != 201 || resp.Header.Get("Location") == "" {
			t.Fatalf("after the script: %d", resp.StatusCode)
		}
	}
	in, arr := f.wp.Inbox("rfc8291"), f.wp.Arrived(f.endpoint)
	if len(in) != 1 || in[0].Deliveries != 2 || len(arr) != 2 || in[0].ID != wpTopic || in[0].CollapseID != wpTopic {
		t.Fatalf("inbox %+v, arrived %d", in, len(arr))
	}
	if d := f.wp.Stats().Duplicates; d != 1 {
		t.Fatalf("duplicates %d, want 1", d)
	}
	// A collapse key's Topic replaces the shown notification too, but
	// names no one notification: no duplicate is counted.
	for range 2 {
		if resp, _ := f.post(t, map[string]string{"Topic": "chat-1"}, body); resp.StatusCode != 201 {
			t.Fatalf("collapse key push: %d", resp.StatusCode)
		}
	}
	if in := f.wp.Inbox(f.endpoint); len(in) != 2 || in[1].Deliveries != 2 {
		t.Fatalf("inbox after two collapse-key pushes %+v, want them replacing one entry", in)
	}
	if d := f.wp.Stats().Duplicates; d != 1 {
		t.Fatalf("duplicates %d after two collapse-key pushes, want still 1", d)
	}
	f.wp.Unsubscribe(f.endpoint)
	if resp, e := f.post(t, nil, body); resp.StatusCode != 410 || e.Errno != errnoGone {
		t.Fatalf("after unsubscribe: %d %+v", resp.StatusCode, e)
	}
}

// TestWebPushControl: subscribe and read the inbox over the control API.
func TestWebPushControl(t *testing.T) {
	f := startWebPush(t, false)
	resp, err := f.client.Post(f.a.URL()+"/_emulator/webpush/subscribe", "application/json", strings.NewReader(`{"application_server_key":"`+rfc8291.asPublic+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	var sub struct {
		Endpoint string
		Keys     struct{ P256dh, Auth string }
	}
	json.NewDecoder(resp.Body).Decode(&sub)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(sub.Endpoint, f.a.URL()+"/wpush/") || len(unb64(t, sub.Keys.P256dh)) != 65 || len(unb64(t, sub.Keys.Auth)) != 16 {
		t.Fatalf("subscribe: %d %+v", resp.StatusCode, sub)
	}
	id := sub.Endpoint[strings.LastIndex(sub.Endpoint, "/")+1:]
	resp, err = f.client.Get(f.a.URL() + "/_emulator/webpush/inbox/" + id)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "[]" {
		t.Fatalf("inbox: %d %s", resp.StatusCode, b)
	}
	resp, _ = f.client.Post(f.a.URL()+"/_emulator/webpush/subscribe", "application/json", strings.NewReader(`{"application_server_key":"AAAA"}`))
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("subscribe with a bad key: %d", resp.StatusCode)
	}
}

// FuzzDecryptWebPush: any body a client sends is refused or decrypted,
// never a panic.
func FuzzDecryptWebPush(f *testing.F) {
	body, _ := base64.RawURLEncoding.DecodeString(rfc8291.body)
	f.Add(body)
	f.Add(body[:21])
	f.Add(append(bytes.Clone(body[:20]), 0))
	raw, _ := base64.RawURLEncoding.DecodeString(rfc8291.uaPrivate)
	ua, _ := ecdh.P256().NewPrivateKey(raw)
	auth, _ := base64.RawURLEncoding.DecodeString(rfc8291.auth)
	f.Fuzz(func(t *testing.T, b []byte) {
		DecryptWebPush(b, ua, auth)
	})
}

// TestWebPushOrigin: the aud the emulator expects is the request's origin
// lower-cased and without the default port, as real push services compare.
func TestWebPushOrigin(t *testing.T) {
	for host, want := range map[string]string{
		"Push.Example.com:443": "https://push.example.com",
		"push.example.com":     "https://push.example.com",
		"127.0.0.1:8443":       "https://127.0.0.1:8443",
		"[2001:DB8::1]:443":    "https://[2001:db8::1]",
		"LOCALHOST:7402":       "https://localhost:7402",
	} {
		if got := httpsOrigin(host); got != want {
			t.Errorf("httpsOrigin(%q) = %q, want %q", host, got, want)
		}
	}
}
