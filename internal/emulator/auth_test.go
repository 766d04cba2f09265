package emulator

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestProviderTokens(t *testing.T) {
	f := start(t, Config{})
	now := f.clock.Now()
	other := newSigner(t, testKeyID, testTeamID) // same kid, another private key
	enc := base64.RawURLEncoding
	valid := f.key.jwt(now)
	parts := strings.Split(valid, ".")
	sig, _ := enc.DecodeString(parts[2])
	sig[10] ^= 1
	flipped := parts[0] + "." + parts[1] + "." + enc.EncodeToString(sig)
	claims := fmt.Sprintf(`{"iss":%q,"iat":%d}`, testTeamID, now.Unix())
	es256 := fmt.Sprintf(`{"alg":"ES256","kid":%q}`, testKeyID)
	unsigned := enc.EncodeToString([]byte(`{"alg":"none","kid":"`+testKeyID+`"}`)) + "." + enc.EncodeToString([]byte(claims)) + "."

	tests := []struct {
		name string
		jwt  string
		want string
	}{
		{"valid", valid, "200"},
		{"Bearer in capitals", "Bearer " + valid, "200"},
		{"issued 59 minutes ago", f.key.jwt(now.Add(-59 * time.Minute)), "200"},
		{"typ header allowed", f.key.sign(`{"alg":"ES256","kid":"`+testKeyID+`","typ":"JWT"}`, claims), "200"},
		{"bad signature", flipped, "403 InvalidProviderToken"},
		{"signed by another key", other.jwt(now), "403 InvalidProviderToken"},
		{"unknown kid", newSigner(t, "UNKNOWNKID", testTeamID).jwt(now), "403 InvalidProviderToken"},
		{"wrong team", f.key.sign(es256, fmt.Sprintf(`{"iss":"OTHERTEAM1","iat":%d}`, now.Unix())), "403 InvalidProviderToken"},
		{"expired", f.key.jwt(now.Add(-61 * time.Minute)), "403 ExpiredProviderToken"},
		{"iat in milliseconds", f.key.sign(es256, fmt.Sprintf(`{"iss":%q,"iat":%d}`, testTeamID, now.UnixMilli())), "403 InvalidProviderToken"},
		{"alg none", unsigned, "403 InvalidProviderToken"},
		{"alg none with a signature", f.key.sign(`{"alg":"none","kid":"`+testKeyID+`"}`, claims), "403 InvalidProviderToken"},
		{"alg HS256", f.key.sign(`{"alg":"HS256","kid":"`+testKeyID+`"}`, claims), "403 InvalidProviderToken"},
		{"alg ES384", f.key.sign(`{"alg":"ES384","kid":"`+testKeyID+`"}`, claims), "403 InvalidProviderToken"},
		{"alg in capitals", f.key.sign(`{"ALG":"ES256","kid":"`+testKeyID+`"}`, claims), "403 InvalidProviderToken"},
		{"alg twice", f.key.sign(`{"alg":"none","alg":"ES256","kid":"`+testKeyID+`"}`, claims), "403 InvalidProviderToken"},
		{"crit header", f.key.sign(`{"alg":"ES256","kid":"`+testKeyID+`","crit":["exp"]}`, claims), "403 InvalidProviderToken"},
		{"no kid", f.key.sign(`{"alg":"ES256"}`, claims), "403 InvalidProviderToken"},
		{"no iat", f.key.sign(es256, `{"iss":"`+testTeamID+`"}`), "403 InvalidProviderToken"},
		{"iat as string", f.key.sign(es256, fmt.Sprintf(`{"iss":%q,"iat":"%d"}`, testTeamID, now.Unix())), "403 InvalidProviderToken"},
		{"iat as float", f.key.sign(es256, fmt.Sprintf(`{"iss":%q,"iat":%d.0}`, testTeamID, now.Unix())), "403 InvalidProviderToken"},
		{"iss as number", f.key.sign(es256, fmt.Sprintf(`{"iss":123,"iat":%d}`, now.Unix())), "403 InvalidProviderToken"},
		{"claims not an object", f.key.sign(es256, `[1]`), "403 InvalidProviderToken"},
		{"two parts", parts[0] + "." + parts[1], "403 InvalidProviderToken"},
		{"four parts", valid + ".x", "403 InvalidProviderToken"},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2], "403 InvalidProviderToken"},
		{"DER signature", derSigned(t, f.key, es256, claims), "403 InvalidProviderToken"},
		{"empty", "", "403 InvalidProviderToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := tt.jwt
			if !strings.HasPrefix(auth, "Bearer ") {
				auth = "bearer " + auth
			}
			if tt.name == "empty" {
				auth = "bearer"
			}
			// A connection each: on one, every new token would be an update.
			if got := doWith(t, h2Client(t, f.a, false), f, req{auth: auth}); got.String() != tt.want {
				t.Errorf("answer = %s, want %s", got, tt.want)
			}
		})
	}
}

// derSigned signs with an ASN.1 DER signature, as crypto/ecdsa.SignASN1
// makes it: a common provider bug, refused by Apple.
func derSigned(t *testing.T, s *signer, header, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	digest := sha256.Sum256([]byte(input))
	sig, err := ecdsa.SignASN1(rand.Reader, s.priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + enc.EncodeToString(sig)
}

func TestTokenExpiresWithTheClock(t *testing.T) {
	f := start(t, Config{})
	jwt := f.jwt()
	if got := f.do(t, req{auth: jwt}); got.status != 200 {
		t.Fatalf("fresh token: %s, want 200", got)
	}
	f.clock.Add(61 * time.Minute)
	if got := f.do(t, req{auth: jwt}); got.String() != "403 ExpiredProviderToken" {
		t.Fatalf("same token 61 minutes later: %s, want 403 ExpiredProviderToken", got)
	}
}

func TestTokenRefreshRate(t *testing.T) {
	f := start(t, Config{})
	t0 := f.clock.Now()
	first := "bearer " + f.key.jwt(t0)
	second := "bearer " + f.key.jwt(t0.Add(21*time.Minute))
	steps := []struct {
		name    string
		advance time.Duration
		auth    string
		want    string
	}{
		{"first token", 0, first, "200"},
		{"first token again", time.Minute, first, "200"},
		{"another signature, same iat", 0, "bearer " + f.key.jwt(t0), "429 TooManyProviderTokenUpdates"},
		{"new token 10 minutes on", 9 * time.Minute, "bearer " + f.key.jwt(t0.Add(10*time.Minute)), "429 TooManyProviderTokenUpdates"},
		{"first token still good", 0, first, "200"},
		{"new token 21 minutes on", 11 * time.Minute, second, "200"},
		{"back to the first token", 0, first, "429 TooManyProviderTokenUpdates"},
		{"new token 5 minutes later", 5 * time.Minute, "bearer " + f.key.jwt(t0.Add(26*time.Minute)), "429 TooManyProviderTokenUpdates"},
		{"second token still good", 0, second, "200"},
	}
	for _, s := range steps {
		f.clock.Add(s.advance)
		if got := f.do(t, req{auth: s.auth}); got.String() != s.want {
			t.Errorf("%s: answer = %s, want %s", s.name, got, s.want)
		}
	}
	if n := f.a.Stats().Connections; n != 1 {
		t.Fatalf("%d connections, want all on one", n)
	}

	// Apple counts updates per connection: a restarted (or second)
	// server starts a new connection with a token of its own.
	restarted := h2Client(t, f.a, false)
	if got := doWith(t, restarted, f, req{auth: "bearer " + f.key.jwt(f.clock.Now())}); got.status != 200 {
		t.Errorf("new connection, new token: %s, want 200", got)
	}

	lenient := start(t, Config{AllowFrequentTokenRefresh: true})
	for i := range 5 {
		lenient.clock.Add(time.Minute)
		if got := lenient.do(t, req{}); got.status != 200 {
			t.Errorf("AllowFrequentTokenRefresh, refresh %d: answer = %s, want 200", i, got)
		}
	}
}

func TestVerifiedTokensAreCached(t *testing.T) {
	f := start(t, Config{})
	jwt := f.jwt()
	for range 10 {
		if got := f.do(t, req{auth: jwt}); got.status != 200 {
			t.Fatalf("answer = %s, want 200", got)
		}
	}
	if n := f.a.tokens.n.Load(); n != 1 {
		t.Errorf("%d tokens verified for one JWT string, want 1", n)
	}
}

func FuzzVerifyToken(f *testing.F) {
	s := newSigner(f, testKeyID, testTeamID)
	a := New(Config{Keys: map[string]Key{testKeyID: s.key()}})
	now := time.Unix(1_800_000_000, 0)
	f.Add("bearer " + s.jwt(now))
	f.Add("bearer " + s.sign(`{"alg":"none","kid":"`+testKeyID+`"}`, `{"iss":"x","iat":1}`))
	f.Add("bearer a.b.c")
	f.Add("bearer ..")
	f.Add("bearer eyJhbGciOiJFUzI1NiJ9..")
	f.Fuzz(func(t *testing.T, h string) {
		e := a.verifyToken(h)
		if e.reason == "" {
			// Accepted: it must be a well-formed ES256 JWT from our key.
			parts := strings.Split(strings.TrimPrefix(strings.ToLower(h[:7]), "bearer ")+h[7:], ".")
			if len(parts) != 3 || e.key == nil || e.key.id != testKeyID {
				t.Fatalf("accepted %q: %+v", h, e)
			}
		}
	})
}
