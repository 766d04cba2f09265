package webpush

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// VAPID (RFC 8292): each request carries
//
//	Authorization: vapid t=<ES256 JWT>, k=<the server's public key, base64url>
//
// with the claims aud (the endpoint's origin), exp (at most 24 hours
// ahead) and sub (a contact: mailto: or https:). A JWT depends only on the
// origin, so one is signed per push service origin and shared by every
// worker until it nears expiry.
const (
	// jwtLifetime is how long a signed JWT is valid; push services refuse
	// more than 24 hours.
	jwtLifetime = 12 * time.Hour
	// jwtRenewBefore: a JWT with less than this left is signed again, so a
	// request in flight never carries an expired one.
	jwtRenewBefore = time.Hour
)

// LoadVAPIDKey reads a VAPID key: a PEM "EC PRIVATE KEY" (SEC1, as
// `openssl ecparam -name prime256v1 -genkey` writes) or "PRIVATE KEY"
// (PKCS#8) block holding a P-256 key. Errors name the file and never
// include key material.
func LoadVAPIDKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("webpush: VAPID key: %w", err)
	}
	key, err := parseVAPIDKey(data)
	if err != nil {
		return nil, fmt.Errorf("webpush: VAPID key %s: %w", path, err)
	}
	return key, nil
}

// LoadOrCreateVAPIDKey reads the VAPID key at path, or, when there is no
// file, generates one and writes it there (mode 0600): the server's
// identity towards push services, which every subscription is bound to,
// so it must survive restarts.
func LoadOrCreateVAPIDKey(path string) (key *ecdsa.PrivateKey, created bool, err error) {
	key, err = LoadVAPIDKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, false, err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	// Written whole and synced under a temporary name, then linked into
	// place: a crash never leaves a partial key at path (which would stop
	// the next start, and lose every subscription with it), and link fails
	// when the name exists, so two servers starting on one data folder do
	// not each keep their own key: the loser reads the winner's.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".vapid-*.tmp")
	if err != nil {
		return nil, false, fmt.Errorf("webpush: writing the VAPID key: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if errors.Is(err, fs.ErrExist) {
		key, err = LoadVAPIDKey(path)
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("webpush: writing the VAPID key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() // the new name survives a power cut
		d.Close()
	}
	return key, true, nil
}

func parseVAPIDKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block: expected -----BEGIN EC PRIVATE KEY----- (a P-256 key)")
	}
	var key any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q; expected EC PRIVATE KEY or PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("the %s block does not parse", block.Type)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("the key is not an ECDSA P-256 key (VAPID signs with ES256)")
	}
	return ek, nil
}

// publicKeyBytes is key's public point, uncompressed (65 bytes): the
// applicationServerKey browsers subscribe with.
func publicKeyBytes(key *ecdsa.PrivateKey) []byte {
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		panic("webpush: VAPID key is not on P-256") // parseVAPIDKey checked the curve
	}
	return pub.Bytes()
}

// vapid signs and caches the JWT of each origin.
type vapid struct {
	key     *ecdsa.PrivateKey
	k       string // base64url public key
	subject string
	now     func() time.Time

	mu     sync.Mutex // guards tokens; signing happens under it, once per origin per renewal
	tokens map[string]vapidToken
}

type vapidToken struct {
	header string // the whole Authorization value
	exp    time.Time
}

// authorization returns the Authorization header for origin
// ("https://host[:port]").
func (v *vapid) authorization(origin string) (string, error) {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if t, ok := v.tokens[origin]; ok && now.Before(t.exp.Add(-jwtRenewBefore)) {
		return t.header, nil
	}
	exp := now.Add(jwtLifetime).Truncate(time.Second)
	jwt, err := signJWT(v.key, origin, v.subject, exp)
	if err != nil {
		return "", err
	}
	h := "vapid t=" + jwt + ", k=" + v.k
	if len(v.tokens) > 10000 { // origins are few (a handful of push services); bound a hostile spread anyway
		clear(v.tokens)
	}
	v.tokens[origin] = vapidToken{header: h, exp: exp}
	return h, nil
}

// signJWT makes the ES256 JWT of RFC 8292 §2.
func signJWT(key *ecdsa.PrivateKey, aud, sub string, exp time.Time) (string, error) {
	claims, err := json.Marshal(struct {
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
		Sub string `json:"sub"`
	}{aud, exp.Unix(), sub})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(jwtHeader)
	b.WriteByte('.')
	b.WriteString(base64.RawURLEncoding.EncodeToString(claims))
	sum := sha256.Sum256([]byte(b.String()))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", fmt.Errorf("webpush: signing the VAPID JWT: %w", err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	b.WriteByte('.')
	b.WriteString(base64.RawURLEncoding.EncodeToString(sig[:]))
	return b.String(), nil
}

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","alg":"ES256"}`))
