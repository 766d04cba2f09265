// Package token mints and verifies Herald login tokens. An app's backend
// holds the server secret and mints a token for a user when that user signs
// in to the app; the client passes it to Herald's login. It plays the role of
// ZIM's Token04: an HMAC-SHA256 signature over the user ID and the expiry.
//
// The secret is the server's token secret as text, used as its bytes:
// HERALD_SECRET's value, or the content of the data folder's secret file
// without its trailing newline. A generated secret file holds 64 hex
// digits, and those 64 characters are the secret (not the 32 bytes they
// encode):
//
//	b, _ := os.ReadFile("herald-data/secret")
//	tok, err := token.Mint([]byte(strings.TrimSpace(string(b))), "alice", time.Now(), time.Hour)
//
// Format: "h1." + base64url(JSON claims) + "." + base64url(HMAC-SHA256(secret, "h1." + claims)),
// with claims {"u": user ID, "iat": issued-at seconds, "exp": expiry seconds, "n": random nonce}.
package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/herald-im/herald"
)

// MaxTTL is the longest lifetime a token may have (ZIM's limit is 24 days).
const MaxTTL = 24 * 24 * time.Hour

// MaxClockSkew is how far in the future a token's issued-at time may lie
// and still be accepted: the backend that mints tokens runs on another
// machine, whose clock may be a little ahead of the server's. A token
// issued further ahead is not valid yet (not-before = iat).
const MaxClockSkew = time.Minute

// MinSecretLen is the shortest accepted secret, in bytes.
const MinSecretLen = 16

const prefix = "h1."

var enc = base64.RawURLEncoding

// Claims are what a token says.
type Claims struct {
	UserID    string    // whom the token logs in
	IssuedAt  time.Time // when it was minted
	ExpiresAt time.Time // when it stops being accepted
}

type wireClaims struct {
	U   string `json:"u"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
	N   string `json:"n"`
	K   string `json:"k,omitempty"` // "admin" for admin tokens, "fetch" for fetch tokens; absent for login tokens
}

const (
	kindAdmin = "admin"
	kindFetch = "fetch"
)

// kindName names a token kind in errors.
func kindName(kind string) string {
	switch kind {
	case "":
		return "a login token"
	case kindAdmin:
		return "an admin token"
	case kindFetch:
		return "a fetch token"
	}
	return "a token of unknown kind " + kind
}

// MaxFetchTTL is the longest lifetime of a fetch token.
const MaxFetchTTL = 7 * 24 * time.Hour

// MintFetch returns a fetch token for user, valid from now for ttl (at
// most MaxFetchTTL): the credential of an app's notification service
// extension (or Android service, or service worker) that fetches a
// message a content-free push named. It reads user's messages one at a
// time and does nothing else: it cannot log in, send, or call the admin
// API, and no login or admin token can fetch. The server mints one for a
// logged-in session (the fetch_token operation); an app's backend may mint
// one too.
func MintFetch(secret []byte, user string, now time.Time, ttl time.Duration) (string, error) {
	if ttl > MaxFetchTTL {
		return "", herald.Errorf(herald.CodeInvalidArgument, "ttl %s exceeds a fetch token's maximum %s", ttl, MaxFetchTTL)
	}
	return mint(secret, user, kindFetch, now, ttl)
}

// VerifyFetch checks a fetch token as Verify checks a login token and
// returns its claims; CodeTokenInvalid for any other kind of token, or
// one whose lifetime exceeds MaxFetchTTL.
func VerifyFetch(secret []byte, tok string, now time.Time) (Claims, error) {
	c, kind, err := verify(secret, tok, now)
	if err != nil {
		return Claims{}, err
	}
	if kind != kindFetch {
		return Claims{}, herald.Errorf(herald.CodeTokenInvalid, "token is %s, not a fetch token", kindName(kind))
	}
	if life := c.ExpiresAt.Sub(c.IssuedAt); life > MaxFetchTTL {
		return Claims{}, herald.Errorf(herald.CodeTokenInvalid, "fetch token lifetime %s exceeds the maximum %s", life, MaxFetchTTL)
	}
	return c, nil
}

// Mint returns a token for user valid from now for ttl.
func Mint(secret []byte, user string, now time.Time, ttl time.Duration) (string, error) {
	return mint(secret, user, "", now, ttl)
}

// MintAdmin returns a token for the server's admin API (herald push test,
// the delivery log), valid from now for ttl. It cannot log in as a user,
// and a login token cannot call the admin API.
func MintAdmin(secret []byte, now time.Time, ttl time.Duration) (string, error) {
	return mint(secret, kindAdmin, kindAdmin, now, ttl)
}

// VerifyAdmin checks an admin token as Verify checks a login token;
// CodeTokenInvalid for a login token.
func VerifyAdmin(secret []byte, tok string, now time.Time) error {
	_, kind, err := verify(secret, tok, now)
	if err == nil && kind != kindAdmin {
		return herald.Errorf(herald.CodeTokenInvalid, "token is %s, not an admin token", kindName(kind))
	}
	return err
}

// VerifyAdminClaims checks an admin token as VerifyAdmin does and returns
// its claims: the web console ends its session when the token expires.
func VerifyAdminClaims(secret []byte, tok string, now time.Time) (Claims, error) {
	c, kind, err := verify(secret, tok, now)
	if err == nil && kind != kindAdmin {
		return Claims{}, herald.Errorf(herald.CodeTokenInvalid, "token is %s, not an admin token", kindName(kind))
	}
	return c, err
}

func mint(secret []byte, user, kind string, now time.Time, ttl time.Duration) (string, error) {
	if len(secret) < MinSecretLen {
		return "", herald.Errorf(herald.CodeInvalidArgument, "secret is %d bytes; at least %d are needed", len(secret), MinSecretLen)
	}
	if err := herald.ValidateUserID(user); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", herald.Errorf(herald.CodeInvalidArgument, "ttl %s is out of range (0, %s]", ttl, MaxTTL)
	}
	var nonce [9]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", err
	}
	c := wireClaims{U: user, Iat: now.Unix(), Exp: now.Add(ttl).Unix(), N: enc.EncodeToString(nonce[:]), K: kind}
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := prefix + enc.EncodeToString(body)
	return signed + "." + enc.EncodeToString(sign(secret, signed)), nil
}

// Verify checks tok's signature and expiry at now and returns its claims.
// Errors: herald.CodeTokenMalformed (cannot be parsed), CodeTokenInvalid
// (signature does not match: forged, or minted with another secret),
// CodeTokenExpired (expiry passed). CodeTokenInvalid also for a token
// whose exp is not after its iat, whose exp - iat exceeds MaxTTL, or
// whose iat is more than MaxClockSkew ahead of now (not valid yet).
func Verify(secret []byte, tok string, now time.Time) (Claims, error) {
	c, kind, err := verify(secret, tok, now)
	if err == nil && kind != "" {
		return Claims{}, herald.Errorf(herald.CodeTokenInvalid, "token is %s, not a login token", kindName(kind))
	}
	return c, err
}

func verify(secret []byte, tok string, now time.Time) (Claims, string, error) {
	if !strings.HasPrefix(tok, prefix) {
		return Claims{}, "", herald.Errorf(herald.CodeTokenMalformed, "token does not start with %q", prefix)
	}
	dot := strings.LastIndexByte(tok, '.')
	if dot <= len(prefix) {
		return Claims{}, "", herald.Errorf(herald.CodeTokenMalformed, "token has no signature part")
	}
	signed, sigPart := tok[:dot], tok[dot+1:]
	body, err := enc.DecodeString(signed[len(prefix):])
	if err != nil {
		return Claims{}, "", herald.Errorf(herald.CodeTokenMalformed, "token claims are not base64url")
	}
	sig, err := enc.DecodeString(sigPart)
	if err != nil {
		return Claims{}, "", herald.Errorf(herald.CodeTokenMalformed, "token signature is not base64url")
	}
	var c wireClaims
	if err := json.Unmarshal(body, &c); err != nil || c.U == "" || c.Exp == 0 {
		return Claims{}, "", herald.Errorf(herald.CodeTokenMalformed, "token claims are not a valid object with u and exp")
	}
	if !hmac.Equal(sig, sign(secret, signed)) {
		return Claims{}, "", herald.Errorf(herald.CodeTokenInvalid, "token signature does not match this server's secret")
	}
	claims := Claims{UserID: c.U, IssuedAt: time.Unix(c.Iat, 0), ExpiresAt: time.Unix(c.Exp, 0)}
	// The lifetime cap holds only if iat is a real issue time: a token
	// whose exp is not after its iat (minted by hand with iat far ahead)
	// would otherwise pass any cap, and iat in the future makes a token
	// that cannot have been issued yet.
	if !claims.ExpiresAt.After(claims.IssuedAt) {
		return Claims{}, "", herald.Errorf(herald.CodeTokenInvalid, "token expires (exp %d) before it was issued (iat %d)", c.Exp, c.Iat)
	}
	if life := claims.ExpiresAt.Sub(claims.IssuedAt); life > MaxTTL {
		return Claims{}, "", herald.Errorf(herald.CodeTokenInvalid, "token lifetime %s exceeds the maximum %s", life, MaxTTL)
	}
	if ahead := claims.IssuedAt.Sub(now); ahead > MaxClockSkew {
		return Claims{}, "", herald.Errorf(herald.CodeTokenInvalid, "token is not valid yet: issued at %s, %s ahead of the server's clock (at most %s is allowed); check the minting backend's clock",
			claims.IssuedAt.UTC().Format(time.RFC3339), ahead.Truncate(time.Second), MaxClockSkew)
	}
	if !now.Before(claims.ExpiresAt) {
		return Claims{}, "", herald.Errorf(herald.CodeTokenExpired, "token expired at %s", claims.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return claims, c.K, nil
}

func sign(secret []byte, signed string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signed))
	return m.Sum(nil)
}
