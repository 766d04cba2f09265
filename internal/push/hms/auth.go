package hms

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/herald-im/herald/internal/push"
)

// tokenSource is what an app's access token is fetched with; the
// token itself lives in a push.TokenCache that every worker shares.
type tokenSource struct {
	p             *Provider
	url           string       // the token endpoint
	client        *http.Client // the app's
	appID, secret string
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

// fetch requests a token (under the cache's context: Close ends it,
// bounded by the send timeout) and raises the alarm when the credentials
// are refused.
func (s *tokenSource) fetch(ctx context.Context) (string, time.Duration, error) {
	tok, lifetime, err := s.request(ctx)
	if ae, ok := err.(*authError); ok && !ae.temporary {
		s.p.log.Error("hms refused the app's credentials", "app_id", s.appID, "status", ae.status, "reason", ae.desc)
	}
	return tok, lifetime, err
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
	body := push.ReadBody(resp.Body, maxBody)
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
