package apns

import (
	"context"
	"errors"
	"log/slog"
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
			for _, n := range []struct {
				name string
				p    *Provider
			}{{"node B", b}, {"node A", a}} { // B hears the refusal first
				if res := send(n.p); res.Verdict != push.Delivered {
					t.Fatalf("%s: Send after the JWT was refused = %+v, want delivered with the renewed JWT", n.name, res)
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

// memTokens is a shared table in memory, one for the cluster, with a view
// per node (tokenView) whose calls can be made to fail or hang.
type memTokens struct {
	mu      sync.Mutex
	entries map[string]store.SharedEntry
}

func (m *memTokens) put(e store.SharedEntry, now time.Time) (store.SharedEntry, error) {
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

func (m *memTokens) get(key string, now time.Time) (store.SharedEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if !ok || !e.Expires.After(now) {
		return store.SharedEntry{}, herald.Errorf(herald.CodeNotFound, "no entry")
	}
	return e, nil
}

// tokenView is one node's access to a memTokens.
type tokenView struct {
	m     *memTokens
	fail  atomic.Bool // calls fail
	hang  atomic.Bool // calls wait for their context to end
	calls atomic.Int64
}

func (v *tokenView) err(ctx context.Context) error {
	v.calls.Add(1)
	if v.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if v.fail.Load() {
		return errors.New("store down")
	}
	return nil
}

func (v *tokenView) PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error) {
	if err := v.err(ctx); err != nil {
		return store.SharedEntry{}, err
	}
	return v.m.put(e, now)
}

func (v *tokenView) GetShared(ctx context.Context, ns, key string, now time.Time) (store.SharedEntry, error) {
	if err := v.err(ctx); err != nil {
		return store.SharedEntry{}, err
	}
	return v.m.get(key, now)
}

// sharedSigners returns n signers of one key, as n nodes would hold it,
// over one memTokens, with their views.
func sharedSigners(t *testing.T, clk *clock, n int) ([]*signer, []*tokenView) {
	t.Helper()
	m := &memTokens{entries: map[string]store.SharedEntry{}}
	key := newKey(t)
	var ss []*signer
	var vs []*tokenView
	for range n {
		v := &tokenView{m: m}
		ss = append(ss, &signer{teamID: "TEAM1", keyID: "KEY1", key: key, refresh: 30 * time.Minute, now: clk.Now,
			stats: &counters{}, shared: v, log: slog.New(slog.DiscardHandler), storeTimeout: 50 * time.Millisecond})
		vs = append(vs, v)
	}
	return ss, vs
}

func mustBearer(t *testing.T, s *signer) string {
	t.Helper()
	done := make(chan struct{})
	var b string
	var err error
	go func() {
		defer close(done)
		b, err = s.bearer(context.Background())
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("bearer did not return within 10 s: a store call is not bounded")
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSharedJWTStoreHangs: a store that does not answer delays a push by
// the store timeout, not forever, and the node keeps its token meanwhile.
func TestSharedJWTStoreHangs(t *testing.T) {
	clk := newClock()
	ss, vs := sharedSigners(t, clk, 1)
	s, v := ss[0], vs[0]
	first := mustBearer(t, s)
	clk.Advance(31 * time.Minute)
	v.hang.Store(true)
	if got := mustBearer(t, s); got != first {
		t.Errorf("with the store hung, the node changed its 31-minute-old token; want it kept")
	}
	if got := s.stats.tokenSharedFailures.Load(); got != 1 {
		t.Errorf("TokenSharedFailures = %d, want 1", got)
	}
	// Nobody at the store, token still usable, store hung: no wait at all.
	clk.Advance(2 * time.Minute)
	s.mu.Lock() // as if another request were at the store
	defer s.mu.Unlock()
	if b := mustBearer(t, s); b != first {
		t.Error("bearer while another request renews: want the current token at once")
	}
}

// TestSharedJWTStoreFailsKeepsToken: when the store fails the node keeps
// the cluster's token while it is under 55 minutes old, trying the store
// again once a minute, not on every push; then it signs its own, which
// it stores once the store answers again, without signing another.
func TestSharedJWTStoreFailsKeepsToken(t *testing.T) {
	clk := newClock()
	ss, vs := sharedSigners(t, clk, 2)
	a, va := ss[0], vs[0]
	first := mustBearer(t, a)
	if got := a.stats.tokensSigned.Load(); got != 1 {
		t.Fatalf("tokens signed = %d, want 1", got)
	}
	clk.Advance(31 * time.Minute) // past TokenRefresh
	va.fail.Store(true)
	calls := va.calls.Load()
	for range 5 {
		if got := mustBearer(t, a); got != first {
			t.Fatal("the store failing: the node replaced a token 31 minutes old, want it kept to 55 minutes")
		}
	}
	if got := va.calls.Load() - calls; got != 1 {
		t.Errorf("store calls for 5 pushes within a minute of a failure: %d, want 1", got)
	}
	clk.Advance(sharedRetry)
	mustBearer(t, a)
	if got := va.calls.Load() - calls; got != 2 {
		t.Errorf("store calls a minute after the failure: %d, want 2 (retried)", got)
	}
	clk.Advance(keepOnFailure - 32*time.Minute) // the token is 55 minutes old
	own := mustBearer(t, a)
	if own == first {
		t.Fatal("the store failing and the token 55 minutes old: still sent, want one of the node's own")
	}
	if got := a.stats.tokensSigned.Load(); got != 2 {
		t.Errorf("tokens signed = %d, want 2", got)
	}
	if got := mustBearer(t, a); got != own {
		t.Error("the node's own token changed within a minute")
	}
	// The store is back: a minute later the node stores its own token,
	// which the other node then takes.
	va.fail.Store(false)
	clk.Advance(sharedRetry)
	if got := mustBearer(t, a); got != own {
		t.Error("the store back: the node replaced its own young token, want it stored and kept")
	}
	if got := mustBearer(t, ss[1]); got != own {
		t.Error("the other node did not take the token the node stored")
	}
	if got := a.stats.tokensSigned.Load() + ss[1].stats.tokensSigned.Load(); got != 2 {
		t.Errorf("tokens signed = %d, want 2", got)
	}
}

// TestSharedJWTOwnTokenRechecked: a node on a token of its own (its store
// failed while another node's did not) takes the cluster's token a minute
// after its store answers again.
func TestSharedJWTOwnTokenRechecked(t *testing.T) {
	clk := newClock()
	ss, vs := sharedSigners(t, clk, 2)
	a, b := ss[0], ss[1]
	vs[0].fail.Store(true)
	own := mustBearer(t, a)
	cluster := mustBearer(t, b)
	if own == cluster {
		t.Fatal("want two tokens while node A's store fails")
	}
	vs[0].fail.Store(false)
	if got := mustBearer(t, a); got != own {
		t.Error("node A changed its own token within a minute")
	}
	clk.Advance(sharedRetry)
	if got := mustBearer(t, a); got != cluster {
		t.Error("a minute after its store came back, node A still sends its own token, want the cluster's")
	}
}

// TestSharedJWTRenewReplacedNoRead: renew after a refusal of a token the
// node has replaced already answers the current one without a store read.
func TestSharedJWTRenewReplacedNoRead(t *testing.T) {
	clk := newClock()
	ss, vs := sharedSigners(t, clk, 1)
	s, v := ss[0], vs[0]
	cur := mustBearer(t, s)
	calls := v.calls.Load()
	got, err := s.renew(context.Background(), "bearer an-older-token")
	if err != nil || got != cur {
		t.Fatalf("renew of a replaced token = %v, want the current token", err)
	}
	if n := v.calls.Load() - calls; n != 0 {
		t.Errorf("store calls for renew of a replaced token: %d, want 0", n)
	}
}

// TestRestartReusesJWT: a provider started again on the same store (a
// restarted server, on one node too) sends with the JWT the first one
// signed while that is younger than TokenRefresh, signing none; past it,
// one new JWT.
func TestRestartReusesJWT(t *testing.T) {
	srv := newServer(t, nil)
	clk := newClock()
	key := newKey(t)
	st := &tokenView{m: &memTokens{entries: map[string]store.SharedEntry{}}}
	start := func() *Provider {
		return newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, key)}, Now: clk.Now, TokenRefresh: 30 * time.Minute, Shared: st})
	}
	send := func(p *Provider) string {
		t.Helper()
		if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1))); res.Verdict != push.Delivered {
			t.Fatalf("Send = %+v", res)
		}
		reqs := srv.received()
		return reqs[len(reqs)-1].Auth
	}
	first := start()
	jwt := send(first)
	first.Close()
	clk.Advance(10 * time.Minute) // a restart within 20 minutes
	second := start()
	if got := send(second); got != jwt {
		t.Error("the restarted provider sent a new JWT 10 minutes after the last one, want the stored one")
	}
	if n := second.Stats().TokensSigned; n != 0 {
		t.Errorf("the restarted provider signed %d JWTs, want 0", n)
	}
	second.Close()
	clk.Advance(20 * time.Minute) // the stored one is TokenRefresh old
	third := start()
	if got := send(third); got == jwt {
		t.Error("a provider started after the refresh age sent the old JWT")
	}
	if n := third.Stats().TokensSigned; n != 1 {
		t.Errorf("TokensSigned = %d, want 1", n)
	}
}
