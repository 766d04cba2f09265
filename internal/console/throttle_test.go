package console_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/console"
	"github.com/herald-im/herald/token"
)

// warnCounter counts WARN records and keeps their attributes.
type warnCounter struct {
	mu    sync.Mutex
	warns []map[string]string
}

func (c *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *warnCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *warnCounter) WithGroup(string) slog.Handler            { return c }
func (c *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level != slog.LevelWarn {
		return nil
	}
	attrs := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	c.mu.Lock()
	c.warns = append(c.warns, attrs)
	c.mu.Unlock()
	return nil
}

func (c *warnCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.warns)
}

// TestLoginThrottle drives the console's login with an injected clock: an
// address that keeps sending wrong tokens is answered 429, for a backoff
// that doubles; a right token from that address logs in even then (before,
// it was answered 429 unchecked, so anyone sharing an operator's address
// could keep the operator out) and leaves the backoff running; another
// address is not affected; a right token after the backoff logs in and
// clears the record; and the refusals do not each write a WARN line.
func TestLoginThrottle(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	clock := func() time.Time { return now }
	logs := &warnCounter{}
	h := console.New(console.Config{Secret: testSecret, Now: clock, Logger: slog.New(logs)})
	good, err := token.MintAdmin(testSecret, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	login := func(addr, tok string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	const attacker, other = "203.0.113.7:40000", "198.51.100.9:50000"

	for i := 1; i <= 5; i++ {
		if rec := login(attacker, "h1.wrong.wrong"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong login %d: %d, want 401 (the first five are free)", i, rec.Code)
		}
	}
	// The sixth failure starts the backoff: 1 s, then 2 s, 4 s ...
	for i, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if rec := login(attacker, "h1.wrong.wrong"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", 6+i, rec.Code)
		}
		rec := login("203.0.113.7:40001", "h1.wrong.wrong")
		if rec.Code != http.StatusTooManyRequests {
			t.Fatalf("wrong login during a %s backoff: %d, want 429", backoff, rec.Code)
		}
		if got, want := rec.Header().Get("Retry-After"), strings.TrimSuffix(backoff.String(), "s"); got != want {
			t.Errorf("Retry-After = %q, want %q", got, want)
		}
		if len(rec.Result().Cookies()) != 0 {
			t.Fatal("a throttled login set a cookie")
		}
		// An operator behind the same address logs in meanwhile.
		rec = login("203.0.113.7:40002", good)
		if rec.Code != http.StatusSeeOther || len(rec.Result().Cookies()) != 1 {
			t.Fatalf("right token during a %s backoff: %d with %d cookies, want 303 and a session", backoff, rec.Code, len(rec.Result().Cookies()))
		}
		now = now.Add(backoff - time.Millisecond)
		if rec := login(attacker, "h1.wrong.wrong"); rec.Code != http.StatusTooManyRequests {
			t.Fatalf("wrong login just before the %s backoff ends: %d, want 429", backoff, rec.Code)
		}
		now = now.Add(time.Millisecond)
	}
	if rec := login(other, good); rec.Code != http.StatusSeeOther {
		t.Fatalf("login from another address: %d, want 303", rec.Code)
	}
	if rec := login(attacker, good); rec.Code != http.StatusSeeOther {
		t.Fatalf("right token after the backoff: %d, want 303", rec.Code)
	}
	// A success clears the record: five free failures again.
	for i := 1; i <= 5; i++ {
		if rec := login(attacker, "h1.wrong.wrong"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong login %d after a success: %d, want 401", i, rec.Code)
		}
	}
	st := h.Stats()
	if st.LoginsRefused != 13 || st.LoginsThrottled != 6 {
		t.Errorf("Stats = %+v, want 13 refused and 6 throttled", st)
	}

	// The log: refusals within a second share one line; the next line
	// says how many were left out. 13 refusals happened over 7 s of
	// clock (at +0, +1, +3, +7 and five more at +7): one line per second
	// at most, so 4.
	if got := logs.count(); got != 4 {
		t.Errorf("%d WARN lines for 13 refused logins, want 4 (one per second at most)", got)
	}
	logs.mu.Lock()
	lastWarn := logs.warns[len(logs.warns)-1]
	logs.mu.Unlock()
	if lastWarn["refused_not_logged"] != "0" {
		// The last line was at +7 s, the first refusal at that time.
		t.Errorf("last WARN %v: want refused_not_logged=0", lastWarn)
	}
	now = now.Add(time.Second)
	login(attacker, "h1.wrong.wrong") // sixth failure since the success: logged, with the 4 left out
	logs.mu.Lock()
	lastWarn = logs.warns[len(logs.warns)-1]
	logs.mu.Unlock()
	if lastWarn["refused_not_logged"] != "4" || lastWarn["backoff"] != "1s" {
		t.Errorf("WARN %v: want refused_not_logged=4 backoff=1s", lastWarn)
	}
}

// TestLoginThrottleOnServer: wrong logins against the real listener are
// answered 429 once the free failures are spent.
func TestLoginThrottleOnServer(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	var codes []int
	for i := 0; i < 10; i++ {
		resp := postForm(t, c, base+"login", url.Values{"token": {"h1.wrong.wrong"}})
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests {
			if resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			break
		}
	}
	for i, c := range codes[:5] {
		if c != http.StatusUnauthorized {
			t.Fatalf("wrong login %d: %d, want 401 (codes %v)", i+1, c, codes)
		}
	}
	if last := codes[len(codes)-1]; last != http.StatusTooManyRequests {
		t.Fatalf("10 wrong logins answered %v: none was throttled", codes)
	}
}

// TestLoginThrottleIPv6: IPv6 clients are throttled by their /64, so one
// host cannot take a fresh address for every wrong login.
func TestLoginThrottleIPv6(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	h := console.New(console.Config{Secret: testSecret, Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)})
	login := func(addr string) int {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(url.Values{"token": {"h1.wrong.wrong"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := 1; i <= 6; i++ {
		login(fmt.Sprintf("[2001:db8:0:1::%x]:443", i)) // five free, the sixth starts a backoff
	}
	if got := login("[2001:db8:0:1:ffff::7]:443"); got != http.StatusTooManyRequests {
		t.Errorf("another address of the same /64: %d, want 429", got)
	}
	if got := login("[2001:db8:0:2::1]:443"); got != http.StatusUnauthorized {
		t.Errorf("an address of another /64: %d, want 401", got)
	}
}
