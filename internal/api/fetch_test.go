package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/token"
)

// oneMessage serves History with one peer message between alice and bob.
type oneMessage struct{}

func (oneMessage) History(ctx context.Context, user string, t herald.ConversationType, id string, q store.HistoryQuery) ([]*herald.Message, bool, error) {
	if t != herald.ConversationPeer || herald.PeerConversationKey(user, id) != "p:alice:bob" || q.FromSeq != 0 {
		return nil, false, nil
	}
	return []*herald.Message{{ID: 7, Seq: 1, Conv: "p:alice:bob", From: "alice", To: "bob", Type: herald.MessageText, Text: "hi"}}, false, nil
}

// TestFetchCredentials: the fetch endpoint takes a fetch token and no other
// credential, reads only the token user's message, and limits each user.
func TestFetchCredentials(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	h := New(Config{Secret: testSecret, Messages: oneMessage{}, Now: func() time.Time { return now }})
	get := func(tok, query string) (int, apiclient.ErrorBody) {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, PathPushMessage+"?"+query, nil)
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var e apiclient.ErrorBody
		json.Unmarshal(w.Body.Bytes(), &e)
		return w.Code, e
	}
	bob, _ := token.MintFetch(testSecret, "bob", now, time.Hour)
	carol, _ := token.MintFetch(testSecret, "carol", now, time.Hour)
	login, _ := token.Mint(testSecret, "bob", now, time.Hour)
	admin, _ := token.MintAdmin(testSecret, now, time.Hour)
	const q = "conv=p:alice:bob&msg_id=7&seq=1"
	for _, tt := range []struct {
		name, tok, query string
		status           int
		reason           string
	}{
		{"bob's fetch token", bob, q, 200, ""},
		{"no token", "", q, 401, apiclient.ReasonFetchToken},
		{"a login token", login, q, 401, apiclient.ReasonFetchToken},
		{"an admin token", admin, q, 401, apiclient.ReasonFetchToken},
		{"carol's fetch token", carol, q, 404, ""},
		{"another message ID", bob, "conv=p:alice:bob&msg_id=8&seq=1", 404, ""},
		{"not a conversation key", bob, "conv=alice&msg_id=7&seq=1", 400, ""},
		{"no seq", bob, "conv=p:alice:bob&msg_id=7", 400, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, e := get(tt.tok, tt.query)
			if st != tt.status || e.Reason != tt.reason {
				t.Errorf("%d %+v; want %d, reason %q", st, e, tt.status, tt.reason)
			}
		})
	}
	// The limit is per user: bob's burst runs out, carol's is untouched.
	limited := 0
	for range FetchBurst + 5 {
		if st, _ := get(bob, q); st == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Errorf("%d fetches at one instant were all served; want 429 past the burst of %d", FetchBurst+5, FetchBurst)
	}
	if st, e := get(carol, q); st != 404 || strings.Contains(e.Code, "rate") {
		t.Errorf("carol after bob's burst: %d %+v; want her own answer (404)", st, e)
	}
}

// refuseUser is a FetchCheck that refuses one user's tokens issued before
// a time, as an unregistration does.
type refuseUser struct {
	user   string
	before time.Time
}

func (f refuseUser) FetchAllowed(ctx context.Context, user string, issued time.Time) error {
	if user == f.user && issued.Before(f.before) {
		return herald.Errorf(herald.CodeTokenInvalid, "revoked")
	}
	return nil
}

// TestFetchCheckAndClusterLimit: a valid fetch token that FetchCheck
// refuses reads nothing (401, reason fetch_token), a later one reads; and
// the per-user limit is the cluster's, shared by the live nodes.
func TestFetchCheckAndClusterLimit(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	h := New(Config{Secret: testSecret, Messages: oneMessage{}, Now: func() time.Time { return now },
		FetchCheck: refuseUser{"bob", now}, Nodes: func() int { return 2 }})
	get := func(tok string) (int, apiclient.ErrorBody) {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, PathPushMessage+"?conv=p:alice:bob&msg_id=7&seq=1", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var e apiclient.ErrorBody
		json.Unmarshal(w.Body.Bytes(), &e)
		return w.Code, e
	}
	old, _ := token.MintFetch(testSecret, "bob", now.Add(-time.Minute), time.Hour)
	fresh, _ := token.MintFetch(testSecret, "bob", now, time.Hour)
	if st, e := get(old); st != http.StatusUnauthorized || e.Reason != apiclient.ReasonFetchToken {
		t.Errorf("revoked token: %d %+v; want 401, reason %s", st, e, apiclient.ReasonFetchToken)
	}
	served := 0
	for range FetchBurst {
		if st, _ := get(fresh); st == http.StatusOK {
			served++
		}
	}
	// One of two nodes takes half the burst; the refused token took one.
	if want := FetchBurst/2 - 1; served != want {
		t.Errorf("%d fetches at one instant on one of 2 nodes: %d served; want %d (half the burst, less the refused one)", FetchBurst, served, want)
	}
}

// TestFetchCORS: a service worker on an allowed origin gets its preflight
// answered (GET with Authorization) and every answer, errors included,
// names its origin; another origin gets no CORS header and a refused
// preflight.
func TestFetchCORS(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	h := New(Config{Secret: testSecret, Messages: oneMessage{}, Now: func() time.Time { return now },
		FetchOrigins: []string{"https://app.example.com"}})
	do := func(method, origin, tok string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, PathPushMessage+"?conv=p:alice:bob&msg_id=7&seq=1", nil)
		r.Header.Set("Origin", origin)
		if method == http.MethodOptions {
			r.Header.Set("Access-Control-Request-Method", "GET")
			r.Header.Set("Access-Control-Request-Headers", "authorization")
		}
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	bob, _ := token.MintFetch(testSecret, "bob", now, time.Hour)
	w := do(http.MethodOptions, "https://app.example.com", "")
	if w.Code != http.StatusNoContent || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		w.Header().Get("Access-Control-Allow-Methods") != "GET" || !strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight from the allowed origin: %d %v; want 204 allowing GET with Authorization", w.Code, w.Header())
	}
	for _, tt := range []struct {
		name, tok string
		status    int
	}{{"a fetch", bob, 200}, {"no token", "", 401}} {
		if w := do(http.MethodGet, "https://app.example.com", tt.tok); w.Code != tt.status || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Errorf("%s from the allowed origin: %d, Access-Control-Allow-Origin %q; want %d naming the origin", tt.name, w.Code, w.Header().Get("Access-Control-Allow-Origin"), tt.status)
		}
	}
	if w := do(http.MethodOptions, "https://evil.example", ""); w.Code != http.StatusForbidden || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v; want 403 with no CORS header", w.Code, w.Header())
	}
	if w := do(http.MethodGet, "https://evil.example", bob); w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("fetch from another origin carries Access-Control-Allow-Origin %q; want none", w.Header().Get("Access-Control-Allow-Origin"))
	}
}
