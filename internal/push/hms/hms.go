// Package hms owns Herald's side of Huawei Push Kit: the OAuth 2.0 client
// credentials exchange (one access token per app, cached, shared by every
// worker, refreshed before it expires), the message layout
// (messages:send with one token per request), and the mapping of Huawei's
// result codes to push verdicts. It implements push.Provider for the hms
// device kind. See README.md for the design.
package hms

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/internal/push"
)

// Default endpoints and limits.
const (
	DefaultTokenURL = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
	DefaultPushURL  = "https://push-api.cloud.huawei.com"

	DefaultTimeout       = 10 * time.Second
	DefaultRefreshBefore = 5 * time.Minute

	// MaxPayload is Huawei's limit on a message, in bytes: the message
	// object less its token list.
	MaxPayload = 4096
	// MaxTTL is the longest time Huawei keeps a message for an offline
	// device: 15 days.
	MaxTTL = 15 * 24 * time.Hour
)

// Wildcard as a package name serves every package not listed.
const Wildcard = push.Wildcard

// ErrClosed is the Err of a Result from Send after Close.
var ErrClosed = errors.New("hms: provider is closed")

// AppConfig is one Huawei app (AppGallery Connect): its ID and secret,
// and the Android package names it serves.
type AppConfig struct {
	AppID     string
	AppSecret string // never logged
	// Packages are the package names whose devices this app pushes to
	// (a device's App); Wildcard serves every package not listed.
	Packages []string
	// BadgeClass is the app's entry activity (full class name), which
	// Huawei requires to set a badge; empty: pushes carry no badge.
	BadgeClass string
	// TokenURL and PushURL override Config's for this app; empty: Config's.
	TokenURL, PushURL string
	// RootCAs verifies this app's endpoints; nil means Config's. Apps
	// with the same roots share one transport; an app's roots never
	// apply to another app (one app behind a proxy or on the emulator
	// must not make the others distrust Huawei's real certificates).
	RootCAs *x509.CertPool
}

// Config configures a Provider.
type Config struct {
	Apps []AppConfig
	// TokenURL is the OAuth 2.0 token endpoint; empty means
	// DefaultTokenURL. PushURL is the push API's scheme and host (a path
	// prefix allowed, for the emulator or a proxy); empty means
	// DefaultPushURL. Sends go to PushURL/v1/{appId}/messages:send.
	TokenURL, PushURL string
	// RootCAs verifies both endpoints of every app that sets none of its
	// own; nil means the system roots.
	RootCAs *x509.CertPool
	// Timeout bounds one Send, an access token request included; zero
	// means 10s.
	Timeout time.Duration
	// RefreshBefore is how long before its expiry an access token is
	// replaced; zero means 5 minutes.
	RefreshBefore time.Duration
	// Now is the clock for token expiry and TTLs; nil means time.Now.
	Now func() time.Time
	// Logger receives credential alarms; nil discards. Secrets and access
	// tokens are never logged.
	Logger *slog.Logger
}

// Provider sends pushes through Huawei Push Kit. It is safe for concurrent
// use.
type Provider struct {
	apps    push.Apps[*app] // by package name
	trs     []*http.Transport
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger
	stats   counters
	closed  atomic.Bool
	// ctx bounds access token requests, which outlive the Send that
	// started them (other workers wait for them); Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ push.Provider = (*Provider)(nil)

// app is one configured Huawei app.
type app struct {
	id         string
	badgeClass string
	sendURL    string
	client     *http.Client // for both endpoints: the app's roots
	tokens     *push.TokenCache
	urlAlarm   push.Alarm // a 404 without a result code: the URL is wrong
}

// New validates cfg and returns a Provider. It does no network I/O.
// Errors name the app and the field at fault, never the secret.
func New(cfg Config) (*Provider, error) {
	if len(cfg.Apps) == 0 {
		return nil, errors.New("hms: no apps configured")
	}
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("hms: Timeout %v is negative", cfg.Timeout)
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.RefreshBefore < 0:
		return nil, fmt.Errorf("hms: RefreshBefore %v is negative", cfg.RefreshBefore)
	case cfg.RefreshBefore == 0:
		cfg.RefreshBefore = DefaultRefreshBefore
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tokenURL, err := parseURL(cfg.TokenURL, DefaultTokenURL, true)
	if err != nil {
		return nil, fmt.Errorf("hms: TokenURL %w", err)
	}
	pushURL, err := parseURL(cfg.PushURL, DefaultPushURL, false)
	if err != nil {
		return nil, fmt.Errorf("hms: PushURL %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Provider{
		apps:    push.Apps[*app]{},
		timeout: cfg.Timeout,
		now:     cfg.Now,
		log:     cfg.Logger.With("provider", "hms"),
		ctx:     ctx,
		cancel:  cancel,
	}
	// One client per set of roots: HTTP/2, connections kept open.
	clients := map[*x509.CertPool]*http.Client{}
	client := func(roots *x509.CertPool) *http.Client {
		if c := clients[roots]; c != nil {
			return c
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ForceAttemptHTTP2 = true
		tr.MaxIdleConnsPerHost = 64
		tr.IdleConnTimeout = 90 * time.Second
		tr.DisableCompression = true
		if roots != nil {
			tr.TLSClientConfig.RootCAs = roots
		}
		p.trs = append(p.trs, tr)
		c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		clients[roots] = c
		return c
	}
	ids := map[string]bool{}
	for i, ac := range cfg.Apps {
		name := fmt.Sprintf("hms: apps[%d] %q", i, ac.AppID)
		if err := validateAppID(ac.AppID); err != nil {
			cancel()
			return nil, fmt.Errorf("%s: AppID %w", name, err)
		}
		if ids[ac.AppID] {
			cancel()
			return nil, fmt.Errorf("%s: AppID is configured twice", name)
		}
		ids[ac.AppID] = true
		if ac.AppSecret == "" {
			cancel()
			return nil, fmt.Errorf("%s: AppSecret is empty", name)
		}
		if len(ac.Packages) == 0 {
			cancel()
			return nil, fmt.Errorf("%s: Packages is empty: name the package names it serves (or %q)", name, Wildcard)
		}
		appTokenURL, appPushURL := tokenURL, pushURL
		if ac.TokenURL != "" {
			if appTokenURL, err = parseURL(ac.TokenURL, "", true); err != nil {
				cancel()
				return nil, fmt.Errorf("%s: TokenURL %w", name, err)
			}
		}
		if ac.PushURL != "" {
			if appPushURL, err = parseURL(ac.PushURL, "", false); err != nil {
				cancel()
				return nil, fmt.Errorf("%s: PushURL %w", name, err)
			}
		}
		roots := ac.RootCAs
		if roots == nil {
			roots = cfg.RootCAs
		}
		a := &app{
			id: ac.AppID, badgeClass: ac.BadgeClass, client: client(roots),
			sendURL: appPushURL + "/v1/" + url.PathEscape(ac.AppID) + "/messages:send",
		}
		src := &tokenSource{p: p, client: a.client, url: appTokenURL, appID: ac.AppID, secret: ac.AppSecret}
		a.tokens = push.NewTokenCache(ctx, cfg.Timeout, cfg.Now, cfg.RefreshBefore, src.fetch)
		for _, pkg := range ac.Packages {
			if pkg != Wildcard {
				if err := push.ValidatePackageName(pkg); err != nil {
					cancel()
					return nil, fmt.Errorf("%s: package %q %w", name, pkg, err)
				}
			}
			if other, dup := p.apps[pkg]; dup {
				cancel()
				return nil, fmt.Errorf("%s: package %q is also served by app %q", name, pkg, other.id)
			}
			p.apps[pkg] = a
		}
	}
	return p, nil
}

func validateAppID(id string) error {
	if id == "" {
		return errors.New("is empty")
	}
	if len(id) > 64 {
		return fmt.Errorf("is %d bytes; the limit is 64", len(id))
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < '0' || c > '9' {
			return fmt.Errorf("has character %q; Huawei app IDs are digits (AppGallery Connect > Project settings > App ID)", c)
		}
	}
	return nil
}

func parseURL(s, def string, withPath bool) (string, error) {
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
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q must have no query, fragment or user", s)
	}
	if withPath {
		return u.String(), nil
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// HasApp reports whether package name app is served (on its own or by a
// Wildcard entry).
func (p *Provider) HasApp(app string) bool { return p.app(app) != nil }

// Credential names the Huawei app that serves package pkg
// (push.CredentialScoper): a refused secret suspends all its packages.
func (p *Provider) Credential(pkg string) string {
	if a := p.app(pkg); a != nil {
		return "app " + a.id
	}
	return ""
}

// maxBadgeClass is the longest badge class of any app: Render sizes with
// it for a device of no app (the size check before a message is
// accepted), so a message that passes fits every app's badge.
func (p *Provider) maxBadgeClass() string {
	longest := ""
	for _, a := range p.apps {
		if len(a.badgeClass) > len(longest) {
			longest = a.badgeClass
		}
	}
	return longest
}

func (p *Provider) app(pkg string) *app {
	a, _ := p.apps.Lookup(pkg)
	return a
}

// Close ends token requests in flight and closes idle connections. Send
// after Close returns Retry with ErrClosed.
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.cancel()
	for _, tr := range p.trs {
		tr.CloseIdleConnections()
	}
	return nil
}

// Stats are cumulative counters since New.
type Stats struct {
	push.VerdictCounts

	TokenRequests uint64 // access token requests made
	TokenRetries  uint64 // sends repeated with a new access token after 80200003, 80200001 or a bare 401
}

type counters struct {
	push.VerdictCounter
	tokenRequests, tokenRetries atomic.Uint64
}

// Stats returns the counters.
func (p *Provider) Stats() Stats {
	c := &p.stats
	return Stats{
		VerdictCounts: c.Counts(),
		TokenRequests: c.tokenRequests.Load(), TokenRetries: c.tokenRetries.Load(),
	}
}
