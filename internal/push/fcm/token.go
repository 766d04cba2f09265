package fcm

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// ServiceAccount is what Herald reads from a service-account JSON key: the
// fields it checks at start. The key itself stays in the JSON, which
// golang.org/x/oauth2/google signs with.
type ServiceAccount struct {
	ProjectID    string
	ClientEmail  string
	PrivateKeyID string
	TokenURI     string // "" means Google's
}

// ParseServiceAccount checks a service-account JSON key so that a file
// that cannot work is refused at start, not at the first push. The error
// says what is wrong and never quotes the key.
func ParseServiceAccount(b []byte) (*ServiceAccount, error) {
	var f struct {
		Type         string `json:"type"`
		ProjectID    string `json:"project_id"`
		PrivateKeyID string `json:"private_key_id"`
		PrivateKey   string `json:"private_key"`
		ClientEmail  string `json:"client_email"`
		TokenURI     string `json:"token_uri"`
	}
	if len(b) == 0 {
		return nil, errors.New("is empty")
	}
	if err := json.Unmarshal(b, &f); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("is not JSON (offset %d): %v", se.Offset, se)
		}
		return nil, fmt.Errorf("is not a service-account JSON key: %v", err)
	}
	switch {
	case f.Type != "service_account":
		return nil, fmt.Errorf("has type %q; want \"service_account\" (a Firebase service-account key, from Project settings > Service accounts)", f.Type)
	case f.ClientEmail == "":
		return nil, errors.New("has no client_email")
	case f.PrivateKey == "":
		return nil, errors.New("has no private_key")
	case f.ProjectID == "":
		return nil, errors.New("has no project_id")
	}
	block, _ := pem.Decode([]byte(f.PrivateKey))
	if block == nil {
		return nil, errors.New("private_key is not PEM")
	}
	var key any
	var err error
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return nil, errors.New("private_key does not parse as a PKCS#8 or PKCS#1 key")
		}
	}
	if _, ok := key.(*rsa.PrivateKey); !ok {
		return nil, fmt.Errorf("private_key is a %T, not an RSA key", key)
	}
	if f.TokenURI != "" {
		u, err := url.Parse(f.TokenURI)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("token_uri %q is not an https URL", f.TokenURI)
		}
	}
	return &ServiceAccount{ProjectID: f.ProjectID, ClientEmail: f.ClientEmail, PrivateKeyID: f.PrivateKeyID, TokenURI: f.TokenURI}, nil
}

// tokenCache holds one project's access token, shared by every Send. A
// token is replaced ahead of its expiry; one fetch runs at a time, and
// callers waiting for it give up when their own context ends (the fetch
// goes on for the next caller, bounded by Timeout, until Close ends it).
type tokenCache struct {
	fetch func() (*oauth2.Token, error)
	now   func() time.Time
	ahead time.Duration
	stats *counters

	// onWait, when set (tests), is called as a caller starts waiting for
	// a fetch: with the token endpoint held, a test knows every caller
	// joined before it lets the fetch finish.
	onWait func()

	mu        sync.Mutex // guards the fields below
	token     string
	refreshAt time.Time // on the injected clock: expiry less ahead (or half the lifetime, if shorter)
	flight    *flight   // the fetch running now, nil if none
}

type flight struct {
	done  chan struct{} // closed when token and err are set
	token string
	err   error
}

// get returns a token valid for at least ahead, fetching one if needed.
func (c *tokenCache) get(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.token != "" && c.now().Before(c.refreshAt) {
		t := c.token
		c.mu.Unlock()
		return t, nil
	}
	f := c.start()
	c.mu.Unlock()
	if c.onWait != nil {
		c.onWait()
	}
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// renew drops stale, a token the server refused, and returns another: the
// cached one when another caller already replaced stale, else a fresh one.
func (c *tokenCache) renew(ctx context.Context, stale string) (string, error) {
	c.mu.Lock()
	if c.token == stale {
		c.token, c.refreshAt = "", time.Time{}
	}
	c.mu.Unlock()
	return c.get(ctx)
}

// start returns the running fetch or starts one. c.mu must be held.
func (c *tokenCache) start() *flight {
	if c.flight != nil {
		return c.flight
	}
	f := &flight{done: make(chan struct{})}
	c.flight = f
	go func() {
		realStart := time.Now()
		t, err := c.fetch()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.flight = nil
		switch {
		case err != nil:
			c.stats.tokenErrors.Add(1)
			f.err = err
		case t.AccessToken == "":
			c.stats.tokenErrors.Add(1)
			f.err = errors.New("the token endpoint answered no access_token")
		default:
			c.stats.tokensFetched.Add(1)
			// oauth2 dates the expiry on the real clock; carry the
			// lifetime over to the injected one.
			life := time.Hour
			if !t.Expiry.IsZero() {
				life = t.Expiry.Sub(realStart)
			}
			c.token, c.refreshAt = t.AccessToken, c.now().Add(max(life-c.ahead, life/2))
			f.token = t.AccessToken
		}
		close(f.done)
	}()
	return f
}
