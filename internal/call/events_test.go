package call

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

type eventLog struct {
	mu  sync.Mutex
	got []herald.Event
}

func (l *eventLog) Emit(e herald.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, e)
}

func (l *eventLog) take() []herald.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.got
	l.got = nil
	return out
}

// TestEventsAfterEachStoredChange checks the event of each call change:
// its type, who acted, and that the call it carries is the stored one,
// without the push configuration.
func TestEventsAfterEachStoredChange(t *testing.T) {
	st, clock, n := newMemStore(), newFakeClock(), newFakeNotifier()
	n.online("alice", alicePhone)
	n.online("bob", bobPhone)
	log := &eventLog{}
	svc := New(st, &fakePusher{n: n}, Config{Now: clock.Now, AfterFunc: clock.AfterFunc, MaxInvitees: 3, Events: log})
	svc.SetNotifier(n)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	ctx := context.Background()
	want := func(typ herald.EventType, user, reason string, id string) herald.Event {
		t.Helper()
		got := log.take()
		if len(got) != 1 {
			t.Fatalf("%d events, want one %s: %+v", len(got), typ, got)
		}
		e := got[0]
		if e.Type != typ || e.User != user || e.Reason != reason || e.Call == nil || e.Call.ID != id || e.Call.Push != nil {
			t.Fatalf("event = %+v, want %s by %q (reason %q) of call %s without push", e, typ, user, reason, id)
		}
		if stored := st.stored(t, id); states(stored) != states(e.Call) {
			t.Errorf("%s carries %s, stored %s", typ, states(e.Call), states(stored))
		}
		return e
	}

	// Created, accepted by bob, rejected by carol.
	c, err := svc.Invite(ctx, "alice", alicePhone, []string{"bob", "carol"}, 30*time.Second, "", &herald.PushConfig{Title: "call"})
	if err != nil {
		t.Fatal(err)
	}
	want(herald.EventCallCreated, "alice", "", c.ID)
	if _, err := svc.Accept(ctx, "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	want(herald.EventCallAccepted, "bob", "", c.ID)
	if _, err := svc.Reject(ctx, "carol", 0, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	want(herald.EventCallRejected, "carol", "", c.ID)

	// Cancelled by the caller.
	c, _ = svc.Invite(ctx, "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
	log.take()
	if _, err := svc.Cancel(ctx, "alice", alicePhone, c.ID, "", nil); err != nil {
		t.Fatal(err)
	}
	want(herald.EventCallCancelled, "alice", "", c.ID)

	// Timed out: the invitees who did not answer are listed.
	c, _ = svc.Invite(ctx, "alice", alicePhone, []string{"bob", "carol"}, 30*time.Second, "", nil)
	log.take()
	clock.Advance(30 * time.Second)
	e := want(herald.EventCallTimeout, "", "", c.ID)
	if len(e.Users) != 2 {
		t.Errorf("timeout users = %v, want bob and carol", e.Users)
	}

	// Cancelled because the caller went offline.
	c, _ = svc.Invite(ctx, "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
	log.take()
	svc.UserOffline("alice")
	want(herald.EventCallCancelled, "alice", herald.CallCancelledCallerOffline, c.ID)

	// A refused operation emits nothing.
	if _, err := svc.Accept(ctx, "bob", bobPhone, c.ID, ""); err == nil {
		t.Fatal("accepting an ended call succeeded")
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("refused accept emitted %+v", got)
	}
}

// TestAdvancedEvents: the advanced-mode changes' events, each after its
// stored change: call_invited (with the users), call_joined, call_quit
// (offline with its reason), and call_ended, by whoever ended it or, when
// the last one in the call left, after that one's call_quit with no user.
func TestAdvancedEvents(t *testing.T) {
	st, clock, n := newMemStore(), newFakeClock(), newFakeNotifier()
	n.online("alice", alicePhone)
	n.online("bob", bobPhone)
	log := &eventLog{}
	svc := New(st, &fakePusher{n: n}, Config{Now: clock.Now, AfterFunc: clock.AfterFunc, MaxInvitees: 3, Events: log})
	svc.SetNotifier(n)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	ctx := context.Background()
	kinds := func() string {
		var out []string
		for _, e := range log.take() {
			s := string(e.Type) + ":" + e.User
			if e.Reason != "" {
				s += "(" + e.Reason + ")"
			}
			if len(e.Users) > 0 {
				s += fmt.Sprint(e.Users)
			}
			out = append(out, s)
		}
		return strings.Join(out, " ")
	}
	adv := InviteOptions{Mode: herald.CallAdvanced}
	c, err := svc.InviteWith(ctx, "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil, adv)
	if err != nil {
		t.Fatal(err)
	}
	svc.Accept(ctx, "bob", bobPhone, c.ID, "")
	svc.CallingInvite(ctx, "bob", bobPhone, c.ID, []string{"carol"}, nil)
	svc.Join(ctx, "carol", carolPhone, c.ID, "")
	svc.Quit(ctx, "carol", carolPhone, c.ID, "", nil)
	svc.End(ctx, "alice", alicePhone, c.ID, "", nil)
	if got, want := kinds(), "call_created:alice call_accepted:bob call_invited:bob[carol] call_joined:carol call_quit:carol call_ended:alice"; got != want {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}

	c, _ = svc.InviteWith(ctx, "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil, adv)
	svc.Accept(ctx, "bob", bobPhone, c.ID, "")
	svc.Quit(ctx, "alice", alicePhone, c.ID, "", nil)
	n.offline("bob")
	svc.UserOffline("bob")
	if got, want := kinds(), "call_created:alice call_accepted:bob call_quit:alice call_quit:bob(offline) call_ended:"; got != want {
		t.Errorf("events when the last one goes offline:\n got %s\nwant %s", got, want)
	}
}
