package client

import (
	"context"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// TestPushRegisteredAgainAfterLogin: the registrations made on a Client are
// made again after the next Login, except the one unregistered: removing
// the VoIP device keeps the alert device registered.
func TestPushRegisteredAgainAfterLogin(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	ctx := context.Background()
	const alertTok, voipTok = "aa11", "bb22"
	register := func(p herald.PushProvider, tok, id string) {
		t.Helper()
		res := make(chan error, 1)
		go func() {
			_, err := c.RegisterPush(ctx, PushRegistration{Provider: p, Token: tok, App: "com.example", Environment: herald.EnvProduction})
			res <- err
		}()
		f := fc.expect(t, proto.OpRegisterPush)
		fc.reply(f.ID, proto.RegisterPushReply{PushID: id})
		if err := wait(t, res); err != nil {
			t.Fatalf("RegisterPush(%s): %v", p, err)
		}
	}
	register(herald.ProviderAPNs, alertTok, "pd_alert")
	register(herald.ProviderAPNsVoIP, voipTok, "pd_voip")
	res := make(chan error, 1)
	go func() { res <- c.UnregisterPush(ctx, "pd_voip") }()
	f := fc.expect(t, proto.OpUnregisterPush)
	fc.reply(f.ID, struct{}{})
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}

	go func() { res <- c.Logout(ctx) }()
	f = fc.expect(t, proto.OpLogout)
	fc.reply(f.ID, struct{}{})
	fc.closeWith(proto.CloseNormal)
	if err := wait(t, res); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	done := goLogin(c, "me")
	fc2 := srv.accept(t)
	fc2.login(t, loginReply("me"))
	fc2.sync()
	f = fc2.expect(t, proto.OpRegisterPush)
	if req := decode[proto.RegisterPushRequest](t, f); req.Token != alertTok || req.Provider != string(herald.ProviderAPNs) {
		t.Errorf("registered again: %+v, want the alert token", req)
	}
	fc2.reply(f.ID, proto.RegisterPushReply{PushID: "pd_alert"})
	if err := wait(t, done); err != nil {
		t.Fatalf("Login: %v", err)
	}
	fc2.noRequest(t, 50*time.Millisecond) // not the VoIP token
}
