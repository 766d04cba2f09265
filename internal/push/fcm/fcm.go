// Package fcm owns Herald's side of Firebase Cloud Messaging's HTTP v1 API:
// service-account credentials per Firebase project, the OAuth2 access
// token each project shares between all workers, the Android message
// layout, and the mapping of FCM answers to push verdicts. It implements
// push.Provider for the fcm device kind. See README.md for the design.
package fcm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"

	"github.com/herald-im/herald/internal/push"
)

// Default endpoint and limits.
const (
	DefaultURL = "https://fcm.googleapis.com"

	// Scope is the OAuth2 scope an access token needs to send messages.
	Scope = "https://www.googleapis.com/auth/firebase.messaging"

	DefaultTimeout      = 10 * time.Second
	DefaultRefreshAhead = 5 * time.Minute

	// MaxPayload is FCM's limit on a message's payload, in bytes. Render
	// holds the whole rendered message (everything but the token, the TTL
	// and the priority) to it, which is stricter than FCM's count.
	MaxPayload = 4096

	// MaxTTL is the longest time FCM keeps a message for an offline
	// device: four weeks.
	MaxTTL = 28 * 24 * time.Hour
)

// Wildcard as an app serves every package name no other project lists.
const Wildcard = push.Wildcard

// ErrClosed is the Err of a Result from Send after Close.
var ErrClosed = errors.New("fcm: provider is closed")

// ProjectConfig is one Firebase project: its service account and the
// Android apps (package names) it sends to.
type ProjectConfig struct {
	// ServiceAccount is the service-account JSON key file's content, as
	// the Firebase console hands it out. Its token_uri is where access
	// tokens are fetched (Google's, or the emulator's).
	ServiceAccount []byte

	// ProjectID overrides the account's project_id: the project whose
	// messages:send is called. Empty: the account's.
	ProjectID string

	// Apps are the package names this project serves; Wildcard serves
	// every package name no other project lists.
	Apps []string

	// URL is the FCM endpoint, scheme, host and port; empty means
	// DefaultURL. Set it for the emulator or a proxy.
	URL string

	// RootCAs verifies the FCM endpoint and the token endpoint; nil means
	// the system roots. Projects with the same RootCAs share one
	// transport (the usual case: one for the whole provider).
	RootCAs *x509.CertPool
}

// Config configures a Provider.
type Config struct {
	Projects []ProjectConfig

	// Timeout bounds one Send, including fetching an access token; zero
	// means 10s.
	Timeout time.Duration

	// RefreshAhead is how long before its expiry an access token is
	// replaced; zero means 5 minutes. Google's tokens live an hour.
	RefreshAhead time.Duration

	// Now is the clock for token expiry, TTLs and Retry-After dates; nil
	// means time.Now.
	Now func() time.Time

	// Logger receives credential alarms; nil discards. Service-account
	// keys and access tokens are never logged.
	Logger *slog.Logger
}

// Provider sends pushes through FCM. It is safe for concurrent use.
type Provider struct {
	apps     push.Apps[*project] // by package name, Wildcard included
	projects []*project
	timeout  time.Duration
	now      func() time.Time
	log      *slog.Logger
	stats    counters
	closed   atomic.Bool

	ctx    context.Context // token fetches; cancelled by Close
	cancel context.CancelFunc

	transports []*http.Transport

	credAlarm, thirdPartyAlarm push.Alarm
}

var _ push.Provider = (*Provider)(nil)

// project is one configured Firebase project.
type project struct {
	id       string // the project ID in the send URL
	account  string // client_email, for logs
	sendURL  string // <URL>/v1/projects/<id>/messages:send
	client   *http.Client
	tokens   *push.TokenCache
	jwt      *jwt.Config
	tokenCli *http.Client // for the token endpoint: Timeout set
	urlAlarm push.Alarm   // a 404 without an FCM error: the URL is wrong
}

// New validates cfg and returns a Provider. It does no network I/O: the
// first Send to a project fetches its access token. Errors name the
// project and the field at fault, never a key.
func New(cfg Config) (*Provider, error) {
	if len(cfg.Projects) == 0 {
		return nil, errors.New("fcm: no projects configured")
	}
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("fcm: Timeout %v is negative", cfg.Timeout)
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.RefreshAhead < 0 || cfg.RefreshAhead >= 30*time.Minute:
		return nil, fmt.Errorf("fcm: RefreshAhead %v is out of range: at least 0 and under 30m", cfg.RefreshAhead)
	case cfg.RefreshAhead == 0:
		cfg.RefreshAhead = DefaultRefreshAhead
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Provider{
		apps:    make(push.Apps[*project]),
		timeout: cfg.Timeout,
		now:     cfg.Now,
		log:     cfg.Logger.With("provider", "fcm"),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	// One transport per RootCAs: HTTP/2, connections kept open.
	transports := map[*x509.CertPool]*http.Transport{}
	transport := func(roots *x509.CertPool) *http.Transport {
		if tr := transports[roots]; tr != nil {
			return tr
		}
		tr := newTransport(roots, cfg.Timeout)
		transports[roots] = tr
		p.transports = append(p.transports, tr)
		return tr
	}
	ids := map[string]bool{}
	for i := range cfg.Projects {
		pc := &cfg.Projects[i]
		sa, err := ParseServiceAccount(pc.ServiceAccount)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("fcm: projects[%d]: ServiceAccount %w", i, err)
		}
		id := pc.ProjectID
		if id == "" {
			id = sa.ProjectID
		}
		name := fmt.Sprintf("fcm: projects[%d] %q", i, id)
		if err := validateProjectID(id); err != nil {
			p.Close()
			return nil, fmt.Errorf("%s: project ID %w", name, err)
		}
		base, err := parseEndpoint(pc.URL, DefaultURL)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("%s: URL %w", name, err)
		}
		if len(pc.Apps) == 0 {
			p.Close()
			return nil, fmt.Errorf("%s: no apps: list the package names it serves, or %q", name, Wildcard)
		}
		jc, err := google.JWTConfigFromJSON(pc.ServiceAccount, Scope)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("%s: ServiceAccount %w", name, err)
		}
		tr := transport(pc.RootCAs)
		pr := &project{
			id:       id,
			account:  sa.ClientEmail,
			sendURL:  base + "/v1/projects/" + url.PathEscape(id) + "/messages:send",
			client:   &http.Client{Transport: tr, CheckRedirect: noRedirect},
			jwt:      jc,
			tokenCli: &http.Client{Transport: ctxTransport{p.ctx, tr}, Timeout: cfg.Timeout, CheckRedirect: noRedirect},
		}
		pr.tokens = push.NewTokenCache(p.ctx, cfg.Timeout, cfg.Now, cfg.RefreshAhead, p.fetcher(pr))
		if ids[id+" "+base] {
			p.log.Warn("fcm project configured twice with one endpoint: each entry fetches its own token", "project", id)
		}
		ids[id+" "+base] = true
		for _, app := range pc.Apps {
			if app != Wildcard {
				if err := push.ValidatePackageName(app); err != nil {
					p.Close()
					return nil, fmt.Errorf("%s: app %q %w", name, app, err)
				}
			}
			if _, dup := p.apps[app]; dup {
				p.Close()
				return nil, fmt.Errorf("%s: app %q is served by another project too", name, app)
			}
			p.apps[app] = pr
		}
		p.projects = append(p.projects, pr)
	}
	return p, nil
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func newTransport(roots *x509.CertPool, timeout time.Duration) *http.Transport {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: timeout,
		MaxIdleConnsPerHost: 64, // HTTP/1.1 only (a proxy that does not speak h2)
		IdleConnTimeout:     5 * time.Minute,
		DisableCompression:  true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second, // ping a silent connection ...
			PingTimeout:     15 * time.Second, // ... and drop it if the ping goes unanswered
		},
	}
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return tr
}

// ctxTransport ends its requests when ctx ends, whatever context they
// carry: x/oauth2's JWT exchange posts with http.Client.PostForm, which
// carries none, so without it Close could not stop a token request in
// flight (tokenCli's Timeout still applies: it cancels the request's own
// context, which the merged one follows).
type ctxTransport struct {
	ctx context.Context
	rt  http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(t.ctx, cancel)
	done := func() { stop(); cancel() }
	resp, err := t.rt.RoundTrip(r.WithContext(ctx))
	if err != nil {
		done()
		return nil, err
	}
	resp.Body = &doneBody{ReadCloser: resp.Body, done: done}
	return resp, nil
}

// doneBody runs done once the body is closed: the request's context lives
// as long as its body is read.
type doneBody struct {
	io.ReadCloser
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// fetcher returns pr's token fetch: one JWT-bearer exchange at the
// account's token_uri, bounded by Timeout and ended by Close (tokenCli's
// transport carries the provider's context to the request).
func (p *Provider) fetcher(pr *project) func(context.Context) (string, time.Duration, error) {
	return func(ctx context.Context) (string, time.Duration, error) {
		realStart := time.Now()
		// A fresh TokenSource each time: its own cache would hand back
		// the token the server just refused. push.TokenCache caches instead.
		t, err := pr.jwt.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, pr.tokenCli)).Token()
		switch {
		case err != nil:
			p.stats.tokenErrors.Add(1)
			return "", 0, err
		case t.AccessToken == "":
			p.stats.tokenErrors.Add(1)
			return "", 0, errors.New("the token endpoint answered no access_token")
		}
		p.stats.tokensFetched.Add(1)
		// oauth2 dates the expiry on the real clock; the lifetime carries
		// over to the injected one.
		life := time.Hour
		if !t.Expiry.IsZero() {
			life = t.Expiry.Sub(realStart)
		}
		return t.AccessToken, life, nil
	}
}

// HasApp reports whether package name app is served by a project (on its
// own or by a Wildcard entry).
func (p *Provider) HasApp(app string) bool { return p.project(app) != nil }

// Credential names the Firebase project that serves app
// (push.CredentialScoper): a refused key suspends all its apps.
func (p *Provider) Credential(app string) string {
	if pr := p.project(app); pr != nil {
		return "project " + pr.id
	}
	return ""
}

func (p *Provider) project(app string) *project {
	pr, _ := p.apps.Lookup(app)
	return pr
}

// Close ends token fetches in flight (their waiting Sends return Retry)
// and closes idle connections; message requests in flight finish (each
// bounded by Timeout). Send after Close returns Retry
// with ErrClosed.
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.cancel()
	for _, tr := range p.transports {
		tr.CloseIdleConnections()
	}
	return nil
}

// Stats are cumulative counters since New.
type Stats struct {
	push.VerdictCounts

	TokensFetched uint64 // access tokens fetched from token_uri
	TokenErrors   uint64 // failed fetches
	TokenRetries  uint64 // requests resent with a new access token after 401
}

type counters struct {
	push.VerdictCounter
	tokensFetched, tokenErrors, tokenRetries atomic.Uint64
}

// Stats returns the counters.
func (p *Provider) Stats() Stats {
	c := &p.stats
	return Stats{
		VerdictCounts: c.Counts(),
		TokensFetched: c.tokensFetched.Load(), TokenErrors: c.tokenErrors.Load(), TokenRetries: c.tokenRetries.Load(),
	}
}

func parseEndpoint(s, def string) (string, error) {
	if s == "" {
		s = def
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("does not parse: %w", err)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("%q is not an https URL", s)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("%q has no host", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q must be scheme, host and port only", s)
	}
	return "https://" + u.Host, nil
}

// validateProjectID checks a Firebase project ID: lower-case letters,
// digits and hyphens (Google's rule), at most 64 bytes here.
func validateProjectID(id string) error {
	if id == "" {
		return errors.New("is empty")
	}
	if len(id) > 64 {
		return fmt.Errorf("is %d bytes; the limit is 64", len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("has character %q; a project ID has lower-case letters, digits and hyphens", c)
		}
	}
	return nil
}
