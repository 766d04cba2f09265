package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/store"
)

// apnsPushFile writes a push file of one APNs app with a .p8 key that emu
// knows, trusting emu's certificate, and returns its path.
func apnsPushFile(t *testing.T, emu *emulator.APNs, key *ecdsa.PrivateKey, app string) string {
	t.Helper()
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := json.Marshal(map[string]any{"apns": []map[string]any{{
		"bundle_id": app, "team_id": "TEAM123456", "key_id": "KEY1234567", "key_file": "AuthKey_KEY1234567.p8",
		"production_url": emu.URL(), "development_url": emu.URL(), "ca_file": "ca.pem",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"AuthKey_KEY1234567.p8": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"ca.pem":                emu.CACertPEM(),
		"push.json":             conf,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "push.json")
}

// TestAPNsJWTSurvivesRestart: a server restarted within 20 minutes of its
// last push (or a second one on the same data) goes on with the JWT in
// use, kept in the store's shared table: APNs answers a new JWT of a key
// within 20 minutes with 429 TooManyProviderTokenUpdates. Three starts
// sign one JWT, stored once.
func TestAPNsJWTSurvivesRestart(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	emu := emulator.New(emulator.Config{Keys: map[string]emulator.Key{"KEY1234567": {TeamID: "TEAM123456", Public: &key.PublicKey}}})
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	const app = "com.example.chat"
	cfg := config.Default()
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.PushConfig = apnsPushFile(t, emu, key, app)
	secret := []byte("0123456789abcdef0123456789abcdef")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for start := range 3 {
		srv := startNode(t, cfg, secret, nil)
		d, err := srv.Push().Register(ctx, "bob", "bob-phone", herald.ProviderAPNs, fmt.Sprintf("%064x", 0xB0B), app, herald.EnvProduction)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := srv.Push().Test(ctx, d.PushID, herald.PushConfig{Title: "hi", Content: fmt.Sprintf("start %d", start)})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() {
			t.Errorf("start %d: test push failed: %+v", start+1, rep)
		}
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st, err := openStore(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := st.GetShared(ctx, store.SharedAPNsJWT, "TEAM123456/KEY1234567", time.Now())
	if err != nil {
		t.Fatalf("the JWT is not in the store after three starts: %v", err)
	}
	if e.Version != 1 {
		t.Errorf("the stored JWT has version %d, want 1: three starts signed more than one", e.Version)
	}
	var seen []time.Time
	for _, n := range emu.Arrived(fmt.Sprintf("%064x", 0xB0B)) {
		seen = append(seen, n.IssuedAt)
	}
	if len(seen) != 3 || seen[0] != seen[1] || seen[1] != seen[2] {
		t.Errorf("JWTs issued at %v; want three pushes with one JWT", seen)
	}
}
