package webhook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

// backend answers before_send with answer after delay, checking each
// request's signature and body.
func backend(t *testing.T, answer string, status int, delay time.Duration) *httptest.Server {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := Verify(SigningKey(secret), r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, time.Now(), time.Minute); err != nil {
			t.Errorf("before_send request: %v", err)
		}
		var req BeforeSendRequest
		if err := json.Unmarshal(body, &req); err != nil || req.Type != "before_send" || req.Message.From != "alice" || req.Message.Text != "hello" {
			t.Errorf("before_send request %s: %v", body, err)
		}
		select {
		case <-time.After(delay):
		case <-done:
		}
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return srv
}

func TestBeforeSend(t *testing.T) {
	tests := []struct {
		name     string
		answer   string
		status   int
		delay    time.Duration
		reject   bool // fallback
		wantCode herald.Code
		wantText string
		wantExt  string
		wantMsg  string // in the error
		stat     func(Stats) int64
	}{
		{name: "allow", answer: `{"action":"allow"}`, status: 200, wantText: "hello", stat: func(s Stats) int64 { return s.BeforeSendAllowed }},
		{name: "reject with reason", answer: `{"action":"reject","reason":"no greetings here"}`, status: 200,
			wantCode: herald.CodeForbidden, wantMsg: "no greetings here", stat: func(s Stats) int64 { return s.BeforeSendRejected }},
		{name: "rewrite", answer: `{"action":"rewrite","text":"h***o","extended_data":"{\"checked\":true}"}`, status: 200,
			wantText: "h***o", wantExt: `{"checked":true}`, stat: func(s Stats) int64 { return s.BeforeSendRewritten }},
		{name: "rewrite keeps absent fields", answer: `{"action":"rewrite","extended_data":"x"}`, status: 200,
			wantText: "hello", wantExt: "x", stat: func(s Stats) int64 { return s.BeforeSendRewritten }},
		{name: "timeout, fallback allow", answer: `{"action":"reject"}`, status: 200, delay: time.Second,
			wantText: "hello", stat: func(s Stats) int64 { return s.BeforeSendFallback }},
		{name: "timeout, fallback reject", answer: `{"action":"allow"}`, status: 200, delay: time.Second, reject: true,
			wantCode: herald.CodeUnavailable, stat: func(s Stats) int64 { return s.BeforeSendFallback }},
		{name: "server error, fallback reject", answer: `{"action":"allow"}`, status: 500, reject: true,
			wantCode: herald.CodeUnavailable, stat: func(s Stats) int64 { return s.BeforeSendFallback }},
		{name: "not JSON, fallback allow", answer: `ok`, status: 200, wantText: "hello", stat: func(s Stats) int64 { return s.BeforeSendFallback }},
		{name: "unknown action, fallback reject", answer: `{"action":"drop"}`, status: 200, reject: true,
			wantCode: herald.CodeUnavailable, stat: func(s Stats) int64 { return s.BeforeSendFallback }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := backend(t, tt.answer, tt.status, tt.delay)
			s := newService(t, Config{BeforeSendURL: srv.URL, BeforeSendTimeout: 100 * time.Millisecond, BeforeSendReject: tt.reject})
			m := &herald.Message{ConvType: herald.ConversationPeer, From: "alice", To: "bob", LocalID: "l1", Type: herald.MessageText, Text: "hello"}
			start := time.Now()
			err := s.BeforeSend(context.Background(), m)
			if d := time.Since(start); d > time.Second/2 {
				t.Errorf("BeforeSend took %v with a 100ms timeout", d)
			}
			if got := herald.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("BeforeSend = %v, want code %q", err, tt.wantCode)
			}
			if err != nil && !strings.Contains(herald.ErrorMessage(err), tt.wantMsg) {
				t.Errorf("error %q does not carry %q", herald.ErrorMessage(err), tt.wantMsg)
			}
			if err == nil && (m.Text != tt.wantText || m.Extended != tt.wantExt) {
				t.Errorf("message after = text %q extended %q, want %q %q", m.Text, m.Extended, tt.wantText, tt.wantExt)
			}
			if got := tt.stat(s.Stats()); got != 1 {
				t.Errorf("counter = %d, want 1 (stats %+v)", got, s.Stats())
			}
		})
	}
}

func TestBeforeSendOffAllows(t *testing.T) {
	s := newService(t, Config{})
	m := &herald.Message{From: "alice", Text: "hello"}
	if err := s.BeforeSend(context.Background(), m); err != nil || m.Text != "hello" {
		t.Errorf("BeforeSend without a URL = %v, text %q", err, m.Text)
	}
}

// capture answers before_send with answer and keeps the last request body.
func capture(t *testing.T, answer string) (*httptest.Server, func() []byte) {
	t.Helper()
	var mu sync.Mutex
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = b
		mu.Unlock()
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []byte { mu.Lock(); defer mu.Unlock(); return got }
}

// The push text is shown on the recipient's lock screen: the moderation
// hook is asked about it too.
func TestBeforeSendSeesPush(t *testing.T) {
	srv, body := capture(t, `{"action":"allow"}`)
	s := newService(t, Config{BeforeSendURL: srv.URL})
	m := &herald.Message{From: "alice", To: "bob", Type: herald.MessageText, Text: "hi", LocalID: "l1", CreatedAt: time.Now(),
		Push: &herald.PushConfig{Title: "PUSHTITLE", Content: "PUSH-CONTENT", Payload: `{"k":1}`, ResourcesID: "calls", ThreadID: "t"}}
	if err := s.BeforeSend(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var req BeforeSendRequest
	if err := json.Unmarshal(body(), &req); err != nil {
		t.Fatal(err)
	}
	want := BeforeSendPush{Present: true, Title: "PUSHTITLE", Content: "PUSH-CONTENT", Payload: `{"k":1}`, ResourcesID: "calls"}
	if req.Push != want {
		t.Errorf("before_send push = %+v, want %+v (body %s)", req.Push, want, body())
	}

	m.Push = nil
	if err := s.BeforeSend(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body(), &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["push"]) != `{"present":false,"title":"","content":"","payload":"","resources_id":""}` {
		t.Errorf("before_send push without a push configuration = %s", raw["push"])
	}
}

func TestBeforeSendRewritesPush(t *testing.T) {
	srv, _ := capture(t, `{"action":"rewrite","push_title":"T*","push_content":"c***"}`)
	s := newService(t, Config{BeforeSendURL: srv.URL})
	orig := &herald.PushConfig{Title: "Title", Content: "crap", Payload: "p", ResourcesID: "r"}
	m := &herald.Message{From: "alice", To: "bob", Type: herald.MessageText, Text: "hi", LocalID: "l1", Push: orig}
	if err := s.BeforeSend(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if m.Push == nil || m.Push.Title != "T*" || m.Push.Content != "c***" || m.Push.Payload != "p" || m.Push.ResourcesID != "r" {
		t.Errorf("push after the rewrite = %+v", m.Push)
	}
	if orig.Title != "Title" || orig.Content != "crap" {
		t.Errorf("the sender's push configuration was modified in place: %+v", orig)
	}
	if m.Text != "hi" {
		t.Errorf("text %q changed by a push-only rewrite", m.Text)
	}

	// Without a push configuration there is nothing to rewrite: none is made.
	m = &herald.Message{From: "alice", To: "bob", Type: herald.MessageText, Text: "hi", LocalID: "l2"}
	if err := s.BeforeSend(context.Background(), m); err != nil || m.Push != nil {
		t.Errorf("push rewrite of a message without push = %v, push %+v", err, m.Push)
	}

	// Only the fields present are replaced.
	srv2, _ := capture(t, `{"action":"rewrite","push_content":"clean"}`)
	s2 := newService(t, Config{BeforeSendURL: srv2.URL})
	m = &herald.Message{From: "alice", To: "bob", Type: herald.MessageText, Text: "hi", LocalID: "l3", Push: &herald.PushConfig{Title: "keep", Content: "dirty"}}
	if err := s2.BeforeSend(context.Background(), m); err != nil || m.Push.Title != "keep" || m.Push.Content != "clean" {
		t.Errorf("push_content only = %v, push %+v", err, m.Push)
	}
}
