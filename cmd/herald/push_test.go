package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/token"
)

// TestPushCommands runs `herald push test` and `herald push log` against a
// server with its built-in emulator, as the README's tour does.
func TestPushCommands(t *testing.T) {
	secret := "push-cmd-secret-0123456789"
	t.Setenv("HERALD_SECRET", secret)
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr, cfg.Secret = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0", secret
	srv, err := server.New(context.Background(), cfg, []byte(secret), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	c := client.New(srv.URL(), client.Options{DeviceID: "phone"})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, _ := token.Mint([]byte(secret), "bob", time.Now(), time.Hour)
	if err := c.Login(ctx, "bob", tok); err != nil {
		t.Fatal(err)
	}
	const devTok = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	pushID, err := c.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: devTok, App: "com.example.chat", Environment: herald.EnvDevelopment})
	if err != nil {
		t.Fatal(err)
	}

	var out, errOut bytes.Buffer
	if err := run([]string{"push", "test", "--addr", srv.Addr(), "--push-id", pushID, "--title", "Hi", "--content", "there"}, &out, &errOut); err != nil {
		t.Fatalf("push test: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"ok   send", "HTTP 200", `"title":"Hi"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("push test output lacks %q:\n%s", want, out.String())
		}
	}
	if got := srv.Emulator().Inbox(devTok); len(got) != 1 {
		t.Errorf("emulator inbox holds %d notifications, want the test push", len(got))
	}

	out.Reset()
	if err := run([]string{"push", "log", "--addr", srv.Addr(), "--user", "bob"}, &out, &errOut); err != nil {
		t.Fatalf("push log: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "sent") || !strings.Contains(out.String(), pushID) || !strings.Contains(out.String(), "apns-id") {
		t.Errorf("push log output lacks the test push:\n%s", out.String())
	}

	out.Reset()
	if err := run([]string{"push", "status", "--addr", srv.Addr()}, &out, &errOut); err != nil {
		t.Fatalf("push status: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "no app suspended") || !strings.Contains(out.String(), "planned") {
		t.Errorf("push status output:\n%s\nwant the counters and no suspension", out.String())
	}

	// A device of each other vendor, through its built-in emulator: the
	// test push arrives, and neither command calls its ID an apns-id.
	res, err := http.Get("http://" + srv.Addr() + server.VAPIDKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	var vapid struct {
		PublicKey string `json:"public_key"`
	}
	json.NewDecoder(res.Body).Decode(&vapid)
	res.Body.Close()
	key, _ := base64.RawURLEncoding.DecodeString(vapid.PublicKey)
	sub, err := srv.WebPushEmulator().Subscribe(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		reg   client.PushRegistration
		inbox func() int
	}{
		{client.PushRegistration{Provider: herald.ProviderFCM, Token: "fcm-bob:1", App: "com.example.chat"},
			func() int { return len(srv.FCMEmulator().Inbox("fcm-bob:1")) }},
		{client.PushRegistration{Provider: herald.ProviderHMS, Token: "hmsBOB1", App: "com.example.chat"},
			func() int { return len(srv.HMSEmulator().Inbox("hmsBOB1")) }},
		{client.PushRegistration{Provider: herald.ProviderWebPush, Token: sub.Token(), App: "web"},
			func() int { return len(srv.WebPushEmulator().Inbox(sub.Token())) }},
	} {
		t.Run(string(tt.reg.Provider), func(t *testing.T) {
			pid, err := c.RegisterPush(ctx, tt.reg)
			if err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			if err := run([]string{"push", "test", "--addr", srv.Addr(), "--push-id", pid, "--title", "Hi", "--content", "there"}, &out, &errOut); err != nil {
				t.Fatalf("push test: %v\n%s%s", err, out.String(), errOut.String())
			}
			if !strings.Contains(out.String(), "ok   send") || !strings.Contains(out.String(), "notification id") || strings.Contains(out.String(), "apns-id") {
				t.Errorf("push test output:\n%s\nwant the send stage ok, a notification id and no apns-id", out.String())
			}
			if n := tt.inbox(); n != 1 {
				t.Errorf("emulator inbox holds %d notifications, want the test push", n)
			}
			out.Reset()
			if err := run([]string{"push", "log", "--addr", srv.Addr(), "--push-id", pid}, &out, &errOut); err != nil {
				t.Fatalf("push log: %v\n%s", err, errOut.String())
			}
			if got := out.String(); !strings.Contains(got, "sent") || !strings.Contains(got, string(tt.reg.Provider)) ||
				!strings.Contains(got, "notification id") || strings.Contains(got, "apns-id") {
				t.Errorf("push log output:\n%s\nwant the sent %s push with a notification id and no apns-id", got, tt.reg.Provider)
			}
		})
	}

	out.Reset()
	err = run([]string{"push", "test", "--addr", srv.Addr(), "--push-id", "pd_unknown"}, &out, &errOut)
	if err == nil || !strings.Contains(out.String(), "FAIL device") {
		t.Errorf("push test to an unknown push ID: err %v, output:\n%s\nwant an error and the device stage failed", err, out.String())
	}
	if err := run([]string{"push", "log", "--addr", srv.Addr()}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Errorf("push log without a filter: %v, want an error naming the filters", err)
	}
}
