package apns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// apnsServer is a stand-in for APNs in tests: an HTTP/2 TLS server that
// checks the request shape, verifies the JWT against the app's public key,
// records what it got, and answers as respond says.
type apnsServer struct {
	t   *testing.T
	srv *httptest.Server
	// keys verifies JWTs by kid; empty means no token auth expected.
	keys map[string]*ecdsa.PublicKey
	// respond picks the answer; nil means 200.
	respond func(r *http.Request, got *received) reply

	// noRecord keeps requests out of reqs (benchmarks).
	noRecord bool

	mu       sync.Mutex
	reqs     []received
	verified map[string]received // JWT checks by authorization value: ES256 verification is slow
	conns    atomic.Int64        // TCP connections accepted
}

type received struct {
	Path, Topic, PushType, Priority, Expiration, ID, CollapseID string
	Auth                                                        string // the authorization header
	Kid, Iss                                                    string // from the verified JWT
	Iat                                                         int64
	ClientCN                                                    string // the TLS client certificate's CN
	Remote                                                      string
	Body                                                        []byte
}

type reply struct {
	status int
	body   string
	header map[string]string
}

func newServer(t testing.TB, configure func(s *httptest.Server)) *apnsServer {
	t.Helper()
	a := &apnsServer{keys: map[string]*ecdsa.PublicKey{}, verified: map[string]received{}}
	if tt, ok := t.(*testing.T); ok {
		a.t = tt
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.srv.EnableHTTP2 = true
	a.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			a.conns.Add(1)
		}
	}
	a.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake noise from tests that break connections
	if configure != nil {
		configure(a.srv)
	}
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

func (a *apnsServer) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.srv.Certificate())
	return p
}

func (a *apnsServer) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, reason string) {
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"reason":%q}`, reason)
	}
	if r.ProtoMajor != 2 {
		fail(400, "NotHTTP2")
		return
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/3/device/") {
		fail(404, "BadPath")
		return
	}
	body, _ := io.ReadAll(r.Body)
	got := received{
		Path: r.URL.Path, Topic: r.Header.Get("apns-topic"), PushType: r.Header.Get("apns-push-type"),
		Priority: r.Header.Get("apns-priority"), Expiration: r.Header.Get("apns-expiration"),
		ID: r.Header.Get("apns-id"), CollapseID: r.Header.Get("apns-collapse-id"),
		Auth: r.Header.Get("authorization"), Remote: r.RemoteAddr, Body: body,
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		got.ClientCN = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if len(a.keys) > 0 {
		a.mu.Lock()
		v, ok := a.verified[got.Auth]
		a.mu.Unlock()
		if !ok {
			kid, iss, iat, err := verifyJWT(got.Auth, a.keys)
			if err != nil {
				if a.t != nil {
					a.t.Errorf("server: bad JWT: %v", err)
				}
				fail(403, "InvalidProviderToken")
				return
			}
			v = received{Kid: kid, Iss: iss, Iat: iat}
			a.mu.Lock()
			a.verified[got.Auth] = v
			a.mu.Unlock()
		}
		got.Kid, got.Iss, got.Iat = v.Kid, v.Iss, v.Iat
	} else if got.Auth != "" {
		fail(403, "UnexpectedAuthorization")
		return
	}
	if !a.noRecord {
		a.mu.Lock()
		a.reqs = append(a.reqs, got)
		a.mu.Unlock()
	}
	ans := reply{status: 200}
	if a.respond != nil {
		ans = a.respond(r, &got)
	}
	for k, v := range ans.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("apns-id", got.ID)
	w.WriteHeader(ans.status)
	io.WriteString(w, ans.body)
}

func (a *apnsServer) received() []received {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]received(nil), a.reqs...)
}

// verifyJWT checks "bearer <jwt>" independently of the signer: header,
// claims and the raw r||s ES256 signature.
func verifyJWT(auth string, keys map[string]*ecdsa.PublicKey) (kid, iss string, iat int64, err error) {
	tok, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		return "", "", 0, fmt.Errorf("authorization %q is not a bearer token", auth)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", "", 0, fmt.Errorf("JWT has %d parts", len(parts))
	}
	dec := base64.RawURLEncoding
	hb, err1 := dec.DecodeString(parts[0])
	cb, err2 := dec.DecodeString(parts[1])
	sig, err3 := dec.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return "", "", 0, fmt.Errorf("JWT is not base64url")
	}
	var h map[string]any
	var c map[string]any
	if err := json.Unmarshal(hb, &h); err != nil {
		return "", "", 0, fmt.Errorf("header: %v", err)
	}
	if err := json.Unmarshal(cb, &c); err != nil {
		return "", "", 0, fmt.Errorf("claims: %v", err)
	}
	if len(h) != 2 || h["alg"] != "ES256" {
		return "", "", 0, fmt.Errorf("header %s", hb)
	}
	kid, _ = h["kid"].(string)
	iss, _ = c["iss"].(string)
	iatf, _ := c["iat"].(float64)
	if len(c) != 2 || iss == "" || iatf == 0 {
		return "", "", 0, fmt.Errorf("claims %s", cb)
	}
	pub := keys[kid]
	if pub == nil {
		return "", "", 0, fmt.Errorf("unknown kid %q", kid)
	}
	if len(sig) != 64 {
		return "", "", 0, fmt.Errorf("signature is %d bytes, want 64", len(sig))
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return "", "", 0, fmt.Errorf("signature does not verify")
	}
	return kid, iss, int64(iatf), nil
}

// clock is an injected test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// tokenApp is an app with token auth against srv (both environments).
func tokenApp(bundle string, srv *apnsServer, key *ecdsa.PrivateKey) AppConfig {
	srv.keys["KEY1234567"] = &key.PublicKey
	return AppConfig{
		BundleID: bundle, TeamID: "TEAM123456", KeyID: "KEY1234567", Key: key,
		ProductionURL: srv.srv.URL, DevelopmentURL: srv.srv.URL, RootCAs: srv.roots(),
	}
}

func newProvider(t testing.TB, cfg Config) *Provider {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// quickRedial makes every connection of p count as one that lasted, so an
// ended connection is redialed at once, without backoff: for tests that
// end connections on purpose, many times.
func quickRedial(p *Provider) {
	for _, pl := range p.pools {
		pl.healthy = 0
	}
}

// tokenHex returns a 64-digit device token ending in i.
func tokenHex(i int) string { return fmt.Sprintf("%064x", i) }

func note(app string, env herald.PushEnvironment, token string) *push.Notification {
	return &push.Notification{
		ID:      "123e4567-e89b-12d3-a456-426614174000",
		Device:  herald.PushDevice{Provider: herald.ProviderAPNs, App: app, Env: env, Token: token},
		Type:    push.TypeAlert,
		Payload: []byte(`{"aps":{"alert":{"title":"hi"}}}`),
	}
}

// selfSigned returns a client certificate with common name cn.
func selfSigned(t testing.TB, cn string) (*tls.Certificate, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, cert, key
}
