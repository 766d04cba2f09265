package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/push/webpush"
	"github.com/herald-im/herald/token"
)

func webPushCfg(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir, cfg.PushEmulatorAddr, cfg.PushEmulatorSandboxAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	return cfg
}

func writePushFile(t *testing.T, dir string, wp map[string]any) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"webpush": wp})
	path := filepath.Join(dir, "push.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func webPushFrom(t *testing.T, provs map[herald.PushProvider]push.Provider) *webpush.Provider {
	t.Helper()
	p, ok := provs[herald.ProviderWebPush].(*webpush.Provider)
	if !ok {
		t.Fatalf("no webpush provider: %v", provs)
	}
	return p
}

// TestWebPushFileRefusesBadCredentials: a VAPID key or CA file that does
// not parse, or a missing subject, stops the start with an error naming
// the file (or key) and what is wrong.
func TestWebPushFileRefusesBadCredentials(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "garbage.pem"), []byte("not a key"), 0o600)
	p384Key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: mustPKCS8P384(t)})
	os.WriteFile(filepath.Join(dir, "p384.pem"), p384Key, 0o600)
	for _, tc := range []struct {
		name string
		wp   map[string]any
		want []string
	}{
		{"garbage key", map[string]any{"subject": "mailto:a@b.c", "vapid_key_file": "garbage.pem"}, []string{"vapid_key_file", filepath.Join(dir, "garbage.pem"), "no PEM block"}},
		{"P-384 key", map[string]any{"subject": "mailto:a@b.c", "vapid_key_file": "p384.pem"}, []string{"vapid_key_file", "p384.pem", "not an ECDSA P-256 key"}},
		{"missing key", map[string]any{"subject": "mailto:a@b.c", "vapid_key_file": "nope.pem"}, []string{"vapid_key_file", "nope.pem", "no such file"}},
		{"garbage ca", map[string]any{"subject": "mailto:a@b.c", "ca_file": "garbage.pem"}, []string{"ca_file", filepath.Join(dir, "garbage.pem"), "no PEM certificate"}},
		{"no subject", map[string]any{}, []string{"webpush", "subject is empty"}},
		{"bad subject", map[string]any{"subject": "ops@example.com"}, []string{"webpush", "mailto: or https:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := webPushCfg(t)
			cfg.PushConfig = writePushFile(t, dir, tc.wp)
			provs, _, _, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				closeProviders(provs)
				t.Fatal("started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func mustPKCS8P384(t *testing.T) []byte {
	t.Helper()
	// VAPID signs with ES256: a P-384 key is the wrong curve.
	k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestWebPushFileVAPIDKey: with no vapid_key_file the key is generated
// into the data folder (0600) at first start and the same key is used
// after a restart; a named file (relative to the push file) is used as is.
func TestWebPushFileVAPIDKey(t *testing.T) {
	cfg := webPushCfg(t)
	cfg.PushConfig = writePushFile(t, t.TempDir(), map[string]any{"subject": "mailto:a@b.c"})
	var keys []string
	for range 2 {
		provs, _, _, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, webPushFrom(t, provs).PublicKey())
		closeProviders(provs)
	}
	fi, err := os.Stat(filepath.Join(cfg.DataDir, VAPIDKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("vapid.pem: %v, mode %v; want 0600", err, fi)
	}
	if keys[0] != keys[1] {
		t.Fatal("the VAPID key changed across a restart")
	}

	dir := t.TempDir()
	if _, _, err := webpush.LoadOrCreateVAPIDKey(filepath.Join(dir, "mine.pem")); err != nil {
		t.Fatal(err)
	}
	mine, _ := webpush.LoadVAPIDKey(filepath.Join(dir, "mine.pem"))
	pub, _ := mine.PublicKey.ECDH()
	cfg.PushConfig = writePushFile(t, dir, map[string]any{"subject": "mailto:a@b.c", "vapid_key_file": "mine.pem"})
	provs, _, _, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeProviders(provs)
	if got := webPushFrom(t, provs).PublicKey(); got != base64.RawURLEncoding.EncodeToString(pub.Bytes()) {
		t.Fatal("vapid_key_file not used")
	}
}

// TestTwoNodesNeedOneVAPIDKey: a node of a cluster (HERALD_BUS set)
// refuses a webpush entry without vapid_key_file, naming it, instead of
// generating a key of its own that the other nodes' would not match; with
// the shared key file it starts.
func TestTwoNodesNeedOneVAPIDKey(t *testing.T) {
	cfg := webPushCfg(t)
	cfg.Bus = "nats://127.0.0.1:4222" // not dialled by pushSetup
	cfg.PushConfig = writePushFile(t, t.TempDir(), map[string]any{"subject": "mailto:a@b.c"})
	if provs, _, _, err := pushSetup(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "vapid_key_file") {
		closeProviders(provs)
		t.Fatalf("pushSetup with HERALD_BUS and no vapid_key_file: err %v, want one naming vapid_key_file", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, VAPIDKeyFile)); err == nil {
		t.Errorf("a VAPID key was generated in the node's data folder")
	}
	dir := t.TempDir()
	if _, _, err := webpush.LoadOrCreateVAPIDKey(filepath.Join(dir, "shared.pem")); err != nil {
		t.Fatal(err)
	}
	cfg.PushConfig = writePushFile(t, dir, map[string]any{"subject": "mailto:a@b.c", "vapid_key_file": "shared.pem"})
	provs, _, _, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("pushSetup with HERALD_BUS and vapid_key_file: %v", err)
	}
	closeProviders(provs)
}

// TestDevWebPushEndToEnd: in development mode a browser subscription made
// at the built-in emulator with the server's public key passes
// registration, and a push reaches it, decrypted.
func TestDevWebPushEndToEnd(t *testing.T) {
	cfg := webPushCfg(t)
	provs, _, emus, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer emus.close()
	defer closeProviders(provs)
	p := webPushFrom(t, provs)
	if emus.webpush == nil {
		t.Fatal("no Web Push emulator")
	}
	key, _ := base64.RawURLEncoding.DecodeString(p.PublicKey())
	sub, err := emus.webpush.Subscribe(key)
	if err != nil {
		t.Fatal(err)
	}
	d := herald.PushDevice{Provider: herald.ProviderWebPush, Token: sub.Token(), App: "web", Env: herald.EnvProduction}
	if err := p.CheckToken(d.Token, d.App); err != nil {
		t.Fatalf("registration refused the emulator's subscription: %v", err)
	}
	c := &push.Content{NotifID: "7d0c6a4e-2f1b-4c3d-8e9f-0a1b2c3d4e5f", Config: herald.PushConfig{Title: "Ann", Content: "hi", Payload: "p"}, Conv: "c", MsgID: 1, Seq: 1, From: "ann"}
	pl, err := p.Render(c, &d)
	if err != nil {
		t.Fatal(err)
	}
	res := p.Send(context.Background(), &push.Notification{ID: c.NotifID, CollapseID: c.NotifID, Device: d, Type: push.TypeAlert, Expiration: time.Now().Add(time.Minute), Payload: pl})
	if res.Verdict != push.Delivered {
		t.Fatalf("send: %v %d %q %s", res.Verdict, res.Status, res.Reason, res.Body)
	}
	in := emus.webpush.Inbox(d.Token)
	if len(in) != 1 || string(in[0].Payload) != string(pl) {
		t.Fatalf("inbox %+v, want the payload %s", in, pl)
	}
	// The emulator's other port on the same host is not the allowed address.
	other := sub
	other.Endpoint = strings.Replace(sub.Endpoint, emus.apns.URL(), "https://127.0.0.1:1", 1)
	if err := p.CheckToken(other.Token(), d.App); err == nil {
		t.Fatal("dev mode allows loopback beyond the emulator's address")
	}
}

// TestWebPushOfflineEndToEnd: through the SDK and the built-in emulator, a
// browser subscription registered by bob receives alice's message while
// bob is offline, decrypted with title, content, payload and the herald
// block; a private endpoint is refused at registration; a 410 drops the
// subscription.
func TestWebPushOfflineEndToEnd(t *testing.T) {
	secret := []byte("webpush-e2e-secret-0123456789abcdef")
	cfg := webPushCfg(t)
	cfg.Addr = "127.0.0.1:0"
	srv, err := New(context.Background(), cfg, secret, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login := func(user string) *client.Client {
		c := client.New(srv.URL(), client.Options{DeviceID: user + "-browser"})
		tok, _ := token.Mint(secret, user, time.Now(), time.Hour)
		if err := c.Login(ctx, user, tok); err != nil {
			t.Fatal(err)
		}
		return c
	}
	wp := srv.emus.webpush
	key, _ := base64.RawURLEncoding.DecodeString(webPushFrom(t, srv.provs).PublicKey())
	sub, err := wp.Subscribe(key)
	if err != nil {
		t.Fatal(err)
	}
	bob := login("bob")
	bad := sub
	bad.Endpoint = "https://10.0.0.1/wpush/x"
	if _, err := bob.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderWebPush, Token: bad.Token(), App: "web"}); err == nil || !strings.Contains(err.Error(), "endpoint") {
		t.Fatalf("a private endpoint registered: %v", err)
	}
	if _, err := bob.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderWebPush, Token: sub.Token(), App: "web"}); err != nil {
		t.Fatal(err)
	}
	bob.Close()

	got := make(chan emulator.Notification, 4)
	wp.OnAccept(func(n *emulator.Notification) { got <- *n })
	alice := login("alice")
	defer alice.Close()
	msg := client.TextMessage("hello bob")
	msg.Push = &herald.PushConfig{Title: "Alice", Content: "hello bob", Payload: `{"open":"chat"}`}
	m, err := alice.SendPeerMessage(ctx, "bob", msg)
	if err != nil {
		t.Fatal(err)
	}
	var n emulator.Notification
	select {
	case n = <-got:
	case <-ctx.Done():
		t.Fatal("no push reached the browser")
	}
	var doc struct {
		Title, Body, Payload, Tag string
		Herald                    struct {
			Conv  string
			MsgID int64 `json:"msg_id"`
			From  string
		}
	}
	if err := json.Unmarshal(n.Payload, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Title != "Alice" || doc.Body != "hello bob" || doc.Payload != `{"open":"chat"}` || doc.Herald.From != "alice" || doc.Herald.MsgID != m.ID || doc.Herald.Conv == "" || doc.Tag != n.ID || len(n.ID) != 32 {
		t.Fatalf("push %s (ID %s), want alice's message %d", n.Payload, n.ID, m.ID)
	}

	wp.Script(sub.Endpoint, emulator.Step{Status: 410})
	if _, err := alice.SendPeerMessage(ctx, "bob", msg); err != nil {
		t.Fatal(err)
	}
	for len(srv.push.Devices("bob")) != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("the subscription answered 410 but is still registered: %+v", srv.push.Devices("bob"))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestWebPushCAFileAddsToSystemRoots: the webpush ca_file adds roots to
// the system's instead of replacing them, so a real browser's push service
// (signed by a public CA) stays reachable when a ca_file is set. It runs in
// a child process whose "system roots" (SSL_CERT_FILE) are one emulator's
// CA, while the push file's ca_file is another's: both must deliver.
func TestWebPushCAFileAddsToSystemRoots(t *testing.T) {
	const childEnv = "HERALD_TEST_WEBPUSH_SYSTEM_CA"
	if os.Getenv(childEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWebPushCAFileAddsToSystemRoots$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	// The child: the system roots are read once, at first use, which
	// happens below, after SSL_CERT_FILE names the "public" CA.
	dir := t.TempDir()
	public := emulator.New(emulator.Config{}) // stands for a push service with a public certificate
	if err := public.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer public.Close()
	t.Setenv("SSL_CERT_FILE", filepath.Join(dir, "system.pem"))
	t.Setenv("SSL_CERT_DIR", dir)
	if err := os.WriteFile(filepath.Join(dir, "system.pem"), public.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	private := emulator.New(emulator.Config{}) // the operator's own, named by ca_file
	if err := private.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer private.Close()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), private.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := webPushCfg(t)
	cfg.PushConfig = writePushFile(t, dir, map[string]any{"subject": "mailto:a@b.c", "allow_private_endpoints": true, "ca_file": "ca.pem"})
	provs, _, _, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeProviders(provs)
	p := webPushFrom(t, provs)
	key, _ := base64.RawURLEncoding.DecodeString(p.PublicKey())
	for name, a := range map[string]*emulator.APNs{"ca_file's": private, "system-trusted": public} {
		wp := emulator.NewWebPush(emulator.WebPushConfig{})
		wp.Mount(a)
		sub, err := wp.Subscribe(key)
		if err != nil {
			t.Fatal(err)
		}
		d := herald.PushDevice{Provider: herald.ProviderWebPush, Token: sub.Token(), App: "web", Env: herald.EnvProduction}
		c := &push.Content{NotifID: "7d0c6a4e-2f1b-4c3d-8e9f-0a1b2c3d4e5f", Config: herald.PushConfig{Title: "Ann", Content: "hi"}}
		pl, err := p.Render(c, &d)
		if err != nil {
			t.Fatal(err)
		}
		res := p.Send(context.Background(), &push.Notification{ID: c.NotifID, Device: d, Type: push.TypeAlert, Expiration: time.Now().Add(time.Minute), Payload: pl})
		if res.Verdict != push.Delivered {
			t.Errorf("%s push service: got %v %q, want delivered", name, res.Verdict, res.Reason)
		}
	}
}
