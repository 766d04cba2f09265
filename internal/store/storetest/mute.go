package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/herald-im/herald"
)

func (f *fixture) setMuted(t *testing.T, user, conv string, muted bool) {
	t.Helper()
	if err := f.s.SetConversationMuted(context.Background(), user, conv, muted); err != nil {
		t.Fatalf("SetConversationMuted(%q, %q, %v): %v", user, conv, muted, err)
	}
}

func (f *fixture) muted(t *testing.T) map[string][]string {
	t.Helper()
	got, err := f.s.MutedConversations(context.Background())
	if err != nil {
		t.Fatalf("MutedConversations: %v", err)
	}
	if got == nil {
		t.Fatal("MutedConversations returned a nil map")
	}
	return got
}

// testMuteSetAndList: each step changes one user's status for one
// conversation, which need not have messages; MutedConversations shows
// every user's muted keys, sorted.
func testMuteSetAndList(t *testing.T, f *fixture) {
	if got := f.muted(t); len(got) != 0 {
		t.Errorf("MutedConversations of a new store = %v, want empty", got)
	}
	ab, aa := herald.PeerConversationKey("alice", "bob"), herald.PeerConversationKey("aaron", "alice")
	// aa is longer than ab but sorts first: order must not follow lengths.
	steps := []struct {
		name  string
		user  string
		conv  string
		muted bool
		want  map[string][]string
	}{
		{"mute a conversation without messages", "alice", ab, true, map[string][]string{"alice": {ab}}},
		{"mute it again", "alice", ab, true, map[string][]string{"alice": {ab}}},
		{"mute a second one", "alice", aa, true, map[string][]string{"alice": {aa, ab}}},
		{"the other participant's status is their own", "bob", ab, true, map[string][]string{"alice": {aa, ab}, "bob": {ab}}},
		{"unmute", "alice", ab, false, map[string][]string{"alice": {aa}, "bob": {ab}}},
		{"unmute again", "alice", ab, false, map[string][]string{"alice": {aa}, "bob": {ab}}},
		{"unmute one never muted", "carol", ab, false, map[string][]string{"alice": {aa}, "bob": {ab}}},
		{"unmute a user's last", "bob", ab, false, map[string][]string{"alice": {aa}}},
	}
	for _, st := range steps {
		f.setMuted(t, st.user, st.conv, st.muted)
		if got, want := fmt.Sprint(f.muted(t)), fmt.Sprint(st.want); got != want {
			t.Errorf("%s: MutedConversations = %s, want %s", st.name, got, want)
		}
	}
}

// testMuteConversations: Conversations reports each user's own status, and
// a muted conversation keeps its unread count.
func testMuteConversations(t *testing.T, f *fixture) {
	ab, ac := herald.PeerConversationKey("alice", "bob"), herald.PeerConversationKey("alice", "carol")
	f.append(t, f.texts(3, "bob", "alice")...)
	f.append(t, f.text("alice", "bob"), f.text("carol", "alice"))
	f.setMuted(t, "alice", ab, true)

	type entry struct {
		user, conv string
		muted      bool
		unread     int
	}
	check := func(step string, want []entry) {
		t.Helper()
		for _, w := range want {
			c := f.conversation(t, w.user, w.conv)
			if got := (entry{w.user, w.conv, c.Muted, c.Unread}); got != w {
				t.Errorf("%s: %s's %s: muted %v unread %d, want muted %v unread %d", step, w.user, w.conv, got.muted, got.unread, w.muted, w.unread)
			}
		}
	}
	check("alice muted bob", []entry{
		{"alice", ab, true, 3},
		{"alice", ac, false, 1},
		{"bob", ab, false, 1},
	})
	f.append(t, f.text("bob", "alice"))
	check("bob wrote again", []entry{{"alice", ab, true, 4}})
	f.setMuted(t, "alice", ab, false)
	check("alice unmuted bob", []entry{{"alice", ab, false, 4}, {"bob", ab, false, 1}})
}

// testMuteInvalid: an empty user or conversation is refused and stores
// nothing.
func testMuteInvalid(t *testing.T, f *fixture) {
	for _, tt := range []struct {
		name, user, conv string
	}{
		{"empty user", "", herald.PeerConversationKey("alice", "bob")},
		{"empty conversation", "alice", ""},
	} {
		for _, muted := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s muted=%v", tt.name, muted), func(t *testing.T) {
				err := f.s.SetConversationMuted(context.Background(), tt.user, tt.conv, muted)
				wantCode(t, "SetConversationMuted", err, herald.CodeInvalidArgument)
			})
		}
	}
	if got := f.muted(t); len(got) != 0 {
		t.Errorf("MutedConversations after invalid calls = %v, want empty", got)
	}
}
