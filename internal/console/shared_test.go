package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

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
	// token: the cookie itself is not in the database.
	sum := sha256.Sum256([]byte(cookie.Value))
	e, err := st.GetShared(context.Background(), store.SharedConsoleSession, hex.EncodeToString(sum[:]), time.Now())
	if err != nil {
		t.Fatalf("the session in the shared table: %v", err)
	}
	req, _ := http.NewRequest("POST", a.URL+console.Prefix+"logout", strings.NewReader(""))
	req.AddCookie(cookie)
	req.Header.Set("X-CSRF-Token", string(e.Value))
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
