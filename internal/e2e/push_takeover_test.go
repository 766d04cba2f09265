package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
)

// TestPushTokenTakeoverRefused: mallory registers bob's APNs token (leaked)
// from her own device. The registration is refused with conflict and tells
// her nothing of bob's device; bob keeps his device and his pushes. The
// token moves only from a session on bob's device ID (a user switch on the
// phone), or after bob logged out.
func TestPushTokenTakeoverRefused(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok := apnsToken(70)
	bob := newClient(t, srv.URL(), "bob-phone", newInbox())
	login(t, bob, "bob")
	bobID := registerPush(t, bob, tok, herald.EnvProduction)
	bob.Close()

	mallory := newClient(t, srv.URL(), "mallory-laptop", newInbox())
	login(t, mallory, "mallory")
	id, err := mallory.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: tok, App: testApp, Environment: herald.EnvProduction})
	if !errors.Is(err, client.ErrConflict) || id != "" {
		t.Fatalf("mallory registering bob's token: push ID %q, error %v; want no ID and ErrConflict", id, err)
	}
	if devs := srv.Push().Devices("bob"); len(devs) != 1 || devs[0].PushID != bobID || devs[0].Device != "bob-phone" {
		t.Errorf("bob's devices after the refused takeover: %+v; want his %s on bob-phone", devs, bobID)
	}
	if devs := srv.Push().Devices("mallory"); len(devs) != 0 {
		t.Errorf("mallory's devices: %+v; want none", devs)
	}
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	m, err := alice.SendPeerMessage(ctx, "bob", pushMessage("still yours"))
	if err != nil {
		t.Fatal(err)
	}
	if log := waitLog(t, srv, m.ID, herald.PushSent); log[0].User != "bob" || log[0].PushID != bobID {
		t.Errorf("delivery log %+v; want the push sent to bob's %s", log, bobID)
	}
	if got := waitInbox(t, emu, tok, 1); len(got) != 1 {
		t.Errorf("bob's phone shows %d notifications, want 1", len(got))
	}

	// A user switch on bob's phone (same device ID) takes the token over.
	carol := newClient(t, srv.URL(), "bob-phone", newInbox())
	login(t, carol, "carol")
	if got := registerPush(t, carol, tok, herald.EnvProduction); got != bobID {
		t.Errorf("carol on bob's phone got push ID %q, want the device's %q", got, bobID)
	}
	// Once carol logged out, anyone may register it.
	if err := carol.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if got := registerPush(t, mallory, tok, herald.EnvProduction); got != bobID {
		t.Errorf("mallory after the holder's logout got push ID %q, want %q", got, bobID)
	}
	if n := srv.Push().Stats().TokenConflicts; n != 1 {
		t.Errorf("token conflicts counted: %d, want 1", n)
	}
}
