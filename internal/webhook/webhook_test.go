package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

var secret = []byte("webhook-test-secret-0123456789")

// fast is a retry schedule for tests: the same shape, milliseconds apart.
var fast = []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 8 * time.Millisecond, 16 * time.Millisecond}

// receiver is a callback backend: it verifies every request, records the
// events it accepted by ID, and answers with what fail says.
type receiver struct {
	t        *testing.T
	mu       sync.Mutex
	attempts map[string]int     // by event ID
	accepted map[string]Payload // by event ID
	dups     int                // events accepted more than once
	badSig   int
	fail     func(id string, attempt int) int // status to answer; 0 means 200, -1 answers too late
	block    chan struct{}                    // when set, every request waits for it
	changed  chan struct{}
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	r := &receiver{t: t, attempts: map[string]int{}, accepted: map[string]Payload{}, changed: make(chan struct{}, 1)}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if r.block != nil {
		<-r.block
	}
	if err := Verify(SigningKey(secret), req.Header.Get(HeaderTimestamp), req.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		r.mu.Lock()
		r.badSig++
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if p.ID != req.Header.Get(HeaderEventID) {
		r.t.Errorf("body id %q, header %s %q", p.ID, HeaderEventID, req.Header.Get(HeaderEventID))
	}
	r.mu.Lock()
	r.attempts[p.ID]++
	n := r.attempts[p.ID]
	status := 0
	if r.fail != nil {
		status = r.fail(p.ID, n)
	}
	if status == -1 {
		r.mu.Unlock()
		time.Sleep(300 * time.Millisecond) // past the sender's timeout
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if status == 0 {
		if _, seen := r.accepted[p.ID]; seen {
			r.dups++
		}
		r.accepted[p.ID] = p
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	if status != 0 {
		w.WriteHeader(status)
	}
}

// waitAccepted waits until n distinct events were accepted.
func (r *receiver) waitAccepted(n int) map[string]Payload {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.accepted) >= n {
			out := make(map[string]Payload, len(r.accepted))
			for k, v := range r.accepted {
				out[k] = v
			}
			r.mu.Unlock()
			return out
		}
		have := len(r.accepted)
		r.mu.Unlock()
		select {
		case <-r.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			r.t.Fatalf("receiver accepted %d events, want %d", have, n)
		}
	}
}

func newService(t *testing.T, cfg Config) *Service {
	t.Helper()
	cfg.Secret = secret
	if cfg.Backoff == nil {
		cfg.Backoff = fast
	}
	s := New(cfg)
	s.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

func loginEvent(user string) herald.Event {
	return herald.Event{Type: herald.EventLogin, Time: time.UnixMilli(1700000000123), User: user, Device: "phone"}
}

func TestEventSignedAndShaped(t *testing.T) {
	r, srv := newReceiver(t)
	s := newService(t, Config{URL: srv.URL})
	s.Emit(loginEvent("alice"))
	s.Emit(herald.Event{Type: herald.EventMessageSent, User: "alice", Message: &herald.Message{
		ID: 7, ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "bob"), Seq: 3,
		From: "alice", To: "bob", LocalID: "l1", Type: herald.MessageText, Text: "hi", CreatedAt: time.UnixMilli(1700000000500),
	}})
	got := r.waitAccepted(2)
	var login, msg Payload
	for _, p := range got {
		switch p.Type {
		case "login":
			login = p
		case "message_sent":
			msg = p
		}
	}
	if login.User != "alice" || login.Device != "phone" || login.Time != 1700000000123 || login.ID == "" {
		t.Errorf("login payload = %+v", login)
	}
	if msg.Msg == nil || msg.Msg.ID != 7 || msg.Msg.Seq != 3 || msg.Msg.Text != "hi" || msg.Msg.ConvID != "bob" || msg.Time == 0 {
		t.Errorf("message_sent payload = %+v (message %+v)", msg, msg.Msg)
	}
	if login.ID == msg.ID {
		t.Errorf("two events share ID %q", login.ID)
	}
	if r.badSig != 0 {
		t.Errorf("%d requests failed verification", r.badSig)
	}
}

func TestVerifyRefuses(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	now := time.Unix(1700000000, 0)
	ts := "1700000000"
	sig := Sign(secret, ts, body)
	tests := []struct {
		name          string
		ts, sig, body string
		secret        []byte
	}{
		{"other body", ts, sig, `{"id":"y"}`, secret},
		{"other secret", ts, sig, string(body), []byte("another-secret-0123456789")},
		{"other timestamp", "1700000001", sig, string(body), secret},
		{"stale", "1699999000", Sign(secret, "1699999000", body), string(body), secret},
		{"bad timestamp", "soon", sig, string(body), secret},
	}
	if err := Verify(secret, ts, sig, body, now, 5*time.Minute); err != nil {
		t.Fatalf("Verify of a good signature = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(tt.secret, tt.ts, tt.sig, []byte(tt.body), now, 5*time.Minute); err == nil {
				t.Error("Verify = nil, want an error")
			}
		})
	}
}

func TestRetriedAfterFailuresDeliveredOnce(t *testing.T) {
	r, srv := newReceiver(t)
	// Each event: a 500, then an answer slower than the timeout, then 200.
	r.fail = func(id string, n int) int {
		switch n {
		case 1:
			return http.StatusInternalServerError
		case 2:
			return -1
		}
		return 0
	}
	s := newService(t, Config{URL: srv.URL, Timeout: 100 * time.Millisecond})
	const n = 5
	for i := range n {
		s.Emit(loginEvent("u" + string(rune('a'+i))))
	}
	got := r.waitAccepted(n)
	waitStats(t, s, func(st Stats) bool { return st.Sent == n && st.Pending == 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dups != 0 {
		t.Errorf("%d events accepted twice", r.dups)
	}
	for id := range got {
		if a := r.attempts[id]; a != 3 {
			t.Errorf("event %s: %d attempts seen, want 3", id, a)
		}
	}
	if st := s.Stats(); st.Retried != 2*n || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats = %+v, want %d retries and no failure or drop", st, 2*n)
	}
}

func TestGivesUpAfterLastRetry(t *testing.T) {
	r, srv := newReceiver(t)
	r.fail = func(string, int) int { return http.StatusServiceUnavailable }
	s := newService(t, Config{URL: srv.URL})
	s.Emit(loginEvent("alice"))
	waitStats(t, s, func(st Stats) bool { return st.Failed == 1 })
	st := s.Stats()
	if st.Retried != int64(len(fast)) || st.Sent != 0 || st.Pending != 0 {
		t.Errorf("stats = %+v, want %d retries, nothing sent or pending", st, len(fast))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, a := range r.attempts {
		if a != 1+len(fast) {
			t.Errorf("event %s: %d attempts, want %d", id, a, 1+len(fast))
		}
	}
}

func TestConnectionRefusedRetried(t *testing.T) {
	r, srv := newReceiver(t)
	url := srv.URL
	srv.Close() // nothing listens: every attempt fails to connect
	s := newService(t, Config{URL: url, Backoff: []time.Duration{time.Millisecond}})
	s.Emit(loginEvent("alice"))
	waitStats(t, s, func(st Stats) bool { return st.Failed == 1 })
	if st := s.Stats(); st.Retried != 1 {
		t.Errorf("stats = %+v, want 1 retry", st)
	}
	_ = r
}

func TestQueueFullDropsAndCounts(t *testing.T) {
	r, srv := newReceiver(t)
	r.block = make(chan struct{})
	s := newService(t, Config{URL: srv.URL, Queue: 2, Senders: 1})
	s.Emit(loginEvent("a"))
	// The sender has taken the first event once it is in flight.
	waitFor(t, func() bool { return len(s.ch) == 0 })
	start := time.Now()
	for _, u := range []string{"b", "c", "d", "e"} {
		s.Emit(loginEvent(u)) // b waits in the queue; c, d, e find it full
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Emit on a full queue took %v: it must not block", d)
	}
	if st := s.Stats(); st.Dropped != 3 || st.Pending != 2 {
		t.Errorf("stats = %+v, want 3 dropped and 2 pending", st)
	}
	close(r.block)
	r.waitAccepted(2)
	waitStats(t, s, func(st Stats) bool { return st.Sent == 2 && st.Pending == 0 })
	s.Emit(loginEvent("f")) // room again
	r.waitAccepted(3)
}

func TestCloseDrains(t *testing.T) {
	r, srv := newReceiver(t)
	r.fail = func(_ string, n int) int {
		if n == 1 {
			return http.StatusInternalServerError // each event waits for a retry when Close starts
		}
		return 0
	}
	s := New(Config{URL: srv.URL, Secret: secret, Backoff: []time.Duration{50 * time.Millisecond}})
	const n = 20
	for i := range n {
		s.Emit(loginEvent("u" + string(rune('a'+i))))
	}
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if st := s.Stats(); st.Sent != n || st.Pending != 0 || st.Dropped != 0 {
		t.Errorf("stats after Close = %+v, want %d sent", st, n)
	}
	if got := len(r.waitAccepted(n)); got != n {
		t.Errorf("receiver has %d events, want %d", got, n)
	}
	s.Emit(loginEvent("late"))
	if st := s.Stats(); st.Dropped != 1 {
		t.Errorf("Emit after Close: dropped %d, want 1", st.Dropped)
	}
}

func TestCloseGivesUpAtDeadline(t *testing.T) {
	r, srv := newReceiver(t)
	r.fail = func(string, int) int { return http.StatusInternalServerError }
	s := New(Config{URL: srv.URL, Secret: secret, Backoff: []time.Duration{time.Hour}})
	s.Start()
	s.Emit(loginEvent("a"))
	s.Emit(loginEvent("b"))
	waitStats(t, s, func(st Stats) bool { return len(s.timers) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	if st := s.Stats(); st.Dropped != 2 || st.Pending != 0 {
		t.Errorf("stats = %+v, want the 2 events waiting to retry dropped", st)
	}
}

func TestNoURLEmitsNothing(t *testing.T) {
	s := newService(t, Config{})
	s.Emit(loginEvent("a"))
	if st := s.Stats(); st != (Stats{}) {
		t.Errorf("stats = %+v, want none", st)
	}
}

func waitStats(t *testing.T, s *Service, ok func(Stats) bool) {
	t.Helper()
	waitFor(t, func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return ok(s.Stats())
	})
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A receiver verifies with the derived key: it never holds the server
// secret, which mints tokens and signs server API requests.
func TestSignedWithDerivedKey(t *testing.T) {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("herald webhook v1"))
	key := m.Sum(nil)
	if !bytes.Equal(SigningKey(secret), key) {
		t.Fatalf("SigningKey = %x, want HMAC-SHA256(secret, \"herald webhook v1\") = %x", SigningKey(secret), key)
	}
	var mu sync.Mutex
	var ts, sig string
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ = io.ReadAll(r.Body)
		ts, sig = r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature)
		io.WriteString(w, `{"action":"allow"}`)
	}))
	defer srv.Close()
	s := newService(t, Config{BeforeSendURL: srv.URL})
	if err := s.BeforeSend(context.Background(), &herald.Message{From: "alice", To: "bob", Type: herald.MessageText, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if err := Verify(key, ts, sig, body, time.Now(), time.Minute); err != nil {
		t.Errorf("Verify with the derived key: %v", err)
	}
	if err := Verify(secret, ts, sig, body, time.Now(), time.Minute); err == nil {
		t.Error("the request verifies with the server secret itself: it is signed with the master secret")
	}
}

// A callback URL may carry a credential in its path or query: neither
// reaches the log, even in transport errors (*url.Error names the URL).
func TestCallbackURLCredentialNotLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	var logBuf syncBuffer
	s := New(Config{
		URL:           "http://" + addr + "/hook/PATHSECRET?key=TOPSECRET1",
		BeforeSendURL: "http://" + addr + "/bs?key=TOPSECRET2",
		Secret:        secret,
		Backoff:       []time.Duration{time.Millisecond},
		Logger:        slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	s.Start()
	_ = s.BeforeSend(context.Background(), &herald.Message{From: "alice", To: "bob", Type: herald.MessageText, Text: "hi"})
	s.Emit(loginEvent("alice"))
	waitStats(t, s, func(st Stats) bool { return st.Failed == 1 })
	s.Close(context.Background())
	out := logBuf.String()
	for _, leak := range []string{"TOPSECRET", "PATHSECRET", "/bs", "/hook"} {
		if strings.Contains(out, leak) {
			t.Errorf("callback URL path or query (%s) in the log:\n%s", leak, out)
		}
	}
	if !strings.Contains(out, addr) {
		t.Errorf("the log does not name the host %s:\n%s", addr, out)
	}
}

func TestRedact(t *testing.T) {
	const target = "https://hooks.example.com:8443/h/SECRET?key=SECRET"
	err := redact(&url.Error{Op: "Post", URL: target, Err: context.DeadlineExceeded}, target)
	if got := err.Error(); got != "Post hooks.example.com:8443: context deadline exceeded" {
		t.Errorf("redact(url.Error) = %q", got)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("redact lost the cause: %v", err)
	}
	err = redact(errors.New(`parse "`+target+`": bad`), target)
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("redact(other error naming the URL) = %q", err)
	}
	if redact(nil, target) != nil {
		t.Error("redact(nil) != nil")
	}
}

// A full queue under load would log a line per event: the first drop is
// logged, then at most one line per 10 s with the count.
func TestQueueFullLogRateLimited(t *testing.T) {
	r, srv := newReceiver(t)
	r.block = make(chan struct{})
	defer close(r.block)
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var logBuf syncBuffer
	s := newService(t, Config{URL: srv.URL, Queue: 1, Senders: 1, Now: clock,
		Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	s.Emit(loginEvent("a")) // in flight, blocked; the queue is full
	waitFor(t, func() bool { return len(s.ch) == 0 })
	lines := func() int { return strings.Count(logBuf.String(), "queue full") }
	for range 100 {
		s.Emit(loginEvent("b"))
	}
	if n := lines(); n != 1 {
		t.Fatalf("%d queue-full lines for 100 drops within 10 s, want 1:\n%s", n, logBuf.String())
	}
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	s.Emit(loginEvent("c"))
	if n := lines(); n != 2 || !strings.Contains(logBuf.String(), "dropped=100") {
		t.Errorf("after 10 s: %d queue-full lines, want 2, the second counting 100 drops:\n%s", n, logBuf.String())
	}
	if st := s.Stats(); st.Dropped != 101 {
		t.Errorf("dropped = %d, want 101: every drop is counted", st.Dropped)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestCloseReportsWhatItDropped: the shutdown log line and Close's error
// give the number of events given up, not the pending count after they
// were given up (which is always 0).
func TestCloseReportsWhatItDropped(t *testing.T) {
	r, srv := newReceiver(t)
	r.block = make(chan struct{})
	defer close(r.block)
	var logBuf syncBuffer
	s := New(Config{URL: srv.URL, Secret: secret, Senders: 2, Queue: 100, Backoff: fast,
		Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	s.Start()
	const n = 50 // 2 in flight, blocked; 48 queued
	for i := range n {
		s.Emit(loginEvent("u" + strconv.Itoa(i)))
	}
	waitFor(t, func() bool { return len(s.ch) == n-2 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "50 events undelivered") {
		t.Errorf("Close = %v, want it to say 50 events undelivered", err)
	}
	if !strings.Contains(logBuf.String(), "events undelivered at shutdown") || !strings.Contains(logBuf.String(), "dropped=50") {
		t.Errorf("shutdown log does not count the 50 events dropped:\n%s", logBuf.String())
	}
	if st := s.Stats(); st.Dropped != n || st.Pending != 0 {
		t.Errorf("stats = %+v, want %d dropped, 0 pending", st, n)
	}
}
