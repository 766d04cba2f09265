package console_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/token"
)

var testSecret = []byte("console-secret-0123456789abcdef")

const testApp = "com.example.herald"

// startServer runs a real server on 127.0.0.1:0 with the built-in APNs
// emulator and a temporary data folder, shut down when the test ends.
func startServer(t *testing.T, mutate func(*config.Config)) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.PushEmulatorAddr = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("HERALD_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := server.New(context.Background(), cfg, testSecret, log)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return srv
}

func adminToken(t *testing.T, ttl time.Duration) string {
	t.Helper()
	tok, err := token.MintAdmin(testSecret, time.Now(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// apnsToken is a well-formed APNs device token, distinct per n.
func apnsToken(n int) string { return fmt.Sprintf("%064x", n+0xc0ffee) }

// registerDevice logs user in through the SDK and registers an emulator
// push token; it returns the push ID and the token.
func registerDevice(t *testing.T, srv *server.Server, user string, n int) (pushID, tok string) {
	t.Helper()
	tok = apnsToken(n)
	return registerVendorDevice(t, srv, user, client.PushRegistration{Provider: herald.ProviderAPNs, Token: tok, App: testApp, Environment: herald.EnvProduction}), tok
}

// registerVendorDevice logs user in through the SDK and registers r; it
// returns the push ID.
func registerVendorDevice(t *testing.T, srv *server.Server, user string, r client.PushRegistration) (pushID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := client.New(srv.URL(), client.Options{DeviceID: user + "-phone"})
	t.Cleanup(c.Close)
	login, err := token.Mint(testSecret, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx, user, login); err != nil {
		t.Fatalf("Login %s: %v", user, err)
	}
	pushID, err = c.RegisterPush(ctx, r)
	if err != nil {
		t.Fatalf("RegisterPush: %v", err)
	}
	return pushID
}

// browserless is an HTTP client with a cookie jar that does not follow
// redirects, so tests see them.
func browserless(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

func postForm(t *testing.T, c *http.Client, u string, v url.Values) *http.Response {
	t.Helper()
	resp, err := c.Post(u, "application/x-www-form-urlencoded", strings.NewReader(v.Encode()))
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
