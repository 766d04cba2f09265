package push_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// TestMutedConversationIsNotPushed: a recipient who muted the conversation
// gets no push for its messages, across a restart of the service: the job
// is skipped, and the delivery log says why; unmuting restores pushes; a
// job planned before the mute is skipped when it falls due.
func TestMutedConversationIsNotPushed(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, push.Config{AckWindow: 300 * time.Millisecond}, nil)
	const tokNo = 20
	h.device("bob", tokNo)
	conv := herald.PeerConversationKey("alice", "bob")
	setMuted := func(muted bool) {
		t.Helper()
		if err := h.svc.SetMuted(ctx, "bob", conv, muted); err != nil {
			t.Fatalf("SetMuted(%v): %v", muted, err)
		}
	}
	// sendMuted sends to bob while muted: the job is skipped and logged.
	sendMuted := func(step string) {
		t.Helper()
		before := h.svc.Stats()
		m := h.send("bob")
		log := h.waitLog(m.ID, herald.PushSkipped)
		if len(log) != 1 || log[0].Reason != "conversation muted by the recipient" {
			t.Errorf("%s: delivery log %+v, want one skip for the mute", step, log)
		}
		if got, want := h.svc.Stats().MutedSkips-before.MutedSkips, int64(1); got != want {
			t.Errorf("%s: MutedSkips rose by %d, want %d", step, got, want)
		}
		if n := len(h.emu.Inbox(token(tokNo))); n != 0 {
			t.Errorf("%s: bob's phone got %d pushes", step, n)
		}
	}

	setMuted(true)
	sendMuted("muted")

	// The mute is in the store: a restarted service loads it.
	h.stop()
	h.start()
	sendMuted("muted, after a restart")

	setMuted(false)
	m := h.send("bob")
	h.waitLog(m.ID, herald.PushSent)
	if got, want := len(h.emu.Inbox(token(tokNo))), 1; got != want {
		t.Errorf("after unmuting: bob's phone got %d pushes, want %d (none for the muted messages)", got, want)
	}

	// A job planned for a live session waits for the ack window; muting
	// meanwhile skips it.
	h.pres.mu.Lock()
	h.pres.live["bob/phone"] = true
	h.pres.mu.Unlock()
	m = h.send("bob")
	setMuted(true)
	log := h.waitLog(m.ID, herald.PushSkipped)
	if !strings.Contains(log[0].Reason, "muted") {
		t.Errorf("delivery log reason %q, want it to say the conversation is muted", log[0].Reason)
	}
	if got, want := len(h.emu.Inbox(token(tokNo))), 1; got != want {
		t.Errorf("after muting during the ack window: bob's phone got %d pushes in all, want %d", got, want)
	}
}

// TestSetMutedChecksTheConversation: a user can only mute a conversation
// of their own.
func TestSetMutedChecksTheConversation(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	for _, tt := range []struct {
		name, user, conv string
		want             herald.Code
	}{
		{"own conversation", "bob", herald.PeerConversationKey("alice", "bob"), ""},
		{"someone else's", "carol", herald.PeerConversationKey("alice", "bob"), herald.CodeInvalidArgument},
		{"not a conversation key", "bob", "bob", herald.CodeInvalidArgument},
		{"empty", "bob", "", herald.CodeInvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := h.svc.SetMuted(context.Background(), tt.user, tt.conv, true)
			if got := herald.ErrorCode(err); got != tt.want {
				t.Errorf("SetMuted(%q, %q) = %v; want code %q", tt.user, tt.conv, err, tt.want)
			}
		})
	}
	muted, err := h.st.MutedConversations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(muted), 1; got != want {
		t.Errorf("store holds mutes of %d users (%v), want %d: refused calls store nothing", got, muted, want)
	}
}

// TestMutesPerUserAreBounded: past MaxMutes a user cannot mute one more
// conversation (unmuting, and muting one already muted, still work).
func TestMutesPerUserAreBounded(t *testing.T) {
	const limit = 5
	h := newHarness(t, push.Config{MaxMutes: limit}, nil)
	ctx := context.Background()
	for i := range limit {
		// The in-memory set is what is bounded; fill it through the service.
		if err := h.svc.SetMuted(ctx, "bob", herald.PeerConversationKey("bob", "u"+strconv.Itoa(i)), true); err != nil {
			t.Fatalf("mute %d: %v", i, err)
		}
	}
	err := h.svc.SetMuted(ctx, "bob", herald.PeerConversationKey("bob", "one-more"), true)
	if herald.ErrorCode(err) != herald.CodeTooLarge {
		t.Errorf("mute past the limit = %v, want too_large", err)
	}
	if err := h.svc.SetMuted(ctx, "bob", herald.PeerConversationKey("bob", "u0"), true); err != nil {
		t.Errorf("muting an already muted conversation at the limit: %v", err)
	}
	if err := h.svc.SetMuted(ctx, "bob", herald.PeerConversationKey("bob", "u0"), false); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.SetMuted(ctx, "bob", herald.PeerConversationKey("bob", "one-more"), true); err != nil {
		t.Errorf("mute after unmuting one: %v", err)
	}
	if err := h.svc.SetMuted(ctx, "carol", herald.PeerConversationKey("carol", "x"), true); err != nil {
		t.Errorf("another user's mute: %v", err)
	}
}

// TestNoDeviceIsLogged: a message pushed to a recipient with no device
// leaves a note in the delivery log, so its push timeline says why
// nothing was sent; the note is not a push.
func TestNoDeviceIsLogged(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	m := h.send("nobody")
	log := h.waitLog(m.ID, herald.PushSkipped)
	if len(log) != 1 || log[0].User != "nobody" || log[0].PushID != "" || log[0].Reason != "no push device bound to the recipient" {
		t.Errorf("delivery log %+v, want one note for the recipient", log)
	}
	if st := h.svc.Stats(); st.Planned != 0 || st.Sent != 0 {
		t.Errorf("stats planned %d sent %d, want no push", st.Planned, st.Sent)
	}
}
