package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/console"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
)

// TestTwoNodesConsoleSession: two consoles (two nodes) on one PostgreSQL
// schema: a session opened on node A is valid on node B, and a logout on A
// ends it on B.
func TestTwoNodesConsoleSession(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.Database(t, "to run the console's tests of several nodes"))
	node := func() (*httptest.Server, *postgres.Store) {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		h := console.New(console.Config{Secret: testSecret, Shared: st})
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv, st
	}
	a, st := node()
	b, _ := node()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(a.URL+console.Prefix+"login", url.Values{"token": {adminToken(t, time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			cookie = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || cookie == nil {
		t.Fatalf("login on node A: %d, cookie %v; want 303 and a session cookie", resp.StatusCode, cookie)
	}
	figures := func(srv *httptest.Server) int {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+console.Prefix+"api/figures", nil)
		req.AddCookie(cookie)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := figures(b); st != http.StatusOK {
		t.Fatalf("node B with node A's session: %d, want 200", st)
	}
	// The store holds the session under the cookie's hash, with its CSRF
	// token (and its slot): the cookie itself is not in the database.
	sum := sha256.Sum256([]byte(cookie.Value))
	e, err := st.GetShared(context.Background(), store.SharedConsoleSession, hex.EncodeToString(sum[:]), time.Now())
	if err != nil {
		t.Fatalf("the session in the shared table: %v", err)
	}
	req, _ := http.NewRequest("POST", a.URL+console.Prefix+"logout", strings.NewReader(""))
	req.AddCookie(cookie)
	csrf, _, _ := strings.Cut(string(e.Value), " ")
	req.Header.Set("X-CSRF-Token", csrf)
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout on node A: %d, want 303", resp.StatusCode)
	}
	if st := figures(b); st != http.StatusUnauthorized {
		t.Fatalf("node B after the logout on node A: %d, want 401", st)
	}
	if st := figures(a); st != http.StatusUnauthorized {
		t.Fatalf("node A after its logout: %d, want 401", st)
	}
}

// memSessions is a shared table in memory that counts its calls.
type memSessions struct {
	mu      sync.Mutex
	entries map[string]store.SharedEntry
	calls   atomic.Int64
}

func newMemSessions() *memSessions { return &memSessions{entries: map[string]store.SharedEntry{}} }

func (m *memSessions) PutShared(_ context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.entries[e.Key]
	live := ok && old.Expires.After(now)
	if e.Version == 0 && live || e.Version != 0 && (!live || old.Version != e.Version) {
		return store.SharedEntry{}, store.SharedConflict(&e)
	}
	e.Version = old.Version + 1
	m.entries[e.Key] = e
	return e, nil
}

func (m *memSessions) GetShared(_ context.Context, _, key string, now time.Time) (store.SharedEntry, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if !ok || !e.Expires.After(now) {
		return store.SharedEntry{}, herald.Errorf(herald.CodeNotFound, "no entry")
	}
	return e, nil
}

func (m *memSessions) DeleteShared(_ context.Context, _, key string) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, key)
	return nil
}

// sessions counts the session entries (not the slots).
func (m *memSessions) sessions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k := range m.entries {
		if !strings.HasPrefix(k, "slot/") {
			n++
		}
	}
	return n
}

func (m *memSessions) csrf(t *testing.T, cookie *http.Cookie) string {
	t.Helper()
	sum := sha256.Sum256([]byte(cookie.Value))
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[hex.EncodeToString(sum[:])]
	if !ok {
		t.Fatal("no session entry for the cookie")
	}
	csrf, _, _ := strings.Cut(string(e.Value), " ")
	return csrf
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func loginCookie(t *testing.T, srv *httptest.Server, tok string) *http.Cookie {
	t.Helper()
	resp, err := noRedirect.PostForm(srv.URL+console.Prefix+"login", url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			return c
		}
	}
	t.Fatalf("login: %d and no session cookie", resp.StatusCode)
	return nil
}

func figuresWith(t *testing.T, srv *httptest.Server, c *http.Cookie) int {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+console.Prefix+"api/figures", nil)
	req.AddCookie(c)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSharedSessionBadCookieNoRead: on several nodes a cookie that is not
// a session ID's form is refused without a store read.
func TestSharedSessionBadCookieNoRead(t *testing.T) {
	m := newMemSessions()
	srv := httptest.NewServer(console.New(console.Config{Secret: testSecret, Shared: m}))
	t.Cleanup(srv.Close)
	for _, v := range []string{"x", strings.Repeat("a", 42), strings.Repeat("a", 44), strings.Repeat("a", 42) + "!", strings.Repeat("a", 4000)} {
		if st := figuresWith(t, srv, &http.Cookie{Name: console.CookieName, Value: v}); st != http.StatusUnauthorized {
			t.Errorf("cookie of %d bytes: %d, want 401", len(v), st)
		}
	}
	if n := m.calls.Load(); n != 0 {
		t.Errorf("store calls for malformed cookies: %d, want 0", n)
	}
	// A well-formed one that names no session is read, and refused.
	if st := figuresWith(t, srv, &http.Cookie{Name: console.CookieName, Value: strings.Repeat("a", 43)}); st != http.StatusUnauthorized {
		t.Errorf("unknown session: %d, want 401", st)
	}
	if n := m.calls.Load(); n != 1 {
		t.Errorf("store calls for a well-formed unknown cookie: %d, want 1", n)
	}
}

// TestSharedSessionsPerToken: on several nodes one admin token holds at
// most MaxTokenSessions sessions in the table; a login past it ends the
// token's oldest session, and a logout frees its place.
func TestSharedSessionsPerToken(t *testing.T) {
	m := newMemSessions()
	srv := httptest.NewServer(console.New(console.Config{Secret: testSecret, Shared: m}))
	t.Cleanup(srv.Close)
	tok := adminToken(t, time.Hour)
	var cookies []*http.Cookie
	for range console.MaxTokenSessions {
		cookies = append(cookies, loginCookie(t, srv, tok))
	}
	if n := m.sessions(); n != console.MaxTokenSessions {
		t.Fatalf("sessions in the table after %d logins: %d", console.MaxTokenSessions, n)
	}
	cookies = append(cookies, loginCookie(t, srv, tok))
	if n := m.sessions(); n != console.MaxTokenSessions {
		t.Errorf("sessions in the table after %d logins of one token: %d, want %d", len(cookies), n, console.MaxTokenSessions)
	}
	if st := figuresWith(t, srv, cookies[0]); st != http.StatusUnauthorized {
		t.Errorf("the token's oldest session after a login past the bound: %d, want 401 (ended)", st)
	}
	for i, c := range cookies[1:] {
		if st := figuresWith(t, srv, c); st != http.StatusOK {
			t.Errorf("session %d: %d, want 200", i+1, st)
		}
	}
	// Another token has slots of its own.
	other := loginCookie(t, srv, adminToken(t, 2*time.Hour))
	if st := figuresWith(t, srv, cookies[1]); st != http.StatusOK {
		t.Errorf("a login of another token ended a session of the first: %d", st)
	}
	// A logout frees its slot: the next login ends no other session.
	req, _ := http.NewRequest("POST", srv.URL+console.Prefix+"logout", strings.NewReader(""))
	req.AddCookie(cookies[5])
	req.Header.Set("X-CSRF-Token", m.csrf(t, cookies[5]))
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	loginCookie(t, srv, tok)
	for i, c := range append(cookies[1:5], cookies[6:]...) {
		if st := figuresWith(t, srv, c); st != http.StatusOK {
			t.Errorf("after a logout and a login, session %d: %d, want 200", i, st)
		}
	}
	if st := figuresWith(t, srv, other); st != http.StatusOK {
		t.Errorf("the other token's session: %d, want 200", st)
	}
}
