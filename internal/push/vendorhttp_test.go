package push

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"120", 2 * time.Minute},
		{"0", 0},
		{"-5", 0},
		{"Sun, 01 Mar 2026 12:01:30 GMT", 90 * time.Second},
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0},
		{"Mon, 01 Mar 2027 12:00:00 GMT", MaxRetryAfter},
		{"soon", 0},
		{"99999999999", MaxRetryAfter},
		{"99999999999999999999", 0}, // overflows int64: not a number
		{"", 0},
	} {
		if got := ParseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// closeCounter records whether a body was closed.
type closeCounter struct {
	io.Reader
	closed bool
}

func (c *closeCounter) Close() error { c.closed = true; return nil }

func TestReadBody(t *testing.T) {
	for _, tt := range []struct {
		body  string
		limit int
		want  string
	}{
		{"", 1024, ""},
		{"short", 1024, "short"},
		{strings.Repeat("x", 3000), 1024, strings.Repeat("x", 1024)},
		{strings.Repeat("x", 9000), 1 << 20, strings.Repeat("x", MaxAnswerBody)},
	} {
		r := &closeCounter{Reader: strings.NewReader(tt.body)}
		got := ReadBody(r, tt.limit)
		if string(got) != tt.want || (tt.want == "" && got != nil) {
			t.Errorf("ReadBody(%d bytes, %d) = %d bytes, want %d", len(tt.body), tt.limit, len(got), len(tt.want))
		}
		if !r.closed {
			t.Error("body not closed")
		}
	}
	// What ReadBody returns is the caller's: the pooled buffer is reused.
	a := ReadBody(io.NopCloser(strings.NewReader("first")), 64)
	ReadBody(io.NopCloser(strings.NewReader("SECOND")), 64)
	if string(a) != "first" {
		t.Errorf("a returned body changed to %q", a)
	}
}

func TestTTL(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		exp   time.Time
		limit time.Duration
		want  int64
	}{
		{time.Time{}, time.Hour, 0},
		{now.Add(-time.Minute), time.Hour, 0},
		{now.Add(90*time.Second + 500*time.Millisecond), time.Hour, 90},
		{now.Add(3 * time.Hour), time.Hour, 3600},
		{now.Add(3 * time.Hour), 0, 3 * 3600},
	} {
		if got := TTL(tt.exp, now, tt.limit); got != tt.want {
			t.Errorf("TTL(%v, limit %v) = %d, want %d", tt.exp.Sub(now), tt.limit, got, tt.want)
		}
	}
}

func TestEffectivePriority(t *testing.T) {
	for _, tt := range []struct {
		n    Notification
		want int
	}{
		{Notification{Type: TypeAlert}, 10},
		{Notification{Type: TypeBackground}, 5},
		{Notification{Type: TypeVoIP}, 10},
		{Notification{Type: TypeAlert, Priority: 5}, 5},
		{Notification{Type: TypeBackground, Priority: 1}, 1},
	} {
		if got := tt.n.EffectivePriority(); got != tt.want {
			t.Errorf("%s priority %d: %d, want %d", tt.n.Type, tt.n.Priority, got, tt.want)
		}
	}
}

func TestAppsLookup(t *testing.T) {
	m := Apps[string]{"com.example.a": "a", Wildcard: "any"}
	for app, want := range map[string]string{"com.example.a": "a", "com.example.b": "any", "not a package!": "", "": ""} {
		if got, _ := m.Lookup(app); got != want {
			t.Errorf("Lookup(%q) = %q, want %q", app, got, want)
		}
	}
	if _, ok := (Apps[string]{"com.example.a": "a"}).Lookup("com.example.b"); ok {
		t.Error("an unlisted app is served without a wildcard")
	}
}

func TestAlarm(t *testing.T) {
	var a Alarm
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		at   time.Duration
		want bool
	}{{0, true}, {59 * time.Second, false}, {time.Minute, true}, {time.Minute + time.Second, false}} {
		if got := a.Allow(now.Add(tt.at)); got != tt.want {
			t.Errorf("Allow at +%v = %v, want %v", tt.at, got, tt.want)
		}
	}
}

// TestTokenCache: callers share one fetch (the fetch is held until every
// caller waits), a token is replaced ahead of its expiry, Renew drops only
// the refused token, and cancelling the cache's context ends a fetch.
func TestTokenCache(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var fetches atomic.Int32
	release := make(chan struct{})
	fetch := func(ctx context.Context) (string, time.Duration, error) {
		n := fetches.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return "", 0, ctx.Err()
		}
		return "tok" + string(rune('0'+n)), time.Hour, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := NewTokenCache(ctx, time.Minute, clock, 5*time.Minute, fetch)
	const callers = 8
	waiting := make(chan struct{}, callers)
	c.OnWait = func() { waiting <- struct{}{} }
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			if tok, err := c.Get(context.Background()); tok != "tok1" || err != nil {
				t.Errorf("Get = %q %v, want tok1", tok, err)
			}
		})
	}
	for range callers {
		<-waiting
	}
	close(release)
	wg.Wait()
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for %d callers, want 1", n, callers)
	}
	mu.Lock()
	now = now.Add(55*time.Minute - time.Second)
	mu.Unlock()
	if tok, _ := c.Get(context.Background()); tok != "tok1" {
		t.Fatalf("before the refresh point: %q, want the cached tok1", tok)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if tok, _ := c.Get(context.Background()); tok != "tok2" {
		t.Fatalf("at the refresh point: %q, want a new token", tok)
	}
	if tok, _ := c.Renew(context.Background(), "tok1"); tok != "tok2" {
		t.Fatalf("Renew of a token already replaced: %q, want the cached tok2", tok)
	}
	if tok, _ := c.Renew(context.Background(), "tok2"); tok != "tok3" || fetches.Load() != 3 {
		t.Fatalf("Renew of the cached token: %q after %d fetches, want tok3 after 3", tok, fetches.Load())
	}
	// Cancelling the cache's context ends a fetch in flight.
	c.Invalidate("tok3")
	hung := NewTokenCache(ctx, time.Hour, clock, 5*time.Minute, func(ctx context.Context) (string, time.Duration, error) {
		<-ctx.Done()
		return "", 0, ctx.Err()
	})
	done := make(chan error, 1)
	go func() { _, err := hung.Get(context.Background()); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Get after the context ended = %v, want context.Canceled", err)
	}
}
