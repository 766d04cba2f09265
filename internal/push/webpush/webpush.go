// Package webpush owns Herald's side of Web Push: RFC 8030 requests to the
// push service named by each browser subscription, payloads encrypted with
// RFC 8291 (aes128gcm), VAPID (RFC 8292) signed with the server's key, the
// guard that keeps subscription URLs from reaching loopback or private
// addresses, the payload layout a service worker reads, and the mapping
// of push service answers to push verdicts. It implements push.Provider
// for the webpush device kind. See README.md for the design.
package webpush

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// Defaults.
const (
	DefaultTimeout = 10 * time.Second
	// Wildcard as an app serves every app.
	Wildcard = push.Wildcard
)

// ErrClosed is the Err of a Result from Send after Close.
var ErrClosed = errors.New("webpush: provider is closed")

// Config configures the provider.
type Config struct {
	// Subject is the VAPID "sub" claim: how a push service operator can
	// reach the server's operator, a "mailto:" or "https:" URL. Required.
	Subject string

	// Key is the VAPID key (P-256): LoadVAPIDKey or LoadOrCreateVAPIDKey.
	// Browsers subscribe with its public key (PublicKey), so changing it
	// orphans every subscription. Required.
	Key *ecdsa.PrivateKey

	// Apps are the app names (a web client's registered app) this provider
	// serves; empty, or one Wildcard, serves every app.
	Apps []string

	// AllowPrivateEndpoints lets subscriptions point at loopback, private,
	// link-local and unspecified addresses (a push service on the operator's
	// own network). Off by default: a subscription is a URL the server will
	// POST to, so anyone who can register one could otherwise make the
	// server reach its own network.
	AllowPrivateEndpoints bool

	// AllowAddrs are "ip:port" addresses allowed even though private (the
	// built-in emulator's). Only these exact addresses, not their networks.
	AllowAddrs []string

	// RootCAs verifies push services; nil means the system roots. Push
	// services are an open set (each browser vendor runs its own), so a
	// pool for production must hold the public roots too: add extra roots
	// to x509.SystemCertPool(), do not replace it.
	RootCAs *x509.CertPool

	// Timeout bounds one Send; zero means DefaultTimeout.
	Timeout time.Duration

	// Now is the clock for TTL and VAPID expiry; nil means time.Now.
	Now func() time.Time

	// Logger receives alarms (VAPID refused); nil discards them. Keys and
	// JWTs are never logged.
	Logger *slog.Logger
}

// Provider sends Web Push notifications. It is safe for concurrent use.
type Provider struct {
	apps      map[string]bool // nil: every app
	allowPriv bool
	allow     map[netip.AddrPort]bool
	timeout   time.Duration
	now       func() time.Time
	log       *slog.Logger
	vapid     vapid
	publicKey string
	client    *http.Client
	transport *http.Transport
	closed    atomic.Bool

	vapidAlarm originAlarms
}

// New checks cfg and returns a provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Key == nil {
		return nil, errors.New("webpush: no VAPID key")
	}
	if _, err := cfg.Key.PublicKey.ECDH(); err != nil {
		return nil, errors.New("webpush: the VAPID key is not a P-256 key")
	}
	if err := checkSubject(cfg.Subject); err != nil {
		return nil, err
	}
	p := &Provider{
		allowPriv: cfg.AllowPrivateEndpoints,
		allow:     make(map[netip.AddrPort]bool),
		timeout:   cfg.Timeout,
		now:       cfg.Now,
		log:       cfg.Logger,
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for _, a := range cfg.Apps {
		if a == Wildcard {
			p.apps = nil
			break
		}
		if p.apps == nil {
			p.apps = make(map[string]bool)
		}
		p.apps[a] = true
	}
	for _, a := range cfg.AllowAddrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return nil, fmt.Errorf("webpush: allowed address %q is not ip:port", a)
		}
		p.allow[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
	}
	pub := publicKeyBytes(cfg.Key)
	p.publicKey = base64.RawURLEncoding.EncodeToString(pub)
	p.vapid = vapid{key: cfg.Key, k: p.publicKey, subject: cfg.Subject, now: p.now, tokens: make(map[string]vapidToken)}
	dialer := &net.Dialer{Timeout: p.timeout, KeepAlive: 30 * time.Second, Control: p.dialControl}
	p.transport = &http.Transport{
		Proxy:               nil, // the guard checks the address dialled: a proxy would hide it
		DialContext:         dialer.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
		// Until its first HTTP/2 connection to a host is up, the transport
		// dials one connection per waiting request (golang/go#13957): a
		// burst of TLS handshakes per push service at start. This bounds
		// the dials in progress per host.
		MaxConnsPerHost:     2,
		IdleConnTimeout:     5 * time.Minute,
		TLSHandshakeTimeout: p.timeout,
	}
	p.client = &http.Client{
		Transport: p.transport,
		// A push service does not redirect a push; following one would
		// let a subscription aim the server elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p, nil
}

func checkSubject(s string) error {
	switch {
	case s == "":
		return errors.New("webpush: subject is empty: give a mailto: or https: URL where push services can reach the operator (RFC 8292)")
	case strings.HasPrefix(s, "mailto:") && len(s) > len("mailto:"):
	case strings.HasPrefix(s, "https://") && len(s) > len("https://"):
	default:
		return fmt.Errorf("webpush: subject %q is not a mailto: or https: URL (RFC 8292)", s)
	}
	return nil
}

// originAlarms keeps a flood of one failure to one log line a minute per
// push service origin: any user can register a subscription at a server of
// their own that refuses every push, and that must neither drown nor
// silence the alarm about a real push service.
type originAlarms struct {
	mu   sync.Mutex
	last map[string]time.Time // by origin; guarded by mu; at most maxAlarmOrigins
}

// maxAlarmOrigins bounds the origins remembered: when full of origins that
// alarmed within the minute, a new origin's alarm waits for one to age out.
const maxAlarmOrigins = 256

func (a *originAlarms) allow(origin string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.last[origin]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if a.last == nil {
		a.last = make(map[string]time.Time)
	}
	if len(a.last) >= maxAlarmOrigins {
		for o, t := range a.last {
			if now.Sub(t) >= time.Minute {
				delete(a.last, o)
			}
		}
		if len(a.last) >= maxAlarmOrigins {
			return false
		}
	}
	a.last[origin] = now
	return true
}

// PublicKey is the VAPID public key, base64url (no padding): the
// applicationServerKey a web client passes to pushManager.subscribe.
func (p *Provider) PublicKey() string { return p.publicKey }

// HasApp reports whether app is served.
func (p *Provider) HasApp(app string) bool { return p.apps == nil || p.apps[app] }

// CheckToken refuses, with CodeInvalidArgument naming the endpoint, a
// subscription whose endpoint host is "localhost" or a loopback, private,
// link-local or unspecified IP literal, unless the operator allows it. It
// does not resolve names: the dialer checks every address at send time.
func (p *Provider) CheckToken(token, app string) error {
	s, err := herald.ParseWebPushSubscription(token)
	if err != nil {
		return err
	}
	u, _ := url.Parse(s.Endpoint) // parsed above
	return p.checkHost(u)
}

func (p *Provider) checkHost(u *url.URL) error {
	if p.allowPriv {
		return nil
	}
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = "443"
	}
	if h := strings.ToLower(strings.TrimSuffix(host, ".")); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return herald.Errorf(herald.CodeInvalidArgument, "endpoint host %q is loopback: a push service must be reachable on the internet (the server allows private endpoints only with webpush allow_private_endpoints)", host)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil // a name: resolved and checked when dialled
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(ip.Unmap().String(), port))
	if err == nil && p.allow[ap] {
		return nil
	}
	if why := privateWhy(ip); why != "" {
		return herald.Errorf(herald.CodeInvalidArgument, "endpoint address %s is %s: a push service must be reachable on the internet (the server allows private endpoints only with webpush allow_private_endpoints)", host, why)
	}
	return nil
}

// privateWhy says why ip may not be dialled, "" when it may. Only global
// unicast addresses outside the special-purpose ranges pass. An IPv6
// address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64
// 64:ff9b::/96, 6to4 2002::/16) reaches that IPv4 address, so it is judged
// by it too.
func privateWhy(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsMulticast():
		return "multicast"
	case !ip.IsGlobalUnicast():
		return "not a global unicast address"
	case ip.IsPrivate():
		return "private"
	}
	for _, r := range specialRanges {
		if r.prefix.Contains(ip) {
			return r.why
		}
	}
	if v4, how := embeddedIPv4(ip); how != "" {
		if why := privateWhy(v4); why != "" {
			return fmt.Sprintf("%s (%s %s)", why, how, v4)
		}
	}
	return ""
}

// specialRanges are special-purpose ranges (IANA's registries) that
// netip's predicates do not cover and that no push service is on.
var specialRanges = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (0.0.0.0/8)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (100.64.0.0/10)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments (192.0.0.0/24)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation (192.0.2.0/24)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking (198.18.0.0/15)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation (198.51.100.0/24)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation (203.0.113.0/24)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (240.0.0.0/4)"},
	{netip.MustParsePrefix("fec0::/10"), "site-local (fec0::/10)"},
	{netip.MustParsePrefix("100::/64"), "discard-only (100::/64)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation (2001:db8::/32)"},
	// The local-use NAT64 prefix (RFC 8215) is the operator's own
	// translator, and where its IPv4 address sits depends on the prefix
	// length the operator chose: refused whole.
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 (64:ff9b:1::/48)"},
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
	v4compat  = netip.MustParsePrefix("::/96")
)

// embeddedIPv4 returns the IPv4 address an IPv6 address ip reaches through
// a translation or tunnel prefix, and the prefix's name; "" when none.
func embeddedIPv4(ip netip.Addr) (netip.Addr, string) {
	if !ip.Is6() {
		return netip.Addr{}, ""
	}
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "NAT64 to"
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4 to"
	case v4compat.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "IPv4-compatible"
	}
	return netip.Addr{}, ""
}

// errPrivate is the dial guard's refusal.
type errPrivate struct {
	addr netip.AddrPort
	why  string
}

func (e *errPrivate) Error() string {
	return fmt.Sprintf("endpoint address %s is %s: refused (webpush allow_private_endpoints)", e.addr, e.why)
}

// dialControl runs for every address the transport dials, after name
// resolution: it is the guard that a name resolving to a private address
// (or rebinding to one after registration) cannot pass.
func (p *Provider) dialControl(network, address string, _ syscall.RawConn) error {
	if p.allowPriv {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webpush: dialling %q: not an ip:port", address)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if p.allow[ap] {
		return nil
	}
	if why := privateWhy(ap.Addr()); why != "" {
		return &errPrivate{addr: ap, why: why}
	}
	return nil
}

// Close releases idle connections; Send after Close fails with ErrClosed.
func (p *Provider) Close() error {
	p.closed.Store(true)
	p.transport.CloseIdleConnections()
	return nil
}

// compile-time checks
var (
	_ push.Provider     = (*Provider)(nil)
	_ push.TokenChecker = (*Provider)(nil)
)
