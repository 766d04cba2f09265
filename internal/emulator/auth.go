package emulator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Provider-token rules, as Apple states them.
const (
	tokenMaxAge      = time.Hour        // older: 403 ExpiredProviderToken
	tokenMinRefresh  = 20 * time.Minute // sooner: 429 TooManyProviderTokenUpdates
	tokenFutureSkew  = 5 * time.Minute  // an iat further ahead is malformed (milliseconds?)
	maxAuthorization = 2048             // longer authorization headers are not APNs JWTs
	maxCachedTokens  = 4096             // verified-JWT cache size before it is emptied
	reasonNoError    = ""
	bearerPrefix     = "bearer "
)

// keyState is one configured signing key.
type keyState struct {
	id string
	Key
}

// tokenEntry is the verdict on one authorization header value; a JWT
// string is verified once. Immutable.
type tokenEntry struct {
	h      string    // the authorization header value
	key    *keyState // nil when rejected
	reason string    // permanent rejection (403 reason), "" when the signature verified
	iat    int64
}

// tokenCache maps authorization header values to verdicts. It is emptied
// when it grows past maxCachedTokens: a well-behaved provider uses one JWT
// per key per 20-60 minutes, so this only bounds misbehaving ones.
type tokenCache struct {
	m sync.Map // string -> *tokenEntry
	n atomic.Int64
}

func (c *tokenCache) get(s string) (*tokenEntry, bool) {
	e, ok := c.m.Load(s)
	if !ok {
		return nil, false
	}
	return e.(*tokenEntry), true
}

func (c *tokenCache) put(s string, e *tokenEntry) *tokenEntry {
	if c.n.Add(1) > maxCachedTokens {
		c.m.Clear()
		c.n.Store(1)
	}
	got, _ := c.m.LoadOrStore(s, e)
	return got.(*tokenEntry)
}

// authToken checks an authorization header value, sent on c at time now,
// and returns the key it names, or the status and reason to answer.
func (a *APNs) authToken(c *conn, h string, now time.Time) (*tokenEntry, int, string) {
	e, ok := a.tokens.get(h)
	if !ok {
		e = a.verifyToken(h)
		if e.reason == reasonNoError {
			e.h = h
		}
		e = a.tokens.put(h, e)
	}
	if e.reason != reasonNoError {
		return nil, http403, e.reason
	}
	sec := now.Unix()
	if sec-e.iat > int64(tokenMaxAge/time.Second) {
		return nil, http403, ExpiredProviderToken
	}
	if e.iat-sec > int64(tokenFutureSkew/time.Second) {
		return nil, http403, InvalidProviderToken
	}
	if cur := c.token.Load(); cur != e && (cur == nil || cur.h != e.h) && !c.updateToken(e) {
		return nil, http429, TooManyProviderTokenUpdates
	}
	return e, 0, ""
}

// updateToken makes e the connection's provider token, unless that is too
// soon. Apple counts token updates per connection (a new connection may
// start with a new token: a restarted or second server): a connection's
// token may be replaced by one issued at least tokenMinRefresh after it.
// Another signature, or another key's token, is an update too: one JWT per
// key, shared by every worker, is what Apple asks for.
func (c *conn) updateToken(e *tokenEntry) bool {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	cur := c.token.Load()
	if cur != nil && cur.h != e.h && !c.a.cfg.AllowFrequentTokenRefresh && e.iat-cur.iat < int64(tokenMinRefresh/time.Second) {
		return false
	}
	c.token.Store(e)
	return true
}

var rawURL = base64.RawURLEncoding.Strict()

// verifyToken parses and verifies "bearer <JWT>" against the configured
// keys. Only the compact JWS form with alg ES256 and a raw 64-byte r||s
// signature is accepted, as Apple requires.
func (a *APNs) verifyToken(h string) *tokenEntry {
	bad := &tokenEntry{reason: InvalidProviderToken}
	if len(h) > maxAuthorization || len(h) < len(bearerPrefix) || !strings.EqualFold(h[:len(bearerPrefix)], bearerPrefix) {
		return bad
	}
	tok := h[len(bearerPrefix):]
	dot1 := strings.IndexByte(tok, '.')
	if dot1 < 0 {
		return bad
	}
	dot2 := strings.IndexByte(tok[dot1+1:], '.')
	if dot2 < 0 {
		return bad
	}
	dot2 += dot1 + 1
	if strings.IndexByte(tok[dot2+1:], '.') >= 0 {
		return bad
	}
	headerJSON, err1 := rawURL.DecodeString(tok[:dot1])
	claimsJSON, err2 := rawURL.DecodeString(tok[dot1+1 : dot2])
	sig, err3 := rawURL.DecodeString(tok[dot2+1:])
	if err1 != nil || err2 != nil || err3 != nil || len(sig) != 64 {
		return bad
	}

	header, ok := jsonMembers(headerJSON)
	if !ok {
		return bad
	}
	// Only ES256: "none" and every other algorithm are refused before a
	// key is looked at. A crit header names extensions we do not know.
	alg, okAlg := jsonString(header["alg"])
	kid, okKid := jsonString(header["kid"])
	if !okAlg || alg != "ES256" || !okKid || header["crit"] != nil {
		return bad
	}
	k := a.keys[kid]
	if k == nil || k.Public == nil {
		return bad
	}

	digest := sha256.Sum256([]byte(tok[:dot2]))
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(k.Public, digest[:], r, s) {
		return bad
	}

	claims, ok := jsonMembers(claimsJSON)
	if !ok {
		return bad
	}
	if iss, ok := jsonString(claims["iss"]); !ok || iss != k.TeamID {
		return bad
	}
	// iat: an integer number of seconds, not a string, float or exponent.
	iat, err := strconv.ParseInt(string(claims["iat"]), 10, 64)
	if err != nil || iat <= 0 {
		return bad
	}
	return &tokenEntry{key: k, iat: iat}
}

// jsonMembers splits a JSON object into its members, matching names
// exactly (encoding/json's struct decoding folds case) and refusing
// duplicate names and trailing data.
func jsonMembers(b []byte) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	m := make(map[string]json.RawMessage, 4)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, ok := t.(string)
		if !ok {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if _, dup := m[name]; dup {
			return nil, false
		}
		m[name] = v
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return m, true
}

// jsonString decodes a JSON string value; ok is false for any other kind.
func jsonString(v json.RawMessage) (string, bool) {
	if len(v) == 0 || v[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// Apple push certificate extensions: which environments a certificate
// may connect to.
var (
	oidAppleDevelopment = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 1}
	oidAppleProduction  = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 2}
	oidUID              = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
)

// certificateTopic returns the bundle ID a client certificate pushes to
// (its subject UID, else its common name) and the environments it is
// for. A certificate without Apple's environment extensions, as test
// certificates are, is good for both.
func certificateTopic(cert *x509.Certificate) (topic string, dev, prod bool) {
	for _, n := range cert.Subject.Names {
		if n.Type.Equal(oidUID) {
			if s, ok := n.Value.(string); ok {
				topic = s
			}
		}
	}
	if topic == "" {
		topic = cert.Subject.CommonName
	}
	for _, ext := range cert.Extensions {
		switch {
		case ext.Id.Equal(oidAppleDevelopment):
			dev = true
		case ext.Id.Equal(oidAppleProduction):
			prod = true
		}
	}
	if !dev && !prod {
		dev, prod = true, true
	}
	return topic, dev, prod
}

// topicAllowed reports whether topic is bundle or one of its suffixed
// topics (bundle.voip, bundle.complication ...).
func topicAllowed(bundle, topic string) bool {
	if topic == bundle {
		return true
	}
	if !strings.HasPrefix(topic, bundle) {
		return false
	}
	rest := topic[len(bundle):]
	for _, t := range pushTypes {
		if t.suffix != "" && rest == t.suffix {
			return true
		}
	}
	return false
}
