package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

// TestHMSPushFileRefusesBadSecrets: a secret file that is missing, empty
// or not a secret is refused at start, naming the file and what is wrong,
// never quoting it.
func TestHMSPushFileRefusesBadSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("empty.txt", " \n")
	write("binary.txt", "abc\x00\x01TOPSECRET")
	write("two-lines.txt", "abc\nTOPSECRET\n")
	write("ok.txt", "  good-secret\n")
	write("ca.pem", "not a certificate")
	cases := []struct {
		name string
		app  HMSApp
		want []string
	}{
		{"missing file", HMSApp{AppID: "1", AppSecretFile: "nope.txt", Packages: []string{"a.b"}}, []string{"app_secret_file", "nope.txt"}},
		{"empty file", HMSApp{AppID: "1", AppSecretFile: "empty.txt", Packages: []string{"a.b"}}, []string{"empty.txt", "is empty"}},
		{"binary file", HMSApp{AppID: "1", AppSecretFile: "binary.txt", Packages: []string{"a.b"}}, []string{"binary.txt", "not printable"}},
		{"two lines", HMSApp{AppID: "1", AppSecretFile: "two-lines.txt", Packages: []string{"a.b"}}, []string{"two-lines.txt", "one line"}},
		{"both", HMSApp{AppID: "1", AppSecret: "x", AppSecretFile: "ok.txt", Packages: []string{"a.b"}}, []string{"app_secret and app_secret_file"}},
		{"none", HMSApp{AppID: "1", Packages: []string{"a.b"}}, []string{"no secret"}},
		{"bad ca", HMSApp{AppID: "1", AppSecretFile: "ok.txt", Packages: []string{"a.b"}, CAFile: "ca.pem"}, []string{"ca.pem", "no PEM"}},
		{"no packages", HMSApp{AppID: "1", AppSecretFile: "ok.txt"}, []string{"Packages"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &PushFile{HMS: []HMSApp{tc.app}}
			_, err := f.hmsProvider(dir, config.Config{}, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "TOPSECRET") || strings.Contains(err.Error(), "good-secret") {
				t.Errorf("error quotes the secret: %v", err)
			}
		})
	}
	f := &PushFile{HMS: []HMSApp{{AppID: "1", AppSecretFile: "ok.txt", Packages: []string{"a.b"}}}}
	p, err := f.hmsProvider(dir, config.Config{}, slog.New(slog.DiscardHandler))
	if err != nil || p == nil || !p.HasApp("a.b") {
		t.Fatalf("good file: %v %v", p, err)
	}
	p.Close()
	if p, err := (&PushFile{}).hmsProvider(dir, config.Config{}, nil); p != nil || err != nil {
		t.Errorf("no hms apps: %v %v, want nil nil", p, err)
	}
}

// TestDevHMSEndToEnd: the dev builder's provider delivers through the
// emulator it mounts on the APNs emulator.
func TestDevHMSEndToEnd(t *testing.T) {
	a := emulator.New(emulator.Config{})
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	emus := &pushEmulators{apns: a}
	p, err := devHMS(a, emus, config.Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if emus.hms == nil {
		t.Fatal("emus.hms not set")
	}
	d := herald.PushDevice{PushID: "p1", Provider: herald.ProviderHMS, Token: "hmsTOKEN1", App: "com.example.chat", Env: herald.EnvProduction}
	if !p.HasApp(d.App) {
		t.Fatal("dev provider does not serve any package")
	}
	c := push.Content{NotifID: "0b9d7c4e-8a51-4c3e-9f1a-2d6e5b7c8a90", Config: herald.PushConfig{Title: "Bob", Content: "hi"}, Conv: "c1", MsgID: 1, Seq: 1, From: "bob"}
	b, err := p.Render(&c, &d)
	if err != nil {
		t.Fatal(err)
	}
	res := p.Send(context.Background(), &push.Notification{ID: c.NotifID, Device: d, Type: push.TypeAlert, Expiration: time.Now().Add(time.Hour), Payload: b})
	if res.Verdict != push.Delivered {
		t.Fatalf("got %v %q", res.Verdict, res.Reason)
	}
	in := emus.hms.Inbox("hmsTOKEN1")
	if len(in) != 1 || !strings.Contains(string(in[0].Payload), `"title":"Bob"`) {
		t.Fatalf("inbox %v", in)
	}
}

// TestHMSCAFilePerApp: one app's ca_file (the emulator's, or a proxy's)
// applies to that app only: an app without one keeps the system roots, so
// it does not trust the emulator's certificate (and would trust Huawei's).
func TestHMSCAFilePerApp(t *testing.T) {
	a := emulator.New(emulator.Config{})
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h := emulator.NewHMS(emulator.HMSConfig{})
	h.Mount(a)
	h.AddApp("100001", "secret-a")
	h.AddApp("100002", "secret-b")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), a.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenURL := h.URL() + "/oauth2/v3/token"
	f := &PushFile{HMS: []HMSApp{
		{AppID: "100001", AppSecret: "secret-a", Packages: []string{"com.example.emu"}, TokenURL: tokenURL, PushURL: h.URL(), CAFile: "ca.pem"},
		{AppID: "100002", AppSecret: "secret-b", Packages: []string{"com.example.real"}, TokenURL: tokenURL, PushURL: h.URL()},
	}}
	p, err := f.hmsProvider(dir, config.Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	send := func(app string) push.Result {
		d := herald.PushDevice{PushID: "p1", Provider: herald.ProviderHMS, Token: "hmsTOKEN1", App: app, Env: herald.EnvProduction}
		c := push.Content{NotifID: "0b9d7c4e-8a51-4c3e-9f1a-2d6e5b7c8a90", Config: herald.PushConfig{Title: "Bob", Content: "hi"}}
		b, err := p.Render(&c, &d)
		if err != nil {
			t.Fatal(err)
		}
		return p.Send(context.Background(), &push.Notification{ID: c.NotifID, Device: d, Type: push.TypeAlert, Expiration: time.Now().Add(time.Hour), Payload: b})
	}
	if res := send("com.example.emu"); res.Verdict != push.Delivered {
		t.Fatalf("app with ca_file: got %v %q, want delivered", res.Verdict, res.Reason)
	}
	res := send("com.example.real")
	if res.Verdict == push.Delivered || !strings.Contains(res.Reason, "certificate") {
		t.Fatalf("app without ca_file: got %v %q, want a certificate error (the other app's ca_file must not apply)", res.Verdict, res.Reason)
	}
}
