package token

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestMintVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tok, err := Mint(secret, "alice", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(secret, tok, now.Add(59*time.Minute))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.UserID != "alice" || !c.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("claims = %+v, want alice expiring %v", c, now.Add(time.Hour))
	}

	forged := tok[:len(tok)-2] + "AA"
	tampered := strings.Replace(tok, tok[3:10], "eyJ1Ijoi", 1)
	tests := []struct {
		name string
		tok  string
		sec  []byte
		at   time.Time
		want herald.Code
	}{
		{"expired", tok, secret, now.Add(time.Hour), herald.CodeTokenExpired},
		{"forged signature", forged, secret, now, herald.CodeTokenInvalid},
		{"other secret", tok, []byte("ffffffffffffffffffffffffffffffff"), now, herald.CodeTokenInvalid},
		{"tampered claims", tampered, secret, now, herald.CodeTokenMalformed},
		{"empty", "", secret, now, herald.CodeTokenMalformed},
		{"no signature", "h1.abc", secret, now, herald.CodeTokenMalformed},
		{"bad base64", "h1.***.***", secret, now, herald.CodeTokenMalformed},
		{"wrong prefix", "x" + tok, secret, now, herald.CodeTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(tt.sec, tt.tok, tt.at)
			if got := herald.ErrorCode(err); got != tt.want {
				t.Errorf("Verify error = %v (code %q), want code %q", err, got, tt.want)
			}
		})
	}
}

func TestMintRejects(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		secret []byte
		user   string
		ttl    time.Duration
	}{
		{"short secret", []byte("short"), "alice", time.Hour},
		{"bad user", secret, "al ice", time.Hour},
		{"zero ttl", secret, "alice", 0},
		{"ttl too long", secret, "alice", MaxTTL + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Mint(tt.secret, tt.user, now, tt.ttl); herald.ErrorCode(err) != herald.CodeInvalidArgument {
				t.Errorf("Mint error = %v, want invalid_argument", err)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	tok, _ := Mint(secret, "alice", time.Unix(1_700_000_000, 0), time.Hour)
	f.Add(tok)
	f.Add("h1..")
	f.Add("h1.e30.")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Verify(secret, s, time.Unix(1_700_000_000, 0))
		if err == nil && c.UserID == "" {
			t.Fatalf("accepted token with empty user: %q", s)
		}
		if err != nil && herald.ErrorCode(err) == herald.CodeInternal {
			t.Fatalf("internal error for %q: %v", s, err)
		}
	})
}

func TestVerifyRejectsOverlongLifetime(t *testing.T) {
	// A backend in another language may mint by hand; the server still holds
	// tokens to the documented maximum lifetime.
	now := time.Unix(1_700_000_000, 0)
	body, _ := json.Marshal(wireClaims{U: "alice", Iat: now.Unix(), Exp: now.Add(MaxTTL + time.Hour).Unix(), N: "x"})
	signed := prefix + enc.EncodeToString(body)
	tok := signed + "." + enc.EncodeToString(sign(secret, signed))
	if _, err := Verify(secret, tok, now); herald.ErrorCode(err) != herald.CodeTokenInvalid {
		t.Errorf("Verify = %v, want token_invalid", err)
	}
}

func TestAdminTokensAreNotLoginTokens(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	now := time.Unix(1_800_000_000, 0)
	admin, err := MintAdmin(secret, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyAdmin(secret, admin, now); err != nil {
		t.Errorf("VerifyAdmin(admin token) = %v, want nil", err)
	}
	if _, err := Verify(secret, admin, now); herald.ErrorCode(err) != herald.CodeTokenInvalid {
		t.Errorf("Verify(admin token) = %v, want %s", err, herald.CodeTokenInvalid)
	}
	login, err := Mint(secret, "admin", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyAdmin(secret, login, now); herald.ErrorCode(err) != herald.CodeTokenInvalid {
		t.Errorf("VerifyAdmin(login token for user admin) = %v, want %s", err, herald.CodeTokenInvalid)
	}
	if err := VerifyAdmin(secret, admin, now.Add(time.Hour)); herald.ErrorCode(err) != herald.CodeTokenExpired {
		t.Errorf("VerifyAdmin(expired) = %v, want %s", err, herald.CodeTokenExpired)
	}
	if err := VerifyAdmin([]byte("another-secret-0123456"), admin, now); herald.ErrorCode(err) != herald.CodeTokenInvalid {
		t.Errorf("VerifyAdmin(other secret) = %v, want %s", err, herald.CodeTokenInvalid)
	}
}

// handMinted signs claims as a backend minting by hand would: Mint
// itself never writes these.
func handMinted(c wireClaims) string {
	body, _ := json.Marshal(c)
	signed := prefix + enc.EncodeToString(body)
	return signed + "." + enc.EncodeToString(sign(secret, signed))
}

func TestVerifyRefusesImpossibleIssueTimes(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name    string
		iat     time.Time
		exp     time.Time
		want    herald.Code
		wantMsg string
	}{
		// iat after exp made exp - iat negative, under any cap: a token
		// valid for years passed the 576 h check.
		{"iat after exp", now.Add(10 * 365 * 24 * time.Hour), now.Add(5 * 365 * 24 * time.Hour), herald.CodeTokenInvalid, "before it was issued"},
		{"iat equals exp", now.Add(time.Hour), now.Add(time.Hour), herald.CodeTokenInvalid, "before it was issued"},
		{"issued in the future", now.Add(time.Hour), now.Add(2 * time.Hour), herald.CodeTokenInvalid, "not valid yet"},
		{"issued just past the skew", now.Add(MaxClockSkew + time.Second), now.Add(time.Hour), herald.CodeTokenInvalid, "not valid yet"},
		{"issued within the skew", now.Add(MaxClockSkew), now.Add(time.Hour), "", ""},
		{"issued now", now, now.Add(time.Hour), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := handMinted(wireClaims{U: "alice", Iat: tt.iat.Unix(), Exp: tt.exp.Unix(), N: "x"})
			_, err := Verify(secret, tok, now)
			if got := herald.ErrorCode(err); err != nil && got != tt.want || err == nil && tt.want != "" {
				t.Fatalf("Verify = %v (code %q), want code %q", err, got, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Verify error = %q, want it to say %q", err, tt.wantMsg)
			}
			// Admin tokens are checked by the same code.
			adm := handMinted(wireClaims{U: kindAdmin, K: kindAdmin, Iat: tt.iat.Unix(), Exp: tt.exp.Unix(), N: "x"})
			if err := VerifyAdmin(secret, adm, now); herald.ErrorCode(err) != tt.want && !(err == nil && tt.want == "") {
				t.Errorf("VerifyAdmin = %v, want code %q", err, tt.want)
			}
		})
	}
}

// TestFetchTokenScope: a fetch token fetches and does nothing else, and
// nothing else fetches.
func TestFetchTokenScope(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	fetch, err := MintFetch(secret, "alice", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	login, _ := Mint(secret, "alice", now, time.Hour)
	admin, _ := MintAdmin(secret, now, time.Hour)

	c, err := VerifyFetch(secret, fetch, now)
	if err != nil || c.UserID != "alice" {
		t.Fatalf("VerifyFetch(fetch) = %+v, %v; want alice", c, err)
	}
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"login verifies a fetch token", func() error { _, err := Verify(secret, fetch, now); return err }()},
		{"admin verifies a fetch token", VerifyAdmin(secret, fetch, now)},
		{"fetch verifies a login token", func() error { _, err := VerifyFetch(secret, login, now); return err }()},
		{"fetch verifies an admin token", func() error { _, err := VerifyFetch(secret, admin, now); return err }()},
		{"fetch token past its expiry", func() error { _, err := VerifyFetch(secret, fetch, now.Add(time.Hour)); return err }()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("accepted; want refused")
			}
		})
	}
	if _, err := MintFetch(secret, "alice", now, MaxFetchTTL+time.Second); herald.ErrorCode(err) != herald.CodeInvalidArgument {
		t.Errorf("MintFetch past MaxFetchTTL: %v; want invalid_argument", err)
	}
	if _, err := Verify(secret, fetch, now); !strings.Contains(herald.ErrorMessage(err), "fetch token") {
		t.Errorf("login with a fetch token: %v; want it named", err)
	}
}
