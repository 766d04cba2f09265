package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/webhook"
	"github.com/herald-im/herald/token"
)

func TestGentokenPrintsOnlyAToken(t *testing.T) {
	dir := t.TempDir()
	secret := "0123456789abcdef0123456789abcdef"
	os.WriteFile(filepath.Join(dir, "secret"), []byte(secret+"\n"), 0o600)
	t.Setenv("HERALD_SECRET", "")
	var out, errOut bytes.Buffer
	if err := run([]string{"gentoken", "--data", dir, "--user", "alice", "--ttl", "1h"}, &out, &errOut); err != nil {
		t.Fatalf("gentoken: %v (%s)", err, errOut.String())
	}
	tok := strings.TrimSuffix(out.String(), "\n")
	if strings.ContainsAny(tok, " \n") {
		t.Fatalf("stdout = %q, want only the token", out.String())
	}
	c, err := token.Verify([]byte(secret), tok, time.Now())
	if err != nil || c.UserID != "alice" {
		t.Fatalf("token does not verify with the data folder's secret: %v %+v", err, c)
	}
	if d := time.Until(c.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expiry in %s, want 1h", d)
	}
}

func TestGentokenErrors(t *testing.T) {
	t.Setenv("HERALD_SECRET", "")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no user", []string{"gentoken", "--data", t.TempDir()}, "--user is required"},
		{"no secret", []string{"gentoken", "--data", t.TempDir(), "--user", "a"}, "no HERALD_SECRET"},
		{"bad ttl", []string{"gentoken", "--secret", "0123456789abcdef", "--user", "a", "--ttl", "1000h"}, "ttl"},
		{"admin with a user", []string{"gentoken", "--secret", "0123456789abcdef", "--admin", "--user", "a"}, "exclude each other"},
		{"unknown command", []string{"fly"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("stdout = %q, want nothing on failure", out.String())
			}
		})
	}
}

func TestGentokenAdmin(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	var out, errOut bytes.Buffer
	if err := run([]string{"gentoken", "--secret", secret, "--admin", "--ttl", "2h"}, &out, &errOut); err != nil {
		t.Fatalf("gentoken --admin: %v (%s)", err, errOut.String())
	}
	tok := strings.TrimSuffix(out.String(), "\n")
	c, err := token.VerifyAdminClaims([]byte(secret), tok, time.Now())
	if err != nil {
		t.Fatalf("admin token does not verify: %v", err)
	}
	if d := time.Until(c.ExpiresAt); d < 119*time.Minute || d > 2*time.Hour {
		t.Errorf("expiry in %s, want 2h", d)
	}
	if _, err := token.Verify([]byte(secret), tok, time.Now()); err == nil {
		t.Error("the admin token logs in as a user; want it refused by Verify")
	}
}

// --webhook-key prints the derived key callbacks are signed with, which a
// receiver verifies with instead of the server secret.
func TestGentokenWebhookKey(t *testing.T) {
	dir := t.TempDir()
	secret := "0123456789abcdef0123456789abcdef"
	os.WriteFile(filepath.Join(dir, "secret"), []byte(secret+"\n"), 0o600)
	t.Setenv("HERALD_SECRET", "")
	var out, errOut bytes.Buffer
	if err := run([]string{"gentoken", "--data", dir, "--webhook-key"}, &out, &errOut); err != nil {
		t.Fatalf("gentoken --webhook-key: %v (%s)", err, errOut.String())
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("herald webhook v1"))
	want := hex.EncodeToString(m.Sum(nil))
	if got := out.String(); got != want+"\n" {
		t.Errorf("stdout = %q, want the hex HMAC-SHA256(secret, \"herald webhook v1\") %q", got, want)
	}
	if want != hex.EncodeToString(webhook.SigningKey([]byte(secret))) {
		t.Error("the printed key is not webhook.SigningKey: receivers could not verify")
	}
	out.Reset()
	err := run([]string{"gentoken", "--secret", secret, "--webhook-key", "--admin"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "excludes") || out.Len() != 0 {
		t.Errorf("--webhook-key with --admin: %v, stdout %q; want an error and nothing printed", err, out.String())
	}
}
