package emulator

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type hmsEnv struct {
	h      *HMS
	client *http.Client
	base   string
}

func startHMS(t *testing.T) *hmsEnv {
	t.Helper()
	a := New(Config{})
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	h := NewHMS(HMSConfig{})
	h.Mount(a)
	h.AddApp("10001", "secret")
	tr := &http.Transport{ForceAttemptHTTP2: true}
	tr.TLSClientConfig = &tls.Config{RootCAs: a.CertPool()}
	return &hmsEnv{h: h, client: &http.Client{Transport: tr}, base: h.URL()}
}

func (e *hmsEnv) token(t *testing.T, id, secret string) (int, string) {
	t.Helper()
	resp, err := e.client.PostForm(e.base+"/oauth2/v3/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&ans)
	return resp.StatusCode, ans.AccessToken
}

func (e *hmsEnv) send(t *testing.T, bearer, body string) (int, map[string]string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/10001/messages:send", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans map[string]string
	if err := json.Unmarshal(b, &ans); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return resp.StatusCode, ans
}

const hmsNotif = `{"message":{"android":{"urgency":"HIGH","ttl":"60s","notification":{"title":"t","body":"b","click_action":{"type":3},"tag":"0b9d7c4e-8a51-4c3e-9f1a-2d6e5b7c8a90"}},"token":[%s]}}`

func msgFor(tokens ...string) string {
	q := make([]string, len(tokens))
	for i, t := range tokens {
		q[i] = `"` + t + `"`
	}
	return strings.Replace(hmsNotif, "%s", strings.Join(q, ","), 1)
}

func TestHMSToken(t *testing.T) {
	e := startHMS(t)
	if st, tok := e.token(t, "10001", "secret"); st != 200 || tok == "" {
		t.Fatalf("good credentials: %d %q", st, tok)
	}
	if st, _ := e.token(t, "10001", "nope"); st != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d, want 401", st)
	}
	if st, _ := e.token(t, "99", "secret"); st != http.StatusBadRequest {
		t.Errorf("unknown app: %d, want 400", st)
	}
}

func TestHMSSendChecks(t *testing.T) {
	e := startHMS(t)
	_, tok := e.token(t, "10001", "secret")
	cases := []struct {
		name, bearer, body string
		status             int
		code               string
	}{
		{"ok", tok, msgFor("a"), 200, HMSSuccess},
		{"no bearer", "", msgFor("a"), 401, HMSAuthFailed},
		{"unknown bearer", "xyz", msgFor("a"), 401, HMSAuthFailed},
		{"no tokens", tok, msgFor(), 400, HMSTooManyTokens},
		{"not json", tok, `{`, 400, HMSBadMessage},
		{"no click action", tok, `{"message":{"android":{"notification":{"title":"t","body":"b"}},"token":["a"]}}`, 400, HMSBadParameter},
		{"bad urgency", tok, `{"message":{"data":"x","android":{"urgency":"NOW"},"token":["a"]}}`, 400, HMSBadParameter},
		{"bad collapse key", tok, `{"message":{"data":"x","android":{"collapse_key":101},"token":["a"]}}`, 400, HMSBadCollapseKey},
		{"badge without class", tok, `{"message":{"android":{"notification":{"title":"t","body":"b","click_action":{"type":3},"badge":{"set_num":1}}},"token":["a"]}}`, 400, HMSBadParameter},
		{"too large", tok, `{"message":{"data":"` + strings.Repeat("x", HMSMaxMessage) + `","token":["a"]}}`, 400, HMSTooLarge},
		{"empty message", tok, `{"message":{"token":["a"]}}`, 400, HMSBadMessage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, ans := e.send(t, tc.bearer, tc.body)
			if st != tc.status || ans["code"] != tc.code {
				t.Errorf("got %d %v, want %d %s", st, ans, tc.status, tc.code)
			}
		})
	}
	e.h.ExpireTokens()
	if st, ans := e.send(t, tok, msgFor("a")); st != 401 || ans["code"] != HMSTokenExpired {
		t.Errorf("expired: %d %v", st, ans)
	}
}

// TestHMSIllegalTokens: beside a good token an illegal one makes a partial
// success naming it; alone, 80300007.
func TestHMSIllegalTokens(t *testing.T) {
	e := startHMS(t)
	_, tok := e.token(t, "10001", "secret")
	e.h.Script("bad", Step{Reason: HMSInvalidTokens, Forever: true})
	st, ans := e.send(t, tok, msgFor("good", "bad"))
	if st != 200 || ans["code"] != HMSPartial {
		t.Fatalf("got %d %v, want 200 80100000", st, ans)
	}
	var p struct {
		Success, Failure int
		IllegalTokens    []string `json:"illegal_tokens"`
	}
	if err := json.Unmarshal([]byte(ans["msg"]), &p); err != nil || p.Success != 1 || p.Failure != 1 || len(p.IllegalTokens) != 1 || p.IllegalTokens[0] != "bad" {
		t.Errorf("msg %q (%v)", ans["msg"], err)
	}
	if len(e.h.Inbox("good")) != 1 || len(e.h.Inbox("bad")) != 0 {
		t.Errorf("inboxes: good %d, bad %d; want 1, 0", len(e.h.Inbox("good")), len(e.h.Inbox("bad")))
	}
	if st, ans := e.send(t, tok, msgFor("bad")); st != 400 || ans["code"] != HMSInvalidTokens {
		t.Errorf("alone: %d %v, want 400 80300007", st, ans)
	}
}

func TestHMSScriptRetryAfter(t *testing.T) {
	e := startHMS(t)
	_, tok := e.token(t, "10001", "secret")
	e.h.Script("a", Step{Status: 503, RetryAfter: 1500 * time.Millisecond})
	req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/10001/messages:send", strings.NewReader(msgFor("a")))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("got %d Retry-After %q, want 503 2", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if st, _ := e.send(t, tok, msgFor("a")); st != 200 {
		t.Errorf("after the step: %d", st)
	}
}

func TestHMSControl(t *testing.T) {
	e := startHMS(t)
	root := strings.TrimSuffix(e.base, "/hms")
	resp, err := e.client.Post(root+"/_emulator/hms/apps", "application/json", bytes.NewReader([]byte(`{"app_id":"20002","app_secret":"s2"}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st, tok := e.token(t, "20002", "s2"); st != 200 || tok == "" {
		t.Fatalf("app added by control: %d", st)
	}
	resp, err = e.client.Post(root+"/_emulator/hms/script/a", "application/json", strings.NewReader(`[{"status":500}]`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, tok := e.token(t, "10001", "secret")
	if st, ans := e.send(t, tok, msgFor("a")); st != 500 || ans["code"] != HMSInternal {
		t.Errorf("scripted: %d %v", st, ans)
	}
	e.send(t, tok, msgFor("a"))
	resp, err = e.client.Get(root + "/_emulator/hms/inbox/a")
	if err != nil {
		t.Fatal(err)
	}
	var in []Notification
	json.NewDecoder(resp.Body).Decode(&in)
	resp.Body.Close()
	if len(in) != 1 || in[0].Vendor != "hms" || in[0].Topic != "10001" {
		t.Errorf("inbox %+v", in)
	}
	if s := e.h.Stats(); s.Received != 2 || s.Accepted != 1 || s.Rejected[HMSInternal] != 1 {
		t.Errorf("stats %+v", s)
	}
}
