package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/token"
)

func fcmWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fcmSend renders and sends one push to token through the fcm provider.
func fcmSend(t *testing.T, p push.Provider, app, token string) push.Result {
	t.Helper()
	d := herald.PushDevice{Provider: herald.ProviderFCM, App: app, Token: token, Env: herald.EnvProduction}
	c := &push.Content{NotifID: "6f1c1a52-8d3e-4c1b-9a51-1f2e3d4c5b6a", Config: herald.PushConfig{Title: "Ada", Content: "hi", Payload: "p"}, Conv: "c1", MsgID: 1, Seq: 1, From: "ada"}
	b, err := p.Render(c, &d)
	if err != nil {
		t.Fatal(err)
	}
	return p.Send(context.Background(), &push.Notification{ID: c.NotifID, CollapseID: c.NotifID, Device: d, Type: push.TypeAlert, Payload: b})
}

// TestFCMCredentialFilesRefused: a service-account file that is missing
// or does not parse stops the server at start, naming the file and what
// is wrong.
func TestFCMCredentialFilesRefused(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, key string // key: the file's content; "" for no file
		want      []string
	}{
		{"missing", "", []string{"fcm[0]", "service_account_file", "missing.json", "no such file"}},
		{"not JSON", "{oops", []string{"fcm[0]", "not JSON.json", "is not JSON"}},
		{"not a service account", `{"type":"authorized_user","client_id":"x"}`, []string{"not a service account.json", `has type "authorized_user"`}},
		{"no private key", `{"type":"service_account","project_id":"p","client_email":"a@p.iam.gserviceaccount.com"}`, []string{"no private key.json", "has no private_key"}},
		{"broken key", `{"type":"service_account","project_id":"p","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`, []string{"broken key.json", "private_key does not parse"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := "missing.json"
			if tt.key != "" {
				file = tt.name + ".json"
				fcmWriteFile(t, filepath.Join(dir, file), tt.key)
			}
			conf := filepath.Join(dir, "push-"+tt.name+".json")
			fcmWriteFile(t, conf, `{"fcm":[{"service_account_file":"`+file+`","apps":["com.example.chat"]}]}`)
			cfg := config.Default()
			cfg.PushConfig = conf
			_, _, _, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Fatal("pushSetup succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "AAAA") {
				t.Errorf("error quotes the key: %v", err)
			}
		})
	}
}

// TestFCMConfigFile: a file naming a service account (relative path), a
// CA file and a URL sends through that endpoint.
func TestFCMConfigFile(t *testing.T) {
	emu := emulator.New(emulator.Config{})
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	f := emulator.NewFCM(emulator.FCMConfig{})
	f.Mount(emu)
	sa, err := f.ServiceAccount("proj-a")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "keys"), 0o700)
	fcmWriteFile(t, filepath.Join(dir, "keys", "proj-a.json"), string(sa))
	fcmWriteFile(t, filepath.Join(dir, "ca.pem"), string(emu.CACertPEM()))
	fcmWriteFile(t, filepath.Join(dir, "push.json"), `{"fcm":[{"service_account_file":"keys/proj-a.json","apps":["com.example.chat"],"url":"`+f.URL()+`","ca_file":"ca.pem"}]}`)
	cfg := config.Default()
	cfg.PushConfig = filepath.Join(dir, "push.json")
	provs, _, _, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeProviders(provs)
	p := provs[herald.ProviderFCM]
	if p == nil || !p.HasApp("com.example.chat") || p.HasApp("com.example.other") {
		t.Fatalf("fcm provider %v does not serve exactly com.example.chat", p)
	}
	if res := fcmSend(t, p, "com.example.chat", "file-tok"); res.Verdict != push.Delivered {
		t.Fatalf("Send = %+v", res)
	}
	if n := len(f.Inbox("file-tok")); n != 1 {
		t.Errorf("emulator inbox has %d, want 1", n)
	}
}

// TestDevFCM: without a push file, the fcm provider sends to the built-in
// FCM emulator mounted on the APNs emulator, for any package name.
func TestDevFCM(t *testing.T) {
	cfg := config.Default()
	cfg.PushEmulatorAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir() // dev mode keeps the Web Push key there
	provs, _, emus, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer emus.close()
	defer closeProviders(provs)
	p := provs[herald.ProviderFCM]
	if p == nil || emus.fcm == nil {
		t.Fatalf("provider %v, emulator %v: want both", p, emus.fcm)
	}
	if !p.HasApp("org.example.any") {
		t.Error("dev provider does not serve every package name")
	}
	if res := fcmSend(t, p, "org.example.any", "dev-tok"); res.Verdict != push.Delivered {
		t.Fatalf("Send = %+v", res)
	}
	in := emus.fcm.Inbox("dev-tok")
	if len(in) != 1 || in[0].Topic != devFCMProject || !strings.Contains(string(in[0].Payload), `"title":"Ada"`) {
		t.Errorf("inbox = %+v", in)
	}
	if !strings.HasPrefix(emus.fcm.URL(), emus.apns.URL()) {
		t.Errorf("FCM emulator at %q, not on the APNs emulator's %q", emus.fcm.URL(), emus.apns.URL())
	}
}

// TestDevFCMAccountKept: the built-in FCM emulator's service account is
// made once per data folder and reused by the next start (no new RSA key);
// pushes go through with it (the token URL is this start's emulator's); a
// file that does not parse is replaced by a new account.
func TestDevFCMAccountKept(t *testing.T) {
	cfg := config.Default()
	cfg.PushEmulatorAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	path := filepath.Join(cfg.DataDir, DevFCMAccountFile)
	start := func() (keyID string) {
		t.Helper()
		provs, _, emus, err := pushSetup(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer emus.close()
		defer closeProviders(provs)
		if res := fcmSend(t, provs[herald.ProviderFCM], "org.example.any", "dev-tok"); res.Verdict != push.Delivered {
			t.Fatalf("Send = %+v", res)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path); err != nil {
			t.Fatal(err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
		}
		var sa struct {
			KeyID string `json:"private_key_id"`
		}
		if err := json.Unmarshal(b, &sa); err != nil || sa.KeyID == "" {
			t.Fatalf("%s = %s (%v)", path, b, err)
		}
		return sa.KeyID
	}
	first := start()
	if second := start(); second != first {
		t.Errorf("second start made a new account (key %s, first %s)", second, first)
	}
	fcmWriteFile(t, path, "{not json")
	if third := start(); third == first || third == "" {
		t.Errorf("a corrupt saved account was kept (key %q)", third)
	}
}

// TestFCMOfflinePushEndToEnd drives the server through the SDK in dev
// mode: bob's Android phone (an fcm registration) is offline; alice's
// message reaches it once through the built-in FCM emulator with what she
// set; an UNREGISTERED answer drops the device, and nothing more is sent
// to it.
func TestFCMOfflinePushEndToEnd(t *testing.T) {
	srv, login := startDevServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	emu := srv.FCMEmulator()
	const fcmToken = "bob-phone:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"
	bob := login("bob", "bob-phone")
	pushID, err := bob.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderFCM, Token: fcmToken, App: "com.example.chat"})
	if err != nil {
		t.Fatalf("RegisterPush: %v", err)
	}
	bob.Close() // offline, still bound

	alice := login("alice", "alice-phone")
	defer alice.Close()
	msg := client.TextMessage("dinner at 8?")
	msg.Push = &herald.PushConfig{Title: "Alice", Content: "dinner at 8?", Payload: `{"room":"42"}`}
	sent, err := alice.SendPeerMessage(ctx, "bob", msg)
	if err != nil {
		t.Fatal(err)
	}
	in := waitFCMInbox(t, emu, fcmToken, 1)
	var m struct {
		Notification struct{ Title, Body string } `json:"notification"`
		Data         map[string]string            `json:"data"`
	}
	if err := json.Unmarshal(in[0].Payload, &m); err != nil {
		t.Fatal(err)
	}
	var h struct {
		MsgID int64  `json:"msg_id"`
		Seq   int64  `json:"seq"`
		From  string `json:"from"`
	}
	json.Unmarshal([]byte(m.Data["herald"]), &h)
	if m.Notification.Title != "Alice" || m.Notification.Body != "dinner at 8?" || m.Data["payload"] != `{"room":"42"}` ||
		h.MsgID != sent.ID || h.Seq != sent.Seq || h.From != "alice" {
		t.Errorf("message %s; want alice's title, body, payload and the herald ids of message %d", in[0].Payload, sent.ID)
	}

	// The app was uninstalled: FCM answers UNREGISTERED, the device goes.
	emu.Script(fcmToken, emulator.Step{Status: 404, Forever: true})
	if _, err := alice.SendPeerMessage(ctx, "bob", msg); err != nil {
		t.Fatal(err)
	}
	fcmWaitFor(t, "the device to be dropped", func() bool { _, ok := srv.Push().Device(pushID); return !ok })
	rejected := emu.Stats().Rejected["UNREGISTERED"]
	if _, err := alice.SendPeerMessage(ctx, "bob", msg); err != nil {
		t.Fatal(err)
	}
	fcmWaitFor(t, "the push service to settle", func() bool { st := srv.Push().Stats(); return st.Pending == 0 && st.Unrecorded == 0 })
	if got := emu.Stats().Rejected["UNREGISTERED"]; got != rejected || len(emu.Arrived(fcmToken)) != 1 {
		t.Errorf("after the drop: %d more UNREGISTERED answers, %d arrived; want nothing more sent", got-rejected, len(emu.Arrived(fcmToken)))
	}
}

func waitFCMInbox(t *testing.T, emu *emulator.FCM, tok string, n int) []emulator.Notification {
	t.Helper()
	var got []emulator.Notification
	fcmWaitFor(t, "the FCM emulator's inbox", func() bool { got = emu.Inbox(tok); return len(got) >= n })
	return got
}

// fcmWaitFor polls cond, a positive signal, for up to 10 seconds.
func fcmWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFCMRefusedKeySuspendsTheProject: when FCM refuses a project's
// credentials, every package the project serves stops being sent, not only
// the package whose push met the refusal (its pushes wait for the next
// check of the credentials), and push status names the project.
func TestFCMRefusedKeySuspendsTheProject(t *testing.T) {
	srv, login := startDevServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	emu := srv.FCMEmulator()
	const tokA, tokB = "bob-a:APA91b", "bob-b:APA91b"
	emu.Script(tokA, emulator.Step{Status: 401, Forever: true}) // the key is refused, fresh token or not
	bob := login("bob", "bob-a")
	if _, err := bob.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderFCM, Token: tokA, App: "com.example.a"}); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	alice := login("alice", "alice-phone")
	defer alice.Close()
	msg := client.TextMessage("hi")
	msg.Push = &herald.PushConfig{Title: "Alice", Content: "hi"}
	if _, err := alice.SendPeerMessage(ctx, "bob", msg); err != nil {
		t.Fatal(err)
	}
	fcmWaitFor(t, "the project to be suspended", func() bool { return len(srv.Push().Suspended()) == 1 })
	if s := srv.Push().Suspended()[0]; s.Provider != herald.ProviderFCM || s.App != "project herald-dev" {
		t.Fatalf("suspended %+v, want the fcm project herald-dev", s)
	}

	// Another package of the same project: not sent at all.
	bob2 := login("bob", "bob-b")
	if _, err := bob2.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderFCM, Token: tokB, App: "com.example.b"}); err != nil {
		t.Fatal(err)
	}
	bob2.Close()
	received := emu.Stats().Received
	sent, err := alice.SendPeerMessage(ctx, "bob", msg)
	if err != nil {
		t.Fatal(err)
	}
	fcmWaitFor(t, "the push to wait for the suspension", func() bool {
		log, err := srv.Push().Log(ctx, store.PushLogQuery{MsgID: sent.ID})
		return err == nil && len(log) > 0 && log[0].Outcome == herald.PushRetry && strings.Contains(log[0].Reason, "suspended")
	})
	if got := emu.Stats().Received - received; got != 0 || len(emu.Arrived(tokB)) != 0 {
		t.Fatalf("FCM received %d more requests (%d arrived for the other package), want none: the project's key is refused", got, len(emu.Arrived(tokB)))
	}
}

// startDevServer runs a server in development mode (built-in emulators)
// with a short ack window and fast retries, and returns it with a function
// that logs a user in on a device through the SDK.
func startDevServer(t *testing.T) (*Server, func(user, device string) *client.Client) {
	t.Helper()
	return startDevServerWith(t, nil)
}

// startDevServerWith is startDevServer, calling before (when not nil) on
// the server made, before it starts.
func startDevServerWith(t *testing.T, before func(*Server)) (*Server, func(user, device string) *client.Client) {
	t.Helper()
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	cfg.PushAckWindow, cfg.PushRetryBase, cfg.PushRetryMax = 300*time.Millisecond, 20*time.Millisecond, 100*time.Millisecond
	secret := []byte("0123456789abcdef0123456789abcdef")
	srv, err := New(context.Background(), cfg, secret, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(srv)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv, func(user, device string) *client.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := client.New(srv.URL(), client.Options{DeviceID: device})
		tok, err := token.Mint(secret, user, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(ctx, user, tok); err != nil {
			t.Fatal(err)
		}
		return c
	}
}
