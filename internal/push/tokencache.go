package push

import (
	"context"
	"sync"
	"time"
)

// TokenCache holds one vendor access token (an OAuth bearer: FCM's per
// project, Huawei's per app) shared by every worker. A token is replaced
// ahead of its expiry; one fetch runs at a time (a "flight" the other
// callers join), so a burst of sends makes one token request. The fetch
// runs under the cache's context, bounded by its timeout, not under a
// caller's: a caller that gives up stops waiting, and the fetch goes on
// for the next caller until the context (the provider's, which Close
// cancels) ends it.
type TokenCache struct {
	fetch   func(ctx context.Context) (token string, lifetime time.Duration, err error)
	ctx     context.Context
	timeout time.Duration
	now     func() time.Time
	ahead   time.Duration

	// OnWait, when set (tests), is called as a caller starts waiting for a
	// fetch: with the token endpoint held, a test knows every caller joined
	// before it lets the fetch finish. Set it before the first Get.
	OnWait func()

	mu        sync.Mutex // guards the fields below
	token     string
	refreshAt time.Time    // on now's clock: expiry less ahead (or half the lifetime, if shorter)
	flight    *tokenFlight // the fetch running now, nil if none
}

type tokenFlight struct {
	done  chan struct{} // closed when token and err are set
	token string
	err   error
}

// NewTokenCache returns a cache whose fetch gets a token and its lifetime
// (an empty token with a nil error is the fetch's bug: fetch must say
// why). ctx bounds every fetch (cancel it to end the one in flight),
// timeout bounds each; now is the clock lifetimes run on; a token is
// replaced ahead before it expires, or half-way through its life if that
// is sooner.
func NewTokenCache(ctx context.Context, timeout time.Duration, now func() time.Time, ahead time.Duration,
	fetch func(ctx context.Context) (string, time.Duration, error)) *TokenCache {
	return &TokenCache{fetch: fetch, ctx: ctx, timeout: timeout, now: now, ahead: ahead}
}

// Get returns a token valid for at least ahead, fetching one if needed. It
// blocks until the fetch ends or ctx is done.
func (c *TokenCache) Get(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.token != "" && c.now().Before(c.refreshAt) {
		t := c.token
		c.mu.Unlock()
		return t, nil
	}
	f := c.flight
	if f == nil {
		f = &tokenFlight{done: make(chan struct{})}
		c.flight = f
		go c.run(f)
	}
	c.mu.Unlock()
	if c.OnWait != nil {
		c.OnWait()
	}
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Invalidate drops stale, a token the vendor refused, if it is still the
// cached one (so a burst of refusals fetches once), and the next Get
// fetches.
func (c *TokenCache) Invalidate(stale string) {
	c.mu.Lock()
	if c.token == stale {
		c.token, c.refreshAt = "", time.Time{}
	}
	c.mu.Unlock()
}

// Renew invalidates stale and returns another token: the cached one when
// another caller already replaced stale, else a fresh one.
func (c *TokenCache) Renew(ctx context.Context, stale string) (string, error) {
	c.Invalidate(stale)
	return c.Get(ctx)
}

func (c *TokenCache) run(f *tokenFlight) {
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	tok, life, err := c.fetch(ctx)
	c.mu.Lock()
	if err == nil {
		c.token, c.refreshAt = tok, c.now().Add(max(life-c.ahead, life/2))
	}
	c.flight = nil
	c.mu.Unlock()
	f.token, f.err = tok, err
	close(f.done)
}
