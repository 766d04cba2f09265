package emulator

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

type fcmFixture struct {
	apns   *APNs
	fcm    *FCM
	client *http.Client
	sa     []byte
	token  string // an access token for project "proj-a"
}

func startFCM(t *testing.T) *fcmFixture {
	t.Helper()
	a := New(Config{})
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	f := NewFCM(FCMConfig{})
	f.Mount(a)
	x := &fcmFixture{apns: a, fcm: f, client: &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: a.CertPool()}, ForceAttemptHTTP2: true,
	}}}
	t.Cleanup(x.client.CloseIdleConnections)
	var err error
	if x.sa, err = f.ServiceAccount("proj-a"); err != nil {
		t.Fatal(err)
	}
	tok, err := x.fetch(x.sa)
	if err != nil {
		t.Fatal(err)
	}
	x.token = tok.AccessToken
	return x
}

// fetch exchanges a service account's assertion at its token_uri, as
// golang.org/x/oauth2/google does for the provider.
func (x *fcmFixture) fetch(sa []byte) (*oauth2.Token, error) {
	jc, err := google.JWTConfigFromJSON(sa, fcmScope)
	if err != nil {
		return nil, err
	}
	return jc.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, x.client)).Token()
}

type fcmAnswer struct {
	status int
	body   string
	header http.Header
}

func (x *fcmFixture) send(t *testing.T, project, bearer, body string) fcmAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, x.fcm.URL()+"/v1/projects/"+project+"/messages:send", strings.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := x.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fcmAnswer{resp.StatusCode, string(b), resp.Header}
}

func fcmMsg(token string, extra string) string {
	return `{"message":{"token":"` + token + `","android":{"priority":"HIGH","ttl":"60s","notification":{"tag":"6f1c1a52-8d3e-4c1b-9a51-1f2e3d4c5b6a"}},"notification":{"title":"t","body":"b"},"data":{"herald":"{}"}` + extra + `}}`
}

// TestFCMChecks: the emulator refuses what FCM refuses, in FCM's format.
func TestFCMChecks(t *testing.T) {
	x := startFCM(t)
	other, err := x.fcm.ServiceAccount("proj-b")
	if err != nil {
		t.Fatal(err)
	}
	otherTok, err := x.fetch(other)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, project, bearer, body string
		status                      int
		want                        string // in the body
	}{
		{"no bearer", "proj-a", "", fcmMsg("tok", ""), 401, `"status":"UNAUTHENTICATED"`},
		{"unknown bearer", "proj-a", "ya29.forged", fcmMsg("tok", ""), 401, `"status":"UNAUTHENTICATED"`},
		{"other project's token", "proj-a", otherTok.AccessToken, fcmMsg("tok", ""), 403, `"status":"PERMISSION_DENIED"`},
		{"unknown field", "proj-a", x.token, fcmMsg("tok", `,"colour":"red"`), 400, `unknown field \"colour\"`},
		{"no recipient", "proj-a", x.token, `{"message":{"data":{"a":"b"}}}`, 400, "Recipient of the message is not set."},
		{"malformed token", "proj-a", x.token, fcmMsg("bad token", ""), 400, "The registration token is not a valid FCM registration token"},
		{"reserved data key", "proj-a", x.token, `{"message":{"token":"tok","data":{"google.x":"1"}}}`, 400, `"field":"message.data"`},
		{"bad ttl", "proj-a", x.token, `{"message":{"token":"tok","android":{"ttl":"60"}}}`, 400, `"field":"message.android.ttl"`},
		{"ttl over four weeks", "proj-a", x.token, `{"message":{"token":"tok","android":{"ttl":"2419201s"}}}`, 400, `"field":"message.android.ttl"`},
		{"bad priority", "proj-a", x.token, `{"message":{"token":"tok","android":{"priority":"urgent"}}}`, 400, `"field":"message.android.priority"`},
		{"too big", "proj-a", x.token, `{"message":{"token":"tok","data":{"p":"` + strings.Repeat("x", 4096) + `"}}}`, 400, "Message is too big"},
		{"data value not a string", "proj-a", x.token, `{"message":{"token":"tok","data":{"p":12}}}`, 400, `"status":"INVALID_ARGUMENT"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := x.send(t, tt.project, tt.bearer, tt.body)
			if got.status != tt.status || !strings.Contains(got.body, tt.want) {
				t.Errorf("answer %d %s; want %d containing %s", got.status, got.body, tt.status, tt.want)
			}
		})
	}
	if n := len(x.fcm.Arrived("tok")); n != 0 {
		t.Errorf("%d arrived, want none", n)
	}
	if got := x.send(t, "proj-a", x.token, `{"message":{"token":"tok","data":{"p":"`+strings.Repeat("x", 4094)+`"}}}`); got.status != 200 {
		t.Errorf("4095 bytes of data: %d %s, want 200", got.status, got.body)
	}
}

// TestFCMTokenEndpoint: access tokens come only from assertions signed by
// the emulator's own accounts, and expire.
func TestFCMTokenEndpoint(t *testing.T) {
	x := startFCM(t)
	// An account of another emulator: same shape, unknown key.
	y := startFCM(t)
	sa := bytes.Replace(y.sa, []byte(y.fcm.URL()), []byte(x.fcm.URL()), -1)
	if _, err := x.fetch(sa); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("foreign account: %v, want invalid_grant", err)
	}
	var acc struct {
		ClientEmail string `json:"client_email"`
	}
	json.Unmarshal(x.sa, &acc)
	if !x.fcm.RevokeAccount(acc.ClientEmail) {
		t.Fatal("RevokeAccount: no such account")
	}
	if _, err := x.fetch(x.sa); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("revoked account: %v, want invalid_grant", err)
	}
	if got := x.send(t, "proj-a", x.token, fcmMsg("tok", "")); got.status != 401 {
		t.Errorf("revoked account's token: %d, want 401", got.status)
	}
	if got := x.fcm.TokensIssued(); got != 1 {
		t.Errorf("TokensIssued = %d, want 1", got)
	}
}

// TestFCMAddServiceAccount: a key file an earlier emulator made (as
// `herald emulator` keeps in its folder across restarts, maybe on another
// address) is accepted once added, and its URLs then point here.
func TestFCMAddServiceAccount(t *testing.T) {
	old := startFCM(t)
	x := startFCM(t)
	if _, err := x.fetch(bytes.Replace(old.sa, []byte(old.fcm.URL()), []byte(x.fcm.URL()), -1)); err == nil {
		t.Fatal("an unknown account got a token before AddServiceAccount")
	}
	sa, err := x.fcm.AddServiceAccount(old.sa)
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		TokenURI    string `json:"token_uri"`
		PrivateKey  string `json:"private_key"`
		ClientEmail string `json:"client_email"`
	}
	var doc, was key
	json.Unmarshal(sa, &doc)
	json.Unmarshal(old.sa, &was)
	if doc.TokenURI != x.fcm.URL()+"/fcm/token" || doc.PrivateKey != was.PrivateKey || doc.ClientEmail != was.ClientEmail {
		t.Errorf("returned key: token_uri %q, same key %v, same email %v; want this emulator's token URI and the same account",
			doc.TokenURI, doc.PrivateKey == was.PrivateKey, doc.ClientEmail == was.ClientEmail)
	}
	tok, err := x.fetch(sa)
	if err != nil {
		t.Fatalf("token for the added account: %v", err)
	}
	if got := x.send(t, "proj-a", tok.AccessToken, fcmMsg("tok", "")); got.status != 200 {
		t.Errorf("send with the added account's token: %d %s, want 200", got.status, got.body)
	}
	for _, bad := range []string{`{}`, `{"type":"service_account","project_id":"p","client_email":"a@b"}`, `not json`} {
		if _, err := x.fcm.AddServiceAccount([]byte(bad)); err == nil {
			t.Errorf("AddServiceAccount(%s) accepted it", bad)
		}
	}
}

func TestFCMTokenLifetime(t *testing.T) {
	c := &clock{t: time.Now()}
	a := New(Config{})
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	f := NewFCM(FCMConfig{Now: c.Now, TokenLifetime: 10 * time.Minute})
	f.Mount(a)
	x := &fcmFixture{apns: a, fcm: f, client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.CertPool()}}}}
	x.sa, _ = f.ServiceAccount("proj-a")
	tok, err := x.fetch(x.sa)
	if err != nil {
		t.Fatal(err)
	}
	if got := x.send(t, "proj-a", tok.AccessToken, fcmMsg("tok", "")); got.status != 200 {
		t.Fatalf("fresh token: %d %s", got.status, got.body)
	}
	c.Add(10 * time.Minute)
	if got := x.send(t, "proj-a", tok.AccessToken, fcmMsg("tok", "")); got.status != 401 {
		t.Errorf("expired token: %d, want 401", got.status)
	}
}

// TestFCMInbox: a resend with the same notification ID replaces the
// inbox entry; Arrived and Duplicates see both.
func TestFCMInbox(t *testing.T) {
	x := startFCM(t)
	var hooked []*Notification
	x.fcm.OnAccept(func(n *Notification) { hooked = append(hooked, n) })
	for range 2 {
		if got := x.send(t, "proj-a", x.token, fcmMsg("tok", "")); got.status != 200 || !strings.Contains(got.body, `"name":"projects/proj-a/messages/`) {
			t.Fatalf("answer %d %s", got.status, got.body)
		}
	}
	x.send(t, "proj-a", x.token, `{"message":{"token":"tok","data":{"notif_id":"0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"}}}`)
	in, arrived := x.fcm.Inbox("tok"), x.fcm.Arrived("tok")
	if len(in) != 2 || in[0].Deliveries != 2 || in[1].Deliveries != 1 || len(arrived) != 3 || len(hooked) != 3 {
		t.Fatalf("inbox %+v, %d arrived, %d hooked; want 2 entries (2 and 1 deliveries), 3 arrived", in, len(arrived), len(hooked))
	}
	n := in[0]
	if n.Vendor != "fcm" || n.ID != "6f1c1a52-8d3e-4c1b-9a51-1f2e3d4c5b6a" || n.CollapseID != n.ID || n.Topic != "proj-a" ||
		n.PushType != "notification" || n.Priority != 10 || n.Headers["ttl"] != "60s" || n.KeyID == "" {
		t.Errorf("notification = %+v", n)
	}
	if d := in[1]; d.PushType != "data" || d.Priority != 5 || d.ID != "0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d" {
		t.Errorf("data message = %+v", d)
	}
	if !json.Valid(n.Payload) || !strings.Contains(string(n.Payload), `"token":"tok"`) {
		t.Errorf("Payload = %s, want the message object", n.Payload)
	}
	st := x.fcm.Stats()
	if st.Received != 3 || st.Accepted != 3 || st.Duplicates != 1 {
		t.Errorf("Stats = %+v, want 3 received, 3 accepted, 1 duplicate", st)
	}
}

// TestFCMScript: steps answer in FCM's error format, with Retry-After.
func TestFCMScript(t *testing.T) {
	x := startFCM(t)
	x.fcm.Script("tok", Step{Status: 404}, Step{Status: 429, RetryAfter: 3 * time.Second}, Step{Status: 400, Reason: "INVALID_ARGUMENT message.data"})
	got := x.send(t, "proj-a", x.token, fcmMsg("tok", ""))
	if got.status != 404 || !strings.Contains(got.body, `"errorCode":"UNREGISTERED"`) || !strings.Contains(got.body, `"status":"NOT_FOUND"`) {
		t.Errorf("404 step: %d %s", got.status, got.body)
	}
	got = x.send(t, "proj-a", x.token, fcmMsg("tok", ""))
	if got.status != 429 || got.header.Get("Retry-After") != "3" || !strings.Contains(got.body, `"errorCode":"QUOTA_EXCEEDED"`) {
		t.Errorf("429 step: %d %v %s", got.status, got.header, got.body)
	}
	got = x.send(t, "proj-a", x.token, fcmMsg("tok", ""))
	if got.status != 400 || !strings.Contains(got.body, `"field":"message.data"`) {
		t.Errorf("400 step: %d %s", got.status, got.body)
	}
	if got = x.send(t, "proj-a", x.token, fcmMsg("tok", "")); got.status != 200 {
		t.Errorf("after the script: %d, want 200", got.status)
	}
	if r := x.fcm.Stats().Rejected; r["UNREGISTERED"] != 1 || r["QUOTA_EXCEEDED"] != 1 || r["INVALID_ARGUMENT"] != 1 {
		t.Errorf("Rejected = %v", r)
	}
}

// TestFCMControl: the control API serves accounts, scripts and inboxes.
func TestFCMControl(t *testing.T) {
	x := startFCM(t)
	post := func(path, body string) (int, []byte) {
		resp, err := x.client.Post(x.fcm.URL()+"/_emulator/fcm/"+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	status, sa := post("service-account", `{"project":"proj-c"}`)
	if status != 200 {
		t.Fatalf("service-account: %d %s", status, sa)
	}
	tok, err := x.fetch(sa)
	if err != nil {
		t.Fatalf("the control API's account: %v", err)
	}
	if status, b := post("script/tok", `[{"status":503,"retry_after":"2s"}]`); status != 200 {
		t.Fatalf("script: %d %s", status, b)
	}
	if got := x.send(t, "proj-c", tok.AccessToken, fcmMsg("tok", "")); got.status != 503 || !strings.Contains(got.body, "UNAVAILABLE") {
		t.Errorf("scripted over HTTP: %d %s", got.status, got.body)
	}
	x.send(t, "proj-c", tok.AccessToken, fcmMsg("tok", ""))
	resp, err := x.client.Get(x.fcm.URL() + "/_emulator/fcm/inbox/tok")
	if err != nil {
		t.Fatal(err)
	}
	var in []Notification
	json.NewDecoder(resp.Body).Decode(&in)
	resp.Body.Close()
	if len(in) != 1 || in[0].Topic != "proj-c" {
		t.Errorf("inbox over HTTP = %+v", in)
	}
	if status, _ := post("expire-tokens", ``); status != 200 {
		t.Errorf("expire-tokens: %d", status)
	}
	if got := x.send(t, "proj-c", tok.AccessToken, fcmMsg("tok", "")); got.status != 401 {
		t.Errorf("after expire-tokens: %d, want 401", got.status)
	}
	if status, _ := post("nothing", ``); status != 404 {
		t.Errorf("unknown route: %d, want 404", status)
	}
}

// FuzzFCMRequest: whatever a client sends as a message or an assertion,
// the emulator's checks do not panic, and a message they pass has exactly
// one well-formed token and a payload within the limit.
func FuzzFCMRequest(f *testing.F) {
	f.Add([]byte(`{"token":"t:1","android":{"priority":"HIGH","ttl":"60s","notification":{"tag":"x","notification_count":1}},"data":{"herald":"{}"}}`), "a.b.c")
	f.Add([]byte(`{"token":"t","android":{"ttl":"99999999999999s"}}`), "eyJhbGciOiJSUzI1NiJ9.e30.")
	f.Add([]byte(`{"topic":"news","data":{"gcm.x":"1"}}`), "..")
	fx := NewFCM(FCMConfig{})
	f.Fuzz(func(t *testing.T, body []byte, assertion string) {
		var m fcmMessage
		if fcmStrictJSON(body, &m) == nil {
			if status, _, _, _ := checkFCMMessage(&m); status == 0 {
				if m.Token == "" || !validFCMToken(m.Token) {
					t.Fatalf("passed with token %q", m.Token)
				}
			}
		}
		if acc, _ := fx.checkAssertion(assertion, "https://127.0.0.1/fcm/token"); acc != nil {
			t.Fatal("an assertion passed with no accounts")
		}
	})
}
