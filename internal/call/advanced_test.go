package call

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

const davePhone SessionID = 30

func (e *env) inviteAdvanced(o InviteOptions, invitees ...string) *herald.Call {
	e.t.Helper()
	o.Mode = herald.CallAdvanced
	c, err := e.svc.InviteWith(context.Background(), "alice", alicePhone, invitees, 30*time.Second, "room-1", &herald.PushConfig{Title: "ring"}, o)
	if err != nil {
		e.t.Fatalf("InviteWith(advanced): %v", err)
	}
	return c
}

func wantStates(t *testing.T, what string, c *herald.Call, want string) {
	t.Helper()
	if got := states(c); got != want {
		t.Errorf("%s: %s, want %s", what, got, want)
	}
}

// TestAdvancedCall: the call stays open after the first accept; a
// participant invites an offline user mid-call, pushed until that user's
// own deadline; the user joins after logging in; a participant quits and
// the call goes on; the caller ends it for everyone.
func TestAdvancedCall(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.inviteAdvanced(InviteOptions{}, "bob")
	wantStates(t, "after invite", c, "alice=accepted bob=received")
	if c.EndBy != herald.CallEndByCaller || !c.Participants[1].Deadline.Equal(c.Deadline) {
		t.Errorf("end_by %q, bob's deadline %v; want caller and the call's %v", c.EndBy, c.Participants[1].Deadline, c.Deadline)
	}
	e.n.take()
	got, err := e.svc.Accept(ctx, "bob", bobPhone, c.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Ended() {
		t.Fatalf("the call ended at its first accept: %s", states(got))
	}
	e.n.take()

	// 10 s in, bob invites carol, offline: her own deadline is 30 s on.
	e.clock.Advance(10 * time.Second)
	jobsBefore := len(e.st.pushJobs())
	got, err = e.svc.CallingInvite(ctx, "bob", bobPhone, c.ID, []string{"carol"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantStates(t, "after calling_invite", got, "alice=accepted bob=accepted carol=not_yet_received")
	carolDeadline := e.clock.Now().Add(30 * time.Second).Truncate(time.Millisecond)
	if d := got.Participant("carol").Deadline; !d.Equal(carolDeadline) {
		t.Errorf("carol's deadline %v, want %v", d, carolDeadline)
	}
	jobs := e.st.pushJobs()[jobsBefore:]
	if len(jobs) != 1 || jobs[0].User != "carol" || !jobs[0].Expires.Equal(carolDeadline) {
		t.Errorf("calling_invite's pushes %+v, want one to carol expiring at %v", jobs, carolDeadline)
	}
	wantNotes(t, e.n.take(),
		"alice/1:state_changed[carol=not_yet_received]", "alice/2:state_changed[carol=not_yet_received]",
		"bob/10:state_changed[carol=not_yet_received]", "bob/11:state_changed[carol=not_yet_received]")
	if !e.svc.Ringing(c.ID, "carol") {
		t.Errorf("Ringing(carol) = false, want true before her deadline")
	}

	// Past the call's first deadline, nothing times out: nobody rings but carol.
	e.clock.Advance(25 * time.Second)
	if got := e.st.stored(t, c.ID); states(got) != "alice=accepted bob=accepted carol=not_yet_received" || got.Ended() {
		t.Errorf("35 s in: %s ended=%v, want carol still ringing and the call open", states(got), got.Ended())
	}

	// Carol logs in, is rung, and joins.
	e.n.online("carol", carolPhone)
	e.svc.SessionStarted("carol", carolPhone)
	e.n.take()
	got, err = e.svc.Join(ctx, "carol", carolPhone, c.ID, "hi")
	if err != nil {
		t.Fatal(err)
	}
	wantStates(t, "after carol joins", got, "alice=accepted bob=accepted carol=accepted")
	e.n.take()
	e.clock.Advance(time.Minute) // her deadline passes: she is in the call
	if got := e.st.stored(t, c.ID); states(got) != "alice=accepted bob=accepted carol=accepted" {
		t.Errorf("after carol's deadline: %s, want everyone in the call", states(got))
	}

	// Bob quits: the call goes on.
	got, err = e.svc.Quit(ctx, "bob", bobPhone, c.ID, "bye", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantStates(t, "after bob quits", got, "alice=accepted bob=quit carol=accepted")
	if got.Ended() {
		t.Errorf("the call ended when bob quit")
	}
	e.n.take()

	// Carol may not end it (end_by caller); alice ends it.
	_, err = e.svc.End(ctx, "carol", carolPhone, c.ID, "", nil)
	wantCode(t, err, herald.CodeForbidden)
	got, err = e.svc.End(ctx, "alice", alicePhone, c.ID, "done", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantStates(t, "after the end", got, "alice=ended bob=quit carol=ended")
	if !got.Ended() {
		t.Errorf("End: the call is not ended")
	}
	wantNotes(t, e.n.take(),
		"alice/1:state_changed[alice=ended carol=ended]", "alice/2:state_changed[alice=ended carol=ended]",
		"bob/10:state_changed[alice=ended carol=ended]", "bob/11:state_changed[alice=ended carol=ended]",
		"carol/20:state_changed[alice=ended carol=ended]",
		"alice/1:ended", "alice/2:ended", "bob/10:ended", "bob/11:ended", "carol/20:ended")
	if st := e.svc.Stats(); st.Open != 0 || st.CallingInvited != 1 || st.Joined != 1 || st.Quit != 1 || st.Ended != 1 {
		t.Errorf("stats after the end: %+v, want 0 open, 1 calling_invite, 1 join, 1 quit, 1 end", st)
	}
	list, _, err := e.svc.Calls(ctx, "carol", time.Time{}, 0)
	if err != nil || len(list) != 1 || states(list[0]) != "alice=ended bob=quit carol=ended" {
		t.Errorf("carol's call list: %v, %v; want the call with every final state", list, err)
	}
}

// TestAdvancedOwnDeadlines: each invitation times out at its own
// deadline; the call stays open with its caller in it.
func TestAdvancedOwnDeadlines(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.inviteAdvanced(InviteOptions{}, "bob")
	e.clock.Advance(20 * time.Second)
	if _, err := e.svc.CallingInvite(ctx, "alice", alicePhone, c.ID, []string{"carol"}, nil); err != nil {
		t.Fatal(err)
	}
	e.n.take()
	e.clock.Advance(10 * time.Second) // bob's deadline
	got := e.st.stored(t, c.ID)
	wantStates(t, "at bob's deadline", got, "alice=accepted bob=timeout carol=not_yet_received")
	wantNotes(t, e.n.take(),
		"bob/10:timeout", "bob/11:timeout",
		"alice/1:state_changed[bob=timeout]", "alice/2:state_changed[bob=timeout]",
		"bob/10:state_changed[bob=timeout]", "bob/11:state_changed[bob=timeout]")

	// A restart keeps carol's timer.
	e.svc.Close()
	e.start()
	e.clock.Advance(19 * time.Second)
	wantStates(t, "before carol's deadline, restarted", e.st.stored(t, c.ID), "alice=accepted bob=timeout carol=not_yet_received")
	e.clock.Advance(time.Second)
	got = e.st.stored(t, c.ID)
	wantStates(t, "at carol's deadline", got, "alice=accepted bob=timeout carol=timeout")
	if got.Ended() {
		t.Errorf("the call ended when its invitations timed out; the caller is still in it")
	}
	e.clock.Advance(11 * time.Second) // the restart's absence check (alice is live: nothing changes)
	wantStates(t, "after the absence check", e.st.stored(t, c.ID), "alice=accepted bob=timeout carol=timeout")
	if e.svc.deadlineArmed(c.ID) {
		t.Errorf("the call's deadline timer is armed with nothing ringing")
	}

	// bob, timed out, is invited again and rings again until a new deadline.
	got, err := e.svc.CallingInvite(ctx, "alice", alicePhone, c.ID, []string{"bob"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantStates(t, "bob invited again", got, "alice=accepted bob=received carol=timeout")
	e.clock.Advance(30 * time.Second)
	wantStates(t, "bob's second deadline", e.st.stored(t, c.ID), "alice=accepted bob=timeout carol=timeout")
}

// TestAdvancedLastLeaveEnds: the call ends when its last participant in
// it leaves (quit or offline); invitees still ringing stop, and are
// pushed the missed-call alert given.
func TestAdvancedLastLeaveEnds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.inviteAdvanced(InviteOptions{}, "bob", "carol")
	if _, err := e.svc.Accept(ctx, "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	// The caller goes offline with bob in the call: offline, the call goes on.
	e.n.offline("alice")
	e.svc.UserOffline("alice")
	got := e.st.stored(t, c.ID)
	wantStates(t, "alice offline", got, "alice=offline bob=accepted carol=not_yet_received")
	if got.Ended() {
		t.Fatalf("the call ended with bob in it")
	}
	e.n.take()
	jobsBefore := len(e.st.pushJobs())
	got, err := e.svc.Quit(ctx, "bob", bobPhone, c.ID, "", &herald.PushConfig{Title: "missed"})
	if err != nil {
		t.Fatal(err)
	}
	wantStates(t, "bob quits last", got, "alice=offline bob=quit carol=be_cancelled")
	if !got.Ended() {
		t.Errorf("the call is open with nobody in it")
	}
	if jobs := e.st.pushJobs()[jobsBefore:]; len(jobs) != 1 || jobs[0].User != "carol" || string(jobs[0].Data) != "missed" {
		t.Errorf("pushes at the end %+v, want carol's missed-call alert", jobs)
	}
	wantNotes(t, e.n.take(),
		"bob/10:state_changed[bob=quit carol=be_cancelled]", "bob/11:state_changed[bob=quit carol=be_cancelled]",
		"bob/10:ended", "bob/11:ended")
	if e.svc.Ringing(c.ID, "carol") {
		t.Errorf("Ringing(carol) after the end")
	}
}

// TestAdvancedRefusals: each operation's bad input and missing rights,
// with its code.
func TestAdvancedRefusals(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.svc.cfg.MaxParticipants = 4
	general := e.invite("bob")
	adv := e.inviteAdvanced(InviteOptions{}, "bob")
	open := e.inviteAdvanced(InviteOptions{Joinable: true, EndBy: herald.CallEndByParticipant}, "bob")
	errOf := func(_ *herald.Call, err error) error { return err }

	for _, tc := range []struct {
		name string
		err  error
		want herald.Code
	}{
		{"calling_invite on a general call", errOf(e.svc.CallingInvite(ctx, "alice", alicePhone, general.ID, []string{"carol"}, nil)), herald.CodeForbidden},
		{"join a general call", errOf(e.svc.Join(ctx, "bob", bobPhone, general.ID, "")), herald.CodeForbidden},
		{"calling_invite by a ringing invitee", errOf(e.svc.CallingInvite(ctx, "bob", bobPhone, adv.ID, []string{"carol"}, nil)), herald.CodeForbidden},
		{"calling_invite by a stranger", errOf(e.svc.CallingInvite(ctx, "dave", davePhone, adv.ID, []string{"carol"}, nil)), herald.CodeNotFound},
		{"calling_invite of a ringing user", errOf(e.svc.CallingInvite(ctx, "alice", alicePhone, adv.ID, []string{"bob"}, nil)), herald.CodeConflict},
		{"calling_invite of nobody", errOf(e.svc.CallingInvite(ctx, "alice", alicePhone, adv.ID, nil, nil)), herald.CodeInvalidArgument},
		{"calling_invite of too many", errOf(e.svc.CallingInvite(ctx, "alice", alicePhone, adv.ID, []string{"u1", "u2", "u3", "u4"}, nil)), herald.CodeInvalidArgument},
		{"calling_invite past the participant cap", errOf(e.svc.CallingInvite(ctx, "alice", alicePhone, adv.ID, []string{"u1", "u2", "u3"}, nil)), herald.CodeInvalidArgument},
		{"calling_invite of the caller", errOf(e.svc.CallingInvite(ctx, "alice", alicePhone, adv.ID, []string{"alice"}, nil)), herald.CodeInvalidArgument},
		{"join a call one is not invited to", errOf(e.svc.Join(ctx, "dave", davePhone, adv.ID, "")), herald.CodeNotFound},
		{"join a call one is in", errOf(e.svc.Join(ctx, "alice", alicePhone, adv.ID, "")), herald.CodeConflict},
		{"quit a call one is not in (ringing)", errOf(e.svc.Quit(ctx, "bob", bobPhone, adv.ID, "", nil)), herald.CodeNotFound},
		{"quit a call one is not part of", errOf(e.svc.Quit(ctx, "dave", davePhone, adv.ID, "", nil)), herald.CodeNotFound},
		{"end by an invitee of a caller-ended call", errOf(e.svc.End(ctx, "bob", bobPhone, adv.ID, "", nil)), herald.CodeForbidden},
		{"end a general call", errOf(e.svc.End(ctx, "alice", alicePhone, general.ID, "", nil)), herald.CodeForbidden},
		{"end by a ringing invitee of a participant-ended call", errOf(e.svc.End(ctx, "bob", bobPhone, open.ID, "", nil)), herald.CodeForbidden},
		{"invalid mode", errOf(e.svc.InviteWith(ctx, "alice", alicePhone, []string{"bob"}, 0, "", nil, InviteOptions{Mode: "party"})), herald.CodeInvalidArgument},
		{"joinable general call", errOf(e.svc.InviteWith(ctx, "alice", alicePhone, []string{"bob"}, 0, "", nil, InviteOptions{Joinable: true})), herald.CodeInvalidArgument},
		{"bad end_by", errOf(e.svc.InviteWith(ctx, "alice", alicePhone, []string{"bob"}, 0, "", nil, InviteOptions{Mode: herald.CallAdvanced, EndBy: "anyone"})), herald.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.err, tc.want) })
	}

	// A joinable call takes a stranger; any participant in it may end it.
	got, err := e.svc.Join(ctx, "dave", davePhone, open.ID, "")
	if err != nil {
		t.Fatalf("join a joinable call: %v", err)
	}
	wantStates(t, "dave joined", got, "alice=accepted bob=received dave=accepted")
	if _, err := e.svc.Accept(ctx, "bob", bobPhone, adv.ID, ""); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Cancel(ctx, "alice", alicePhone, adv.ID, "", nil)
	wantCode(t, err, herald.CodeConflict) // accepted: end it instead
	got, err = e.svc.End(ctx, "dave", davePhone, open.ID, "", nil)
	if err != nil {
		t.Fatalf("a participant ends a participant-ended call: %v", err)
	}
	wantStates(t, "dave ended it", got, "alice=ended bob=be_cancelled dave=ended")
	_, err = e.svc.Join(ctx, "bob", bobPhone, open.ID, "")
	wantCode(t, err, herald.CodeForbidden) // ended: it cannot be joined
	_, err = e.svc.End(ctx, "alice", alicePhone, open.ID, "", nil)
	wantCode(t, err, herald.CodeConflict)
}

// TestAdvancedCallerOfflineBeforeAnswer: an advanced call nobody accepted
// is cancelled when its caller goes offline, as a general one is.
func TestAdvancedCallerOfflineBeforeAnswer(t *testing.T) {
	e := newEnv(t)
	c := e.inviteAdvanced(InviteOptions{}, "bob")
	e.n.offline("alice")
	e.svc.UserOffline("alice")
	got := e.st.stored(t, c.ID)
	wantStates(t, "caller offline", got, "alice=cancelled bob=be_cancelled")
	if !got.Ended() {
		t.Errorf("the call is still open")
	}
}

// TestAdvancedAbsentAfterRestart: after a restart, a participant in an
// advanced call who has no live session once OfflineRecheck has passed
// becomes offline (the gateway's grace timer died with the old process);
// one who came back stays in the call.
func TestAdvancedAbsentAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.inviteAdvanced(InviteOptions{}, "bob", "carol")
	if _, err := e.svc.Accept(ctx, "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.svc.Close()
	e.n.offline("bob") // his connection dropped with the old server and he never came back
	e.start()
	e.clock.Advance(30 * time.Second)
	wantStates(t, "before the recheck", e.st.stored(t, c.ID), "alice=accepted bob=accepted carol=timeout")
	e.clock.Advance(time.Second)
	got := e.st.stored(t, c.ID)
	wantStates(t, "after the recheck", got, "alice=accepted bob=offline carol=timeout")
	if got.Ended() {
		t.Errorf("the call ended with alice, live, in it")
	}
}

// deadlineArmed reports whether call id's deadline timer is armed.
func (s *Service) deadlineArmed(id string) bool {
	s.mu.Lock()
	e := s.open[id]
	s.mu.Unlock()
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.timer == nil {
		return false
	}
	ft, ok := e.timer.(*fakeTimer)
	if !ok {
		return true
	}
	ft.c.mu.Lock()
	defer ft.c.mu.Unlock()
	return !ft.stopped && !ft.fired
}

// TestAdvancedAbsentCallerFromAPI: the server API places an advanced call
// for a caller who never connects (no session ends, so the gateway never
// tells an offline): once the caller has had no live session for
// OfflineRecheck, at the checks every ScanInterval, they are offline in
// the call, which goes on with bob; a call of theirs nobody answered is
// cancelled, as a caller's going offline cancels it.
func TestAdvancedAbsentCallerFromAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	adv := InviteOptions{Mode: herald.CallAdvanced}
	answered, err := e.svc.InviteWith(ctx, "dave", 0, []string{"bob"}, 30*time.Second, "", nil, adv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Accept(ctx, "bob", bobPhone, answered.ID, ""); err != nil {
		t.Fatal(err)
	}
	ringing, err := e.svc.InviteWith(ctx, "dave", 0, []string{"carol"}, 120*time.Second, "", nil, adv)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(30 * time.Second)
	wantStates(t, "before the absence check", e.st.stored(t, answered.ID), "dave=accepted bob=accepted")
	e.clock.Advance(20 * time.Second)
	got := e.st.stored(t, answered.ID)
	wantStates(t, "the answered call, caller absent", got, "dave=offline bob=accepted")
	if got.Ended() {
		t.Errorf("the call ended with bob, live, in it")
	}
	got = e.st.stored(t, ringing.ID)
	wantStates(t, "the call nobody answered, caller absent", got, "dave=cancelled carol=be_cancelled")
	if !got.Ended() {
		t.Errorf("the call nobody answered is still open")
	}
	if s := e.svc.Stats(); s.Open != 1 {
		t.Errorf("%d calls open, want 1", s.Open)
	}
}

// TestAdvancedAnsweredOnce: an advanced call someone has accepted stays
// answered after they left it (quit, or invited again and ringing): the
// caller cannot cancel it (conflict: end it), and the caller going
// offline makes them offline in it, which ends it when nobody is left in
// it, with call_invitation_ended, the call_ended event and the counter,
// instead of cancelling it.
func TestAdvancedAnsweredOnce(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T, reinvite bool) (*env, *eventLog, *herald.Call) {
		e := newEnv(t)
		log := &eventLog{}
		e.svc.Close()
		e.svc = New(e.st, e.p, Config{Now: e.clock.Now, AfterFunc: e.clock.AfterFunc, MaxInvitees: 3, Events: log})
		e.svc.SetNotifier(e.n)
		if err := e.svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.svc.Close)
		c := e.inviteAdvanced(InviteOptions{}, "bob", "carol")
		if _, err := e.svc.Accept(ctx, "bob", bobPhone, c.ID, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Quit(ctx, "bob", bobPhone, c.ID, "", nil); err != nil {
			t.Fatal(err)
		}
		if reinvite {
			if _, err := e.svc.CallingInvite(ctx, "alice", alicePhone, c.ID, []string{"bob"}, nil); err != nil {
				t.Fatal(err)
			}
		}
		log.take()
		e.n.take()
		return e, log, c
	}
	for _, reinvite := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel, bob invited again %v", reinvite), func(t *testing.T) {
			e, _, c := setup(t, reinvite)
			_, err := e.svc.Cancel(ctx, "alice", alicePhone, c.ID, "", nil)
			wantCode(t, err, herald.CodeConflict)
		})
	}
	t.Run("caller offline", func(t *testing.T) {
		e, log, c := setup(t, false)
		e.n.offline("alice")
		e.svc.UserOffline("alice")
		got := e.st.stored(t, c.ID)
		wantStates(t, "alice offline", got, "alice=offline bob=quit carol=be_cancelled")
		if !got.Ended() {
			t.Fatalf("the call is open with nobody in it")
		}
		var types []string
		for _, ev := range log.take() {
			types = append(types, string(ev.Type)+"/"+ev.Reason)
		}
		if got, want := strings.Join(types, " "), "call_quit/offline call_ended/"; got != want {
			t.Errorf("events %q, want %q", got, want)
		}
		wantNotes(t, e.n.take(),
			"bob/10:state_changed[alice=offline carol=be_cancelled]", "bob/11:state_changed[alice=offline carol=be_cancelled]",
			"bob/10:ended", "bob/11:ended")
		if s := e.svc.Stats(); s.Ended != 1 || s.Cancelled != 0 || s.Open != 0 {
			t.Errorf("ended %d, cancelled %d, open %d; want 1, 0, 0", s.Ended, s.Cancelled, s.Open)
		}
	})
}
