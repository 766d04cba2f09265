package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/herald-im/herald/proto"
)

// handToken mints a token by hand, as protocol.md describes for backends
// in other languages, with whatever iat and exp they wrote.
func handToken(user string, iat, exp time.Time) string {
	b64 := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{"u": user, "iat": iat.Unix(), "exp": exp.Unix(), "n": "hand"})
	signed := "h1." + b64(claims)
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(signed))
	return signed + "." + b64(m.Sum(nil))
}

// TestLoginRefusesImpossibleTokenTimes: a login token whose iat is after
// its exp (a lifetime below zero passed the 576 h cap: valid for years),
// or whose iat is in the future (not valid yet), is refused token_invalid.
func TestLoginRefusesImpossibleTokenTimes(t *testing.T) {
	srv := startServer(t, nil)
	now := time.Now()
	year := 365 * 24 * time.Hour
	for _, tt := range []struct {
		name     string
		iat, exp time.Time
		want     string
	}{
		{"iat after exp", now.Add(10 * year), now.Add(5 * year), "token_invalid"},
		{"issued in an hour", now.Add(time.Hour), now.Add(2 * time.Hour), "token_invalid"},
		{"well formed", now, now.Add(time.Hour), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, srv.URL())
			got := c.callErr(proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "alice", Token: handToken("alice", tt.iat, tt.exp), DeviceID: "d"})
			if got != tt.want {
				t.Errorf("login: code %q, want %q", got, tt.want)
			}
		})
	}
}
