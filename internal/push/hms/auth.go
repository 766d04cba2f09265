package hms

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// tokenSource holds one app's access token. Every worker shares it; when
// it is missing or about to expire, one request fetches a new one while
// the others wait for it (a single flight), so a burst of sends makes one
// token request, not one each.
type tokenSource struct {
	p             *Provider
	url           string       // the token endpoint
	client        *http.Client // the app's
	appID, secret string
	refreshBefore time.Duration

	// onWait, when set (tests), is called as a caller starts waiting for
	// a fetch: with the token endpoint held, a test knows every caller
	// joined before it lets the fetch finish.
	onWait func()

	mu        sync.Mutex
	token     string       // guarded by mu
	refreshAt time.Time    // expiry less the refresh margin; guarded by mu
	flight    *tokenFlight // the fetch in progress, or nil; guarded by mu
}

type tokenFlight struct {
	done  chan struct{}
	token string
	err   error
}

// authError is a refused token request: the credentials are wrong
// (Credentials) unless the endpoint failed (5xx: Retry).
type authError struct {
	status    int
	desc      string
	body      []byte
	temporary bool
}

func (e *authError) Error() string {
	return fmt.Sprintf("hms oauth: %d %s", e.status, e.desc)
}

// get returns a valid access token, fetching one if needed. It blocks until
// the fetch ends or ctx is done.
func (s *tokenSource) get(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.token != "" && s.p.now().Before(s.refreshAt) {
		t := s.token
		s.mu.Unlock()
		return t, nil
	}
	f := s.flight
	if f == nil {
		f = &tokenFlight{done: make(chan struct{})}
		s.flight = f
		go s.fetch(f)
	}
	s.mu.Unlock()
	if s.onWait != nil {
		s.onWait()
	}
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// invalidate drops token if it is still the current one, so the next get
// fetches a new one (after Huawei called it expired).
func (s *tokenSource) invalidate(token string) {
	s.mu.Lock()
	if s.token == token {
		s.token, s.refreshAt = "", time.Time{}
	}
	s.mu.Unlock()
}

// fetch requests a token under the provider's context (Close ends it),
// bounded by the send timeout, and records it for every waiter.
func (s *tokenSource) fetch(f *tokenFlight) {
	ctx, cancel := context.WithTimeout(s.p.ctx, s.p.timeout)
	defer cancel()
	tok, lifetime, err := s.request(ctx)
	s.mu.Lock()
	if err == nil {
		// A token that lives shorter than twice the margin is replaced
		// half-way instead.
		s.token, s.refreshAt = tok, s.p.now().Add(lifetime-min(s.refreshBefore, lifetime/2))
	}
	s.flight = nil
	s.mu.Unlock()
	f.token, f.err = tok, err
	close(f.done)
	if ae, ok := err.(*authError); ok && !ae.temporary {
		s.p.log.Error("hms refused the app's credentials", "app_id", s.appID, "status", ae.status, "reason", ae.desc)
	}
}

type tokenAnswer struct {
	AccessToken string          `json:"access_token"`
	ExpiresIn   int64           `json:"expires_in"`
	TokenType   string          `json:"token_type"`
	Error       json.RawMessage `json:"error"`
	SubError    json.RawMessage `json:"sub_error"`
	Description string          `json:"error_description"`
}

func (s *tokenSource) request(ctx context.Context) (string, time.Duration, error) {
	s.p.stats.tokenRequests.Add(1)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {s.appID}, "client_secret": {s.secret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.client.Do(req)
	if err != nil {
		return "", 0, err // transport: the caller retries later
	}
	body := readBody(resp.Body)
	var ans tokenAnswer
	jsonErr := json.Unmarshal(body, &ans)
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return "", 0, &authError{status: resp.StatusCode, desc: http.StatusText(resp.StatusCode), body: body, temporary: true}
	case resp.StatusCode != http.StatusOK || ans.AccessToken == "":
		desc := ans.Description
		if desc == "" && jsonErr != nil {
			desc = "unreadable answer"
		}
		if desc == "" {
			desc = "no access token"
		}
		if len(ans.SubError) > 0 {
			desc += " (sub_error " + string(ans.SubError) + ")"
		}
		return "", 0, &authError{status: resp.StatusCode, desc: desc, body: body}
	}
	lifetime := time.Duration(ans.ExpiresIn) * time.Second
	if ans.ExpiresIn <= 0 || ans.ExpiresIn > 7*24*3600 {
		lifetime = time.Hour // Huawei's documented lifetime
	}
	return ans.AccessToken, lifetime, nil
}
