// Package apns owns Herald's side of the Apple Push Notification service:
// the HTTP/2 provider API with token (.p8) or certificate (.p12) auth, one
// pool of long-lived connections per credential and environment, the JWT
// shared per signing key, the payload layout, and the mapping of APNs
// answers to push verdicts. It implements push.Provider for the apns and
// apns-voip device kinds. See README.md for the design.
package apns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// Default endpoints and limits.
const (
	DefaultProductionURL  = "https://api.push.apple.com"
	DefaultDevelopmentURL = "https://api.sandbox.push.apple.com"

	DefaultConnections  = 4
	DefaultTimeout      = 10 * time.Second
	MaxTimeout          = 5 * time.Minute
	DefaultTokenRefresh = 40 * time.Minute
	MinTokenRefresh     = 20 * time.Minute // APNs refuses refreshes more often than this (429 TooManyProviderTokenUpdates)
	MaxTokenRefresh     = 60 * time.Minute // APNs refuses tokens older than this (403 ExpiredProviderToken)
	MaxConnections      = 64

	// MaxPayload and MaxVoIPPayload are APNs' payload limits in bytes.
	MaxPayload     = 4096
	MaxVoIPPayload = 5120
	// MaxCollapseID is the limit of apns-collapse-id in bytes.
	MaxCollapseID = 64
)

// lateAnswerWait is how long a request's stream stays open after Send
// stopped waiting for its answer (Timeout). APNs may have taken the push:
// until the stream ends, a retry of it waits for that answer rather than
// send the push again. Then the stream is reset.
const lateAnswerWait = time.Minute

// ErrClosed is the Err of a Result from Send after Close.
var ErrClosed = errors.New("apns: provider is closed")

// AppConfig is one iOS app: its bundle ID and the credential that may push
// to it. Give exactly one kind of auth: token (TeamID, KeyID, Key) or
// certificate (Certificate, optionally DevelopmentCertificate).
type AppConfig struct {
	// BundleID is the app's bundle ID, the apns-topic. Wildcard ("*")
	// stands for every bundle ID not configured on its own: the device's
	// app is the topic. A .p8 key signs for every app of its team, so one
	// wildcard entry can serve them all.
	BundleID string

	// Token auth (.p8): the team ID, the key ID and the key (LoadP8).
	// Apps with the same TeamID and KeyID share one JWT.
	TeamID, KeyID string
	Key           *ecdsa.PrivateKey
	// KeyFile, when set, is the file Key was read from. Once APNs refuses
	// the key, the file is read again when it changes, so a corrected key
	// takes effect without a restart.
	KeyFile string

	// Certificate auth (.p12, LoadP12): Certificate is used for production,
	// and for development too unless DevelopmentCertificate is set.
	Certificate            *tls.Certificate
	DevelopmentCertificate *tls.Certificate

	// ProductionURL and DevelopmentURL are the APNs endpoints; empty means
	// DefaultProductionURL and DefaultDevelopmentURL. Set them for the
	// emulator or a proxy.
	ProductionURL, DevelopmentURL string

	// RootCAs verifies the APNs server; nil means the system roots.
	RootCAs *x509.CertPool
}

// Config configures a Provider.
type Config struct {
	Apps []AppConfig

	// Connections is the number of HTTP/2 connections per (credential,
	// environment); zero means 4, at most 64. Each carries as many
	// concurrent streams as APNs allows (SETTINGS_MAX_CONCURRENT_STREAMS,
	// typically 500 to 1500).
	Connections int

	// Timeout bounds one Send, including waiting for a connection or a free
	// stream, and one dial; zero means 10s, at most 5 min. A request not
	// answered by then comes back as Retry, but its stream stays open a
	// minute longer: a retry of the same push (same ID) waits for that
	// answer, and takes it, rather than send the push a second time.
	Timeout time.Duration

	// TokenRefresh is the age at which a JWT is replaced; zero means 40
	// minutes. It must be at least 20 minutes and under 60.
	TokenRefresh time.Duration

	// Now is the clock for JWT issue times and Retry-After dates; nil means
	// time.Now. Connection timing always uses the real clock.
	Now func() time.Time

	// Logger receives connection events and credential alarms; nil
	// discards. Keys or JWTs are never logged.
	Logger *slog.Logger

	// Shared keeps each signing key's JWT in the store's shared table:
	// a restarted provider (or a second one on the same store, or another
	// node) takes the JWT in use while it is younger than TokenRefresh,
	// and one node at a time replaces it (jwt.go). APNs answers a new JWT
	// of a key within 20 minutes of the last, or several in use at once,
	// with TooManyProviderTokenUpdates. Nil: the provider signs its own,
	// for keys that live no longer than the process (an emulator's).
	Shared TokenStore
}

// Provider sends pushes through APNs. It is safe for concurrent use.
type Provider struct {
	apps    map[string]*app
	pools   []*pool
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger
	stats   counters
	closed  atomic.Bool

	// late holds the requests not answered within timeout, by push ID,
	// whose streams stay open lateWait longer (send.go).
	late     lateAnswers
	lateWait time.Duration

	// Alarms logged at most once a minute, so a storm of answers does
	// not flood the log.
	tokenUpdatesAlarm, freshExpiredAlarm, goAwayAlarm push.Alarm
}

var _ push.Provider = (*Provider)(nil)

// app is one configured bundle ID with its routes.
type app struct {
	bundleID  string
	signer    *signer // nil for certificate auth
	prod, dev *pool
}

// New validates cfg and returns a Provider. It does no network I/O:
// connections are dialed on the first Send to each pool. Errors name the
// app and the field at fault.
func New(cfg Config) (*Provider, error) {
	if len(cfg.Apps) == 0 {
		return nil, errors.New("apns: no apps configured")
	}
	switch {
	case cfg.Connections < 0:
		return nil, fmt.Errorf("apns: Connections %d is negative", cfg.Connections)
	case cfg.Connections == 0:
		cfg.Connections = DefaultConnections
	case cfg.Connections > MaxConnections:
		return nil, fmt.Errorf("apns: Connections %d is over the limit of %d", cfg.Connections, MaxConnections)
	}
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("apns: Timeout %v is negative", cfg.Timeout)
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	case cfg.Timeout > MaxTimeout:
		return nil, fmt.Errorf("apns: Timeout %v is over the limit of %v", cfg.Timeout, MaxTimeout)
	}
	switch {
	case cfg.TokenRefresh == 0:
		cfg.TokenRefresh = DefaultTokenRefresh
	case cfg.TokenRefresh < MinTokenRefresh || cfg.TokenRefresh >= MaxTokenRefresh:
		return nil, fmt.Errorf("apns: TokenRefresh %v is out of range: at least %v and under %v", cfg.TokenRefresh, MinTokenRefresh, MaxTokenRefresh)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Provider{
		apps:    make(map[string]*app, len(cfg.Apps)),
		timeout: cfg.Timeout,
		now:     cfg.Now,
		log:     cfg.Logger.With("provider", "apns"),

		late:     lateAnswers{keep: lateKeep},
		lateWait: lateAnswerWait,
	}
	signers := map[string]*signer{}
	pools := map[poolKey]*pool{}
	// Roots are told apart by content, not by pointer: every app's ca_file
	// is loaded into a pool of its own, and apps that name the same
	// certificates must still share connections.
	var rootSets []*x509.CertPool
	rootsID := func(r *x509.CertPool) int {
		if r == nil {
			return 0 // the system roots
		}
		for i, known := range rootSets {
			if known.Equal(r) {
				return i + 1
			}
		}
		rootSets = append(rootSets, r)
		return len(rootSets)
	}
	for i := range cfg.Apps {
		ac := &cfg.Apps[i]
		name := fmt.Sprintf("apns: apps[%d] %q", i, ac.BundleID)
		if ac.BundleID != Wildcard {
			if err := validateBundleID(ac.BundleID); err != nil {
				return nil, fmt.Errorf("%s: BundleID %w", name, err)
			}
		}
		if _, dup := p.apps[ac.BundleID]; dup {
			return nil, fmt.Errorf("%s: BundleID is configured twice", name)
		}
		prodURL, err := parseEndpoint(ac.ProductionURL, DefaultProductionURL)
		if err != nil {
			return nil, fmt.Errorf("%s: ProductionURL %w", name, err)
		}
		devURL, err := parseEndpoint(ac.DevelopmentURL, DefaultDevelopmentURL)
		if err != nil {
			return nil, fmt.Errorf("%s: DevelopmentURL %w", name, err)
		}
		a := &app{bundleID: ac.BundleID}
		token := ac.TeamID != "" || ac.KeyID != "" || ac.Key != nil
		cert := ac.Certificate != nil || ac.DevelopmentCertificate != nil
		var prodCred, devCred credential
		switch {
		case token && cert:
			return nil, fmt.Errorf("%s: both token auth (TeamID, KeyID, Key) and certificate auth (Certificate) are set; give one", name)
		case !token && !cert:
			return nil, fmt.Errorf("%s: no credential: set TeamID, KeyID and Key (token auth) or Certificate (certificate auth)", name)
		case token:
			if err := validateAppleID(ac.TeamID); err != nil {
				return nil, fmt.Errorf("%s: TeamID %w", name, err)
			}
			if err := validateAppleID(ac.KeyID); err != nil {
				return nil, fmt.Errorf("%s: KeyID %w", name, err)
			}
			if err := validateKey(ac.Key); err != nil {
				return nil, fmt.Errorf("%s: Key %w", name, err)
			}
			id := ac.TeamID + "/" + ac.KeyID
			s := signers[id]
			if s == nil {
				s = &signer{teamID: ac.TeamID, keyID: ac.KeyID, key: ac.Key, refresh: cfg.TokenRefresh, now: cfg.Now, stats: &p.stats,
					shared: cfg.Shared, log: p.log, keyFile: ac.KeyFile}
				s.stampKeyFile()
				signers[id] = s
			} else if !s.key.Equal(ac.Key) {
				return nil, fmt.Errorf("%s: Key differs from the key of another app with TeamID %s and KeyID %s", name, ac.TeamID, ac.KeyID)
			} else if s.keyFile == "" && ac.KeyFile != "" {
				s.keyFile = ac.KeyFile
				s.stampKeyFile()
			}
			a.signer = s
			prodCred = credential{id: "token:" + id, label: "token " + id}
			devCred = prodCred
		default:
			if ac.Certificate == nil {
				return nil, fmt.Errorf("%s: Certificate is not set (DevelopmentCertificate alone is not enough: Certificate serves production)", name)
			}
			if prodCred, err = certCredential(ac.Certificate); err != nil {
				return nil, fmt.Errorf("%s: Certificate %w", name, err)
			}
			devCred = prodCred
			if ac.DevelopmentCertificate != nil {
				if devCred, err = certCredential(ac.DevelopmentCertificate); err != nil {
					return nil, fmt.Errorf("%s: DevelopmentCertificate %w", name, err)
				}
			}
			for _, c := range []credential{prodCred, devCred} {
				if time.Until(c.leaf.NotAfter) < 30*24*time.Hour {
					p.log.Warn("apns certificate expires soon or has expired", "app", ac.BundleID, "conn", c.label, "not_after", c.leaf.NotAfter)
				}
			}
		}
		get := func(cred credential, u *url.URL, env herald.PushEnvironment) *pool {
			k := poolKey{cred: cred.id, url: u.String(), env: env, roots: rootsID(ac.RootCAs)}
			if pl := pools[k]; pl != nil {
				return pl
			}
			pl := newPool(poolConfig{
				label: cred.label, env: env, url: u, cert: cred.cert, roots: ac.RootCAs,
				conns: cfg.Connections, timeout: cfg.Timeout, log: p.log, stats: &p.stats,
			})
			pools[k] = pl
			p.pools = append(p.pools, pl)
			return pl
		}
		a.prod = get(prodCred, prodURL, herald.EnvProduction)
		a.dev = get(devCred, devURL, herald.EnvDevelopment)
		p.apps[ac.BundleID] = a
	}
	return p, nil
}

// credential identifies what authenticates a pool's connections.
type credential struct {
	id    string           // token:TEAM/KEY or cert:<sha256 of the leaf>
	label string           // for logs: no secrets
	cert  *tls.Certificate // certificate auth only
	leaf  *x509.Certificate
}

// poolKey: each environment has its own pools, even where two share an
// endpoint (emulator, proxy), so nothing ever switches between them.
// roots numbers the distinct sets of trusted roots (0: the system's).
type poolKey struct {
	cred, url string
	env       herald.PushEnvironment
	roots     int
}

func certCredential(c *tls.Certificate) (credential, error) {
	if len(c.Certificate) == 0 {
		return credential{}, errors.New("has no certificate")
	}
	if c.PrivateKey == nil {
		return credential{}, errors.New("has no private key")
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return credential{}, fmt.Errorf("does not parse: %w", err)
		}
	}
	sum := sha256.Sum256(c.Certificate[0])
	fp := hex.EncodeToString(sum[:8])
	return credential{id: "cert:" + fp, label: "cert " + fp + " " + leaf.Subject.CommonName, cert: c, leaf: leaf}, nil
}

func validateBundleID(id string) error {
	if id == "" {
		return errors.New("is empty")
	}
	if len(id) > 155 {
		return fmt.Errorf("is %d bytes; the limit is 155", len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("has character %q; a bundle ID has letters, digits and .-_", c)
		}
	}
	if strings.HasSuffix(id, ".voip") {
		return errors.New("ends in .voip: give the app's bundle ID; the VoIP topic is derived from it")
	}
	return nil
}

// validateAppleID checks a team or key ID: Apple's are 10 letters and
// digits; any short alphanumeric string is accepted for emulators.
func validateAppleID(id string) error {
	if id == "" {
		return errors.New("is empty")
	}
	if len(id) > 64 {
		return fmt.Errorf("is %d bytes; the limit is 64", len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("has character %q; Apple's IDs are letters and digits", c)
		}
	}
	return nil
}

func validateKey(k *ecdsa.PrivateKey) error {
	if k == nil {
		return errors.New("is not set")
	}
	if k.Curve != elliptic.P256() {
		return errors.New("is not a P-256 key; APNs signs with ES256")
	}
	return nil
}

func parseEndpoint(s, def string) (*url.URL, error) {
	if s == "" {
		s = def
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("does not parse: %w", err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("%q is not an https URL", s)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%q must be scheme, host and port only", s)
	}
	if p := u.Port(); p != "" {
		if _, err := net.LookupPort("tcp", p); err != nil {
			return nil, fmt.Errorf("%q has a bad port", s)
		}
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// Wildcard as a BundleID configures every bundle ID not listed.
const Wildcard = "*"

// HasApp reports whether bundle ID app is configured (on its own or by a
// Wildcard entry).
func (p *Provider) HasApp(app string) bool {
	return p.app(app) != nil
}

// app returns the configuration that serves bundle ID id, or nil.
func (p *Provider) app(id string) *app {
	if a, ok := p.apps[id]; ok {
		return a
	}
	if validateBundleID(id) != nil {
		return nil
	}
	return p.apps[Wildcard]
}

// Close closes every connection, letting requests in flight finish for up
// to Timeout. Send after Close returns Retry with ErrClosed.
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	done := make(chan struct{}, len(p.pools))
	for _, pl := range p.pools {
		go func() { pl.close(); done <- struct{}{} }()
	}
	for range p.pools {
		<-done
	}
	return nil
}

// Stats are cumulative counters since New.
type Stats struct {
	push.VerdictCounts

	Resent       uint64 // requests resent on another connection because the first never reached APNs
	TokenRetries uint64 // requests resent with a new JWT after ExpiredProviderToken
	TokensSigned uint64 // JWTs signed (and, on several nodes, stored for the cluster)
	// On several nodes (Config.Shared): refreshes that lost the swap to
	// another node (its JWT is taken instead), and store calls that failed
	// or timed out (the node then kept its JWT, or signed one of its own).
	TokenSwapsLost      uint64
	TokenSharedFailures uint64
	Dials               uint64 // connections established
	DialErrors          uint64 // failed dials
	ConnsReplaced       uint64 // connections retired (GOAWAY, closed, Shutdown, IdleTimeout)
	// Pushes whose earlier attempt had gone unanswered within Timeout:
	// LateAnswers took that attempt's late answer instead of sending
	// again; LateWaits came back Retry because it was still open.
	LateAnswers, LateWaits uint64
}

type counters struct {
	push.VerdictCounter
	resent, tokenRetries, tokensSigned, dials, dialErrors, replaced atomic.Uint64
	tokenSwapsLost, tokenSharedFailures                             atomic.Uint64
	lateAnswers, lateWaits                                          atomic.Uint64
}

// Stats returns the counters.
func (p *Provider) Stats() Stats {
	c := &p.stats
	return Stats{
		VerdictCounts: c.Counts(),
		Resent:        c.resent.Load(), TokenRetries: c.tokenRetries.Load(), TokensSigned: c.tokensSigned.Load(),
		Dials: c.dials.Load(), DialErrors: c.dialErrors.Load(), ConnsReplaced: c.replaced.Load(),
		TokenSwapsLost: c.tokenSwapsLost.Load(), TokenSharedFailures: c.tokenSharedFailures.Load(),
		LateAnswers: c.lateAnswers.Load(), LateWaits: c.lateWaits.Load(),
	}
}
