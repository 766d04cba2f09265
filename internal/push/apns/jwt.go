package apns

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// minRenewAge is how young a JWT may be and still be replaced after an
// ExpiredProviderToken answer. A younger token is not re-signed: APNs
// answers 429 TooManyProviderTokenUpdates to refreshes more often than
// every 20 minutes, and a fresh token called expired means a wrong clock,
// which a new signature would not fix.
const minRenewAge = time.Minute

// signer holds the one JWT of a signing key (TeamID, KeyID), shared by
// every app, connection and goroutine using that key.
type signer struct {
	teamID, keyID string
	key           *ecdsa.PrivateKey
	refresh       time.Duration
	now           func() time.Time
	stats         *counters

	cur atomic.Pointer[jwt] // read without locking on every request
	mu  sync.Mutex          // serialises signing
}

type jwt struct {
	bearer string // "bearer <jwt>": the authorization header value
	iat    time.Time
}

// bearer returns the authorization header value, signing a new JWT when
// the current one is TokenRefresh old.
func (s *signer) bearer() (string, error) {
	if t := s.cur.Load(); t != nil && s.now().Sub(t.iat) < s.refresh {
		return t.bearer, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.cur.Load(); t != nil && s.now().Sub(t.iat) < s.refresh {
		return t.bearer, nil
	}
	return s.signLocked()
}

// renew is called after APNs answered ExpiredProviderToken to a request
// that carried used. It returns the value to retry with: the current JWT
// if another request already replaced used, used itself if it is younger
// than minRenewAge (the caller then gives up), or a newly signed one.
func (s *signer) renew(used string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.cur.Load(); t != nil && (t.bearer != used || s.now().Sub(t.iat) < minRenewAge) {
		return t.bearer, nil
	}
	return s.signLocked()
}

// signLocked signs a JWT issued now. s.mu must be held.
func (s *signer) signLocked() (string, error) {
	iat := s.now().Truncate(time.Second)
	tok, err := signES256(s.key, s.keyID, s.teamID, iat.Unix())
	if err != nil {
		return "", err
	}
	t := &jwt{bearer: "bearer " + tok, iat: iat}
	s.cur.Store(t)
	s.stats.tokensSigned.Add(1)
	return t.bearer, nil
}

// signES256 returns the compact JWT {"alg":"ES256","kid":kid}.{"iss":iss,"iat":iat}.
// kid and iss are letters and digits (New checks), so they need no escaping.
func signES256(key *ecdsa.PrivateKey, kid, iss string, iat int64) (string, error) {
	enc := base64.RawURLEncoding
	header := `{"alg":"ES256","kid":"` + kid + `"}`
	claims := `{"iss":"` + iss + `","iat":` + strconv.FormatInt(iat, 10) + `}`
	buf := make([]byte, 0, enc.EncodedLen(len(header))+enc.EncodedLen(len(claims))+2+enc.EncodedLen(64))
	buf = enc.AppendEncode(buf, []byte(header))
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, []byte(claims))
	digest := sha256.Sum256(buf)
	r, sv, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", err
	}
	// JWS wants the raw r||s, each left-padded to 32 bytes, not ASN.1.
	var sig [64]byte
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig[:])
	return string(buf), nil
}
