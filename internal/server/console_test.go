package server

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/console"
	"github.com/herald-im/herald/token"
)

// TestHome: GET / says what the server is and links to the console and
// the OpenAPI document; other unknown paths stay 404.
func TestHome(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	srv := startNode(t, cfg, []byte("0123456789abcdef0123456789abcdef"), nil)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	resp, err := http.Get("http://" + srv.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s, want a 200 HTML page", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"Herald", `href="/console/"`, `href="/api/openapi.json"`, "/ws", "docs/operations.md"} {
		if !strings.Contains(page, want) {
			t.Errorf("the home page lacks %q", want)
		}
	}
	resp, err = http.Get("http://" + srv.Addr() + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", resp.StatusCode)
	}
}

// TestTwoNodesConsoleSessions: the console on node A lists a session held
// by node B, with the platform node B normalised and announced, and its
// kick closes it there (the SDK client is told it was kicked out).
func TestTwoNodesConsoleSessions(t *testing.T) {
	busURL := natsForTest(t)
	shareOneStore(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	a := startNode(t, nodeConfig(t, busURL, "console", "node-a"), secret, nil)
	b := startNode(t, nodeConfig(t, busURL, "console", "node-b"), secret, nil)
	t.Cleanup(func() { b.Shutdown(context.Background()); a.Shutdown(context.Background()) })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stopped := make(chan client.ConnectionEvent, 4)
	bob := client.New(b.URL(), client.Options{DeviceID: "bob-phone", Platform: "iOS", Handlers: client.Handlers{
		ConnectionStateChanged: func(st client.ConnectionState, ev client.ConnectionEvent, _ error) {
			if st == client.StateDisconnected {
				stopped <- ev
			}
		}}})
	t.Cleanup(bob.Close)
	bobToken, err := token.Mint(secret, "bob", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.Login(ctx, "bob", bobToken); err != nil {
		t.Fatal(err)
	}

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	base := "http://" + a.Addr() + console.Prefix
	admin, err := token.MintAdmin(secret, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.PostForm(base+"login", url.Values{"token": {admin}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var page string
	waitUntil(t, "node A's console lists bob's session on node B", func() bool {
		resp, err := hc.Get(base + "users?user_id=bob")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page = string(b)
		return strings.Contains(page, `data-device="bob-phone"`) && strings.Contains(page, "<code>node-b</code>")
	})
	if !strings.Contains(page, "<td><code>bob-phone</code></td><td>ios</td>") {
		t.Error("node A's console lists bob's session on node B without its platform ios")
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the users page has no CSRF field")
	}
	resp, err = hc.PostForm(base+"users/kick", url.Values{"csrf": {m[1]}, "user_id": {"bob"}, "device_id": {"bob-phone"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // the redirect, followed
		t.Fatalf("kick: %d", resp.StatusCode)
	}
	select {
	case ev := <-stopped:
		if ev != client.EventKickedOut {
			t.Errorf("bob's client on node B ended with %v, want EventKickedOut", ev)
		}
	case <-ctx.Done():
		t.Fatal("bob's session on node B was not kicked")
	}
}
