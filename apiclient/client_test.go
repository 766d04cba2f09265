package apiclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestSignKnownVector pins the signature to the value docs/api.md's shell
// example computes with openssl, so the two cannot drift.
func TestSignKnownVector(t *testing.T) {
	body := []byte(`{"from":"system","to":["alice"],"message":{"type":"text","text":"hi"}}`)
	got := Sign([]byte("example-secret-0123456789"), "herald", 1750000000, "5f2b8c1d9e0a4b7c", "post", "/api/v1/messages/peer", body)
	const want = "308a4eb7edccfcd757f2becad60d04acc1861dfde42ab521a540063aee1de434"
	if got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	s := StringToSign("herald", 1750000000, "5f2b8c1d9e0a4b7c", "POST", "/api/v1/messages/peer", nil)
	if want := "herald\n1750000000\n5f2b8c1d9e0a4b7c\nPOST\n/api/v1/messages/peer\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; s != want {
		t.Errorf("StringToSign with no body = %q, want %q", s, want)
	}
}

func TestClientSignsAndDecodesErrors(t *testing.T) {
	var seen *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"code":"rate_limited","message":"slow down"}`))
	}))
	defer srv.Close()
	c := New(srv.URL+"/", "app1", []byte("secret-0123456789abcdef"))
	c.Now = func() time.Time { return time.Unix(1750000000, 0) }
	_, err := c.Devices(context.Background(), "bob@example.com")
	var e *Error
	if !errors.As(err, &e) || e.Status != 429 || e.Code != "rate_limited" || e.RetryAfter != 3*time.Second {
		t.Fatalf("err = %v, want a 429 rate_limited Error with RetryAfter 3s", err)
	}
	if seen.Header.Get(HeaderApp) != "app1" || seen.Header.Get(HeaderTimestamp) != "1750000000" {
		t.Errorf("headers %v", seen.Header)
	}
	if n := seen.Header.Get(HeaderNonce); len(n) < MinNonceLen || len(n) > MaxNonceLen {
		t.Errorf("nonce %q", n)
	}
	want := Sign(c.Secret, "app1", 1750000000, seen.Header.Get(HeaderNonce), "GET", seen.RequestURI, nil)
	if seen.Header.Get(HeaderSignature) != want {
		t.Errorf("signature %s, want %s over %s", seen.Header.Get(HeaderSignature), want, seen.RequestURI)
	}
	if !strings.HasPrefix(seen.RequestURI, "/api/v1/users/bob@example.com/devices") {
		t.Errorf("request URI %s", seen.RequestURI)
	}
}
