package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

// The user part of the suite: RegisterUsers, User and UnregisterUser.

// user returns a new user record; RegisteredAt is the fixture's clock.
func (f *fixture) user(id string) herald.User {
	f.at = f.at.Add(time.Millisecond)
	return herald.User{ID: id, Name: "name of " + id, Avatar: "https://cdn.example.com/" + id + ".png",
		Extended: `{"level":"` + id + `"}`, RegisteredAt: f.at}
}

func (f *fixture) registerUsers(t *testing.T, users ...herald.User) []herald.User {
	t.Helper()
	got, err := f.s.RegisterUsers(context.Background(), users)
	if err != nil {
		t.Fatalf("RegisterUsers: %v", err)
	}
	return got
}

func userString(u herald.User) string {
	return fmt.Sprintf("{%q %q %q %q %d}", u.ID, u.Name, u.Avatar, u.Extended, u.RegisteredAt.UnixMilli())
}

// sameUser checks that User(want.ID) answers want, field by field.
func sameUser(t *testing.T, f *fixture, what string, want herald.User) {
	t.Helper()
	got, err := f.s.User(context.Background(), want.ID)
	if err != nil {
		t.Errorf("%s: User(%q): %v", what, want.ID, err)
		return
	}
	if userString(got) != userString(want) || !got.RegisteredAt.Equal(want.RegisteredAt) {
		t.Errorf("%s: User(%q)\n got %s\nwant %s", what, want.ID, userString(got), userString(want))
	}
}

func testUserRegister(t *testing.T, f *fixture) {
	ctx := context.Background()
	_, err := f.s.User(ctx, "alice")
	wantCode(t, "User of a user never registered", err, herald.CodeNotFound)

	alice, bob := f.user("alice"), f.user("bob")
	bob.Name, bob.Avatar, bob.Extended = "", "", "" // every field but the ID is optional
	got := f.registerUsers(t, alice, bob)
	if len(got) != 2 || userString(got[0]) != userString(alice) || userString(got[1]) != userString(bob) {
		t.Errorf("RegisterUsers returned %v, want alice and bob as given", got)
	}
	sameUser(t, f, "alice", alice)
	sameUser(t, f, "bob with empty fields", bob)

	// Unicode, and fields at their limits, read back unchanged.
	carol := f.user("carol")
	carol.Name = strings.Repeat("é", herald.MaxUserNameBytes/2)
	carol.Avatar = "https://cdn.example.com/" + strings.Repeat("a", herald.MaxUserAvatarBytes-24)
	carol.Extended = strings.Repeat("{}", herald.MaxUserExtendedBytes/2)
	carol.RegisteredAt = carol.RegisteredAt.Add(123 * time.Microsecond) // cut to the millisecond
	got = f.registerUsers(t, carol)
	carol.RegisteredAt = carol.RegisteredAt.Truncate(time.Millisecond)
	if userString(got[0]) != userString(carol) {
		t.Errorf("RegisterUsers(carol)\n got %s\nwant %s", userString(got[0]), userString(carol))
	}
	sameUser(t, f, "carol", carol)

	got = f.registerUsers(t)
	if len(got) != 0 {
		t.Errorf("RegisterUsers() = %v, want nothing", got)
	}
}

func testUserUpdate(t *testing.T, f *fixture) {
	alice := f.user("alice")
	f.registerUsers(t, alice)
	again := f.user("alice")
	again.Name, again.Avatar, again.Extended = "Alice B.", "", "{}"
	dave := f.user("dave")
	got := f.registerUsers(t, again, dave)
	want := again
	want.RegisteredAt = alice.RegisteredAt
	if len(got) != 2 || userString(got[0]) != userString(want) || userString(got[1]) != userString(dave) {
		t.Errorf("RegisterUsers of a registered user and a new one = %v, want %s and %s", got, userString(want), userString(dave))
	}
	sameUser(t, f, "alice after update", want)
	sameUser(t, f, "dave", dave)
}

func testUserRegisterInvalid(t *testing.T, f *fixture) {
	ctx := context.Background()
	noTime := f.user("bob")
	noTime.RegisteredAt = time.Time{}
	for _, tt := range []struct {
		name  string
		users []herald.User
	}{
		{"empty ID", []herald.User{f.user("alice"), {RegisteredAt: baseTime}}},
		{"no RegisteredAt", []herald.User{f.user("alice"), noTime}},
		{"listed twice", []herald.User{f.user("alice"), f.user("carol"), f.user("alice")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.s.RegisterUsers(ctx, tt.users)
			wantCode(t, "RegisterUsers", err, herald.CodeInvalidArgument)
			for _, id := range []string{"alice", "carol"} {
				_, err := f.s.User(ctx, id)
				wantCode(t, "User("+id+") after a refused batch", err, herald.CodeNotFound)
			}
		})
	}
}

func testUserUnregister(t *testing.T, f *fixture) {
	ctx := context.Background()
	wantCode(t, "UnregisterUser of a user never registered", f.s.UnregisterUser(ctx, "alice"), herald.CodeNotFound)
	alice, bob := f.user("alice"), f.user("bob")
	f.registerUsers(t, alice, bob)
	if err := f.s.UnregisterUser(ctx, "alice"); err != nil {
		t.Fatalf("UnregisterUser(alice): %v", err)
	}
	_, err := f.s.User(ctx, "alice")
	wantCode(t, "User after UnregisterUser", err, herald.CodeNotFound)
	wantCode(t, "UnregisterUser twice", f.s.UnregisterUser(ctx, "alice"), herald.CodeNotFound)
	sameUser(t, f, "bob, not unregistered", bob)

	// Registered again: a new user, with the new RegisteredAt.
	back := f.user("alice")
	back.Name = "Alice again"
	got := f.registerUsers(t, back)
	if userString(got[0]) != userString(back) {
		t.Errorf("RegisterUsers after UnregisterUser = %s, want %s", userString(got[0]), userString(back))
	}
	sameUser(t, f, "alice registered again", back)
}

// testUserUnregisterLeavesTheRest: the user's messages, conversations and
// push devices are not the user record's; removing them is the callers'.
func testUserUnregisterLeavesRest(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.registerUsers(t, f.user("alice"))
	f.append(t, f.text("alice", "bob"), f.text("bob", "alice"))
	dev := f.register(t, pushDevice("alice", "phone", "a1a1"))
	if err := f.s.UnregisterUser(ctx, "alice"); err != nil {
		t.Fatalf("UnregisterUser(alice): %v", err)
	}
	if got := f.all(t, herald.PeerConversationKey("alice", "bob")); len(got) != 2 {
		t.Errorf("messages after UnregisterUser: %d, want 2", len(got))
	}
	devs, err := f.s.PushDevices(ctx)
	if err != nil || len(devs) != 1 || devs[0].PushID != dev.PushID {
		t.Errorf("PushDevices after UnregisterUser = %v, %v; want alice's device", devs, err)
	}
}

// reopenUsers registers users (one updated, one unregistered) and returns
// the checks to run on the reopened store.
func reopenUsers(t *testing.T, f *fixture) func() {
	ctx := context.Background()
	una, gone := f.user("una"), f.user("vic")
	f.registerUsers(t, una, gone)
	upd := f.user("una")
	upd.Name = "Una updated"
	f.registerUsers(t, upd)
	upd.RegisteredAt = una.RegisteredAt
	if err := f.s.UnregisterUser(ctx, "vic"); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		sameUser(t, f, "una after reopen", upd)
		_, err := f.s.User(ctx, "vic")
		wantCode(t, "User of an unregistered user after reopen", err, herald.CodeNotFound)
	}
}
