package fcm

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

const app = "com.example.chat"

// clock is a test clock starting at the real time (the emulator checks
// JWT assertions, dated by oauth2 on the real clock, against it).
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	apns *emulator.APNs
	fcm  *emulator.FCM
	now  *clock
}

// newEnv starts an APNs emulator with the FCM emulator mounted on it.
func newEnv(t testing.TB) *env {
	t.Helper()
	c := newClock()
	a := emulator.New(emulator.Config{Now: c.Now})
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	f := emulator.NewFCM(emulator.FCMConfig{Now: c.Now})
	f.Mount(a)
	return &env{apns: a, fcm: f, now: c}
}

// project makes a service account for id on the emulator and a project
// config serving apps.
func (e *env) project(t testing.TB, id string, apps ...string) ProjectConfig {
	t.Helper()
	sa, err := e.fcm.ServiceAccount(id)
	if err != nil {
		t.Fatal(err)
	}
	return ProjectConfig{ServiceAccount: sa, Apps: apps, URL: e.fcm.URL(), RootCAs: e.apns.CertPool()}
}

func (e *env) provider(t *testing.T, cfg Config) *Provider {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = e.now.Now
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func device(token string) herald.PushDevice {
	return herald.PushDevice{Provider: herald.ProviderFCM, App: app, Token: token, Env: herald.EnvProduction, PushID: "push-" + token}
}

func content(id string) *push.Content {
	return &push.Content{
		NotifID: id,
		Config:  herald.PushConfig{Title: "Ada", Content: "hello <world>", Payload: `{"k":"v"}`},
		Conv:    "c1", MsgID: 7, Seq: 3, From: "ada",
	}
}

// note renders c for token and wraps it as the dispatcher does.
func note(t testing.TB, p *Provider, c *push.Content, token string) *push.Notification {
	t.Helper()
	d := device(token)
	b, err := p.Render(c, &d)
	if err != nil {
		t.Fatal(err)
	}
	typ := push.TypeAlert
	if c.Strategy.Type == push.TypeBackground {
		typ = push.TypeBackground
	}
	return &push.Notification{ID: c.NotifID, CollapseID: c.NotifID, Device: d, Type: typ, Payload: b}
}

// sent is the message the emulator received, decoded.
type sent struct {
	Token   string `json:"token"`
	Android struct {
		Priority     string `json:"priority"`
		TTL          string `json:"ttl"`
		CollapseKey  string `json:"collapse_key"`
		Notification *struct {
			ChannelID         string `json:"channel_id"`
			Sound             string `json:"sound"`
			Tag               string `json:"tag"`
			NotificationCount *int   `json:"notification_count"`
		} `json:"notification"`
	} `json:"android"`
	Data         map[string]string `json:"data"`
	Notification *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"notification"`
}

func decodeSent(t *testing.T, n emulator.Notification) sent {
	t.Helper()
	var s sent
	if err := json.Unmarshal(n.Payload, &s); err != nil {
		t.Fatalf("payload %s: %v", n.Payload, err)
	}
	return s
}

const (
	id1 = "6f1c1a52-8d3e-4c1b-9a51-1f2e3d4c5b6a"
	id2 = "0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
)
