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

// Sessions of the test users: alice calls from session 1 and has another
// device (2); bob has two devices; carol is offline unless a test says so.
const (
	alicePhone, aliceDesk SessionID = 1, 2
	bobPhone, bobTablet   SessionID = 10, 11
	carolPhone            SessionID = 20
)

type env struct {
	t     *testing.T
	st    *memStore
	clock *fakeClock
	n     *fakeNotifier
	p     *fakePusher
	svc   *Service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, st: newMemStore(), clock: newFakeClock(), n: newFakeNotifier()}
	e.p = &fakePusher{n: e.n}
	e.n.online("alice", alicePhone, aliceDesk)
	e.n.online("bob", bobPhone, bobTablet)
	e.start()
	return e
}

// start runs a new service over the same store, clock and sessions, as a
// restarted server does.
func (e *env) start() {
	e.t.Helper()
	e.svc = New(e.st, e.p, Config{Now: e.clock.Now, AfterFunc: e.clock.AfterFunc, MaxInvitees: 3, MaxOpenCalls: 50})
	e.svc.SetNotifier(e.n)
	if err := e.svc.Start(context.Background()); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	svc := e.svc
	e.t.Cleanup(svc.Close)
}

func (e *env) invite(invitees ...string) *herald.Call {
	e.t.Helper()
	c, err := e.svc.Invite(context.Background(), "alice", alicePhone, invitees, 30*time.Second, "room-1", nil)
	if err != nil {
		e.t.Fatalf("Invite: %v", err)
	}
	return c
}

func states(c *herald.Call) string {
	var b strings.Builder
	for i, p := range c.Participants {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", p.User, p.State)
	}
	return b.String()
}

// summary renders events as "session:event[changed states]" for
// comparison.
func summary(notes []note) []string {
	out := make([]string, 0, len(notes))
	for _, n := range notes {
		s := fmt.Sprintf("%s/%d:%s", n.user, n.session, n.ev)
		if len(n.changed) > 0 {
			parts := make([]string, len(n.changed))
			for i, p := range n.changed {
				parts[i] = p.User + "=" + string(p.State)
			}
			s += "[" + strings.Join(parts, " ") + "]"
		}
		out = append(out, s)
	}
	return out
}

func wantNotes(t *testing.T, got []note, want ...string) {
	t.Helper()
	g := summary(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
}

func wantCode(t *testing.T, err error, code herald.Code) {
	t.Helper()
	if got := herald.ErrorCode(err); got != code {
		t.Errorf("error %v has code %q, want %q", err, got, code)
	}
}

func TestInviteThenEveryoneAnswers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.invite("bob", "carol")
	if got, want := states(c), "alice=inviting bob=received carol=not_yet_received"; got != want {
		t.Errorf("states after invite: %s, want %s", got, want)
	}
	if c.Deadline.Sub(c.CreatedAt) != 30*time.Second || c.Mode != herald.CallGeneral || c.Extended != "room-1" || len(c.ID) != 32 {
		t.Errorf("call %+v: want a 30 s deadline, general mode, extended room-1 and a 32-character ID", c)
	}
	if got := e.st.stored(t, c.ID); states(got) != states(c) || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Errorf("stored call %s at %v, want %s at %v", states(got), got.CreatedAt, states(c), c.CreatedAt)
	}
	wantNotes(t, e.n.take(),
		"alice/2:created", // not alice/1: that session made the call and has the reply
		"bob/10:received", "bob/11:received",
		"alice/1:state_changed[alice=inviting bob=received carol=not_yet_received]",
		"alice/2:state_changed[alice=inviting bob=received carol=not_yet_received]",
		"bob/10:state_changed[alice=inviting bob=received carol=not_yet_received]",
		"bob/11:state_changed[alice=inviting bob=received carol=not_yet_received]",
	)

	got, err := e.svc.Accept(ctx, "bob", bobPhone, c.ID, "ok")
	if err != nil {
		t.Fatal(err)
	}
	if states(got) != "alice=inviting bob=accepted carol=not_yet_received" || got.Ended() || got.Participant("bob").Extended != "ok" {
		t.Errorf("after bob accepts: %s ended=%v, want bob accepted with extended ok and the call still ringing for carol", states(got), got.Ended())
	}
	// Bob's tablet hears of it: it stops ringing.
	wantNotes(t, e.n.take(),
		"alice/1:state_changed[bob=accepted]", "alice/2:state_changed[bob=accepted]",
		"bob/10:state_changed[bob=accepted]", "bob/11:state_changed[bob=accepted]",
	)
	if !e.svc.Ringing(c.ID, "carol") || e.svc.Ringing(c.ID, "bob") || e.svc.Ringing(c.ID, "alice") {
		t.Error("Ringing: want true for carol only")
	}

	got, err = e.svc.Reject(ctx, "carol", carolPhone, c.ID, "busy")
	if err != nil {
		t.Fatal(err)
	}
	if states(got) != "alice=ended bob=accepted carol=rejected" || !got.Ended() {
		t.Errorf("after carol rejects: %s ended=%v, want the call ended with alice=ended", states(got), got.Ended())
	}
	wantNotes(t, e.n.take(),
		"alice/1:state_changed[carol=rejected alice=ended]", "alice/2:state_changed[carol=rejected alice=ended]",
		"bob/10:state_changed[carol=rejected alice=ended]", "bob/11:state_changed[carol=rejected alice=ended]",
	)
	if st := e.st.stored(t, c.ID); !st.Ended() || states(st) != states(got) {
		t.Errorf("stored %s ended=%v, want %s ended", states(st), st.Ended(), states(got))
	}
	if n := e.clock.armed(); n != 0 {
		t.Errorf("%d timers armed after the call ended, want 0", n)
	}
	e.clock.Advance(time.Minute)
	if notes := e.n.take(); len(notes) != 0 {
		t.Errorf("events after the deadline of an ended call: %v", summary(notes))
	}
}

func TestRejectEndsCall(t *testing.T) {
	e := newEnv(t)
	c := e.invite("bob")
	e.n.take()
	got, err := e.svc.Reject(context.Background(), "bob", bobTablet, c.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if states(got) != "alice=ended bob=rejected" || !got.Ended() {
		t.Errorf("after reject: %s ended=%v, want alice=ended bob=rejected, ended", states(got), got.Ended())
	}
	if e.svc.Ringing(c.ID, "bob") {
		t.Error("Ringing(bob) after he rejected")
	}
	if st := e.svc.Stats(); st.Open != 0 || st.Rejected != 1 || st.Invited != 1 {
		t.Errorf("stats %+v: want 0 open, 1 invited, 1 rejected", st)
	}
}

func TestInvitePushes(t *testing.T) {
	e := newEnv(t)
	e.p.ringing = func(id, user string) bool { return e.svc.Ringing(id, user) }
	push := &herald.PushConfig{Title: "Alice calling", ResourcesID: "call"}
	c, err := e.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob", "carol"}, 0, "", push)
	if err != nil {
		t.Fatal(err)
	}
	if c.Timeout != herald.DefaultCallTimeout || c.Push == nil || c.Push.Title != "Alice calling" {
		t.Errorf("call timeout %v push %+v: want the default 90 s and the push kept", c.Timeout, c.Push)
	}
	jobs := e.st.pushJobs()
	if len(jobs) != 1 || jobs[0].User != "carol" || !jobs[0].Expires.Equal(c.Deadline) || jobs[0].Conv != herald.CallConversationKey(c.ID) {
		t.Fatalf("stored jobs %+v: want one for carol (bob is live) expiring at the deadline %v", jobs, c.Deadline)
	}
	if e.p.open != 0 || len(e.p.handed) != 1 || !e.p.rang[0] {
		t.Errorf("push service: %d commits open, %d jobs handed over (ringing %v); want 0, and 1 handed while the call rings for carol", e.p.open, len(e.p.handed), e.p.rang)
	}

	// Cancel with a push: only carol (still ringing, offline) is pushed.
	if _, err := e.svc.Accept(context.Background(), "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.n.take()
	got, err := e.svc.Cancel(context.Background(), "alice", aliceDesk, c.ID, "bye", &herald.PushConfig{Title: "Missed call"})
	if err != nil {
		t.Fatal(err)
	}
	if states(got) != "alice=cancelled bob=accepted carol=be_cancelled" || !got.Ended() || got.Participants[0].Extended != "bye" {
		t.Errorf("after cancel: %s ended=%v, want alice cancelled (extended bye), bob accepted, carol be_cancelled", states(got), got.Ended())
	}
	jobs = e.st.pushJobs()
	if len(jobs) != 2 || jobs[1].User != "carol" || string(jobs[1].Data) != "Missed call" || jobs[1].MsgID == jobs[0].MsgID {
		t.Errorf("jobs after cancel %+v: want a second job for carol with the cancel's push and its own msg ID", jobs)
	}
	wantNotes(t, e.n.take(),
		"alice/1:state_changed[alice=cancelled carol=be_cancelled]", "alice/2:state_changed[alice=cancelled carol=be_cancelled]",
		"bob/10:state_changed[alice=cancelled carol=be_cancelled]", "bob/11:state_changed[alice=cancelled carol=be_cancelled]",
	)
}

func TestCancel(t *testing.T) {
	e := newEnv(t)
	e.n.online("carol", carolPhone)
	c := e.invite("bob", "carol")
	e.n.take()
	got, err := e.svc.Cancel(context.Background(), "alice", alicePhone, c.ID, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if states(got) != "alice=cancelled bob=be_cancelled carol=be_cancelled" || !got.Ended() {
		t.Errorf("after cancel: %s ended=%v", states(got), got.Ended())
	}
	ch := "[alice=cancelled bob=be_cancelled carol=be_cancelled]"
	wantNotes(t, e.n.take(),
		"bob/10:cancelled", "bob/11:cancelled", "carol/20:cancelled",
		"alice/1:state_changed"+ch, "alice/2:state_changed"+ch,
		"bob/10:state_changed"+ch, "bob/11:state_changed"+ch, "carol/20:state_changed"+ch,
	)
	if len(e.st.pushJobs()) != 0 {
		t.Error("a cancel without a push configuration stored push jobs")
	}
	_, err = e.svc.Cancel(context.Background(), "alice", alicePhone, c.ID, "", nil)
	wantCode(t, err, herald.CodeConflict)
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	c := e.invite("bob", "carol")
	if _, err := e.svc.Accept(context.Background(), "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.n.online("carol", carolPhone) // carol logs in while it rings
	e.n.take()
	e.clock.Advance(29 * time.Second)
	if notes := e.n.take(); len(notes) != 0 || !e.svc.Ringing(c.ID, "carol") {
		t.Fatalf("before the deadline: events %v, ringing %v; want none and ringing", summary(notes), e.svc.Ringing(c.ID, "carol"))
	}
	e.clock.Advance(time.Second)
	st := e.st.stored(t, c.ID)
	if states(st) != "alice=ended bob=accepted carol=timeout" || !st.Ended() {
		t.Errorf("stored after the deadline: %s ended=%v; want carol timeout and the call ended", states(st), st.Ended())
	}
	ch := "[carol=timeout alice=ended]"
	wantNotes(t, e.n.take(),
		"carol/20:timeout",
		"alice/1:state_changed"+ch, "alice/2:state_changed"+ch,
		"bob/10:state_changed"+ch, "bob/11:state_changed"+ch, "carol/20:state_changed"+ch,
	)
	if e.svc.Ringing(c.ID, "carol") {
		t.Error("Ringing(carol) after the timeout")
	}
	_, err := e.svc.Accept(context.Background(), "carol", carolPhone, c.ID, "")
	wantCode(t, err, herald.CodeConflict)
}

func TestTimeoutStoreFailureRetries(t *testing.T) {
	e := newEnv(t)
	c := e.invite("bob")
	e.n.take()
	e.st.mu.Lock()
	e.st.fail = 2
	e.st.mu.Unlock()
	e.clock.Advance(30 * time.Second) // fails: nothing is told
	if notes := e.n.take(); len(notes) != 0 {
		t.Errorf("events although the timeout was not stored: %v", summary(notes))
	}
	if e.st.stored(t, c.ID).Ended() {
		t.Fatal("stored as ended although the write failed")
	}
	e.clock.Advance(time.Second) // fails again
	e.clock.Advance(time.Second) // stored
	if st := e.st.stored(t, c.ID); states(st) != "alice=ended bob=timeout" {
		t.Errorf("stored %s, want alice=ended bob=timeout", states(st))
	}
	ch := "[bob=timeout alice=ended]"
	wantNotes(t, e.n.take(), "bob/10:timeout", "bob/11:timeout",
		"alice/1:state_changed"+ch, "alice/2:state_changed"+ch, "bob/10:state_changed"+ch, "bob/11:state_changed"+ch)
	if st := e.svc.Stats(); st.StoreFailed != 2 || st.TimedOut != 1 {
		t.Errorf("stats %+v: want 2 failed writes and 1 timed-out call", st)
	}
}

func TestRestart(t *testing.T) {
	e := newEnv(t)
	late := e.invite("bob")
	e.clock.Advance(10 * time.Second)
	soon := e.invite("carol")
	e.svc.Close()
	e.n.take()

	// Down for 25 s: late's deadline passes, soon's does not.
	e.clock.Advance(25 * time.Second)
	if n := e.n.take(); len(n) != 0 {
		t.Fatalf("events while the service was closed: %v", summary(n))
	}
	e.start()
	if st := e.st.stored(t, late.ID); states(st) != "alice=ended bob=timeout" || !st.Ended() {
		t.Errorf("call past its deadline after Start: %s ended=%v; want bob timed out, ended", states(st), st.Ended())
	}
	wantNotes(t, e.n.take(),
		"bob/10:timeout", "bob/11:timeout",
		"alice/1:state_changed[bob=timeout alice=ended]", "alice/2:state_changed[bob=timeout alice=ended]",
		"bob/10:state_changed[bob=timeout alice=ended]", "bob/11:state_changed[bob=timeout alice=ended]",
	)
	if !e.svc.Ringing(soon.ID, "carol") {
		t.Error("the call still before its deadline does not ring after the restart")
	}
	// Carol logs in after the restart: it rings on her session.
	e.n.online("carol", carolPhone)
	e.svc.SessionStarted("carol", carolPhone)
	if got := summary(e.n.take()); len(got) == 0 || got[0] != "carol/20:received" {
		t.Errorf("carol's login after the restart: events %v, want received first", got)
	}
	e.clock.Advance(5 * time.Second)
	if st := e.st.stored(t, soon.ID); states(st) != "alice=ended carol=timeout" {
		t.Errorf("after its deadline: %s, want carol timed out", states(st))
	}
}

func TestSessionStarted(t *testing.T) {
	e := newEnv(t)
	c := e.invite("bob", "carol")
	other, err := e.svc.Invite(context.Background(), "bob", bobPhone, []string{"alice"}, 10*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Reject(context.Background(), "alice", alicePhone, other.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.n.take()

	e.n.online("carol", carolPhone)
	e.svc.SessionStarted("carol", carolPhone)
	if st := e.st.stored(t, c.ID); st.Participant("carol").State != herald.CallReceived {
		t.Errorf("carol's state after her login: %s, want received", st.Participant("carol").State)
	}
	ch := "[carol=received]"
	wantNotes(t, e.n.take(),
		"carol/20:received",
		"alice/1:state_changed"+ch, "alice/2:state_changed"+ch,
		"bob/10:state_changed"+ch, "bob/11:state_changed"+ch, "carol/20:state_changed"+ch,
	)

	// Another session of a user already reached: it rings, nothing changes.
	saves := e.st.saves
	e.svc.SessionStarted("bob", bobTablet)
	wantNotes(t, e.n.take(), "bob/11:received")
	// The caller's login rings nothing; nor a user who answered.
	e.svc.SessionStarted("alice", aliceDesk)
	if _, err := e.svc.Accept(context.Background(), "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.n.take()
	e.svc.SessionStarted("bob", bobTablet)
	if notes := e.n.take(); len(notes) != 0 {
		t.Errorf("events for the caller's and an answered invitee's logins: %v", summary(notes))
	}
	if e.st.saves != saves+1 {
		t.Errorf("%d store writes for the logins, want 0 (and 1 for the accept)", e.st.saves-saves-1)
	}
	// Past the deadline (the timer not yet run) nothing rings.
	e.n.online("dave", 30)
	d, err := e.svc.Invite(context.Background(), "alice", alicePhone, []string{"erin"}, time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.mu.Lock()
	e.clock.now = e.clock.now.Add(2 * time.Second) // no timer run
	e.clock.mu.Unlock()
	e.n.take()
	e.svc.SessionStarted("erin", 40)
	if notes := e.n.take(); len(notes) != 0 || e.svc.Ringing(d.ID, "erin") {
		t.Errorf("login after the deadline: events %v, ringing %v; want none", summary(notes), e.svc.Ringing(d.ID, "erin"))
	}
}

func TestUserOffline(t *testing.T) {
	e := newEnv(t)
	ringing := e.invite("bob")
	answered := e.invite("bob", "carol")
	if _, err := e.svc.Accept(context.Background(), "bob", bobPhone, answered.ID, ""); err != nil {
		t.Fatal(err)
	}
	incoming, err := e.svc.Invite(context.Background(), "bob", bobPhone, []string{"alice"}, 10*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.n.offline("alice")
	e.n.take()
	e.svc.UserOffline("alice")
	if st := e.st.stored(t, ringing.ID); states(st) != "alice=cancelled bob=be_cancelled" || !st.Ended() {
		t.Errorf("alice's unanswered call after she went offline: %s ended=%v; want cancelled", states(st), st.Ended())
	}
	if st := e.st.stored(t, answered.ID); st.Ended() {
		t.Errorf("alice's call bob accepted was cancelled: %s", states(st))
	}
	if st := e.st.stored(t, incoming.ID); st.Ended() || st.Participant("alice").State != herald.CallReceived {
		t.Errorf("the call to alice changed when she went offline: %s", states(st))
	}
	ch := "[alice=cancelled bob=be_cancelled]"
	wantNotes(t, e.n.take(), "bob/10:cancelled", "bob/11:cancelled", "bob/10:state_changed"+ch, "bob/11:state_changed"+ch)
	if len(e.st.pushJobs()) != 0 {
		t.Error("the offline cancel planned pushes")
	}
}

func TestPermissions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	open := e.invite("bob", "carol")
	ended := e.invite("bob")
	if _, err := e.svc.Reject(ctx, "bob", bobPhone, ended.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Accept(ctx, "bob", bobPhone, open.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.n.take()
	tests := []struct {
		name string
		op   func() error
		want herald.Code
	}{
		{"stranger accepts", func() error { _, err := e.svc.Accept(ctx, "mallory", 0, open.ID, ""); return err }, herald.CodeNotFound},
		{"stranger rejects an ended call", func() error { _, err := e.svc.Reject(ctx, "mallory", 0, ended.ID, ""); return err }, herald.CodeNotFound},
		{"stranger cancels", func() error { _, err := e.svc.Cancel(ctx, "mallory", 0, open.ID, "", nil); return err }, herald.CodeNotFound},
		{"unknown call", func() error { _, err := e.svc.Accept(ctx, "bob", 0, "nope", ""); return err }, herald.CodeNotFound},
		{"empty call ID", func() error { _, err := e.svc.Accept(ctx, "bob", 0, "", ""); return err }, herald.CodeInvalidArgument},
		{"caller accepts own call", func() error { _, err := e.svc.Accept(ctx, "alice", 0, open.ID, ""); return err }, herald.CodeForbidden},
		{"caller rejects own call", func() error { _, err := e.svc.Reject(ctx, "alice", 0, open.ID, ""); return err }, herald.CodeForbidden},
		{"invitee cancels", func() error { _, err := e.svc.Cancel(ctx, "carol", 0, open.ID, "", nil); return err }, herald.CodeForbidden},
		{"accepts twice", func() error { _, err := e.svc.Accept(ctx, "bob", 0, open.ID, ""); return err }, herald.CodeConflict},
		{"rejects after accepting", func() error { _, err := e.svc.Reject(ctx, "bob", 0, open.ID, ""); return err }, herald.CodeConflict},
		{"accepts an ended call", func() error { _, err := e.svc.Accept(ctx, "bob", 0, ended.ID, ""); return err }, herald.CodeConflict},
		{"cancels an ended call", func() error { _, err := e.svc.Cancel(ctx, "alice", 0, ended.ID, "", nil); return err }, herald.CodeConflict},
		{"extended too large", func() error {
			_, err := e.svc.Accept(ctx, "carol", 0, open.ID, strings.Repeat("x", herald.MaxCallExtendedBytes+1))
			return err
		}, herald.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.op(), tt.want)
		})
	}
	if notes := e.n.take(); len(notes) != 0 {
		t.Errorf("refused operations sent events: %v", summary(notes))
	}
	if st := e.st.stored(t, open.ID); states(st) != "alice=inviting bob=accepted carol=not_yet_received" {
		t.Errorf("refused operations changed the call: %s", states(st))
	}
	// A not-found answer says nothing about whose call it is.
	_, err1 := e.svc.Accept(ctx, "mallory", 0, open.ID, "")
	_, err2 := e.svc.Accept(ctx, "mallory", 0, "0123456789abcdef0123456789abcdef", "")
	if strings.Contains(err1.Error(), "alice") || strings.Replace(err1.Error(), open.ID, "X", 1) != strings.Replace(err2.Error(), "0123456789abcdef0123456789abcdef", "X", 1) {
		t.Errorf("not found for another's call %q differs from an unknown call's %q", err1, err2)
	}
}

func TestInviteValidation(t *testing.T) {
	e := newEnv(t)
	noPush := New(e.st, nil, Config{Now: e.clock.Now, AfterFunc: e.clock.AfterFunc})
	tests := []struct {
		name     string
		svc      *Service
		invitees []string
		timeout  time.Duration
		extended string
		push     *herald.PushConfig
		want     herald.Code
	}{
		{"no invitees", nil, nil, 0, "", nil, herald.CodeInvalidArgument},
		{"too many invitees", nil, []string{"b", "c", "d", "e"}, 0, "", nil, herald.CodeInvalidArgument},
		{"invites self", nil, []string{"bob", "alice"}, 0, "", nil, herald.CodeInvalidArgument},
		{"listed twice", nil, []string{"bob", "bob"}, 0, "", nil, herald.CodeInvalidArgument},
		{"bad user ID", nil, []string{"bob:1"}, 0, "", nil, herald.CodeInvalidArgument},
		{"empty user ID", nil, []string{""}, 0, "", nil, herald.CodeInvalidArgument},
		{"negative timeout", nil, []string{"bob"}, -time.Second, "", nil, herald.CodeInvalidArgument},
		{"timeout over 600 s", nil, []string{"bob"}, 601 * time.Second, "", nil, herald.CodeInvalidArgument},
		{"fractional timeout", nil, []string{"bob"}, 1500 * time.Millisecond, "", nil, herald.CodeInvalidArgument},
		{"extended too large", nil, []string{"bob"}, 0, strings.Repeat("x", 1025), nil, herald.CodeTooLarge},
		{"extended not UTF-8", nil, []string{"bob"}, 0, "\xff", nil, herald.CodeInvalidArgument},
		{"push field too large", nil, []string{"bob"}, 0, "", &herald.PushConfig{Title: strings.Repeat("x", 1025)}, herald.CodeTooLarge},
		{"unknown push strategy", nil, []string{"bob"}, 0, "", &herald.PushConfig{ResourcesID: "nope"}, herald.CodeInvalidArgument},
		{"push not configured", noPush, []string{"bob"}, 0, "", &herald.PushConfig{Title: "t"}, herald.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := tt.svc
			if svc == nil {
				svc = e.svc
			}
			_, err := svc.Invite(context.Background(), "alice", alicePhone, tt.invitees, tt.timeout, tt.extended, tt.push)
			wantCode(t, err, tt.want)
		})
	}
	if len(e.st.all()) != 0 || len(e.n.take()) != 0 {
		t.Error("a refused invitation was stored or told")
	}
	// The limits themselves are fine.
	if _, err := e.svc.Invite(context.Background(), "alice", alicePhone, []string{"b", "c", "d"}, herald.MaxCallTimeout, strings.Repeat("x", 1024), nil); err != nil {
		t.Errorf("3 invitees (the limit), 600 s, 1 KiB extended: %v", err)
	}
}

func TestMaxOpenCalls(t *testing.T) {
	e := newEnv(t)
	svc := New(e.st, e.p, Config{Now: e.clock.Now, AfterFunc: e.clock.AfterFunc, MaxOpenCalls: 2})
	svc.SetNotifier(e.n)
	defer svc.Close()
	ctx := context.Background()
	var first *herald.Call
	for i := 0; i < 2; i++ {
		c, err := svc.Invite(ctx, "alice", alicePhone, []string{"bob"}, 0, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		first = c
	}
	_, err := svc.Invite(ctx, "alice", alicePhone, []string{"bob"}, 0, "", nil)
	wantCode(t, err, herald.CodeRateLimited)
	// Others may still call alice; and once one of hers ends, she may call again.
	if _, err := svc.Invite(ctx, "bob", bobPhone, []string{"alice"}, 0, "", nil); err != nil {
		t.Errorf("bob calling while alice is at her limit: %v", err)
	}
	if _, err := svc.Reject(ctx, "bob", bobPhone, first.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Invite(ctx, "alice", alicePhone, []string{"bob"}, 0, "", nil); err != nil {
		t.Errorf("alice calling after one of her calls ended: %v", err)
	}
}

func TestInviteStoreFailure(t *testing.T) {
	e := newEnv(t)
	e.st.fail = 1
	_, err := e.svc.Invite(context.Background(), "alice", alicePhone, []string{"carol"}, 0, "", &herald.PushConfig{Title: "t"})
	if err == nil || herald.ErrorCode(err) != herald.CodeInternal {
		t.Fatalf("Invite with a failing store: %v, want an internal error", err)
	}
	if notes := e.n.take(); len(notes) != 0 {
		t.Errorf("events for a call not stored: %v", summary(notes))
	}
	if e.p.open != 0 || e.p.nilDone != 1 || len(e.p.handed) != 0 {
		t.Errorf("push service: %d commits open, %d failed, %d jobs handed; want 0, 1, 0", e.p.open, e.p.nilDone, len(e.p.handed))
	}
	if st := e.svc.Stats(); st.Open != 0 || e.clock.armed() != 0 {
		t.Errorf("%d open calls and %d timers after a failed invitation, want none", st.Open, e.clock.armed())
	}
}

func TestCallsList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, e.invite("bob").ID)
		e.clock.Advance(time.Second)
	}
	if _, err := e.svc.Invite(ctx, "carol", 0, []string{"dave"}, 0, "", nil); err != nil {
		t.Fatal(err)
	}
	page, more, err := e.svc.Calls(ctx, "bob", time.Time{}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 3 || !more || page[0].ID != ids[4] || page[2].ID != ids[2] {
		t.Fatalf("first page: %d calls, more %v; want the 3 newest and more", len(page), more)
	}
	page, more, err = e.svc.Calls(ctx, "bob", page[2].CreatedAt, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || more || page[0].ID != ids[1] {
		t.Errorf("second page: %d calls, more %v; want the 2 oldest and no more", len(page), more)
	}
	all, _, err := e.svc.Calls(ctx, "alice", time.Time{}, 0)
	if err != nil || len(all) != 5 {
		t.Errorf("alice's calls with the default limit: %d, %v; want 5", len(all), err)
	}
	for _, limit := range []int{-1, MaxListLimit + 1} {
		_, _, err := e.svc.Calls(ctx, "bob", time.Time{}, limit)
		wantCode(t, err, herald.CodeInvalidArgument)
	}
	if _, _, err := e.svc.Calls(ctx, "bob", time.Time{}, MaxListLimit); err != nil {
		t.Errorf("limit %d: %v", MaxListLimit, err)
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t)
	c := e.invite("bob")
	e.svc.Close()
	if e.clock.armed() != 0 {
		t.Errorf("%d timers armed after Close", e.clock.armed())
	}
	_, err := e.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 0, "", nil)
	wantCode(t, err, herald.CodeUnavailable)
	_, err = e.svc.Accept(context.Background(), "bob", bobPhone, c.ID, "")
	wantCode(t, err, herald.CodeUnavailable)
	if st := e.st.stored(t, c.ID); st.Ended() {
		t.Error("Close ended an open call; it must stay open for the next start")
	}
}

// TestConcurrentAnswers races every operation on shared calls: each call
// ends exactly once, every invitee answers at most once, and each
// session's events of one call show the changes in order.
func TestConcurrentAnswers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.n.online("carol", carolPhone)
	e.n.take()
	const calls = 40
	ids := make([]string, calls)
	for i := range ids {
		ids[i] = e.invite("bob", "carol").ID
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := make(map[string]int) // call/user -> successful answers
	for i := range ids {
		id := ids[i]
		for _, op := range []func() (string, error){
			func() (string, error) { _, err := e.svc.Accept(ctx, "bob", bobPhone, id, ""); return "bob", err },
			func() (string, error) { _, err := e.svc.Reject(ctx, "bob", bobTablet, id, ""); return "bob", err },
			func() (string, error) { _, err := e.svc.Accept(ctx, "carol", carolPhone, id, ""); return "carol", err },
			func() (string, error) {
				_, err := e.svc.Cancel(ctx, "alice", alicePhone, id, "", nil)
				return "alice", err
			},
			func() (string, error) { e.svc.SessionStarted("carol", carolPhone); return "", nil },
			func() (string, error) { e.svc.Ringing(id, "bob"); return "", nil },
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				who, err := op()
				if who == "" {
					return
				}
				if err != nil {
					if c := herald.ErrorCode(err); c != herald.CodeConflict {
						t.Errorf("%s on call %s: %v, want success or conflict", who, id, err)
					}
					return
				}
				mu.Lock()
				wins[id+"/"+who]++
				mu.Unlock()
			}()
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.clock.Advance(time.Minute)
	}()
	wg.Wait()
	e.clock.Advance(time.Minute)
	for k, n := range wins {
		if n > 1 {
			t.Errorf("%s succeeded %d times", k, n)
		}
	}
	for _, id := range ids {
		c := e.st.stored(t, id)
		if !c.Ended() {
			t.Errorf("call %s still open after its deadline: %s", id, states(c))
		}
		for _, p := range c.Participants[1:] {
			if p.State.Ringing() {
				t.Errorf("call %s ended with %s still ringing", id, p.User)
			}
		}
	}
	// Per session and call, states only move forward: the number of
	// participants past ringing never goes down, and after the change
	// that ended the call nothing else comes.
	last := make(map[string]*herald.Call) // session/call -> the call of the last event
	answered := func(c *herald.Call) int {
		n := 0
		for _, p := range c.Participants[1:] {
			if !p.State.Ringing() {
				n++
			}
		}
		if c.Ended() {
			n++
		}
		return n
	}
	for _, n := range e.n.take() {
		k := fmt.Sprint(n.session, "/", n.call.ID)
		if prev := last[k]; prev != nil {
			if prev.Ended() && prev != n.call {
				t.Errorf("session %d got %s for call %s after the change that ended it", n.session, n.ev, n.call.ID)
			}
			if answered(n.call) < answered(prev) {
				t.Errorf("session %d got %s for call %s: %s after %s", n.session, n.ev, n.call.ID, states(n.call), states(prev))
			}
		}
		last[k] = n.call
	}
	if st := e.svc.Stats(); st.Open != 0 {
		t.Errorf("%d calls open at the end", st.Open)
	}
}

// TestCallsSameMillisecond: a page never ends inside a millisecond, so
// paging on from the last call's CreatedAt lists every call once; calls
// all of one millisecond go in one page, past the limit.
func TestCallsSameMillisecond(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	invite := func(caller string) string {
		c, err := e.svc.Invite(ctx, caller, 0, []string{"bob"}, 0, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	// Bob's calls: one at t0, three at t1, one at t2.
	want := map[string]bool{invite("alice"): true}
	e.clock.Advance(time.Second)
	for _, u := range []string{"carol", "dave", "erin"} {
		want[invite(u)] = true
	}
	e.clock.Advance(time.Second)
	want[invite("frank")] = true

	var pages [][]string
	seen := map[string]bool{}
	before := time.Time{}
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatal("paging does not end")
		}
		page, more, err := e.svc.Calls(ctx, "bob", before, 2)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range page {
			if seen[c.ID] {
				t.Errorf("call %s listed twice", c.ID)
			}
			seen[c.ID] = true
			ids = append(ids, c.ID)
		}
		pages = append(pages, ids)
		if !more {
			break
		}
		if len(page) == 0 {
			t.Fatal("an empty page with more")
		}
		before = page[len(page)-1].CreatedAt
	}
	if len(seen) != len(want) {
		t.Errorf("paging listed %d calls, want %d", len(seen), len(want))
	}
	// t2's call alone (t1's would be cut), t1's three (past the limit of
	// 2), t0's.
	if len(pages) != 3 || len(pages[0]) != 1 || len(pages[1]) != 3 || len(pages[2]) != 1 {
		t.Errorf("pages %v, want sizes 1, 3, 1", pages)
	}
}

// TestCallsSameMillisecondBound: more than MaxSameMillisecond calls in one
// millisecond: a page holds MaxSameMillisecond of them and paging still
// ends.
func TestCallsSameMillisecondBound(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i <= MaxSameMillisecond; i++ {
		if _, err := e.svc.Invite(ctx, fmt.Sprintf("u%d", i), 0, []string{"bob"}, 0, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	page, more, err := e.svc.Calls(ctx, "bob", time.Time{}, 5)
	if err != nil || len(page) != MaxSameMillisecond || !more {
		t.Fatalf("first page: %d calls, more %v, %v; want %d and more", len(page), more, err, MaxSameMillisecond)
	}
	page, more, err = e.svc.Calls(ctx, "bob", page[len(page)-1].CreatedAt, 5)
	if err != nil || len(page) != 0 || more {
		t.Errorf("next page: %d calls, more %v, %v; want the end", len(page), more, err)
	}
}

func TestCutPage(t *testing.T) {
	at := func(ms ...int64) []*herald.Call {
		out := make([]*herald.Call, len(ms))
		for i, m := range ms {
			out[i] = &herald.Call{ID: fmt.Sprint(i), CreatedAt: time.UnixMilli(m)}
		}
		return out
	}
	for _, tt := range []struct {
		list []*herald.Call
		n    int
		want int
	}{
		{at(3, 2, 1), 2, 2},    // not inside a millisecond
		{at(3, 2, 2, 1), 2, 1}, // 2 ms's calls go to the next page
		{at(3, 3, 2), 1, 2},    // all of 3 ms: whole
		{at(2, 2, 2), 1, 3},    // all of one millisecond
		{at(2, 2, 2), 0, 3},
		{at(3, 2), 5, 2}, // nothing to cut
	} {
		if got := CutPage(tt.list, tt.n); len(got) != tt.want {
			t.Errorf("CutPage(%d calls, %d) kept %d, want %d", len(tt.list), tt.n, len(got), tt.want)
		}
	}
}
