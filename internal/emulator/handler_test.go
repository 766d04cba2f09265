package emulator

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
)

func TestAnswers(t *testing.T) {
	f := start(t, Config{})
	big := `{"aps":{"alert":"` + strings.Repeat("x", maxPayload) + `"}}`
	bigVoIP := `{"aps":{"alert":"` + strings.Repeat("x", maxPayloadVoIP) + `"}}`
	mid := `{"aps":{},"p":"` + strings.Repeat("x", maxPayload) + `"}` // > 4096, < 5120
	voip := map[string]string{"apns-push-type": "voip", "apns-topic": testTopic + ".voip"}
	bg := map[string]string{"apns-push-type": "background", "apns-priority": "5"}
	tests := []struct {
		name string
		req  req
		want string
	}{
		{"accepted", req{}, "200"},
		{"upper-case token", req{token: strings.ToUpper(testToken)}, "200"},
		{"other path", req{path: "/3/devices/" + testToken}, "404 BadPath"},
		{"root path", req{path: "/"}, "404 BadPath"},
		{"GET", req{method: http.MethodGet, body: ptr("")}, "405 MethodNotAllowed"},
		{"PUT", req{method: http.MethodPut}, "405 MethodNotAllowed"},
		{"empty token", req{path: "/3/device/"}, "400 MissingDeviceToken"},
		{"non-hex token", req{token: "0123456789abcdefg0"}, "400 BadDeviceToken"},
		{"odd token", req{token: "abc"}, "400 BadDeviceToken"},
		{"token too long", req{token: strings.Repeat("ab", 101)}, "400 BadDeviceToken"},
		{"token with slash", req{path: "/3/device/abcd/ef"}, "400 BadDeviceToken"},
		{"no authorization", req{auth: "-"}, "403 MissingProviderToken"},
		{"not bearer", req{auth: "basic dXNlcjpwYXNz"}, "403 InvalidProviderToken"},
		{"duplicate topic", req{headers: map[string]string{"+apns-topic": testTopic}}, "400 DuplicateHeaders"},
		{"no topic", req{headers: map[string]string{"apns-topic": ""}}, "400 MissingTopic"},
		{"no push type", req{headers: map[string]string{"apns-push-type": ""}}, "400 InvalidPushType"},
		{"unknown push type", req{headers: map[string]string{"apns-push-type": "alrt"}}, "400 InvalidPushType"},
		{"voip", req{headers: voip}, "200"},
		{"voip without .voip topic", req{headers: map[string]string{"apns-push-type": "voip"}}, "400 BadTopic"},
		{"liveactivity without suffix", req{headers: map[string]string{"apns-push-type": "liveactivity"}}, "400 BadTopic"},
		{"mdm any topic", req{headers: map[string]string{"apns-push-type": "mdm"}}, "200"},
		{"priority 10", req{headers: map[string]string{"apns-priority": "10"}}, "200"},
		{"priority 5", req{headers: map[string]string{"apns-priority": "5"}}, "200"},
		{"priority 1", req{headers: map[string]string{"apns-priority": "1"}}, "200"},
		{"priority 7", req{headers: map[string]string{"apns-priority": "7"}}, "400 BadPriority"},
		{"priority word", req{headers: map[string]string{"apns-priority": "high"}}, "400 BadPriority"},
		{"background priority 5", req{headers: bg, body: ptr(`{"aps":{"content-available":1},"p":"x"}`)}, "200"},
		{"background without content-available", req{headers: bg, body: ptr(`{"aps":{}}`)}, "400 BadBackgroundPush"},
		{"background content-available 0", req{headers: bg, body: ptr(`{"aps":{"content-available":0}}`)}, "400 BadBackgroundPush"},
		{"background with badge only", req{headers: bg, body: ptr(`{"aps":{"badge":3}}`)}, "400 BadBackgroundPush"},
		{"background with badge", req{headers: bg, body: ptr(`{"aps":{"content-available":1,"badge":3}}`)}, "400 BadBackgroundPush"},
		{"background with alert", req{headers: bg, body: ptr(`{"aps":{"content-available":1,"alert":"hi"}}`)}, "400 BadBackgroundPush"},
		{"background with sound", req{headers: bg, body: ptr(`{"aps":{"content-available":1,"sound":"default"}}`)}, "400 BadBackgroundPush"},
		{"alert with badge only", req{headers: map[string]string{"apns-priority": "5"}, body: ptr(`{"aps":{"badge":3}}`)}, "200"},
		{"background priority 10", req{headers: map[string]string{"apns-push-type": "background", "apns-priority": "10"}}, "400 BadPriority"},
		{"background default priority", req{headers: map[string]string{"apns-push-type": "background"}}, "400 BadPriority"},
		{"expiration", req{headers: map[string]string{"apns-expiration": "1893456000"}}, "200"},
		{"expiration zero", req{headers: map[string]string{"apns-expiration": "0"}}, "200"},
		{"expiration word", req{headers: map[string]string{"apns-expiration": "tomorrow"}}, "400 BadExpirationDate"},
		{"expiration negative", req{headers: map[string]string{"apns-expiration": "-1"}}, "400 BadExpirationDate"},
		{"expiration float", req{headers: map[string]string{"apns-expiration": "1.5"}}, "400 BadExpirationDate"},
		{"collapse id 64", req{headers: map[string]string{"apns-collapse-id": strings.Repeat("c", 64)}}, "200"},
		{"collapse id 65", req{headers: map[string]string{"apns-collapse-id": strings.Repeat("c", 65)}}, "400 BadCollapseId"},
		{"apns-id", req{headers: map[string]string{"apns-id": "123e4567-e89b-12d3-a456-426614174000"}}, "200"},
		{"apns-id upper", req{headers: map[string]string{"apns-id": "123E4567-E89B-12D3-A456-426614174000"}}, "200"},
		{"apns-id malformed", req{headers: map[string]string{"apns-id": "123e4567e89b12d3a456426614174000"}}, "400 BadMessageId"},
		{"apns-id not hex", req{headers: map[string]string{"apns-id": "123e4567-e89b-12d3-a456-42661417400g"}}, "400 BadMessageId"},
		{"empty body", req{body: ptr("")}, "400 PayloadEmpty"},
		{"not JSON", req{body: ptr("hello")}, "400 PayloadEmpty"},
		{"JSON array", req{body: ptr(`[{"aps":{}}]`)}, "400 PayloadEmpty"},
		{"no aps", req{body: ptr(`{"alert":"hi"}`)}, "400 PayloadEmpty"},
		{"aps not an object", req{body: ptr(`{"aps":"hi"}`)}, "400 PayloadEmpty"},
		{"aps escaped name", req{body: ptr(`{"\u0061ps":{}}`)}, "200"},
		{"trailing garbage", req{body: ptr(`{"aps":{}} x`)}, "400 PayloadEmpty"},
		{"4096 bytes", req{body: ptr(`{"aps":{},"p":"` + strings.Repeat("x", maxPayload-len(`{"aps":{},"p":""}`)) + `"}`)}, "200"},
		{"over 4096", req{body: &big}, "413 PayloadTooLarge"},
		{"voip over 4096", req{headers: voip, body: &mid}, "200"},
		{"voip over 5120", req{headers: voip, body: &bigVoIP}, "413 PayloadTooLarge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.do(t, tt.req)
			if got.String() != tt.want {
				t.Fatalf("answer = %s, want %s", got, tt.want)
			}
			if len(got.id) != 36 {
				t.Errorf("apns-id = %q, want a UUID", got.id)
			}
			if id := tt.req.headers["apns-id"]; id != "" && !strings.Contains(tt.name, "malformed") && !strings.Contains(tt.name, "not hex") && got.id != id {
				t.Errorf("apns-id = %q, want %q echoed", got.id, id)
			}
		})
	}
}

func TestAnswerEchoesAPNsIDOnErrors(t *testing.T) {
	f := start(t, Config{})
	id := "8e2b7e2c-3f0a-4d1e-9b7a-6c5d4e3f2a1b"
	got := f.do(t, req{headers: map[string]string{"apns-id": id, "apns-priority": "3"}})
	if got.String() != "400 BadPriority" || got.id != id {
		t.Fatalf("answer = %s with apns-id %q, want 400 BadPriority echoing %q", got, got.id, id)
	}
}

func TestKeyRestrictions(t *testing.T) {
	restricted := newSigner(t, "KEYTOPIC01", testTeamID)
	sandboxOnly := newSigner(t, "KEYSANDBOX", testTeamID)
	k := restricted.key()
	k.Topics = []string{"com.example.other"}
	s := sandboxOnly.key()
	s.Env = Development
	g := start(t, Config{Keys: map[string]Key{restricted.kid: k, sandboxOnly.kid: s}})
	now := g.clock.Now()
	tests := []struct {
		name string
		req  req
		want string
	}{
		{"topic not the key's", req{auth: "bearer " + restricted.jwt(now)}, "400 TopicDisallowed"},
		{"the key's topic", req{auth: "bearer " + restricted.jwt(now), headers: map[string]string{"apns-topic": "com.example.other"}}, "200"},
		{"the key's voip topic", req{auth: "bearer " + restricted.jwt(now), headers: map[string]string{"apns-topic": "com.example.other.voip", "apns-push-type": "voip"}}, "200"},
		{"sandbox key in production", req{auth: "bearer " + sandboxOnly.jwt(now)}, "403 BadEnvironmentKeyIdInToken"},
		{"sandbox key in sandbox", req{auth: "bearer " + sandboxOnly.jwt(now), sandbox: true}, "200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One connection per key: a connection changing keys is a token update.
			if got := doWith(t, h2Client(t, g.a, false), g, tt.req); got.String() != tt.want {
				t.Errorf("answer = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestNotificationRecorded(t *testing.T) {
	f := start(t, Config{})
	id := "00000000-0000-4000-8000-000000000001"
	got := f.do(t, req{sandbox: true, headers: map[string]string{
		"apns-id": id, "apns-priority": "5", "apns-expiration": "1893456000", "apns-collapse-id": "conv-1",
	}})
	if got.status != 200 {
		t.Fatalf("answer = %s, want 200", got)
	}
	in := f.a.Inbox(strings.ToUpper(testToken))
	if len(in) != 1 {
		t.Fatalf("inbox has %d notifications, want 1", len(in))
	}
	n := in[0]
	want := Notification{
		ID: id, Token: testToken, Topic: testTopic, PushType: "alert", Priority: 5, Expiration: 1893456000,
		CollapseID: "conv-1", Env: Development, KeyID: testKeyID, TeamID: testTeamID,
		IssuedAt: f.clock.Now(), ReceivedAt: f.clock.Now(),
	}
	if string(n.Payload) != `{"aps":{"alert":{"title":"hi","body":"there"}}}` {
		t.Errorf("payload = %s", n.Payload)
	}
	n.Payload = nil
	if !n.IssuedAt.Equal(want.IssuedAt) || !n.ReceivedAt.Equal(want.ReceivedAt) {
		t.Errorf("times = %v, %v; want %v", n.IssuedAt, n.ReceivedAt, want.ReceivedAt)
	}
	if n.ID != want.ID || n.Token != want.Token || n.Topic != want.Topic || n.PushType != want.PushType ||
		n.Priority != want.Priority || n.Expiration != want.Expiration || n.CollapseID != want.CollapseID ||
		n.Env != want.Env || n.KeyID != want.KeyID || n.TeamID != want.TeamID {
		t.Errorf("notification = %+v,\nwant %+v", n, want)
	}
}

func TestStatsCountAnswers(t *testing.T) {
	f := start(t, Config{})
	f.do(t, req{})
	f.do(t, req{})
	f.do(t, req{auth: "-"})
	f.do(t, req{token: "zz"})
	s := f.a.Stats()
	if s.Received != 4 || s.Accepted != 2 || s.Rejected[MissingProviderToken] != 1 || s.Rejected[BadDeviceToken] != 1 {
		t.Errorf("stats = %+v, want 4 received, 2 accepted, one MissingProviderToken, one BadDeviceToken", s)
	}
	if s.Connections != 1 {
		t.Errorf("connections = %d, want 1 (the client reuses its connection)", s.Connections)
	}
}

func TestHTTP1(t *testing.T) {
	f := start(t, Config{})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.a.CertPool()}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	got := doWith(t, c, f, req{})
	if got.String() != "505 HTTP2Required" {
		t.Errorf("push over HTTP/1.1: answer = %s, want 505 HTTP2Required", got)
	}
	res, err := c.Get(f.a.URL() + "/_emulator/stats")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.ProtoMajor != 1 {
		t.Errorf("control API over HTTP/1.1: %s %s, want 200 over HTTP/1.1", res.Proto, res.Status)
	}
}
