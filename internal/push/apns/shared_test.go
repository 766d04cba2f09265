package apns

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
)

// twoNodeProviders returns two providers, as two nodes would run them, for
// one signing key, whose JWTs go to one PostgreSQL schema through a pool
// each, on one clock.
func twoNodeProviders(t *testing.T, srv *apnsServer, clk *clock) (a, b *Provider) {
	t.Helper()
	dsn := pgtest.Schema(t, pgtest.Database(t, "to run the APNs provider's tests of several nodes"))
	key := newKey(t)
	node := func() *Provider {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, key)}, Now: clk.Now, TokenRefresh: 30 * time.Minute, Shared: st})
	}
	return node(), node()
}

// TestTwoNodesOneJWT: two providers on one store send with one JWT per
// key, signed once, and at the refresh age replace it with one new JWT
// for both: APNs never sees two of the key's tokens in one period.
func TestTwoNodesOneJWT(t *testing.T) {
	srv := newServer(t, nil)
	clk := newClock()
	a, b := twoNodeProviders(t, srv, clk)
	burst := func() {
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				p := a
				if i%2 == 1 {
					p = b
				}
				if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(i))); res.Verdict != push.Delivered {
					t.Errorf("Send %d = %+v", i, res)
				}
			})
		}
		wg.Wait()
	}
	distinct := func() int {
		seen := map[string]bool{}
		for _, r := range srv.received() {
			seen[r.Auth] = true
		}
		return len(seen)
	}
	burst()
	if n := distinct(); n != 1 {
		t.Fatalf("two nodes sent with %d distinct JWTs, want 1", n)
	}
	if got := a.Stats().TokensSigned + b.Stats().TokensSigned; got != 1 {
		t.Errorf("JWTs signed by the two nodes: %d, want 1", got)
	}
	clk.Advance(30 * time.Minute)
	burst()
	if n := distinct(); n != 2 {
		t.Fatalf("after the refresh age: %d distinct JWTs over both periods, want 2 (one a period)", n)
	}
	if got := a.Stats().TokensSigned + b.Stats().TokensSigned; got != 2 {
		t.Errorf("JWTs signed by the two nodes after the refresh: %d, want 2", got)
	}
}

// TestTwoNodesExpiredJWTRenewedOnce: APNs calls the cluster's JWT expired;
// the node that hears it first replaces it through the swap, and the other
// node, hearing it next, takes that replacement instead of signing its own.
func TestTwoNodesExpiredJWTRenewedOnce(t *testing.T) {
	srv := newServer(t, nil)
	clk := newClock()
	var rejectIat atomic.Int64
	rejectIat.Store(-2) // none
	for _, reason := range []string{ReasonExpiredProviderToken, ReasonInvalidProviderToken} {
		t.Run(reason, func(t *testing.T) {
			srv.respond = func(_ *http.Request, got *received) reply {
				if got.Iat == rejectIat.Load() {
					return reply{status: 403, body: `{"reason":"` + reason + `"}`}
				}
				return reply{status: 200}
			}
			a, b := twoNodeProviders(t, srv, clk)
			send := func(p *Provider) push.Result {
				return p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(3)))
			}
			for _, p := range []*Provider{a, b} {
				if res := send(p); res.Verdict != push.Delivered {
					t.Fatalf("first Send = %+v", res)
				}
			}
			rejectIat.Store(clk.Now().Truncate(time.Second).Unix())
			clk.Advance(5 * time.Minute)
			for name, p := range map[string]*Provider{"node B": b, "node A": a} {
				if res := send(p); res.Verdict != push.Delivered {
					t.Fatalf("%s: Send after the JWT was refused = %+v, want delivered with the renewed JWT", name, res)
				}
			}
			if got := a.Stats().TokensSigned + b.Stats().TokensSigned; got != 2 {
				t.Errorf("JWTs signed by the two nodes: %d, want 2 (the first, and one renewal for both)", got)
			}
			if got := a.Stats().TokenRetries + b.Stats().TokenRetries; got != 2 {
				t.Errorf("requests retried with a new JWT: %d, want 2 (one a node)", got)
			}
			clk.Advance(time.Hour) // the next subtest's tokens are new
		})
	}
}

// failingTokens is a shared table that does not answer.
type failingTokens struct{}

func (failingTokens) PutShared(context.Context, store.SharedEntry, time.Time) (store.SharedEntry, error) {
	return store.SharedEntry{}, errors.New("store down")
}

func (failingTokens) GetShared(context.Context, string, string, time.Time) (store.SharedEntry, error) {
	return store.SharedEntry{}, errors.New("store down")
}

// TestSharedJWTStoreDown: when the shared table fails, the node signs a
// JWT of its own and pushes go on; the failure is counted.
func TestSharedJWTStoreDown(t *testing.T) {
	srv := newServer(t, nil)
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Shared: failingTokens{}})
	if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1))); res.Verdict != push.Delivered {
		t.Fatalf("Send with the store down = %+v, want delivered with this node's JWT", res)
	}
	if st := p.Stats(); st.TokenSharedFailures != 1 || st.TokensSigned != 1 {
		t.Errorf("TokenSharedFailures, TokensSigned = %d, %d; want 1, 1", st.TokenSharedFailures, st.TokensSigned)
	}
}
