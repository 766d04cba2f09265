package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
)

// loginErr logs c in as user with a fresh token and returns the error.
func loginErr(t *testing.T, c *client.Client, user string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Login(ctx, user, mint(t, user, time.Hour))
}

func wantAPICode(t *testing.T, what string, err error, status int) {
	t.Helper()
	var ae *apiclient.Error
	if !errors.As(err, &ae) || ae.Status != status {
		t.Errorf("%s: %v, want HTTP %d", what, err, status)
	}
}

// TestUserRegistrationRequired: with require-registration, an unregistered
// user's login is refused (forbidden) and a registered one's succeeds.
// Unregistering bob kicks his live session (KickedOut) and removes his
// phone, which gets no push for a later message, while carol's phone, as a
// witness, gets hers; his messages stay, for when he is registered again.
func TestUserRegistrationRequired(t *testing.T) {
	srv := startPushServer(t, func(c *config.Config) { c.RequireRegistration = true })
	emu := srv.Emulator()
	ctx := apiCtx(t)
	api := backend(srv)

	stranger := newClient(t, srv.URL(), "alice-phone", newInbox())
	if err := loginErr(t, stranger, "alice"); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("login of unregistered alice = %v, want ErrForbidden", err)
	}
	rep, err := api.RegisterUsers(ctx,
		apiclient.RegisterUser{UserID: "alice", UserName: "Alice"},
		apiclient.RegisterUser{UserID: "bob", UserName: "Bob", AvatarURL: "https://cdn.example.com/bob.png"},
		apiclient.RegisterUser{UserID: "carol"},
	)
	if err != nil || rep.Registered != 3 || rep.Failed != 0 {
		t.Fatalf("RegisterUsers = %+v, %v; want 3 registered", rep, err)
	}
	if u, err := api.User(ctx, "bob"); err != nil || u.UserName != "Bob" || u.AvatarURL != "https://cdn.example.com/bob.png" {
		t.Fatalf("User(bob) = %+v, %v", u, err)
	}

	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice") // registered now: the refusal was not cached past the registration
	bobIn := newInbox()
	bob := newClient(t, srv.URL(), "bob-phone", bobIn)
	login(t, bob, "bob")
	bobTok, carolTok := apnsToken(701), apnsToken(702)
	registerPush(t, bob, bobTok, herald.EnvDevelopment)
	carol := newClient(t, srv.URL(), "carol-phone", newInbox())
	login(t, carol, "carol")
	registerPush(t, carol, carolTok, herald.EnvDevelopment)
	carol.Close() // offline, still bound: she is pushed

	un, err := api.UnregisterUser(ctx, "bob")
	if err != nil || un.Sessions != 1 || un.Devices != 1 {
		t.Fatalf("UnregisterUser(bob) = %+v, %v; want 1 session kicked and 1 device removed", un, err)
	}
	bobIn.waitState(t, client.EventKickedOut)
	if devs, err := api.Devices(ctx, "bob"); err != nil || len(devs) != 0 {
		t.Errorf("bob's devices after unregistering = %+v, %v; want none", devs, err)
	}
	_, err = api.User(ctx, "bob")
	wantAPICode(t, "User(bob) after unregistering", err, 404)
	_, err = api.UnregisterUser(ctx, "bob")
	wantAPICode(t, "UnregisterUser(bob) twice", err, 404)
	again := newClient(t, srv.URL(), "bob-phone", newInbox())
	if err := loginErr(t, again, "bob"); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("login of unregistered bob = %v, want ErrForbidden", err)
	}

	// A message to bob, then one to carol: carol's push shows the
	// dispatcher got past bob's message, which pushed nothing.
	toBob, err := alice.SendPeerMessage(ctx, "bob", pushMessage("are you there?"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendPeerMessage(ctx, "carol", pushMessage("hello carol")); err != nil {
		t.Fatal(err)
	}
	waitInbox(t, emu, carolTok, 1)
	if n := emu.Inbox(bobTok); len(n) != 0 {
		t.Errorf("bob's phone got %d pushes after he was unregistered, want none", len(n))
	}

	// Registered again, bob finds the message: messages outlive a user.
	if _, err := api.RegisterUsers(ctx, apiclient.RegisterUser{UserID: "bob"}); err != nil {
		t.Fatal(err)
	}
	backIn := newInbox()
	back := newClient(t, srv.URL(), "bob-phone", backIn)
	login(t, back, "bob")
	if got := backIn.wait(t, 1); got[0].ID != toBob.ID || got[0].Text != "are you there?" {
		t.Errorf("bob synced %+v, want message %d", got[0], toBob.ID)
	}
}

// TestUserRegistrationOptional: without require-registration anyone with
// a valid token logs in, registered or not; unregistering a registered
// user still kicks their sessions, and they may log in again.
func TestUserRegistrationOptional(t *testing.T) {
	srv := startServer(t, nil)
	ctx := apiCtx(t)
	api := backend(srv)
	for _, u := range []string{"dave", "erin"} {
		login(t, newClient(t, srv.URL(), u+"-phone", newInbox()), u)
	}
	_, err := api.User(ctx, "dave")
	wantAPICode(t, "User of unregistered dave", err, 404)
	if _, err := api.RegisterUsers(ctx, apiclient.RegisterUser{UserID: "erin"}); err != nil {
		t.Fatal(err)
	}
	erinIn := newInbox()
	erin := newClient(t, srv.URL(), "erin-tablet", erinIn)
	login(t, erin, "erin")
	un, err := api.UnregisterUser(ctx, "erin")
	if err != nil || un.Sessions != 2 {
		t.Fatalf("UnregisterUser(erin) = %+v, %v; want her 2 sessions kicked", un, err)
	}
	erinIn.waitState(t, client.EventKickedOut)
	login(t, newClient(t, srv.URL(), "erin-phone", newInbox()), "erin")
}
