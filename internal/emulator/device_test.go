package emulator

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestScriptedSteps(t *testing.T) {
	f := start(t, Config{})
	gone := time.UnixMilli(1_700_000_000_123)
	tests := []struct {
		name  string
		steps []Step
		want  []string // answers to consecutive pushes
	}{
		{"503 three times then 200", []Step{{Status: 503, Times: 3}}, []string{"503 ServiceUnavailable", "503 ServiceUnavailable", "503 ServiceUnavailable", "200", "200"}},
		{"410 with timestamp", []Step{{Status: 410, Timestamp: gone}}, []string{"410 Unregistered", "200"}},
		{"410 ExpiredToken", []Step{{Status: 410, Reason: ExpiredToken, Forever: true}}, []string{"410 ExpiredToken", "410 ExpiredToken", "410 ExpiredToken"}},
		{"sequence", []Step{{Status: 500}, {}, {Status: 429}}, []string{"500 InternalServerError", "200", "429 TooManyRequests", "200"}},
		{"custom reason", []Step{{Status: 503, Reason: Shutdown}}, []string{"503 Shutdown", "200"}},
		{"explicit 200", []Step{{Status: 200}, {Status: 400}}, []string{"200", "400 BadDeviceToken"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := fmt.Sprintf("%064x", i+1)
			f.a.Script(token, tt.steps...)
			for j, want := range tt.want {
				if got := f.do(t, req{token: token}); got.String() != want {
					t.Errorf("push %d: answer = %s, want %s", j, got, want)
				}
			}
		})
	}

	t.Run("410 timestamp", func(t *testing.T) {
		f.a.Script(testToken, Step{Status: 410, Timestamp: gone}, Step{Status: 410})
		if got := f.do(t, req{}); got.timestamp != gone.UnixMilli() {
			t.Errorf("timestamp = %d, want %d", got.timestamp, gone.UnixMilli())
		}
		if got := f.do(t, req{}); got.timestamp != f.clock.Now().UnixMilli() {
			t.Errorf("timestamp with none scripted = %d, want now %d", got.timestamp, f.clock.Now().UnixMilli())
		}
	})
	t.Run("Retry-After on 429", func(t *testing.T) {
		f.a.Script(testToken, Step{Status: 429, RetryAfter: 1500 * time.Millisecond})
		got := f.do(t, req{})
		if got.String() != "429 TooManyRequests" || got.retryAfter != "2" {
			t.Errorf("answer = %s, Retry-After %q; want 429 TooManyRequests, Retry-After 2", got, got.retryAfter)
		}
	})
	t.Run("steps skip malformed pushes", func(t *testing.T) {
		f.a.Script(testToken, Step{Status: 503})
		if got := f.do(t, req{auth: "-"}); got.String() != "403 MissingProviderToken" {
			t.Errorf("unauthenticated push: %s, want 403 MissingProviderToken", got)
		}
		if got := f.do(t, req{}); got.String() != "503 ServiceUnavailable" {
			t.Errorf("next push: %s, want the scripted 503", got)
		}
	})
	t.Run("delay then normal", func(t *testing.T) {
		f.a.Script(testToken, Step{Delay: 50 * time.Millisecond})
		t0 := time.Now()
		if got := f.do(t, req{}); got.status != 200 {
			t.Errorf("answer = %s, want 200", got)
		}
		if d := time.Since(t0); d < 50*time.Millisecond {
			t.Errorf("answered in %s, want at least the 50ms delay", d)
		}
	})
	t.Run("abort", func(t *testing.T) {
		f.a.Script(testToken, Step{Abort: true})
		if got := f.do(t, req{}); got.err == nil {
			t.Errorf("answer = %s, want a transport error", got)
		}
		if got := f.do(t, req{}); got.status != 200 {
			t.Errorf("after the abort: %s, want 200", got)
		}
	})
	t.Run("Script with no steps clears", func(t *testing.T) {
		f.a.Script(testToken, Step{Status: 503, Forever: true})
		f.a.Script(testToken)
		if got := f.do(t, req{}); got.status != 200 {
			t.Errorf("answer = %s, want 200", got)
		}
	})
}

func TestRegisteredTokens(t *testing.T) {
	f := start(t, Config{})
	devToken := strings.Repeat("d", 64)
	prodToken := strings.Repeat("e", 64)
	voipToken := strings.Repeat("f", 64)
	f.a.Register(devToken, Development, testTopic)
	f.a.Register(strings.ToUpper(prodToken), Production, "")
	f.a.Register(voipToken, "", testTopic+".voip")
	voip := map[string]string{"apns-push-type": "voip", "apns-topic": testTopic + ".voip"}
	tests := []struct {
		name string
		req  req
		want string
	}{
		{"development token in sandbox", req{token: devToken, sandbox: true}, "200"},
		{"development token in production", req{token: devToken}, "400 BadDeviceToken"},
		{"development token, other topic", req{token: devToken, sandbox: true, headers: map[string]string{"apns-topic": "com.example.other"}}, "400 DeviceTokenNotForTopic"},
		{"production token in production", req{token: prodToken}, "200"},
		{"production token in sandbox", req{token: prodToken, sandbox: true}, "400 BadDeviceToken"},
		{"production token, any topic", req{token: prodToken, headers: map[string]string{"apns-topic": "com.example.other"}}, "200"},
		{"voip token, voip push", req{token: voipToken, headers: voip}, "200"},
		{"voip token, alert push", req{token: voipToken}, "400 DeviceTokenNotForTopic"},
		{"undeclared token in production", req{}, "200"},
		{"undeclared token in sandbox", req{sandbox: true}, "200"},
		{"undeclared token, any topic", req{headers: map[string]string{"apns-topic": "com.example.other"}}, "200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := f.do(t, tt.req); got.String() != tt.want {
				t.Errorf("answer = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestInboxBounded(t *testing.T) {
	f := start(t, Config{InboxLimit: 3})
	for i := range 5 {
		body := fmt.Sprintf(`{"aps":{"badge":%d}}`, i)
		if got := f.do(t, req{body: &body}); got.status != 200 {
			t.Fatalf("push %d: %s", i, got)
		}
	}
	in := f.a.Inbox(testToken)
	var got []string
	for _, n := range in {
		got = append(got, string(n.Payload))
	}
	want := []string{`{"aps":{"badge":2}}`, `{"aps":{"badge":3}}`, `{"aps":{"badge":4}}`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("inbox = %v, want the last three, oldest first: %v", got, want)
	}
	if n := len(f.a.Inbox(strings.Repeat("0", 64))); n != 0 {
		t.Errorf("inbox of an unknown token has %d notifications, want 0", n)
	}
}

func TestInboxCollapses(t *testing.T) {
	f := start(t, Config{})
	for i, cid := range []string{"a", "b", "a", ""} {
		body := fmt.Sprintf(`{"aps":{"badge":%d}}`, i)
		h := map[string]string{}
		if cid != "" {
			h["apns-collapse-id"] = cid
		}
		f.do(t, req{body: &body, headers: h})
	}
	var got []string
	for _, n := range f.a.Inbox(testToken) {
		got = append(got, fmt.Sprintf("%s:%s x%d", n.CollapseID, n.Payload, n.Deliveries))
	}
	want := []string{`b:{"aps":{"badge":1}} x1`, `a:{"aps":{"badge":2}} x2`, `:{"aps":{"badge":3}} x1`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("inbox (what the phone shows) = %v, want %v", got, want)
	}
	got = got[:0]
	for _, n := range f.a.Arrived(testToken) {
		got = append(got, fmt.Sprintf("%s:%s x%d", n.CollapseID, n.Payload, n.Deliveries))
	}
	want = []string{`a:{"aps":{"badge":0}} x0`, `b:{"aps":{"badge":1}} x0`, `a:{"aps":{"badge":2}} x0`, `:{"aps":{"badge":3}} x0`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("arrived = %v, want every push: %v", got, want)
	}
	if s := f.a.Stats(); s.Accepted != 4 {
		t.Errorf("accepted = %d, want 4: collapsing only changes the inbox", s.Accepted)
	}
}

func TestNoInboxStillCountsAndHooks(t *testing.T) {
	f := start(t, Config{InboxLimit: -1})
	var hooked atomic.Int64
	f.a.OnAccept(func(n *Notification) {
		if n.Token == testToken && len(n.Payload) > 0 {
			hooked.Add(1)
		}
	})
	for range 3 {
		f.do(t, req{})
	}
	if n := len(f.a.Inbox(testToken)); n != 0 {
		t.Errorf("inbox has %d, want none with InboxLimit -1", n)
	}
	if s := f.a.Stats(); s.Accepted != 3 || hooked.Load() != 3 {
		t.Errorf("accepted %d, hook saw %d; want 3 and 3", s.Accepted, hooked.Load())
	}
}

func TestDuplicatesCounted(t *testing.T) {
	f := start(t, Config{})
	id := "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
	for _, h := range []map[string]string{
		{"apns-id": id},
		{"apns-id": strings.ToUpper(id)}, // the same UUID
		{},                               // generated IDs are never duplicates
		{},
		{"apns-id": "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e60"},
	} {
		if got := f.do(t, req{headers: h}); got.status != 200 {
			t.Fatalf("answer = %s", got)
		}
	}
	f.a.Script(testToken, Step{Status: 503})
	f.do(t, req{headers: map[string]string{"apns-id": "11111111-1111-4111-8111-111111111111"}})
	f.do(t, req{headers: map[string]string{"apns-id": "11111111-1111-4111-8111-111111111111"}}) // retry after a 503: not a duplicate
	if s := f.a.Stats(); s.Duplicates != 1 {
		t.Errorf("duplicates = %d, want 1", s.Duplicates)
	}
}

func TestSeenIDsBounded(t *testing.T) {
	var s idSet
	s.init(4)
	id := func(i byte) [16]byte { return [16]byte{15: i} }
	for i := range byte(10) {
		if s.add(id(i)) {
			t.Fatalf("id %d counted as a duplicate", i)
		}
	}
	if len(s.cur)+len(s.prev) > 4 {
		t.Errorf("remembers %d ids, want at most 4", len(s.cur)+len(s.prev))
	}
	if !s.add(id(9)) || !s.add(id(8)) {
		t.Errorf("recent ids forgotten")
	}
}
