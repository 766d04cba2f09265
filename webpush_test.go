package herald_test

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/herald-im/herald"
)

// subscription returns a browser-like PushSubscription JSON with fresh
// keys, and the keys' canonical encodings.
func subscription(t testing.TB, endpoint string) (tok, p256dh, auth string) {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := make([]byte, 16)
	rand.Read(a)
	p256dh = base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes())
	auth = base64.RawURLEncoding.EncodeToString(a)
	return `{"endpoint":"` + endpoint + `","expirationTime":null,"keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}`, p256dh, auth
}

func TestParseWebPushSubscription(t *testing.T) {
	tok, p256dh, auth := subscription(t, "https://push.example.net/wpush/abc")
	s, err := herald.ParseWebPushSubscription(tok)
	if err != nil {
		t.Fatalf("a browser's subscription: %v", err)
	}
	if s.Endpoint != "https://push.example.net/wpush/abc" || s.Keys.P256dh != p256dh || s.Keys.Auth != auth {
		t.Fatalf("got %+v", s)
	}
	want := `{"endpoint":"https://push.example.net/wpush/abc","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}`
	if got := s.Token(); got != want {
		t.Fatalf("Token() = %s, want %s", got, want)
	}
	// Padded keys and another member order name the same subscription.
	padded := `{"keys":{"auth":"` + auth + `==","p256dh":"` + p256dh + `="},"endpoint":"https://push.example.net/wpush/abc"}`
	if got := herald.NormalizePushToken(herald.ProviderWebPush, padded); got != want {
		t.Fatalf("NormalizePushToken(padded) = %s, want %s", got, want)
	}
	if len(s.PublicKey()) != 65 || len(s.AuthSecret()) != 16 {
		t.Fatalf("decoded keys are %d and %d bytes, want 65 and 16", len(s.PublicKey()), len(s.AuthSecret()))
	}

	notOnCurve := base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...))
	for _, tc := range []struct{ name, token, want string }{
		{"not JSON", "abc", "not a Web Push subscription"},
		{"trailing data", tok + "{}", "not a Web Push subscription"},
		{"no endpoint", `{"keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}`, "endpoint is empty"},
		{"http endpoint", strings.Replace(tok, "https://", "http://", 1), "not an https URL"},
		{"no host", strings.Replace(tok, "https://push.example.net", "https://", 1), "not an https URL"},
		{"user info", strings.Replace(tok, "https://", "https://u:p@", 1), "not an https URL"},
		{"no keys", `{"endpoint":"https://push.example.net/x"}`, "keys is missing"},
		{"short p256dh", strings.Replace(tok, p256dh, p256dh[:40], 1), "keys.p256dh"},
		{"p256dh off the curve", strings.Replace(tok, p256dh, notOnCurve, 1), "not a point on P-256"},
		{"p256dh not base64", strings.Replace(tok, p256dh, "!!"+p256dh[2:], 1), "keys.p256dh"},
		{"short auth", strings.Replace(tok, auth, auth[:10], 1), "keys.auth"},
		{"endpoint too long", strings.Replace(tok, "/wpush/abc", "/"+strings.Repeat("a", herald.MaxWebPushEndpointBytes), 1), "endpoint is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := herald.ValidatePushRegistration(herald.ProviderWebPush, tc.token, "web", "")
			if herald.ErrorCode(err) != herald.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want invalid_argument naming %q", err, tc.want)
			}
		})
	}
}

func TestValidatePushRegistrationProviders(t *testing.T) {
	tok, _, _ := subscription(t, "https://push.example.net/wpush/abc")
	fcm := "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"
	for _, tc := range []struct {
		name  string
		p     herald.PushProvider
		token string
		env   herald.PushEnvironment
		want  string // "" valid, else part of the error
	}{
		{"fcm", herald.ProviderFCM, fcm, "", ""},
		{"fcm production", herald.ProviderFCM, fcm, herald.EnvProduction, ""},
		{"hms", herald.ProviderHMS, "IQAAAACy0kYhAAAnN2gv3vQ", "", ""},
		{"webpush", herald.ProviderWebPush, tok, "", ""},
		{"fcm empty", herald.ProviderFCM, "", "", "token is empty"},
		{"fcm space", herald.ProviderFCM, "ab cd", "", "character ' '"},
		{"hms quote", herald.ProviderHMS, `ab"cd`, "", "character '\"'"},
		{"fcm too long", herald.ProviderFCM, strings.Repeat("a", herald.MaxPushTokenBytes+1), "", "the limit is"},
		{"apns needs an environment", herald.ProviderAPNs, "abcd", "", "environment is empty"},
		{"fcm unknown environment", herald.ProviderFCM, fcm, "staging", "environment \"staging\""},
		{"unknown provider", "mipush", fcm, "", "provider \"mipush\" is unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := herald.ValidatePushRegistration(tc.p, tc.token, "com.example.app", tc.env)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if herald.ErrorCode(err) != herald.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want invalid_argument naming %q", err, tc.want)
			}
		})
	}
}

// FuzzParseWebPushSubscription: whatever a client sends, the parser
// refuses it with invalid_argument or returns a subscription whose
// canonical token parses back to itself.
func FuzzParseWebPushSubscription(f *testing.F) {
	tok, _, _ := subscription(f, "https://push.example.net/wpush/abc")
	for _, s := range []string{tok, "{}", `{"endpoint":"https://x"}`, `{"endpoint":"https://x","keys":{"p256dh":"","auth":""}}`, "null", `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := herald.ParseWebPushSubscription(in)
		if err != nil {
			if herald.ErrorCode(err) != herald.CodeInvalidArgument {
				t.Fatalf("error %v is not invalid_argument", err)
			}
			return
		}
		again, err := herald.ParseWebPushSubscription(s.Token())
		if err != nil || again != s {
			t.Fatalf("canonical token %s parses to %+v, %v; want %+v", s.Token(), again, err, s)
		}
	})
}
