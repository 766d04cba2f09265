package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/token"
	"golang.org/x/net/http2"
)

// startEmulatorCmd runs `herald emulator` until the test ends, or until
// the stop function it returns is called, and returns the emulators and
// what it printed.
func startEmulatorCmd(t *testing.T, args ...string) (*runningEmulators, string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	ready := make(chan *runningEmulators, 1)
	done := make(chan error, 1)
	go func() { done <- runEmulator(ctx, args, &out, &errOut, func(e *runningEmulators) { ready <- e }) }()
	select {
	case e := <-ready:
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("emulator stopped with %v", err)
				}
			})
		}
		t.Cleanup(stop)
		return e, out.String(), stop
	case err := <-done:
		cancel()
		t.Fatalf("emulator: %v (%s)", err, errOut.String())
	}
	return nil, "", nil
}

func TestEmulatorCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "emu")
	emus, out, _ := startEmulatorCmd(t, "--addr", "127.0.0.1:0", "--sandbox-addr", "127.0.0.1:0", "--dir", dir)
	em := emus.apns
	for _, want := range []string{
		em.URL(), em.SandboxURL(), "HERALDTEAM", "ca.pem", "AuthKey_", "push.json",
		"fcm-service-account.json", em.URL() + "/_emulator/fcm/", em.URL() + "/fcm/token",
		"hms-app.json", em.URL() + "/hms", em.URL() + "/_emulator/hms/",
		em.URL() + "/wpush/", em.URL() + "/_emulator/webpush/subscribe",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "AuthKey_*.p8"))
	if len(keys) != 1 {
		t.Fatalf("key files: %v, want one AuthKey_*.p8", keys)
	}
	keyID := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(keys[0]), "AuthKey_"), ".p8")
	if len(keyID) != 10 {
		t.Errorf("key ID %q, want 10 characters like Apple's", keyID)
	}
	for _, f := range []string{keys[0], filepath.Join(dir, "fcm-service-account.json"), filepath.Join(dir, "hms-app.json"), filepath.Join(dir, "push.json")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", filepath.Base(f), fi.Mode(), err)
		}
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	// What a Herald server does with the printed files.
	push := func(t *testing.T, url string) int {
		t.Helper()
		return pushWithFiles(t, url, keys[0], keyID, caPEM)
	}
	if got := push(t, em.URL()); got != 200 {
		t.Errorf("push to production: %d, want 200", got)
	}
	if got := push(t, em.SandboxURL()); got != 200 {
		t.Errorf("push to sandbox: %d, want 200", got)
	}
	sa, _ := os.ReadFile(filepath.Join(dir, "fcm-service-account.json"))
	hmsApp, _ := os.ReadFile(filepath.Join(dir, "hms-app.json"))

	t.Run("restart reuses keys, secrets and certificate", func(t *testing.T) {
		emus2, out2, _ := startEmulatorCmd(t, "--addr", "127.0.0.1:0", "--dir", dir)
		if !strings.Contains(out2, keyID) {
			t.Errorf("restart printed another key ID:\n%s", out2)
		}
		if !bytes.Equal(emus2.apns.CACertPEM(), caPEM) {
			t.Errorf("restart serves another TLS certificate")
		}
		if got := push(t, emus2.apns.URL()); got != 200 {
			t.Errorf("push after restart: %d, want 200", got)
		}
		var was, now struct {
			PrivateKey  string `json:"private_key"`
			ClientEmail string `json:"client_email"`
			TokenURI    string `json:"token_uri"`
		}
		json.Unmarshal(sa, &was)
		sa2, _ := os.ReadFile(filepath.Join(dir, "fcm-service-account.json"))
		json.Unmarshal(sa2, &now)
		if now.PrivateKey != was.PrivateKey || now.ClientEmail != was.ClientEmail || now.TokenURI != emus2.apns.URL()+"/fcm/token" {
			t.Errorf("FCM key after restart: same key %v, same account %v, token_uri %q; want the same account at %s/fcm/token",
				now.PrivateKey == was.PrivateKey, now.ClientEmail == was.ClientEmail, now.TokenURI, emus2.apns.URL())
		}
		if hms2, _ := os.ReadFile(filepath.Join(dir, "hms-app.json")); !bytes.Equal(hms2, hmsApp) {
			t.Errorf("Huawei app after restart: %s, want %s", hms2, hmsApp)
		}
	})
}

// TestEmulatorPushConfig: the push.json `herald emulator` writes is
// accepted by `herald serve --push-config` as is, after an emulator
// restart on another port too (the saved FCM key, Huawei app and APNs key
// stay valid), and a message to an offline user reaches each vendor's
// emulator: an iPhone, an Android phone, a Huawei phone and a browser.
// --delay holds back every vendor's answer.
func TestEmulatorPushConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "emu")
	_, _, stop := startEmulatorCmd(t, "--addr", "127.0.0.1:0", "--dir", dir)
	stop()
	const delay = 100 * time.Millisecond
	emus, _, _ := startEmulatorCmd(t, "--addr", "127.0.0.1:0", "--dir", dir, "--delay", delay.String())

	secret := "emulator-push-config-secret-0123"
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.Secret = "127.0.0.1:0", t.TempDir(), secret
	cfg.PushConfig = filepath.Join(dir, "push.json")
	srv, err := server.New(context.Background(), cfg, []byte(secret), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("server with the emulator's push.json: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	if srv.Emulator() != nil {
		t.Fatal("the server started its built-in emulator: push.json was not used")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login := func(user, device string) *client.Client {
		t.Helper()
		c := client.New(srv.URL(), client.Options{DeviceID: device})
		tok, _ := token.Mint([]byte(secret), user, time.Now(), time.Hour)
		if err := c.Login(ctx, user, tok); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// The browser subscribes with the server's VAPID key.
	res, err := http.Get("http://" + srv.Addr() + server.VAPIDKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	var vapid struct {
		PublicKey string `json:"public_key"`
	}
	json.NewDecoder(res.Body).Decode(&vapid)
	res.Body.Close()
	key, err := base64.RawURLEncoding.DecodeString(vapid.PublicKey)
	if err != nil || len(key) == 0 {
		t.Fatalf("VAPID public key %q: %v", vapid.PublicKey, err)
	}
	sub, err := emus.webpush.Subscribe(key)
	if err != nil {
		t.Fatal(err)
	}
	const apnsTok = "8b1f0000000000000000000000000000000000000000000000000000000000c2"
	devices := []struct {
		reg   client.PushRegistration
		inbox func() int
	}{
		{client.PushRegistration{Provider: herald.ProviderAPNs, Token: apnsTok, App: "com.example.chat", Environment: herald.EnvDevelopment},
			func() int { return len(emus.apns.Inbox(apnsTok)) }},
		{client.PushRegistration{Provider: herald.ProviderFCM, Token: "fcm-bob-android:1", App: "com.example.chat"},
			func() int { return len(emus.fcm.Inbox("fcm-bob-android:1")) }},
		{client.PushRegistration{Provider: herald.ProviderHMS, Token: "hmsBOBhuawei1", App: "com.example.chat"},
			func() int { return len(emus.hms.Inbox("hmsBOBhuawei1")) }},
		{client.PushRegistration{Provider: herald.ProviderWebPush, Token: sub.Token(), App: "web"},
			func() int { return len(emus.webpush.Inbox(sub.Token())) }},
	}
	pushIDs := make([]string, len(devices))
	for i, d := range devices {
		bob := login("bob", "bob-"+string(d.reg.Provider))
		if pushIDs[i], err = bob.RegisterPush(ctx, d.reg); err != nil {
			t.Fatalf("register %s: %v", d.reg.Provider, err)
		}
		bob.Close()
	}
	alice := login("alice", "alice-phone")
	defer alice.Close()
	msg := client.TextMessage("dinner at 8?")
	msg.Push = &herald.PushConfig{Title: "Alice", Content: "dinner at 8?"}
	if _, err := alice.SendPeerMessage(ctx, "bob", msg); err != nil {
		t.Fatal(err)
	}
	for _, d := range devices {
		for d.inbox() == 0 {
			if ctx.Err() != nil {
				t.Fatalf("no push reached the %s emulator", d.reg.Provider)
			}
			time.Sleep(10 * time.Millisecond) // polling for the arrival
		}
		if n := d.inbox(); n != 1 {
			t.Errorf("%s inbox holds %d notifications, want 1", d.reg.Provider, n)
		}
	}
	for i, d := range devices {
		rep, err := srv.Push().Test(ctx, pushIDs[i], herald.PushConfig{Title: "t", Content: "c"})
		if err != nil || !rep.OK() {
			t.Fatalf("test push to %s: %v %+v", d.reg.Provider, err, rep)
		}
		if rep.Attempt.Latency < delay {
			t.Errorf("%s answered in %v, want --delay %v or more", d.reg.Provider, rep.Attempt.Latency, delay)
		}
	}
}

func TestEmulatorCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"help", []string{"--help"}, flag.ErrHelp.Error()},
		{"bad delay", []string{"--delay", "soon"}, "invalid value"},
		{"negative delay", []string{"--delay", "-1s"}, "negative"},
		{"extra argument", []string{"now"}, "unexpected argument"},
		{"busy address", []string{"--addr", "256.0.0.1:1"}, "listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"--dir", t.TempDir()}, tt.args...)
			err := runEmulator(context.Background(), args, &out, &errOut, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
			if tt.name == "help" && !strings.Contains(errOut.String(), "--sandbox-addr") {
				t.Errorf("--help printed %q, want the flags", errOut.String())
			}
		})
	}
	t.Run("two keys", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "AuthKey_AAAAAAAAAA.p8"), nil, 0o600)
		os.WriteFile(filepath.Join(dir, "AuthKey_BBBBBBBBBB.p8"), nil, 0o600)
		err := runEmulator(context.Background(), []string{"--dir", dir}, &bytes.Buffer{}, &bytes.Buffer{}, nil)
		if err == nil || !strings.Contains(err.Error(), "keep one") {
			t.Errorf("error = %v, want one about several keys", err)
		}
	})
}

// pushWithFiles sends one push the way a provider configured with the
// emulator's files would: JWT signed with the .p8, TLS trusting ca.pem.
func pushWithFiles(t *testing.T, url, keyPath, keyID string, caPEM []byte) int {
	t.Helper()
	b, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(fmt.Sprintf(`{"alg":"ES256","kid":%q}`, keyID))) + "." +
		enc.EncodeToString([]byte(fmt.Sprintf(`{"iss":"HERALDTEAM","iat":%d}`, time.Now().Unix())))
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, k.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, url+"/3/device/"+strings.Repeat("ab", 32), strings.NewReader(`{"aps":{"alert":"hi"}}`))
	req.Header.Set("authorization", "bearer "+input+"."+enc.EncodeToString(sig))
	req.Header.Set("apns-topic", "com.example.app")
	req.Header.Set("apns-push-type", "alert")
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
