package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

const (
	testKeyID  = "KEY1234567"
	testTeamID = "TEAM123456"
	testTopic  = "com.example.app"
	testToken  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// signer is a provider's signing key: a tiny ES256 JWT signer.
type signer struct {
	kid, team string
	priv      *ecdsa.PrivateKey
}

func newSigner(t testing.TB, kid, team string) *signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{kid: kid, team: team, priv: priv}
}

func (s *signer) key() Key { return Key{TeamID: s.team, Public: &s.priv.PublicKey} }

// jwt is the token Apple expects, issued at iat.
func (s *signer) jwt(iat time.Time) string {
	return s.sign(fmt.Sprintf(`{"alg":"ES256","kid":%q}`, s.kid), fmt.Sprintf(`{"iss":%q,"iat":%d}`, s.team, iat.Unix()))
}

// sign signs arbitrary header and claims JSON: compact JWS, raw r||s.
func (s *signer) sign(header, claims string) string {
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	digest := sha256.Sum256([]byte(input))
	r, ss, err := ecdsa.Sign(rand.Reader, s.priv, digest[:])
	if err != nil {
		panic(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return input + "." + enc.EncodeToString(sig)
}

// fixture is a started emulator with one key and a client that trusts it.
type fixture struct {
	a      *APNs
	clock  *clock
	key    *signer
	client *http.Client

	mu      sync.Mutex
	token   string
	tokenAt int64
}

func start(t testing.TB, cfg Config) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), key: newSigner(t, testKeyID, testTeamID)}
	if cfg.Keys == nil {
		cfg.Keys = map[string]Key{testKeyID: f.key.key()}
	}
	if cfg.Now == nil {
		cfg.Now = f.clock.Now
	}
	f.a = New(cfg)
	if err := f.a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := f.a.StartSandbox("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.a.Close() })
	f.client = h2Client(t, f.a, false)
	return f
}

// h2Client is a plain net/http client over an x/net/http2 Transport, as a
// push provider would build it.
func h2Client(t testing.TB, a *APNs, strict bool) *http.Client {
	t.Helper()
	tr := &http2.Transport{
		TLSClientConfig:            &tls.Config{RootCAs: a.CertPool()},
		StrictMaxConcurrentStreams: strict,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// req is one provider API request; zero fields take working defaults.
type req struct {
	method  string
	path    string            // default /3/device/<token>
	token   string            // default testToken
	auth    string            // default a fresh JWT; "-" for none
	headers map[string]string // set; "" deletes the default; a "+" prefix adds a second value
	body    *string           // default a small alert payload
	sandbox bool
}

type resp struct {
	status     int
	reason     string
	timestamp  int64
	id         string
	retryAfter string
	err        error
}

// jwt is the fixture's provider token for the clock's time: one per
// second, as a provider shares one JWT (a new signature on the same
// connection is a token update).
func (f *fixture) jwt() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := f.clock.Now(); f.tokenAt != now.Unix() {
		f.token, f.tokenAt = "bearer "+f.key.jwt(now), now.Unix()
	}
	return f.token
}

func (f *fixture) do(t testing.TB, r req) resp {
	t.Helper()
	return doWith(t, f.client, f, r)
}

func doWith(t testing.TB, c *http.Client, f *fixture, r req) resp {
	t.Helper()
	base := f.a.URL()
	if r.sandbox {
		base = f.a.SandboxURL()
	}
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.token == "" {
		r.token = testToken
	}
	if r.path == "" {
		r.path = "/3/device/" + r.token
	}
	body := `{"aps":{"alert":{"title":"hi","body":"there"}}}`
	if r.body != nil {
		body = *r.body
	}
	hr, err := http.NewRequest(r.method, base+r.path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	switch r.auth {
	case "":
		hr.Header.Set("authorization", f.jwt())
	case "-":
	default:
		hr.Header.Set("authorization", r.auth)
	}
	hr.Header.Set("apns-topic", testTopic)
	hr.Header.Set("apns-push-type", "alert")
	for k, v := range r.headers {
		switch {
		case strings.HasPrefix(k, "+"):
			hr.Header.Add(k[1:], v)
		case v == "":
			hr.Header.Del(k)
		default:
			hr.Header.Set(k, v)
		}
	}
	return roundTrip(t, c, hr)
}

// roundTrip sends r and returns the status, the apns-id, Retry-After and
// the APNs reason; an error answer's body must be APNs JSON, a 200's empty.
func roundTrip(t testing.TB, c *http.Client, r *http.Request) resp {
	t.Helper()
	res, err := c.Do(r)
	if err != nil {
		return resp{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{err: err}
	}
	out := resp{status: res.StatusCode, id: res.Header.Get("apns-id"), retryAfter: res.Header.Get("retry-after")}
	if res.StatusCode != http.StatusOK {
		var v struct {
			Reason    string `json:"reason"`
			Timestamp int64  `json:"timestamp"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%d answer body %q is not APNs JSON: %v", res.StatusCode, b, err)
		}
		out.reason, out.timestamp = v.Reason, v.Timestamp
	} else if len(b) != 0 {
		t.Fatalf("200 answer has a body: %q", b)
	}
	return out
}

func (r resp) String() string {
	if r.err != nil {
		return "error " + r.err.Error()
	}
	if r.reason == "" {
		return fmt.Sprint(r.status)
	}
	return fmt.Sprintf("%d %s", r.status, r.reason)
}

func ptr(s string) *string { return &s }
